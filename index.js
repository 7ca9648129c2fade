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
const { createHash } = require('node:crypto');
const native = require('./loader.js');
const { resolveIdentity, describe } = require('./lib/identity.js');
const { Memo } = require('./lib/memo.js');

const GRAPH_PREFIX = 'Graph token acquisition failed: ';
const UNAUTHENTICATED = 'User must be authenticated via OpenID to perform OBO token exchange';
/** Memo entries per thread; past this the memo starts again (the native cache is unaffected). */
const MEMO_LIMIT = 10_000;
/** Memo hits are reported to the native counters in batches of this size. */
const HIT_BATCH = 4096;

const lacksSurrogates =
  typeof String.prototype.isWellFormed === 'function'
    ? (text) => text.isWellFormed()
    : (text) => !/\p{Surrogate}/u.test(text);

const view = native.generationsView();
/** This thread's memo, or null where the runtime has no external buffers (the memo is then off). */
const memo = view ? new Memo(new Uint32Array(view), MEMO_LIMIT) : null;
const generations = memo === null ? null : memo.generations;
let unreportedHits = 0;
let unreportedJoins = 0;
/** This thread's logger, or null: nothing is logged, and the addon produces no event. */
let logger = null;
/** The identity of the call under way; reused, so the hot path allocates nothing for it. */
const identity = { subject: '', tenant: '', issuer: '', error: undefined };

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
function log(level, message, error) {
  try {
    if (error === undefined) logger[level](message);
    else logger[level](message, error);
  } catch {
    // the host's logger failed; the exchange goes on
  }
}

function logHit(subject) {
  log('debug', `[OboTokenService] Using cached token for user: ${subject}`);
}

function forgetMemo() {
  if (memo !== null) memo.clear();
}

function countHit() {
  if (++unreportedHits >= HIT_BATCH) {
    native.addCacheHits(unreportedHits);
    unreportedHits = 0;
  }
}

/** The result callers read; `expires_at` only for callers that pass an identity context. */
function tokenResult(accessToken, expiresIn, scopes, expiresAt, withExpiry) {
  return withExpiry
    ? { access_token: accessToken, token_type: 'Bearer', expires_in: expiresIn, expires_at: expiresAt, scope: scopes }
    : { access_token: accessToken, token_type: 'Bearer', expires_in: expiresIn, scope: scopes };
}

function fromMemo(subject, scopes, tenant, issuer, accessToken, withExpiry) {
  const at = Date.now();
  const entry = memo.get(subject, scopes, tenant, issuer, accessToken, at);
  if (entry === undefined) return undefined;
  countHit();
  if (logger !== null) logHit(subject);
  const left = Math.ceil((entry.expiresAt - at) / 1000);
  return tokenResult(entry.token, left < entry.granted ? left : entry.granted, scopes, entry.expiresAt, withExpiry);
}

/**
 * LibreChat's variables (OpenID, proxy, Redis) as this thread sees them (jest and worker threads can
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
    azureFederatedTokenFile: env.AZURE_FEDERATED_TOKEN_FILE,
    useRedis: env.USE_REDIS,
    redisUri: env.REDIS_URI,
    useRedisCluster: env.USE_REDIS_CLUSTER,
    redisKeyPrefix: env.REDIS_KEY_PREFIX,
    redisUsername: env.REDIS_USERNAME,
    redisPassword: env.REDIS_PASSWORD,
    redisCa: env.REDIS_CA,
    credsKey: env.CREDS_KEY,
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
  if (failure.reason === 'invalid_claims') {
    return Object.assign(new TypeError(`acquireOboToken: ${failure.message}`), { option: 'claims' });
  }
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
 * The checks of the JavaScript service, with its messages; values of the
 * wrong type are a TypeError naming the argument. Reads the identity resolved
 * for this call. Returns an error to reject with, or undefined.
 */
