'use strict';
/**
 * Long-running On-Behalf-Of sessions against the loopback provider, which
 * rotates refresh tokens and revokes the whole grant when a rotated token is
 * presented again: begin, serve, renew, rotate, force, concurrent callers,
 * invalid_grant, end, a provider without refresh tokens, a host store, and
 * secrets kept out of errors and logs.
 */
const { obo, until, untilExpired, optionsFor, useMockIdp, thrownBy } = require('./helpers');
const { startMockIdp } = require('../testing');

const { beginOboSession, acquireSessionToken, endOboSession, configure, clearCache, stats } = obo;

const ctx = useMockIdp();

const KEY = 'c0ffee'.repeat(10) + '0123';
const user = { openidId: 'agent-user-1' };
const scopes = 'api://downstream/Read';

const refreshRequests = () => ctx.idp.tokenRequests().filter((r) => r.form.grant_type === 'refresh_token');
const oboRequests = () => ctx.idp.tokenRequests().filter((r) => r.form.grant_type !== 'refresh_token');
const grant = () => ctx.idp.refreshGrants()[0];

/** A session whose access token can no longer be served (it lived one second, less than the expiry skew). */
async function staleSession(extra = {}) {
  ctx.idp.setExpiresIn(1);
  const begun = await beginOboSession({ assertion: 'user-assertion', scopes, user, ...extra });
  ctx.idp.setExpiresIn(3600);
  await untilExpired(begun.expires_at);
  return begun;
}

/** A session store in a Map, the way a host would keep one in its database. */
function mapStore() {
  const values = new Map();
  return {
    values,
    get: async (id) => (values.has(id) ? values.get(id).value : null),
    set: async (id, value, ttlMs) => {
      values.set(id, { value, ttlMs });
    },
    delete: async (id) => {
      values.delete(id);
    },
  };
}

describe('beginOboSession', () => {
  it('exchanges with offline_access added and keeps the refresh token to itself', async () => {
    const begun = await beginOboSession({ assertion: 'user-assertion', scopes, user });
    const [request] = oboRequests();
    expect(request.form.scope).toBe(`${scopes} offline_access`);
    expect(request.form.assertion).toBe('user-assertion');
    expect(Object.keys(begun).sort()).toEqual(['access_token', 'expires_at', 'expires_in', 'scope', 'sessionKey', 'token_type']);
    expect(begun).toMatchObject({ token_type: 'Bearer', expires_in: 3600, scope: scopes });
    expect(begun.access_token).toBe(ctx.idp.expectedToken('user-assertion', `${scopes} offline_access`));
    expect(Buffer.from(begun.sessionKey, 'base64url')).toHaveLength(32);
    expect(JSON.stringify(begun)).not.toContain('mock-rt.');
    expect(stats().sessions).toBe(1);
  });

  it('does not add offline_access twice, and uses a key the host gives', async () => {
    const begun = await beginOboSession({ assertion: 'user-assertion', scopes: ['offline_access', scopes], user, sessionKey: 'schedule-42' });
    expect(oboRequests()[0].form.scope).toBe(`offline_access ${scopes}`);
    expect(begun.sessionKey).toBe('schedule-42');
  });

  it('beginning again under the same key replaces the session', async () => {
    await beginOboSession({ assertion: 'first-assertion', scopes, user, sessionKey: 'job' });
    await beginOboSession({ assertion: 'second-assertion', scopes, user, sessionKey: 'job' });
    expect(stats().sessions).toBe(1);
    await acquireSessionToken({ sessionKey: 'job', scopes, forceRefresh: true });
    expect(ctx.idp.refreshGrants().map((g) => g.redemptions)).toEqual([0, 1]);
  });

  it('rejects without a refresh token, names offline_access, and keeps nothing', async () => {
    ctx.idp.setRefreshTokens(false);
    const failuresBefore = stats().sessionFailures;
    const err = await beginOboSession({ assertion: 'user-assertion', scopes, user, sessionKey: 'job' }).catch((e) => e);
    expect(err).toBeInstanceOf(Error);
    expect(err).toMatchObject({ oboFailureReason: 'no_refresh_token', retryable: false });
    expect(err.message).toContain('offline_access');
    expect(stats()).toMatchObject({ sessions: 0, sessionFailures: failuresBefore + 1 });
    await expect(acquireSessionToken({ sessionKey: 'job', scopes })).rejects.toMatchObject({ oboFailureReason: 'session_not_found' });
  });

  it('refuses bad arguments with a TypeError naming them', async () => {
    await expect(beginOboSession({ scopes, user })).rejects.toMatchObject({ name: 'TypeError', option: 'assertion' });
    await expect(beginOboSession({ assertion: 'a', scopes: '', user })).rejects.toMatchObject({ option: 'scopes' });
    await expect(beginOboSession({ assertion: 'a', scopes, user, sessionKey: 5 })).rejects.toMatchObject({ option: 'sessionKey' });
    await expect(beginOboSession({ assertion: 'a', scopes, user, signal: {} })).rejects.toMatchObject({ option: 'signal' });
    await expect(acquireSessionToken({ scopes })).rejects.toMatchObject({ name: 'TypeError', option: 'sessionKey' });
    await expect(endOboSession('')).rejects.toMatchObject({ name: 'TypeError', option: 'sessionKey' });
    expect(ctx.idp.tokenRequestCount()).toBe(0);
  });
});

