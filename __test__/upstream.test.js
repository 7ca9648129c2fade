'use strict';
/**
 * LibreChat's service as it runs today (../shared/reference/UPSTREAM.md): the
 * identity context, assertion-bound keys, `expires_at`, and the argument
 * semantics of the reference. The six cases upstream's spec adds come first,
 * under their titles word for word; upstream checks the key handed to a mocked
 * cache, so these check what can be observed instead: separate requests,
 * separate tokens, and `buildOboCacheKey`'s output.
 */
const crypto = require('node:crypto');
const { obo, until, optionsFor, useMockIdp, settle, textsOf } = require('./helpers');
const { faults } = require('../testing');

const { exchangeOboToken, getGraphApiToken, configure, clearCache, stats, __internals } = obo;
const { buildOboCacheKey } = __internals;

const ctx = useMockIdp();

const SCOPES = 'api://mcp-server/Tools.Call';
const mockUser = {
  openidId: 'oidc-sub-123',
  tenantId: 'tenant-a',
  openidIssuer: 'https://issuer-a.example.com',
  email: 'test@example.com',
  name: 'Test User',
};
const sha256hex = (text) => crypto.createHash('sha256').update(text).digest('hex');

/** Answers each token request with `token-<n>`, n counting from 1, and records the assertion it was for. */
function numberTokens(idp, expiresIn = 3600) {
  idp.setResponder((record) => ({
    body: { token_type: 'Bearer', access_token: `token-${idp.tokenRequests().indexOf(record) + 1}`, expires_in: expiresIn },
  }));
}

const assertionsSent = () => ctx.idp.tokenRequests().map((request) => request.form.assertion);

beforeEach(() => numberTokens(ctx.idp));

