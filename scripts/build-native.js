#!/usr/bin/env node
// Builds the native addon.
//   (default)  cmake-js → build/Release/model_stock.node. On `npm install` a failed build is a warning,
//              not an error: the library then runs on its pure-TypeScript backend and says why.
//   --gyp      node-gyp, out of the cmake-js build's way → build-gyp/model_stock.node (node-gyp always
//              builds into ./build of its working directory, so it runs in build/gyp with a binding.gyp
//              that includes the project's).
//   --strict   (or MODEL_STOCK_REQUIRE_NATIVE=1) makes a failure fatal.
// MODEL_STOCK_CUDA=auto|on|off (default auto) picks whether the cmake-js build compiles the CUDA
// kernels in: auto when nvcc is found, on or fail, off never. A failed auto build is retried without
// CUDA, saying so, so a broken CUDA toolchain never costs the CPU addon. node-gyp builds are CPU-only.
'use strict';
const { spawnSync } = require('node:child_process');
const path = require('node:path');
const fs = require('node:fs');

const strict = process.argv.includes('--strict') || process.env.MODEL_STOCK_REQUIRE_NATIVE === '1';
const gyp = process.argv.includes('--gyp');
const root = path.resolve(__dirname, '..');

function finish(status, what) {
  if (status === 0) return;
  const msg = `model-stock: native addon build (${what}) failed (exit ${status}); the pure-TypeScript backend will be used`;
  if (strict) {
    console.error(msg);
    process.exit(1);
  }
  console.warn(msg);
}

// Node's headers, so node-gyp never needs to download them: npm's nodedir (the project .npmrc says
// /usr, where Debian's nodejs puts them) when it holds them, else the installation running us when it
// ships them; otherwise node-gyp's own lookup (a download when online).
function nodeDir() {
  const hasHeaders = (dir) => fs.existsSync(path.join(dir, 'include', 'node', 'node_api.h'));
  const configured = process.env.npm_config_nodedir;
  if (configured && hasHeaders(configured)) return configured;
  const prefix = path.resolve(path.dirname(process.execPath), '..');
  return hasHeaders(prefix) ? prefix : undefined;
}

function nodeGypScript() {
  const candidates = [
    process.env.npm_config_node_gyp,
    path.join(
      path.dirname(process.execPath),
      '..',
      'lib',
      'node_modules',
      'npm',
      'node_modules',
      'node-gyp',
      'bin',
      'node-gyp.js',
    ),
  ];
  try {
    candidates.push(require.resolve('node-gyp/bin/node-gyp.js'));
  } catch {
    // not a dependency: npm's bundled copy is used
  }
  return candidates.find((c) => c !== undefined && fs.existsSync(c));
}

if (gyp) {
  const script = nodeGypScript();
  if (script === undefined) {
    finish(1, 'node-gyp not found: install it (npm i -g node-gyp) or run through npm');
    process.exit(0);
  }
  const work = path.join(root, 'build', 'gyp');
  fs.mkdirSync(work, { recursive: true });
  fs.writeFileSync(path.join(work, 'binding.gyp'), "{ 'includes': ['../../binding.gyp'] }\n");
  const args = [script, 'rebuild', '--jobs', 'max'];
  const dir = nodeDir();
  if (dir !== undefined) args.push(`--nodedir=${dir}`);
  // A configured nodedir without headers must not override the one chosen above.
  const env = { ...process.env };
  delete env.npm_config_nodedir;
  const r = spawnSync(process.execPath, args, { cwd: work, stdio: 'inherit', env });
  if (r.status === 0) {
    const out = path.join(root, 'build-gyp');
    fs.mkdirSync(out, { recursive: true });
    fs.copyFileSync(
      path.join(work, 'build', 'Release', 'model_stock.node'),
      path.join(out, 'model_stock.node'),
    );
    console.log(`model-stock: node-gyp build → ${path.relative(root, path.join(out, 'model_stock.node'))}`);
  }
  finish(r.status, 'node-gyp');
} else {
  if (!fs.existsSync(path.join(root, 'CMakeLists.txt'))) {
    console.warn('model-stock: no CMakeLists.txt, skipping the native addon build');
    process.exit(0);
  }
  const cmakeJs = require.resolve('cmake-js/bin/cmake-js');
  const cuda = (process.env.MODEL_STOCK_CUDA || 'auto').toLowerCase();
  if (!['auto', 'on', 'off'].includes(cuda)) {
    console.error(
      `model-stock: MODEL_STOCK_CUDA must be auto, on or off, not "${process.env.MODEL_STOCK_CUDA}"`,
    );
    process.exit(1);
  }
  // configure, then build: `compile` would keep a mode cached by an earlier configure.
  const cmake = (mode) => {
    const flags = ['--out', 'build', `--CDMODEL_STOCK_CUDA=${mode}`];
    for (const step of ['configure', 'build']) {
      const r = spawnSync(process.execPath, [cmakeJs, step, ...flags], { cwd: root, stdio: 'inherit' });
      if (r.status !== 0) return r.status ?? 1;
    }
    return 0;
  };
  let status = cmake(cuda.toUpperCase());
  if (status !== 0 && cuda === 'auto') {
    console.warn(
      'model-stock: the native build with CUDA failed (MODEL_STOCK_CUDA=auto; the compiler output is above); ' +
        'building the CPU addon without CUDA. MODEL_STOCK_CUDA=on makes this an error, off skips CUDA.',
    );
    status = cmake('OFF');
  }
  // Asking for CUDA explicitly makes its absence an error, as --strict does for the addon itself.
  if (status !== 0 && cuda === 'on' && !strict) {
    console.error('model-stock: MODEL_STOCK_CUDA=on and the native build failed');
    process.exit(1);
  }
  finish(status, 'cmake-js');
}
