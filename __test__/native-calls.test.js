'use strict';
/**
 * Calls into the addon (issue 19): a call the memo cannot answer makes one
 * native call, which answers from the native cache itself or starts the
 * exchange (the 1.5 KB assertion is converted and hashed once, not once for
 * a lookup and again for the exchange); a fan-out on one cold key makes one
 * native call in all, and still gives each caller a result (or an Error) of
 * its own.
 */
const native = require('../loader.js');
const { useMockIdp, obo } = require('./helpers.js');

const ctx = useMockIdp();
const { exchangeOboToken, acquireOboToken, clearCache } = obo;

describe('calls into the addon', () => {
  let calls;
  beforeEach(() => {
    calls = { exchange: jest.spyOn(native, 'exchange'), lookup: jest.spyOn(native, 'lookup') };
  });
  afterEach(() => {
    jest.restoreAllMocks();
  });
  const counts = () => ({ exchange: calls.exchange.mock.calls.length, lookup: calls.lookup.mock.calls.length });

  it('makes one native call for a miss, one for a native cache hit, and none for a memo hit', async () => {
    const user = { openidId: 'calls-one' };
    const miss = await exchangeOboToken(user, 'assertion-calls-one', 'api://calls');
    // The token minted for this assertion (expectedToken names the last one minted).
    const expected = ctx.idp.expectedToken('assertion-calls-one', 'api://calls');
    expect(miss.access_token).toBe(expected);
    expect(counts()).toEqual({ exchange: 1, lookup: 0 });
    // The memo is filled by a native hit only: this call reaches the native cache, and is answered at once.
    const nativeHit = exchangeOboToken(user, 'assertion-calls-one', 'api://calls');
    expect(calls.exchange.mock.results[1].value).toEqual(expect.objectContaining({ accessToken: expected, slot: expect.any(Number) }));
    expect((await nativeHit).access_token).toBe(expected);
    expect(counts()).toEqual({ exchange: 2, lookup: 0 });
    expect((await exchangeOboToken(user, 'assertion-calls-one', 'api://calls')).access_token).toBe(expected);
    expect(counts()).toEqual({ exchange: 2, lookup: 0 });
    expect(ctx.idp.tokenRequests()).toHaveLength(1);
  });

  it('makes one native call for a miss of acquireOboToken, and answers its native cache hit from that call', async () => {
    const options = { assertion: 'assertion-calls-acquire', scopes: ['api://calls'], user: { openidId: 'calls-acquire' } };
    const first = await acquireOboToken(options);
    const expected = ctx.idp.expectedToken('assertion-calls-acquire', 'api://calls');
    expect(first.access_token).toBe(expected);
    expect((await acquireOboToken(options)).access_token).toBe(expected);
    expect(counts()).toEqual({ exchange: 2, lookup: 0 });
    expect(ctx.idp.tokenRequests()).toHaveLength(1);
  });

  it('makes one native call for a fan-out on a cold key, and gives each caller its own result object', async () => {
    const user = { openidId: 'calls-fan' };
    const context = { openidSubject: 'calls-fan' };
    const pending = [];
    for (let i = 0; i < 500; i++) pending.push(exchangeOboToken(user, 'assertion-calls-fan', 'api://calls', true, i % 2 ? context : undefined));
    const results = await Promise.all(pending);
    expect(counts()).toEqual({ exchange: 1, lookup: 0 });
    expect(new Set(results).size).toBe(500);
    const expected = ctx.idp.expectedToken('assertion-calls-fan', 'api://calls');
    expect(results.every((result) => result.access_token === expected)).toBe(true);
    // Callers with an identity context get expires_at; the others get today's shape.
    expect(results.filter((result) => 'expires_at' in result)).toHaveLength(250);
    results[0].access_token = 'changed by its caller';
    expect(results[1].access_token).toBe(expected);
    expect(ctx.idp.tokenRequests()).toHaveLength(1);
  });

  it('gives each caller of a failed fan-out an Error of its own', async () => {
    ctx.idp.enqueue({ status: 400, body: { error: 'invalid_grant', error_description: 'AADSTS50013: assertion failed' } });
    const pending = Array.from({ length: 50 }, () => exchangeOboToken({ openidId: 'calls-fail' }, 'assertion-calls-fail', 'api://calls'));
    const errors = await Promise.all(pending.map((call) => call.then(() => null, (err) => err)));
    expect(counts()).toEqual({ exchange: 1, lookup: 0 });
    expect(errors.every((err) => err instanceof Error && err.error === 'invalid_grant')).toBe(true);
    expect(new Set(errors).size).toBe(50);
  });

  it('starts a new exchange after clearCache() instead of answering from the memo or the native cache', async () => {
    const user = { openidId: 'calls-cleared' };
    await exchangeOboToken(user, 'assertion-calls-cleared', 'api://calls');
    await exchangeOboToken(user, 'assertion-calls-cleared', 'api://calls');
    clearCache();
    await exchangeOboToken(user, 'assertion-calls-cleared', 'api://calls');
    expect(counts()).toEqual({ exchange: 3, lookup: 0 });
    expect(ctx.idp.tokenRequests()).toHaveLength(2);
  });
});
