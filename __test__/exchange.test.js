'use strict';
/**
 * The reference spec of LibreChat's OboTokenService, ported case by case (the
 * titles are the spec's, word for word), against a real loopback provider
 * instead of mocks; then the contract points the spec does not cover.
 */
const { obo, sleep, sleepUntil, until, optionsFor, useMockIdp, settle, thrownBy, textsOf } = require('./helpers');
const { faults } = require('../testing');

const { exchangeOboToken, getGraphApiToken, configure, clearCache, stats } = obo;

const ctx = useMockIdp();

/** The result an exchange must resolve with: the provider's token for this assertion and scope. */
const tokenFor = (assertion, scope, expiresIn = 3600) => ({
  access_token: ctx.idp.expectedToken(assertion, scope),
  token_type: 'Bearer',
  expires_in: expiresIn,
  scope,
});

/** Answers token requests with `token-<n>`, n counting token requests from 1. */
function numberTokens(idp, expiresIn = 3600) {
  idp.setResponder((record) => ({
    body: {
      token_type: 'Bearer',
      access_token: `token-${idp.tokenRequests().indexOf(record) + 1}`,
      expires_in: expiresIn,
    },
  }));
}

describe('OboTokenService', () => {
  const mockUser = {
    openidId: 'oidc-sub-123',
    email: 'test@example.com',
    name: 'Test User',
  };

  describe('input validation', () => {
    it('should throw when user has no openidId', async () => {
      await expect(
        exchangeOboToken({ email: 'test@example.com' }, 'access-token', 'api://scope'),
      ).rejects.toThrow('User must be authenticated via OpenID to perform OBO token exchange');
    });

    it('should throw when accessToken is missing', async () => {
      await expect(exchangeOboToken(mockUser, '', 'api://scope')).rejects.toThrow(
        'Access token is required for OBO exchange',
      );
    });

    it('should throw when scopes are missing', async () => {
      await expect(exchangeOboToken(mockUser, 'access-token', '')).rejects.toThrow(
        'Scopes are required for OBO exchange',
      );
    });

    it('should throw when OpenID config is not available', async () => {
      const saved = { ...process.env };
      delete process.env.OPENID_ISSUER;
      delete process.env.OPENID_CLIENT_ID;
      try {
        configure(null);
        await expect(exchangeOboToken(mockUser, 'access-token', 'api://scope')).rejects.toThrow(
          'OpenID configuration not available',
        );
        expect(ctx.idp.requests).toHaveLength(0);
      } finally {
        process.env = saved;
      }
    });
  });

  describe('cache behavior', () => {
    it('should return cached token when fromCache is true and cache hit', async () => {
      ctx.idp.setExpiresIn(1800);
      const first = await exchangeOboToken(mockUser, 'access-token', 'api://mcp-server/Scope.Read', true);
      const hitsBefore = stats().cacheHits;
      const result = await exchangeOboToken(mockUser, 'access-token', 'api://mcp-server/Scope.Read', true);
      expect(result).toEqual({
        access_token: first.access_token,
        token_type: 'Bearer',
        expires_in: expect.any(Number),
        scope: 'api://mcp-server/Scope.Read',
      });
      expect(result.expires_in).toBeGreaterThan(1790);
      expect(result.expires_in).toBeLessThanOrEqual(1800);
      expect(ctx.idp.tokenRequests()).toHaveLength(1);
      expect(stats().cacheHits - hitsBefore).toBe(1);
    });

    it('should skip cache when fromCache is false', async () => {
      numberTokens(ctx.idp);
      const cached = await exchangeOboToken(mockUser, 'access-token', 'api://mcp-server/Scope.Read');
      expect(cached.access_token).toBe('token-1');
      const result = await exchangeOboToken(mockUser, 'access-token', 'api://mcp-server/Scope.Read', false);
      expect(ctx.idp.tokenRequests()).toHaveLength(2);
      expect(result.access_token).toBe('token-2');
    });

    it('should default fromCache to true', async () => {
      await exchangeOboToken(mockUser, 'access-token', 'api://scope');
      await exchangeOboToken(mockUser, 'access-token', 'api://scope');
      expect(ctx.idp.tokenRequests()).toHaveLength(1);
    });
  });

  describe('OBO token exchange', () => {
    it('should call genericGrantRequest with jwt-bearer grant type', async () => {
      await exchangeOboToken(mockUser, 'user-access-token', 'api://mcp-server/Tools.ReadWrite');
      const [request] = ctx.idp.tokenRequests();
      expect(request.form).toEqual({
        grant_type: 'urn:ietf:params:oauth:grant-type:jwt-bearer',
        scope: 'api://mcp-server/Tools.ReadWrite',
        assertion: 'user-access-token',
        requested_token_use: 'on_behalf_of',
      });
    });

    it('should return token response with correct structure', async () => {
      // The provider grants other scopes and sends no token_type: the result names what was asked for.
      ctx.idp.enqueue({
        status: 200,
        body: { access_token: 'exchanged-obo-token', expires_in: 3600, scope: 'api://mcp-server/Tools.Read openid profile' },
      });
      const result = await exchangeOboToken(mockUser, 'access-token', 'api://mcp-server/Tools.ReadWrite');
      expect(result).toEqual({
        access_token: 'exchanged-obo-token',
        token_type: 'Bearer',
        expires_in: 3600,
        scope: 'api://mcp-server/Tools.ReadWrite',
      });
    });

    it('should cache the exchanged token with correct TTL', async () => {
      // Served for expires_in − expirySkewSeconds = 2 s from its arrival, which lies between
      // `sent` and `received`: a hit 250 ms before the earliest end, a miss after the latest.
      const SERVED_MS = 2000;
      configure(optionsFor(ctx.idp, { expirySkewSeconds: 2 }));
      for (let attempt = 1; ; attempt++) {
        clearCache();
        ctx.idp.reset();
        ctx.idp.setExpiresIn(4);
        const sent = performance.now();
        const result = await exchangeOboToken(mockUser, 'access-token', 'api://scope');
        const received = performance.now();
        expect(result).toEqual(tokenFor('access-token', 'api://scope', 4));
        expect(stats().cacheSize).toBe(1);
        await sleepUntil(sent + SERVED_MS - 250);
        const late = await exchangeOboToken(mockUser, 'access-token', 'api://scope');
        if (performance.now() >= sent + SERVED_MS) {
          // This machine was too slow to ask before the end: the hit proves nothing, start again.
          if (attempt < 5) continue;
          throw new Error('five attempts could not read the cache within 250 ms of the end of its TTL');
        }
        expect(late.access_token).toBe(result.access_token);
        expect(ctx.idp.tokenRequests()).toHaveLength(1);
        await sleepUntil(received + SERVED_MS);
        const fresh = await exchangeOboToken(mockUser, 'access-token', 'api://scope');
        expect(ctx.idp.tokenRequests()).toHaveLength(2);
        expect(fresh.expires_in).toBe(4);
        return;
      }
    });

    it('should default expires_in to 3600 when not in response', async () => {
      ctx.idp.setExpiresIn(undefined);
      const result = await exchangeOboToken(mockUser, 'access-token', 'api://scope');
      expect(result.expires_in).toBe(3600);
      // Once from the native cache, once from the memo: 3600 s, or 3599 once a second has begun.
      for (let read = 0; read < 2; read++) {
        const cached = await exchangeOboToken(mockUser, 'access-token', 'api://scope');
        expect([3600, 3599]).toContain(cached.expires_in);
      }
      expect(ctx.idp.tokenRequests()).toHaveLength(1);
    });

    it('should propagate errors from genericGrantRequest', async () => {
      ctx.idp.enqueue({
        status: 400,
        body: { error: 'invalid_grant', error_description: 'AADSTS50013: Assertion failed signature validation' },
      });
      await expect(exchangeOboToken(mockUser, 'bad-token', 'api://scope')).rejects.toThrow(
        'invalid_grant: AADSTS50013: Assertion failed signature validation',
      );
    });

    it('should retry once for transient Entra failures and succeed on the second attempt', async () => {
      ctx.idp.setExpiresIn(1800);
      ctx.idp.enqueue({ status: 503, body: 'Service unavailable', headers: { 'content-type': 'text/plain' } });
      const retriesBefore = stats().retries;
      const result = await exchangeOboToken(mockUser, 'access-token', 'api://scope');
      expect(ctx.idp.tokenRequests()).toHaveLength(2);
      expect(result).toEqual(tokenFor('access-token', 'api://scope', 1800));
      expect(stats().retries - retriesBefore).toBe(1);
    });

    it('should not retry permanent OBO exchange failures', async () => {
      ctx.idp.enqueue({
        status: 400,
        body: { error: 'invalid_grant', error_description: 'AADSTS50013: Assertion failed signature validation' },
      });
      await expect(exchangeOboToken(mockUser, 'bad-token', 'api://scope')).rejects.toThrow(
        'invalid_grant: AADSTS50013: Assertion failed signature validation',
      );
      expect(ctx.idp.tokenRequests()).toHaveLength(1);
    });
  });

  describe('cache key isolation', () => {
    it('should use different cache keys for different scopes', async () => {
      const a = await exchangeOboToken(mockUser, 'access-token', 'api://server-a/Scope.A');
      const b = await exchangeOboToken(mockUser, 'access-token', 'api://server-b/Scope.B');
      expect(ctx.idp.tokenRequests()).toHaveLength(2);
      expect(a.access_token).toBe(ctx.idp.expectedToken('access-token', 'api://server-a/Scope.A'));
      expect(b.access_token).toBe(ctx.idp.expectedToken('access-token', 'api://server-b/Scope.B'));
    });

    it('should use different cache keys for different users', async () => {
      // One assertion for both: only the user can tell the keys apart.
      numberTokens(ctx.idp);
      const otherUser = { openidId: 'oidc-sub-456', email: 'other@example.com' };
      const mine = await exchangeOboToken(mockUser, 'access-token', 'api://scope');
      const theirs = await exchangeOboToken(otherUser, 'access-token', 'api://scope');
      expect(ctx.idp.tokenRequests()).toHaveLength(2);
      expect(mine.access_token).toBe('token-1');
      expect(theirs.access_token).toBe('token-2');
      expect((await exchangeOboToken(mockUser, 'access-token', 'api://scope')).access_token).toBe('token-1');
      expect((await exchangeOboToken(otherUser, 'access-token', 'api://scope')).access_token).toBe('token-2');
      expect(ctx.idp.tokenRequests()).toHaveLength(2);
    });
  });

  describe('single-flight coalescing', () => {
    it('coalesces concurrent exchanges for the same key into one IdP call', async () => {
      ctx.idp.enqueue({ hold: true });
      const coalescedBefore = stats().coalesced;
      const callA = exchangeOboToken(mockUser, 'access-token', 'api://shared');
      const callB = exchangeOboToken(mockUser, 'access-token', 'api://shared');
      // The second call has joined the flight while its request is held.
      await until(() => ctx.idp.heldCount() === 1 && stats().coalesced - coalescedBefore === 1);
      expect(ctx.idp.tokenRequests()).toHaveLength(1);
      ctx.idp.release();
      const [resultA, resultB] = await Promise.all([callA, callB]);
      expect(resultA).toEqual(resultB);
      expect(resultA.access_token).toBe(ctx.idp.expectedToken('access-token', 'api://shared'));
      expect(ctx.idp.tokenRequests()).toHaveLength(1);
      expect(stats().cacheSize).toBe(1);
      expect(stats().coalesced - coalescedBefore).toBe(1);
    });

    it('does not coalesce exchanges for different keys', async () => {
      await Promise.all([
        exchangeOboToken(mockUser, 'access-token', 'api://scope-a'),
        exchangeOboToken(mockUser, 'access-token', 'api://scope-b'),
      ]);
      expect(ctx.idp.tokenRequests()).toHaveLength(2);
    });

    it('clears the in-flight slot after a successful exchange', async () => {
      await exchangeOboToken(mockUser, 'access-token', 'api://scope');
      expect(ctx.idp.tokenRequests()).toHaveLength(1);
      // The real cache would answer the second call; empty it so the call
      // shows whether a stale in-flight slot is still there to join.
      clearCache();
      await exchangeOboToken(mockUser, 'access-token', 'api://scope');
      expect(ctx.idp.tokenRequests()).toHaveLength(2);
    });

    it('clears the in-flight slot after a failed exchange', async () => {
      ctx.idp.enqueue({
        status: 400,
        body: { error: 'invalid_grant', error_description: 'AADSTS50013: Assertion failed signature validation' },
      });
      await expect(exchangeOboToken(mockUser, 'access-token', 'api://scope')).rejects.toThrow('invalid_grant');
      const result = await exchangeOboToken(mockUser, 'access-token', 'api://scope');
      expect(result.access_token).toBe(ctx.idp.expectedToken('access-token', 'api://scope'));
      expect(ctx.idp.tokenRequests()).toHaveLength(2);
    });

    it('bypasses in-flight coalescing when fromCache is false', async () => {
      numberTokens(ctx.idp);
      ctx.idp.enqueue({ hold: true });
      const callA = exchangeOboToken(mockUser, 'access-token', 'api://scope', true);
      await until(() => ctx.idp.heldCount() === 1);
      const callB = exchangeOboToken(mockUser, 'access-token', 'api://scope', false);
      await until(() => ctx.idp.tokenRequests().length === 2);
      ctx.idp.release();
      const [resultA, resultB] = await Promise.all([callA, callB]);
      expect(resultA.access_token).toBe('token-1');
      expect(resultB.access_token).toBe('token-2');
    });
  });
});

