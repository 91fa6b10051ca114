/** What the fuzz worker and its watchdog share. */
import type { FuzzInput } from './mutate';

export interface WorkerData {
  readonly seed: number;
  readonly seconds: number;
  /** The share of inputs that are PyTorch files (0–1). */
  readonly pytorchShare: number;
  /** 16 bytes of state (iteration, input length, kind, data bytes), then the input being run. */
  readonly shared: SharedArrayBuffer;
}

export type WorkerMessage =
  | {
      readonly type: 'finding';
      readonly problem: string;
      readonly input: FuzzInput;
      readonly original: FuzzInput;
    }
  | { readonly type: 'done'; readonly iterations: number; readonly pytorch: PytorchCounts };

/** PyTorch inputs run, how many reached the pickle interpreter, how many gave a tensor table. */
export interface PytorchCounts {
  readonly inputs: number;
  readonly interpreted: number;
  readonly tables: number;
}

export const SHARED_BYTES = 16 + (1 << 17);

const KINDS: readonly FuzzInput['kind'][] = ['header', 'index', 'pytorch'];

export function encodeInput(input: FuzzInput, state: Int32Array, bytes: Uint8Array): void {
  const length = Math.min(input.bytes.length, bytes.length);
  bytes.set(input.bytes.subarray(0, length));
  state[1] = length;
  state[2] = KINDS.indexOf(input.kind);
  state[3] = input.dataBytes;
}

export function decodeInput(state: Int32Array, bytes: Uint8Array): FuzzInput {
  return {
    kind: KINDS[state[2] as number] ?? 'header',
    bytes: bytes.slice(0, state[1]),
    dataBytes: state[3] as number,
  };
}
