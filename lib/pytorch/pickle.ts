/**
 * A pickle interpreter for the data.pkl torch.save writes (protocols 2–5): a stack, a mark stack and a
 * memo over inert values (values.ts). It never imports or calls anything. GLOBAL gives a name whose
 * meaning is decided once (globals.ts); REDUCE and NEWOBJ give a record of the call, except for the
 * calls recognised as data: torch's tensor rebuild functions over a persistent-id storage, dict
 * constructors, torch.Size. A hostile data.pkl ends in INVALID_PICKLE — every opcode, stack, memo,
 * string and the total size of the values built are bounded — never a hang, a deep recursion or
 * gigabytes of memory. Run in slices (lib/util/sliced.ts): the event loop stays live.
 *
 * Opcodes of protocols 0 and 1 that call (INST, OBJ), extension registries (EXT1/2/4), out-of-band
 * buffers and the text forms of numbers and memo access are refused: torch.save writes none of them.
 */
import { ModelStockError } from '../errors';
import { CHECK_EVERY, type Sliced } from '../util/sliced';
import { globalMeaning, python3Name, type GlobalMeaning } from './globals';
import {
  PyBytes,
  PyDict,
  PyGlobal,
  PyList,
  PyObject,
  PySet,
  PyStorage,
  PyTensor,
  PyTuple,
  PyUnreadableTensor,
  isTensorLike,
  type PyValue,
} from './values';

export interface PickleLimits {
  /** Opcodes run. */
  readonly ops: number;
  /** Values on the stack at once. */
  readonly stack: number;
  /** MARKs open at once (nesting). */
  readonly marks: number;
  /** Memo entries. */
  readonly memo: number;
  /** One string's or bytes object's length. */
  readonly string: number;
  /** An estimate of the memory the values take: containers, items, strings. */
  readonly valueBytes: number;
}

/**
 * Far above what real checkpoints need — about 50 opcodes and 1.3 KB of estimated values per tensor, so
 * one file of ~400k tensors fits (the largest models hold under 100k, spread over shards) — and low
 * enough that a hostile data.pkl ends in an error before ~500 MB of values (700 MB RSS measured with the
 * worst repetitions, the 270 MB pickle itself included).
 */
export const PICKLE_LIMITS: PickleLimits = {
  ops: 64 << 20,
  stack: 1 << 20,
  marks: 1 << 12,
  memo: 8 << 20,
  string: 64 << 20,
  valueBytes: 512 << 20,
};

/**
 * Estimated bytes each new value takes on V8's heap (measured: a hostile pickle repeating one kind of
 * value until the limit stops it peaks at about the limit in RSS), an item in a container, and a string
 * beyond its text. A call (REDUCE, NEWOBJ) is priced as the dict it may make.
 */
const LIST_COST = 96;
const TUPLE_COST = 80;
const DICT_COST = 144;
const BYTES_COST = 160;
const RECORD_COST = 96;
const ITEM_COST = 16;
const STRING_COST = 40;

export interface Interpreted {
  /** What STOP returned. */
  readonly root: PyValue;
  /** Every global the pickle names (qualified name → meaning), in order of first appearance. */
  readonly globals: ReadonlyMap<string, GlobalMeaning>;
}

