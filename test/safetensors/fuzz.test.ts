/**
 * The parser fuzz targets (fuzz/): a short seeded run inside the suite, and every input a run has
 * ever flagged, kept as a regression case. Long runs: `npm run fuzz -- --seconds N [--seed S]`.
 */
import { strict as assert } from 'node:assert';
import { checkInput } from '../../fuzz/targets';
import { runFuzz } from '../../fuzz/run';
import type { FuzzInput } from '../../fuzz/mutate';

const text = (kind: FuzzInput['kind'], s: string, dataBytes = 0): FuzzInput => ({
  kind,
  bytes: Buffer.from(s),
  dataBytes,
});
const bytes = (kind: FuzzInput['kind'], b: number[], dataBytes = 0): FuzzInput => ({
  kind,
  bytes: Uint8Array.from(b),
  dataBytes,
});

/**
 * Inputs that once went wrong, or sit on an edge a rewrite could break: each must still give the
 * reference's outcome. (New findings are printed by `npm run fuzz` in the form of `fromRun`.)
 */
const REGRESSIONS: [string, FuzzInput][] = [
  // A literal longer than 15 digits is converted by the engine, not digit by digit.
  [
    'long literal',
    text('header', '{"w":{"dtype":"U8","shape":[1.0000000000000000000001],"data_offsets":[0,1]}}', 1),
  ],
  ['minus zero dimension', text('header', '{"w":{"dtype":"U8","shape":[-0],"data_offsets":[0,0]}}')],
  ['2^53 dimension', text('header', '{"w":{"dtype":"U8","shape":[9007199254740992],"data_offsets":[0,0]}}')],
  [
    'overflowing shape with a zero',
    text('header', '{"w":{"dtype":"F32","shape":[1099511627776,1099511627776,0],"data_offsets":[0,0]}}'),
  ],
  [
    'overflowing shape',
    text('header', '{"w":{"dtype":"F4","shape":[3,1099511627776,1099511627776],"data_offsets":[0,0]}}'),
  ],
  [
    'over 64 factors, odd',
    text('header', `{"w":{"dtype":"F4","shape":[${Array(70).fill(3).join(',')}],"data_offsets":[0,0]}}`),
  ],
  [
    'over 64 factors, even',
    text('header', `{"w":{"dtype":"F32","shape":[${Array(70).fill(2).join(',')}],"data_offsets":[0,0]}}`),
  ],
  ['odd F4 count', text('header', '{"w":{"dtype":"F4","shape":[3],"data_offsets":[0,1]}}', 1)],
  ['__proto__ in metadata', text('header', '{"__metadata__":{"__proto__":"x","format":"pt"}}')],
  [
    '__proto__ as a tensor',
    text('header', '{"__proto__":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}', 1),
  ],
  [
    'integer-like names keep text order',
    text(
      'header',
      '{"b":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"10":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}}',
      2,
    ),
  ],
  [
    'duplicate spelled with an escape',
    text(
      'header',
      '{"a":{"dtype":"U8","shape":[],"data_offsets":[0,1]},"\\u0061":{"dtype":"U8","shape":[],"data_offsets":[0,1]}}',
      1,
    ),
  ],
  ['duplicate after an invalid entry', text('header', '{"a":1,"b":2,"b":3}')],
  ['invalid entry before invalid metadata', text('header', '{"a":1,"__metadata__":[]}')],
  ['invalid metadata before invalid entry', text('header', '{"__metadata__":[],"a":1}')],
  ['null metadata', text('header', '{"__metadata__":null}')],
  ['syntax error after a duplicate', text('header', '{"a":1,"a":2,}')],
  [
    'nesting 5000 deep',
    text(
      'header',
      `{"w":{"dtype":"U8","shape":${'['.repeat(5000)}${']'.repeat(5000)},"data_offsets":[0,0]}}`,
    ),
  ],
  ['byte-order mark', bytes('header', [0xef, 0xbb, 0xbf, 0x7b, 0x7d])],
  ['overlong UTF-8', bytes('header', [0x7b, 0x22, 0xc0, 0x80, 0x22, 0x3a, 0x31, 0x7d])],
  ['UTF-16 surrogate in UTF-8', bytes('header', [0x7b, 0x22, 0xed, 0xa0, 0x80, 0x22, 0x3a, 0x31, 0x7d])],
  [
    'lone escaped surrogate name',
    text('header', '{"\\ud800":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}', 1),
  ],
  ['index: invalid UTF-8', bytes('index', [0x7b, 0xff, 0x7d])],
  ['index: duplicate tensor', text('index', '{"weight_map":{"a":"x","a":"y"}}')],
  ['index: empty weight_map', text('index', '{"weight_map":{}}')],
  ['index: shard outside the folder', text('index', '{"weight_map":{"a":"../x"}}')],
  ['index: null shard', text('index', '{"weight_map":{"a":null}}')],
  ['index: nested 5000 deep', text('index', `{"weight_map":{"a":${'['.repeat(5000)}${']'.repeat(5000)}}}`)],
];

/** A case as `npm run fuzz` prints it. */
export function fromRun(line: string): FuzzInput {
  const { kind, dataBytes, base64 } = JSON.parse(line) as {
    kind: FuzzInput['kind'];
    dataBytes: number;
    base64: string;
  };
  return { kind, dataBytes, bytes: Buffer.from(base64, 'base64') };
}

describe('parser fuzz targets', function () {
  this.timeout(60_000);

  for (const [name, input] of REGRESSIONS) {
    it(`regression: ${name}`, async () => {
      const { problem } = await checkInput(input, true);
      assert.equal(problem, undefined);
    });
  }

  it('a seeded 5 s run finds nothing: every input parses as the reference does, or fails with its code', async () => {
    const result = await runFuzz({ seconds: 5, seed: 20_240_511 });
    assert.ok(result.iterations > 1000, `only ${result.iterations} inputs in 5 s`);
    assert.deepEqual(
      result.findings.map((f) => `${f.problem}: ${Buffer.from(f.input.bytes).toString('base64')}`),
      [],
    );
  });
});