describe('OboTokenService (LibreChat today)', () => {
  it('does not include the raw upstream assertion in cache keys', async () => {
    const assertion = 'eyJhbGciOiJSUzI1NiJ9.raw-upstream-assertion.signature';
    const key = buildOboCacheKey({ user: mockUser, accessToken: assertion, scopes: SCOPES });
    expect(key).toBe(['tenant-a', 'https://issuer-a.example.com', 'oidc-sub-123', SCOPES, sha256hex(assertion)].join('\x1f'));
    expect(key).not.toContain(assertion);
    expect(key).not.toContain('raw-upstream-assertion');
    // Nor does anything the package exposes about its cache.
    await exchangeOboToken(mockUser, assertion, SCOPES, true, {});
    expect(JSON.stringify(stats())).not.toContain('raw-upstream-assertion');
  });

  it('should use different cache keys for different tenants with the same OpenID subject', async () => {
    const tenantA = { openidSubject: 'shared-sub', tenantId: 'tenant-a', openidIssuer: 'https://issuer.example.com' };
    const tenantB = { ...tenantA, tenantId: 'tenant-b' };
    const keyA = buildOboCacheKey({ user: mockUser, accessToken: 'access-token', scopes: SCOPES, identityContext: tenantA });
    const keyB = buildOboCacheKey({ user: mockUser, accessToken: 'access-token', scopes: SCOPES, identityContext: tenantB });
    expect(keyA).not.toBe(keyB);
    expect(keyA.startsWith('tenant-a\x1fhttps://issuer.example.com\x1fshared-sub\x1f')).toBe(true);
    expect(keyB.startsWith('tenant-b\x1fhttps://issuer.example.com\x1fshared-sub\x1f')).toBe(true);

    const a = await exchangeOboToken(mockUser, 'access-token', SCOPES, true, tenantA);
    const b = await exchangeOboToken(mockUser, 'access-token', SCOPES, true, tenantB);
    expect(a.access_token).toBe('token-1');
    expect(b.access_token).toBe('token-2');
    expect(ctx.idp.tokenRequests()).toHaveLength(2);
    // Each tenant keeps its own token.
    expect((await exchangeOboToken(mockUser, 'access-token', SCOPES, true, tenantA)).access_token).toBe('token-1');
    expect((await exchangeOboToken(mockUser, 'access-token', SCOPES, true, tenantB)).access_token).toBe('token-2');
    expect(ctx.idp.tokenRequests()).toHaveLength(2);
  });

  it('should use identity context when the forwarded user lacks OpenID fields', async () => {
    const safeUser = { id: 'app-user-1', email: 'test@example.com' };
    const identityContext = {
      appUserId: 'app-user-1',
      openidSubject: 'context-sub',
      tenantId: 'tenant-a',
      openidIssuer: 'https://issuer-a.example.com',
    };
    expect(buildOboCacheKey({ user: safeUser, accessToken: 'access-token', scopes: SCOPES, identityContext })).toBe(
      ['tenant-a', 'https://issuer-a.example.com', 'context-sub', SCOPES, sha256hex('access-token')].join('\x1f'),
    );
    const result = await exchangeOboToken(safeUser, 'access-token', SCOPES, true, identityContext);
    expect(result).toMatchObject({ access_token: 'token-1', token_type: 'Bearer', scope: SCOPES });
    expect(ctx.idp.tokenRequests()).toHaveLength(1);
    // Without the context, the same user is not authenticated via OpenID.
    await expect(exchangeOboToken(safeUser, 'access-token', SCOPES)).rejects.toThrow(
      'User must be authenticated via OpenID to perform OBO token exchange',
    );
  });

  it('should use different cache keys for different issuers with the same OpenID subject', async () => {
    const issuerA = { openidSubject: 'shared-sub', tenantId: 'tenant-a', openidIssuer: 'https://issuer-a.example.com' };
    const issuerB = { ...issuerA, openidIssuer: 'https://issuer-b.example.com' };
    const keyA = buildOboCacheKey({ user: mockUser, accessToken: 'access-token', scopes: SCOPES, identityContext: issuerA });
    const keyB = buildOboCacheKey({ user: mockUser, accessToken: 'access-token', scopes: SCOPES, identityContext: issuerB });
    expect(keyA).not.toBe(keyB);
    const a = await exchangeOboToken(mockUser, 'access-token', SCOPES, true, issuerA);
    const b = await exchangeOboToken(mockUser, 'access-token', SCOPES, true, issuerB);
    expect([a.access_token, b.access_token]).toEqual(['token-1', 'token-2']);
    expect(ctx.idp.tokenRequests()).toHaveLength(2);
  });

  it('should use different cache keys when the upstream assertion rotates', async () => {
    const keyOld = buildOboCacheKey({ user: mockUser, accessToken: 'access-token-old', scopes: SCOPES });
    const keyNew = buildOboCacheKey({ user: mockUser, accessToken: 'access-token-new', scopes: SCOPES });
    expect(keyOld).not.toBe(keyNew);
    expect(keyOld.split('\x1f').slice(0, 4)).toEqual(keyNew.split('\x1f').slice(0, 4));

    const old = await exchangeOboToken(mockUser, 'access-token-old', SCOPES);
    const rotated = await exchangeOboToken(mockUser, 'access-token-new', SCOPES);
    expect([old.access_token, rotated.access_token]).toEqual(['token-1', 'token-2']);
    expect(assertionsSent()).toEqual(['access-token-old', 'access-token-new']);
    // The old key's entry stays valid until it expires.
    expect((await exchangeOboToken(mockUser, 'access-token-old', SCOPES)).access_token).toBe('token-1');
    expect((await exchangeOboToken(mockUser, 'access-token-new', SCOPES)).access_token).toBe('token-2');
    expect(ctx.idp.tokenRequests()).toHaveLength(2);
  });

  it('does not coalesce exchanges for rotated upstream assertions', async () => {
    ctx.idp.enqueue({ hold: true }, { hold: true });
    const coalescedBefore = stats().coalesced;
    const old = exchangeOboToken(mockUser, 'access-token-old', SCOPES, true, {});
    const rotated = exchangeOboToken(mockUser, 'access-token-new', SCOPES, true, {});
    await until(() => ctx.idp.heldCount() === 2);
    expect(stats().coalesced - coalescedBefore).toBe(0);
    ctx.idp.release();
    const [a, b] = await Promise.all([old, rotated]);
    expect(new Set([a.access_token, b.access_token])).toEqual(new Set(['token-1', 'token-2']));
    expect(assertionsSent().sort()).toEqual(['access-token-new', 'access-token-old']);
  });
});