/** Opcode names, for messages. */
const OPCODE_NAMES: Record<number, string> = {
  0x28: 'MARK',
  0x2e: 'STOP',
  0x30: 'POP',
  0x31: 'POP_MARK',
  0x32: 'DUP',
  0x46: 'FLOAT',
  0x49: 'INT',
  0x4a: 'BININT',
  0x4b: 'BININT1',
  0x4c: 'LONG',
  0x4d: 'BININT2',
  0x4e: 'NONE',
  0x50: 'PERSID',
  0x51: 'BINPERSID',
  0x52: 'REDUCE',
  0x53: 'STRING',
  0x54: 'BINSTRING',
  0x55: 'SHORT_BINSTRING',
  0x56: 'UNICODE',
  0x58: 'BINUNICODE',
  0x61: 'APPEND',
  0x62: 'BUILD',
  0x63: 'GLOBAL',
  0x64: 'DICT',
  0x7d: 'EMPTY_DICT',
  0x65: 'APPENDS',
  0x67: 'GET',
  0x68: 'BINGET',
  0x69: 'INST',
  0x6a: 'LONG_BINGET',
  0x6c: 'LIST',
  0x5d: 'EMPTY_LIST',
  0x6f: 'OBJ',
  0x70: 'PUT',
  0x71: 'BINPUT',
  0x72: 'LONG_BINPUT',
  0x73: 'SETITEM',
  0x74: 'TUPLE',
  0x29: 'EMPTY_TUPLE',
  0x75: 'SETITEMS',
  0x47: 'BINFLOAT',
  0x80: 'PROTO',
  0x81: 'NEWOBJ',
  0x82: 'EXT1',
  0x83: 'EXT2',
  0x84: 'EXT4',
  0x85: 'TUPLE1',
  0x86: 'TUPLE2',
  0x87: 'TUPLE3',
  0x88: 'NEWTRUE',
  0x89: 'NEWFALSE',
  0x8a: 'LONG1',
  0x8b: 'LONG4',
  0x42: 'BINBYTES',
  0x43: 'SHORT_BINBYTES',
  0x8c: 'SHORT_BINUNICODE',
  0x8d: 'BINUNICODE8',
  0x8e: 'BINBYTES8',
  0x8f: 'EMPTY_SET',
  0x90: 'ADDITEMS',
  0x91: 'FROZENSET',
  0x92: 'NEWOBJ_EX',
  0x93: 'STACK_GLOBAL',
  0x94: 'MEMOIZE',
  0x95: 'FRAME',
  0x96: 'BYTEARRAY8',
  0x97: 'NEXT_BUFFER',
  0x98: 'READONLY_BUFFER',
};

const EMPTY_TUPLE = new PyTuple([]);
const utf8 = new TextDecoder('utf-8', { fatal: true });
const latin1 = new TextDecoder('latin1');

/** Thrown inside the machine; turned into INVALID_PICKLE with the opcode and its position. */
class Bad extends Error {}

/** Interprets `bytes` (a data.pkl) as data; `file` names the archive in errors. */
export function* interpretPickle(
  bytes: Uint8Array,
  file: string,
  limits: PickleLimits = PICKLE_LIMITS,
): Sliced<Interpreted> {
  const m = new Machine(bytes, limits);
  try {
    for (;;) {
      for (let i = 0; i < CHECK_EVERY; i++) {
        if (m.step()) return { root: m.result, globals: m.globals };
      }
      yield;
    }
  } catch (e) {
    if (!(e instanceof Bad)) throw e;
    const name = OPCODE_NAMES[m.op];
    const at =
      m.op < 0 ? '' : ` (opcode ${name ?? `0x${m.op.toString(16).padStart(2, '0')}`} at byte ${m.opAt})`;
    throw new ModelStockError('INVALID_PICKLE', `data.pkl: ${e.message}${at}`, { file });
  }
}

class Machine {
  readonly globals = new Map<string, GlobalMeaning>();
  result: PyValue = null;
  /** The opcode being run and where it started: for messages. */
  op = -1;
  opAt = 0;
  private pos = 0;
  private ops = 0;
  /** From PROTO; a pickle without it is protocol 0 or 1. */
  private protocol = 0;
  private valueBytes = 0;
  private readonly stack: PyValue[] = [];
  private readonly marks: number[] = [];
  /** The memo: torch's indices are dense from 0, kept in an array; any others in a Map. */
  private readonly memo: PyValue[] = [];
  private readonly sparseMemo = new Map<number, PyValue>();
  private readonly storages = new Map<string, PyStorage>();
  private readonly view: DataView;
  private readonly buffer: Buffer;

  constructor(
    private readonly bytes: Uint8Array,
    private readonly limits: PickleLimits,
  ) {
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    this.buffer = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }

  private need(n: number): number {
    if (n > this.bytes.byteLength - this.pos) throw new Bad('truncated: the pickle ends inside an opcode');
    const at = this.pos;
    this.pos += n;
    return at;
  }

  private u8(): number {
    return this.bytes[this.need(1)] as number;
  }
  private u16(): number {
    return this.view.getUint16(this.need(2), true);
  }
  private u32(): number {
    return this.view.getUint32(this.need(4), true);
  }
  private u64(): number {
    const v = this.view.getBigUint64(this.need(8), true);
    return v > BigInt(Number.MAX_SAFE_INTEGER) ? Number.MAX_SAFE_INTEGER : Number(v);
  }

