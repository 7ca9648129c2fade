'use strict';
/**
 * A worker thread of workload 6: loads the contestant in this thread,
 * configures it, then on `fill` asks for every hot key once and on `go`
 * hammers the hot key set with `lanes` calls in flight.
 */
const { parentPort, workerData } = require('node:worker_threads');
const { performance } = require('node:perf_hooks');
const { SCOPE, identity, loadContestant, checkResult, pool } = require('./common.js');

const { contestant: name, provider, thread, users: ids, tokens, calls, warmCalls, lanes } = workerData;
const users = ids.map((subject) => identity(subject));
const K = users.length;

/** `n` calls over the hot set, `lanes` in flight, each thread in its own order. */
function hammer(c, n) {
  const ex = c.exchangeOboToken;
  const stride = 7;
  const offset = thread * 31;
  return pool(n, lanes, (i) => {
    const k = (i * stride + offset) % K;
    return ex(users[k].user, tokens[k], SCOPE, true, users[k].context);
  });
}

async function main() {
  const c = loadContestant(name);
  await c.setup(provider);
  parentPort.postMessage({ type: 'ready', thread });
  parentPort.on('message', async (command) => {
    try {
      const t0 = performance.now();
      if (command === 'fill') {
        await pool(K, lanes, async (k) => {
          const { user, context } = users[k];
          const result = await c.exchangeOboToken(user, tokens[k], SCOPE, true, context);
          checkResult(result, tokens[k], SCOPE, 'workers/fill', c.returnsExpiresAt);
        });
        parentPort.postMessage({ type: 'filled', thread, elapsedMs: performance.now() - t0 });
      } else if (command === 'warm') {
        await hammer(c, warmCalls);
        parentPort.postMessage({ type: 'warmed', thread, elapsedMs: performance.now() - t0 });
      } else if (command === 'go') {
        await hammer(c, calls);
        parentPort.postMessage({ type: 'done', thread, calls, elapsedMs: performance.now() - t0 });
      }
    } catch (err) {
      parentPort.postMessage({ type: 'error', thread, message: err && err.stack ? err.stack : String(err) });
    }
  });
}

main().catch((err) => {
  parentPort.postMessage({ type: 'error', thread, message: err && err.stack ? err.stack : String(err) });
});
