/**
 * The pickle interpreter (lib/pytorch/pickle.ts) on crafted streams: every opcode it accepts builds the
 * value Python would (as an inert record where Python would call), everything else — other opcodes,
 * truncation, every limit — ends in INVALID_PICKLE, and nothing is ever called.
 */
import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import { isModelStockError } from '../../lib/errors';
import { interpretPickle, PICKLE_LIMITS, type PickleLimits } from '../../lib/pytorch/pickle';
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
  type PyValue,
} from '../../lib/pytorch/values';
import { stateDictPickle } from '../../lib/fixtures/torchZip';
import { runSliced, runSync } from '../../lib/util/sliced';
import { assertLive } from '../helpers/liveness';
import { PickleBuilder } from '../helpers/pytorch';

const FILE = '/test/data.pkl';
const run = (b: PickleBuilder | Uint8Array, limits?: PickleLimits) =>
  runSync(interpretPickle(b instanceof Uint8Array ? b : b.bytes(), FILE, limits));
const root = (b: PickleBuilder, limits?: PickleLimits): PyValue => run(b, limits).root;
const P = (): PickleBuilder => new PickleBuilder().proto(2);

function refused(b: PickleBuilder | Uint8Array, ...mention: (string | RegExp)[]): void {
  let caught: unknown;
  try {
    run(b);
  } catch (e) {
    caught = e;
  }
  assert.ok(isModelStockError(caught), `expected INVALID_PICKLE, got ${String(caught)}`);
  assert.equal(caught.code, 'INVALID_PICKLE', caught.message);
  assert.equal(caught.file, FILE);
  for (const m of mention) {
    if (typeof m === 'string') assert.ok(caught.message.includes(m), `"${caught.message}" mentions ${m}`);
    else assert.match(caught.message, m);
  }
}

const limited = (patch: Partial<PickleLimits>): PickleLimits => ({ ...PICKLE_LIMITS, ...patch });

