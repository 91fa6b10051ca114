/** What the fuzz worker and its watchdog share. */
import type { FuzzInput } from './mutate';

export interface WorkerData {
  readonly seed: number;
  readonly seconds: number;
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
  | { readonly type: 'done'; readonly iterations: number };

export const SHARED_BYTES = 16 + (1 << 17);

export function encodeInput(input: FuzzInput, state: Int32Array, bytes: Uint8Array): void {
  const length = Math.min(input.bytes.length, bytes.length);
  bytes.set(input.bytes.subarray(0, length));
  state[1] = length;
  state[2] = input.kind === 'header' ? 0 : 1;
  state[3] = input.dataBytes;
}

export function decodeInput(state: Int32Array, bytes: Uint8Array): FuzzInput {
  return {
    kind: state[2] === 0 ? 'header' : 'index',
    bytes: bytes.slice(0, state[1]),
    dataBytes: state[3] as number,
  };
}