describe('validation beyond the reference', () => {
  const user = { openidId: 'u-1' };

  it('checks in order: user, access token, scopes, configuration', async () => {
    await expect(exchangeOboToken(null, '', '')).rejects.toThrow('User must be authenticated via OpenID');
    await expect(exchangeOboToken(undefined, 'a', 's')).rejects.toThrow('User must be authenticated via OpenID');
    await expect(exchangeOboToken({ openidId: '' }, 'a', 's')).rejects.toThrow('User must be authenticated');
    await expect(exchangeOboToken(user, null, '')).rejects.toThrow('Access token is required for OBO exchange');
    await expect(exchangeOboToken(user, 'a', undefined)).rejects.toThrow('Scopes are required for OBO exchange');
  });

  it('rejects values of the wrong type with a TypeError naming the argument, never a synchronous throw', async () => {
    const cases = [
      [[{ openidId: 42 }, 'a', 's'], /user\.openidId must be a string/],
      [[user, 42, 's'], /accessToken must be a string/],
      [[user, { token: 'a' }, 's'], /accessToken must be a string/],
      [[user, 'a', ['api://x']], /scopes must be a string/],
      [[user, 'a', 's', true, { tenantId: 1 }], /identityContext\.tenantId must be a string/],
    ];
    for (const [args, message] of cases) {
      let promise;
      expect(() => {
        promise = exchangeOboToken(...args);
      }).not.toThrow();
      await expect(promise).rejects.toMatchObject({ name: 'TypeError', message: expect.stringMatching(message) });
    }
    expect(ctx.idp.requests).toHaveLength(0);
  });

  it('rejects with the error of a user object whose openidId getter throws', async () => {
    const hostile = {
      get openidId() {
        throw new Error('getter exploded');
      },
    };
    await expect(exchangeOboToken(hostile, 'a', 's')).rejects.toThrow('getter exploded');
  });
});

