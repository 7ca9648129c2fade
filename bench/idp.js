'use strict';
/**
 * The identity provider of the benchmark, in a process of its own so that no
 * contestant shares an event loop with it: `startMockIdp()` from testing.js on
 * loopback.
 *
 * Prints `{"provider": {...}}` (one JSON line) on stdout once listening and,
 * when forked with an IPC channel, sends the same object as a message. Then
 * answers control messages `{ id, cmd }`:
 *   - `count`  → `{ id, tokenRequests, otherRequests }` since the last reset;
 *   - `reset`  → zeroes the counters and forgets queued/held faults;
 *   - `close`  → closes the server and exits.
 *
 * The provider does not keep the requests it receives (`record: false` and
 * `tokenRequestCount()`, where testing.js offers them); with an older
 * testing.js that records every request (headers and 1.5 KB bodies) in
 * `idp.requests`, they are tallied and dropped every 100 ms (and on every
 * control message) so a long run does not grow the provider's memory.
 */
const { startMockIdp } = require('../testing.js');

async function main() {
  const idp = await startMockIdp({ record: false });
  const counting = typeof idp.tokenRequestCount === 'function';
  let tokenRequests = 0;
  let otherRequests = 0;

  const sweep = () => {
    if (counting) {
      tokenRequests = idp.tokenRequestCount();
      otherRequests = null; // not counted without records
      return;
    }
    const requests = idp.requests;
    for (let i = 0; i < requests.length; i++) {
      if (requests[i].method === 'POST') tokenRequests++;
      else otherRequests++;
    }
    requests.length = 0;
  };
  const timer = setInterval(sweep, 100);
  timer.unref();

  const provider = {
    issuer: idp.issuer,
    tokenEndpoint: idp.tokenEndpoint,
    clientId: idp.clientId,
    clientSecret: idp.clientSecret,
    pid: process.pid,
  };
  process.stdout.write(`${JSON.stringify({ provider })}\n`);

  if (!process.send) return; // standalone: serve until killed

  process.on('message', async (message) => {
    if (!message || typeof message !== 'object') return;
    const { id, cmd } = message;
    sweep();
    switch (cmd) {
      case 'count':
        process.send({ id, tokenRequests, otherRequests });
        break;
      case 'reset':
        idp.reset();
        tokenRequests = 0;
        otherRequests = counting ? null : 0;
        process.send({ id, tokenRequests, otherRequests });
        break;
      case 'close':
        clearInterval(timer);
        await idp.close();
        process.send({ id, closed: true }, () => process.exit(0));
        break;
      default:
        process.send({ id, error: `unknown command ${cmd}` });
    }
  });
  // The runner went away: do not linger.
  process.on('disconnect', () => process.exit(0));
  process.send({ provider });
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