  private spend(cost: number): void {
    this.valueBytes += cost;
    if (this.valueBytes > this.limits.valueBytes) {
      throw new Bad(`its values exceed the limit of ${this.limits.valueBytes} bytes`);
    }
  }

  private push(v: PyValue): void {
    if (this.stack.length >= this.limits.stack)
      throw new Bad(`stack deeper than the limit of ${this.limits.stack}`);
    this.stack.push(v);
  }

  private fence(): number {
    return this.marks.length > 0 ? (this.marks[this.marks.length - 1] as number) : 0;
  }

  private pop(): PyValue {
    if (this.stack.length <= this.fence()) throw new Bad('stack underflow');
    return this.stack.pop() as PyValue;
  }

  private top(): PyValue {
    if (this.stack.length <= this.fence()) throw new Bad('stack underflow');
    return this.stack[this.stack.length - 1] as PyValue;
  }

  private popMark(): PyValue[] {
    const mark = this.marks.pop();
    if (mark === undefined) throw new Bad('no MARK to pop to');
    this.spend(ITEM_COST * (this.stack.length - mark));
    return this.stack.splice(mark);
  }

  private text(n: number): string {
    if (n > this.limits.string)
      throw new Bad(`a string of ${n} bytes exceeds the limit of ${this.limits.string}`);
    const at = this.need(n);
    this.spend(STRING_COST + n);
    // Names are ASCII: read those without a view object per string (a million tensors, millions of strings).
    let ascii = true;
    for (let i = at; i < at + n && ascii; i++) ascii = (this.bytes[i] as number) < 0x80;
    if (ascii) return this.buffer.toString('latin1', at, at + n);
    try {
      return utf8.decode(this.bytes.subarray(at, at + n));
    } catch {
      throw new Bad('a string is not valid UTF-8');
    }
  }

  private binary(n: number, decode: 'bytes' | 'latin1'): PyValue {
    if (n > this.limits.string) throw new Bad(`${n} bytes exceed the string limit of ${this.limits.string}`);
    const at = this.need(n);
    const slice = this.bytes.subarray(at, at + n);
    if (decode === 'latin1') {
      this.spend(STRING_COST + n);
      return latin1.decode(slice);
    }
    this.spend(BYTES_COST);
    return new PyBytes(slice);
  }

  /** A GLOBAL's line: module or name, up to its newline. */
  private line(): string {
    const end = this.bytes.indexOf(0x0a, this.pos);
    if (end < 0 || end - this.pos > 1024) throw new Bad('GLOBAL without a name line of at most 1024 bytes');
    return this.text(end - this.pos + 1).slice(0, -1);
  }

  private global(module: string, name: string): PyGlobal {
    const [m, n] = python3Name(module, name, this.protocol);
    const g = new PyGlobal(m, n, globalMeaning(m, n));
    if (!this.globals.has(g.qualified)) this.globals.set(g.qualified, g.meaning);
    this.spend(RECORD_COST);
    return g;
  }

  private integer(bytes: Uint8Array): PyValue {
    if (bytes.byteLength === 0) return 0;
    let v = 0n;
    for (let i = bytes.byteLength - 1; i >= 0; i--) v = (v << 8n) | BigInt(bytes[i] as number);
    if ((bytes[bytes.byteLength - 1] as number) & 0x80) v -= 1n << BigInt(8 * bytes.byteLength);
    return v >= BigInt(Number.MIN_SAFE_INTEGER) && v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v;
  }

  private memoPut(index: number): void {
    const value = this.top();
    if (index < this.memo.length) {
      this.memo[index] = value;
      return;
    }
    if (this.memo.length + this.sparseMemo.size >= this.limits.memo && !this.sparseMemo.has(index)) {
      throw new Bad(`memo larger than the limit of ${this.limits.memo} entries`);
    }
    if (index === this.memo.length) this.memo.push(value);
    else this.sparseMemo.set(index, value);
    this.spend(ITEM_COST);
  }

  private memoGet(index: number): void {
    const v = index < this.memo.length ? this.memo[index] : this.sparseMemo.get(index);
    if (v === undefined) throw new Bad(`memo entry ${index} was never stored`);
    this.push(v);
  }

