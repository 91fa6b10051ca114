import { floatSize, isMergeableDType } from '../dtype';
import { ModelStockError } from '../errors';
import { gramSize } from '../math/gram';
import {
  lowRankUnits,
  unitsOf,
  type Backend,
  type LowRankFactor,
  type LowRankSession,
  type LowRankSpec,
  type MaterializeJob,
  type RowWindow,
  type TensorSession,
  type TensorSpec,
  type TensorWindow,
} from './backend';

/**
 * The dispatcher every backend sits behind: specs and windows are validated here, once, for all
 * backends (ggml checks bounds in its dispatcher, not in each backend), so the same fault fails the same
 * way — ModelStockError code INVALID_ARGUMENT naming the tensor and the field — whatever computes it.
 * Backends may then assume well-formed input; the addon keeps only cheap last-line checks.
 */

/** Node 20 cannot hold an external ArrayBuffer of 4 GiB or more. */
const MAX_HOST_BUFFER = 2 ** 32 - 1;

function describe(v: unknown): string {
  if (v === null) return 'null';
  if (ArrayBuffer.isView(v)) return `a ${v.constructor.name} of ${v.byteLength} bytes`;
  if (Array.isArray(v)) return `an array of ${v.length}`;
  if (typeof v === 'string') return `'${v.length > 40 ? `${v.slice(0, 40)}…` : v}'`;
  if (typeof v === 'number') return `${v}`;
  return typeof v;
}

function invalid(message: string, tensor?: string): ModelStockError {
  return new ModelStockError('INVALID_ARGUMENT', message, tensor === undefined ? {} : { tensor });
}

function expect(ok: boolean, what: string, field: string, got: unknown, tensor?: string): void {
  if (!ok) throw invalid(`Expected ${what} for ${field} but received ${describe(got)}`, tensor);
}

const isCount = (v: unknown): v is number => Number.isSafeInteger(v) && (v as number) >= 0;
const isExtent = (v: unknown): v is number => Number.isSafeInteger(v) && (v as number) >= 1;
const MERGEABLE = "'F64', 'F32', 'F16' or 'BF16'";

/** Σ r_i of one tensor's fine-tunes (native/lowrank_job.cc kMaxRank). */
const MAX_TOTAL_RANK = 65536;
/** Elements of one packed factor array (S × rows or S × cols float64): 2 GiB. */
const MAX_PACKED = 2 ** 28;

/** t: one ratio per unit. */
function expectRatios(t: unknown, units: number, name: string): void {
  expect(
    t instanceof Float64Array && t.length === units,
    `a Float64Array of one ratio per unit (${units})`,
    't',
    t,
    name,
  );
}

/** The Gram matrix a backend returned: `want` accumulators, else NATIVE_ERROR (the backend's fault). */
function checkedGram(gram: unknown, want: number, source: object, tensor: string): Float64Array {
  if (gram instanceof Float64Array && gram.length === want) return gram;
  throw new ModelStockError(
    'NATIVE_ERROR',
    `the ${source.constructor.name} returned ${describe(gram)} for a Gram matrix of ${want} entries`,
    { tensor },
  );
}

/** `bytes` holds `count` elements of `dtype`. */
function expectBytes(bytes: unknown, count: number, dtype: string, field: string, name: string): void {
  const want = count * floatSize(dtype as 'F32');
  expect(
    bytes instanceof Uint8Array && bytes.byteLength === want,
    `a Uint8Array of ${want} bytes`,
    field,
    bytes,
    name,
  );
}

