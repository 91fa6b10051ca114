import { strict as assert } from 'node:assert';
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { generateFixture, PRESETS } from '../../lib/fixtures/generate';
import { inspectModelStock } from '../../lib/inspect';
import { summarizeLayers } from '../../lib/report/layers';
import { renderReportSvg } from '../../lib/report/svg';
import type { InspectReport, TensorReport } from '../../lib/types';
import { CLI, runCli } from '../helpers/cli';
import { assertValidReport } from '../helpers/schema';
import { hashTree } from '../helpers/models';
import { useTmpDir } from '../helpers/tmp';

/** The numbers of a report, without what differs from run to run (time, backend). */
const numbers = (r: InspectReport): unknown => r.tensors.map((t: TensorReport) => ({ ...t }));

describe('CLI inspect', function () {
  this.timeout(300_000);
  const tmp = useTmpDir();
  let base: string;
  let models: string[];
  let flags: string[];
  let library: InspectReport;

  before(async () => {
    const info = await generateFixture({ ...PRESETS.tiny, models: 3, dir: path.join(tmp.dir, 'fx') });
    base = info.base;
    models = [...info.models];
    flags = ['--base', base, ...models.flatMap((m) => ['--model', m]), '--backend', 'js'];
    library = await inspectModelStock({ base, models, backend: 'js' });
  });

  const firstLine = (s: string): string => s.split('\n')[0] ?? '';

  it('prints one line per layer and tensor kind with angle, c and t (min/mean/max), and outside tensors', () => {
    const r = runCli(['inspect', ...flags]);
    assert.equal(r.code, 0, r.stderr);
    const lines = r.stdout.split('\n');
    const header = lines.findIndex((l) => l.startsWith('layer '));
    assert.ok(header > 0, r.stdout);
    assert.match(lines[header]!, /angle° min\s+mean\s+max\s+c min\s+mean\s+max\s+t min\s+mean\s+max$/);
    const s = summarizeLayers(library);
    const cellCount = s.cells.filter((c) => c !== undefined).length;
    const body = lines.slice(header + 1).filter((l) => /^\d+\s/.test(l));
    assert.equal(body.length, cellCount);
    assert.equal(cellCount, PRESETS.tiny.layers * s.rows.length);
    // Layer 1's q_proj: its one tensor's numbers, as printed.
    const q = library.tensors.find((t) => t.name === 'model.layers.1.self_attn.q_proj.weight')!;
    const row = body.find((l) => /^1\s+self_attn\.q_proj\s/.test(l));
    assert.ok(row !== undefined, r.stdout);
    const cells = row.trim().split(/\s+/);
    assert.equal(cells.length, 11);
    const angles = (q.cosines as number[]).map((c) => (Math.acos(c) * 180) / Math.PI);
    assert.equal(cells[2], Math.min(...angles).toFixed(1));
    assert.equal(cells[4], Math.max(...angles).toFixed(1));
    assert.deepEqual(cells.slice(5), [...Array(3).fill(q.c!.toFixed(4)), ...Array(3).fill(q.t!.toFixed(4))]);
    for (const kind of ['model.embed_tokens', 'model.norm', 'lm_head'])
      assert.ok(
        lines.some((l) => new RegExp(`^(embedding|norm|head)\\s+${kind.replace('.', '\\.')}\\s`).test(l)),
        kind,
      );
  });

  it('filter-wise: min < mean < max over rows', () => {
    const r = runCli(['inspect', ...flags, '--filter-wise']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /filter-wise/);
    const row = r.stdout.split('\n').find((l) => /^0\s+mlp\.up_proj\s/.test(l))!;
    const [aMin, aMean, aMax, cMin, cMean, cMax, tMin, tMean, tMax] = row
      .trim()
      .split(/\s+/)
      .slice(2)
      .map(Number);
    for (const [lo, mid, hi] of [
      [aMin, aMean, aMax],
      [cMin, cMean, cMax],
      [tMin, tMean, tMax],
    ])
      assert.ok(lo! < mid! && mid! < hi!, row);
  });

  it('--json prints the report in the schema, the numbers the library gives; a YAML config gives the same', () => {
    const r = runCli(['inspect', ...flags, '--json']);
    assert.equal(r.code, 0, r.stderr);
    const report = JSON.parse(r.stdout) as InspectReport;
    assertValidReport(report, 'inspect --json');
    assert.deepEqual(numbers(report), numbers(library));
    assert.equal('out' in report, false);

    const yml = path.join(tmp.dir, 'config.yml');
    fs.writeFileSync(
      yml,
      `merge_method: model_stock\nbase_model: ${base}\nmodels:\n${models.map((m) => `  - model: ${m}\n`).join('')}`,
    );
    const y = runCli(['inspect', yml, '--json', '--backend', 'js']);
    assert.equal(y.code, 0, y.stderr);
    assert.deepEqual(numbers(JSON.parse(y.stdout) as InspectReport), numbers(library));
  });

  it('--svg draws the bytes plot draws from the same report (--report), and replaces only an earlier picture', () => {
    const svg = path.join(tmp.dir, 'preview.svg');
    const json = path.join(tmp.dir, 'preview.json');
    let r = runCli(['inspect', ...flags, '--svg', svg, '--report', json]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /picture: .*preview\.svg/);
    assertValidReport(JSON.parse(fs.readFileSync(json, 'utf8')), 'inspect --report');
    const redrawn = path.join(tmp.dir, 'redrawn.svg');
    r = runCli(['plot', json, '-o', redrawn]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(fs.readFileSync(svg, 'utf8'), fs.readFileSync(redrawn, 'utf8'));
    assert.equal(
      fs.readFileSync(svg, 'utf8'),
      renderReportSvg(JSON.parse(fs.readFileSync(json, 'utf8')) as InspectReport),
    );

    // An earlier picture and report are replaced without --overwrite; any other file is not.
    r = runCli(['inspect', ...flags, '--filter-wise', '--svg', svg, '--report', json]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(fs.readFileSync(svg, 'utf8'), /filter-wise/);
    const other = path.join(tmp.dir, 'notes.svg');
    fs.writeFileSync(other, 'keep me');
    r = runCli(['inspect', ...flags, '--svg', other]);
    assert.equal(r.code, 1);
    assert.match(firstLine(r.stderr), /\[BAD_OUTPUT_PATH\].*notes\.svg: already exists/);
    assert.equal(fs.readFileSync(other, 'utf8'), 'keep me');
    r = runCli(['inspect', ...flags, '--svg', other, '--overwrite']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(fs.readFileSync(other, 'utf8'), /^<svg /);
    assert.deepEqual(
      fs.readdirSync(tmp.dir).filter((f) => f.startsWith('.')),
      [],
    );
  });

  it('never writes over or into an input, and refuses before reading any', () => {
    const before = hashTree(path.dirname(base));
    for (const target of [path.join(models[0]!, 'model.safetensors'), path.join(base, 'picture.svg')]) {
      const r = runCli(['inspect', ...flags, '--svg', target, '--overwrite']);
      assert.equal(r.code, 1, r.stdout);
      assert.match(firstLine(r.stderr), /\[BAD_OUTPUT_PATH\].*(is|lies inside) the input/);
    }
    const r = runCli(['inspect', ...flags, '--report', path.join(base, 'config.json'), '--overwrite']);
    assert.equal(r.code, 1);
    assert.match(firstLine(r.stderr), /\[BAD_OUTPUT_PATH\]/);
    assert.deepEqual(hashTree(path.dirname(base)), before);
  });

  it('bad usage exits 2, bad inputs 1 with the code and the path', () => {
    const usage: string[][] = [
      ['inspect', '--model', models[0]!, '--model', models[1]!],
      ['inspect', '--base', base, '--model', models[0]!],
      ['inspect', ...flags, '--out', path.join(tmp.dir, 'x')],
      ['inspect', ...flags, '--theta', 'median'],
      ['inspect', ...flags, '--threads', '0'],
    ];
    for (const args of usage) {
      const r = runCli(args);
      assert.equal(r.code, 2, `${args.join(' ')}\n${r.stderr}`);
      assert.equal(r.stdout, '');
    }
    const missing = path.join(tmp.dir, 'nope');
    const r = runCli(['inspect', '--base', base, '--model', models[0]!, '--model', missing]);
    assert.equal(r.code, 1);
    assert.match(firstLine(r.stderr), /\[IO_ERROR\].*nope/);
    const help = runCli(['inspect', '--help']);
    assert.equal(help.code, 0);
    assert.match(help.stdout, /inspect \[options\] \[config\]/);
    for (const option of [
      '--base',
      '--model',
      '--filter-wise',
      '--theta',
      '--backend',
      '--io',
      '--json',
      '--svg',
    ])
      assert.ok(help.stdout.includes(option), option);
    for (const option of ['--out ', '--out-dtype', '--shard-size', '--no-fsync'])
      assert.ok(!help.stdout.includes(option), option);
  });

  for (const [signal, code] of [
    ['SIGINT', 130],
    ['SIGTERM', 143],
  ] as const) {
    it(`on ${signal}: exits ${code} and says so`, async () => {
      const big = await generateFixture({ ...PRESETS.example, dir: path.join(tmp.dir, 'example') });
      // A tiny memory budget and the js backend keep the inspection running long enough to interrupt.
      const child = spawn(
        process.execPath,
        [
          CLI,
          'inspect',
          '--base',
          big.base,
          ...big.models.flatMap((m) => ['--model', m]),
          '--memory',
          '64KiB',
          '--backend',
          'js',
          '--io',
          'fs',
        ],
        { stdio: ['ignore', 'pipe', 'pipe'] },
      );
      let stderr = '';
      child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
      let exited = false;
      child.on('exit', () => (exited = true));
      // Once it holds a weight file open, the inspection (and its signal handlers) has started.
      const started = Date.now();
      const reading = (): boolean => {
        try {
          return fs
            .readdirSync(`/proc/${child.pid}/fd`)
            .some((fd) => fs.readlinkSync(`/proc/${child.pid}/fd/${fd}`).endsWith('.safetensors'));
        } catch {
          return false;
        }
      };
      while (!reading()) {
        assert.ok(!exited && Date.now() - started < 60_000, `never started reading: ${stderr}`);
        await new Promise((r) => setTimeout(r, 10));
      }
      child.kill(signal);
      const exit = await new Promise<number | null>((r) =>
        exited ? r(child.exitCode) : child.on('exit', (c) => r(c)),
      );
      assert.equal(exit, code, stderr);
      assert.match(stderr, new RegExp(`cancelled \\(${signal}\\)`));
    });
  }
});
