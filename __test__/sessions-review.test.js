'use strict';
/**
 * Findings of the review of long-running sessions, one describe per point:
 * a session call retries as an exchange does (never a host function's
 * failure); a renewal is not sent again once the provider may have seen it;
 * a configure() does not let a second renewal of a session start beside one
 * under way, nor forget a renewal the store would not take; a session begun
 * at the user's home tenant renews there.
 */
const { startMockIdp } = require('../testing');
const { obo, until, optionsFor, useMockIdp, settle } = require('./helpers');

const { beginOboSession, acquireSessionToken } = obo;
const user = { openidId: 'agent-review' };
const scopes = 'api://downstream/Read';

describe('1. a clientAssertion function that fails a session call is called once, and is retryable only by its own word', () => {
  const context = useMockIdp({ acceptClientAssertion: (assertion) => (assertion.startsWith('workload.') ? true : undefined) });
  let vault;
  let calls;
  beforeEach(() => {
    calls = 0;
    vault = async () => 'workload.session-assertion';
    obo.configure({
      tokenEndpoint: context.idp.tokenEndpoint,
      clientId: context.idp.clientId,
      retryDelayMs: 20,
      timeoutMs: 200,
      clientAssertion: () => {
        calls += 1;
        return vault();
      },
    });
  });

  const failures = [
    ['never settles', () => new Promise(() => {}), 'did not settle within 200 ms'],
    ['throws { retryable: false, message: "timed out" }', async () => Promise.reject(Object.assign(new Error('timed out'), { retryable: false })), 'timed out'],
  ];

  test.each(failures)('beginOboSession, when the function %s', async (_, failing, message) => {
    vault = failing;
    const { error } = await settle(beginOboSession({ assertion: 'user-assertion', scopes, user }));
    expect(error).toMatchObject({ code: 'ECLIENTASSERTION', retryable: false });
    expect(error.message).toContain(message);
    expect(calls).toBe(1);
    expect(context.idp.tokenRequestCount()).toBe(0);
  });

  test.each(failures)('acquireSessionToken, when the function %s', async (_, failing, message) => {
    const { sessionKey } = await beginOboSession({ assertion: 'user-assertion', scopes, user });
    const [requestsBefore, callsBefore] = [context.idp.tokenRequestCount(), calls];
    vault = failing;
    const { error } = await settle(acquireSessionToken({ sessionKey, scopes, forceRefresh: true }));
    expect(error).toMatchObject({ code: 'ECLIENTASSERTION', retryable: false });
    expect(error.message).toContain(message);
    expect(calls - callsBefore).toBe(1);
    expect(context.idp.tokenRequestCount()).toBe(requestsBefore);
  });
});

describe('2. a renewal is sent again only when it never reached the provider', () => {
  const context = useMockIdp({}, { retryDelayMs: 20, timeoutMs: 300 });
  const refreshRequests = () => context.idp.tokenRequests().filter((r) => r.form.grant_type === 'refresh_token');

  test.each([
    ['answers HTTP 500', { status: 500, body: 'upstream failed' }],
    ['answers HTTP 502 with an OAuth error', { status: 502, body: { error: 'server_error', error_description: 'bad gateway' } }],
    ['does not answer within timeoutMs', { hang: true }],
  ])('when the provider %s: sent once, retryable, the session kept; the caller\'s retry renews with the same refresh token', async (_, fault) => {
    const { sessionKey } = await beginOboSession({ assertion: 'user-assertion', scopes, user });
    context.idp.enqueue(fault);
    const { error } = await settle(acquireSessionToken({ sessionKey, scopes, forceRefresh: true }));
    expect(error).toMatchObject({ oboFailureReason: 'exchange_failed', retryable: true });
    expect(refreshRequests()).toHaveLength(1);
    const renewed = await acquireSessionToken({ sessionKey, scopes, forceRefresh: true });
    expect(renewed.access_token).toEqual(expect.any(String));
    const presented = refreshRequests().map((r) => r.form.refresh_token);
    expect(presented).toHaveLength(2);
    expect(presented[1]).toBe(presented[0]);
    expect(context.idp.refreshGrants()[0]).toMatchObject({ redemptions: 1, revoked: false, reuseDetected: false });
  });

  test('an outright refusal (503 with an OAuth error) is sent again, and renews', async () => {
    const { sessionKey } = await beginOboSession({ assertion: 'user-assertion', scopes, user });
    context.idp.enqueue({ status: 503, body: { error: 'temporarily_unavailable', error_description: 'try later' } });
    await acquireSessionToken({ sessionKey, scopes, forceRefresh: true });
    expect(refreshRequests()).toHaveLength(2);
    expect(context.idp.refreshGrants()[0]).toMatchObject({ redemptions: 1, revoked: false });
  });
});