describe('identity context', () => {
  it('builds the identity from the context first, then the user, then the defaults, trimmed', () => {
    const key = (user, identityContext) =>
      buildOboCacheKey({ user, accessToken: 'a', scopes: 's', identityContext })?.split('\x1f').slice(0, 3);
    expect(key({ openidId: 'u' })).toEqual(['no-tenant', 'no-issuer', 'u']);
    expect(key({ openidId: ' u ', tenantId: '  ', openidIssuer: '' })).toEqual(['no-tenant', 'no-issuer', 'u']);
    expect(key({ openidId: 'u', tenantId: 't', openidIssuer: 'https://i' }, { tenantId: ' ctx-t ' })).toEqual([
      'ctx-t',
      'https://i',
      'u',
    ]);
    expect(key({ openidId: 'u' }, { openidSubject: '   ' })).toEqual(['no-tenant', 'no-issuer', 'u']);
    expect(key(null, { openidSubject: 'from-context' })).toEqual(['no-tenant', 'no-issuer', 'from-context']);
    expect(key('a string user', { openidSubject: 's' })).toEqual(['no-tenant', 'no-issuer', 's']);
    expect(key({ email: 'x' })).toBeUndefined();
    expect(buildOboCacheKey({ user: { email: 'x' }, accessToken: 'a', scopes: 's' })).toBeNull();
  });

  it('normalises the issuer: trailing slashes and the discovery path go', () => {
    const issuerOf = (openidIssuer) =>
      buildOboCacheKey({ user: { openidId: 'u', openidIssuer }, accessToken: 'a', scopes: 's' }).split('\x1f')[1];
    expect(issuerOf('https://login.example.com/t/v2.0/')).toBe('https://login.example.com/t/v2.0');
    expect(issuerOf('https://login.example.com/t/v2.0///')).toBe('https://login.example.com/t/v2.0');
    expect(issuerOf(' https://login.example.com/t/v2.0/.well-known/openid-configuration ')).toBe(
      'https://login.example.com/t/v2.0',
    );
    expect(issuerOf('https://login.example.com/t/v2.0/.well-known/openid-configuration/')).toBe(
      'https://login.example.com/t/v2.0',
    );
    expect(issuerOf('https://login.example.com/t/v2.0')).toBe('https://login.example.com/t/v2.0');
    expect(issuerOf('https://login.example.com/openid-configuration')).toBe('https://login.example.com/openid-configuration');
  });

  it('serves one token to spellings of the same issuer, and keeps tenants apart in the exchange itself', async () => {
    const context = { openidSubject: 'shared-sub', tenantId: 'tenant-a', openidIssuer: 'https://issuer.example.com' };
    const first = await exchangeOboToken(null, 'access-token', SCOPES, true, context);
    const again = await exchangeOboToken(null, 'access-token', SCOPES, true, {
      ...context,
      openidIssuer: 'https://issuer.example.com/.well-known/openid-configuration',
    });
    expect(again.access_token).toBe(first.access_token);
    expect(ctx.idp.tokenRequests()).toHaveLength(1);
  });

  it('rejects identity fields that are not strings, naming the field, without a request or a synchronous throw', async () => {
    const cases = [
      [mockUser, { tenantId: 42 }, /identityContext\.tenantId must be a string, not a number/],
      [mockUser, { openidIssuer: {} }, /identityContext\.openidIssuer must be a string, not an object/],
      [mockUser, { openidSubject: ['x'] }, /identityContext\.openidSubject must be a string, not an array/],
      [{ openidId: 'u', tenantId: true }, undefined, /user\.tenantId must be a string, not a boolean/],
      [{ openidId: 'u', openidIssuer: 7 }, {}, /user\.openidIssuer must be a string, not a number/],
      [mockUser, 'tenant-a', /identityContext must be an object, not a string/],
    ];
    for (const [user, context, message] of cases) {
      let promise;
      expect(() => {
        promise = exchangeOboToken(user, 'access-token', SCOPES, true, context);
      }).not.toThrow();
      await expect(promise).rejects.toMatchObject({ name: 'TypeError', message: expect.stringMatching(message) });
    }
    expect(() => buildOboCacheKey({ user: mockUser, accessToken: 'a', scopes: 's', identityContext: { tenantId: 1 } })).toThrow(
      TypeError,
    );
    expect(ctx.idp.tokenRequests()).toHaveLength(0);
  });

  it('treats a user that is not an object as unauthenticated, with the reference message', async () => {
    for (const user of ['oidc-sub-123', 42, true]) {
      const { error } = await settle(exchangeOboToken(user, 'access-token', SCOPES));
      expect(error).toBeInstanceOf(Error);
      expect(error).not.toBeInstanceOf(TypeError);
      expect(error.message).toBe('User must be authenticated via OpenID to perform OBO token exchange');
    }
    expect(ctx.idp.tokenRequests()).toHaveLength(0);
  });

  it('logs the subject as the user id', async () => {
    const lines = [];
    const logger = Object.fromEntries(['debug', 'info', 'warn', 'error'].map((level) => [level, (m) => lines.push(m)]));
    configure(optionsFor(ctx.idp, { logger }));
    numberTokens(ctx.idp);
    await exchangeOboToken({ openidId: 'user-field' }, 'access-token', SCOPES, true, { openidSubject: 'ctx-subject' });
    expect(lines[0]).toBe(`[OboTokenService] Requesting new OBO token for user: ctx-subject, scopes: ${SCOPES}`);
    expect(lines.join('\n')).not.toContain('user-field');
  });
});

