'use strict';
/**
 * One copy of each token (issue 19): the memo and the results hold strings
 * over the native cache's buffers where Node.js allows it. Such a string must
 * never outlive its buffer, and must be released when V8 collects it; both
 * are checked in a child `node --expose-gc` (fixtures/lent-tokens-child.js)
 * across clearCache(), eviction and a worker thread's termination.
 */
const { spawn } = require('node:child_process');
const path = require('node:path');
const native = require('../loader.js');
const { optionsFor, obo } = require('./helpers.js');
const { startMockIdp } = require('../testing');

function runChild(idp) {
  const script = path.join(__dirname, 'fixtures', 'lent-tokens-child.js');
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--expose-gc', script], {
      env: { ...process.env, OBO_LENT_SPEC: JSON.stringify({ options: optionsFor(idp) }) },
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    let stdout = '';
    child.stdout.on('data', (chunk) => (stdout += chunk));
    child.on('error', reject);
    child.on('close', (code, signal) => {
      let result = {};
      try {
        result = JSON.parse(stdout.trim().split('\n').at(-1) || '{}');
      } catch {
        // reported below with what the child printed
      }
      if (code !== 0 || result.error) reject(new Error(`lent-tokens child exited ${code ?? signal}: ${result.error ?? stdout}`));
      else resolve(result);
    });
  });
}

describe('tokens handed to JavaScript over the cache buffers', () => {
  let idp;
  beforeAll(async () => {
    idp = await startMockIdp({ record: false });
  });
  beforeEach(() => {
    idp.reset();
    obo.configure(optionsFor(idp));
  });
  afterAll(async () => {
    await idp.close();
  });

  it('lends where Node-API 10 strings exist, and copies where they do not', () => {
    // Node.js exports node_api_create_external_string_latin1 from 18.18 and 20.4 on.
    const [major, minor] = process.versions.node.split('.').map(Number);
    const exported = major > 20 || (major === 20 && minor >= 4) || (major === 18 && minor >= 18);
    expect(native.tokenStrings()).toBe(exported ? 'external' : 'copy');
  });

  it('keeps each string readable after clearCache() and eviction, and releases every one after gc, in threads that end too', async () => {
    const result = await runChild(idp);
    expect(result.mode).toBe(native.tokenStrings());
    expect(result.intactAfterClear).toBe(true);
    expect(result.intactAfterEviction).toBe(true);
    expect(result.cacheSizeAfterEviction).toBeLessThanOrEqual(8);
    if (result.mode === 'external') {
      // Per user, two strings over one buffer: the miss's result, and the native hit's, which the memo
      // keeps and hands to the third read; nothing is copied.
      expect(result.lentWhileHeld).toBe(50 * 2);
      expect(result.lentInWorker).toBe(30 * 2);
    } else {
      expect([result.lentWhileHeld, result.lentInWorker]).toEqual([0, 0]);
    }
    expect(result.lentAfterRelease).toBe(0);
    expect(result.lentAfterWorker).toBe(0);
  }, 60_000);

  it('hands out the same token text from a miss, a native hit and the memo', async () => {
    const user = { openidId: 'lent-same' };
    const reads = [];
    for (let i = 0; i < 3; i++) reads.push((await obo.exchangeOboToken(user, 'assertion-lent-same', 'api://lent')).access_token);
    expect(reads).toEqual([0, 1, 2].map(() => idp.expectedToken('assertion-lent-same', 'api://lent')));
  });
});
