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
 *   - `tokenLength` with `value` n → minted access tokens are n characters
 *     long (a padding claim in the payload; the signature part is still the
 *     mock's digest of assertion and scope), 0 → the mock's own short tokens.
 *     Kept across `reset`;
 *   - `close`  → closes the server and exits.
 *
 * The provider does not keep the requests it receives (`record: false` and
 * `tokenRequestCount()`, where testing.js offers them); with an older
 * testing.js that records every request (headers and 1.5 KB bodies) in
 * `idp.requests`, they are tallied and dropped every 100 ms (and on every
 * control message) so a long run does not grow the provider's memory.
 */
const { startMockIdp, mintToken } = require('../testing.js');

const b64 = (text) => Buffer.from(text).toString('base64url');

/** The mock's token for (assertion, scope), its payload padded so the whole is `length` characters (±1). */
function paddedToken(assertion, scope, length) {
  const [header, payload, digest] = mintToken(assertion, scope).split('.');
  const claims = JSON.parse(Buffer.from(payload, 'base64url').toString('utf8'));
  claims.xms_pad = '';
  const bare = JSON.stringify(claims).length;
  const payloadBytes = Math.floor(((length - header.length - digest.length - 2) * 3) / 4);
  claims.xms_pad = 'p'.repeat(Math.max(0, payloadBytes - bare));
  return `${header}.${b64(JSON.stringify(claims))}.${digest}`;
}

async function main() {
  let tokenLength = 0;
  const respond = (request) => {
    if (tokenLength === 0) return undefined;
    const { assertion, scope } = request.form;
    return {
      status: 200,
      body: {
        token_type: 'Bearer',
        scope,
        access_token: paddedToken(assertion, scope, tokenLength),
        expires_in: 3600,
        ext_expires_in: 3600,
      },
    };
  };
  const idp = await startMockIdp({ record: false, respond });
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
      case 'tokenLength':
        tokenLength = Math.max(0, Math.floor(Number(message.value) || 0));
        process.send({ id, tokenLength });
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
