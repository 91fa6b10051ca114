/**
 * JSON as Python's `json.dumps(value, indent=2, sort_keys=True)` writes it (ensure_ascii), which is how
 * PEFT writes adapter_config.json (P:src/peft/config.py#L163, huggingface/peft@a5526d2): the adapter
 * output (lib/output/peft.ts) and the PEFT-exact fixtures (lib/fixtures/lora.ts) share it.
 */
/** A Python float in a config (json.dumps writes 16.0 where JavaScript writes 16). */
export class PyFloat {
  constructor(readonly value: number) {}
}

/** Python's float repr for the values configs hold. */
function pyFloat(x: number): string {
  if (Number.isInteger(x) && Math.abs(x) < 1e16) return `${x}.0`;
  return String(x).replace(/e([+-])(\d)$/, 'e$10$2');
}

/** `json.dumps(value, indent=2, sort_keys=True)` (ensure_ascii: non-ASCII as \uXXXX). */
export function pythonJson(value: unknown, indent = 2, depth = 0): string {
  const pad = (d: number): string => ' '.repeat(indent * d);
  if (value instanceof PyFloat) return pyFloat(value.value);
  if (value === null || value === undefined) return 'null';
  if (typeof value === 'boolean') return value ? 'true' : 'false';
  if (typeof value === 'number') return Number.isInteger(value) ? String(value) : pyFloat(value);
  if (typeof value === 'string') {
    return JSON.stringify(value).replace(
      /[\u007f-\uffff]/g,
      (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`,
    );
  }
  if (Array.isArray(value)) {
    if (value.length === 0) return '[]';
    return `[\n${value.map((v) => pad(depth + 1) + pythonJson(v, indent, depth + 1)).join(',\n')}\n${pad(depth)}]`;
  }
  const entries = Object.entries(value as Record<string, unknown>).sort(([a], [b]) =>
    a < b ? -1 : a > b ? 1 : 0,
  );
  if (entries.length === 0) return '{}';
  const body = entries.map(
    ([k, v]) => `${pad(depth + 1)}${pythonJson(k)}: ${pythonJson(v, indent, depth + 1)}`,
  );
  return `{\n${body.join(',\n')}\n${pad(depth)}}`;
}