describe('acquireSessionToken', () => {
  it('serves the session token while it is fresh, without a request', async () => {
    const begun = await beginOboSession({ assertion: 'user-assertion', scopes, user });
    const served = await acquireSessionToken({ sessionKey: begun.sessionKey, scopes });
    expect(served).toEqual({ access_token: begun.access_token, token_type: 'Bearer', expires_in: expect.any(Number), expires_at: begun.expires_at, scope: scopes });
    expect(ctx.idp.tokenRequestCount()).toBe(1);
  });

  it('renews after expiry with the refresh_token grant and the client authentication', async () => {
    const begun = await staleSession();
    const renewalsBefore = stats().sessionRenewals;
    const renewed = await acquireSessionToken({ sessionKey: begun.sessionKey, scopes });
    const [request] = refreshRequests();
    expect(request.form).toMatchObject({ grant_type: 'refresh_token', scope: `${scopes} offline_access` });
    expect(request.form.refresh_token).toMatch(/^mock-rt\./);
    expect(request.headers.authorization).toMatch(/^Basic /);
    expect(renewed.access_token).not.toBe(begun.access_token);
    expect(renewed.expires_in).toBe(3600);
    expect(stats().sessionRenewals).toBe(renewalsBefore + 1);
  });

  it('rotation: the next renewal presents the rotated refresh token', async () => {
    const begun = await staleSession();
    for (let n = 0; n < 3; n++) await acquireSessionToken({ sessionKey: begun.sessionKey, scopes, forceRefresh: true });
    const presented = refreshRequests().map((r) => r.form.refresh_token);
    expect(new Set(presented).size).toBe(3);
    expect(grant()).toMatchObject({ redemptions: 3, revoked: false, reuseDetected: false });
  });

  it('forceRefresh renews a fresh token', async () => {
    const begun = await beginOboSession({ assertion: 'user-assertion', scopes, user });
    const forced = await acquireSessionToken({ sessionKey: begun.sessionKey, scopes, forceRefresh: true });
    expect(forced.access_token).not.toBe(begun.access_token);
    expect(refreshRequests()).toHaveLength(1);
    // And the renewed token is served from then on.
    expect((await acquireSessionToken({ sessionKey: begun.sessionKey, scopes })).access_token).toBe(forced.access_token);
    expect(refreshRequests()).toHaveLength(1);
  });

  it('20 concurrent callers over several scopes on an expired session: no reuse, every caller served', async () => {
    const begun = await staleSession();
    const scopeSets = ['api://a/Read', 'api://b/Read', 'api://c/Read', scopes];
    const calls = Array.from({ length: 20 }, (_, n) => acquireSessionToken({ sessionKey: begun.sessionKey, scopes: scopeSets[n % 4] }));
    const results = await Promise.all(calls);
    results.forEach((result, n) => expect(result.scope).toBe(scopeSets[n % 4]));
    // One renewal per scope set, one at a time: each presents the token the one before it left.
    expect(refreshRequests().map((r) => r.form.scope).sort()).toEqual(scopeSets.map((s) => `${s} offline_access`).sort());
    expect(grant()).toMatchObject({ redemptions: 4, revoked: false, reuseDetected: false });
    for (let n = 0; n < 20; n++) expect(results[n].access_token).toBe(results[n % 4].access_token);
  });

  it('invalid_grant ends the session; then it is not found, without a request', async () => {
    const begun = await staleSession();
    ctx.idp.revokeRefreshTokens();
    const expired = await acquireSessionToken({ sessionKey: begun.sessionKey, scopes }).catch((e) => e);
    expect(expired).toMatchObject({ oboFailureReason: 'session_expired', retryable: false, error: 'invalid_grant', status: 400 });
    expect(expired.message).toContain('sign in again');
    const before = ctx.idp.tokenRequestCount();
    const gone = await acquireSessionToken({ sessionKey: begun.sessionKey, scopes }).catch((e) => e);
    expect(gone).toMatchObject({ oboFailureReason: 'session_not_found', retryable: false });
    expect(ctx.idp.tokenRequestCount()).toBe(before);
    expect(stats().sessions).toBe(0);
  });

  it('a transient failure is retryable and keeps the session', async () => {
    configure(optionsFor(ctx.idp, { maxRetries: 0 }));
    const begun = await staleSession();
    ctx.idp.enqueue({ status: 503, body: 'Service Unavailable', headers: { 'content-type': 'text/plain' } });
    await expect(acquireSessionToken({ sessionKey: begun.sessionKey, scopes })).rejects.toMatchObject({ retryable: true, status: 503 });
    expect(stats().sessions).toBe(1);
    await expect(acquireSessionToken({ sessionKey: begun.sessionKey, scopes })).resolves.toMatchObject({ scope: scopes });
    expect(grant()).toMatchObject({ redemptions: 1, revoked: false });
  });

  it('an unknown session is not found, without a request', async () => {
    await expect(acquireSessionToken({ sessionKey: 'never-begun', scopes })).rejects.toMatchObject({
      oboFailureReason: 'session_not_found',
      retryable: false,
    });
    expect(ctx.idp.tokenRequestCount()).toBe(0);
  });

  it('clearCache drops cached access tokens, not sessions', async () => {
    const begun = await beginOboSession({ assertion: 'user-assertion', scopes, user });
    clearCache();
    await expect(acquireSessionToken({ sessionKey: begun.sessionKey, scopes })).resolves.toMatchObject({ access_token: begun.access_token });
  });

  it('an aborted signal rejects at once without a request, and a renewal under way still serves the others', async () => {
    const begun = await staleSession();
    const before = ctx.idp.tokenRequestCount();
    const aborted = AbortSignal.abort();
    await expect(acquireSessionToken({ sessionKey: begun.sessionKey, scopes, signal: aborted })).rejects.toMatchObject({ name: 'AbortError' });
    expect(ctx.idp.tokenRequestCount()).toBe(before);

    ctx.idp.enqueue({ hold: true });
    const controller = new AbortController();
    const walkedAway = acquireSessionToken({ sessionKey: begun.sessionKey, scopes, signal: controller.signal });
    const stayed = acquireSessionToken({ sessionKey: begun.sessionKey, scopes });
    await until(() => ctx.idp.heldCount() === 1);
    controller.abort();
    await expect(walkedAway).rejects.toMatchObject({ name: 'AbortError' });
    ctx.idp.release();
    await expect(stayed).resolves.toMatchObject({ scope: scopes });
    expect(refreshRequests()).toHaveLength(1);
  });
});

