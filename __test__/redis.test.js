'use strict';
/**
 * The shared Redis tier, end to end: several instances of the package (child
 * processes, see fixtures/redis-instance.js) against one loopback provider and
 * real redis-server processes on free ports (a single node, a three-node
 * cluster). Skipped with a notice without redis-server, unless REQUIRE_REDIS=1.
 */
const crypto = require('node:crypto');
const obo = require('..');
const { startMockIdp, faults } = require('../testing');
const { until, thrownBy } = require('./helpers');
const { redisAvailable, startRedis, startRedisCluster, redisCli } = require('./support/redis');
const { Instance, eventually } = require('./support/instances');

const KEY = crypto.randomBytes(32).toString('hex');
const OTHER_KEY = crypto.randomBytes(32).toString('hex');
const SCOPES = 'api://clear-scope/.default';
const REDIS_PASSWORD = 'redis-pw-secret-4711';

const sum = async (instances, counter) =>
  (await Promise.all(instances.map((instance) => instance.stats()))).reduce((total, s) => total + s[counter], 0);

const available = redisAvailable('__test__/redis.test.js (the shared Redis tier)');
const describeRedis = available ? describe : describe.skip;

describe('configure() and the Redis options, without a server', () => {
  afterAll(() => obo.configure(null));

  test('a redisUri without cacheEncryptionKey is a TypeError naming it, and never quotes the URI', () => {
    const options = {
      tokenEndpoint: 'http://127.0.0.1:9/token',
      clientId: 'a',
      clientSecret: 'b',
      redisUri: `redis://:${REDIS_PASSWORD}@127.0.0.1:9`,
    };
    const thrown = thrownBy(() => obo.configure(options));
    expect(thrown).toBeInstanceOf(TypeError);
    expect(thrown.option).toBe('cacheEncryptionKey');
    expect(thrown.message).toContain('cacheEncryptionKey');
    expect(thrown.message).not.toContain(REDIS_PASSWORD);
    // Without redisUri, no Redis: the key alone is accepted and unused.
    expect(() => obo.configure({ ...options, redisUri: undefined, cacheEncryptionKey: KEY })).not.toThrow();
  });
});

