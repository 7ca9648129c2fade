'use strict';
/**
 * Faults of the identity provider, throttling, hostile input, concurrency and
 * bounded memory: nothing crashes the process, nothing hangs, nothing leaks.
 */
const { obo, sleep, until, optionsFor, useMockIdp, settle, textsOf } = require('./helpers');
const { faults } = require('../testing');

const { exchangeOboToken, configure, clearCache, stats } = obo;

const ctx = useMockIdp();
const errorsSeen = [];
const ASSERTION = 'eyJ0eXAiOiJKV1QifQ.hardening-assertion-payload.signature-part';

/** Settles a call and keeps any error for the secret search at the end. */
async function attempt(promise) {
  const result = await settle(promise);
  if (result.error) errorsSeen.push(result.error);
  return result;
}

afterAll(() => {
  const texts = errorsSeen.flatMap((err) => textsOf(err)).join('\n');
  expect(errorsSeen.length).toBeGreaterThan(10);
  expect(texts).not.toContain(ASSERTION);
  expect(texts).not.toContain('mock-client-secret-value');
});

describe('faults of the identity provider', () => {
  const user = { openidId: 'u-fault' };

  it('ends each attempt after timeoutMs on a hanging provider, with ETIMEDOUT', async () => {
    configure(optionsFor(ctx.idp, { timeoutMs: 300, retryDelayMs: 50 }));
    ctx.idp.enqueue({ hang: true }, { hang: true });
    const started = Date.now();
    const { error } = await attempt(exchangeOboToken(user, ASSERTION, 'api://hang'));
    const elapsed = Date.now() - started;
    expect(error).toMatchObject({ code: 'ETIMEDOUT', retryable: true, oboFailureReason: 'exchange_failed' });
    expect(error.message).toMatch(/timed out after 300 ms/);
    expect(elapsed).toBeGreaterThanOrEqual(640);
    expect(elapsed).toBeLessThan(1500);
    expect(ctx.idp.tokenRequests()).toHaveLength(2);
  });

  it('recovers when a hanging attempt is followed by an answer', async () => {
    configure(optionsFor(ctx.idp, { timeoutMs: 300 }));
    ctx.idp.enqueue({ hang: true });
    const { value } = await attempt(exchangeOboToken(user, ASSERTION, 'api://hang-once'));
    expect(value.access_token).toBe(ctx.idp.expectedToken(ASSERTION, 'api://hang-once'));
  });

  it.each([
    ['malformed JSON', { status: 200, body: '{"access_token": "x"' }, /not JSON/],
    ['a JSON array', { status: 200, body: '[1,2,3]' }, /not an object/],
    ['a JSON string', { status: 200, body: '"token"' }, /not an object/],
    ['an empty body', { status: 200, body: '' }, /not JSON/],
  ])('refuses a success body that is %s, without caching it', async (_, fault, message) => {
    ctx.idp.enqueue(fault);
    const { error } = await attempt(exchangeOboToken(user, ASSERTION, 'api://bad-body'));
    expect(error).toMatchObject({ retryable: false, status: 200, oboFailureReason: 'exchange_failed' });
    expect(error.message).toMatch(/invalid token response/);
    expect(error.message).toMatch(message);
    expect(stats().cacheSize).toBe(0);
  });

  it('describes an HTML error page without echoing it, after the retry a 502 deserves', async () => {
    const page = { status: 502, body: '<html><body>Bad gateway from the edge</body></html>', headers: { 'content-type': 'text/html' } };
    ctx.idp.enqueue(page, page);
    const { error } = await attempt(exchangeOboToken(user, ASSERTION, 'api://html'));
    expect(error).toMatchObject({ status: 502, retryable: true });
    expect(error.message).toMatch(/HTTP 502 Bad Gateway without an OAuth error \(\d+ bytes of text\/html\)/);
    expect(error.message).not.toMatch(/edge/);
    expect(ctx.idp.tokenRequests()).toHaveLength(2);
  });

  it('reads at most 1 MiB of a body, and the process survives a flood of huge answers', async () => {
    const huge = `{"access_token":"${'x'.repeat(2 << 20)}","expires_in":3600}`;
    const rssBefore = process.memoryUsage().rss;
    for (let i = 0; i < 20; i++) {
      ctx.idp.enqueue({ status: 200, body: huge });
      const { error } = await attempt(exchangeOboToken({ openidId: `huge-${i}` }, ASSERTION, 'api://huge'));
      expect(error.message).toMatch(/larger than 1048576 bytes/);
      expect(error.retryable).toBe(false);
    }
    expect(stats().cacheSize).toBe(0);
    expect(process.memoryUsage().rss - rssBefore).toBeLessThan(256 << 20);
  });

  it.each([
    [0, 1],
    [-30, 1],
    [1e12, 86400],
    ['NaN', 3600],
    ['Infinity', 3600],
    ['1e400', 3600],
    [' 120 ', 120],
    [true, 3600],
    [{}, 3600],
  ])('normalises expires_in %p without panicking (%p)', async (sent, expected) => {
    ctx.idp.setExpiresIn(sent);
    const { value } = await attempt(exchangeOboToken(user, ASSERTION, 'api://expiry'));
    expect(value.expires_in).toBe(expected);
  });

  it('serves a token granted for 0 seconds for one second only', async () => {
    ctx.idp.setExpiresIn(0);
    await exchangeOboToken(user, ASSERTION, 'api://zero');
    // Read as upstream reads it: at least one second.
    expect((await exchangeOboToken(user, ASSERTION, 'api://zero')).expires_in).toBe(1);
    await sleep(1100);
    await exchangeOboToken(user, ASSERTION, 'api://zero');
    expect(ctx.idp.tokenRequests()).toHaveLength(2);
  });
});

