#!/usr/bin/python3
"""
Makes the PyTorch checkpoints under test/data/pytorch/ with a real torch.save: the reference for the
format that model-stock's reader (lib/pytorch/) and its fixture writer (lib/fixtures/torchZip.ts) are
tested against. CI does not install torch: the files made here are committed.

    apt-get install -y --no-install-recommends python3-torch python3-numpy   # Debian: torch 1.13.1
    /usr/bin/python3 test/data/pytorch/make_fixtures.py

Every tensor is drawn from a fixed seed; zip entries carry no timestamps (torch writes none, and the
hand-built archives below use a fixed date), so running the script again gives the same bytes — except
legacy.pt, whose legacy format names storages by object ids.
Nothing here is ever loaded back with torch.load: some of these files are hostile on purpose.
"""
import argparse
import collections
import hashlib
import io
import json
import os
import pathlib
import subprocess
import zipfile

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
# The marker the exploit would create if anything ran its pickle (tests check it never appears).
MARKER = "/tmp/model-stock-exploit-marker"


# What each readable file holds, from the tensors in memory before torch.save (never by loading the
# file): {file: {name as saved: {dtype, shape, sha256 of its bytes}}} — the tests' oracle.
EXPECTED = {}
DTYPES = {
    torch.float32: "F32", torch.float64: "F64", torch.float16: "F16", torch.bfloat16: "BF16",
    torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8",
    torch.uint8: "U8", torch.bool: "BOOL",
}


def expect(file, tensors):
    entries = {}
    for name, t in tensors.items():
        if not isinstance(t, torch.Tensor):
            continue
        raw = t.detach().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
        entries[name] = {"dtype": DTYPES[t.dtype], "shape": list(t.shape), "sha256": hashlib.sha256(raw).hexdigest()}
    EXPECTED[file] = entries


def out(*parts):
    path = os.path.join(HERE, *parts)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    return path


def rand(shape, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g).to(dtype)


