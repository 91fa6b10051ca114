import { ModelStockError } from '../errors';
import type { InspectReport, RatioStats } from '../types';

/**
 * Reads a report back — a merge's model_stock_report.json or `inspect --json` output (the schema is
 * docs/report.schema.json) — checking everything a picture is drawn from: a report edited by hand,
 * cut short or from another tool fails here with INVALID_REPORT naming the
 * file, the tensor and the field, not later as a broken drawing.
 */

type Json = unknown;

const isObject = (v: Json): v is Record<string, Json> =>
  typeof v === 'object' && v !== null && !Array.isArray(v);
const isFiniteNumber = (v: Json): v is number => typeof v === 'number' && Number.isFinite(v);
const show = (v: Json): string => {
  if (v === undefined) return 'nothing';
  const s = JSON.stringify(v);
  return s === undefined ? String(v) : s.length > 40 ? `${s.slice(0, 40)}…` : s;
};

export function parseReport(textOrBytes: string, file: string): InspectReport {
  const fail = (message: string, tensor?: string): never => {
    throw new ModelStockError('INVALID_REPORT', message, {
      file,
      ...(tensor !== undefined ? { tensor } : {}),
    });
  };
  let root: Json;
  try {
    root = JSON.parse(textOrBytes);
  } catch (e) {
    return fail(`not JSON: ${(e as Error).message}`);
  }
  if (!isObject(root)) return fail(`expected a JSON object (a model-stock merge report), got ${show(root)}`);
  if (root.method !== 'model_stock') return fail(`method must be "model_stock", got ${show(root.method)}`);
  if (typeof root.base !== 'string') return fail(`base must be a string, got ${show(root.base)}`);
  const models = root.models;
  if (!Array.isArray(models) || models.length < 2 || !models.every((m) => typeof m === 'string'))
    return fail(`models must be a list of at least 2 strings, got ${show(models)}`);
  if (typeof root.filterWise !== 'boolean')
    return fail(`filterWise must be true or false, got ${show(root.filterWise)}`);
  if (root.theta !== 'mean-cos' && root.theta !== 'mean-angle')
    return fail(`theta must be "mean-cos" or "mean-angle", got ${show(root.theta)}`);
  if (!Array.isArray(root.tensors)) return fail(`tensors must be a list, got ${show(root.tensors)}`);
  // Reports written before `inputs` existed have none.
  const inputs = root.inputs ?? [];
  if (!Array.isArray(inputs)) return fail(`inputs must be a list, got ${show(inputs)}`);
  inputs.forEach((v: Json, i: number) => {
    if (!isObject(v) || typeof v.ref !== 'string' || typeof v.io !== 'string')
      return fail(`inputs[${i}] must be {ref, format, io}, got ${show(v)}`);
    if (v.format !== 'safetensors' && v.format !== 'pytorch' && v.format !== 'lora')
      return fail(`inputs[${i}].format must be "safetensors", "pytorch" or "lora", got ${show(v.format)}`);
  });

  root.tensors.forEach((t: Json, i: number) => {
    const at = `tensors[${i}]`;
    if (!isObject(t)) return fail(`${at} must be an object, got ${show(t)}`);
    if (typeof t.name !== 'string' || t.name === '')
      return fail(`${at}.name must be a non-empty string, got ${show(t.name)}`);
    const bad = (field: string, want: string, got: Json): never =>
      fail(`${at}.${field} must be ${want}, got ${show(got)}`, t.name as string);
    if (t.action !== 'merge' && t.action !== 'copy' && t.action !== 'drop')
      bad('action', '"merge", "copy" or "drop"', t.action);
    if (t.action !== 'merge') return;

    let n = models.length;
    if (t.models !== undefined) {
      const m = t.models;
      if (
        !Array.isArray(m) ||
        m.length < 2 ||
        !m.every(
          (k, j) =>
            Number.isSafeInteger(k) && k >= 0 && k < models.length && (j === 0 || k > (m[j - 1] as number)),
        )
      )
        bad('models', `an ascending list of at least 2 indices below ${models.length}`, m);
      n = (m as number[]).length;
    }
    if (t.n !== undefined && t.n !== n) bad('n', `${n} (the number of models merged)`, t.n);

    const ratio = (v: Json): v is RatioStats =>
      isObject(v) &&
      isFiniteNumber(v.min) &&
      isFiniteNumber(v.mean) &&
      isFiniteNumber(v.max) &&
      v.min <= v.mean + 1e-12 &&
      v.mean <= v.max + 1e-12;
    const cosine = (v: Json): boolean => isFiniteNumber(v) && v >= -1 && v <= 1;
    const pairs = (n * (n - 1)) / 2;
    const perRow = t.tStats !== undefined;
    if (perRow) {
      if (!ratio(t.tStats)) bad('tStats', '{min, mean, max} of finite numbers, min ≤ mean ≤ max', t.tStats);
    } else if (!isFiniteNumber(t.t)) bad('t', 'a finite number (or tStats, filter-wise)', t.t);
    const cos = t.cosines;
    const entryOk = perRow ? (v: Json) => ratio(v) && cosine(v.min) && cosine(v.max) : cosine;
    if (!Array.isArray(cos) || cos.length !== pairs || !cos.every(entryOk)) {
      bad(
        'cosines',
        `${pairs} ${perRow ? '{min, mean, max} of cosines' : 'cosines'} in [−1, 1] (one per pair of the ${n} models)`,
        cos,
      );
    }
  });
  return root as unknown as InspectReport;
}