describe('wire request and client authentication', () => {
  const user = { openidId: 'u-wire' };

  it('posts a form with client_secret_basic by default (form-urlencoded id and secret)', async () => {
    await exchangeOboToken(user, 'assertion-x', 'api://x/.default');
    const [request] = ctx.idp.tokenRequests();
    expect(request.method).toBe('POST');
    expect(request.headers['content-type']).toBe('application/x-www-form-urlencoded');
    const basic = Buffer.from(request.headers.authorization.replace(/^Basic /, ''), 'base64').toString();
    expect(basic).toBe(`${ctx.idp.clientId}:${ctx.idp.clientSecret}`);
    expect(request.form.client_secret).toBeUndefined();
  });

  it('sends client_id and client_secret in the body for client_secret_post', async () => {
    configure(optionsFor(ctx.idp, { tokenEndpointAuthMethod: 'client_secret_post' }));
    await exchangeOboToken(user, 'assertion-x', 'api://x/.default');
    const [request] = ctx.idp.tokenRequests();
    expect(request.headers.authorization).toBeUndefined();
    expect(request.form).toMatchObject({ client_id: ctx.idp.clientId, client_secret: ctx.idp.clientSecret });
  });

  it('sends only client_id for none', async () => {
    configure({ tokenEndpoint: ctx.idp.tokenEndpoint, clientId: 'public-app', tokenEndpointAuthMethod: 'none' });
    await settle(exchangeOboToken(user, 'assertion-x', 'api://x/.default'));
    const [request] = ctx.idp.tokenRequests();
    expect(request.headers.authorization).toBeUndefined();
    expect(request.form.client_id).toBe('public-app');
    expect(request.form.client_secret).toBeUndefined();
  });

  it('refuses plain http for a host that is not loopback, naming https', () => {
    expect(() => configure({ tokenEndpoint: 'http://login.example.com/token', clientId: 'a', clientSecret: 'b' })).toThrow(
      expect.objectContaining({ name: 'TypeError', option: 'tokenEndpoint', message: expect.stringMatching(/https/) }),
    );
    expect(() => configure({ issuer: 'http://10.0.0.5/tenant/v2.0', clientId: 'a', clientSecret: 'b' })).toThrow(/https/);
  });

  it('goes over the wire with non-ASCII scopes and ids intact', async () => {
    const scopes = 'api://défi/Lire.Tout ünïcode 日本';
    const result = await exchangeOboToken({ openidId: 'ユーザー' }, 'assertion-ü', scopes);
    expect(result.scope).toBe(scopes);
    expect(ctx.idp.tokenRequests()[0].form).toMatchObject({ scope: scopes, assertion: 'assertion-ü' });
    expect(result.access_token).toBe(ctx.idp.expectedToken('assertion-ü', scopes));
  });
});

