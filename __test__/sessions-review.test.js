'use strict';
/**
 * Findings of the review of long-running sessions, one describe per point:
 * a session call retries as an exchange does (never a host function's
 * failure).
 */
const { obo, useMockIdp, settle } = require('./helpers');

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
