/** The sliced JSON parser against JSON.parse: same acceptance, same values, long tokens included. */
import { strict as assert } from 'node:assert';
import { JsonObject, JsonSyntaxError, parseJson, type JsonValue } from '../../lib/safetensors/json';
import { runSliced, runSync } from '../../lib/util/sliced';

/** A JsonObject as JSON.parse would build it (the last of duplicate keys wins). */
function plain(v: JsonValue): unknown {
  if (Array.isArray(v)) return v.map(plain);
  if (v instanceof JsonObject) {
    const out: Record<string, unknown> = {};
    v.keys.forEach((k, i) => {
      Object.defineProperty(out, k, {
        value: plain(v.values[i] as JsonValue),
        enumerable: true,
        configurable: true,
        writable: true,
      });
    });
    return out;
  }
  return v;
}

function parse(text: string): unknown {
  return plain(runSync(parseJson(Buffer.from(text))).root);
}

function agrees(text: string): void {
  let expected: unknown;
  let valid = true;
  try {
    expected = JSON.parse(text);
  } catch {
    valid = false;
  }
  if (!valid) {
    assert.throws(() => parse(text), JsonSyntaxError, `accepted ${JSON.stringify(text)}`);
    return;
  }
  assert.deepStrictEqual(parse(text), expected, JSON.stringify(text));
}

describe('sliced JSON parser', () => {
  it('accepts exactly what JSON.parse accepts, with the same values', () => {
    const cases = [
      '{}',
      '[]',
      '0',
      '-0',
      '1',
      '-1',
      '1.5',
      '1e2',
      '1E+2',
      '1e-2',
      '0.0',
      '10',
      '123456789012345678',
      '9007199254740993',
      '1e400',
      '-1e400',
      '1e-400',
      '0.1e1',
      ' \t\n\r1\r\n',
      '"a"',
      '""',
      '"\\u0041"',
      '"\\ud83d\\ude00"',
      '"\\ud800"',
      '"\\/\\b\\f\\n\\r\\t\\"\\\\"',
      'true',
      'false',
      'null',
      '{"a":1,"b":[1,2,{"c":null}]}',
      '{"__proto__":1}',
      '{"10":1,"2":2,"a":3}',
      '[[[[]]]]',
      '{"a":{}}',
      '"ünï😀"',
      // not JSON
      '',
      ' ',
      '01',
      '-01',
      '00',
      '1.',
      '.1',
      '+1',
      '-',
      '1e',
      '1e+',
      '--1',
      '0x10',
      'NaN',
      'Infinity',
      '"a',
      '"\\x"',
      '"\\u12"',
      '"\\u12g4"',
      '"\t"',
      '"\u0001"',
      '{"a"}',
      '{"a":}',
      '{"a":1,}',
      '[1,]',
      '[1 2]',
      '{,}',
      '{"a" 1}',
      '{1:1}',
      "{'a':1}",
      'tru',
      'nul',
      'truex',
      '[]]',
      '{}}',
      '1 2',
      '\ufeff{}',
      '\u00a0{}',
      '[',
      '{',
      '{"a":1',
      '/* */{}',
    ];
    for (const c of cases) agrees(c);
  });

  it('reports the first duplicate key of any object with the keys of the objects around it', () => {
    const dup = (text: string) => runSync(parseJson(Buffer.from(text))).duplicate;
    assert.equal(dup('{"a":1,"b":{"a":2},"c":[{"a":1}]}'), undefined);
    assert.deepEqual(dup('{"x":{"y":{"k":1,"k":2}}}'), { key: 'k', within: ['x', 'y'] });
    assert.deepEqual(dup('{"a":[{"k":1,"k":2}],"a":3}'), { key: 'k', within: ['a'] });
    assert.deepEqual(dup('{"a":1,"\\u0061":2}'), { key: 'a', within: [] });
    // Past the point where a Set takes over from a scan.
    const many = Array.from({ length: 40 }, (_, i) => `"k${i}":${i}`).join(',');
    assert.deepEqual(dup(`{"o":{${many},"k39":0}}`), { key: 'k39', within: ['o'] });
  });

  it('streams top-level members to a callback, duplicates included, and keeps none', () => {
    const seen: [string, unknown][] = [];
    const r = runSync(
      parseJson(Buffer.from('{"a":[1],"b":{"c":2},"a":3}'), {
        onTopLevelMember: (k, v) => void seen.push([k, plain(v)]),
      }),
    );
    assert.deepEqual(seen, [
      ['a', [1]],
      ['b', { c: 2 }],
      ['a', 3],
    ]);
    assert.ok(r.root instanceof JsonObject && r.root.keys.length === 0);
    assert.deepEqual(r.duplicate, { key: 'a', within: [] });
  });

  it('tokens over a megabyte (scanned and decoded in pieces) give what JSON.parse gives', async () => {
    const mb = 1 << 20;
    const zeros = '0'.repeat(mb + 3);
    const digits = Array.from({ length: mb + 5 }, (_, i) => String((i * 7) % 10)).join('');
    const numbers = [
      `1${zeros}`,
      `-1${zeros}`,
      `0.${zeros}1`,
      `-0.${zeros}`,
      `1.${zeros}`,
      `123.456${zeros}`,
      `1${digits}`,
      `0.${digits}`,
      `9.${digits}e-320`,
      `1${zeros}e-${mb + 3}`,
      `1e-000${zeros}5`,
      `2.5e+${zeros}1`,
      `0.${zeros}e999999999999999999999`,
      `7${zeros}e-999999999999999999999`,
      `4.9406564584124654e-324${zeros}`,
      `2.4703282292062327208828439643411068618252990130716238221279284125033775363510437593264991818081799618989828234772285886546332835517796989819938739800539093906315035659515570226392290858392449105184435931802849936536152500319370457678249219365623669863658480757001585769269903706311928279558551332927834338409351978015531246597263579574622766465272827220056374006485499977096599470454020828166226237857393450736339007967761930577506740176324673600968951340535537458516661134223766678604162159680461914467291840300530057530849048765391711386591646239524912623653881879636239373280423891018672348497668235089863388587925628302755995657524455507255189313690836254779186948667994968324049705821028513185451396213837722826145437693412532098591327667236328125e-324`,
    ];
    for (const n of numbers) {
      const got = (await runSliced(parseJson(Buffer.from(`[${n}]`)))).root as number[];
      assert.ok(
        Object.is(got[0], JSON.parse(n)),
        `${n.slice(0, 30)}… (${n.length} chars): ${got[0]} vs ${JSON.parse(n)}`,
      );
    }
    const strings = [
      'x'.repeat(mb + 1),
      'é😀'.repeat(mb / 3), // multi-byte characters across piece boundaries
      '\\n'.repeat(mb),
      '\\ud83d\\ude00'.repeat(mb / 12 + 1), // escaped surrogate pairs across piece boundaries
      `${'a'.repeat(mb - 3)}\\u00e9${'b'.repeat(10)}`, // an escape across the first cut
      `${'é'.repeat(mb / 2 - 1)}a\\"${'z'.repeat(9)}`,
    ];
    for (const s of strings) {
      const got = (await runSliced(parseJson(Buffer.from(`{"${s}":"${s}"}`)))).root as JsonObject;
      const expected = JSON.parse(`"${s}"`) as string;
      assert.equal(got.keys[0], expected, `${s.slice(0, 20)}… (${s.length})`);
      assert.equal(got.values[0], expected);
    }
  });
});
