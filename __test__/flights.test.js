'use strict';
/**
 * Which concurrent calls share an exchange. Calls under way at the same time
 * share one only when their whole key is the same (subject, tenant, issuer,
 * scopes and assertion): one that differs in any part gets its own exchange
 * and its own token, whether the calls run on one thread (joined in
 * JavaScript) or on several (joined by the native single flight). And a join
 * on one thread is answered in JavaScript, without a call into the addon.
 *
 * Every request is held at the provider until all the calls are in flight,
 * so none can be answered from the cache; the provider numbers the tokens it
 * mints, so that two exchanges never yield the same token and a caller handed
 * another's shows.
 */
const path = require('node:path');
const { Worker } = require('node:worker_threads');
const { obo, until, useMockIdp } = require('./helpers');

const { exchangeOboToken, acquireOboToken, stats, __internals } = obo;

const ctx = useMockIdp();
const workerScript = path.join(__dirname, 'fixtures', 'worker-flights.js');

beforeEach(() => {
  ctx.idp.setResponder((request) => ({
    body: { token_type: 'Bearer', access_token: `token-${ctx.idp.tokenRequests().indexOf(request) + 1}`, expires_in: 3600 },
  }));
});

const BASE = {
  context: { openidSubject: 'flight-subject', tenantId: 'tenant-a', openidIssuer: 'https://issuer-a.example' },
  assertion: 'flight-assertion-a',
  scopes: 'api://flights/.default',
};

/** The same call as BASE but for one part of its key. */
const VARIANTS = {
  tenant: { ...BASE, context: { ...BASE.context, tenantId: 'tenant-b' } },
  issuer: { ...BASE, context: { ...BASE.context, openidIssuer: 'https://issuer-b.example' } },
  assertion: { ...BASE, assertion: 'flight-assertion-b' },
  scopes: { ...BASE, scopes: 'api://flights/other' },
};

const exchange = ({ context, assertion, scopes }) => exchangeOboToken(null, assertion, scopes, true, context);

/** Calls that joined a flight since `before`, on any thread whose joins were reported. */
const joinedSince = (before) => stats().coalesced - before;

/** Each caller's token was minted for a request that carried the caller's own assertion and scopes. */
function expectMintedFor(tokens, calls) {
  const requests = ctx.idp.tokenRequests();
  tokens.forEach((token, i) => {
    const request = requests[Number(/^token-(\d+)$/.exec(token)[1]) - 1];
    expect(request.form).toMatchObject({ assertion: calls[i].assertion, scope: calls[i].scopes });
  });
}

function runWorker(calls) {
  return new Promise((resolve, reject) => {
    const worker = new Worker(workerScript, { workerData: { calls } });
    worker.once('message', resolve);
    worker.once('error', reject);
  });
}

describe('concurrent calls that differ in one part of their key', () => {
  it.each(Object.keys(VARIANTS))(
    'on one thread, two calls that differ only in %s make two exchanges, each caller getting its own token',
    async (part) => {
      const calls = [BASE, VARIANTS[part]];
      ctx.idp.enqueue({ hold: true }, { hold: true });
      const joinedBefore = stats().coalesced;
      const threadJoinsBefore = __internals.threadJoins();
      const pending = calls.map(exchange);
      // Both are in flight once each has reached the provider or joined a flight.
      await until(() => ctx.idp.heldCount() + joinedSince(joinedBefore) === 2);
      const inFlight = {
        held: ctx.idp.release(),
        joined: joinedSince(joinedBefore),
        joinedInJavaScript: __internals.threadJoins() - threadJoinsBefore,
      };
      const tokens = (await Promise.all(pending)).map((result) => result.access_token);
      expect(inFlight).toEqual({ held: 2, joined: 0, joinedInJavaScript: 0 });
      expect(new Set(tokens)).toEqual(new Set(['token-1', 'token-2']));
      expectMintedFor(tokens, calls);
      // Each token is cached under its own caller's key.
      for (const [i, call] of calls.entries()) expect((await exchange(call)).access_token).toBe(tokens[i]);
      expect(ctx.idp.tokenRequests()).toHaveLength(2);
    },
  );

  it.each(Object.keys(VARIANTS))(
    'in two worker threads, calls that differ only in %s make two exchanges; the same call in both threads shares one',
    async (part) => {
      const calls = [BASE, VARIANTS[part]];
      ctx.idp.enqueue({ hold: true }, { hold: true });
      const joinedBefore = stats().coalesced;
      const running = Promise.all([runWorker(calls), runWorker(calls)]);
      // Four calls in flight: two requests held, and each thread's copy of a call joined to the other's.
      await until(() => ctx.idp.heldCount() + joinedSince(joinedBefore) === 4, 20_000);
      const held = ctx.idp.release();
      const [first, second] = await running;
      expect(held).toBe(2);
      for (const results of [first, second]) for (const result of results) expect(result.error).toBeUndefined();
      const tokens = first.map((result) => result.token);
      expect(second.map((result) => result.token)).toEqual(tokens);
      expect(new Set(tokens)).toEqual(new Set(['token-1', 'token-2']));
      expectMintedFor(tokens, calls);
      expect(ctx.idp.tokenRequests()).toHaveLength(2);
      expect(joinedSince(joinedBefore)).toBe(2);
    },
  );
});

describe('the join on one thread', () => {
  it('answers an identical exchangeOboToken call under way without a native call', async () => {
    ctx.idp.enqueue({ hold: true });
    const joinedBefore = stats().coalesced;
    const threadJoinsBefore = __internals.threadJoins();
    const pending = [exchange(BASE), exchange(BASE)];
    await until(() => ctx.idp.heldCount() + joinedSince(joinedBefore) === 2);
    const inFlight = {
      held: ctx.idp.release(),
      joined: joinedSince(joinedBefore),
      joinedInJavaScript: __internals.threadJoins() - threadJoinsBefore,
    };
    const [mine, joined] = await Promise.all(pending);
    expect(inFlight).toEqual({ held: 1, joined: 1, joinedInJavaScript: 1 });
    expect(mine.access_token).toBe('token-1');
    expect(joined).toEqual(mine);
    expect(joined).not.toBe(mine);
    expect(ctx.idp.tokenRequests()).toHaveLength(1);
  });

  it('answers an identical acquireOboToken call under way without a native call', async () => {
    const options = { assertion: BASE.assertion, scopes: BASE.scopes, identityContext: BASE.context };
    ctx.idp.enqueue({ hold: true });
    const joinedBefore = stats().coalesced;
    const threadJoinsBefore = __internals.threadJoins();
    const pending = [acquireOboToken(options), acquireOboToken(options)];
    await until(() => ctx.idp.heldCount() + joinedSince(joinedBefore) === 2);
    const inFlight = {
      held: ctx.idp.release(),
      joined: joinedSince(joinedBefore),
      joinedInJavaScript: __internals.threadJoins() - threadJoinsBefore,
    };
    const tokens = (await Promise.all(pending)).map((result) => result.access_token);
    expect(inFlight).toEqual({ held: 1, joined: 1, joinedInJavaScript: 1 });
    expect(tokens).toEqual(['token-1', 'token-1']);
    expect(ctx.idp.tokenRequests()).toHaveLength(1);
  });
});