describe('throttling', () => {
  const user = { openidId: 'u-throttle' };

  it('waits a short Retry-After (seconds) instead of retryDelayMs before the one retry', async () => {
    ctx.idp.enqueue(faults.throttled(1));
    const { value } = await attempt(exchangeOboToken(user, ASSERTION, 'api://ra'));
    expect(value.access_token).toBe(ctx.idp.expectedToken(ASSERTION, 'api://ra'));
    const [first, second] = ctx.idp.tokenRequests();
    expect(second.at - first.at).toBeGreaterThanOrEqual(950);
  });

  it('understands Retry-After as an HTTP date', async () => {
    const date = new Date(Date.now() + 2000).toUTCString();
    ctx.idp.enqueue({ status: 503, body: '', headers: { 'retry-after': date } });
    await attempt(exchangeOboToken(user, ASSERTION, 'api://ra-date'));
    const [first, second] = ctx.idp.tokenRequests();
    expect(second.at - first.at).toBeGreaterThanOrEqual(900);
  });

  it('rejects at once on a long Retry-After and throttles that key only, until the time has passed', async () => {
    configure(optionsFor(ctx.idp, { maxRetryAfterMs: 500 }));
    ctx.idp.enqueue(faults.throttled(2));
    const throttledBefore = stats().throttled;
    const { error } = await attempt(exchangeOboToken(user, ASSERTION, 'api://long'));
    expect(error).toMatchObject({ status: 429, retryable: true, retryAfter: 2, oboFailureReason: 'exchange_failed' });
    expect(error.throttled).toBeUndefined();

    // Still throttled, and no second request: the first call neither waited out the Retry-After nor retried.
    const again = await attempt(exchangeOboToken(user, ASSERTION, 'api://long'));
    expect(again.error).toMatchObject({ status: 429, retryable: true, throttled: true });
    expect(again.error.retryAfter).toBeGreaterThanOrEqual(1);
    expect(again.error.retryAfter).toBeLessThanOrEqual(2);
    const forced = await attempt(exchangeOboToken(user, ASSERTION, 'api://long', false));
    expect(forced.error).toMatchObject({ throttled: true });
    expect(ctx.idp.tokenRequests()).toHaveLength(1);

    const other = await attempt(exchangeOboToken(user, ASSERTION, 'api://other-key'));
    expect(other.value.access_token).toBe(ctx.idp.expectedToken(ASSERTION, 'api://other-key'));
    const otherUser = await attempt(exchangeOboToken({ openidId: 'someone-else' }, ASSERTION, 'api://long'));
    expect(otherUser.value.access_token).toBe(ctx.idp.expectedToken(ASSERTION, 'api://long'));
    expect(stats().throttled - throttledBefore).toBe(2);

    await sleep(2100);
    const later = await attempt(exchangeOboToken(user, ASSERTION, 'api://long'));
    expect(later.value.access_token).toBe(ctx.idp.expectedToken(ASSERTION, 'api://long'));
  });

  it('forgets throttles on clearCache and on configure', async () => {
    configure(optionsFor(ctx.idp, { maxRetryAfterMs: 0 }));
    ctx.idp.enqueue(faults.throttled(60));
    await attempt(exchangeOboToken(user, ASSERTION, 'api://forget'));
    expect((await attempt(exchangeOboToken(user, ASSERTION, 'api://forget'))).error.throttled).toBe(true);
    clearCache();
    expect((await attempt(exchangeOboToken(user, ASSERTION, 'api://forget'))).value.access_token).toBe(
      ctx.idp.expectedToken(ASSERTION, 'api://forget'),
    );
    ctx.idp.enqueue(faults.throttled(60));
    await attempt(exchangeOboToken(user, ASSERTION, 'api://forget-2'));
    configure(optionsFor(ctx.idp));
    expect((await attempt(exchangeOboToken(user, ASSERTION, 'api://forget-2'))).value.access_token).toBe(
      ctx.idp.expectedToken(ASSERTION, 'api://forget-2'),
    );
  });

  it.each(['invalid_grant', 'interaction_required', 'invalid_client', 'invalid_scope', 'unauthorized_client', 'consent_required'])(
    'never retries %s, whatever the status',
    async (error) => {
      ctx.idp.enqueue({ status: 503, body: { error, error_description: 'AADSTS0: no' } });
      const result = await attempt(exchangeOboToken(user, ASSERTION, `api://${error}`));
      expect(result.error).toMatchObject({ code: error, retryable: false });
      expect(ctx.idp.tokenRequests()).toHaveLength(1);
    },
  );
});