describe('endOboSession', () => {
  it('deletes the session and says whether it existed', async () => {
    const begun = await beginOboSession({ assertion: 'user-assertion', scopes, user });
    await expect(endOboSession(begun.sessionKey)).resolves.toBe(true);
    await expect(endOboSession(begun.sessionKey)).resolves.toBe(false);
    await expect(acquireSessionToken({ sessionKey: begun.sessionKey, scopes })).rejects.toMatchObject({ oboFailureReason: 'session_not_found' });
    expect(stats().sessions).toBe(0);
  });
});

describe('clients', () => {
  it('a session belongs to the client that began it, and a closed client refuses session calls', async () => {
    const client = obo.createOboClient(optionsFor(ctx.idp));
    try {
      const begun = await client.beginOboSession({ assertion: 'user-assertion', scopes, user });
      expect(client.stats().sessions).toBe(1);
      expect(stats().sessions).toBe(0);
      await expect(acquireSessionToken({ sessionKey: begun.sessionKey, scopes })).rejects.toMatchObject({ oboFailureReason: 'session_not_found' });
      await expect(client.acquireSessionToken({ sessionKey: begun.sessionKey, scopes })).resolves.toMatchObject({ access_token: begun.access_token });
      await client.close();
      await expect(client.acquireSessionToken({ sessionKey: begun.sessionKey, scopes })).rejects.toMatchObject({ code: 'ERR_OBO_CLIENT_CLOSED' });
      await expect(client.endOboSession(begun.sessionKey)).rejects.toMatchObject({ code: 'ERR_OBO_CLIENT_CLOSED' });
    } finally {
      await client.close();
    }
  });
});

