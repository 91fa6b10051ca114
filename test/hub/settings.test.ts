import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { hubCacheDir, hubSettings, hubToken, isTrue } from '../../lib/hub/settings';
import { useTmpDir } from '../helpers/tmp';

describe('hub settings: the environment read as huggingface_hub reads it', () => {
  const tmp = useTmpDir();
  const home = '/home/someone';

  it('cache folder precedence: HF_HUB_CACHE, HUGGINGFACE_HUB_CACHE, HF_HOME/hub, XDG_CACHE_HOME, ~/.cache', () => {
    const all = {
      HOME: home,
      HF_HUB_CACHE: '/a/hub',
      HUGGINGFACE_HUB_CACHE: '/b/hub',
      HF_HOME: '/c',
      XDG_CACHE_HOME: '/d',
    };
    assert.equal(hubCacheDir(all), '/a/hub');
    assert.equal(hubCacheDir({ ...all, HF_HUB_CACHE: undefined }), '/b/hub');
    assert.equal(
      hubCacheDir({ ...all, HF_HUB_CACHE: undefined, HUGGINGFACE_HUB_CACHE: undefined }),
      '/c/hub',
    );
    assert.equal(hubCacheDir({ HOME: home, XDG_CACHE_HOME: '/d' }), '/d/huggingface/hub');
    assert.equal(hubCacheDir({ HOME: home }), '/home/someone/.cache/huggingface/hub');
    // Empty variables count as unset, as Python's `or` chains treat them.
    assert.equal(hubCacheDir({ HOME: home, HF_HUB_CACHE: '', HF_HOME: '/c' }), '/c/hub');
  });

  it('expands ~ and $VARS like os.path.expanduser / expandvars', () => {
    assert.equal(hubCacheDir({ HOME: home, HF_HOME: '~/hf' }), '/home/someone/hf/hub');
    assert.equal(
      hubCacheDir({ HOME: home, SCRATCH: '/scratch', HF_HUB_CACHE: '$SCRATCH/hub' }),
      '/scratch/hub',
    );
    assert.equal(hubCacheDir({ HOME: home, HF_HUB_CACHE: '${NOPE}/hub' }), path.resolve('${NOPE}/hub'));
  });

  it('HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE truth values', () => {
    for (const v of ['1', 'ON', 'yes', 'True']) assert.equal(isTrue(v), true, v);
    for (const v of ['0', 'off', '', 'no', undefined]) assert.equal(isTrue(v), false, String(v));
    assert.equal(hubSettings({ env: { HF_HUB_OFFLINE: '1' } }).offline, true);
    assert.equal(hubSettings({ env: { TRANSFORMERS_OFFLINE: '1' } }).offline, true);
    // A set HF_HUB_OFFLINE decides alone (Python: `HF_HUB_OFFLINE or TRANSFORMERS_OFFLINE`).
    assert.equal(hubSettings({ env: { HF_HUB_OFFLINE: '0', TRANSFORMERS_OFFLINE: '1' } }).offline, false);
    assert.equal(hubSettings({ env: { HF_HUB_OFFLINE: '1' }, offline: false }).offline, false);
  });

  it('endpoint from HF_ENDPOINT without trailing slash; timeouts from HF_HUB_*_TIMEOUT seconds', () => {
    const s = hubSettings({
      env: {
        HF_ENDPOINT: 'http://mirror.local:8080/',
        HF_HUB_ETAG_TIMEOUT: '3',
        HF_HUB_DOWNLOAD_TIMEOUT: '2.5',
      },
    });
    assert.equal(s.endpoint, 'http://mirror.local:8080');
    assert.equal(s.connectTimeoutMs, 3000);
    assert.equal(s.readTimeoutMs, 2500);
    const d = hubSettings({ env: {} });
    assert.equal(d.endpoint, 'https://huggingface.co');
    assert.equal(d.connectTimeoutMs, 10_000);
    assert.equal(d.readTimeoutMs, 10_000);
  });

  it('token: HF_TOKEN, HUGGING_FACE_HUB_TOKEN, then the login token file; trimmed; false sends none', () => {
    const hfHome = path.join(tmp.dir, 'hf');
    fs.mkdirSync(hfHome, { recursive: true });
    fs.writeFileSync(path.join(hfHome, 'token'), 'hf_from_file\n');
    assert.equal(
      hubToken({ HF_HOME: hfHome, HF_TOKEN: ' hf_env \n', HUGGING_FACE_HUB_TOKEN: 'hf_old' }),
      'hf_env',
    );
    assert.equal(hubToken({ HF_HOME: hfHome, HUGGING_FACE_HUB_TOKEN: 'hf_old' }), 'hf_old');
    assert.equal(hubToken({ HF_HOME: hfHome }), 'hf_from_file');
    const other = path.join(tmp.dir, 'elsewhere-token');
    fs.writeFileSync(other, 'hf_path');
    assert.equal(hubToken({ HF_HOME: hfHome, HF_TOKEN_PATH: other }), 'hf_path');
    assert.equal(hubToken({ HF_HOME: path.join(tmp.dir, 'none') }), undefined);
    assert.equal(hubSettings({ env: { HF_TOKEN: 'x' }, token: false }).token, undefined);
  });

  it('defaults to the real home folder when HOME is unset', () => {
    assert.equal(hubCacheDir({}), path.join(os.homedir(), '.cache', 'huggingface', 'hub'));
  });
});