describe('assertion-bound cache and memo', () => {
  it('never serves one assertion\'s token to a call carrying another, from the memo or the native cache', async () => {
    const user = { openidId: 'memo-user' };
    for (let i = 0; i < 3; i++) {
      expect((await exchangeOboToken(user, 'assertion-one', SCOPES)).access_token).toBe('token-1');
    }
    expect(__internals.memoStats().entries).toBe(1);
    // Any other string with the same subject: its own exchange.
    expect((await exchangeOboToken(user, 'forged-assertion', SCOPES)).access_token).toBe('token-2');
    expect(assertionsSent()).toEqual(['assertion-one', 'forged-assertion']);
    // Alternating assertions: each answered with its own token, from the memo or the native cache.
    for (let i = 0; i < 4; i++) {
      expect((await exchangeOboToken(user, 'assertion-one', SCOPES)).access_token).toBe('token-1');
      expect((await exchangeOboToken(user, 'forged-assertion', SCOPES)).access_token).toBe('token-2');
    }
    // An equal string built at run time is the same assertion.
    expect((await exchangeOboToken(user, ['assertion', 'one'].join('-'), SCOPES)).access_token).toBe('token-1');
    expect(ctx.idp.tokenRequests()).toHaveLength(2);
  });

  it('keeps tenants apart in the memo too', async () => {
    const a = { openidSubject: 'shared-sub', tenantId: 'tenant-a' };
    const b = { openidSubject: 'shared-sub', tenantId: 'tenant-b' };
    for (let i = 0; i < 3; i++) {
      expect((await exchangeOboToken(null, 'access-token', SCOPES, true, a)).access_token).toBe('token-1');
    }
    expect((await exchangeOboToken(null, 'access-token', SCOPES, true, b)).access_token).toBe('token-2');
    for (let i = 0; i < 3; i++) {
      expect((await exchangeOboToken(null, 'access-token', SCOPES, true, a)).access_token).toBe('token-1');
      expect((await exchangeOboToken(null, 'access-token', SCOPES, true, b)).access_token).toBe('token-2');
    }
    expect(ctx.idp.tokenRequests()).toHaveLength(2);
  });

  it('calls on one thread join its exchange under way: one request, each caller its own result or error', async () => {
    const before = stats().coalesced;
    ctx.idp.enqueue({ ...faults.invalidSignature(), hold: true });
    const failing = Array.from({ length: 5 }, () => settle(exchangeOboToken(mockUser, 'joined-assertion', SCOPES, true, {})));
    await until(() => ctx.idp.heldCount() === 1);
    expect(stats().coalesced - before).toBe(4);
    ctx.idp.release();
    const errors = (await Promise.all(failing)).map(({ error }) => error);
    expect(new Set(errors).size).toBe(5);
    for (const error of errors) expect(error).toMatchObject({ error: 'invalid_grant', oboFailureReason: 'exchange_failed' });

    ctx.idp.enqueue({ hold: true });
    const joined = Array.from({ length: 5 }, () => exchangeOboToken(mockUser, 'joined-assertion', SCOPES, true, {}));
    await until(() => ctx.idp.heldCount() === 1);
    ctx.idp.release();
    const results = await Promise.all(joined);
    expect(new Set(results).size).toBe(5);
    expect(new Set(results.map((result) => result.access_token))).toEqual(new Set(['token-2']));
    expect(ctx.idp.tokenRequests()).toHaveLength(2);
    expect(stats().coalesced - before).toBe(8);
  });

  it('a rotated assertion is never joined to the old assertion\'s failing flight', async () => {
    ctx.idp.enqueue({ ...faults.assertionExpired(), hold: true });
    const old = settle(exchangeOboToken(mockUser, 'access-token-old', SCOPES));
    await until(() => ctx.idp.heldCount() === 1);
    const fresh = exchangeOboToken(mockUser, 'access-token-new', SCOPES);
    await until(() => ctx.idp.tokenRequests().length === 2);
    ctx.idp.release();
    const { error } = await old;
    expect(error.message).toMatch(/AADSTS500133/);
    expect((await fresh).access_token).toBe('token-2');
  });
});

