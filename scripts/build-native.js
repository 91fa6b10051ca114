#!/usr/bin/env node
// Builds the native addon with cmake-js. On `npm install` a failed build is a warning, not an error:
// the library then runs on its pure-TypeScript backend and says why. `--strict` makes it fatal.
'use strict';
const { spawnSync } = require('node:child_process');
const path = require('node:path');
const fs = require('node:fs');

const strict = process.argv.includes('--strict') || process.env.MODEL_STOCK_REQUIRE_NATIVE === '1';
const root = path.resolve(__dirname, '..');
if (!fs.existsSync(path.join(root, 'CMakeLists.txt'))) {
  console.warn('model-stock: no CMakeLists.txt, skipping the native addon build');
  process.exit(0);
}
const cmakeJs = require.resolve('cmake-js/bin/cmake-js');
const r = spawnSync(process.execPath, [cmakeJs, 'compile', '--out', 'build'], { cwd: root, stdio: 'inherit' });
if (r.status !== 0) {
  const msg = `model-stock: native addon build failed (exit ${r.status}); the pure-TypeScript backend will be used`;
  if (strict) {
    console.error(msg);
    process.exit(1);
  }
  console.warn(msg);
}