describeRedis('the shared Redis tier across instances', () => {
  let idp;
  let redis;
  let cluster;
  let instances;
  let minted = 0;
  let prefixes = 0;
  let prefix;

  const call = (user, extra = {}) => ({ user, assertion: `assertion-clear-${user}`, scopes: SCOPES, ...extra });
  const options = (extra = {}) => ({
    tokenEndpoint: idp.tokenEndpoint,
    clientId: idp.clientId,
    clientSecret: idp.clientSecret,
    retryDelayMs: 20,
    redisUri: redis.uri,
    redisKeyPrefix: prefix,
    cacheEncryptionKey: KEY,
    // Generous: a cold cluster connection on a busy machine must not turn into a miss.
    redisTimeoutMs: 2000,
    ...extra,
  });
  const configureAll = (extra) => Promise.all(instances.map((instance) => instance.configure(options(extra))));

  beforeAll(async () => {
    [idp, redis, cluster] = await Promise.all([startMockIdp(), startRedis(), startRedisCluster()]);
    instances = await Promise.all([0, 1, 2, 3].map(() => Instance.start()));
  }, 120000);

  afterAll(async () => {
    await Promise.all((instances || []).map((instance) => instance.kill()));
    await Promise.all([idp && idp.close(), redis && redis.stop(), cluster && cluster.stop()]);
  });

  beforeEach(async () => {
    idp.reset();
    // Every token differs, so that a refreshed token is told from the old one.
    idp.setResponder(() => ({ body: { token_type: 'Bearer', access_token: `AT-${++minted}-zq`, expires_in: 3600 } }));
    prefix = `t${++prefixes}:`;
    await configureAll();
    await Promise.all(instances.map((instance) => instance.mark()));
  });

  test('a token exchanged by one instance is served to the others (three-node cluster)', async () => {
    const [a, b, c] = instances;
    await Promise.all([a, b, c].map((instance) => instance.configure(options({ redisUri: cluster.uris }))));
    const first = await a.exchange(call('u1'));
    expect(first.token).toMatch(/^AT-/);
    const second = await b.exchange(call('u1'));
    expect(second).toEqual({ token: first.token, expiresIn: expect.any(Number), expiresAt: first.expiresAt });
    // Another key, through another cluster slot, also travels.
    const other = await b.exchange(call('u2'));
    expect((await c.exchange(call('u2'))).token).toBe(other.token);
    expect(idp.tokenRequestCount()).toBe(2);
    expect(await b.stats()).toMatchObject({ redisHits: 1, exchanges: 1, redisErrors: 0 });
    // Copied into b's own cache: no second Redis read.
    expect((await b.exchange(call('u1'))).token).toBe(first.token);
    expect((await b.stats()).redisHits).toBe(1);
  });

  test('a cold exchange counts one Redis miss; an instance served from Redis counts one hit', async () => {
    const [a, b] = instances;
    expect((await a.exchange(call('u1'))).token).toMatch(/^AT-/);
    expect(await a.stats()).toMatchObject({ redisMisses: 1, redisHits: 0, exchanges: 1 });
    expect((await b.exchange(call('u1'))).token).toMatch(/^AT-/);
    expect(await b.stats()).toMatchObject({ redisMisses: 0, redisHits: 1, exchanges: 0 });
  });

  test('a rotated assertion in another instance is a new key, then shared', async () => {
    const [a, b, c] = instances;
    const old = await a.exchange(call('u1', { assertion: 'assertion-clear-old' }));
    const rotated = await b.exchange(call('u1', { assertion: 'assertion-clear-new' }));
    expect(rotated.token).not.toBe(old.token);
    expect(idp.tokenRequestCount()).toBe(2);
    expect((await c.exchange(call('u1', { assertion: 'assertion-clear-new' }))).token).toBe(rotated.token);
    expect((await a.exchange(call('u1', { assertion: 'assertion-clear-new' }))).token).toBe(rotated.token);
    expect((await c.exchange(call('u1', { assertion: 'assertion-clear-old' }))).token).toBe(old.token);
    expect(idp.tokenRequestCount()).toBe(2);
  });

  test('fromCache=false exchanges without asking Redis and replaces what the others are served', async () => {
    const [a, b, c] = instances;
    const stale = await a.exchange(call('u1'));
    expect((await b.exchange(call('u1'))).token).toBe(stale.token);
    const fresh = await a.exchange(call('u1', { fromCache: false }));
    expect(fresh.token).not.toBe(stale.token);
    expect(idp.tokenRequestCount()).toBe(2);
    expect((await c.exchange(call('u1'))).token).toBe(fresh.token);
    await b.ask('clearCache');
    expect((await b.exchange(call('u1'))).token).toBe(fresh.token);
    expect((await a.exchange(call('u1'))).token).toBe(fresh.token);
    expect(idp.tokenRequestCount()).toBe(2);
    // a's forced call neither read Redis nor waited for a lock.
    expect(await a.stats()).toMatchObject({ redisHits: 0, lockWaits: 0 });
  });

  test('a fromCache=false token is not replaced in Redis by an exchange that began before it', async () => {
    const [a, b, c] = instances;
    idp.enqueue({ hold: true });
    await a.start(call('u1'));
    await until(() => idp.heldCount() === 1, 20000);
    const forced = await b.exchange(call('u1', { fromCache: false }));
    expect(forced.token).toMatch(/^AT-/);
    idp.release();
    const [older] = await a.ask('collect');
    expect(older.token).toMatch(/^AT-/);
    expect(older.token).not.toBe(forced.token);
    // The older exchange stored last; Redis kept the newer token.
    expect((await c.exchange(call('u1'))).token).toBe(forced.token);
    expect(idp.tokenRequestCount()).toBe(2);
  });

  test('a cold fan-out of 4 instances × 50 calls makes exactly one provider request', async () => {
    idp.enqueue({ hold: true });
    await Promise.all(instances.map((instance) => instance.start(call('fan'), 50)));
    // Everyone is waiting: one request held at the provider, 49 callers joined
    // per instance, and the three other instances waiting for the lock's holder.
    await eventually(
      async () =>
        idp.heldCount() === 1 && (await sum(instances, 'coalesced')) === 196 && (await sum(instances, 'lockWaits')) === 3,
    );
    expect(idp.release()).toBe(1);
    const outcomes = (await Promise.all(instances.map((instance) => instance.ask('collect')))).flat();
    expect(outcomes).toHaveLength(200);
    const tokens = new Set(outcomes.map((outcome) => outcome.token));
    expect([...tokens]).toEqual([expect.stringMatching(/^AT-/)]);
    expect(idp.tokenRequestCount()).toBe(1);
    expect(await sum(instances, 'exchanges')).toBe(1);
  });

  test('a long Retry-After learned by one instance refuses the key in every instance, without a request', async () => {
    const [a, b] = instances;
    idp.enqueue(faults.throttled(60));
    const refused = await a.exchange(call('u1'));
    expect(refused.error).toMatchObject({ status: 429, retryAfter: 60 });
    const shared = await b.exchange(call('u1'));
    expect(shared.error).toMatchObject({ status: 429, throttled: true, error: 'temporarily_unavailable' });
    expect(shared.error.retryAfter).toBeGreaterThan(55);
    expect(idp.tokenRequestCount()).toBe(1);
    expect(await b.stats()).toMatchObject({ throttled: 1, exchanges: 0 });
    // Now remembered by b itself: refused again without Redis.
    expect((await b.exchange(call('u1'))).error.throttled).toBe(true);
    // Other keys go on.
    expect((await b.exchange(call('u2'))).token).toMatch(/^AT-/);
  });

  /** The name of the one exchange lock held under this test's prefix. */
  const lockName = async () => {
    const locks = (await redisCli(redis.port, '--scan', '--pattern', `${prefix}*:l`)).toString().split('\n').filter(Boolean);
    expect(locks).toHaveLength(1);
    return locks[0];
  };
  const pttl = async (name) => Number((await redisCli(redis.port, 'PTTL', name)).toString().trim());
  // The defaults of everything that sized the old lock (timeoutMs, maxRetries, retryDelayMs: 66 s). The
  // Redis budget is 1 s rather than 200 ms, so that a busy machine does not turn a read into a miss: the
  // lease is 3 s with either (see shared.rs).
  const defaults = () => options({ retryDelayMs: undefined, redisTimeoutMs: 1000 });

  test('the exchange lock is a short lease that its holder renews while a slow exchange runs', async () => {
    const [a] = instances;
    await a.configure(defaults());
    idp.enqueue({ hold: true });
    await a.start(call('u1'));
    await until(() => idp.heldCount() === 1, 20000);
    const lock = await lockName();
    let previous = await pttl(lock);
    expect(previous).toBeGreaterThan(0);
    expect(previous).toBeLessThanOrEqual(3000);
    // Without renewal the time left only goes down; a renewal puts it back up.
    await eventually(async () => {
      const left = await pttl(lock);
      const renewed = left > previous;
      previous = left;
      return renewed;
    });
    expect(previous).toBeLessThanOrEqual(3000);
    idp.release();
    expect((await a.ask('collect'))[0].token).toMatch(/^AT-/);
    // Released with the exchange: no lock is left to expire.
    expect((await redisCli(redis.port, '--scan', '--pattern', `${prefix}*:l`)).toString().trim()).toBe('');
  });

  test('when the lock holder is killed mid-exchange, with default settings another instance is served long before the old 66 s lock would expire', async () => {
    const b = instances[1];
    const victim = await Instance.start();
    try {
      await Promise.all([victim.configure(defaults()), b.configure(defaults())]);
      // Connected first, so that the Redis budget is not spent connecting.
      await Promise.all([victim.exchange(call('warm-victim')), b.exchange(call('warm-b'))]);
      await b.mark();
      idp.enqueue({ hold: true });
      await victim.start(call('u1'));
      await until(() => idp.heldCount() === 1, 20000);
      await b.start(call('u1'));
      await eventually(async () => (await b.stats()).lockWaits === 1);
      await victim.kill();
      // The held request of the dead victim stays held; b's own request is answered.
      const [outcome] = await b.ask('collect');
      expect(outcome.token).toMatch(/^AT-/);
      expect(idp.tokenRequestCount()).toBe(4);
      expect(await b.stats()).toMatchObject({ exchanges: 1 });
    } finally {
      await victim.kill();
    }
  }, 30000);

  test('with Redis killed mid-run, calls still complete, the breaker opens, and no credential leaks', async () => {
    const doomed = await startRedis({ args: ['--requirepass', REDIS_PASSWORD] });
    const a = instances[0];
    try {
      const uri = `redis://:${REDIS_PASSWORD}@127.0.0.1:${doomed.port}`;
      await a.configure(options({ redisUri: uri, redisTimeoutMs: 300 }));
      expect((await a.exchange(call('u0'))).token).toMatch(/^AT-/);
      expect((await a.stats()).redisErrors).toBe(0);
      await doomed.kill();
      const users = (from) => Array.from({ length: 10 }, (_, i) => call(`u${from + i}`));
      const first = await a.ask('exchange', { calls: users(1) });
      expect(first.every((outcome) => /^AT-/.test(outcome.token))).toBe(true);
      const afterFirst = (await a.stats()).redisErrors;
      expect(afterFirst).toBeGreaterThan(0);
      // The breaker is open: the next calls do not even try (a probe at most).
      const second = await a.ask('exchange', { calls: users(11) });
      expect(second.every((outcome) => /^AT-/.test(outcome.token))).toBe(true);
      expect((await a.stats()).redisErrors - afterFirst).toBeLessThanOrEqual(1);
      expect(idp.tokenRequestCount()).toBe(21);
      const logged = JSON.stringify(await a.ask('logs'));
      expect(logged).not.toContain(REDIS_PASSWORD);
      expect(JSON.stringify([first, second])).not.toContain(REDIS_PASSWORD);
    } finally {
      await doomed.stop();
    }
  });

  test('Redis going away is one warning that names what failed and no credential, and its return one info line', async () => {
    const doomed = await startRedis({ args: ['--requirepass', REDIS_PASSWORD] });
    const a = instances[0];
    try {
      const uri = `redis://:${REDIS_PASSWORD}@127.0.0.1:${doomed.port}`;
      await a.configure(options({ redisUri: uri, redisTimeoutMs: 300 }));
      expect((await a.exchange(call('u0'))).token).toMatch(/^AT-/);
      const about = async (level) =>
        (await a.ask('logs')).filter((entry) => entry.level === level && /Redis/.test(entry.message)).map((entry) => entry.message);
      await doomed.kill();
      let user = 0;
      // Calls go on, each on its own; the breaker opens after a few failures.
      await eventually(async () => {
        expect((await a.exchange(call(`down-${++user}`))).token).toMatch(/^AT-/);
        return (await about('warn')).length > 0;
      });
      for (let i = 0; i < 10; i++) expect((await a.exchange(call(`down-${++user}`))).token).toMatch(/^AT-/);
      const [warning, ...more] = await about('warn');
      expect(more).toEqual([]);
      expect(warning).toMatch(/^\[OboTokenService\] The shared Redis tier is unavailable \(3 operations in a row failed, the last: (connection refused|connection dropped|I\/O error|no answer within 300 ms \(redisTimeoutMs\))\)/);
      expect(warning).not.toContain(REDIS_PASSWORD);
      expect(warning).not.toContain(String(doomed.port));
      expect(await about('info')).toEqual([]);

      await doomed.launch();
      // The breaker lets one call probe Redis after its cool-down; that call tells of the return.
      await eventually(async () => {
        await a.exchange(call(`up-${++user}`));
        return (await about('info')).length > 0;
      });
      for (let i = 0; i < 5; i++) await a.exchange(call(`up-${++user}`));
      expect(await about('info')).toEqual(['[OboTokenService] The shared Redis tier answers again and is back in use']);
      expect(await about('warn')).toEqual([warning]);
    } finally {
      await doomed.stop();
    }
  });

  test('an instance with another encryption key misses, and never fails', async () => {
    const [a, b] = instances;
    await b.configure(options({ cacheEncryptionKey: OTHER_KEY }));
    const first = await a.exchange(call('u1'));
    const second = await b.exchange(call('u1'));
    expect(second.token).toMatch(/^AT-/);
    expect(second.token).not.toBe(first.token);
    expect(idp.tokenRequestCount()).toBe(2);
    expect(await b.stats()).toMatchObject({ redisHits: 0, redisErrors: 0, exchanges: 1 });
  });

  test('Redis holds nothing readable, and every key it holds expires', async () => {
    const [a, b] = instances;
    const token = await a.exchange(call('user-clear-1'));
    idp.enqueue(faults.throttled(60));
    await a.exchange(call('user-clear-2'));
    // A lock, caught while its holder exchanges.
    idp.enqueue({ hold: true });
    await b.start(call('user-clear-3'));
    await until(() => idp.heldCount() === 1, 20000);
    const keys = (await redisCli(redis.port, '--scan', '--pattern', `${prefix}*`))
      .toString('latin1')
      .split('\n')
      .filter(Boolean);
    expect(keys).toHaveLength(3);
    const clear = [
      'user-clear',
      'assertion-clear',
      'tenant-clear',
      'issuer-clear',
      'clear-scope',
      token.token,
      idp.clientSecret,
      'temporarily_unavailable',
      'AADSTS',
    ];
    for (const key of keys) {
      const value = await redisCli(redis.port, 'GET', key);
      for (const text of clear) {
        expect(key).not.toContain(text);
        expect(value.includes(Buffer.from(text))).toBe(false);
      }
      const ttl = Number((await redisCli(redis.port, 'PTTL', key)).toString().trim());
      expect(ttl).toBeGreaterThan(0);
    }
    idp.release();
    expect((await b.ask('collect'))[0].token).toMatch(/^AT-/);
  });

  test("LibreChat's environment: USE_REDIS with CREDS_KEY shares; without it, one warning and no Redis", async () => {
    const [a, b] = instances;
    const env = {
      OPENID_ISSUER: idp.issuer,
      OPENID_CLIENT_ID: idp.clientId,
      OPENID_CLIENT_SECRET: idp.clientSecret,
      USE_REDIS: 'true',
      REDIS_URI: redis.uri,
      USE_REDIS_CLUSTER: 'false',
      REDIS_KEY_PREFIX: prefix,
      CREDS_KEY: KEY,
    };
    await a.ask('env', { vars: env });
    await a.configure(null);
    const token = await a.exchange(call('u1'));
    expect(token.token).toMatch(/^AT-/);
    const keys = (await redisCli(redis.port, '--scan', '--pattern', `${prefix}*`)).toString().split('\n').filter(Boolean);
    expect(keys).toHaveLength(1);
    // b, configured explicitly on the same Redis and key, is served a's token.
    expect((await b.exchange(call('u1'))).token).toBe(token.token);

    await b.ask('env', { vars: { ...env, REDIS_KEY_PREFIX: `${prefix}nokey:`, CREDS_KEY: null } });
    await b.configure(null);
    expect((await b.exchange(call('u2'))).token).toMatch(/^AT-/);
    expect((await b.exchange(call('u3'))).token).toMatch(/^AT-/);
    const warnings = (await b.ask('logs')).filter((entry) => entry.level === 'warn');
    expect(warnings).toHaveLength(1);
    expect(warnings[0].message).toContain('CREDS_KEY');
    const unencrypted = (await redisCli(redis.port, '--scan', '--pattern', `${prefix}nokey:*`)).toString().trim();
    expect(unencrypted).toBe('');
    await Promise.all(
      [a, b].map((instance) =>
        instance.ask('env', { vars: Object.fromEntries(Object.keys(env).map((name) => [name, null])) }),
      ),
    );
  });

  test("LibreChat's REDIS_KEY_PREFIX_VAR: the prefix is the value of the variable it names", async () => {
    const [a] = instances;
    const env = {
      OPENID_ISSUER: idp.issuer,
      OPENID_CLIENT_ID: idp.clientId,
      OPENID_CLIENT_SECRET: idp.clientSecret,
      USE_REDIS: 'true',
      REDIS_URI: redis.uri,
      REDIS_KEY_PREFIX_VAR: 'DEPLOYMENT_ID',
      DEPLOYMENT_ID: `${prefix}deployment-7:`,
      CREDS_KEY: KEY,
    };
    try {
      await a.ask('env', { vars: env });
      await a.configure(null);
      expect((await a.exchange(call('u1'))).token).toMatch(/^AT-/);
      const keys = (await redisCli(redis.port, '--scan', '--pattern', `${prefix}*`)).toString().split('\n').filter(Boolean);
      expect(keys).toHaveLength(1);
      expect(keys[0].startsWith(`${prefix}deployment-7:obo:`)).toBe(true);
      expect((await a.ask('logs')).filter((entry) => entry.level === 'warn')).toEqual([]);
    } finally {
      await a.ask('env', { vars: Object.fromEntries(Object.keys(env).map((name) => [name, null])) });
    }
  });
});