describe('token exchange', () => {
  it('a session begins with the configured grant (RFC 8693, its audience per call) and renews with the refresh_token grant', async () => {
    const keycloak = await startMockIdp({ tenant: 'keycloak', tokenExchange: { audiences: ['mcp-a', 'mcp-b'] } });
    try {
      configure({ ...optionsFor(keycloak), grantType: 'token-exchange', audience: 'mcp-a' });
      keycloak.setExpiresIn(1);
      const begun = await beginOboSession({ assertion: 'user-assertion', scopes, user, audience: 'mcp-b' });
      keycloak.setExpiresIn(3600);
      await untilExpired(begun.expires_at);
      const [exchange] = keycloak.tokenRequests();
      expect(exchange.form).toMatchObject({ grant_type: 'urn:ietf:params:oauth:grant-type:token-exchange', subject_token: 'user-assertion', scope: `${scopes} offline_access` });
      expect(exchange.audiences).toEqual(['mcp-b']);
      await expect(acquireSessionToken({ sessionKey: begun.sessionKey, scopes })).resolves.toMatchObject({ expires_in: 3600 });
      expect(keycloak.tokenRequests()[1].form.grant_type).toBe('refresh_token');
      // jwt-bearer takes no audience: a TypeError naming it, and no request.
      configure(optionsFor(ctx.idp));
      await expect(beginOboSession({ assertion: 'a', scopes, user, audience: 'mcp-a' })).rejects.toMatchObject({ name: 'TypeError', option: 'audience' });
      expect(ctx.idp.tokenRequestCount()).toBe(0);
    } finally {
      await keycloak.close();
    }
  });
});