describe('result and expires_in', () => {
  const user = { openidId: 'u-exp' };

  it.each([
    ['1800', 1800],
    [99.7, 99],
    ['abc', 3600],
    [null, 3600],
    [-5, 1],
    [0, 1],
    [1e12, 86400],
  ])('normalises expires_in %p to %p', async (sent, expected) => {
    ctx.idp.setExpiresIn(sent);
    const result = await exchangeOboToken(user, 'a-token', 'api://s');
    expect(result.expires_in).toBe(expected);
    expect(Object.keys(result)).toEqual(['access_token', 'token_type', 'expires_in', 'scope']);
  });
});

describe('cache beyond the reference', () => {
  it('keys by the (openidId, scopes) pair: a colon cannot make two keys collide', async () => {
    const one = await exchangeOboToken({ openidId: 'a:b' }, 'assertion-1', 'c');
    const two = await exchangeOboToken({ openidId: 'a' }, 'assertion-2', 'b:c');
    expect(ctx.idp.tokenRequests()).toHaveLength(2);
    expect(one.access_token).toBe(ctx.idp.expectedToken('assertion-1', 'c'));
    expect(two.access_token).toBe(ctx.idp.expectedToken('assertion-2', 'b:c'));
    expect((await exchangeOboToken({ openidId: 'a:b' }, 'assertion-1', 'c')).access_token).toBe(one.access_token);
  });

  it('reports the remaining lifetime on a hit, never more than granted', async () => {
    configure(optionsFor(ctx.idp, { expirySkewSeconds: 1 }));
    ctx.idp.setExpiresIn(10);
    const user = { openidId: 'u-remaining' };
    const sent = performance.now();
    expect((await exchangeOboToken(user, 'a', 'api://s')).expires_in).toBe(10);
    const received = performance.now();
    expect((await exchangeOboToken(user, 'a', 'api://s')).expires_in).toBe(10);
    await sleepUntil(received + 1300);
    // Twice: once answered by the native cache, once by this thread's memo. The
    // token arrived between `sent` and `received`: the whole seconds left, rounded
    // up, lie between what is left from either end.
    for (let read = 0; read < 2; read++) {
      const asked = performance.now();
      const { expires_in: left } = await exchangeOboToken(user, 'a', 'api://s');
      const answered = performance.now();
      expect(left).toBeLessThanOrEqual(Math.ceil(10 - (asked - received) / 1000));
      expect(left).toBeGreaterThanOrEqual(Math.ceil(10 - (answered - sent) / 1000));
    }
    expect(ctx.idp.tokenRequests()).toHaveLength(1);
  });

  /** The token is served at once, and no longer 1.1 s later. */
  async function expectServedForOneSecond(user) {
    await exchangeOboToken(user, 'a', 'api://s');
    await exchangeOboToken(user, 'a', 'api://s');
    expect(ctx.idp.tokenRequests()).toHaveLength(1);
    await sleep(1100);
    await exchangeOboToken(user, 'a', 'api://s');
    expect(ctx.idp.tokenRequests()).toHaveLength(2);
  }

  it('stops serving a token expirySkewSeconds before it expires', async () => {
    configure(optionsFor(ctx.idp, { expirySkewSeconds: 2 }));
    ctx.idp.setExpiresIn(3);
    await expectServedForOneSecond({ openidId: 'u-skew' });
  });

  it('serves a short-lived token for one second, never less', async () => {
    ctx.idp.setExpiresIn(5); // under the default 30 s margin
    await expectServedForOneSecond({ openidId: 'u-short' });
  });

  it('writes the cache on fromCache = false, and later hits (memo included) see the new token', async () => {
    numberTokens(ctx.idp);
    const user = { openidId: 'u-refresh' };
    expect((await exchangeOboToken(user, 'a', 'api://s')).access_token).toBe('token-1');
    expect((await exchangeOboToken(user, 'a', 'api://s')).access_token).toBe('token-1');
    expect((await exchangeOboToken(user, 'a', 'api://s')).access_token).toBe('token-1');
    expect((await exchangeOboToken(user, 'a', 'api://s', false)).access_token).toBe('token-2');
    expect((await exchangeOboToken(user, 'a', 'api://s')).access_token).toBe('token-2');
    expect((await exchangeOboToken(user, 'a', 'api://s')).access_token).toBe('token-2');
    expect(ctx.idp.tokenRequests()).toHaveLength(2);
  });

  it('clearCache and configure forget tokens, memo included', async () => {
    const user = { openidId: 'u-clear' };
    await exchangeOboToken(user, 'a', 'api://s');
    await exchangeOboToken(user, 'a', 'api://s');
    await exchangeOboToken(user, 'a', 'api://s');
    clearCache();
    expect(stats().cacheSize).toBe(0);
    await exchangeOboToken(user, 'a', 'api://s');
    await exchangeOboToken(user, 'a', 'api://s');
    configure(optionsFor(ctx.idp));
    await exchangeOboToken(user, 'a', 'api://s');
    expect(ctx.idp.tokenRequests()).toHaveLength(3);
  });

  it('never holds more than maxCacheEntries', async () => {
    configure(optionsFor(ctx.idp, { maxCacheEntries: 5 }));
    for (let i = 0; i < 12; i++) {
      await exchangeOboToken({ openidId: `cap-${i}` }, 'a', 'api://s');
      expect(stats().cacheSize).toBeLessThanOrEqual(5);
    }
    expect(stats().cacheSize).toBeGreaterThan(0);
  });

  it('does not cache failures or empty answers', async () => {
    const user = { openidId: 'u-empty' };
    ctx.idp.enqueue({ status: 200, body: { token_type: 'Bearer', expires_in: 3600 } });
    await expect(exchangeOboToken(user, 'a', 'api://s')).rejects.toMatchObject({
      message: 'The identity provider returned no access token for the OBO exchange',
      oboFailureReason: 'empty_exchange_response',
      retryable: false,
    });
    expect(stats().cacheSize).toBe(0);
    ctx.idp.enqueue(faults.invalidSignature());
    await expect(exchangeOboToken(user, 'a', 'api://s')).rejects.toThrow('AADSTS50013');
    expect(stats().cacheSize).toBe(0);
    const result = await exchangeOboToken(user, 'a', 'api://s');
    expect(result.access_token).toBe(ctx.idp.expectedToken('a', 'api://s'));
    expect(ctx.idp.tokenRequests()).toHaveLength(3);
  });
});

