/**
 * Files made by a real torch.save (Debian's torch 1.13; test/data/pytorch/make_fixtures.py) against
 * what torch held when it saved them (expected.json: dtype, shape and sha256 of every tensor's bytes):
 * the reference for the format, not our own writer.
 */
import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import { openCheckpoint } from '../../lib/checkpoint/open';
import { isModelStockError, type ErrorCode } from '../../lib/errors';
import type { Checkpoint } from '../../lib/checkpoint/types';
import {
  expectedTensors,
  fixture,
  sha256,
  tensorBytes,
  type ExpectedTensor,
  rejectsWith,
} from '../helpers/pytorch';

const MARKER = '/tmp/model-stock-exploit-marker';

function assertHolds(
  cp: Checkpoint,
  expected: Record<string, ExpectedTensor>,
  rename = (n: string) => n,
): void {
  assert.equal(cp.format, 'pytorch');
  assert.deepEqual(cp.order, Object.keys(expected).map(rename).sort(), 'sorted names');
  for (const [saved, e] of Object.entries(expected)) {
    const t = cp.tensors.get(rename(saved));
    assert.ok(t !== undefined, `${rename(saved)} read`);
    assert.equal(t.dtype, e.dtype, saved);
    assert.deepEqual([...t.shape], e.shape, saved);
    assert.equal(sha256(tensorBytes(t)), e.sha256, `${saved}: the bytes torch saved`);
  }
}

/** The order in the file (state dict insertion order) is kept: expected.json's keys are sorted, so compare sets above and order here. */
function assertOrder(cp: Checkpoint, names: readonly string[]): void {
  assert.deepEqual(cp.order, names);
}

const rejects = (file: string, code: ErrorCode, ...mention: string[]) =>
  rejectsWith(openCheckpoint(file), code, file, ...mention);