describe('expires_at', () => {
  it('is returned to calls made with an identity context, and a hit reports the original expiry', async () => {
    const before = Date.now();
    const first = await exchangeOboToken(mockUser, 'access-token', SCOPES, true, {});
    const after = Date.now();
    expect(Object.keys(first)).toEqual(['access_token', 'token_type', 'expires_in', 'expires_at', 'scope']);
    expect(first.expires_at).toBeGreaterThanOrEqual(before + 3600_000);
    expect(first.expires_at).toBeLessThanOrEqual(after + 3600_000);
    // The native lookup, then the memo: the same absolute expiry.
    for (let i = 0; i < 3; i++) {
      expect((await exchangeOboToken(mockUser, 'access-token', SCOPES, true, {})).expires_at).toBe(first.expires_at);
    }
    expect(ctx.idp.tokenRequests()).toHaveLength(1);
  });

  it('keeps the first version\'s exact four-field shape for four-argument calls', async () => {
    for (let i = 0; i < 3; i++) {
      const result = await exchangeOboToken(mockUser, 'access-token', SCOPES);
      expect(Object.keys(result)).toEqual(['access_token', 'token_type', 'expires_in', 'scope']);
    }
    const nulled = await exchangeOboToken(mockUser, 'access-token', SCOPES, true, null);
    expect(Object.keys(nulled)).toEqual(['access_token', 'token_type', 'expires_in', 'scope']);
  });

  it('getGraphApiToken passes the identity context on', async () => {
    const graph = await getGraphApiToken(mockUser, 'access-token', 'https://graph.microsoft.com/.default', true, {
      tenantId: 'graph-tenant',
    });
    expect(graph.expires_at).toEqual(expect.any(Number));
    expect(buildOboCacheKey({ user: mockUser, accessToken: 'x', scopes: 's', identityContext: { tenantId: 'graph-tenant' } })).toMatch(
      /^graph-tenant\x1f/,
    );
  });
});

describe('expires_in as upstream normalises it', () => {
  it.each([
    [0, 1],
    [-30, 1],
    ['-5', 1],
    [0.4, 1],
    ['1800', 1800],
    [1799.9, 1799],
    ['soon', 3600],
    [undefined, 3600],
    [1e12, 86_400],
  ])('expires_in %p becomes %p', async (sent, expected) => {
    numberTokens(ctx.idp, sent);
    const result = await exchangeOboToken(mockUser, 'access-token', SCOPES, true, {});
    expect(result.expires_in).toBe(expected);
  });
});

describe('fromCache by truthiness', () => {
  it.each([[null], [0], [''], [false]])('%p bypasses the cache and the in-flight exchanges', async (fromCache) => {
    await exchangeOboToken(mockUser, 'access-token', SCOPES);
    const forced = await exchangeOboToken(mockUser, 'access-token', SCOPES, fromCache);
    expect(forced.access_token).toBe('token-2');
    expect(ctx.idp.tokenRequests()).toHaveLength(2);
    // ... and still writes the cache.
    expect((await exchangeOboToken(mockUser, 'access-token', SCOPES)).access_token).toBe('token-2');
  });

  it.each([[1], ['yes'], [{}], [true], [undefined]])('%p uses the cache', async (fromCache) => {
    await exchangeOboToken(mockUser, 'access-token', SCOPES);
    const cached = await exchangeOboToken(mockUser, 'access-token', SCOPES, fromCache);
    expect(cached.access_token).toBe('token-1');
    expect(ctx.idp.tokenRequests()).toHaveLength(1);
  });
});

describe('the raw assertion stays out of everything the package exposes', () => {
  it('is absent from errors, logs and stats', async () => {
    const assertion = 'eyJ0eXAiOiJKV1QifQ.upstream-secret-assertion.sig';
    const lines = [];
    const logger = Object.fromEntries(['debug', 'info', 'warn', 'error'].map((level) => [level, (...args) => lines.push(args)]));
    configure(optionsFor(ctx.idp, { logger }));
    ctx.idp.enqueue(faults.invalidSignature());
    const { error } = await settle(exchangeOboToken(mockUser, assertion, SCOPES, true, {}));
    const texts = [...textsOf(error), ...lines.flatMap((args) => args.flatMap((arg) => textsOf(arg))), JSON.stringify(stats())];
    for (const text of texts) expect(text).not.toContain('upstream-secret-assertion');
    clearCache();
  });
});
