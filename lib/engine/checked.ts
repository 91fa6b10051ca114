import { floatSize, isMergeableDType } from '../dtype';
import { ModelStockError } from '../errors';
import { gramSize } from '../math/gram';
import { unitsOf, type Backend, type TensorSession, type TensorSpec, type TensorWindow } from './backend';

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
    const gram = await this.inner.gramResult();
    const want = unitsOf(this.spec) * gramSize(this.spec.dtypes.length - 1);
    if (!(gram instanceof Float64Array) || gram.length !== want) {
      throw new ModelStockError(
        'NATIVE_ERROR',
        `the ${this.inner.constructor.name} returned ${describe(gram)} for a Gram matrix of ${want} entries`,
        { tensor: this.spec.name },
      );
    }
    return gram;
  }

  holds(firstElement: number, count: number): boolean {
    return !this.closed && this.inner.holds(firstElement, count);
  }

  interpolate(window: TensorWindow, t: Float64Array, out: Uint8Array): Promise<void> {
    const { name, outDtype } = this.spec;
    try {
      this.window('interpolate', window, true);
      const units = unitsOf(this.spec);
      expect(
        t instanceof Float64Array && t.length === units,
        `a Float64Array of one ratio per unit (${units})`,
        't',
        t,
        name,
      );
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
    dispose: () => backend.dispose(),
  };
}
