'use strict';
/** Shared set-up for the suites: a mock provider per file and a clean native state per test. */
const obo = require('..');
const { startMockIdp } = require('../testing');

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Waits until `performance.now()` (the monotonic clock the addon's `Instant`
 * also reads) reaches `instant`; a timer alone can fire a little early.
 */
async function sleepUntil(instant) {
  while (performance.now() < instant) await sleep(Math.ceil(instant - performance.now()) + 1);
}

/**
 * Waits until the wall clock (which the addon judges expiry by) passes
 * `expiresAt` (ms since the epoch): a token that lived less than the expiry
 * skew is served for its first second, as the cache serves one, and no longer.
 */
async function untilExpired(expiresAt) {
  while (Date.now() <= expiresAt) await sleep(expiresAt - Date.now() + 1);
}

/** Waits until `condition()` holds, polling; fails after `timeoutMs`. */
async function until(condition, timeoutMs = 5000) {
  const started = Date.now();
  while (!condition()) {
    if (Date.now() - started > timeoutMs) throw new Error('condition not met in time');
    await sleep(5);
  }
}

/** Options for `configure` against a mock provider (no discovery), fast retries. */
function optionsFor(idp, extra = {}) {
  return {
    tokenEndpoint: idp.tokenEndpoint,
    clientId: idp.clientId,
    clientSecret: idp.clientSecret,
    retryDelayMs: 20,
    ...extra,
  };
}

/** Starts a provider for the file; resets it and the native state before each test. */
function useMockIdp(idpOptions = {}, configureExtra = {}) {
  const context = { idp: null };
  beforeAll(async () => {
    context.idp = await startMockIdp(idpOptions);
  });
  beforeEach(() => {
    context.idp.reset();
    obo.configure(optionsFor(context.idp, configureExtra));
  });
  afterAll(async () => {
    if (context.idp) await context.idp.close();
  });
  return context;
}

/** What `action()` throws, or undefined when it returns. */
function thrownBy(action) {
  try {
    action();
  } catch (err) {
    return err;
  }
  return undefined;
}

/** Settles a promise into `{ value }` or `{ error }`. */
const settle = (promise) => promise.then((value) => ({ value }), (error) => ({ error }));

/** Every string an error exposes: message, stack and each property, deeply. */
function textsOf(value, seen = new Set()) {
  if (value === null || value === undefined) return [];
  if (typeof value === 'string') return [value];
  if (typeof value !== 'object' || seen.has(value)) return [String(value)];
  seen.add(value);
  const texts = [];
  for (const name of new Set([...Object.getOwnPropertyNames(value), 'message', 'stack', 'cause'])) {
    texts.push(...textsOf(value[name], seen));
  }
  return texts;
}

module.exports = { obo, sleep, sleepUntil, untilExpired, until, optionsFor, useMockIdp, settle, thrownBy, textsOf };
