'use strict';
/**
 * Token exchange and the shared Redis tier: clients of one process, each with
 * its own local cache, stand for instances sharing a redis-server. A token is
 * shared for the same audience and never for another one, nor across grants.
 * Skipped with a notice without redis-server, unless REQUIRE_REDIS=1.
 */
const crypto = require('node:crypto');
const { obo, settle } = require('./helpers');
const { startMockIdp } = require('../testing');
const { redisAvailable, startRedis, redisCli } = require('./support/redis');

const { createOboClient } = obo;
const KEY = crypto.randomBytes(32).toString('hex');
const SCOPE = 'openid mcp:read';
const user = { openidId: 'user-1' };
const call = (extra = {}) => ({ assertion: 'subject-token-1', scopes: SCOPE, user, ...extra });

const describeWithRedis = redisAvailable('token exchange with Redis') ? describe : describe.skip;

describeWithRedis('token exchange with the Redis tier', () => {
  let idp;
  let redis;
  const clients = [];

  /** An "instance": a client of its own on the shared Redis. */
  function instance(extra = {}) {
    const client = createOboClient({
      tokenEndpoint: idp.tokenEndpoint,
      clientId: idp.clientId,
      clientSecret: idp.clientSecret,
      grantType: 'token-exchange',
      redisUri: redis.uri,
      cacheEncryptionKey: KEY,
      ...extra,
    });
    clients.push(client);
    return client;
  }

  beforeAll(async () => {
    [idp, redis] = await Promise.all([startMockIdp({ tokenExchange: { audiences: ['mcp-a', 'mcp-b'] } }), startRedis()]);
  });

  beforeEach(() => idp.reset());

  afterEach(async () => {
    await Promise.all(clients.splice(0).map((client) => client.close()));
  });

  afterAll(async () => {
    await Promise.all([idp.close(), redis.stop()]);
  });

  it('shares a token for the same audience, and never for another one', async () => {
    const first = instance();
    const second = instance();
    const fromFirst = await first.acquireOboToken(call({ audience: 'mcp-a' }));
    const shared = await second.acquireOboToken(call({ audience: 'mcp-a' }));
    expect(shared.access_token).toBe(fromFirst.access_token);
    expect(second.stats()).toMatchObject({ exchanges: 0, redisHits: 1 });
    const other = await second.acquireOboToken(call({ audience: 'mcp-b' }));
    expect(other.access_token).toBe(idp.expectedExchangeToken('subject-token-1', SCOPE, { audience: 'mcp-b' }));
    expect(second.stats().exchanges).toBe(1);
    expect(idp.tokenRequestCount()).toBe(2);
  });

  it('a configured audience is a namespace of its own: another configuration exchanges for itself', async () => {
    await instance({ audience: 'mcp-a' }).acquireOboToken(call({ assertion: 'subject-token-2' }));
    const otherAudience = instance({ audience: 'mcp-b' });
    await otherAudience.acquireOboToken(call({ assertion: 'subject-token-2' }));
    expect(otherAudience.stats()).toMatchObject({ exchanges: 1, redisHits: 0 });
    expect(idp.tokenRequestCount()).toBe(2);
  });

  it('close() lets go of the client\'s Redis connections', async () => {
    const connections = async () => String(await redisCli(redis.port, 'CLIENT', 'LIST')).trim().split('\n').length;
    const before = await connections();
    const client = instance();
    await client.acquireOboToken(call({ assertion: 'subject-token-4', audience: 'mcp-a' }));
    expect(await connections()).toBeGreaterThan(before);
    await client.close();
    // Connections close as the tier is dropped: asked until they are gone (redis-cli's own is counted both times).
    const started = Date.now();
    while ((await connections()) > before) {
      if (Date.now() - started > 10_000) throw new Error('the closed client kept its Redis connections');
    }
    await expect(client.acquireOboToken(call())).rejects.toMatchObject({ code: 'ERR_OBO_CLIENT_CLOSED' });
  });

  it('a throttle shared for one audience does not refuse another', async () => {
    idp.enqueue({ status: 429, retryAfter: 60, body: { error: 'temporarily_unavailable', error_description: 'slow down' } });
    // An assertion of its own: Redis still holds the tokens of the tests above.
    const throttledCall = (audience) => call({ assertion: 'subject-token-3', audience });
    const first = instance({ maxRetries: 0 });
    expect((await settle(first.acquireOboToken(throttledCall('mcp-a')))).error.status).toBe(429);
    const second = instance({ maxRetries: 0 });
    expect((await settle(second.acquireOboToken(throttledCall('mcp-a')))).error.throttled).toBe(true);
    const token = await second.acquireOboToken(throttledCall('mcp-b'));
    expect(token.access_token).toBe(idp.expectedExchangeToken('subject-token-3', SCOPE, { audience: 'mcp-b' }));
    expect(idp.tokenRequestCount()).toBe(2);
  });
});