function checkArguments(accessToken, scopes) {
  if (identity.error !== undefined) return identity.error;
  if (identity.subject === '') return new Error(UNAUTHENTICATED);
  if (!accessToken) return new Error('Access token is required for OBO exchange');
  if (typeof accessToken !== 'string') {
    return new TypeError(`exchangeOboToken: accessToken must be a string, not ${describe(accessToken)}`);
  }
  if (!scopes) return new Error('Scopes are required for OBO exchange');
  if (typeof scopes !== 'string') {
    return new TypeError(`exchangeOboToken: scopes must be a string, not ${describe(scopes)}`);
  }
  return undefined;
}

/** Text that cannot be sent as UTF-8 without loss would make keys collide. */
function checkEncodable(accessToken, scopes) {
  for (const [name, text] of [
    ['the OpenID subject', identity.subject],
    ['the tenant', identity.tenant],
    ['the issuer', identity.issuer],
    ['scopes', scopes],
    ['accessToken', accessToken],
  ]) {
    if (!lacksSurrogates(text)) {
      return new TypeError(`exchangeOboToken: ${name} contains a lone UTF-16 surrogate and cannot be encoded`);
    }
  }
  return undefined;
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
    if (event && logger !== null) log(event.level, event.message, event.failure ? toError(event.failure) : undefined);
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
function startExchange(tenant, issuer, subject, scopes, accessToken, fromCache, claims) {
  const id = (nextCallId = (nextCallId + 1) >>> 0);
  const env = generations === null || generations[native.ENV_SLOT] !== 0 ? openIdEnv() : undefined;
  const immediate = native.exchange(
    channel,
    id,
    tenant,
    issuer,
    subject,
    scopes,
    accessToken,
    fromCache,
    env,
    logger !== null,
    claims,
  );
  if (immediate !== null) return immediate;
  if (pendingCalls.size === 0) native.holdLoop(channel, true);
  return new Promise((resolve) => pendingCalls.set(id, resolve));
}

/**
 * This thread's exchanges under way that later calls with the same key join
 * in JavaScript, without a call into Rust (a fan-out of tool calls on a cold
 * key then costs one native call): subject → scopes → flights
 * `{ tenant, issuer, assertion, epoch, outcome }`. The native single flight
 * still joins calls from other threads.
 */
const flights = new Map();

function findFlight(subject, scopes, tenant, issuer, assertion) {
  const byScopes = flights.get(subject);
  if (byScopes === undefined) return undefined;
  const list = byScopes.get(scopes);
  if (list === undefined) return undefined;
  for (let i = 0; i < list.length; i++) {
    const flight = list[i];
    // A flight begun before a configure()/clearCache() (from any thread) is not joined.
    if (
      flight.assertion === assertion &&
      flight.tenant === tenant &&
      flight.issuer === issuer &&
      flight.epoch === generations[0]
    ) {
      return flight;
    }
  }
  return undefined;
}

function addFlight(subject, scopes, flight) {
  let byScopes = flights.get(subject);
  if (byScopes === undefined) {
    byScopes = new Map();
    flights.set(subject, byScopes);
  }
  const list = byScopes.get(scopes);
  if (list === undefined) byScopes.set(scopes, [flight]);
  else list.push(flight);
}

function removeFlight(subject, scopes, flight) {
  const byScopes = flights.get(subject);
  const list = byScopes === undefined ? undefined : byScopes.get(scopes);
  if (list === undefined) return;
  const at = list.indexOf(flight);
  if (at >= 0) list.splice(at, 1);
  if (list.length === 0) {
    byScopes.delete(scopes);
    if (byScopes.size === 0) flights.delete(subject);
  }
}

function countJoin() {
  if (++unreportedJoins >= HIT_BATCH) {
    native.addJoins(unreportedJoins);
    unreportedJoins = 0;
  }
}

/**
 * The miss path: joins this thread's exchange under way for the same key, or
 * starts one. Each caller gets its own result or Error.
 */
function exchangeNatively(tenant, issuer, subject, scopes, accessToken, fromCache, withExpiry, claims) {
  const joinable = fromCache && claims === undefined && generations !== null;
  if (joinable) {
    const flight = findFlight(subject, scopes, tenant, issuer, accessToken);
    if (flight !== undefined) return joinFlight(flight, subject, scopes, withExpiry);
  }
  const outcome = startExchange(tenant, issuer, subject, scopes, accessToken, fromCache, claims);
  if (joinable && typeof outcome.then === 'function') {
    const flight = { tenant, issuer, assertion: accessToken, epoch: generations[0], outcome };
    addFlight(subject, scopes, flight);
    outcome.then(() => removeFlight(subject, scopes, flight));
  }
  return settleWith(outcome, scopes, withExpiry);
}

function joinFlight(flight, subject, scopes, withExpiry) {
  countJoin();
  if (logger !== null) log('debug', `[OboTokenService] Joining in-flight OBO exchange for user: ${subject}`);
  return settleWith(flight.outcome, scopes, withExpiry);
}

/** `async` so that the promise belongs to this module's realm (the caller's), as the JavaScript service's did. */
async function settleWith(pending, scopes, withExpiry) {
  const outcome = await pending;
  if (outcome.failure) throw toError(outcome.failure);
  return tokenResult(outcome.accessToken, outcome.expiresIn, scopes, outcome.expiresAtMs, withExpiry);
}

/**
 * Exchanges `accessToken` for a token scoped to `scopes`, on behalf of the
 * user `identityContext` (else `user`) names.
 * @returns {Promise<{access_token: string, token_type: 'Bearer', expires_in: number, expires_at?: number, scope: string}>}
 */
function exchangeOboToken(user, accessToken, scopes, fromCache = true, identityContext = undefined) {
  const withExpiry = identityContext !== undefined && identityContext !== null;
  try {
    resolveIdentity(user, identityContext, identity);
  } catch (err) {
    return Promise.reject(err);
  }
  const { subject, tenant, issuer } = identity;
  // Every argument is valid when the memo can answer, so the checks below can wait.
  if (
    fromCache &&
    memo !== null &&
    subject !== '' &&
    typeof scopes === 'string' &&
    typeof accessToken === 'string' &&
    accessToken !== '' &&
    identity.error === undefined
  ) {
    const hit = fromMemo(subject, scopes, tenant, issuer, accessToken, withExpiry);
    if (hit !== undefined) return Promise.resolve(hit);
    // The same strings as a flight's, which were checked when it began.
    const flight = findFlight(subject, scopes, tenant, issuer, accessToken);
    if (flight !== undefined) return joinFlight(flight, subject, scopes, withExpiry);
  }
  const invalid = checkArguments(accessToken, scopes) || checkEncodable(accessToken, scopes);
  if (invalid) return Promise.reject(invalid);
  try {
    if (fromCache) {
      const hit = native.lookup(tenant, issuer, subject, scopes, accessToken);
      if (hit) {
        if (memo !== null) memo.remember(subject, scopes, tenant, issuer, accessToken, hit);
        if (logger !== null) logHit(subject);
        return Promise.resolve(tokenResult(hit.accessToken, hit.expiresIn, scopes, hit.expiresAtMs, withExpiry));
      }
    }
    return exchangeNatively(tenant, issuer, subject, scopes, accessToken, Boolean(fromCache), withExpiry);
  } catch (err) {
    return Promise.reject(err);
  }
}

/**
 * The same exchange, for Microsoft Graph; a failure rejects with
 * `Graph token acquisition failed: <cause>` and the cause as `cause`.
 */
async function getGraphApiToken(user, accessToken, scopes, fromCache = true, identityContext = undefined) {
  try {
    return await exchangeOboToken(user, accessToken, scopes, fromCache, identityContext);
  } catch (cause) {
    const message = cause && typeof cause.message === 'string' ? cause.message : String(cause);
    const err = new Error(GRAPH_PREFIX + message, { cause });
    for (const name of ['retryable', 'oboFailureReason', 'status', 'code', 'retryAfter']) {
      if (cause && cause[name] !== undefined) err[name] = cause[name];
    }
    throw err;
  }
}

const ACQUIRE = 'acquireOboToken';

/** `scopes` as a string or an array of scopes; '' when there is none. */
function scopeText(scopes) {
  if (typeof scopes === 'string') return scopes.trim();
  if (!Array.isArray(scopes)) {
    throw Object.assign(new TypeError(`${ACQUIRE}: scopes must be a string or an array of strings, not ${describe(scopes)}`), {
      option: 'scopes',
    });
  }
  const parts = [];
  for (const scope of scopes) {
    if (typeof scope !== 'string') {
      throw Object.assign(new TypeError(`${ACQUIRE}: scopes must hold strings, not ${describe(scope)}`), { option: 'scopes' });
    }
    if (scope.trim() !== '') parts.push(scope.trim());
  }
  return parts.join(' ');
}

/**
 * The identity of an `acquireOboToken` call: from `user`/`identityContext`
 * when given, else from the assertion's own claims (`tid`, `iss`, `oid` or
 * else `sub`), read without verification: they only key the cache, whose key
 * also holds the assertion's digest.
 */
function acquireIdentity(user, identityContext, assertion) {
  const out = { subject: '', tenant: '', issuer: '', error: undefined };
  if ((user !== undefined && user !== null) || (identityContext !== undefined && identityContext !== null)) {
    resolveIdentity(user, identityContext, out);
    if (out.error !== undefined) throw new TypeError(out.error.message.replace(/^exchangeOboToken:/, `${ACQUIRE}:`));
    if (out.subject === '') throw new Error(UNAUTHENTICATED);
    return out;
  }
  const claims = native.assertionIdentity(assertion);
  if (claims === null || claims.subject == null) {
    throw Object.assign(
      new TypeError(`${ACQUIRE}: the assertion is not a JWT naming its user (oid or sub); pass user or identityContext`),
      { option: 'identityContext' },
    );
  }
  // The claims stand where an identity context would: the same trimming, defaults and issuer rules.
  return resolveIdentity(
    undefined,
    { openidSubject: claims.subject, tenantId: claims.tenant, openidIssuer: claims.issuer },
    out,
  );
}

/**
 * The options-object API beside the drop-in: exchanges `assertion` for a
 * token scoped to `scopes` (a string or an array). `forceRefresh` skips the
 * cache; `claims` (a claims challenge) skips the cache and the flights, and
 * its token is cached like any other. The result always has `expires_at`.
 * @returns {Promise<{access_token: string, token_type: 'Bearer', expires_in: number, expires_at: number, scope: string}>}
 */
async function acquireOboToken(options) {
  if (options === null || typeof options !== 'object' || Array.isArray(options)) {
    throw new TypeError(`${ACQUIRE}: options must be an object, not ${describe(options)}`);
  }
  const { assertion, user, identityContext, forceRefresh = false, claims } = options;
  if (typeof assertion !== 'string' || assertion === '') {
    throw Object.assign(new TypeError(`${ACQUIRE}: assertion must be a non-empty string (the user's access token)`), {
      option: 'assertion',
    });
  }
  const scopes = scopeText(options.scopes);
  if (scopes === '') throw Object.assign(new TypeError(`${ACQUIRE}: scopes are required`), { option: 'scopes' });
  if (claims !== undefined && claims !== null && typeof claims !== 'string') {
    throw Object.assign(new TypeError(`${ACQUIRE}: claims must be a string (a claims challenge), not ${describe(claims)}`), {
      option: 'claims',
    });
  }
  const { subject, tenant, issuer } = acquireIdentity(user, identityContext, assertion);
  for (const [name, text] of [['the subject', subject], ['the tenant', tenant], ['the issuer', issuer], ['scopes', scopes], ['assertion', assertion]]) {
    if (!lacksSurrogates(text)) throw new TypeError(`${ACQUIRE}: ${name} contains a lone UTF-16 surrogate and cannot be encoded`);
  }
  const challenge = claims === undefined || claims === null ? undefined : claims;
  const fromCache = !forceRefresh && challenge === undefined;
  if (fromCache) {
    if (memo !== null) {
      const hit = fromMemo(subject, scopes, tenant, issuer, assertion, true);
      if (hit !== undefined) return hit;
    }
    const hit = native.lookup(tenant, issuer, subject, scopes, assertion);
    if (hit) {
      if (memo !== null) memo.remember(subject, scopes, tenant, issuer, assertion, hit);
      if (logger !== null) logHit(subject);
      return tokenResult(hit.accessToken, hit.expiresIn, scopes, hit.expiresAtMs, true);
    }
  }
  return exchangeNatively(tenant, issuer, subject, scopes, assertion, fromCache, true, challenge);
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
  let assertionFunction = null;
  for (const name of Object.keys(options)) {
    const value = options[name];
    if (name === 'logger') {
      nextLogger = checkLogger(value, 'configure');
      continue;
    }
    if (value === undefined || value === null) continue;
    if (name === 'clientAssertion' && typeof value === 'function') {
      assertionFunction = assertionBridge(value);
      continue;
    }
    if (name === 'clientCapabilities' && Array.isArray(value)) {
      // Checked natively (strings only, no blanks); copied so later changes to the caller's array do not count.
      plain[name] = Array.from(value);
      continue;
    }
    const type = typeof value;
    if (type === 'number' && !Number.isFinite(value)) {
      throw Object.assign(new TypeError(`configure: option "${name}" must be a finite number`), { option: name });
    }
    if (type !== 'string' && type !== 'number' && type !== 'boolean') {
      throw Object.assign(new TypeError(`configure: option "${name}" must not be ${describe(value)}`), { option: name });
    }
    plain[name] = value;
  }
  const failure = native.configure(JSON.stringify(plain), assertionFunction);
  if (failure) throw Object.assign(new TypeError(failure.message), { option: failure.option });
  logger = nextLogger;
  forgetMemo();
}

/**
 * A `clientAssertion` function as the addon calls it: with the client id and
 * the token endpoint of the request, on this thread. The promise it returns
 * always resolves, to the assertion or to why there is none, so that no
 * JavaScript error object has to travel to another thread.
 */
function assertionBridge(provide) {
  return async (clientId, tokenEndpoint) => {
    try {
      const assertion = await provide({ clientId, tokenEndpoint });
      if (typeof assertion !== 'string') return { error: `it returned ${describe(assertion)}, not a string` };
      return { assertion };
    } catch (err) {
      let why;
      try {
        why = err !== null && typeof err === 'object' && typeof err.message === 'string' ? err.message : String(err);
      } catch {
        why = 'it threw a value that cannot be shown';
      }
      return { error: why };
    }
  };
}

/** Sets this thread's logger (winston, pino, console…) without touching the configuration; `null` silences it. */
function setLogger(candidate) {
  logger = checkLogger(candidate, 'setLogger');
}

/**
 * Forgets every cached token and remembered throttle of this process, in
 * every thread. A shared Redis tier keeps its entries (the other instances
 * use them; they expire on their own): `fromCache = false` replaces one.
 */
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
  const counters = native.stats(unreportedHits, unreportedJoins);
  unreportedHits = 0;
  unreportedJoins = 0;
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
    redisHits: counters.redisHits,
    redisMisses: counters.redisMisses,
    redisErrors: counters.redisErrors,
    lockWaits: counters.lockWaits,
  };
}

/**
 * LibreChat's cache key for a call: `tenant␟issuer␟subject␟scopes␟sha256hex(assertion)`,
 * or null without a subject. Exported so that LibreChat's own tests can
 * compute keys; the package keys by a digest of the same five parts.
 */
function buildOboCacheKey({ user, accessToken, scopes, identityContext } = {}) {
  const resolved = resolveIdentity(user, identityContext, { subject: '', tenant: '', issuer: '', error: undefined });
  if (resolved.error !== undefined) throw resolved.error;
  if (resolved.subject === '') return null;
  const digest = createHash('sha256')
    .update(typeof accessToken === 'string' ? accessToken : String(accessToken ?? ''))
    .digest('hex');
  return [resolved.tenant, resolved.issuer, resolved.subject, scopes, digest].join('\x1f');
}

/** For tests: what this thread's memo holds. */
function memoStats() {
  return memo === null ? { entries: 0, subjects: 0 } : { entries: memo.size, subjects: memo.subjects };
}

const __internals = { buildOboCacheKey, memoStats };

module.exports = {
  exchangeOboToken,
  acquireOboToken,
  getGraphApiToken,
  configure,
  setLogger,
  clearCache,
  stats,
  tokenEndpoint,
  __internals,
};
