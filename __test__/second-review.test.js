'use strict';
/**
 * Findings of the second review (issue 15) that show from JavaScript, one
 * describe per point: a claims challenge's or a forced refresh's token is
 * never replaced by an exchange begun before it; `clientAssertion` functions
 * get their own deadline and error; blank identity claims; LibreChat's
 * example CREDS_KEY; `redisMisses`.
 */
const { obo, until, useMockIdp, settle, optionsFor, thrownBy } = require('./helpers');

const user = { openidId: 'user-ordering' };
const CAE = '{"access_token":{"nbf":{"essential":true,"value":"1700000000"}}}';

describe('1. a newer token is never replaced by an exchange that began before it', () => {
  const context = useMockIdp();

  test('a claims challenge answered while a plain exchange is under way keeps its token, for every later call', async () => {
    const { idp } = context;
    idp.setResponder((request) =>
      request.form.claims ? { body: { access_token: 'token-satisfying-the-challenge', token_type: 'Bearer', expires_in: 3600 } } : undefined,
    );
    idp.enqueue({ hold: true });
    const plain = obo.exchangeOboToken(user, 'assertion-ordering', 'api://s');
    await until(() => idp.heldCount() === 1);
    const challenged = await obo.acquireOboToken({ assertion: 'assertion-ordering', scopes: 'api://s', user, claims: CAE });
    expect(challenged.access_token).toBe('token-satisfying-the-challenge');
    // Made after the challenge was answered: must not join the older flight, still held at the provider.
    const after = obo.exchangeOboToken(user, 'assertion-ordering', 'api://s');
    idp.release();
    const [older, next] = await Promise.all([plain, after]);
    expect(older.access_token).not.toBe('token-satisfying-the-challenge');
    expect(next.access_token).toBe('token-satisfying-the-challenge');
    // The older exchange finished last, and did not replace the challenge's token in the cache.
    expect((await obo.exchangeOboToken(user, 'assertion-ordering', 'api://s')).access_token).toBe('token-satisfying-the-challenge');
    expect((await obo.acquireOboToken({ assertion: 'assertion-ordering', scopes: 'api://s', user })).access_token).toBe(
      'token-satisfying-the-challenge',
    );
    expect(idp.tokenRequestCount()).toBe(2);
  });

  test('a forced refresh answered while a plain exchange is under way keeps its token', async () => {
    const { idp } = context;
    let minted = 0;
    idp.setResponder(() => ({ body: { access_token: `AT-${++minted}`, token_type: 'Bearer', expires_in: 3600 } }));
    idp.enqueue({ hold: true });
    const plain = obo.exchangeOboToken(user, 'assertion-forced', 'api://s');
    await until(() => idp.heldCount() === 1);
    const forced = await obo.acquireOboToken({ assertion: 'assertion-forced', scopes: 'api://s', user, forceRefresh: true });
    const after = obo.exchangeOboToken(user, 'assertion-forced', 'api://s', true);
    idp.release();
    const [older, next] = await Promise.all([plain, after]);
    expect(older.access_token).not.toBe(forced.access_token);
    expect(next.access_token).toBe(forced.access_token);
    expect((await obo.exchangeOboToken(user, 'assertion-forced', 'api://s')).access_token).toBe(forced.access_token);
    expect(idp.tokenRequestCount()).toBe(2);
  });
});

describe('2-4. a clientAssertion function: its own deadline, its own verdict on retrying, its answer trimmed', () => {
  const context = useMockIdp({ acceptClientAssertion: (assertion) => (assertion.startsWith('workload.') ? true : undefined) });
  const withFunction = (clientAssertion, extra = {}) => ({
    tokenEndpoint: context.idp.tokenEndpoint,
    clientId: context.idp.clientId,
    retryDelayMs: 20,
    clientAssertion,
    ...extra,
  });

  test('2. a function that never settles fails the exchange with ECLIENTASSERTION naming it, once, and sends no request', async () => {
    let calls = 0;
    obo.configure(withFunction(() => {
      calls += 1;
      return new Promise(() => {});
    }, { timeoutMs: 200 }));
    const { error } = await settle(obo.exchangeOboToken(user, 'assertion-silent-vault', 'api://s'));
    expect(error).toMatchObject({ code: 'ECLIENTASSERTION', retryable: false });
    expect(error.message).toContain('the clientAssertion function did not settle within 200 ms');
    expect(calls).toBe(1);
    expect(context.idp.tokenRequestCount()).toBe(0);
  });

  test.each([
    ['a message that sounds transient', new Error('vault timed out'), false],
    ['a message that does not', new Error('vault unreachable'), false],
    ['retryable: true', Object.assign(new Error('vault unreachable'), { retryable: true }), true],
    ['retryable: false', Object.assign(new Error('vault timed out'), { retryable: false }), false],
    ['a retryable that is not a boolean', Object.assign(new Error('vault timed out'), { retryable: 'yes' }), false],
  ])('3. a function failing with %s is called once, and err.retryable is its own boolean, else false', async (_, thrown, retryable) => {
    let calls = 0;
    obo.configure(withFunction(() => {
      calls += 1;
      throw thrown;
    }));
    const { error } = await settle(obo.exchangeOboToken(user, 'assertion-failing-vault', 'api://s'));
    expect(error).toMatchObject({ code: 'ECLIENTASSERTION', retryable });
    expect(error.message).toContain(thrown.message);
    expect(calls).toBe(1);
    expect(context.idp.tokenRequestCount()).toBe(0);
  });

  test('4. the assertion a function returns is sent without its surrounding whitespace', async () => {
    obo.configure(withFunction(async () => ' \n workload.padded-assertion \t\n'));
    await obo.exchangeOboToken(user, 'assertion-padded', 'api://s');
    expect(context.idp.tokenRequests().at(-1).form.client_assertion).toBe('workload.padded-assertion');
  });
});