/** One fine-tune's factors for a stored [rows, cols] tensor. */
function checkFactor(f: LowRankFactor, field: string, rows: number, cols: number, name: string): void {
  expect(typeof f === 'object' && f !== null, 'a factor pair {a, b, rank, scale, …}', field, f, name);
  expect(
    Number.isSafeInteger(f.rank) && f.rank >= 1 && f.rank <= MAX_TOTAL_RANK,
    `an integer from 1 to ${MAX_TOTAL_RANK}`,
    `${field}.rank`,
    f.rank,
    name,
  );
  expect(typeof f.transposed === 'boolean', 'a boolean', `${field}.transposed`, f.transposed, name);
  expect(
    typeof f.scale === 'number' && Number.isFinite(f.scale),
    'a finite number',
    `${field}.scale`,
    f.scale,
    name,
  );
  expect(isMergeableDType(f.aDtype), MERGEABLE, `${field}.aDtype`, f.aDtype, name);
  expect(isMergeableDType(f.bDtype), MERGEABLE, `${field}.bDtype`, f.bDtype, name);
  const [aShape, bShape] = f.transposed
    ? [`[${f.rank}, ${rows}]`, `[${cols}, ${f.rank}]`]
    : [`[${f.rank}, ${cols}]`, `[${rows}, ${f.rank}]`];
  const want = (shape: string, dtype: string, count: number) =>
    `a Uint8Array of ${shape} × size(${dtype}) = ${count * floatSize(dtype as 'F32')} bytes`;
  const aCount = f.rank * (f.transposed ? rows : cols);
  const bCount = f.rank * (f.transposed ? cols : rows);
  expect(
    f.a instanceof Uint8Array && f.a.byteLength === aCount * floatSize(f.aDtype),
    want(aShape, f.aDtype, aCount),
    `${field}.a`,
    f.a,
    name,
  );
  expect(
    f.b instanceof Uint8Array && f.b.byteLength === bCount * floatSize(f.bDtype),
    want(bShape, f.bDtype, bCount),
    `${field}.b`,
    f.b,
    name,
  );
}

/** rows × cols of a stored tensor, and the base's bytes of a row window inside the first `limit` rows. */
function checkRowWindow(
  w: RowWindow,
  limit: number,
  cols: number,
  baseDtype: string,
  field: string,
  name: string,
): void {
  expect(typeof w === 'object' && w !== null, 'a row window', field, w, name);
  expect(isCount(w.firstRow), 'a safe integer ≥ 0', `${field}.firstRow`, w.firstRow, name);
  expect(isCount(w.rows), 'a safe integer ≥ 0', `${field}.rows`, w.rows, name);
  expect(
    w.firstRow + w.rows <= limit,
    `rows inside the ${limit} merged rows`,
    field,
    `[${w.firstRow}, ${w.firstRow + w.rows})`,
    name,
  );
  expectBytes(w.base, w.rows * cols, baseDtype, `${field}.base`, name);
}

/** The stored [rows, cols] shape: both ≥ 1, their product a safe integer. */
function checkShape(rows: number, cols: number, prefix: string, name: string): void {
  expect(isExtent(rows), 'a safe integer ≥ 1', `${prefix}.rows`, rows, name);
  expect(
    isExtent(cols) && Number.isSafeInteger(rows * cols),
    'a safe integer ≥ 1 (rows × cols safe too)',
    `${prefix}.cols`,
    cols,
    name,
  );
}

export function checkLowRankSpec(spec: LowRankSpec): void {
  expect(typeof spec === 'object' && spec !== null, 'a low-rank spec', 'spec', spec);
  const name = typeof spec.name === 'string' ? spec.name : undefined;
  expect(name !== undefined, 'a string', 'spec.name', spec.name);
  const { rows, cols, factors, mergedRows } = spec;
  checkShape(rows, cols, 'spec', name!);
  expect(isMergeableDType(spec.baseDtype), MERGEABLE, 'spec.baseDtype', spec.baseDtype, name);
  expect(isMergeableDType(spec.outDtype), MERGEABLE, 'spec.outDtype', spec.outDtype, name);
  expect(typeof spec.filterWise === 'boolean', 'a boolean', 'spec.filterWise', spec.filterWise, name);
  expect(
    mergedRows === undefined || (isExtent(mergedRows) && mergedRows <= rows),
    `undefined or an integer from 1 to rows (${rows})`,
    'spec.mergedRows',
    mergedRows,
    name,
  );
  expect(
    Array.isArray(factors) && factors.length >= 2 && factors.length <= 1024,
    'the factors (or undefined) of 2 to 1024 fine-tunes',
    'spec.factors',
    factors,
    name,
  );
  let total = 0;
  factors.forEach((f, i) => {
    if (f === undefined) return;
    checkFactor(f, `spec.factors[${i}]`, rows, cols, name!);
    total += f.rank;
  });
  expect(
    total <= MAX_TOTAL_RANK && total * Math.max(rows, cols) <= MAX_PACKED,
    `ranks adding up to at most ${Math.min(MAX_TOTAL_RANK, Math.floor(MAX_PACKED / Math.max(rows, cols)))}`,
    'spec.factors',
    `ranks adding up to ${total}`,
    name,
  );
}