  /** Runs one opcode; true at STOP. */
  step(): boolean {
    if (++this.ops > this.limits.ops) throw new Bad(`more than the limit of ${this.limits.ops} opcodes`);
    if (this.pos >= this.bytes.byteLength) {
      this.op = -1;
      throw new Bad('ends without STOP');
    }
    this.opAt = this.pos;
    const op = (this.op = this.u8());
    switch (op) {
      case 0x80: {
        const protocol = this.u8();
        if (protocol > 5) throw new Bad(`protocol ${protocol} (5 is the highest)`);
        this.protocol = protocol;
        return false;
      }
      case 0x95: // FRAME: a length hint for buffered readers
        if (this.u64() > this.bytes.byteLength - this.pos) throw new Bad('a frame runs past the end');
        return false;
      case 0x2e: // STOP
        this.result = this.pop();
        return true;
      case 0x28: // MARK
        if (this.marks.length >= this.limits.marks)
          throw new Bad(`MARKs nested deeper than ${this.limits.marks}`);
        this.marks.push(this.stack.length);
        return false;
      case 0x30: // POP: the top value, or an empty MARK
        if (this.stack.length > this.fence()) this.stack.pop();
        else if (this.marks.length > 0) this.popMark();
        else throw new Bad('stack underflow');
        return false;
      case 0x31: // POP_MARK
        this.popMark();
        return false;
      case 0x32: // DUP
        this.push(this.top());
        return false;
      case 0x4e:
        this.push(null);
        return false;
      case 0x88:
        this.push(true);
        return false;
      case 0x89:
        this.push(false);
        return false;
      case 0x4a: // BININT
        this.push(this.view.getInt32(this.need(4), true));
        return false;
      case 0x4b: // BININT1
        this.push(this.u8());
        return false;
      case 0x4d: // BININT2
        this.push(this.u16());
        return false;
      case 0x8a: // LONG1
      case 0x8b: {
        const n = op === 0x8a ? this.u8() : this.u32();
        if (n > 1024) throw new Bad(`an integer of ${n} bytes (the limit is 1024)`);
        const at = this.need(n);
        this.spend(STRING_COST);
        this.push(this.integer(this.bytes.subarray(at, at + n)));
        return false;
      }
      case 0x47: // BINFLOAT: big-endian
        this.push(this.view.getFloat64(this.need(8), false));
        return false;
      case 0x58: // BINUNICODE
        this.push(this.text(this.u32()));
        return false;
      case 0x8c: // SHORT_BINUNICODE
        this.push(this.text(this.u8()));
        return false;
      case 0x8d: // BINUNICODE8
        this.push(this.text(this.u64()));
        return false;
      case 0x54: {
        // BINSTRING (Python 2 str): signed length
        const n = this.view.getInt32(this.need(4), true);
        if (n < 0) throw new Bad('a negative string length');
        this.push(this.binary(n, 'latin1'));
        return false;
      }
      case 0x55: // SHORT_BINSTRING
        this.push(this.binary(this.u8(), 'latin1'));
        return false;
      case 0x42: // BINBYTES
        this.push(this.binary(this.u32(), 'bytes'));
        return false;
      case 0x43: // SHORT_BINBYTES
        this.push(this.binary(this.u8(), 'bytes'));
        return false;
      case 0x8e: // BINBYTES8
      case 0x96: // BYTEARRAY8
        this.push(this.binary(this.u64(), 'bytes'));
        return false;
      case 0x5d: // EMPTY_LIST
        this.spend(LIST_COST);
        this.push(new PyList());
        return false;
      case 0x6c: {
        // LIST
        const list = new PyList(this.popMark());
        this.spend(LIST_COST);
        this.push(list);
        return false;
      }
      case 0x61: {
        // APPEND
        const v = this.pop();
        this.appendTo(this.top(), [v]);
        return false;
      }
      case 0x65: {
        // APPENDS
        const items = this.popMark();
        this.appendTo(this.top(), items);
        return false;
      }
      case 0x29: // EMPTY_TUPLE
        this.push(EMPTY_TUPLE);
        return false;
      case 0x74: // TUPLE
        this.spend(TUPLE_COST);
        this.push(new PyTuple(this.popMark()));
        return false;
      case 0x85:
      case 0x86:
      case 0x87: {
        // TUPLE1, TUPLE2, TUPLE3
        const n = op - 0x84;
        const items: PyValue[] = new Array<PyValue>(n);
        for (let i = n - 1; i >= 0; i--) items[i] = this.pop();
        this.spend(TUPLE_COST + ITEM_COST * n);
        this.push(new PyTuple(items));
        return false;
      }
      case 0x7d: // EMPTY_DICT
        this.spend(DICT_COST);
        this.push(new PyDict());
        return false;
      case 0x64: {
        // DICT
        const items = this.popMark();
        const dict = new PyDict();
        this.setItems(dict, items);
        this.spend(DICT_COST);
        this.push(dict);
        return false;
      }
      case 0x73: {
        // SETITEM
        const value = this.pop();
        const key = this.pop();
        this.setItems(this.top(), [key, value]);
        return false;
      }
      case 0x75: {
        // SETITEMS
        const items = this.popMark();
        this.setItems(this.top(), items);
        return false;
      }
      case 0x8f: // EMPTY_SET
        this.spend(LIST_COST);
        this.push(new PySet());
        return false;
      case 0x90: {
        // ADDITEMS
        const items = this.popMark();
        const target = this.top();
        if (!(target instanceof PySet)) throw new Bad('ADDITEMS to something that is not a set');
        for (const item of items) target.items.push(item);
        return false;
      }
      case 0x91: {
        // FROZENSET
        const set = new PySet(this.popMark());
        this.spend(LIST_COST);
        this.push(set);
        return false;
      }
      case 0x63: {
        // GLOBAL: "module\nname\n"
        const module = this.line();
        this.push(this.global(module, this.line()));
        return false;
      }
      case 0x93: {
        // STACK_GLOBAL
        const name = this.pop();
        const module = this.pop();
        if (typeof module !== 'string' || typeof name !== 'string') {
          throw new Bad('STACK_GLOBAL of something other than two strings');
        }
        this.push(this.global(module, name));
        return false;
      }
      case 0x52: {
        // REDUCE: callee(*args), recorded, never called
        const args = this.pop();
        const callee = this.pop();
        if (!(args instanceof PyTuple)) throw new Bad('REDUCE with arguments that are not a tuple');
        this.spend(DICT_COST);
        this.push(this.call(callee, args, true));
        return false;
      }
      case 0x81:
      case 0x92: {
        // NEWOBJ cls.__new__(cls, *args); NEWOBJ_EX adds kwargs
        if (op === 0x92) this.pop();
        const args = this.pop();
        const cls = this.pop();
        if (!(args instanceof PyTuple)) throw new Bad('NEWOBJ with arguments that are not a tuple');
        this.spend(DICT_COST);
        this.push(this.call(cls, args, false));
        return false;
      }
      case 0x62: {
        // BUILD: obj.__setstate__(state), recorded; a dict's (the state dict's _metadata) is dropped
        const state = this.pop();
        const target = this.top();
        if (target instanceof PyObject) target.state = state;
        return false;
      }
      case 0x51: // BINPERSID
        this.push(this.storage(this.pop()));
        return false;
      case 0x71: // BINPUT
        this.memoPut(this.u8());
        return false;
      case 0x72: // LONG_BINPUT
        this.memoPut(this.u32());
        return false;
      case 0x94: // MEMOIZE
        this.memoPut(this.memo.length + this.sparseMemo.size);
        return false;
      case 0x68: // BINGET
        this.memoGet(this.u8());
        return false;
      case 0x6a: // LONG_BINGET
        this.memoGet(this.u32());
        return false;
      default:
        throw new Bad(
          OPCODE_NAMES[op] === undefined ? 'not a pickle opcode' : 'an opcode torch.save does not write',
        );
    }
  }