describe('hostile input', () => {
  const user = { openidId: 'u-input' };
  const throwing = {
    get openidId() {
      throw new RangeError('nope');
    },
  };
  const values = [
    undefined, null, 0, 1, -1, NaN, Infinity, true, false, {}, [], [1], () => 'x',
    Symbol('s'), 10n, throwing, new String('boxed'), Object.create(null),
  ];

  it('never throws synchronously nor crashes, whatever each argument is', async () => {
    let calls = 0;
    for (const position of [0, 1, 2, 3]) {
      for (const value of values) {
        const args = [user, ASSERTION, 'api://input', true];
        args[position] = value;
        let promise;
        expect(() => {
          promise = exchangeOboToken(...args);
        }).not.toThrow();
        expect(promise).toBeInstanceOf(Promise);
        const { error } = await attempt(promise);
        calls++;
        if (error) {
          expect(typeof error.message).toBe('string');
          // The only error whose text is not ours is the one the getter throws.
          expect(error.message === 'nope' || error.message.length > 20).toBe(true);
        }
      }
    }
    expect(calls).toBe(4 * values.length);
  });

  it('handles 2 MB strings and NUL bytes', async () => {
    const bigAssertion = 'a'.repeat(2 << 20);
    const big = await attempt(exchangeOboToken(user, bigAssertion, 'api://big'));
    expect(big.value.access_token).toBe(ctx.idp.expectedToken(bigAssertion, 'api://big'));
    const bigId = { openidId: 'u'.repeat(2 << 20) };
    expect((await attempt(exchangeOboToken(bigId, ASSERTION, 'api://big'))).value.access_token).toBe(
      ctx.idp.expectedToken(ASSERTION, 'api://big'),
    );
    const nul = await attempt(exchangeOboToken({ openidId: 'nul\0user' }, 'as\0sertion', 'api://nul\0scope'));
    expect(nul.value.scope).toBe('api://nul\0scope');
    expect(ctx.idp.tokenRequests().at(-1).form).toMatchObject({ assertion: 'as\0sertion', scope: 'api://nul\0scope' });
    const distinct = await attempt(exchangeOboToken({ openidId: 'nul' }, 'other', 'user\0api://nul\0scope'));
    expect(distinct.value.access_token).not.toBe(nul.value.access_token);
  });

  it('refuses lone surrogates with a TypeError instead of sending mangled text', async () => {
    for (const args of [
      [{ openidId: 'user\uD800' }, ASSERTION, 'api://s'],
      [user, ASSERTION, 'api://s\uDC00'],
      [user, `${ASSERTION}\uD83D`, 'api://s'],
    ]) {
      const { error } = await attempt(exchangeOboToken(...args));
      expect(error).toMatchObject({ name: 'TypeError', message: expect.stringMatching(/lone UTF-16 surrogate/) });
    }
    const paired = await attempt(exchangeOboToken({ openidId: 'emoji-😀' }, ASSERTION, 'api://😀'));
    expect(paired.value.scope).toBe('api://😀');
    expect(ctx.idp.tokenRequests()).toHaveLength(1);
  });

  it('does not crash on configure with hostile options', () => {
    const hostile = [
      1, 'x', [], () => {}, Symbol('s'),
      { clientId: 'a', get tokenEndpoint() { throw new Error('getter'); } },
      { clientId: { toString: () => 'a' }, tokenEndpoint: ctx.idp.tokenEndpoint },
      { clientId: 'a', tokenEndpoint: 'not a url', clientSecret: 'b' },
      { clientId: 'a', tokenEndpoint: 'https://\0/token', clientSecret: 'b' },
      { clientId: 'a', issuer: 'https://', clientSecret: 'b' },
      { clientId: 'a', tokenEndpoint: ctx.idp.tokenEndpoint, clientSecret: 'b', timeoutMs: 1e300 },
    ];
    for (const options of hostile) {
      expect(() => configure(options)).toThrow();
    }
  });
});

