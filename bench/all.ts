/**
 * `npm run bench`: the end-to-end rows (bench/e2e.ts, which takes this command's options), then the
 * inspect-vs-merge row (bench/inspect.ts, same preset and number of runs), the LoRA adapter rows
 * (bench/lora.ts, same number of runs), the adapter output against the model output of a merge of
 * LoRA adapters (bench/adapterOutput.ts, same preset and runs), the event-loop liveness cases
 * (bench/liveness.ts), the picture of a million tensors (bench/draw.ts) and the merge service's soak and
 * load (bench/serve.ts). Each is also a command of its own: `npm run bench:inspect`, `npm run bench:lora`,
 * `npm run bench:adapter-output`, `npm run bench:liveness`, `npm run bench:draw`, `npm run bench:serve`.
 */
import { spawnSync } from 'node:child_process';
import * as path from 'node:path';
import { parseArgs } from 'node:util';

function run(script: string, args: readonly string[]): void {
  console.log(`\n## ${script} ${args.join(' ')}\n`);
  const r = spawnSync(process.execPath, [path.join(__dirname, script), ...args], { stdio: 'inherit' });
  if (r.status !== 0) {
    console.error(`${script} failed (status ${r.status ?? r.signal})`);
    process.exitCode = 1;
  }
}

const argv = process.argv.slice(2);
const { values } = parseArgs({
  args: argv,
  strict: false,
  options: { runs: { type: 'string' }, preset: { type: 'string' } },
});
run('e2e.js', argv);
const shared = [
  ...(typeof values.runs === 'string' ? ['--runs', values.runs] : []),
  ...(typeof values.preset === 'string' ? ['--preset', values.preset] : []),
];
run('inspect.js', shared);
run('lora.js', typeof values.runs === 'string' ? ['--runs', values.runs] : []);
run('adapterOutput.js', shared);
run('liveness.js', typeof values.runs === 'string' ? ['--runs', values.runs] : []);
run('draw.js', typeof values.runs === 'string' ? ['--runs', values.runs] : []);
run('serve.js', []);
