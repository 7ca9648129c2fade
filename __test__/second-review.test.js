'use strict';
/**
 * Findings of the second review (issue 15) that show from JavaScript, one
 * describe per point: a claims challenge's or a forced refresh's token is
 * never replaced by an exchange begun before it; `clientAssertion` functions
 * get their own deadline and error; blank identity claims; LibreChat's
 * example CREDS_KEY; `redisMisses`.
 */
const { obo, until, useMockIdp } = require('./helpers');

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
