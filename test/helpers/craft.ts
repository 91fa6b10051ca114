/** Builds safetensors bytes by hand, so tests can break exactly one rule at a time. */
import { writeFile } from 'node:fs/promises';
import * as path from 'node:path';

/** 8-byte little-endian length + header + data; `length` overrides the declared header length. */
export function craft(
  header: string | Uint8Array,
  data: Uint8Array | number = 0,
  length?: bigint,
): Uint8Array {
  const json = typeof header === 'string' ? new TextEncoder().encode(header) : header;
  const bytes = typeof data === 'number' ? new Uint8Array(data).map((_, i) => (i * 7 + 1) & 0xff) : data;
  const out = new Uint8Array(8 + json.byteLength + bytes.byteLength);
  new DataView(out.buffer).setBigUint64(0, length ?? BigInt(json.byteLength), true);
  out.set(json, 8);
  out.set(bytes, 8 + json.byteLength);
  return out;
}

/** A header from tensor entries, in the given order. */
export function headerOf(entries: Record<string, unknown>): string {
  return JSON.stringify(entries);
}

export async function writeCrafted(dir: string, name: string, bytes: Uint8Array): Promise<string> {
  const file = path.join(dir, name);
  await writeFile(file, bytes);
  return file;
}
