'use strict';
/**
 * obo-native: the OAuth 2.0 On-Behalf-Of token exchange, in Rust.
 *
 * This facade keeps the JavaScript contract of LibreChat's OboTokenService
 * (argument checks and messages, result shape, rejections) and a per-thread
 * memo of hot tokens. The cache, single flight, retries and HTTP live in the
 * native addon; the memo only mirrors what the native cache holds, and is
 * checked against generation counters the addon keeps current in memory this
 * thread can read, so a memo hit costs no call into Rust.
 */
const native = require('./binding.js');

const GRAPH_PREFIX = 'Graph token acquisition failed: ';
/** Memo entries per thread; past this the memo starts again (the native cache is unaffected). */
const MEMO_LIMIT = 10_000;
/** Memo hits are reported to the native counters in batches of this size. */
const HIT_BATCH = 4096;

const now = () => performance.now();
const lacksSurrogates =
  typeof String.prototype.isWellFormed === 'function'
    ? (text) => text.isWellFormed()
    : (text) => !/\p{Surrogate}/u.test(text);

const view = native.generationsView();
/** This thread's copy of the native cache's generation counters, or null (memo off). */
const generations = view ? new Uint32Array(view) : null;
/** openidId → scopes → { token, granted, serveUntil, expiresAt, epoch, slot, generation } */
let memo = new Map();
let memoSize = 0;
let unreportedHits = 0;
/** This thread's logger, or null: nothing is logged, and the addon produces no event. */
let logger = null;

const LOGGER_METHODS = ['debug', 'info', 'warn', 'error'];

function checkLogger(candidate, where) {
  if (candidate === null || candidate === undefined) return null;
  if (typeof candidate !== 'object' && typeof candidate !== 'function') {
    throw Object.assign(new TypeError(`${where}: logger must be an object with ${LOGGER_METHODS.join('/')} methods`), {
      option: 'logger',
    });
  }
  const missing = LOGGER_METHODS.filter((name) => typeof candidate[name] !== 'function');
  if (missing.length > 0) {
    throw Object.assign(new TypeError(`${where}: logger has no ${missing.join('/')} method`), { option: 'logger' });
  }
  return candidate;
}

/** A logger that throws must not break an exchange. */
function log(level, message) {
  try {
    logger[level](message);
  } catch {
    // the host's logger failed; the exchange goes on
  }
}

function logHit(openidId, scopes) {
  log('debug', `[OboTokenService] Using cached OBO token for user ${openidId} and scopes ${scopes}`);
}

function forgetMemo() {
  memo = new Map();
  memoSize = 0;
}

function countHit() {
  if (++unreportedHits >= HIT_BATCH) {
    native.addCacheHits(unreportedHits);
    unreportedHits = 0;
  }
}

function fromMemo(openidId, scopes) {
  const byScopes = memo.get(openidId);
  if (byScopes === undefined) return undefined;
  const entry = byScopes.get(scopes);
  if (entry === undefined) return undefined;
  const at = now();
  if (
    generations[0] !== entry.epoch ||
    generations[entry.slot] !== entry.generation ||
    at >= entry.serveUntil
  ) {
    byScopes.delete(scopes);
    memoSize--;
    return undefined;
  }
  countHit();
  if (logger !== null) logHit(openidId, scopes);
  const left = Math.ceil((entry.expiresAt - at) / 1000);
  return {
    access_token: entry.token,
    token_type: 'Bearer',
    expires_in: left < entry.granted ? left : entry.granted,
    scope: scopes,
  };
}

function remember(openidId, scopes, hit) {
  if (generations === null) return;
  if (memoSize >= MEMO_LIMIT) forgetMemo();
  let byScopes = memo.get(openidId);
  if (byScopes === undefined) {
    byScopes = new Map();
    memo.set(openidId, byScopes);
  }
  const at = now();
  if (!byScopes.has(scopes)) memoSize++;
  byScopes.set(scopes, {
    token: hit.accessToken,
    granted: hit.granted,
    serveUntil: at + hit.serveForMs,
    expiresAt: at + hit.expiresAfterMs,
    epoch: hit.epoch,
    slot: hit.slot,
    generation: hit.generation,
  });
}

/**
 * LibreChat's variables as this thread sees them (jest and worker threads can
 * have their own `process.env`); sent only while the addon says it still
 * needs the environment (ENV_SLOT), since reading `process.env` is not free.
 */
function openIdEnv() {
  const env = process.env;
  return {
    openidIssuer: env.OPENID_ISSUER,
    openidClientId: env.OPENID_CLIENT_ID,
    openidClientSecret: env.OPENID_CLIENT_SECRET,
    openidTokenEndpointAuthMethod: env.OPENID_TOKEN_ENDPOINT_AUTH_METHOD,
    proxy: env.PROXY,
  };
}

