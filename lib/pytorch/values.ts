/**
 * What the pickle interpreter builds: inert records of Python values. Nothing here can run code — a
 * global is a name, a call is the callee and its arguments kept side by side — except the few records
 * recognised as data: dictionaries (`collections.OrderedDict()`), `torch.Size`, storages and tensors.
 */
import type { DType } from '../dtype';
import type { GlobalMeaning } from './globals';
import { ChunkedMap } from '../util/chunkedMap';

export type PyValue =
  | null
  | boolean
  | number
  | bigint
  | string
  | PyBytes
  | PyTuple
  | PyList
  | PyDict
  | PySet
  | PyGlobal
  | PyObject
  | PyStorage
  | PyTensor
  | PyUnreadableTensor;

export class PyBytes {
  constructor(readonly bytes: Uint8Array) {}
}

export class PyTuple {
  constructor(readonly items: readonly PyValue[]) {}
}

export class PyList {
  constructor(readonly items: PyValue[] = []) {}
}

export class PySet {
  constructor(readonly items: PyValue[] = []) {}
}

/** Above this many string keys a dict's index is spread over a ChunkedMap (no long rehash stalls). */
const SMALL_DICT = 1 << 16;

/**
 * A dict in insertion order. String keys are unique (a second SETITEM replaces the value, in place);
 * other keys (the integers of an optimizer's state) are only listed.
 */
export class PyDict {
  /** Created with the first string key: most dicts (a tensor's backward hooks) stay empty. */
  private byString: Map<string, number> | ChunkedMap<number> | undefined;
  readonly keys: PyValue[] = [];
  readonly values: PyValue[] = [];

  set(key: PyValue, value: PyValue): void {
    if (typeof key === 'string') {
      let index = (this.byString ??= new Map());
      const at = index.get(key);
      if (at !== undefined) {
        this.values[at] = value;
        return;
      }
      if (index instanceof Map && index.size === SMALL_DICT) {
        const chunked = new ChunkedMap<number>();
        for (const [k, v] of index) chunked.set(k, v);
        this.byString = index = chunked;
      }
      index.set(key, this.keys.length);
    }
    this.keys.push(key);
    this.values.push(value);
  }

  get(key: string): PyValue | undefined {
    const at = this.byString?.get(key);
    return at === undefined ? undefined : this.values[at];
  }

  get size(): number {
    return this.keys.length;
  }
}

/** What GLOBAL or STACK_GLOBAL names: `module.name`, never imported. */
export class PyGlobal {
  constructor(
    readonly module: string,
    readonly name: string,
    readonly meaning: GlobalMeaning,
  ) {}

  get qualified(): string {
    return `${this.module}.${this.name}`;
  }
}

/**
 * A call (REDUCE, NEWOBJ) that was not made: the callee and its arguments, and whatever BUILD, APPEND
 * or SETITEM would have done to the result.
 */
export class PyObject {
  state: PyValue | undefined;
  /** What APPEND(S) added. */
  items: PyValue[] | undefined;
  /** What SETITEM(S) added. */
  entries: PyDict | undefined;

  constructor(
    readonly callee: PyValue,
    readonly args: PyValue,
  ) {}
}

/** A persistent id `('storage', torch.XStorage, key, location, numel)`: the bytes of `data/<key>`. */
export class PyStorage {
  constructor(
    /** `torch.FloatStorage`, … as named in the file. */
    readonly type: string,
    /** The element type; undefined for a storage type model-stock cannot read (QInt8Storage, …). */
    readonly dtype: DType | undefined,
    readonly key: string,
    /** Elements (bytes for an untyped storage). */
    readonly numel: number,
  ) {}
}

/** A dense tensor: `storage bytes + offset · itemsize`, with its shape and strides (in elements). */
export class PyTensor {
  constructor(
    readonly storage: PyStorage,
    readonly dtype: DType | undefined,
    readonly offset: number,
    readonly shape: readonly number[],
    readonly stride: readonly number[],
  ) {}
}

/** A tensor torch's rebuild functions describe but model-stock cannot read as dense data in place. */
export class PyUnreadableTensor {
  constructor(
    /** Why, for the error naming the tensor: "a quantized tensor (torch._utils._rebuild_qtensor)". */
    readonly what: string,
  ) {}
}

export function isTensorLike(v: PyValue | undefined): v is PyTensor | PyUnreadableTensor {
  return v instanceof PyTensor || v instanceof PyUnreadableTensor;
}