describe('errors', () => {
  const user = { openidId: 'u-err' };

  it('carry the OAuth error body, the status and the failure reason', async () => {
    ctx.idp.enqueue(faults.mfaRequired());
    const { error } = await settle(exchangeOboToken(user, 'a', 'api://s'));
    expect(error).toMatchObject({
      message: expect.stringMatching(/^interaction_required: AADSTS50076: /),
      retryable: false,
      oboFailureReason: 'exchange_failed',
      status: 400,
      code: 'interaction_required',
      error: 'interaction_required',
      error_description: expect.stringMatching(/^AADSTS50076/),
      error_codes: [50076],
      correlation_id: 'mock-correlation',
      trace_id: 'mock-trace',
      timestamp: '2026-01-01 00:00:00Z',
      suberror: 'basic_action',
      claims: expect.stringContaining('capolids'),
    });
    expect(error.name).toBe('Error');
    expect(typeof error.stack).toBe('string');
  });

  it('are retryable for 429/500/502/503/504 and report the last attempt', async () => {
    configure(optionsFor(ctx.idp, { maxRetries: 2 }));
    ctx.idp.enqueue({ status: 500, body: 'a' }, { status: 504, body: 'b' }, { status: 502, body: 'c' });
    const { error } = await settle(exchangeOboToken(user, 'a', 'api://s'));
    expect(error).toMatchObject({ status: 502, retryable: true, oboFailureReason: 'exchange_failed' });
    expect(error.message).toMatch(/HTTP 502/);
    expect(ctx.idp.tokenRequests()).toHaveLength(3);
  });

  it('wait retryDelayMs between attempts', async () => {
    configure(optionsFor(ctx.idp, { retryDelayMs: 250 }));
    ctx.idp.enqueue({ status: 503, body: '' });
    await exchangeOboToken(user, 'a', 'api://s');
    const [first, second] = ctx.idp.tokenRequests();
    expect(second.at - first.at).toBeGreaterThanOrEqual(240);
  });

  it('honour maxRetries: 0', async () => {
    configure(optionsFor(ctx.idp, { maxRetries: 0 }));
    ctx.idp.enqueue({ status: 503, body: '' });
    await expect(exchangeOboToken(user, 'a', 'api://s')).rejects.toMatchObject({ status: 503, retryable: true });
    expect(ctx.idp.tokenRequests()).toHaveLength(1);
  });

  it('name a refused connection ECONNREFUSED, without retrying it', async () => {
    const { startMockIdp } = require('../testing');
    const gone = await startMockIdp();
    const endpoint = gone.tokenEndpoint;
    await gone.close();
    configure({ tokenEndpoint: endpoint, clientId: 'a', clientSecret: 'b', retryDelayMs: 10 });
    const retriesBefore = stats().retries;
    await expect(exchangeOboToken(user, 'a', 'api://s')).rejects.toMatchObject({
      code: 'ECONNREFUSED',
      retryable: false,
      oboFailureReason: 'exchange_failed',
      message: expect.stringMatching(/connection refused/),
    });
    expect(stats().retries).toBe(retriesBefore);
  });

  it('never contain the assertion or the client secret', async () => {
    const assertion = 'eyJhbGciOiJSUzI1NiJ9.c2VjcmV0LWFzc2VydGlvbi1wYXlsb2Fk.sig-abcdef123456';
    ctx.idp.enqueue({
      status: 400,
      body: {
        error: 'invalid_grant',
        error_description: `AADSTS50013: bad assertion ${assertion} for client ${ctx.idp.clientSecret}`,
        claims: assertion,
      },
    });
    const { error } = await settle(exchangeOboToken(user, assertion, 'api://s'));
    expect(error).toBeDefined();
    const texts = textsOf(error).join('\n');
    expect(texts).not.toContain(assertion);
    expect(texts).not.toContain(ctx.idp.clientSecret);
    expect(texts).toContain('[redacted]');
  });
});