describe('5. acquireOboToken: blank oid/sub claims count as absent', () => {
  const context = useMockIdp();
  const encode = (value) => Buffer.from(JSON.stringify(value)).toString('base64url');
  const userToken = (claims) => `${encode({ typ: 'JWT', alg: 'RS256' })}.${encode(claims)}.c2lnbmF0dXJl`;

  test('a blank oid does not hide a valid sub: the token is keyed and logged under the sub', async () => {
    const lines = [];
    const logger = Object.fromEntries(['debug', 'info', 'warn', 'error'].map((level) => [level, (message) => lines.push(message)]));
    obo.configure(optionsFor(context.idp, { logger }));
    const assertion = userToken({ tid: 'tenant-blank', oid: '   ', sub: 'pairwise-subject' });
    await obo.acquireOboToken({ assertion, scopes: 'api://s' });
    expect(lines).toContain('[OboTokenService] Requesting new OBO token for user: pairwise-subject, scopes: api://s');
    // The same subject through an identity context is the same key: served from the cache.
    const again = await obo.acquireOboToken({
      assertion,
      scopes: 'api://s',
      identityContext: { openidSubject: 'pairwise-subject', tenantId: 'tenant-blank' },
    });
    expect(again.access_token).toBe(context.idp.expectedToken(assertion, 'api://s'));
    expect(context.idp.tokenRequestCount()).toBe(1);
  });

  test.each([
    ['blank oid and sub', { oid: ' ', sub: '\t' }],
    ['no oid or sub', { tid: 'tenant-blank' }],
  ])('a JWT with %s rejects with the usual unauthenticated message, and sends no request', async (_, claims) => {
    const { error } = await settle(obo.acquireOboToken({ assertion: userToken(claims), scopes: 'api://s' }));
    expect(error).toBeInstanceOf(Error);
    expect(error.message).toBe('User must be authenticated via OpenID to perform OBO token exchange');
    expect(context.idp.tokenRequestCount()).toBe(0);
  });
});

describe("6. LibreChat's example CREDS_KEY, and keys of one repeated character, are refused", () => {
  const context = useMockIdp();
  const EXAMPLE = 'f34be427ebb29de8d88c107a71546019685ed8b241d8f2ed00c3df97ad2566f0';

  test.each([
    ["LibreChat's example", EXAMPLE],
    ['the example in capitals', EXAMPLE.toUpperCase()],
    ['one repeated character', '0'.repeat(64)],
  ])('configure() with %s as cacheEncryptionKey throws a TypeError naming it', (_, key) => {
    const error = thrownBy(() => obo.configure(optionsFor(context.idp, { redisUri: 'redis://127.0.0.1:9', cacheEncryptionKey: key })));
    expect(error).toBeInstanceOf(TypeError);
    expect(error.option).toBe('cacheEncryptionKey');
    expect(error.message).toMatch(/^configure: option "cacheEncryptionKey" is /);
    expect(error.message).not.toContain(key);
  });

  test.each([
    ["LibreChat's example", EXAMPLE, /LibreChat's \.env\.example/],
    ['one repeated character', 'f'.repeat(64), /one character repeated/],
  ])('from the environment, CREDS_KEY set to %s gives one warning and no Redis tier', async (_, key, why) => {
    const { idp } = context;
    const env = {
      OPENID_ISSUER: idp.issuer,
      OPENID_CLIENT_ID: idp.clientId,
      OPENID_CLIENT_SECRET: idp.clientSecret,
      USE_REDIS: 'true',
      // Nothing listens here: with a tier, every call would count a Redis error or miss.
      REDIS_URI: 'redis://127.0.0.1:9',
      CREDS_KEY: key,
    };
    const saved = Object.fromEntries(Object.keys(env).map((name) => [name, process.env[name]]));
    const warnings = [];
    try {
      Object.assign(process.env, env);
      obo.configure(null);
      obo.setLogger({ debug() {}, info() {}, warn: (message) => warnings.push(message), error() {} });
      const before = obo.stats();
      expect((await obo.exchangeOboToken(user, 'assertion-env-1', 'api://s')).access_token).toBeTruthy();
      expect((await obo.exchangeOboToken(user, 'assertion-env-2', 'api://s')).access_token).toBeTruthy();
      const after = obo.stats();
      expect(warnings).toHaveLength(1);
      expect(warnings[0]).toMatch(/^\[OboTokenService\] USE_REDIS is set, but CREDS_KEY: is /);
      expect(warnings[0]).toMatch(why);
      expect(warnings[0]).toContain('running without the shared Redis tier');
      expect(warnings[0]).not.toContain(key);
      expect(after.redisMisses - before.redisMisses + (after.redisErrors - before.redisErrors)).toBe(0);
    } finally {
      for (const [name, value] of Object.entries(saved)) {
        if (value === undefined) delete process.env[name];
        else process.env[name] = value;
      }
      obo.setLogger(null);
    }
  });
});
