#!/usr/bin/env node
// Packs what scripts/gpu-check.sh needs on a GPU machine that has no Node or npm, into .gpu/ (ignored
// by git; ≤ 64 MiB with the working tree, the device tool's carry limit):
//   .gpu/node.xz          this machine's node binary, stripped, xz-compressed
//   .gpu/bundle.tar.xz    package.json, .mocharc.json, README.md, docs/, test/data/, dist/, the addon built here (CUDA compiled in,
//                         static CUDA runtime), and the node_modules the test suite and benches load
//                         (mocha included), found by walking their dependencies.
// Run after `npm ci` and `npm run build` (scripts/gpu-check.sh pack does all three).
'use strict';
const { execFileSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const root = path.resolve(__dirname, '..');
const out = path.join(root, '.gpu');
const LIMIT = 60 << 20; // leaves a few MiB of the 64 MiB carry for the working tree itself
// What dist/ requires at run time, plus the test runner, the interop test's reference reader and the
// report schema's validator.
const ROOTS = ['mocha', 'yaml', 'commander', 'cli-progress', 'safetensors', 'ajv'];

function fail(message) {
  console.error(`gpu-pack: ${message}`);
  process.exit(1);
}

const addon = path.join(root, 'build', 'Release', 'model_stock.node');
if (!fs.existsSync(path.join(root, 'dist', 'test'))) fail('no dist/test: run `npm run build` first');
if (!fs.existsSync(addon)) fail('no build/Release/model_stock.node: run `npm ci` or `npm run build:native`');
const mod = { exports: {} };
process.dlopen(mod, addon);
if (typeof mod.exports.cudaInfo !== 'function' || !mod.exports.cudaInfo().compiled) {
  fail('the addon has no CUDA compiled in: rebuild it with MODEL_STOCK_CUDA=on npm run build:native');
}

// Every package folder reachable from ROOTS, resolved the way Node resolves them (nested first).
function packageDir(name, from) {
  for (let dir = from; ; dir = path.dirname(dir)) {
    const candidate = path.join(dir, 'node_modules', name);
    if (fs.existsSync(path.join(candidate, 'package.json'))) return candidate;
    if (path.dirname(dir) === dir) return undefined;
  }
}
const packages = new Set();
function walk(name, from) {
  const dir = packageDir(name, from);
  if (dir === undefined) fail(`cannot find the package ${name} (from ${path.relative(root, from) || '.'})`);
  if (packages.has(dir)) return;
  packages.add(dir);
  const manifest = JSON.parse(fs.readFileSync(path.join(dir, 'package.json'), 'utf8'));
  for (const dep of Object.keys({ ...manifest.dependencies })) walk(dep, dir);
  for (const dep of Object.keys({ ...manifest.optionalDependencies })) {
    if (packageDir(dep, dir) !== undefined) walk(dep, dir);
  }
}
for (const name of ROOTS) walk(name, root);

const staging = fs.mkdtempSync(path.join(os.tmpdir(), 'model-stock-gpu-pack-'));
try {
  const copy = (rel) => fs.cpSync(path.join(root, rel), path.join(staging, rel), { recursive: true });
  // README.md and docs/: the docs test checks their links and the report schema; test/data: the torch.save
  // files the PyTorch tests and the fuzzer read.
  for (const rel of [
    'package.json',
    '.mocharc.json',
    'README.md',
    'docs',
    'test/data',
    'dist',
    'build/Release/model_stock.node',
  ])
    copy(rel);
  for (const dir of packages) copy(path.relative(root, dir));
  fs.rmSync(out, { recursive: true, force: true });
  fs.mkdirSync(out);
  const bundle = path.join(out, 'bundle.tar.xz');
  execFileSync('sh', ['-c', `tar -C "${staging}" -cf - . | xz -T0 -6 > "${bundle}"`], { stdio: 'inherit' });
  const node = path.join(staging, 'node');
  fs.copyFileSync(process.execPath, node);
  execFileSync('strip', ['--strip-all', node], { stdio: 'inherit' });
  execFileSync('sh', ['-c', `xz -T0 -6 -c "${node}" > "${path.join(out, 'node.xz')}"`], { stdio: 'inherit' });
} finally {
  fs.rmSync(staging, { recursive: true, force: true });
}

const sizes = fs.readdirSync(out).map((f) => [f, fs.statSync(path.join(out, f)).size]);
const total = sizes.reduce((s, [, b]) => s + b, 0);
for (const [f, b] of sizes) console.log(`  .gpu/${f}  ${(b / 2 ** 20).toFixed(1)} MiB`);
console.log(
  `gpu-pack: ${(total / 2 ** 20).toFixed(1)} MiB in .gpu/ (node ${process.version}, ${packages.size} packages)`,
);
if (total > LIMIT) fail(`.gpu/ is ${(total / 2 ** 20).toFixed(1)} MiB, over the ${LIMIT >> 20} MiB budget`);