def sharded_bf16():
    """A LLaMA-like model in two shards named by pytorch_model.bin.index.json, as transformers writes it.

    Shard 1 holds the shared storages: q/k/v split from one fused storage, and lm_head tied to the
    embedding (the same tensor saved under two names). Shard 2 holds only tensors with their own
    storage (the fixture writer's test compares its bytes with ours).
    """
    bf = torch.bfloat16
    embed = rand((32, 8), bf, 1)
    qkv = rand((24, 8), bf, 2)
    shard1 = {
        "model.embed_tokens.weight": embed,
        "model.layers.0.self_attn.q_proj.weight": qkv[0:8],
        "model.layers.0.self_attn.k_proj.weight": qkv[8:16],
        "model.layers.0.self_attn.v_proj.weight": qkv[16:24],
        "model.layers.0.input_layernorm.weight": rand((8,), bf, 3),
        "lm_head.weight": embed,
    }
    shard2 = {
        "model.layers.0.mlp.up_proj.weight": rand((12, 8), bf, 4),
        "model.layers.0.mlp.down_proj.weight": rand((8, 12), bf, 5),
        "model.norm.weight": rand((8,), bf, 6),
        "model.position_ids": torch.arange(6, dtype=torch.int64).reshape(1, 6),
        "model.scale": torch.tensor(0.5, dtype=bf),
    }
    names = ["pytorch_model-00001-of-00002.bin", "pytorch_model-00002-of-00002.bin"]
    weight_map = {}
    total = 0
    for name, shard in zip(names, [shard1, shard2]):
        torch.save(shard, out("sharded-bf16", name))
        expect("sharded-bf16/" + name, shard)
        for k, v in shard.items():
            weight_map[k] = name
    # transformers counts each tensor's own bytes (tied names twice).
    for shard in [shard1, shard2]:
        for v in shard.values():
            total += v.numel() * v.element_size()
    with open(out("sharded-bf16", "pytorch_model.bin.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}, f, indent=2)
        f.write("\n")
    with open(out("sharded-bf16", "config.json"), "w") as f:
        f.write('{\n  "architectures": ["LlamaForCausalLM"],\n  "torch_dtype": "bfloat16",\n  "hidden_size": 8\n}\n')


def single_f16():
    """model.state_dict() of a small module in f16: OrderedDict + _metadata, a 0-D int64 buffer."""
    torch.manual_seed(7)
    m = torch.nn.Sequential(torch.nn.Linear(8, 6), torch.nn.BatchNorm1d(6), torch.nn.Linear(6, 4)).half()
    m[1].num_batches_tracked.fill_(3)
    torch.save(m.state_dict(), out("single-f16.bin"))
    expect("single-f16.bin", m.state_dict())


def plain_state():
    """The tensors used by several files below: float32, with names of a CLIP-like vision tower."""
    return collections.OrderedDict(
        [
            ("visual.conv1.weight", rand((4, 3, 2, 2), torch.float32, 11)),
            ("visual.ln_pre.weight", rand((4,), torch.float32, 12)),
            ("visual.proj", rand((4, 3), torch.float32, 13)),
        ]
    )


def nested_pt():
    """A training checkpoint as open_clip / timm scripts write it: DDP keys, EMA, optimizer, extras."""
    state = plain_state()
    ddp = collections.OrderedDict(("module." + k, v) for k, v in state.items())
    ema = collections.OrderedDict(("module." + k, v * 0.5) for k, v in state.items())
    ema["module.visual.proj"] = torch.nn.Parameter(ema["module.visual.proj"], requires_grad=False)
    params = list(state.values())
    opt = torch.optim.AdamW(params, lr=1e-3)
    for p in params:
        p.grad = torch.ones_like(p)
    opt.step()
    torch.save(
        {
            "epoch": 7,
            "name": "ViT-B-32-finetune",
            "state_dict": ddp,
            "state_dict_ema": ema,
            "optimizer": opt.state_dict(),
            "args": argparse.Namespace(lr=1e-3, batch_size=256, model="ViT-B-32"),
            "best_acc": np.float64(0.8125),
            "logdir": pathlib.PurePosixPath("/runs/ft"),
            "device": torch.device("cpu"),
            "big": 2**70,
        },
        out("nested.pt"),
    )
    expect("nested.pt", ddp)
    expect("nested.pt#state_dict_ema", ema)


class Scaled(torch.Tensor):
    """A Tensor subclass: saved through torch._tensor._rebuild_from_type_v2, naming __main__.Scaled."""


class Exploit:
    """What a hostile pickle holds: torch.load (weights_only=False) would call this on load."""

    def __init__(self, fn, *args):
        self.fn = fn
        self.args = args

    def __reduce__(self):
        return (self.fn, self.args)


def exploit_pt():
    """Valid weights plus three callables torch.load would run: os.system, builtins.eval, subprocess."""
    state = plain_state()
    state["visual.extra"] = Exploit(eval, "__import__('os').system('touch %s')" % MARKER)
    torch.save(
        {
            "state_dict": state,
            "payload": Exploit(os.system, "touch %s" % MARKER),
            "more": Exploit(subprocess.check_output, ["touch", MARKER]),
        },
        out("exploit.pt"),
    )
    expect("exploit.pt", state)


def protocol4_pt():
    """Protocol 4: FRAME, SHORT_BINUNICODE, MEMOIZE, STACK_GLOBAL; a Parameter; a Tensor subclass."""
    state = plain_state()
    state["visual.ln_pre.bias"] = torch.nn.Parameter(rand((4,), torch.float32, 14))
    state["visual.class_embedding"] = rand((4,), torch.float32, 15).as_subclass(Scaled)
    state["visual.double"] = rand((2, 2), torch.float64, 16)
    state["visual.mask"] = torch.tensor([True, False, True])
    state["visual.int32"] = torch.arange(3, dtype=torch.int32)
    state["visual.uint8"] = torch.arange(3, dtype=torch.uint8)
    torch.save(state, out("protocol4.pt"), pickle_protocol=4)
    expect("protocol4.pt", state)


def lightning_ckpt():
    """A PyTorch Lightning checkpoint: the module's tensors under state_dict, each with a `model.` prefix."""
    state = collections.OrderedDict(("model." + k, v) for k, v in plain_state().items())
    torch.save(
        {
            "epoch": 3,
            "global_step": 300,
            "pytorch-lightning_version": "2.0.0",
            "state_dict": state,
            "optimizer_states": [],
            "lr_schedulers": [],
            "hyper_parameters": {"lr": 0.01},
        },
        out("lightning.ckpt"),
    )
    expect("lightning.ckpt", state)


def refused():
    """Files that must be refused with a coded error."""
    state = plain_state()
    torch.save(state, out("legacy.pt"), _use_new_zipfile_serialization=False)
    torch.save({"w": rand((3, 4), torch.float32, 21).t()}, out("noncontiguous.pt"))
    torch.save({"w": torch.quantize_per_tensor(torch.ones(4), 0.1, 0, torch.qint8)}, out("quantized.pt"))
    torch.save({"w": torch.ones(4).to_sparse()}, out("sparse.pt"))
    # The same archive with every entry deflated.
    buf = io.BytesIO()
    torch.save(state, buf)
    src = zipfile.ZipFile(io.BytesIO(buf.getvalue()))
    with zipfile.ZipFile(out("compressed.pt"), "w", zipfile.ZIP_DEFLATED) as z:
        for info in src.infolist():
            z.writestr(zipfile.ZipInfo(info.filename.replace("archive/", "compressed/"), (1980, 1, 1, 0, 0, 0)), src.read(info.filename), zipfile.ZIP_DEFLATED)


def torch2_style(name, byteorder):
    """torch 2.x's records beside data.pkl: byteorder, .data/serialization_id, .format_version, .storage_alignment."""
    buf = io.BytesIO()
    torch.save(plain_state(), buf)
    src = zipfile.ZipFile(io.BytesIO(buf.getvalue()))
    top = name.split(".")[0]
    records = [(i.filename.replace("archive/", top + "/"), src.read(i.filename)) for i in src.infolist()]
    records.insert(1, (top + "/byteorder", byteorder.encode()))
    records += [
        (top + "/.data/serialization_id", b"1234567890123456789012345678901234567890"),
        (top + "/.format_version", b"1"),
        (top + "/.storage_alignment", b"64"),
    ]
    with zipfile.ZipFile(out(name), "w", zipfile.ZIP_STORED) as z:
        for filename, data in records:
            z.writestr(zipfile.ZipInfo(filename, (1980, 1, 1, 0, 0, 0)), data)
    if byteorder == "little":
        expect(name, plain_state())


if __name__ == "__main__":
    sharded_bf16()
    single_f16()
    nested_pt()
    exploit_pt()
    protocol4_pt()
    lightning_ckpt()
    refused()
    torch2_style("torch2.bin", "little")
    torch2_style("bigendian.bin", "big")
    with open(out("expected.json"), "w") as f:
        json.dump(EXPECTED, f, indent=2, sort_keys=True)
        f.write("\n")
    print("torch", torch.__version__)