  private appendTo(target: PyValue, items: PyValue[]): void {
    this.spend(ITEM_COST * items.length);
    const list =
      target instanceof PyList
        ? target.items
        : target instanceof PyObject
          ? (target.items ??= [])
          : undefined;
    if (list === undefined) throw new Bad('APPEND to something that is not a list');
    // A loop: spreading a million items would overflow the call stack.
    for (const item of items) list.push(item);
  }

  private setItems(target: PyValue, items: PyValue[]): void {
    if (items.length % 2 !== 0) throw new Bad('SETITEMS with a key but no value');
    this.spend(ITEM_COST * items.length);
    const dict =
      target instanceof PyDict
        ? target
        : target instanceof PyObject
          ? (target.entries ??= new PyDict())
          : undefined;
    if (dict === undefined) throw new Bad('SETITEM on something that is not a dict');
    for (let i = 0; i < items.length; i += 2) dict.set(items[i] as PyValue, items[i + 1] as PyValue);
  }

  /**
   * The record of `callee(*args)`: data for the calls torch's tensors are made of, an inert PyObject for
   * anything else. `reduce`: REDUCE (a function call); otherwise NEWOBJ (an instance of a class).
   */
  private call(callee: PyValue, args: PyTuple, reduce: boolean): PyValue {
    const meaning = callee instanceof PyGlobal ? callee.meaning : undefined;
    switch (meaning?.kind) {
      case 'dict':
        return new PyDict();
      case 'size':
        return reduce && args.items[0] instanceof PyTuple ? args.items[0] : new PyObject(callee, args);
      case 'rebuild':
        return reduce ? tensorOf(meaning.version, args.items) : new PyObject(callee, args);
      case 'parameter': {
        const data = args.items[0];
        return reduce && isTensorLike(data) ? data : new PyObject(callee, args);
      }
      case 'fromType': {
        // func(*args) for func one of the rebuilds above (one level: func is a name, not another call).
        const [func, , inner] = args.items;
        if (
          reduce &&
          func instanceof PyGlobal &&
          func.meaning.kind !== 'fromType' &&
          inner instanceof PyTuple
        ) {
          const made = this.call(func, inner, true);
          if (isTensorLike(made)) return made;
        }
        return new PyObject(callee, args);
      }
      case 'unreadable':
        return reduce ? new PyUnreadableTensor(meaning.what) : new PyObject(callee, args);
      default:
        return new PyObject(callee, args);
    }
  }

