import { strict as assert } from 'node:assert';
import { createBackend } from '../../lib/engine/registry';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { REPORT_FILE } from '../../lib/output/atomic';
import { backendsUnderTest } from '../helpers/backends';
import { hashTree, writeModel } from '../helpers/models';
import { correlatedModels, mulberry32, randomTensor } from '../helpers/random';
import { useTmpDir } from '../helpers/tmp';
import { mergeArgs, runCli } from '../helpers/cli';

async function threeModels(root: string, seed = 3): Promise<{ base: string; fts: string[] }> {
  const rng = mulberry32(seed);
  const shapes: [string, number[]][] = [
    ['model.embed_tokens.weight', [20, 8]],
    ['model.layers.0.self_attn.q_proj.weight', [8, 8]],
    ['model.norm.weight', [8]],
  ];
  const values = shapes.map(([, s]) => {
    const b = randomTensor(
      s.reduce((a, x) => a * x, 1),
      rng,
      0.3,
    );
    return [b, ...correlatedModels(b, 2, 0.4, rng)];
  });
  const dirs: string[] = [];
  for (let i = 0; i < 3; i++) {
    dirs.push(
      await writeModel(
        path.join(root, ['base', 'ft-a', 'ft-b'][i] as string),
        shapes.map(([name, shape], k) => ({ name, dtype: 'BF16' as const, shape, values: values[k]![i]! })),
        {
          files: {
            'config.json': JSON.stringify({ torch_dtype: 'bfloat16' }),
            'tokenizer_config.json': '{}',
          },
        },
      ),
    );
  }
  return { base: dirs[0]!, fts: dirs.slice(1) };
}

/** Rewrites a safetensors file's header JSON text (and optionally its data) to craft a bad input. */
function rewrite(
  file: string,
  edit: (header: string, data: Buffer) => { header: string; data: Buffer },
): void {
  const bytes = fs.readFileSync(file);
  const n = Number(bytes.readBigUInt64LE(0));
  const r = edit(bytes.subarray(8, 8 + n).toString('utf8'), bytes.subarray(8 + n));
  const h = Buffer.from(r.header, 'utf8');
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(h.length));
  fs.writeFileSync(file, Buffer.concat([len, h, r.data]));
}