describe('configuration', () => {
  const user = { openidId: 'u-config' };

  it('discovers the token endpoint from the issuer once, and does not remember a failed discovery', async () => {
    configure({ issuer: ctx.idp.issuer, clientId: ctx.idp.clientId, clientSecret: ctx.idp.clientSecret, retryDelayMs: 10 });
    ctx.idp.failDiscovery(2);
    expect(obo.tokenEndpoint()).toBeNull();
    await expect(exchangeOboToken(user, 'a', 'api://one')).rejects.toMatchObject({
      message: expect.stringMatching(/^OpenID configuration not available: discovery at .* failed/),
      retryable: true,
    });
    expect(obo.tokenEndpoint()).toBeNull();
    await exchangeOboToken(user, 'a', 'api://one');
    expect(obo.tokenEndpoint()).toBe(ctx.idp.tokenEndpoint);
    await exchangeOboToken(user, 'a', 'api://two');
    expect(ctx.idp.discoveryRequests()).toHaveLength(3);
    expect(ctx.idp.tokenRequests()).toHaveLength(2);
  });

  it('reads LibreChat’s environment variables when not configured', async () => {
    const saved = { ...process.env };
    Object.assign(process.env, {
      OPENID_ISSUER: ctx.idp.issuer,
      OPENID_CLIENT_ID: ctx.idp.clientId,
      OPENID_CLIENT_SECRET: ctx.idp.clientSecret,
      OPENID_TOKEN_ENDPOINT_AUTH_METHOD: 'client_secret_post',
    });
    try {
      configure(null);
      const result = await exchangeOboToken(user, 'a', 'api://env');
      expect(result.access_token).toBe(ctx.idp.expectedToken('a', 'api://env'));
      expect(ctx.idp.discoveryRequests()).toHaveLength(1);
      expect(ctx.idp.tokenRequests()[0].form.client_secret).toBe(ctx.idp.clientSecret);
    } finally {
      process.env = saved;
    }
  });

  it('throws a TypeError naming the option, and keeps the configuration in force', async () => {
    const bad = [
      [{ clientSecret: 's' }, 'clientId'],
      [{ ...optionsFor(ctx.idp), timeoutMs: 'fast' }, 'timeoutMs'],
      [{ ...optionsFor(ctx.idp), timeoutMs: NaN }, 'timeoutMs'],
      [{ ...optionsFor(ctx.idp), maxRetries: -1 }, 'maxRetries'],
      [{ ...optionsFor(ctx.idp), maxCacheEntries: 0 }, 'maxCacheEntries'],
      [{ ...optionsFor(ctx.idp), expirySkewSeconds: 1.5 }, 'expirySkewSeconds'],
      [{ ...optionsFor(ctx.idp), tokenEndpointAuthMethod: 'tls_client_auth' }, 'tokenEndpointAuthMethod'],
      [{ ...optionsFor(ctx.idp), proxy: 'socks5://127.0.0.1:1' }, 'proxy'],
      [{ ...optionsFor(ctx.idp), clientTimeout: 5 }, 'clientTimeout'],
      [{ ...optionsFor(ctx.idp), retryDelayMs: () => 1 }, 'retryDelayMs'],
      [{ ...optionsFor(ctx.idp), maxRetries: 10n }, 'maxRetries'],
    ];
    for (const [options, option] of bad) {
      const thrown = thrownBy(() => configure(options));
      expect(thrown).toMatchObject({ name: 'TypeError', option, message: expect.stringContaining(option) });
    }
    expect(() => configure('https://issuer')).toThrow(TypeError);
    const result = await exchangeOboToken(user, 'a', 'api://kept');
    expect(result.access_token).toBe(ctx.idp.expectedToken('a', 'api://kept'));
  });

  it('takes null fields as defaults', async () => {
    configure({ ...optionsFor(ctx.idp), proxy: null, timeoutMs: undefined, maxRetries: null });
    await expect(exchangeOboToken(user, 'a', 'api://s')).resolves.toMatchObject({ token_type: 'Bearer' });
  });
});