describe('pickle interpreter', () => {
  it('numbers as Python reads them: BININT1/2, negative BININT, LONG1 (big, negative), BINFLOAT', () => {
    const v = root(
      P()
        .mark()
        .int(7)
        .int(300)
        .int(-5)
        .long1(0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x40) // 2^70
        .long1(0xff) // -1
        .long1()
        .float(0.1)
        .tuple()
        .stop(),
    ) as PyTuple;
    assert.deepEqual(v.items, [7, 300, -5, 2n ** 70n, -1, 0, 0.1]);
  });

  it('strings and bytes: BINUNICODE, SHORT_BINUNICODE, BINSTRING (Latin-1), SHORT_BINBYTES', () => {
    const v = root(
      P().mark().str('naïve').shortStr('名前').raw(0x55, 2, 0xe9, 0x41).bytes_([1, 2, 3]).tuple().stop(),
    ) as PyTuple;
    assert.deepEqual(v.items.slice(0, 3), ['naïve', '名前', 'éA']);
    assert.ok(v.items[3] instanceof PyBytes);
    assert.deepEqual([...(v.items[3] as PyBytes).bytes], [1, 2, 3]);
  });

  it('containers: lists, tuples, dicts (a repeated key replaces the value in place), sets; the memo; DUP, POP, POP_MARK', () => {
    const v = root(
      P()
        .emptyDict()
        .put(0)
        .mark()
        .str('a')
        .emptyList()
        .int(1)
        .append()
        .mark()
        .int(2)
        .int(3)
        .raw(0x65) // APPENDS
        .str('b')
        .int(1)
        .int(2)
        .tupleN(2)
        .str('a')
        .int(9) // replaces "a", keeps its position
        .setitems()
        .str('c')
        .raw(0x8f, 0x28) // EMPTY_SET, MARK
        .int(4)
        .raw(0x90) // ADDITEMS
        .setitem()
        .str('d')
        .get(0) // the dict itself
        .setitem()
        .str('e')
        .none()
        .raw(0x32, 0x30) // DUP, POP
        .setitem()
        .mark()
        .int(5)
        .raw(0x31) // POP_MARK
        .stop(),
    ) as PyDict;
    assert.deepEqual(v.keys, ['a', 'b', 'c', 'd', 'e']);
    assert.equal(v.get('a'), 9);
    assert.deepEqual((v.get('b') as PyTuple).items, [1, 2]);
    assert.deepEqual((v.get('c') as PySet).items, [4]);
    assert.equal(v.get('d'), v, 'a dict holding itself: a cycle, no recursion');
    assert.equal(v.get('e'), null);
  });

  it('protocol 4: FRAME, MEMOIZE, STACK_GLOBAL', () => {
    const b = new PickleBuilder()
      .proto(4)
      .raw(0x95, 30, 0, 0, 0, 0, 0, 0, 0) // FRAME of 30 bytes
      .stackGlobal('collections', 'OrderedDict')
      .raw(0x94) // MEMOIZE → 0
      .emptyTuple()
      .reduce()
      .raw(0x94)
      .get(0)
      .raw(0x30) // POP
      .stop();
    const { root: v, globals } = run(b);
    assert.ok(v instanceof PyDict);
    assert.deepEqual([...globals.keys()], ['collections.OrderedDict']);
  });

  it('calls are records, never made: REDUCE, NEWOBJ and BUILD on any global give an inert object', () => {
    const marker = '/tmp/model-stock-pickle-test-marker';
    fs.rmSync(marker, { force: true });
    const v = root(
      P()
        .mark()
        .global('os', 'system')
        .str(`touch ${marker}`)
        .tupleN(1)
        .reduce()
        .global('argparse', 'Namespace')
        .emptyTuple()
        .raw(0x81) // NEWOBJ
        .emptyDict()
        .str('lr')
        .float(0.5)
        .setitem()
        .build()
        .tuple()
        .stop(),
    ) as PyTuple;
    assert.ok(!fs.existsSync(marker));
    const [call, ns] = v.items as [PyObject, PyObject];
    assert.ok(call instanceof PyObject && call.callee instanceof PyGlobal);
    assert.equal((call.callee as PyGlobal).qualified, 'os.system');
    assert.equal((call.callee as PyGlobal).meaning.kind, 'dangerous');
    assert.deepEqual((call.args as PyTuple).items, [`touch ${marker}`]);
    assert.equal(((ns.state as PyDict).get('lr') as number) * 2, 1);
  });

  it("Python 2 names are read as Python 3's unpickler renames them (protocol < 3)", () => {
    const { globals } = run(
      P().global('__builtin__', 'eval').global('commands', 'getoutput').tupleN(2).stop(),
    );
    assert.deepEqual(
      [...globals],
      [
        ['builtins.eval', { kind: 'dangerous' }],
        ['subprocess.getoutput', { kind: 'dangerous' }],
      ],
    );
    const { globals: p3 } = run(new PickleBuilder().proto(3).global('__builtin__', 'eval').stop());
    assert.deepEqual([...p3.keys()], ['__builtin__.eval'], 'protocol 3 names are taken as they are');
  });

  describe('tensors, recognised only through torch rebuild functions over a persistent-id storage', () => {
    it('_rebuild_tensor_v2 over a FloatStorage; a second reference to the same key is the same storage', () => {
      const v = root(
        P()
          .mark()
          .tensorV2('FloatStorage', '0', 12, [3, 4])
          .tensorV2('FloatStorage', '0', 12, [2, 4], { offset: 4 })
          .tuple()
          .stop(),
      ) as PyTuple;
      const [a, b] = v.items as [PyTensor, PyTensor];
      assert.ok(a instanceof PyTensor && b instanceof PyTensor);
      assert.equal(a.storage, b.storage);
      assert.deepEqual([a.dtype, a.offset, a.shape, a.stride], ['F32', 0, [3, 4], [4, 1]]);
      assert.deepEqual([b.offset, b.shape], [4, [2, 4]]);
      assert.deepEqual([a.storage.key, a.storage.numel, a.storage.type], ['0', 12, 'torch.FloatStorage']);
    });

    it('_rebuild_tensor_v3: an untyped storage and a dtype (torch.uint16)', () => {
      const v = root(
        P()
          .global('torch._utils', '_rebuild_tensor_v3')
          .mark()
          .storage('UntypedStorage', '0', 8)
          .int(0)
          .ints([4])
          .ints([1])
          .bool(false)
          .global('collections', 'OrderedDict')
          .emptyTuple()
          .reduce()
          .global('torch', 'uint16')
          .tuple()
          .reduce()
          .stop(),
      ) as PyTensor;
      assert.ok(v instanceof PyTensor);
      assert.equal(v.dtype, 'U16');
      assert.equal(v.storage.dtype, 'U8');
    });

    it('_rebuild_parameter and _rebuild_from_type_v2 give the tensor they wrap; torch.Size is its tuple', () => {
      const v = root(
        P()
          .mark()
          .global('torch._utils', '_rebuild_parameter')
          .tensorV2('HalfStorage', '0', 2, [2])
          .bool(true)
          .global('collections', 'OrderedDict')
          .emptyTuple()
          .reduce()
          .tupleN(3)
          .reduce()
          .global('torch._tensor', '_rebuild_from_type_v2')
          .mark()
          .global('torch._utils', '_rebuild_tensor_v2')
          .global('__main__', 'MyTensor')
          .mark()
          .storage('BFloat16Storage', '1', 2)
          .int(0)
          .ints([2])
          .ints([1])
          .bool(false)
          .global('collections', 'OrderedDict')
          .emptyTuple()
          .reduce()
          .tuple()
          .none()
          .tuple()
          .reduce()
          .global('torch', 'Size')
          .ints([3, 4])
          .tupleN(1)
          .reduce()
          .tuple()
          .stop(),
      ) as PyTuple;
      const [param, sub, size] = v.items as [PyTensor, PyTensor, PyTuple];
      assert.ok(param instanceof PyTensor && param.dtype === 'F16');
      assert.ok(sub instanceof PyTensor && sub.dtype === 'BF16');
      assert.deepEqual(size.items, [3, 4]);
    });

    it('unreadable rebuilds (quantized, sparse, meta) and malformed arguments are records, refused only when read', () => {
      const v = root(
        P()
          .mark()
          .global('torch._utils', '_rebuild_qtensor')
          .emptyTuple()
          .reduce()
          .global('torch._utils', '_rebuild_tensor_v2')
          .mark()
          .str('not a storage')
          .int(0)
          .ints([1])
          .ints([1])
          .tuple()
          .reduce()
          .tuple()
          .stop(),
      ) as PyTuple;
      const [q, bad] = v.items as [PyUnreadableTensor, PyUnreadableTensor];
      assert.ok(q instanceof PyUnreadableTensor && /quantized/.test(q.what));
      assert.ok(bad instanceof PyUnreadableTensor && /storage/.test(bad.what));
    });

    it('a storage key described twice, differently: INVALID_PICKLE', () => {
      refused(
        P().mark().tensorV2('FloatStorage', '0', 4, [4]).tensorV2('HalfStorage', '0', 4, [4]).tuple().stop(),
        'storage "0" is described twice',
      );
    });

    it("a persistent id that is not torch's storage tuple: INVALID_PICKLE", () => {
      refused(P().str('storage').binpersid().stop(), 'persistent id');
      refused(
        P()
          .mark()
          .str('storage')
          .global('torch', 'FloatStorage')
          .str('0')
          .str('cpu')
          .int(-1 >>> 0)
          .tuple()
          .binpersid()
          .stop(),
        'persistent id',
      );
    });
  });

  describe('refused: INVALID_PICKLE naming the opcode and where it is', () => {
    for (const [name, op] of [
      ['INST', 0x69],
      ['OBJ', 0x6f],
      ['EXT1', 0x82],
      ['PERSID', 0x50],
      ['INT', 0x49],
      ['NEXT_BUFFER', 0x97],
    ] as const) {
      it(`${name} (not written by torch.save)`, () => {
        refused(P().none().raw(op).stop(), `opcode ${name} at byte 3`);
      });
    }
    it('a byte that is no opcode', () =>
      refused(P().raw(0xff), 'opcode 0xff at byte 2', 'not a pickle opcode'));
    it('a protocol above 5', () => refused(new PickleBuilder().proto(6).stop(), 'protocol 6'));
    it('no STOP', () => refused(P().none(), 'ends without STOP'));
    it('stack underflow (and below a MARK)', () => {
      refused(P().raw(0x30).stop(), 'stack underflow');
      refused(P().none().mark().append().stop(), 'stack underflow');
    });
    it('a memo entry never stored', () => refused(P().get(3).stop(), 'memo entry 3'));
    it('SETITEM on a list, APPEND on a dict, an odd SETITEMS', () => {
      refused(P().emptyList().str('k').none().setitem().stop(), 'not a dict');
      refused(P().emptyDict().none().append().stop(), 'not a list');
      refused(P().emptyDict().mark().str('k').setitems().stop(), 'key but no value');
    });
    it('REDUCE on arguments that are not a tuple', () =>
      refused(P().global('a', 'b').none().reduce().stop(), 'REDUCE'));
    it('invalid UTF-8 in a string', () => refused(P().raw(0x8c, 1, 0xff).stop(), 'UTF-8'));
    it('a GLOBAL without its name lines', () => refused(P().raw(0x63, 0x61, 0x62), 'GLOBAL'));

    it('every truncation of a real state dict pickle', () => {
      const full = stateDictPickle([
        { name: 'a', dtype: 'F32', shape: [2, 3] },
        { name: 'b', dtype: 'BF16', shape: [] },
      ]);
      assert.ok(run(full).root instanceof PyDict);
      for (let n = 0; n < full.byteLength; n++) refused(full.subarray(0, n));
    });
  });

  describe('bounded: a hostile pickle ends in INVALID_PICKLE, never a hang or gigabytes', () => {
    const many = (count: number, ...ops: number[]): PickleBuilder => {
      const b = P();
      for (let i = 0; i < count; i++) b.raw(...ops);
      return b;
    };
    it('stack depth', () => {
      assert.throws(
        () => run(many(101, 0x4e).stop(), limited({ stack: 100 })),
        /stack deeper than the limit of 100/,
      );
    });
    it('MARK nesting', () => {
      assert.throws(() => run(many(11, 0x28).stop(), limited({ marks: 10 })), /MARKs nested deeper than 10/);
    });
    it('memo size', () => {
      assert.throws(
        () =>
          run(
            P()
              .none()
              .raw(...Array(11).fill(0x94))
              .stop(),
            limited({ memo: 10 }),
          ),
        /memo larger/,
      );
    });
    it('string length, and lengths beyond the end of the pickle', () => {
      assert.throws(
        () => run(P().str('x'.repeat(20)).stop(), limited({ string: 10 })),
        /exceeds the limit of 10/,
      );
      refused(P().raw(0x58, 0xff, 0xff, 0x00, 0x00, 0x61).stop(), 'truncated');
      refused(P().raw(0x58, 0xff, 0xff, 0xff, 0x7f, 0x61).stop(), 'exceeds the limit');
      refused(P().raw(0x8e, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x61), 'exceed the string limit');
      refused(P().raw(0x8b, 0xff, 0xff, 0xff, 0x00).stop(), 'integer of');
    });
    it('opcodes run', () => {
      assert.throws(
        () => run(many(50, 0x4e, 0x30).stop(), limited({ ops: 60 })),
        /more than the limit of 60 opcodes/,
      );
    });
    it('the size of the values built (a list grown item by item)', () => {
      const b = P().emptyList();
      for (let i = 0; i < 2000; i++) b.emptyList().append();
      assert.throws(
        () => run(b.stop(), limited({ valueBytes: 100_000 })),
        /values exceed the limit of 100000 bytes/,
      );
    });
    it('a DAG of 2^100 paths (each list holding the previous one twice) is built in linear time', () => {
      const b = P().emptyList().put(0);
      for (let i = 1; i <= 100; i++)
        b.emptyList()
          .get(i - 1)
          .append()
          .get(i - 1)
          .append()
          .put(i);
      const started = performance.now();
      assert.ok(run(b.stop()).root instanceof PyList);
      assert.ok(performance.now() - started < 1000);
    });
  });

  it('a 50k-tensor state dict is interpreted in slices: the event loop stays live', async function () {
    this.timeout(60_000);
    const tensors = Array.from({ length: 50_000 }, (_, i) => ({
      name: `model.layers.${i}.weight`,
      dtype: 'F32' as const,
      shape: [4, 4],
    }));
    const bytes = stateDictPickle(tensors);
    const { root: v } = await assertLive('interpreting a 50k-tensor pickle', () =>
      runSliced(interpretPickle(bytes, FILE)),
    );
    assert.equal((v as PyDict).size, 50_000);
    assert.ok((v as PyDict).values.every((t) => t instanceof PyTensor && t.storage instanceof PyStorage));
  });
});
