import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { buildProgram } from '../../lib/cli/main';
import { runCli } from '../helpers/cli';

const ROOT = path.resolve(__dirname, '..', '..', '..');

describe('docs/cli.md is the help the commands print', () => {
  const doc = fs.readFileSync(path.join(ROOT, 'docs', 'cli.md'), 'utf8');
  const commands = buildProgram()
    .commands.map((c) => c.name())
    .filter((c) => c !== 'help');

  it('documents every command', () => {
    assert.ok(commands.length >= 4, commands.join(', '));
    for (const c of commands) assert.ok(doc.includes(`## \`model-stock ${c}\``), `no section for ${c}`);
  });

  for (const args of [[], ...['merge', 'inspect', 'plot', 'serve', 'doctor'].map((c) => [c])]) {
    it(`holds \`model-stock ${[...args, '--help'].join(' ')}\` word for word`, () => {
      const r = runCli([...args, '--help']);
      assert.equal(r.code, 0, r.stderr);
      // On a mismatch: paste this block into docs/cli.md.
      const block = '```text\n' + r.stdout + '```';
      assert.ok(doc.includes(block), `docs/cli.md lacks, or has an old version of:\n${block}`);
    });
  }

  it('lists every option of every command', () => {
    for (const command of buildProgram().commands) {
      for (const option of command.options)
        assert.ok(doc.includes(option.long ?? option.flags), `${command.name()} ${option.flags}`);
    }
  });
});
