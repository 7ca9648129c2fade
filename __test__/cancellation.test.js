'use strict';
/**
 * `acquireOboToken({ signal })`: an aborted signal rejects that call with the
 * signal's reason, as `fetch` does; an exchange under way goes on for its
 * other callers and still fills the cache.
 */
const { getEventListeners } = require('node:events');
const { obo, until, useMockIdp, settle } = require('./helpers');

const { acquireOboToken, createOboClient, stats } = obo;

const ctx = useMockIdp();
const user = { openidId: 'user-1' };
const SCOPE = 'api://mcp/Read';
const call = (extra = {}) => ({ assertion: 'assertion-1', scopes: SCOPE, user, ...extra });

/** Unhandled rejections seen during a test. */
const unhandled = [];
const onUnhandled = (reason) => unhandled.push(reason);
beforeAll(() => process.on('unhandledRejection', onUnhandled));
afterAll(() => process.off('unhandledRejection', onUnhandled));
beforeEach(() => {
  unhandled.length = 0;
});
/** One turn of the event loop: long enough for an unhandled rejection to be reported. */
const turn = () => new Promise((resolve) => setImmediate(resolve));

describe('aborted before the call', () => {
  it('rejects at once with an AbortError DOMException, without a request', async () => {
    const controller = new AbortController();
    controller.abort();
    const before = stats();
    const { error } = await settle(acquireOboToken(call({ signal: controller.signal })));
    expect(error).toBe(controller.signal.reason);
    expect(error).toBeInstanceOf(DOMException);
    expect(error.name).toBe('AbortError');
    expect(ctx.idp.tokenRequestCount()).toBe(0);
    expect(stats().exchanges - before.exchanges).toBe(0);
  });

  it('rejects with the reason given to abort(), even when the token is cached', async () => {
    await acquireOboToken(call());
    const reason = new Error('the user left');
    const controller = new AbortController();
    controller.abort(reason);
    await expect(acquireOboToken(call({ signal: controller.signal }))).rejects.toBe(reason);
    expect(ctx.idp.tokenRequestCount()).toBe(1);
  });

  it('AbortSignal.abort() counts as aborted', async () => {
    await expect(acquireOboToken(call({ signal: AbortSignal.abort() }))).rejects.toMatchObject({ name: 'AbortError' });
    expect(ctx.idp.tokenRequestCount()).toBe(0);
  });
});

describe('aborted during the exchange', () => {
  it('rejects that caller; a second caller on the same key is still served, and the cache is filled', async () => {
    const before = stats();
    ctx.idp.enqueue({ hold: true });
    const controller = new AbortController();
    const walkingAway = settle(acquireOboToken(call({ signal: controller.signal })));
    const staying = acquireOboToken(call());
    await until(() => ctx.idp.heldCount() === 1);
    controller.abort();
    const { error } = await walkingAway;
    expect(error).toBe(controller.signal.reason);
    expect(error.name).toBe('AbortError');
    ctx.idp.release();
    const token = await staying;
    expect(token.access_token).toBe(ctx.idp.expectedToken('assertion-1', SCOPE));
    const again = await acquireOboToken(call());
    expect(again.access_token).toBe(token.access_token);
    expect(ctx.idp.tokenRequestCount()).toBe(1);
    const after = stats();
    expect([after.exchanges - before.exchanges, after.coalesced - before.coalesced]).toEqual([1, 1]);
    await turn();
    expect(unhandled).toEqual([]);
  });

  it('a lone caller that walks away still leaves the token in the cache', async () => {
    ctx.idp.enqueue({ hold: true });
    const controller = new AbortController();
    const walkingAway = settle(acquireOboToken(call({ signal: controller.signal })));
    await until(() => ctx.idp.heldCount() === 1);
    controller.abort();
    expect((await walkingAway).error.name).toBe('AbortError');
    ctx.idp.release();
    await until(() => stats().cacheSize === 1);
    const token = await acquireOboToken(call());
    expect(token.access_token).toBe(ctx.idp.expectedToken('assertion-1', SCOPE));
    expect(ctx.idp.tokenRequestCount()).toBe(1);
    await turn();
    expect(unhandled).toEqual([]);
  });

  it('a failing exchange rejects the callers that stayed, and no rejection goes unhandled', async () => {
    ctx.idp.enqueue({ hold: true, status: 400, body: { error: 'invalid_grant', error_description: 'expired' } });
    const controller = new AbortController();
    const walkingAway = settle(acquireOboToken(call({ signal: controller.signal })));
    const staying = settle(acquireOboToken(call()));
    await until(() => ctx.idp.heldCount() === 1);
    controller.abort();
    expect((await walkingAway).error.name).toBe('AbortError');
    ctx.idp.release();
    expect((await staying).error.error).toBe('invalid_grant');
    await turn();
    expect(unhandled).toEqual([]);
  });
});