  /** BINPERSID's `('storage', torch.XStorage, key, location, numel)`; one record per key. */
  private storage(pid: PyValue): PyStorage {
    const items = pid instanceof PyTuple ? pid.items : [];
    const [tag, type, key, location, numel] = items;
    if (
      items.length !== 5 ||
      tag !== 'storage' ||
      !(type instanceof PyGlobal) ||
      typeof key !== 'string' ||
      key === '' ||
      typeof location !== 'string' ||
      typeof numel !== 'number' ||
      !Number.isSafeInteger(numel) ||
      numel < 0
    ) {
      throw new Bad("a persistent id that is not torch's ('storage', type, key, location, numel)");
    }
    const dtype = type.meaning.kind === 'storage' ? type.meaning.dtype : undefined;
    const known = this.storages.get(key);
    if (known !== undefined) {
      if (known.type !== type.qualified || known.numel !== numel) {
        throw new Bad(`storage "${key}" is described twice, differently (${known.type}, ${type.qualified})`);
      }
      return known;
    }
    const storage = new PyStorage(type.qualified, dtype, key, numel);
    this.storages.set(key, storage);
    this.spend(RECORD_COST);
    return storage;
  }
}

function dims(v: PyValue | undefined): number[] | undefined {
  if (!(v instanceof PyTuple)) return undefined;
  const out: number[] = [];
  for (const d of v.items) {
    if (typeof d !== 'number' || !Number.isSafeInteger(d) || d < 0) return undefined;
    out.push(d);
  }
  return out;
}

/**
 * `_rebuild_tensor(storage, offset, size, stride)`, `_v2(…, requires_grad, hooks[, metadata])` and
 * `_v3(…, requires_grad, hooks, dtype[, metadata])`: a dense tensor, or the reason it is not one.
 */
function tensorOf(version: 1 | 2 | 3, args: readonly PyValue[]): PyValue {
  const [storage, offset, size, stride] = args;
  const shape = dims(size);
  const strides = dims(stride);
  if (!(storage instanceof PyStorage)) return new PyUnreadableTensor('a tensor without a storage record');
  if (
    typeof offset !== 'number' ||
    !Number.isSafeInteger(offset) ||
    offset < 0 ||
    shape === undefined ||
    strides === undefined ||
    shape.length !== strides.length ||
    shape.length > 64
  ) {
    return new PyUnreadableTensor('a tensor with a malformed offset, shape or strides');
  }
  let dtype = storage.dtype;
  if (version === 3) {
    const d = args[6];
    if (!(d instanceof PyGlobal) || d.meaning.kind !== 'dtype') {
      return new PyUnreadableTensor('a tensor whose dtype is not a torch dtype');
    }
    dtype = d.meaning.dtype;
  }
  return new PyTensor(storage, dtype, offset, shape, strides);
}
