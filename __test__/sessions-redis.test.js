'use strict';
/**
 * Long-running sessions in the shared Redis tier: four instances of the
 * package (child processes) on a private redis-server renew one session at
 * once. The provider rotates refresh tokens and revokes the grant when one is
 * presented twice, so anything but exactly one renewal would show. Skipped
 * with a notice without redis-server, unless REQUIRE_REDIS=1.
 */
const crypto = require('node:crypto');
const { startMockIdp } = require('../testing');
const { redisAvailable, startRedis, redisCli } = require('./support/redis');
const { Instance, eventually } = require('./support/instances');
const { untilExpired } = require('./helpers');

const KEY = crypto.randomBytes(32).toString('hex');
const SCOPES = 'api://reports/Read';
const SESSION_KEY = 'nightly-report-schedule-0042';
const TTL_MS = 3_600_000;

const available = redisAvailable('__test__/sessions-redis.test.js (sessions in the shared Redis tier)');
const describeRedis = available ? describe : describe.skip;

describeRedis('sessions in Redis', () => {
  let redis;
  let idp;
  let instances = [];

  beforeAll(async () => {
    [redis, idp] = await Promise.all([startRedis(), startMockIdp()]);
    instances = await Promise.all(Array.from({ length: 4 }, () => Instance.start()));
  });

  afterAll(async () => {
    await Promise.all(instances.map((instance) => instance.kill()));
    if (idp) await idp.close();
    if (redis) await redis.stop();
  });

  beforeEach(async () => {
    idp.reset();
    await redisCli(redis.port, 'FLUSHALL');
    const options = {
      tokenEndpoint: idp.tokenEndpoint,
      clientId: idp.clientId,
      clientSecret: idp.clientSecret,
      redisUri: redis.uri,
      cacheEncryptionKey: KEY,
      sessionTtlMs: TTL_MS,
      retryDelayMs: 20,
      // A first connection on a busy machine must not be an error.
      redisTimeoutMs: 2000,
    };
    await Promise.all(instances.map((instance) => instance.configure(options)));
  });

  const refreshRequests = () => idp.tokenRequests().filter((r) => r.form.grant_type === 'refresh_token');
  const lockWaits = async () =>
    (await Promise.all(instances.map((instance) => instance.ask('stats')))).reduce((total, s) => total + s.lockWaits, 0);

  /** Begins the session on the first instance, with an access token that can no longer be served. */
  async function beginStale() {
    idp.setExpiresIn(1);
    const begun = await instances[0].ask('beginSession', {
      options: { assertion: 'user-assertion', scopes: SCOPES, user: { openidId: 'scheduler-user' }, sessionKey: SESSION_KEY },
    });
    expect(begun.error).toBeUndefined();
    idp.setExpiresIn(3600);
    await untilExpired(begun.expiresAt);
    return begun;
  }

  test('four instances renewing one session at once: exactly one renewal, every caller served, and the grant survives', async () => {
    await beginStale();
    const waitsBefore = await lockWaits();
    idp.enqueue({ hold: true });
    await Promise.all(
      instances.map((instance) =>
        instance.ask('startSessions', { calls: Array.from({ length: 5 }, () => ({ sessionKey: SESSION_KEY, scopes: SCOPES })) }),
      ),
    );
    // One renewal reached the provider and is held; the three other instances wait for the deployment's
    // lock (or, were there no lock, send renewals of their own).
    await eventually(() => idp.heldCount() === 1);
    await eventually(async () => (await lockWaits()) - waitsBefore >= 3 || refreshRequests().length > 1);
    expect(refreshRequests()).toHaveLength(1);
    idp.release();
    const outcomes = (await Promise.all(instances.map((instance) => instance.ask('collect')))).flat();
    expect(outcomes).toHaveLength(20);
    for (const outcome of outcomes) expect(outcome.error).toBeUndefined();
    expect(new Set(outcomes.map((outcome) => outcome.token)).size).toBe(1);
    expect(refreshRequests()).toHaveLength(1);
    expect(idp.refreshGrants()[0]).toMatchObject({ redemptions: 1, revoked: false, reuseDetected: false });

    // The grant survives: another instance renews with the rotated token.
    const [again] = await instances[2].ask('startSessions', { calls: [{ sessionKey: SESSION_KEY, scopes: SCOPES, forceRefresh: true }] }).then(() => instances[2].ask('collect'));
    expect(again.error).toBeUndefined();
    expect(idp.refreshGrants()[0]).toMatchObject({ redemptions: 2, revoked: false });
  });

  test('Redis holds the session sealed under a keyed name, for sessionTtlMs, and ending it on one instance ends it everywhere', async () => {
    await beginStale();
    await instances[1].ask('startSessions', { calls: [{ sessionKey: SESSION_KEY, scopes: SCOPES }] });
    await instances[1].ask('collect');
    const names = (await redisCli(redis.port, '--raw', 'KEYS', '*')).toString().split('\n').filter(Boolean);
    const sessionNames = names.filter((name) => name.endsWith(':s'));
    expect(sessionNames).toHaveLength(1);
    const refreshTokens = refreshRequests().map((r) => r.form.refresh_token);
    const value = await redisCli(redis.port, 'GET', sessionNames[0]);
    for (const secret of [SESSION_KEY, ...refreshTokens]) {
      for (const name of names) expect(name).not.toContain(secret);
      expect(value.includes(Buffer.from(secret))).toBe(false);
    }
    const ttl = Number((await redisCli(redis.port, 'PTTL', sessionNames[0])).toString());
    expect(ttl).toBeGreaterThan(TTL_MS - 60_000);
    expect(ttl).toBeLessThanOrEqual(TTL_MS);

    await expect(instances[3].ask('endSession', { sessionKey: SESSION_KEY })).resolves.toBe(true);
    await instances[0].ask('startSessions', { calls: [{ sessionKey: SESSION_KEY, scopes: SCOPES }] });
    const [gone] = await instances[0].ask('collect');
    expect(gone.error).toMatchObject({ oboFailureReason: 'session_not_found', retryable: false });
  });

  test('with Redis unreachable a session call is a retryable error, never a missing session', async () => {
    await beginStale();
    redis.pause();
    try {
      await instances[1].ask('startSessions', { calls: [{ sessionKey: SESSION_KEY, scopes: SCOPES }] });
      const [outcome] = await instances[1].ask('collect');
      expect(outcome.error).toMatchObject({ retryable: true, oboFailureReason: 'exchange_failed' });
      expect(outcome.error.message).toContain('OBO session store unavailable');
    } finally {
      redis.resume();
    }
    expect(refreshRequests()).toHaveLength(0);
  });
});