describe('PyTorch checkpoints made by torch.save', () => {
  const expected = expectedTensors();
  const sorted = (cp: Checkpoint): Checkpoint => ({ ...cp, order: [...cp.order].sort() });

  it('sharded bf16 folder named by pytorch_model.bin.index.json: every tensor, in shard then dict order', async () => {
    const cp = await openCheckpoint(fixture('sharded-bf16'));
    const shard1 = expected['sharded-bf16/pytorch_model-00001-of-00002.bin']!;
    const shard2 = expected['sharded-bf16/pytorch_model-00002-of-00002.bin']!;
    assertHolds(sorted(cp), { ...shard1, ...shard2 });
    assertOrder(cp, [
      'model.embed_tokens.weight',
      'model.layers.0.self_attn.q_proj.weight',
      'model.layers.0.self_attn.k_proj.weight',
      'model.layers.0.self_attn.v_proj.weight',
      'model.layers.0.input_layernorm.weight',
      'lm_head.weight',
      'model.layers.0.mlp.up_proj.weight',
      'model.layers.0.mlp.down_proj.weight',
      'model.norm.weight',
      'model.position_ids',
      'model.scale',
    ]);
    assert.equal(cp.indexFile, fixture('sharded-bf16', 'pytorch_model.bin.index.json'));
    assert.deepEqual(cp.files, [
      fixture('sharded-bf16', 'pytorch_model-00001-of-00002.bin'),
      fixture('sharded-bf16', 'pytorch_model-00002-of-00002.bin'),
    ]);
    assert.deepEqual(cp.warnings, []);
  });

  it('shared storages: the tied head is the embedding bytes, q/k/v are consecutive slices of one storage', async () => {
    const cp = await openCheckpoint(fixture('sharded-bf16'));
    const t = (n: string) => cp.tensors.get(n)!;
    assert.equal(t('lm_head.weight').offset, t('model.embed_tokens.weight').offset);
    assert.equal(t('lm_head.weight').byteLength, 32 * 8 * 2);
    const q = t('model.layers.0.self_attn.q_proj.weight');
    assert.equal(t('model.layers.0.self_attn.k_proj.weight').offset, q.offset + 128);
    assert.equal(t('model.layers.0.self_attn.v_proj.weight').offset, q.offset + 256);
    assert.equal(q.offset % 64, 0, 'torch aligns storage data to 64 bytes');
  });

  it('an int64 buffer and a 0-D tensor', async () => {
    const cp = await openCheckpoint(fixture('sharded-bf16'));
    const ids = cp.tensors.get('model.position_ids')!;
    const bytes = Buffer.from(tensorBytes(ids));
    assert.deepEqual(
      [0, 1, 2, 3, 4, 5].map((k) => bytes.readBigInt64LE(8 * k)),
      [0n, 1n, 2n, 3n, 4n, 5n],
    );
    const scale = cp.tensors.get('model.scale')!;
    assert.deepEqual(scale.shape, []);
    assert.deepEqual([...tensorBytes(scale)], [0x00, 0x3f], 'bf16 0.5');
  });

  it('single f16 file: a module.state_dict() (OrderedDict + _metadata), a 0-D int64 num_batches_tracked', async () => {
    const cp = await openCheckpoint(fixture('single-f16.bin'));
    assertHolds(sorted(cp), expected['single-f16.bin']!);
    assertOrder(cp, [
      '0.weight',
      '0.bias',
      '1.weight',
      '1.bias',
      '1.running_mean',
      '1.running_var',
      '1.num_batches_tracked',
      '2.weight',
      '2.bias',
    ]);
    const tracked = cp.tensors.get('1.num_batches_tracked')!;
    assert.equal(tracked.dtype, 'I64');
    assert.deepEqual(tracked.shape, []);
    assert.equal(Buffer.from(tensorBytes(tracked)).readBigInt64LE(0), 3n);
    assert.equal(cp.dir, fixture());
    assert.equal(cp.path, fixture('single-f16.bin'));
  });

  it('a nested .pt (open_clip / timm): state_dict chosen, module. stripped, optimizer and extras left out, each said', async () => {
    const cp = await openCheckpoint(fixture('nested.pt'));
    assertHolds(sorted(cp), expected['nested.pt']!, (n) => n.replace(/^module\./, ''));
    assertOrder(cp, ['visual.conv1.weight', 'visual.ln_pre.weight', 'visual.proj']);
    const text = cp.warnings.join('\n');
    assert.match(
      text,
      /read the 3 tensor\(s\) of "state_dict"; left out 9 other entries \(epoch, name, state_dict_ema, optimizer/,
    );
    assert.match(text, /"state_dict_ema" holds tensors too: --state-dict-key state_dict_ema/);
    assert.match(text, /every tensor name starts with "module\."/);
    // Harmless foreign objects are named once, and the file still reads.
    const foreign = cp.warnings.filter((w) => w.includes('references'));
    assert.equal(foreign.length, 1);
    for (const name of [
      'argparse.Namespace',
      'numpy.core.multiarray.scalar',
      '_codecs.encode',
      'pathlib.PurePosixPath',
    ])
      assert.ok(foreign[0]!.includes(name), name);
    assert.ok(!foreign[0]!.includes('torch.'), 'torch vocabulary (torch.device, storages) is not foreign');
    assert.ok(cp.warnings.every((w) => w.startsWith(`${fixture('nested.pt')}: `)));
  });

  it('stateDictKey chooses the EMA weights', async () => {
    const cp = await openCheckpoint(fixture('nested.pt'), { stateDictKey: 'state_dict_ema' });
    assertHolds(sorted(cp), expected['nested.pt#state_dict_ema']!, (n) => n.replace(/^module\./, ''));
    assert.ok(cp.warnings.join('\n').includes('"state_dict_ema"'));
  });

  it('stateDictKey on a file without that entry: BAD_CONFIG naming the file and its entries', async () => {
    const file = fixture('single-f16.bin');
    const e = await openCheckpoint(file, { stateDictKey: 'state_dict_ema' }).catch((x: unknown) => x);
    assert.ok(isModelStockError(e) && e.code === 'BAD_CONFIG', String(e));
    assert.equal(e.file, file);
    assert.match(e.message, /no entry "state_dict_ema".*"0\.weight"/);
    const notDict = await openCheckpoint(fixture('nested.pt'), { stateDictKey: 'epoch' }).catch(
      (x: unknown) => x,
    );
    assert.ok(
      isModelStockError(notDict) && notDict.code === 'BAD_CONFIG' && /holds no tensors/.test(notDict.message),
    );
  });

  it('protocol 4 (FRAME, MEMOIZE, STACK_GLOBAL), a Parameter, a Tensor subclass, f64, bool, int32, uint8', async () => {
    const cp = await openCheckpoint(fixture('protocol4.pt'));
    assertHolds(sorted(cp), expected['protocol4.pt']!);
    assert.deepEqual(
      cp.order.map((n) => cp.tensors.get(n)!.dtype),
      ['F32', 'F32', 'F32', 'F32', 'F32', 'F64', 'BOOL', 'I32', 'U8'],
    );
    assert.ok(
      cp.warnings.some((w) => w.includes('__main__.Scaled')),
      'the subclass is named, the tensor read',
    );
  });

  it("torch 2.x's records (byteorder, .data/serialization_id, .format_version, .storage_alignment) are read past", async () => {
    const cp = await openCheckpoint(fixture('torch2.bin'));
    assertHolds(sorted(cp), expected['torch2.bin']!);
  });

  it('a Lightning .ckpt: the state dict under state_dict, names as saved (model. prefix kept)', async () => {
    const cp = await openCheckpoint(fixture('lightning.ckpt'));
    assertHolds(sorted(cp), expected['lightning.ckpt']!);
  });

  it('a pickle with __reduce__ exploits: nothing runs (no marker file), the weights read, each callable named as NOT run', async () => {
    fs.rmSync(MARKER, { force: true });
    const cp = await openCheckpoint(fixture('exploit.pt'));
    assert.ok(!fs.existsSync(MARKER), 'the exploit ran');
    assertHolds(sorted(cp), expected['exploit.pt']!);
    const danger = cp.warnings.filter((w) => w.includes('NOT run'));
    assert.equal(danger.length, 1, cp.warnings.join('\n'));
    for (const name of ['builtins.eval', 'posix.system', 'subprocess.check_output'])
      assert.ok(danger[0]!.includes(name), `${name} in ${danger[0]}`);
    assert.ok(
      cp.warnings.some((w) => w.includes('state_dict.visual.extra')),
      'the value beside the tensors is left out',
    );
  });

  describe('refused, with a coded error naming the file', () => {
    it('legacy format (torch < 1.6): UNSUPPORTED_FORMAT saying how to convert it', async () => {
      await rejects(fixture('legacy.pt'), 'UNSUPPORTED_FORMAT', 'legacy format', 'weights_only=True');
    });
    it('a deflated entry: UNSUPPORTED_FORMAT', async () => {
      await rejects(fixture('compressed.pt'), 'UNSUPPORTED_FORMAT', 'compressed', 'data.pkl');
    });
    it('big-endian data: UNSUPPORTED_FORMAT', async () => {
      await rejects(fixture('bigendian.bin'), 'UNSUPPORTED_FORMAT', 'big-endian');
    });
    it('a transposed view: NON_CONTIGUOUS naming the tensor', async () => {
      const e = await rejects(fixture('noncontiguous.pt'), 'NON_CONTIGUOUS', 'strides [1, 4]');
      assert.equal(e.tensor, 'w');
    });
    it('a quantized tensor: UNSUPPORTED_FORMAT naming it and the rebuild', async () => {
      const e = await rejects(fixture('quantized.pt'), 'UNSUPPORTED_FORMAT', 'quantized', '_rebuild_qtensor');
      assert.equal(e.tensor, 'w');
    });
    it('a sparse tensor: UNSUPPORTED_FORMAT naming it', async () => {
      const e = await rejects(fixture('sparse.pt'), 'UNSUPPORTED_FORMAT', 'sparse');
      assert.equal(e.tensor, 'w');
    });
  });
});
