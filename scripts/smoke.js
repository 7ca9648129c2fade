#!/usr/bin/env node
'use strict';
/**
 * The smoke test of an installed obo-native, for a platform's binary in that
 * platform's runtime (Node, Node under QEMU, Bun on musl): an exchange against
 * the mock provider of `obo-native/testing`, a cache hit, and a provider
 * error, as a user's process sees them. Run it from the folder whose
 * node_modules hold obo-native (or give that folder as the argument).
 * Prints one line of JSON; exits 1 with the reason on any mismatch.
 */
const { createRequire } = require('node:module');
const path = require('node:path');

const from = path.resolve(process.argv[2] || process.cwd());
const requireFrom = createRequire(path.join(from, 'package.json'));

function check(condition, what, got) {
  if (!condition) throw new Error(`smoke: ${what} (got ${JSON.stringify(got)})`);
}

async function main() {
  const obo = requireFrom('obo-native');
  const { startMockIdp, faults } = requireFrom('obo-native/testing');
  const idp = await startMockIdp({ clientSecret: 'smoke-client-secret' });
  try {
    obo.configure({ issuer: idp.issuer, clientId: idp.clientId, clientSecret: 'smoke-client-secret' });
    const user = { openidId: 'smoke-user' };

    const token = await obo.exchangeOboToken(user, 'smoke-assertion', 'api://smoke/Read');
    const expected = idp.expectedToken('smoke-assertion', 'api://smoke/Read');
    check(token.access_token.split('.')[2] === expected.split('.')[2], 'the exchanged token is the provider’s', token.access_token.slice(0, 16));
    check(token.token_type === 'Bearer' && token.scope === 'api://smoke/Read', 'the token’s type and scope', token);

    const again = await obo.exchangeOboToken(user, 'smoke-assertion', 'api://smoke/Read');
    check(again.access_token === token.access_token, 'the second call is answered from the cache', again.access_token.slice(0, 16));

    idp.enqueue(faults.consentRequired());
    const error = await obo.exchangeOboToken({ openidId: 'smoke-other' }, 'smoke-assertion', 'api://smoke/Write').then(
      () => null,
      (err) => err,
    );
    check(error instanceof Error && /^invalid_grant: AADSTS65001/.test(error.message), 'a consent_required answer rejects with its message', error && error.message);
    check(error.retryable === false && !error.message.includes('smoke-assertion'), 'the error is final and free of the assertion', error.message);

    const stats = obo.stats();
    check(stats.exchanges === 2 && stats.cacheHits === 1 && stats.failures === 1, 'the counters', stats);
    check(idp.tokenRequests().length === 2, 'two requests reached the provider', idp.tokenRequests().length);
    console.log(JSON.stringify({ ok: true, runtime: process.versions.bun ? `bun ${process.versions.bun}` : `node ${process.version}`, platform: `${process.platform}-${process.arch}`, stats }));
  } finally {
    obo.clearCache();
    await idp.close();
  }
}

main().catch((err) => {
  console.error(err && err.stack ? err.stack : err);
  process.exit(1);
});