describe('concurrency and resources', () => {
  it('gives 3000 concurrent callers over 100 users × 5 scopes their own token, with one request per key', async () => {
    const delays = [];
    for (let i = 0; i < 500; i++) delays.push({ delayMs: Math.floor(Math.random() * 40) });
    ctx.idp.enqueue(...delays);
    const calls = [];
    for (let i = 0; i < 3000; i++) {
      const u = i % 100;
      const s = Math.floor(i / 100) % 5;
      const assertion = `assertion-of-user-${u}`;
      const scope = `api://server-${s}/Tools.Call`;
      calls.push(
        exchangeOboToken({ openidId: `user-${u}` }, assertion, scope).then((token) => ({ token, assertion, scope })),
      );
    }
    const results = await Promise.all(calls);
    for (const { token, assertion, scope } of results) {
      expect(token.access_token).toBe(ctx.idp.expectedToken(assertion, scope));
      expect(token.scope).toBe(scope);
    }
    expect(ctx.idp.tokenRequests()).toHaveLength(500);
    expect(stats().cacheSize).toBe(500);
  });

  it('keeps maxCacheEntries under ten times as many keys', async () => {
    configure(optionsFor(ctx.idp, { maxCacheEntries: 200 }));
    let largest = 0;
    for (let batch = 0; batch < 20; batch++) {
      await Promise.all(
        Array.from({ length: 100 }, (_, i) => exchangeOboToken({ openidId: `bound-${batch}-${i}` }, 'a', 'api://bound')),
      );
      largest = Math.max(largest, stats().cacheSize);
    }
    expect(largest).toBeLessThanOrEqual(200);
    expect(stats().cacheSize).toBeGreaterThan(100);
  });
});