describe('stats', () => {
  it('counts hits, misses, coalesced calls, exchanges, retries, failures, and HTTP requests under way', async () => {
    const before = stats();
    const user = { openidId: 'u-stats' };
    ctx.idp.enqueue({ hold: true });
    const calls = [1, 2, 3].map(() => exchangeOboToken(user, 'a', 'api://s'));
    await until(() => ctx.idp.heldCount() === 1);
    expect(stats().inFlight).toBe(1);
    ctx.idp.release();
    await Promise.all(calls);
    for (let i = 0; i < 5; i++) await exchangeOboToken(user, 'a', 'api://s');
    ctx.idp.enqueue({ status: 503, body: '' }, faults.invalidSignature());
    await settle(exchangeOboToken(user, 'a', 'api://other'));
    const after = stats();
    expect(after.cacheHits - before.cacheHits).toBe(5);
    expect(after.cacheMisses - before.cacheMisses).toBe(4);
    expect(after.coalesced - before.coalesced).toBe(2);
    expect(after.exchanges - before.exchanges).toBe(2);
    expect(after.retries - before.retries).toBe(1);
    expect(after.failures - before.failures).toBe(1);
    expect(after).toMatchObject({ cacheSize: 1, inFlight: 0 });
  });
});

describe('getGraphApiToken', () => {
  const user = { openidId: 'u-graph' };

  it('returns the same token as exchangeOboToken', async () => {
    const result = await getGraphApiToken(user, 'a', 'https://graph.microsoft.com/.default');
    expect(result).toEqual(tokenFor('a', 'https://graph.microsoft.com/.default'));
  });

  it('prefixes failures and keeps the cause', async () => {
    ctx.idp.enqueue(faults.consentRequired());
    const { error } = await settle(getGraphApiToken(user, 'a', 'https://graph.microsoft.com/.default'));
    expect(error.message).toMatch(/^Graph token acquisition failed: invalid_grant: AADSTS65001: /);
    expect(error.cause).toMatchObject({ status: 400, error_codes: [65001], oboFailureReason: 'exchange_failed' });
    expect(error).toMatchObject({ retryable: false, status: 400 });
    await expect(getGraphApiToken(null, 'a', 's')).rejects.toThrow(
      'Graph token acquisition failed: User must be authenticated via OpenID to perform OBO token exchange',
    );
  });
});

