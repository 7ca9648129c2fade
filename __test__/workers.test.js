'use strict';
/** The configuration, cache and flight map are process-wide: worker threads share them. */
const path = require('node:path');
const { Worker } = require('node:worker_threads');
const { obo, until, useMockIdp } = require('./helpers');

const ctx = useMockIdp();
const script = path.join(__dirname, 'fixtures', 'worker-exchange.js');

function runWorker(calls) {
  return new Promise((resolve, reject) => {
    const worker = new Worker(script, { workerData: { calls } });
    worker.once('message', resolve);
    worker.once('error', reject);
  });
}

describe('worker threads', () => {
  it('use the configuration and the cache of the main thread without calling configure', async () => {
    const primed = await obo.exchangeOboToken({ openidId: 'shared-user' }, 'assertion', 'api://shared');
    const [result] = await runWorker([{ user: 'shared-user', assertion: 'assertion', scope: 'api://shared' }]);
    expect(result).toEqual({ user: 'shared-user', scope: 'api://shared', token: primed.access_token });
    expect(ctx.idp.tokenRequests()).toHaveLength(1);
  });

  it('share one exchange per key across threads, each caller getting its own key’s token', async () => {
    // Both requests are held until the other six calls have joined them: none can be a cache hit.
    ctx.idp.enqueue({ hold: true }, { hold: true });
    const coalescedBefore = obo.stats().coalesced;
    const calls = [];
    for (const user of ['w1', 'w2']) calls.push({ user, assertion: `assertion-${user}`, scope: 'api://fan' });
    const running = Promise.all([runWorker(calls), runWorker(calls), runWorker(calls), runWorker(calls)]);
    await until(() => ctx.idp.heldCount() === 2 && obo.stats().coalesced - coalescedBefore === 6, 20_000);
    expect(ctx.idp.release()).toBe(2);
    const results = await running;
    for (const perWorker of results) {
      for (const { user, token, error } of perWorker) {
        expect(error).toBeUndefined();
        expect(token).toBe(ctx.idp.expectedToken(`assertion-${user}`, 'api://fan'));
      }
    }
    expect(ctx.idp.tokenRequests()).toHaveLength(2);
    expect(obo.stats().cacheSize).toBe(2);
  });

  it('see clearCache from another thread (the memo of this thread is invalidated)', async () => {
    const user = { openidId: 'memo-user' };
    await obo.exchangeOboToken(user, 'a', 'api://memo');
    await obo.exchangeOboToken(user, 'a', 'api://memo');
    await obo.exchangeOboToken(user, 'a', 'api://memo');
    await new Promise((resolve, reject) => {
      const worker = new Worker("require(process.env.OBO_ROOT).clearCache()", {
        eval: true,
        env: { ...process.env, OBO_ROOT: path.join(__dirname, '..') },
      });
      worker.once('exit', resolve);
      worker.once('error', reject);
    });
    await obo.exchangeOboToken(user, 'a', 'api://memo');
    expect(ctx.idp.tokenRequests()).toHaveLength(2);
  });
});