describe('memory over a long run', () => {
  const { spawn } = require('node:child_process');
  const path = require('node:path');
  const { startMockIdp } = require('../testing');
  const longRun = { idp: null };
  beforeAll(async () => {
    longRun.idp = await startMockIdp({ record: false });
  });
  beforeEach(() => {
    longRun.idp.reset();
  });
  afterAll(async () => {
    await longRun.idp.close();
  });

  /** Runs a workload of fixtures/memory-child.js in `node --expose-gc` against this file's long-run provider. */
  function measure(workload, extra = {}) {
    const spec = { workload, options: optionsFor(longRun.idp), scope: 'api://memory', ...extra };
    const script = path.join(__dirname, 'fixtures', 'memory-child.js');
    return new Promise((resolve, reject) => {
      const child = spawn(process.execPath, ['--expose-gc', script], {
        env: { ...process.env, OBO_MEMORY_SPEC: JSON.stringify(spec) },
        stdio: ['ignore', 'pipe', 'inherit'],
      });
      let stdout = '';
      child.stdout.on('data', (chunk) => (stdout += chunk));
      child.on('error', reject);
      child.on('close', (code) => {
        const result = JSON.parse(stdout.trim().split('\n').at(-1) || '{}');
        if (code !== 0 || result.error) reject(new Error(`memory child exited ${code}: ${result.error ?? stdout}`));
        else resolve(result);
      });
    });
  }

  // The allocator and V8 settle over the first ~80 000 exchanges; then RSS
  // moves by a megabyte or so either way from round to round, hence rounds of 40 000.
  it('keeps RSS flat, under 50 bytes per exchange, while every token is read three times', async () => {
    const result = await measure('flat', { warmUpRounds: 2, reads: 3 });
    // One request per user: the second and third reads were hits (the third from the memo).
    expect(longRun.idp.tokenRequestCount()).toBe(result.users);
    expect(result.wrong).toBe(0);
    expect(result.misses).toBe(result.users);
    expect(result.hits).toBe(2 * result.misses);
    expect(result.cacheSize).toBeLessThanOrEqual(1000);
    const [baseline, ...rounds] = result.samples;
    const perExchange = rounds.map((sample, i) => (sample.rss - (i === 0 ? baseline : rounds[i - 1]).rss) / result.exchangesPerRound);
    const overall = (rounds[2].rss - baseline.rss) / (3 * result.exchangesPerRound);
    if (overall >= 50) console.error('RSS samples', result.samples, 'bytes per exchange by round', perExchange);
    expect(overall).toBeLessThan(50);
  }, 300_000);

  it('bounds the per-thread memo at 10 000 entries, and answers each key its own token across restarts', async () => {
    const tokenBytes = 2500;
    const keys = 25_000;
    longRun.idp.setResponder(({ form }) => {
      const head = `token-for-${form.assertion}|`;
      return { body: { token_type: 'Bearer', expires_in: 3600, access_token: head + 'x'.repeat(tokenBytes - head.length) } };
    });
    const result = await measure('memoBound', { keys, tokenBytes });
    expect(result.wrong).toBe(0);
    expect(result.fill).toEqual({ misses: keys, exchanges: keys, hits: keys });
    // Unbounded, the memo would hold all 25 000 tokens (over 60 MB); bounded, 5 000 since the last restart.
    const heapGrowth = result.filled.heapUsed - result.baseline.heapUsed;
    expect(heapGrowth).toBeLessThan(10_000 * tokenBytes);
    expect(result.reread).toEqual([
      { key: 0, ok: true, exchanges: 1 },
      { key: 1, ok: true, exchanges: 1 },
      { key: keys - 1, ok: true, exchanges: 0 },
    ]);
  }, 240_000);
});