describe('listeners', () => {
  it('are removed once the call settles, whichever way', async () => {
    const served = new AbortController();
    await acquireOboToken(call({ signal: served.signal }));
    expect(getEventListeners(served.signal, 'abort')).toHaveLength(0);

    ctx.idp.enqueue({ status: 400, body: { error: 'invalid_scope' } });
    const failed = new AbortController();
    await settle(acquireOboToken(call({ assertion: 'assertion-2', signal: failed.signal })));
    expect(getEventListeners(failed.signal, 'abort')).toHaveLength(0);

    ctx.idp.enqueue({ hold: true });
    const aborted = new AbortController();
    const pending = settle(acquireOboToken(call({ assertion: 'assertion-3', signal: aborted.signal })));
    await until(() => ctx.idp.heldCount() === 1);
    expect(getEventListeners(aborted.signal, 'abort')).toHaveLength(1);
    aborted.abort();
    await pending;
    expect(getEventListeners(aborted.signal, 'abort')).toHaveLength(0);
    ctx.idp.release();
  });

  it('a signal shared by many calls has one listener while they wait, and none after they settle', async () => {
    const controller = new AbortController();
    const calls = Array.from({ length: 50 }, (_, i) => acquireOboToken(call({ assertion: `assertion-${i % 5}`, signal: controller.signal })));
    expect(getEventListeners(controller.signal, 'abort')).toHaveLength(1);
    await Promise.all(calls);
    expect(getEventListeners(controller.signal, 'abort')).toHaveLength(0);
    // Aborting afterwards changes nothing for calls that are over.
    controller.abort();
    await turn();
    expect(unhandled).toEqual([]);
  });

  it('one abort rejects every call waiting on the signal, and leaves other signals\' calls alone', async () => {
    ctx.idp.enqueue({ hold: true }, { hold: true });
    const shared = new AbortController();
    const other = new AbortController();
    const waiting = [1, 2, 3].map(() => settle(acquireOboToken(call({ signal: shared.signal }))));
    const otherCall = acquireOboToken(call({ assertion: 'assertion-2', signal: other.signal }));
    await until(() => ctx.idp.heldCount() === 2);
    shared.abort();
    for (const { error } of await Promise.all(waiting)) expect(error).toBe(shared.signal.reason);
    expect(getEventListeners(shared.signal, 'abort')).toHaveLength(0);
    ctx.idp.release();
    expect((await otherCall).access_token).toBe(ctx.idp.expectedToken('assertion-2', SCOPE));
    expect(getEventListeners(other.signal, 'abort')).toHaveLength(0);
  });
});

describe('validation', () => {
  it('a signal that is not an AbortSignal is a TypeError naming signal', async () => {
    for (const signal of [true, 'abort', {}, { aborted: false }]) {
      const { error } = await settle(acquireOboToken(call({ signal })));
      expect(error).toBeInstanceOf(TypeError);
      expect(error.option).toBe('signal');
    }
    expect(ctx.idp.tokenRequestCount()).toBe(0);
  });

  it('signal works on an independent client too', async () => {
    const client = createOboClient({ tokenEndpoint: ctx.idp.tokenEndpoint, clientId: ctx.idp.clientId, clientSecret: ctx.idp.clientSecret });
    try {
      ctx.idp.enqueue({ hold: true });
      const controller = new AbortController();
      const walkingAway = settle(client.acquireOboToken(call({ signal: controller.signal })));
      await until(() => ctx.idp.heldCount() === 1);
      controller.abort();
      expect((await walkingAway).error.name).toBe('AbortError');
      ctx.idp.release();
      await until(() => client.stats().cacheSize === 1);
      expect((await client.acquireOboToken(call())).access_token).toBe(ctx.idp.expectedToken('assertion-1', SCOPE));
      expect(ctx.idp.tokenRequestCount()).toBe(1);
    } finally {
      await client.close();
    }
  });
});