export function checkMaterializeJob(job: MaterializeJob): void {
  expect(typeof job === 'object' && job !== null, 'a materialize job', 'job', job);
  const name = typeof job.name === 'string' ? job.name : undefined;
  expect(name !== undefined, 'a string', 'job.name', job.name);
  checkShape(job.rows, job.cols, 'job', name!);
  expect(isMergeableDType(job.baseDtype), MERGEABLE, 'job.baseDtype', job.baseDtype, name);
  checkFactor(job.factor, 'job.factor', job.rows, job.cols, name!);
  expect(
    job.factor.rank * Math.max(job.rows, job.cols) <= MAX_PACKED,
    `a rank of at most ${Math.floor(MAX_PACKED / Math.max(job.rows, job.cols))}`,
    'job.factor.rank',
    job.factor.rank,
    name,
  );
  checkRowWindow(job.window, job.rows, job.cols, job.baseDtype, 'job.window', name!);
  expectBytes(job.out, job.window.rows * job.cols, 'F64', 'job.out', name!);
}

export function checkSpec(spec: TensorSpec): void {
  expect(typeof spec === 'object' && spec !== null, 'a tensor spec', 'spec', spec);
  const name = typeof spec.name === 'string' ? spec.name : undefined;
  expect(name !== undefined, 'a string', 'spec.name', spec.name);
  const { dtypes, outDtype, numel, unitLength } = spec;
  expect(
    Array.isArray(dtypes) && dtypes.length >= 3,
    'the dtypes of the base and N ≥ 2 fine-tunes',
    'spec.dtypes',
    dtypes,
    name,
  );
  dtypes.forEach((d, i) =>
    expect(isMergeableDType(d), "'F64', 'F32', 'F16' or 'BF16'", `spec.dtypes[${i}]`, d, name),
  );
  expect(isMergeableDType(outDtype), "'F64', 'F32', 'F16' or 'BF16'", 'spec.outDtype', outDtype, name);
  expect(isCount(numel), 'a safe integer ≥ 0', 'spec.numel', numel, name);
  expect(
    Number.isSafeInteger(unitLength) && unitLength >= 1 && numel % unitLength === 0,
    `a positive divisor of numel (${numel})`,
    'spec.unitLength',
    unitLength,
    name,
  );
}

class CheckedSession implements TensorSession {
  private closed = false;

  constructor(private readonly inner: TensorSession) {}

  get spec(): TensorSpec {
    return this.inner.spec;
  }

  private window(op: string, w: TensorWindow, inputsOptional: boolean): void {
    const { name, numel, dtypes } = this.spec;
    if (this.closed) throw invalid(`${op} after close()`, name);
    expect(typeof w === 'object' && w !== null, 'a window', 'window', w, name);
    expect(isCount(w.firstElement), 'a safe integer ≥ 0', 'window.firstElement', w.firstElement, name);
    expect(isCount(w.count), 'a safe integer ≥ 0', 'window.count', w.count, name);
    expect(
      w.firstElement + w.count <= numel,
      `a range inside the ${numel} elements of the spec`,
      'window',
      `[${w.firstElement}, ${w.firstElement + w.count})`,
      name,
    );
    if (w.inputs === undefined && inputsOptional && this.inner.holds(w.firstElement, w.count)) return;
    const inputs = w.inputs;
    expect(
      Array.isArray(inputs) && inputs.length === dtypes.length,
      `${dtypes.length} input byte arrays (base + ${dtypes.length - 1} fine-tunes)`,
      'window.inputs',
      inputs,
      name,
    );
    (inputs as readonly Uint8Array[]).forEach((bytes, i) => {
      const dtype = dtypes[i]!;
      expect(
        bytes instanceof Uint8Array && bytes.byteLength === w.count * floatSize(dtype),
        `a Uint8Array of count × size(${dtype}) = ${w.count * floatSize(dtype)} bytes`,
        `window.inputs[${i}]`,
        bytes,
        name,
      );
    });
  }