describe('memo', () => {
  it('counts a hit only for a call it answers', async () => {
    const user = { openidId: 'u-memo-count' };
    await exchangeOboToken(user, 'a', 'api://s');
    await exchangeOboToken(user, 'a', 'api://s');
    await exchangeOboToken(user, 'a', 'api://s');
    const before = stats().cacheHits;
    await expect(exchangeOboToken(user, 42, 'api://s')).rejects.toThrow(TypeError);
    await expect(exchangeOboToken(user, 'a', 'api://s', true, { tenantId: 1 })).rejects.toThrow(TypeError);
    await expect(exchangeOboToken(user, 'other-assertion', 'api://s', true, null)).resolves.toBeDefined();
    expect(stats().cacheHits).toBe(before);
    await exchangeOboToken(user, 'a', 'api://s');
    expect(stats().cacheHits).toBe(before + 1);
  });

  it('returns a fresh object on every hit, so a caller mutating it harms no one', async () => {
    const user = { openidId: 'u-memo-fresh' };
    await exchangeOboToken(user, 'a', 'api://s');
    const one = await exchangeOboToken(user, 'a', 'api://s');
    one.access_token = 'tampered';
    const two = await exchangeOboToken(user, 'a', 'api://s');
    const three = await exchangeOboToken(user, 'a', 'api://s');
    expect(two.access_token).toBe(ctx.idp.expectedToken('a', 'api://s'));
    expect(three).not.toBe(two);
    expect(three).toEqual(two);
  });
});