const OAUTH_FIELDS = [
  ['error', 'error'],
  ['errorDescription', 'error_description'],
  ['errorCodes', 'error_codes'],
  ['correlationId', 'correlation_id'],
  ['traceId', 'trace_id'],
  ['timestamp', 'timestamp'],
  ['suberror', 'suberror'],
  ['claims', 'claims'],
];

/** The rejection of a failed exchange, shaped as LibreChat's callers read it. */
function toError(failure) {
  const err = new Error(failure.message);
  if (failure.reason === 'config_unavailable') return err;
  err.retryable = failure.retryable;
  err.oboFailureReason = failure.reason;
  if (failure.status != null) err.status = failure.status;
  if (failure.code != null) err.code = failure.code;
  for (const [from, to] of OAUTH_FIELDS) {
    if (failure[from] != null) err[to] = failure[from];
  }
  if (failure.retryAfter != null) err.retryAfter = failure.retryAfter;
  if (failure.throttled) err.throttled = true;
  return err;
}

/**
 * The checks of the JavaScript service, in its order and with its messages;
 * values of the wrong type are a TypeError naming the argument.
 * Returns an error to reject with, or undefined.
 */
function checkArguments(openidId, user, accessToken, scopes, fromCache) {
  if (user !== null && user !== undefined && typeof user !== 'object' && typeof user !== 'function') {
    return new TypeError(`exchangeOboToken: user must be an object with an openidId, not ${describe(user)}`);
  }
  if (openidId === undefined || openidId === null || openidId === '') {
    return new Error('User must be authenticated via OpenID to perform OBO token exchange');
  }
  if (typeof openidId !== 'string') {
    return new TypeError(`exchangeOboToken: user.openidId must be a string, not ${describe(openidId)}`);
  }
  if (!accessToken) return new Error('Access token is required for OBO exchange');
  if (typeof accessToken !== 'string') {
    return new TypeError(`exchangeOboToken: accessToken must be a string, not ${describe(accessToken)}`);
  }
  if (!scopes) return new Error('Scopes are required for OBO exchange');
  if (typeof scopes !== 'string') {
    return new TypeError(`exchangeOboToken: scopes must be a string, not ${describe(scopes)}`);
  }
  if (typeof fromCache !== 'boolean') {
    return new TypeError(`exchangeOboToken: fromCache must be a boolean, not ${describe(fromCache)}`);
  }
  return undefined;
}

/** Text that cannot be sent as UTF-8 without loss would make keys collide. */
function checkEncodable(openidId, accessToken, scopes) {
  for (const [name, text] of [
    ['user.openidId', openidId],
    ['scopes', scopes],
    ['accessToken', accessToken],
  ]) {
    if (!lacksSurrogates(text)) {
      return new TypeError(`exchangeOboToken: ${name} contains a lone UTF-16 surrogate and cannot be encoded`);
    }
  }
  return undefined;
}

function describe(value) {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'an array';
  const type = typeof value;
  return type === 'object' ? 'an object' : type === 'undefined' ? 'undefined' : `a ${type}`;
}

/** Resolvers of this thread's exchanges under way, by call id. */
const pendingCalls = new Map();
let nextCallId = 0;

/**
 * Called by the addon, on this thread, with a log event of an exchange as it
 * happens, or with its outcome when it finishes.
 */
function complete(id, outcome, event) {
  if (outcome === undefined || outcome === null) {
    if (event && logger !== null) log(event.level, event.message);
    return;
  }
  const settle = pendingCalls.get(id);
  pendingCalls.delete(id);
  if (pendingCalls.size === 0) native.holdLoop(channel, false);
  if (settle !== undefined) settle(outcome);
}
/** This module's channel for the news of its exchanges (an opaque native handle). */
const channel = native.onCompletion(complete);

/** The native outcome of one exchange: at once when it cannot start, else when it finishes. */
function startExchange(openidId, scopes, accessToken, fromCache) {
  const id = (nextCallId = (nextCallId + 1) >>> 0);
  const env = generations === null || generations[native.ENV_SLOT] !== 0 ? openIdEnv() : undefined;
  const immediate = native.exchange(channel, id, openidId, scopes, accessToken, fromCache, env, logger !== null);
  if (immediate !== null) return immediate;
  if (pendingCalls.size === 0) native.holdLoop(channel, true);
  return new Promise((resolve) => pendingCalls.set(id, resolve));
}

/**
 * The miss path. `async` so that the promise belongs to this module's realm
 * (the caller's), as the JavaScript service's did.
 */
async function exchangeNatively(openidId, scopes, accessToken, fromCache) {
  const outcome = await startExchange(openidId, scopes, accessToken, fromCache);
  if (outcome.failure) throw toError(outcome.failure);
  return {
    access_token: outcome.accessToken,
    token_type: 'Bearer',
    expires_in: outcome.expiresIn,
    scope: scopes,
  };
}