describe('3. configure() keeps the sessions\' locks and unsaved renewals (a host store, no Redis)', () => {
  const context = useMockIdp();
  const KEY = 'c0ffee'.repeat(10) + '0123';
  const refreshRequests = () => context.idp.tokenRequests().filter((r) => r.form.grant_type === 'refresh_token');
  let store;
  const withStore = () => optionsFor(context.idp, { sessionStore: store, cacheEncryptionKey: KEY });
  beforeEach(() => {
    const values = new Map();
    store = {
      get: async (id) => values.get(id) ?? null,
      set: async (id, value) => {
        values.set(id, value);
      },
      delete: async (id) => values.delete(id),
    };
    obo.configure(withStore());
  });

  test('a renewal under way when configure() is called is not joined by a second redemption of its refresh token', async () => {
    const { sessionKey } = await beginOboSession({ assertion: 'user-assertion', scopes, user });
    // The renewal's write to the host's database is slow: the provider has rotated the refresh token, the store still has the old one.
    const set = store.set;
    let commit;
    store.set = (id, value) => new Promise((resolve) => {
      commit = () => set(id, value).then(resolve);
    });
    const first = acquireSessionToken({ sessionKey, scopes, forceRefresh: true });
    await until(() => commit !== undefined);
    store.set = set;
    obo.configure(withStore());
    let reads = 0;
    const get = store.get;
    store.get = (id) => {
      reads += 1;
      return get(id);
    };
    // Other scopes: it reads the session, finds no token for them, and must wait for the renewal under way.
    const second = acquireSessionToken({ sessionKey, scopes: 'api://other/Read' });
    await until(() => reads > 0);
    commit();
    const results = await Promise.all([settle(first), settle(second)]);
    expect(results.map((result) => result.error)).toEqual([undefined, undefined]);
    const presented = refreshRequests().map((r) => r.form.refresh_token);
    expect(presented).toHaveLength(2);
    expect(presented[1]).not.toBe(presented[0]);
    expect(context.idp.refreshGrants()[0]).toMatchObject({ redemptions: 2, revoked: false, reuseDetected: false });
  });

  test('a renewal the store would not take is renewed from, not the spent token, after configure()', async () => {
    const { sessionKey } = await beginOboSession({ assertion: 'user-assertion', scopes, user });
    const set = store.set;
    store.set = async () => {
      throw new Error('database offline');
    };
    await acquireSessionToken({ sessionKey, scopes, forceRefresh: true });
    store.set = set;
    obo.configure(withStore());
    const { error } = await settle(acquireSessionToken({ sessionKey, scopes, forceRefresh: true }));
    expect(error).toBeUndefined();
    const presented = refreshRequests().map((r) => r.form.refresh_token);
    expect(presented).toHaveLength(2);
    expect(presented[1]).not.toBe(presented[0]);
    expect(context.idp.refreshGrants()[0]).toMatchObject({ redemptions: 2, revoked: false, reuseDetected: false });
  });
});

describe('5. a session begun at the user\'s home tenant renews there', () => {
  const TENANT_ID = '72f988bf-86f1-41af-91ab-2d7cd011db47';
  const encode = (value) => Buffer.from(JSON.stringify(value)).toString('base64url');
  const assertion = `${encode({ typ: 'JWT', alg: 'RS256' })}.${encode({ tid: TENANT_ID, oid: 'user-oid' })}.c2lnbmF0dXJl`;
  let idp;
  beforeAll(async () => {
    idp = await startMockIdp({ multiTenant: true });
  });
  afterAll(async () => {
    obo.configure(null);
    await idp.close();
  });

  test('configured with common: the exchange and every renewal go to the tenant of the assertion', async () => {
    obo.configure(optionsFor(idp, { tokenEndpoint: idp.tokenEndpointFor('common') }));
    const { sessionKey } = await beginOboSession({ assertion, scopes, user });
    await acquireSessionToken({ sessionKey, scopes, forceRefresh: true });
    await acquireSessionToken({ sessionKey, scopes: 'api://other/Read' });
    const paths = idp.tokenRequests().map((request) => [request.form.grant_type, request.path]);
    expect(paths).toEqual([
      ['urn:ietf:params:oauth:grant-type:jwt-bearer', `/${TENANT_ID}/oauth2/v2.0/token`],
      ['refresh_token', `/${TENANT_ID}/oauth2/v2.0/token`],
      ['refresh_token', `/${TENANT_ID}/oauth2/v2.0/token`],
    ]);
  });
});