describe('sessionStore', () => {
  it('a custom store survives a restart of the client, and holds neither the key nor the refresh token', async () => {
    const store = mapStore();
    configure(optionsFor(ctx.idp, { sessionStore: store, cacheEncryptionKey: KEY, sessionTtlMs: 86_400_000 }));
    ctx.idp.setExpiresIn(1);
    const sessionKey = 'schedule-7f3a-secret-key';
    const begun = await beginOboSession({ assertion: 'user-assertion', scopes, user, sessionKey });
    ctx.idp.setExpiresIn(3600);
    await untilExpired(begun.expires_at);
    expect(stats().sessions).toBe(0);
    expect(store.values.size).toBe(1);
    const [[id, { value, ttlMs }]] = store.values;
    expect(ttlMs).toBeGreaterThan(86_000_000);
    expect(ttlMs).toBeLessThanOrEqual(86_400_000);

    // The client restarts: a new configuration, the same store.
    configure(optionsFor(ctx.idp, { sessionStore: store, cacheEncryptionKey: KEY }));
    const renewed = await acquireSessionToken({ sessionKey, scopes });
    expect(renewed.expires_in).toBe(3600);
    const refreshTokens = refreshRequests().map((r) => r.form.refresh_token);
    expect(refreshTokens).toHaveLength(1);
    for (const secret of [sessionKey, ...refreshTokens]) {
      for (const form of [secret, Buffer.from(secret).toString('base64'), Buffer.from(secret).toString('base64url')]) {
        for (const [storedId, stored] of store.values) {
          expect(storedId).not.toContain(form);
          expect(stored.value).not.toContain(form);
        }
        expect(id).not.toContain(form);
        expect(value).not.toContain(form);
      }
    }
    // Another key cannot read it.
    configure(optionsFor(ctx.idp, { sessionStore: store, cacheEncryptionKey: 'ab'.repeat(32) }));
    await expect(acquireSessionToken({ sessionKey, scopes })).rejects.toMatchObject({ oboFailureReason: 'session_not_found' });
    configure(optionsFor(ctx.idp, { sessionStore: store, cacheEncryptionKey: KEY }));
    await expect(endOboSession(sessionKey)).resolves.toBe(true);
    expect(store.values.size).toBe(0);
  });

  it('a custom store requires cacheEncryptionKey, and must have get, set and delete', () => {
    const err = thrownBy(() => configure(optionsFor(ctx.idp, { sessionStore: mapStore() })));
    expect(err).toBeInstanceOf(TypeError);
    expect(err.option).toBe('cacheEncryptionKey');
    const { get, set } = mapStore();
    const incomplete = thrownBy(() => configure(optionsFor(ctx.idp, { sessionStore: { get, set }, cacheEncryptionKey: KEY })));
    expect(incomplete).toMatchObject({ name: 'TypeError', option: 'sessionStore' });
    expect(incomplete.message).toContain('delete');
    expect(thrownBy(() => configure(optionsFor(ctx.idp, { sessionTtlMs: 0 })))).toMatchObject({ option: 'sessionTtlMs' });
  });

  it('a store that fails is a retryable error, never a missing session', async () => {
    const store = mapStore();
    configure(optionsFor(ctx.idp, { sessionStore: store, cacheEncryptionKey: KEY }));
    const begun = await beginOboSession({ assertion: 'user-assertion', scopes, user });
    store.get = async () => {
      throw new Error('database offline');
    };
    const err = await acquireSessionToken({ sessionKey: begun.sessionKey, scopes }).catch((e) => e);
    expect(err).toMatchObject({ retryable: true, oboFailureReason: 'exchange_failed' });
    expect(err.message).toContain('database offline');
  });
});

describe('secrets', () => {
  it('the refresh token and the session key appear in no error, log line or stats', async () => {
    const lines = [];
    const logger = Object.fromEntries(
      ['debug', 'info', 'warn', 'error'].map((level) => [level, (message, error) => lines.push(`${message} ${error ? `${error.message} ${JSON.stringify(error)}` : ''}`)]),
    );
    configure(optionsFor(ctx.idp, { logger, maxRetries: 0 }));
    const sessionKey = 'job-key-that-is-a-secret';
    await staleSession({ sessionKey });
    await acquireSessionToken({ sessionKey, scopes });
    // The provider echoes the refresh token it received.
    ctx.idp.enqueue({ status: 400, body: (entry) => ({ error: 'invalid_request', error_description: `bad refresh token ${entry.form.refresh_token}` }) });
    const err = await acquireSessionToken({ sessionKey, scopes, forceRefresh: true }).catch((e) => e);
    expect(err.error).toBe('invalid_request');
    ctx.idp.revokeRefreshTokens();
    const expired = await acquireSessionToken({ sessionKey, scopes, forceRefresh: true }).catch((e) => e);
    expect(expired.oboFailureReason).toBe('session_expired');
    const refreshTokens = refreshRequests().map((r) => r.form.refresh_token);
    expect(refreshTokens.length).toBeGreaterThanOrEqual(3);
    const texts = [...lines, err.message, JSON.stringify(err), expired.message, JSON.stringify(expired), JSON.stringify(stats())];
    expect(lines.some((line) => line.includes('Renewing OBO session for user: agent-user-1'))).toBe(true);
    for (const text of texts) {
      expect(text).not.toContain(sessionKey);
      for (const token of refreshTokens) expect(text).not.toContain(token);
    }
  });
});