/**
 * Exchanges `accessToken` for a token scoped to `scopes`, on behalf of `user`.
 * @returns {Promise<{access_token: string, token_type: 'Bearer', expires_in: number, scope: string}>}
 */
function exchangeOboToken(user, accessToken, scopes, fromCache = true) {
  let openidId;
  try {
    openidId = user === null || user === undefined ? undefined : user.openidId;
  } catch (err) {
    return Promise.reject(err);
  }
  // Every argument is valid when the memo can answer, so the checks below can wait.
  if (
    fromCache === true &&
    generations !== null &&
    typeof openidId === 'string' &&
    typeof scopes === 'string' &&
    typeof accessToken === 'string' &&
    accessToken !== ''
  ) {
    const hit = fromMemo(openidId, scopes);
    if (hit !== undefined) return Promise.resolve(hit);
  }
  const invalid = checkArguments(openidId, user, accessToken, scopes, fromCache) ||
    checkEncodable(openidId, accessToken, scopes);
  if (invalid) return Promise.reject(invalid);
  try {
    if (fromCache) {
      const hit = native.lookup(openidId, scopes);
      if (hit) {
        remember(openidId, scopes, hit);
        if (logger !== null) logHit(openidId, scopes);
        return Promise.resolve({
          access_token: hit.accessToken,
          token_type: 'Bearer',
          expires_in: hit.expiresIn,
          scope: scopes,
        });
      }
    }
    return exchangeNatively(openidId, scopes, accessToken, fromCache);
  } catch (err) {
    return Promise.reject(err);
  }
}

/**
 * The same exchange, for Microsoft Graph; a failure rejects with
 * `Graph token acquisition failed: <cause>` and the cause as `cause`.
 */
async function getGraphApiToken(user, accessToken, scopes, fromCache = true) {
  try {
    return await exchangeOboToken(user, accessToken, scopes, fromCache);
  } catch (cause) {
    const message = cause && typeof cause.message === 'string' ? cause.message : String(cause);
    const err = new Error(GRAPH_PREFIX + message, { cause });
    for (const name of ['retryable', 'oboFailureReason', 'status', 'code', 'retryAfter']) {
      if (cause && cause[name] !== undefined) err[name] = cause[name];
    }
    throw err;
  }
}

/**
 * Replaces the whole configuration (this thread's logger included) and
 * empties the cache; `null` returns to LibreChat's environment variables and
 * keeps the logger. Invalid options throw a TypeError naming the option, and
 * the configuration in force stays as it was.
 */
function configure(options) {
  if (options === null || options === undefined) {
    native.configure(null);
    forgetMemo();
    return;
  }
  if (typeof options !== 'object' || Array.isArray(options)) {
    throw new TypeError(`configure: options must be an object or null, not ${describe(options)}`);
  }
  const plain = {};
  let nextLogger = null;
  for (const name of Object.keys(options)) {
    const value = options[name];
    if (name === 'logger') {
      nextLogger = checkLogger(value, 'configure');
      continue;
    }
    if (value === undefined || value === null) continue;
    const type = typeof value;
    if (type === 'number' && !Number.isFinite(value)) {
      throw Object.assign(new TypeError(`configure: option "${name}" must be a finite number`), { option: name });
    }
    if (type !== 'string' && type !== 'number' && type !== 'boolean') {
      throw Object.assign(new TypeError(`configure: option "${name}" must not be ${describe(value)}`), { option: name });
    }
    plain[name] = value;
  }
  const failure = native.configure(JSON.stringify(plain));
  if (failure) throw Object.assign(new TypeError(failure.message), { option: failure.option });
  logger = nextLogger;
  forgetMemo();
}

/** Sets this thread's logger (winston, pino, console…) without touching the configuration; `null` silences it. */
function setLogger(candidate) {
  logger = checkLogger(candidate, 'setLogger');
}

/** Forgets every cached token and remembered throttle, in every thread. */
function clearCache() {
  native.clearCache();
  forgetMemo();
}

/**
 * The token endpoint in use: the configured one, or the one discovered from
 * the issuer by an exchange; null before discovery.
 */
function tokenEndpoint() {
  return native.tokenEndpoint();
}

/** Counters since the package was loaded, for the whole process. */
function stats() {
  const counters = native.stats(unreportedHits);
  unreportedHits = 0;
  return {
    cacheHits: counters.cacheHits,
    cacheMisses: counters.cacheMisses,
    coalesced: counters.coalesced,
    exchanges: counters.exchanges,
    retries: counters.retries,
    failures: counters.failures,
    throttled: counters.throttled,
    cacheSize: counters.cacheSize,
    inFlight: counters.inFlight,
  };
}

module.exports = { exchangeOboToken, getGraphApiToken, configure, setLogger, clearCache, stats, tokenEndpoint };
