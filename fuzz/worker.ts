/**
 * The fuzz loop, in a worker so that the main thread can notice a hang (no progress) and end it.
 * Before each run the input is copied into shared memory: after a hang, or the worker dying of a
 * fault, the main thread still knows which input did it.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { checkInput } from './targets';
import { Rng, mutate, randomHeader, randomIndex, type FuzzInput } from './mutate';
import { encodeInput, type WorkerData, type WorkerMessage } from './protocol';
import { mutatePytorch, pytorchSeeds } from './pytorch';

const CORPUS = 256;
const MAX_FINDINGS = 20;

async function main(): Promise<void> {
  const { seed, seconds, shared, pytorchShare } = workerData as WorkerData;
  const state = new Int32Array(shared, 0, 4);
  const bytes = new Uint8Array(shared, 16);
  const rng = new Rng(seed);
  const corpus: FuzzInput[] = [];
  for (let i = 0; i < 32; i++)
    corpus.push(randomHeader(rng), randomHeader(rng, true), randomIndex(rng), randomIndex(rng, true));
  const seeds = await pytorchSeeds();
  const pytorchCorpus: FuzzInput[] = seeds.map((s) => ({ kind: 'pytorch', bytes: s.archive, dataBytes: 0 }));
  const pytorch = { inputs: 0, interpreted: 0, tables: 0 };
  // Outcome signatures seen so far: an input with a new one joins the corpus.
  const seen = new Set<string>();
  const problems = new Set<string>();
  const deadline = performance.now() + seconds * 1000;
  let iteration = 0;
  while (performance.now() < deadline && problems.size < MAX_FINDINGS) {
    let input: FuzzInput;
    if (rng.chance(pytorchShare)) {
      input = await mutatePytorch(rng, seeds, pytorchCorpus);
    } else {
      // Fresh inputs with rules broken on purpose reach the semantic checks; mutated ones the syntax.
      const fresh = rng.chance(0.3);
      const base = fresh
        ? rng.chance(0.7)
          ? randomHeader(rng, true)
          : randomIndex(rng, true)
        : rng.pick(corpus);
      input = fresh && rng.chance(0.5) ? base : mutate(rng, base, rng.pick(corpus));
    }
    encodeInput(input, state, bytes);
    Atomics.store(state, 0, ++iteration);
    const { problem, outcome, interpreted, table } = await checkInput(input, iteration % 16 === 0);
    if (input.kind === 'pytorch') {
      pytorch.inputs++;
      if (interpreted === true) pytorch.interpreted++;
      if (table === true) pytorch.tables++;
    }
    if (problem !== undefined) {
      if (!problems.has(problem)) {
        problems.add(problem);
        const minimized = await minimize(input, problem);
        post({ type: 'finding', problem, input: minimized, original: input });
      }
      continue;
    }
    // A new (outcome, size class, first byte) joins the corpus: a crude stand-in for coverage.
    const signature = `${input.kind}:${outcome}:${Math.round(Math.log2(1 + input.bytes.length))}:${input.bytes[0] ?? -1}`;
    if (!seen.has(signature)) {
      seen.add(signature);
      const pool = input.kind === 'pytorch' ? pytorchCorpus : corpus;
      if (pool.length < CORPUS) pool.push(input);
      else pool[rng.int(CORPUS)] = input;
    }
  }
  post({ type: 'done', iterations: iteration, pytorch });
}

/** Deletes pieces of the input, halving their size, while the same problem remains. */
async function minimize(input: FuzzInput, problem: string): Promise<FuzzInput> {
  let best = input;
  const stop = performance.now() + 5000;
  for (let size = best.bytes.length >> 1; size >= 1 && performance.now() < stop; size >>= 1) {
    for (let at = 0; at + size <= best.bytes.length && performance.now() < stop;) {
      const bytes = new Uint8Array(best.bytes.length - size);
      bytes.set(best.bytes.subarray(0, at));
      bytes.set(best.bytes.subarray(at + size), at);
      const candidate = { ...best, bytes };
      if ((await checkInput(candidate, false)).problem === problem) best = candidate;
      else at += size;
    }
  }
  return best;
}

function post(message: WorkerMessage): void {
  parentPort?.postMessage(message);
}

void main();
