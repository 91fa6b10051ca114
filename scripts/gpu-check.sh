#!/usr/bin/env bash
# The CUDA check, in two halves.
#
#   scripts/gpu-check.sh pack   here (Node, npm, nvcc; no GPU needed): builds the addon with CUDA
#                               compiled in, compiles dist/, packs .gpu/ (scripts/gpu-pack.js).
#   scripts/gpu-check.sh run    on the GPU machine (no Node or npm there), from the repository root
#                               with .gpu/ carried along: unpacks node and the bundle with `xz -dc`,
#                               then, each step under its own time limit, all inside one 10-minute
#                               command:
#                                 1. the backend contract suite and the CUDA suites with
#                                    MODEL_STOCK_REQUIRE_CUDA=1 (a skip fails)
#                                 2. bench/cuda.js: resident kernel GB/s, whole sessions from
#                                    pageable and pinned memory
#                                 3. bench/e2e.js: TinyLlama-shaped fixtures generated there, native
#                                    vs cuda merges against that machine's floor, with and without
#                                    fsync, CPU user+sys, and a 2× model
#                                 4. the whole test suite, in the time left
#                               Results go to $OUT (at most 8 files): summary.txt first.
#
# With the device tool: `scripts/gpu-check.sh pack` here, then run
#   bash scripts/gpu-check.sh run      with carry [".gpu"] and timeout_s 600.
# Here (no GPU) `run` goes as far as it can and says clearly that no device was found.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

pack() {
  set -e
  export MODEL_STOCK_CUDA=on
  [ -d node_modules ] || npm ci
  node scripts/build-native.js --strict
  npx tsc -p .
  node scripts/gpu-pack.js
}

run() {
  local out=${OUT:-/tmp/gpu-check-out}
  local work=${GPU_CHECK_WORK:-/tmp/model-stock-gpu}
  local started=$SECONDS
  mkdir -p "$out"
  local summary=$out/summary.txt
  : >"$summary"
  say() { echo "$*" | tee -a "$summary"; }
  # step NAME LIMIT_S LOGFILE COMMAND...: runs under `timeout`, records its status and time.
  step() {
    local name=$1 limit=$2 log=$3
    shift 3
    local t0=$SECONDS
    say "== $name (limit ${limit}s)"
    timeout --kill-after=10 "$limit" "$@" >>"$log" 2>&1
    local rc=$?
    local verdict=ok
    [ $rc -eq 124 ] || [ $rc -eq 137 ] && verdict="TIMED OUT"
    [ $rc -ne 0 ] && [ "$verdict" = ok ] && verdict="FAILED (exit $rc)"
    say "   $verdict after $((SECONDS - t0)) s; log: $(basename "$log")"
    return $rc
  }

  [ -f .gpu/node.xz ] && [ -f .gpu/bundle.tar.xz ] || {
    say "no .gpu/node.xz or .gpu/bundle.tar.xz: run 'scripts/gpu-check.sh pack' first and carry .gpu"
    return 1
  }
  rm -rf "$work" && mkdir -p "$work/bin"
  xz -dc .gpu/node.xz >"$work/bin/node" && chmod +x "$work/bin/node"
  xz -dc .gpu/bundle.tar.xz | tar -x -C "$work"
  export PATH=$work/bin:$PATH
  say "unpacked to $work in $((SECONDS - started)) s: node $(node --version 2>&1)"
  if ! node -e 0 2>/dev/null; then
    say "the carried node does not run here: $(ldd "$work/bin/node" 2>&1 | grep 'not found' | tr '\n' ' ')"
    return 1
  fi

  local device=$out/device.txt
  {
    echo "# $(date -u +%FT%TZ) $(uname -srm), $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB"
    nvidia-smi 2>&1 || echo "nvidia-smi: not available"
    cd "$work" && node -e "
      const m = { exports: {} }; process.dlopen(m, 'build/Release/model_stock.node');
      console.log(JSON.stringify({ cpu: m.exports.info(), cuda: m.exports.cudaInfo() }, null, 2));"
  } >"$device" 2>&1
  local reason
  reason=$(cd "$work" && node -e "
    const m = { exports: {} }; process.dlopen(m, 'build/Release/model_stock.node');
    const i = m.exports.cudaInfo(); if (i.reason !== undefined || i.devices.length === 0) console.log(i.reason ?? 'no CUDA device');" 2>&1)
  if [ -n "$reason" ]; then
    say "NO GPU: $reason"
    say "stopping here: the device suites and benches need a CUDA device (details in device.txt)"
    return 2
  fi
  say "device: $(cd "$work" && node -e "
    const m = { exports: {} }; process.dlopen(m, 'build/Release/model_stock.node');
    const i = m.exports.cudaInfo(), d = i.devices[0];
    console.log(d.name + ', ' + (d.totalMemory / 2 ** 30).toFixed(0) + ' GiB, sm ' + d.computeCapability + ', driver ' + i.driverVersion + ', runtime ' + i.runtimeVersion)")"

  export MODEL_STOCK_REQUIRE_NATIVE=1 MODEL_STOCK_REQUIRE_CUDA=1
  local mocha=(node node_modules/mocha/bin/mocha.js --no-config --timeout 300000 --reporter spec)
  local rc=0
  # What the issue asks for first (contract suite on cuda, CUDA suites, bench rows); the whole suite last.
  (cd "$work" && step "contract suite and CUDA suites" 180 "$out/suite-cuda.log" "${mocha[@]}" \
    'dist/test/engine/contract.test.js' 'dist/test/cuda/*.test.js') || rc=1
  (cd "$work" && step "bench: CUDA kernels and sessions" 90 "$out/bench-cuda.txt" \
    node dist/bench/cuda.js --runs 5 --json "$out/bench-cuda.json") || rc=1
  local left=$((480 - (SECONDS - started)))
  [ $left -gt 300 ] && left=300
  if [ $left -gt 60 ]; then
    (cd "$work" && step "bench: end to end, native vs cuda" "$left" "$out/bench-e2e.txt" \
      node dist/bench/e2e.js --runs 3 --backends native,cuda --io pread,mmap --preset tinyllama --double) || rc=1
  else
    say "== bench: end to end skipped: only ${left}s left"
    rc=1
  fi
  rm -rf "$work/.cache"
  left=$((570 - (SECONDS - started)))
  if [ $left -gt 60 ]; then
    (cd "$work" && step "whole suite" "$left" "$out/suite.log" "${mocha[@]}" 'dist/test/**/*.test.js') || rc=1
  else
    say "== whole suite skipped: only ${left}s left"
  fi
  for f in suite-cuda.log suite.log; do
    [ -f "$out/$f" ] && say "$f: $(grep -E '^\s+[0-9]+ (passing|failing|pending)' "$out/$f" | tr -s ' ' | tr '\n' ' ')"
  done
  [ -f "$out/bench-cuda.txt" ] && tail -n 12 "$out/bench-cuda.txt" >>"$summary"
  [ -f "$out/bench-e2e.txt" ] && tail -n 20 "$out/bench-e2e.txt" >>"$summary"
  say "done in $((SECONDS - started)) s, status $rc"
  return $rc
}

case "${1:-}" in
  pack) pack ;;
  run) run ;;
  *)
    echo "usage: scripts/gpu-check.sh pack|run" >&2
    exit 2
    ;;
esac