  gram(window: TensorWindow): Promise<void> {
    try {
      this.window('gram', window, false);
    } catch (e) {
      return Promise.reject(e);
    }
    return this.inner.gram(window);
  }

  async gramResult(): Promise<Float64Array> {
    if (this.closed) throw invalid('gramResult after close()', this.spec.name);
    const want = unitsOf(this.spec) * gramSize(this.spec.dtypes.length - 1);
    return checkedGram(await this.inner.gramResult(), want, this.inner, this.spec.name);
  }

  holds(firstElement: number, count: number): boolean {
    return !this.closed && this.inner.holds(firstElement, count);
  }

  interpolate(window: TensorWindow, t: Float64Array, out: Uint8Array): Promise<void> {
    const { name, outDtype } = this.spec;
    try {
      this.window('interpolate', window, true);
      expectRatios(t, unitsOf(this.spec), name);
      expect(
        out instanceof Uint8Array && out.byteLength === window.count * floatSize(outDtype),
        `a Uint8Array of count × size(${outDtype}) = ${window.count * floatSize(outDtype)} bytes`,
        'out',
        out,
        name,
      );
    } catch (e) {
      return Promise.reject(e);
    }
    return this.inner.interpolate(window, t, out);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.inner.close();
  }
}

class CheckedLowRankSession implements LowRankSession {
  private closed = false;

  constructor(private readonly inner: LowRankSession) {}

  get spec(): LowRankSpec {
    return this.inner.spec;
  }

  async gram(): Promise<Float64Array> {
    const { name, factors } = this.spec;
    if (this.closed) throw invalid('gram after close()', name);
    const want = lowRankUnits(this.spec) * gramSize(factors.length);
    return checkedGram(await this.inner.gram(), want, this.inner, name);
  }

  interpolate(window: RowWindow, t: Float64Array, out: Uint8Array): Promise<void> {
    const { name, rows, cols, mergedRows, baseDtype, outDtype } = this.spec;
    try {
      if (this.closed) throw invalid('interpolate after close()', name);
      checkRowWindow(window, mergedRows ?? rows, cols, baseDtype, 'window', name);
      expectRatios(t, lowRankUnits(this.spec), name);
      expectBytes(out, window.rows * cols, outDtype, 'out', name);
    } catch (e) {
      return Promise.reject(e);
    }
    return this.inner.interpolate(window, t, out);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.inner.close();
  }
}

/** `backend` behind the dispatcher's checks. */
export function checked(backend: Backend): Backend {
  return {
    name: backend.name,
    info: () => backend.info(),
    capacity: () => backend.capacity(),
    allocHost(bytes: number): Uint8Array {
      expect(
        Number.isSafeInteger(bytes) && bytes >= 1 && bytes <= MAX_HOST_BUFFER,
        'a byte count from 1 to 2^32 − 1',
        'bytes',
        bytes,
      );
      return backend.allocHost(bytes);
    },
    freeHost: (buffer) => backend.freeHost(buffer),
    openTensor(spec: TensorSpec): TensorSession {
      checkSpec(spec);
      return new CheckedSession(backend.openTensor(spec));
    },
    openLowRank(spec: LowRankSpec): LowRankSession {
      checkLowRankSpec(spec);
      return new CheckedLowRankSession(backend.openLowRank(spec));
    },
    materializeRows(job: MaterializeJob): Promise<void> {
      try {
        checkMaterializeJob(job);
      } catch (e) {
        return Promise.reject(e);
      }
      return backend.materializeRows(job);
    },
    dispose: () => backend.dispose(),
  };
}