describe('CLI usage', () => {
  const cli = runCli;

  it('--help describes the commands and exits 0', () => {
    const r = cli(['--help']);
    assert.equal(r.code, 0);
    assert.match(r.stdout, /merge/);
    assert.match(r.stdout, /doctor/);
    const m = cli(['merge', '--help']);
    assert.equal(m.code, 0);
    for (const flag of [
      '--base',
      '--model',
      '--filter-wise',
      '--theta',
      '--out-dtype',
      '--shard-size',
      '--report',
      '--overwrite',
      '--backend',
      '--io',
      '--memory',
      '--threads',
      '--no-fsync',
      '--quiet',
    ]) {
      assert.ok(m.stdout.includes(flag), flag);
    }
  });

  it('bad usage exits 2', () => {
    assert.equal(cli(['merge']).code, 2);
    assert.equal(cli(['frobnicate']).code, 2);
    assert.equal(cli(['merge', '--base', 'a', '--model', 'b', '--out', 'c']).code, 2);
    assert.equal(cli([...mergeArgs('a', ['b', 'c'], 'd'), '--theta', 'median']).code, 2);
    assert.equal(cli([...mergeArgs('a', ['b', 'c'], 'd'), '--shard-size', 'lots']).code, 2);
    const r = cli(['merge', '--base', 'a', '--model', 'b']);
    assert.equal(r.code, 2);
    assert.match(r.stderr.split('\n')[0]!, /2 fine-tuned models|--out/);
  });

  it('doctor reports what auto selects here: backend, device, instruction set, threads; why cuda is not', async () => {
    const r = cli(['doctor']);
    assert.equal(r.code, 0, r.stderr);
    const backend = createBackend('auto', { onWarning: () => undefined });
    const info = backend.info();
    await backend.dispose();
    const lines = r.stdout.split('\n');
    assert.ok(lines.includes(`auto selects: ${info.name}`), r.stdout);
    assert.ok(lines.includes(`device: ${info.device.kind} ${info.device.name}`), r.stdout);
    assert.ok(lines.includes(`instruction set: ${info.isa}`), r.stdout);
    assert.ok(lines.includes(`threads: ${info.threads}`), r.stdout);
    const cuda = lines.indexOf('backend cuda: unavailable');
    assert.ok(cuda >= 0 && lines[cuda + 1]!.startsWith('  - '), r.stdout);
  });

  it('doctor FOLDER: whether its file system takes O_DIRECT, what --io auto would do with its weights', async function () {
    if (!backendsUnderTest().includes('native')) this.skip();
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'model-stock-doctor-'));
    try {
      fs.writeFileSync(path.join(dir, 'model.safetensors'), Buffer.alloc(100_000, 1));
      const r = cli(['doctor', dir]);
      assert.equal(r.code, 0, r.stderr);
      assert.ok(r.stdout.includes(`O_DIRECT in ${dir}: reads yes, writes yes`), r.stdout);
      assert.match(
        r.stdout,
        /page cache: .* of its 1 weight file\(s\)' 100\.0 kB \(\d+%\); --io auto reads it (mmap|direct)/,
      );
      assert.deepEqual(fs.readdirSync(dir), ['model.safetensors'], 'the probe file is removed');
      const missing = cli(['doctor', path.join(dir, 'nope')]);
      assert.equal(missing.code, 0, missing.stderr);
      assert.match(missing.stdout, /nope: not a folder/);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});

for (const backend of backendsUnderTest()) {
  describe(`CLI merges (--backend ${backend})`, () => {
    const tmp = useTmpDir();
    let k = 0;
    const fresh = () => path.join(tmp.dir, `c${k++}`);
    // Every merge this suite runs goes through the backend under test.
    const cli = (args: string[]): ReturnType<typeof runCli> =>
      runCli(args[0] === 'merge' ? [...args, '--backend', backend] : args);

    it('--io direct --io-depth 2 --profile: the summary says so, then where the time went', async function () {
      if (!backendsUnderTest().includes('native')) this.skip();
      const root = fresh();
      const { base, fts } = await threeModels(root);
      const out = path.join(root, 'out');
      const r = cli([
        ...mergeArgs(base, [fts[0]!, fts[1]!], out),
        '--io',
        'direct',
        '--io-depth',
        '2',
        '--profile',
      ]);
      assert.equal(r.code, 0, r.stderr);
      const [summary, time] = r.stdout.trimEnd().split('\n');
      assert.match(summary!, /, direct reads, direct writes\)$/);
      assert.match(
        time!,
        /^time: reading \d+\.\d\d s, computing \d+\.\d\d s, writing \d+\.\d\d s within \d+\.\d\d s of pipeline \(of \d+\.\d\d s in all\); computing waited \d+\.\d\d s for reads, \d+\.\d\d s for writes$/,
      );
      const bad = cli([...mergeArgs(base, [fts[0]!, fts[1]!], path.join(root, 'bad')), '--io-depth', '0']);
      assert.equal(bad.code, 2, bad.stderr);
    });

    it('merges from flags and from mergekit YAML identically', async () => {
      const root = fresh();
      const { base, fts } = await threeModels(root);
      const before = [base, ...fts].map(hashTree);
      const outA = path.join(root, 'a');
      const report = path.join(root, 'report.json');
      const r = cli([...mergeArgs(base, [fts[0]!, fts[1]!], outA), '--report', report, '--no-fsync']);
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout, /merged 3 tensors/);
      assert.match(
        r.stdout,
        / (mmap|direct|fs)(\/\w+)? reads, \w+ writes\)\n$/,
        'the summary names how inputs were read',
      );
      assert.equal(JSON.parse(fs.readFileSync(report, 'utf8')).backend.name, backend);
      const yml = path.join(root, 'merge.yml');
      fs.writeFileSync(
        yml,
        `merge_method: model_stock\nbase_model: ${base}\nmodels:\n  - model: ${fts[0]}\n  - model: ${fts[1]}\nparameters:\n  filter_wise: false\ntokenizer_source: base\n`,
      );
      const outB = path.join(root, 'b');
      const y = cli(['merge', yml, outB, '--quiet']);
      assert.equal(y.code, 0, y.stderr);
      assert.equal(y.stdout, '', '--quiet prints nothing');
      assert.deepEqual(
        fs.readFileSync(path.join(outA, 'model.safetensors')),
        fs.readFileSync(path.join(outB, 'model.safetensors')),
      );
      assert.deepEqual([base, ...fts].map(hashTree), before, 'inputs untouched');
      // The written config merges again to the same bytes.
      const outC = path.join(root, 'c');
      assert.equal(cli(['merge', path.join(outA, 'model_stock_config.yml'), outC, '-q']).code, 0);
      assert.deepEqual(
        fs.readFileSync(path.join(outA, 'model.safetensors')),
        fs.readFileSync(path.join(outC, 'model.safetensors')),
      );
    });

    it('YAML dtype/out_dtype and --filter-wise, --out-dtype, --shard-size are honoured', async () => {
      const root = fresh();
      const { base, fts } = await threeModels(root);
      const yml = path.join(root, 'merge.yml');
      fs.writeFileSync(
        yml,
        `merge_method: model_stock\nbase_model: ${base}\nmodels:\n  - model: ${fts[0]}\n  - model: ${fts[1]}\nparameters:\n  filter_wise: true\ndtype: float32\n`,
      );
      const out = path.join(root, 'o');
      const r = cli(['merge', yml, out, '--shard-size', '400B', '-q']);
      assert.equal(r.code, 0, r.stderr);
      const rep = JSON.parse(fs.readFileSync(path.join(out, REPORT_FILE), 'utf8'));
      assert.equal(rep.filterWise, true);
      assert.ok(rep.tensors.every((t: { outDtype: string }) => t.outDtype === 'F32'));
      assert.equal(JSON.parse(fs.readFileSync(path.join(out, 'config.json'), 'utf8')).torch_dtype, 'float32');
      const index = JSON.parse(fs.readFileSync(path.join(out, 'model.safetensors.index.json'), 'utf8'));
      assert.ok(new Set(Object.values(index.weight_map)).size >= 2, 'several shards');
      const o2 = path.join(root, 'o2');
      assert.equal(cli([...mergeArgs(base, [fts[0]!, fts[1]!], o2), '--out-dtype', 'float16', '-q']).code, 0);
      assert.equal(JSON.parse(fs.readFileSync(path.join(o2, 'config.json'), 'utf8')).torch_dtype, 'float16');
    });

    it('YAML it cannot honour is a clear error (exit 1, config named)', async () => {
      const root = fresh();
      const { base, fts } = await threeModels(root);
      const cases = [
        `merge_method: ties\nbase_model: ${base}\nmodels:\n  - model: ${fts[0]}\n  - model: ${fts[1]}\n`,
        `merge_method: model_stock\nbase_model: ${base}\nmodels:\n  - model: ${fts[0]}\n  - model: ${fts[1]}\nparameters:\n  filter_wise: [{filter: mlp, value: true}]\n`,
        `merge_method: model_stock\nbase_model: ${base}\nslices: []\n`,
        `merge_method: model_stock\nbase_model: ${base}\nmodels:\n  - model: ${fts[0]}\n  - model: ${fts[1]}\ntokenizer_source: union\n`,
        `merge_method: model_stock\nbase_model: ${base}\nmodels:\n  - model: ${fts[0]}\n  - model: ${fts[1]}\ntokenizer:\n  source: base\n  pad_to_multiple_of: 64\n`,
        `merge_method: [oops\n`,
      ];
      for (const text of cases) {
        const yml = path.join(root, `bad${k++}.yml`);
        fs.writeFileSync(yml, text);
        const out = path.join(root, 'never');
        const r = cli(['merge', yml, out]);
        assert.equal(r.code, 1, `${text}\n${r.stderr}`);
        assert.ok(r.stderr.split('\n')[0]!.includes(yml), r.stderr);
        assert.equal(fs.existsSync(out), false);
      }
    });

    describe('malformed inputs exit 1, name the file and tensor, create no OUT, touch no input', () => {
      const corruptions: [
        string,
        string,
        (h: string, d: Buffer) => { header: string; data: Buffer },
        string | undefined,
      ][] = [
        [
          'trailing bytes',
          'METADATA_INCOMPLETE_BUFFER',
          (h, d) => ({ header: h, data: Buffer.concat([d, Buffer.from([0])]) }),
          undefined,
        ],
        [
          'truncated data',
          'METADATA_INCOMPLETE_BUFFER',
          (h, d) => ({ header: h, data: d.subarray(0, d.length - 2) }),
          undefined,
        ],
        [
          'unknown dtype',
          'UNKNOWN_DTYPE',
          (h, d) => ({ header: h.replace('"BF16"', '"BF17"'), data: d }),
          'model.',
        ],
        ['not JSON', 'INVALID_HEADER', (h, d) => ({ header: h.replace('{', '['), data: d }), undefined],
        [
          'negative shape',
          'INVALID_SHAPE',
          (h, d) => ({ header: h.replace('"shape":[8]', '"shape":[-8]'), data: d }),
          'model.norm.weight',
        ],
        [
          'duplicate key',
          'DUPLICATE_KEY',
          (h, d) => {
            const obj = JSON.parse(h) as Record<string, unknown>;
            const entry = JSON.stringify(obj['model.norm.weight']);
            return { header: h.replace(/}\s*$/, `,"model.norm.weight":${entry}}`), data: d };
          },
          'model.norm.weight',
        ],
        [
          'size mismatch',
          'TENSOR_INVALID_INFO',
          (h, d) => ({ header: h.replace('"shape":[8]', '"shape":[7]'), data: d }),
          'model.norm.weight',
        ],
      ];
      for (const [label, code, edit, tensor] of corruptions) {
        it(label, async () => {
          const root = fresh();
          const { base, fts } = await threeModels(root);
          const file = path.join(fts[1]!, 'model.safetensors');
          rewrite(file, edit);
          const before = [base, ...fts].map(hashTree);
          const out = path.join(root, 'out');
          const r = cli([...mergeArgs(base, [fts[0]!, fts[1]!], out)]);
          assert.equal(r.code, 1, r.stderr);
          const first = r.stderr.split('\n')[0]!;
          assert.ok(first.includes(code), first);
          assert.ok(first.includes(file), first);
          if (tensor !== undefined) assert.ok(first.includes(tensor), first);
          assert.equal(fs.existsSync(out), false);
          assert.deepEqual(
            fs.readdirSync(root).filter((f) => f.startsWith('.')),
            [],
          );
          assert.deepEqual([base, ...fts].map(hashTree), before);
        });
      }

      it('NaN in the data', async () => {
        const root = fresh();
        const { base, fts } = await threeModels(root);
        const file = path.join(fts[0]!, 'model.safetensors');
        rewrite(file, (h, d) => {
          const copy = Buffer.from(d);
          const off = (JSON.parse(h)['model.norm.weight'].data_offsets as number[])[0]!;
          copy.writeUInt16LE(0x7fc0, off + 4); // bf16 quiet NaN at element 2
          return { header: h, data: copy };
        });
        const out = path.join(root, 'out');
        const r = cli([...mergeArgs(base, [fts[0]!, fts[1]!], out)]);
        assert.equal(r.code, 1);
        const first = r.stderr.split('\n')[0]!;
        assert.match(first, /NON_FINITE/);
        assert.ok(
          first.includes('model.norm.weight') && first.includes(file) && first.includes('element 2'),
          first,
        );
        assert.equal(fs.existsSync(out), false);
      });
    });
  });
}
