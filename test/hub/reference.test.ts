import { strict as assert } from 'node:assert';
import * as path from 'node:path';
import { classifyRef, modelRefKey, parseHubId, repoFolderName } from '../../lib/hub/reference';

describe('hub references', () => {
  it('reads org/name and org/name@revision; refuses what is not a Hub ID', () => {
    assert.deepEqual(parseHubId('mistralai/Mistral-7B-v0.1'), {
      repo: 'mistralai/Mistral-7B-v0.1',
      revision: 'main',
      explicitRevision: false,
    });
    assert.deepEqual(parseHubId('meta-math/MetaMath-Mistral-7B@refs/pr/3'), {
      repo: 'meta-math/MetaMath-Mistral-7B',
      revision: 'refs/pr/3',
      explicitRevision: true,
    });
    for (const s of [
      './ft-a',
      '../org/name',
      '/abs/path',
      '~/models/x',
      'C:\\models\\ft',
      'C:/models/ft',
      'a/b/c',
      'gpt2',
      'org/na--me',
      'org/-name',
      'org/name.',
      'org/name@',
      'org/name@a@b',
      'org/name@../x',
      'org/name@/etc',
      'org/name@a\\b',
      'org/name+lora',
      `org/${'x'.repeat(96)}`,
    ]) {
      assert.equal(parseHubId(s), undefined, s);
    }
    assert.equal(repoFolderName('mistralai/Mistral-7B-v0.1'), 'models--mistralai--Mistral-7B-v0.1');
  });

  it('an existing path always wins, "+" is LoRA only for a path that does not exist', () => {
    const existing = new Set(['org/name', 'ft+extra', 'models/ft-a']);
    const exists = (p: string): boolean => existing.has(p);
    assert.deepEqual(classifyRef('org/name', exists), { kind: 'path', path: 'org/name' });
    assert.deepEqual(classifyRef('ft+extra', exists), { kind: 'path', path: 'ft+extra' });
    assert.deepEqual(classifyRef('org/base+org/adapter', exists), {
      kind: 'lora',
      model: 'org/base',
      lora: 'org/adapter',
    });
    assert.equal(classifyRef('org/other', exists).kind, 'hub');
    assert.deepEqual(classifyRef('./nowhere', exists), { kind: 'missing', path: './nowhere' });
  });

  it('on POSIX a path written with Windows separators is found with /', function () {
    if (path.sep !== '/') this.skip();
    const exists = (p: string): boolean => p === 'models/ft-a';
    assert.deepEqual(classifyRef('models\\ft-a', exists), { kind: 'path', path: 'models/ft-a' });
    assert.equal(classifyRef('C:\\Users\\me\\ft-b', exists).kind, 'missing');
  });

  it('the same model under two spellings has one key', () => {
    const none = (): boolean => false;
    assert.equal(modelRefKey('Org/Name', none), modelRefKey('org/name@main', none));
    assert.notEqual(modelRefKey('org/name@v2', none), modelRefKey('org/name', none));
    assert.equal(modelRefKey('./x/../ft', none), modelRefKey('ft', none));
  });
});
