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
 *
 * Each client (the module's top-level functions are the default one,
 * `createOboClient()` makes others) is a native engine handle with this
 * state around it: its memo, its exchanges under way, its logger.
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
function log(logger, level, message, error) {
  try {
    if (error === undefined) logger[level](message);
    else logger[level](message, error);
  } catch {
    // the host's logger failed; the exchange goes on
  }
}

/** The result callers read; `expires_at` only for callers that pass an identity context. */
function tokenResult(accessToken, expiresIn, scopes, expiresAt, withExpiry) {
  return withExpiry
    ? { access_token: accessToken, token_type: 'Bearer', expires_in: expiresIn, expires_at: expiresAt, scope: scopes }
    : { access_token: accessToken, token_type: 'Bearer', expires_in: expiresIn, scope: scopes };
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
    redisKeyPrefixVar: env.REDIS_KEY_PREFIX_VAR,
    // LibreChat's indirection: REDIS_KEY_PREFIX_VAR names the variable that holds the prefix.
    redisKeyPrefixFromVar: env.REDIS_KEY_PREFIX_VAR ? env[env.REDIS_KEY_PREFIX_VAR] : undefined,
    redisUsername: env.REDIS_USERNAME,
    redisPassword: env.REDIS_PASSWORD,
    redisCa: env.REDIS_CA,
    credsKey: env.CREDS_KEY,
    oboGrantType: env.OBO_GRANT_TYPE,
    oboAudience: env.OBO_AUDIENCE,
    oboResource: env.OBO_RESOURCE,
    oboSubjectTokenType: env.OBO_SUBJECT_TOKEN_TYPE,
    oboRequestedTokenType: env.OBO_REQUESTED_TOKEN_TYPE,
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
function toError(failure, where = 'acquireOboToken') {
  if (failure.reason === 'invalid_claims') {
    return Object.assign(new TypeError(`${where}: ${failure.message}`), { option: 'claims' });
  }
  if (failure.reason === 'invalid_option') {
    return Object.assign(new TypeError(`${where}: ${failure.message}`), { option: failure.code });
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

/** What a call to a closed client rejects with (the addon's words, should one get that far). */
const CLIENT_CLOSED = 'obo-native: this OBO client is closed (close() was called); create another one';
const CLIENT_CLOSED_CODE = 'ERR_OBO_CLIENT_CLOSED';

function closedError() {
  return Object.assign(new Error(CLIENT_CLOSED), { code: CLIENT_CLOSED_CODE });
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

const ACQUIRE = 'acquireOboToken';

/** `scopes` as a string or an array of scopes; '' when there is none. */
function scopeText(scopes, where = ACQUIRE) {
  if (typeof scopes === 'string') return scopes.trim();
  if (!Array.isArray(scopes)) {
    throw Object.assign(new TypeError(`${where}: scopes must be a string or an array of strings, not ${describe(scopes)}`), {
      option: 'scopes',
    });
  }
  const parts = [];
  for (const scope of scopes) {
    if (typeof scope !== 'string') {
      throw Object.assign(new TypeError(`${where}: scopes must hold strings, not ${describe(scope)}`), { option: 'scopes' });
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
function acquireIdentity(user, identityContext, assertion, where = ACQUIRE) {
  const out = { subject: '', tenant: '', issuer: '', error: undefined };
  if ((user !== undefined && user !== null) || (identityContext !== undefined && identityContext !== null)) {
    resolveIdentity(user, identityContext, out);
    if (out.error !== undefined) throw new TypeError(out.error.message.replace(/^exchangeOboToken:/, `${where}:`));
    if (out.subject === '') throw new Error(UNAUTHENTICATED);
    return out;
  }
  const claims = native.assertionIdentity(assertion);
  if (claims === null) {
    throw Object.assign(
      new TypeError(`${where}: the assertion is not a JWT naming its user (oid or sub); pass user or identityContext`),
      { option: 'identityContext' },
    );
  }
  // A JWT whose oid and sub are absent or blank names no user: as for a user without an OpenID id.
  if (claims.subject == null) throw new Error(UNAUTHENTICATED);
  // The claims stand where an identity context would: the same trimming, defaults and issuer rules.
  resolveIdentity(undefined, { openidSubject: claims.subject, tenantId: claims.tenant, openidIssuer: claims.issuer }, out);
  if (out.subject === '') throw new Error(UNAUTHENTICATED);
  return out;
}

/** `signal`: absent, or an AbortSignal (anything with `aborted` and `addEventListener`). */
function checkSignal(signal, where = ACQUIRE) {
  if (signal === undefined || signal === null) return undefined;
  if (
    typeof signal !== 'object' ||
    typeof signal.aborted !== 'boolean' ||
    typeof signal.addEventListener !== 'function' ||
    typeof signal.removeEventListener !== 'function'
  ) {
    throw Object.assign(new TypeError(`${where}: signal must be an AbortSignal, not ${describe(signal)}`), {
      option: 'signal',
    });
  }
  return signal;
}

/**
 * A call's own `audience` or `resource` (token exchange): a string or an
 * array of strings, as an array; undefined when not given. Values are
 * checked natively (blank audiences, resources that are no absolute URI).
 */
function targetList(value, name, where = ACQUIRE) {
  if (value === undefined || value === null) return undefined;
  if (typeof value === 'string') return [value];
  if (Array.isArray(value) && value.every((entry) => typeof entry === 'string')) return Array.from(value);
  throw Object.assign(new TypeError(`${where}: ${name} must be a string or an array of strings, not ${describe(value)}`), {
    option: name,
  });
}

/** What the memo and this thread's flights compare a call's own audiences and resources by; '' for none. */
function targetText(audiences, resources) {
  return audiences === undefined && resources === undefined ? '' : JSON.stringify([audiences ?? null, resources ?? null]);
}

/** What an aborted signal rejects with: its reason, as `fetch` does. */
function abortReason(signal) {
  return signal.reason !== undefined ? signal.reason : new DOMException('This operation was aborted', 'AbortError');
}

/**
 * The calls of this thread waiting on each signal: one `abort` listener per
 * signal however many calls share it (a request's signal passed to every
 * tool call would otherwise pass Node.js's listener warning at 11).
 */
const waitingOn = new WeakMap();

function stopWaiting(signal, waiting, reject) {
  waiting.rejects.delete(reject);
  if (waiting.rejects.size === 0 && waitingOn.get(signal) === waiting) {
    waitingOn.delete(signal);
    signal.removeEventListener('abort', waiting.onAbort);
  }
}

/**
 * `pending`, or the signal's reason as soon as it aborts. The exchange under
 * way is not stopped (other callers may share it, and its token is cached);
 * its outcome is then dropped here. The signal's listener goes when its last
 * call settles or when it aborts.
 */
function abortable(pending, signal) {
  return new Promise((resolve, reject) => {
    let waiting = waitingOn.get(signal);
    if (waiting === undefined) {
      const rejects = new Set();
      const onAbort = () => {
        waitingOn.delete(signal);
        const reason = abortReason(signal);
        for (const rejectOne of rejects) rejectOne(reason);
        rejects.clear();
      };
      waiting = { rejects, onAbort };
      waitingOn.set(signal, waiting);
      signal.addEventListener('abort', onAbort, { once: true });
    }
    const current = waiting;
    current.rejects.add(reject);
    pending.then(
      (result) => {
        stopWaiting(signal, current, reject);
        resolve(result);
      },
      (err) => {
        stopWaiting(signal, current, reject);
        reject(err);
      },
    );
  });
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
      // Whether a later call may succeed is the function's to say, never guessed from its wording.
      let retryable;
      try {
        if (err !== null && typeof err === 'object' && typeof err.retryable === 'boolean') retryable = err.retryable;
      } catch {
        retryable = undefined;
      }
      const why = whyItFailed(err);
      return retryable === undefined ? { error: why } : { error: why, retryable };
    }
  };
}

/** What a host function's failure says, without trusting it to be an Error. */
function whyItFailed(err) {
  try {
    return err !== null && typeof err === 'object' && typeof err.message === 'string' ? err.message : String(err);
  } catch {
    return 'it threw a value that cannot be shown';
  }
}

/**
 * The options of `configure()`/`createOboClient()` as the addon reads them:
 * plain values as JSON, the functions apart. Throws a TypeError naming a
 * value that cannot be sent.
 */
function nativeOptions(options, where) {
  const plain = {};
  let logger = null;
  let assertionFunction = null;
  let storeFunction = null;
  let actorFunction = null;
  for (const name of Object.keys(options)) {
    const value = options[name];
    if (name === 'logger') {
      logger = checkLogger(value, where);
      continue;
    }
    if (value === undefined || value === null) continue;
    if (name === 'sessionStore') {
      storeFunction = storeBridge(checkSessionStore(value, where));
      continue;
    }
    if (name === 'clientAssertion' && typeof value === 'function') {
      assertionFunction = assertionBridge(value);
      continue;
    }
    if (name === 'actorToken' && typeof value === 'function') {
      actorFunction = assertionBridge(value);
      continue;
    }
    if ((name === 'clientCapabilities' || name === 'audience' || name === 'resource') && Array.isArray(value)) {
      // Checked natively (strings only, no blanks); copied so later changes to the caller's array do not count.
      plain[name] = Array.from(value);
      continue;
    }
    const type = typeof value;
    if (type === 'number' && !Number.isFinite(value)) {
      throw Object.assign(new TypeError(`${where}: option "${name}" must be a finite number`), { option: name });
    }
    if (type !== 'string' && type !== 'number' && type !== 'boolean') {
      throw Object.assign(new TypeError(`${where}: option "${name}" must not be ${describe(value)}`), { option: name });
    }
    plain[name] = value;
  }
  return { json: JSON.stringify(plain), logger, assertionFunction, actorFunction, storeFunction };
}

// ---- Long-running On-Behalf-Of sessions: checks and the store bridge -----

const BEGIN = 'beginOboSession';
const SESSION_TOKEN = 'acquireSessionToken';
const END = 'endOboSession';
const STORE_FUNCTIONS = ['get', 'set', 'delete'];

/** `sessionStore: { get(id), set(id, value, ttlMs), delete(id) }`, checked. */
function checkSessionStore(store, where) {
  if (typeof store !== 'object' || Array.isArray(store)) {
    throw Object.assign(
      new TypeError(`${where}: option "sessionStore" must be an object with ${STORE_FUNCTIONS.join('/')} functions, not ${describe(store)}`),
      { option: 'sessionStore' },
    );
  }
  const missing = STORE_FUNCTIONS.filter((name) => typeof store[name] !== 'function');
  if (missing.length > 0) {
    throw Object.assign(new TypeError(`${where}: option "sessionStore" has no ${missing.join('/')} function`), { option: 'sessionStore' });
  }
  return store;
}

/**
 * A `sessionStore` as the addon calls it, on this thread: one function for
 * the three operations, whose promise always resolves (to the value read, or
 * to why the host's function failed).
 */
function storeBridge(store) {
  return async (operation, id, value, ttlMs) => {
    try {
      if (operation === 'get') {
        const found = await store.get(id);
        if (found === undefined || found === null) return {};
        if (typeof found !== 'string') return { error: `get resolved to ${describe(found)}, not a string or null` };
        return { value: found };
      }
      if (operation === 'set') await store.set(id, value, ttlMs);
      else await store.delete(id);
      return {};
    } catch (err) {
      return { error: whyItFailed(err) };
    }
  };
}

function checkSessionKey(sessionKey, where, optional) {
  if (optional && (sessionKey === undefined || sessionKey === null)) return undefined;
  if (typeof sessionKey !== 'string' || sessionKey === '') {
    throw Object.assign(new TypeError(`${where}: sessionKey must be a non-empty string, not ${describe(sessionKey)}`), {
      option: 'sessionKey',
    });
  }
  if (!lacksSurrogates(sessionKey)) {
    throw Object.assign(new TypeError(`${where}: sessionKey contains a lone UTF-16 surrogate and cannot be encoded`), {
      option: 'sessionKey',
    });
  }
  return sessionKey;
}

function checkOptions(options, where) {
  if (options === null || typeof options !== 'object' || Array.isArray(options)) {
    throw new TypeError(`${where}: options must be an object, not ${describe(options)}`);
  }
}

function requiredScopes(scopes, where) {
  const text = scopeText(scopes, where);
  if (text === '') throw Object.assign(new TypeError(`${where}: scopes are required`), { option: 'scopes' });
  if (!lacksSurrogates(text)) throw new TypeError(`${where}: scopes contain a lone UTF-16 surrogate and cannot be encoded`);
  return text;
}

/** A session call's native outcome as its caller reads it; `where` names the function in a TypeError. */
async function settleSession(pending, where, read) {
  const outcome = await pending;
  if (outcome.failure) throw toError(outcome.failure, where);
  return read(outcome);
}

/**
 * A client over a native engine handle: the memo of hot tokens, the
 * exchanges under way and the logger of this thread, and the functions
 * callers use. `where` names the function whose options are checked.
 */
function makeClient(handle, where) {
  const view = native.generationsView(handle);
  /** This thread's memo, or null where the runtime has no external buffers (the memo is then off). */
  const memo = view ? new Memo(new Uint32Array(view), MEMO_LIMIT) : null;
  const generations = memo === null ? null : memo.generations;
  let unreportedHits = 0;
  let unreportedJoins = 0;
  /** Calls this thread answered by joining its own exchange under way, without a native call. */
  let joinsWithoutNativeCall = 0;
  /** This thread's logger, or null: nothing is logged, and the addon produces no event. */
  let logger = null;
  let closed = false;
  /** Resolves close()'s promise once the last exchange under way has answered. */
  let whenIdle = null;

  function logHit(subject) {
    log(logger, 'debug', `[OboTokenService] Using cached token for user: ${subject}`);
  }

  function forgetMemo() {
    if (memo !== null) memo.clear();
  }

  function countHit() {
    if (++unreportedHits >= HIT_BATCH) {
      native.addCacheHits(handle, unreportedHits);
      unreportedHits = 0;
    }
  }

  function fromMemo(subject, scopes, tenant, issuer, accessToken, withExpiry, target = '') {
    const entry = memo.get(subject, scopes, tenant, issuer, accessToken, undefined, target);
    if (entry === undefined) return undefined;
    countHit();
    if (logger !== null) logHit(subject);
    const left = Math.ceil((entry.expiresAt - memo.now) / 1000);
    return tokenResult(entry.token, left < entry.granted ? left : entry.granted, scopes, entry.expiresAt, withExpiry);
  }

  /** Resolvers of this client's exchanges under way on this thread, by call id. */
  const pendingCalls = new Map();
  let nextCallId = 0;

  /**
   * Called by the addon, on this thread, with a log event of an exchange as it
   * happens, or with its outcome when it finishes.
   */
  function complete(id, outcome, event) {
    if (outcome === undefined || outcome === null) {
      if (event && logger !== null) {
        log(logger, event.level, event.message, event.failure ? toError(event.failure) : undefined);
      }
      return;
    }
    const settle = pendingCalls.get(id);
    pendingCalls.delete(id);
    if (pendingCalls.size === 0) {
      native.holdLoop(channel, false);
      if (whenIdle !== null) whenIdle();
    }
    if (settle !== undefined) settle(outcome);
  }
  /** This client's channel for the news of its exchanges (an opaque native handle). */
  const channel = native.onCompletion(complete);

  /**
   * One call into the addon for a call the memo could not answer: the native
   * cache's hit (with what the memo needs: `slot`, `generation`…) or an
   * outcome that could not start, at once; else a promise of the outcome.
   */
  function startExchange(tenant, issuer, subject, scopes, accessToken, fromCache, claims, audiences, resources) {
    const id = (nextCallId = (nextCallId + 1) >>> 0);
    const env = generations === null || generations[native.ENV_SLOT] !== 0 ? openIdEnv() : undefined;
    const immediate = native.exchange(
      handle,
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
      audiences,
      resources,
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

  function findFlight(subject, scopes, tenant, issuer, assertion, target = '') {
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
        flight.target === target &&
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
      native.addJoins(handle, unreportedJoins);
      unreportedJoins = 0;
    }
  }

  /**
   * What the memo could not answer: joins this thread's exchange under way
   * for the same key, or makes the one call into the addon, which answers
   * from the native cache or starts an exchange. Each caller gets its own
   * result or Error.
   */
  function exchangeNatively(
    tenant,
    issuer,
    subject,
    scopes,
    accessToken,
    fromCache,
    withExpiry,
    claims,
    audiences,
    resources,
    target = '',
  ) {
    const joinable = fromCache && claims === undefined && generations !== null;
    if (joinable) {
      const flight = findFlight(subject, scopes, tenant, issuer, accessToken, target);
      if (flight !== undefined) return joinFlight(flight, subject, withExpiry);
    }
    const answer = startExchange(tenant, issuer, subject, scopes, accessToken, fromCache, claims, audiences, resources);
    if (answer.slot !== undefined) {
      // A native cache hit: only a hit carries the memo's generation slot.
      if (memo !== null) memo.remember(subject, scopes, tenant, issuer, accessToken, answer, target);
      if (logger !== null) logHit(subject);
      return Promise.resolve(tokenResult(answer.accessToken, answer.expiresIn, scopes, answer.expiresAtMs, withExpiry));
    }
    const results = settlers(scopes);
    if (typeof answer.then !== 'function') return Promise.resolve(answer).then(results[withExpiry ? 1 : 0]);
    if (joinable) {
      const flight = { tenant, issuer, assertion: accessToken, target, epoch: generations[0], outcome: answer, results };
      addFlight(subject, scopes, flight);
      answer.then(() => removeFlight(subject, scopes, flight));
    } else if (generations !== null) {
      // A claims challenge's or a forced refresh's token is newer than what a flight begun before it
      // brings: calls from now on are answered from the cache, not by joining that flight.
      answer.then((settled) => {
        if (settled.failure) return;
        const older = findFlight(subject, scopes, tenant, issuer, accessToken, target);
        if (older !== undefined) removeFlight(subject, scopes, older);
      });
    }
    return answer.then(results[withExpiry ? 1 : 0]);
  }

  function joinFlight(flight, subject, withExpiry) {
    joinsWithoutNativeCall++;
    countJoin();
    if (logger !== null) log(logger, 'debug', `[OboTokenService] Joining in-flight OBO exchange for user: ${subject}`);
    return flight.outcome.then(flight.results[withExpiry ? 1 : 0]);
  }

  /**
   * The two ways an outcome becomes a caller's result (without and with
   * `expires_at`), made once per exchange and shared by the callers that join
   * it. Each caller still gets a result object or Error of its own (callers
   * may change theirs), through `then` on the outcome: no async function,
   * and no closure per caller, which a fan-out of thousands would pay for.
   */
  function settlers(scopes) {
    const settle = (outcome, withExpiry) => {
      if (outcome.failure) throw toError(outcome.failure);
      return tokenResult(outcome.accessToken, outcome.expiresIn, scopes, outcome.expiresAtMs, withExpiry);
    };
    return [(outcome) => settle(outcome, false), (outcome) => settle(outcome, true)];
  }

  /**
   * Exchanges `accessToken` for a token scoped to `scopes`, on behalf of the
   * user `identityContext` (else `user`) names.
   * @returns {Promise<{access_token: string, token_type: 'Bearer', expires_in: number, expires_at?: number, scope: string}>}
   */
  function exchangeOboToken(user, accessToken, scopes, fromCache = true, identityContext = undefined) {
    if (closed) return Promise.reject(closedError());
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
      if (flight !== undefined) return joinFlight(flight, subject, withExpiry);
    }
    const invalid = checkArguments(accessToken, scopes) || checkEncodable(accessToken, scopes);
    if (invalid) return Promise.reject(invalid);
    try {
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

  /**
   * The options-object API beside the drop-in: exchanges `assertion` for a
   * token scoped to `scopes` (a string or an array). `forceRefresh` skips the
   * cache; `claims` (a claims challenge) skips the cache and the flights, and
   * its token is cached like any other. `audience`/`resource` (token
   * exchange) replace the configured ones for this call, and key it apart.
   * `signal` (an AbortSignal) rejects
   * this call with its reason; an exchange under way still serves its other
   * callers and the cache. The result always has `expires_at`.
   * @returns {Promise<{access_token: string, token_type: 'Bearer', expires_in: number, expires_at: number, scope: string}>}
   */
  async function acquireOboToken(options) {
    if (options === null || typeof options !== 'object' || Array.isArray(options)) {
      throw new TypeError(`${ACQUIRE}: options must be an object, not ${describe(options)}`);
    }
    const { assertion, user, identityContext, forceRefresh = false, claims } = options;
    const signal = checkSignal(options.signal);
    const audiences = targetList(options.audience, 'audience');
    const resources = targetList(options.resource, 'resource');
    if (signal !== undefined && signal.aborted) throw abortReason(signal);
    if (closed) throw closedError();
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
    const target = targetText(audiences, resources);
    if (fromCache && memo !== null) {
      const hit = fromMemo(subject, scopes, tenant, issuer, assertion, true, target);
      if (hit !== undefined) return hit;
    }
    const pending = exchangeNatively(
      tenant,
      issuer,
      subject,
      scopes,
      assertion,
      fromCache,
      true,
      challenge,
      audiences,
      resources,
      target,
    );
    return signal === undefined ? pending : abortable(pending, signal);
  }

  /**
   * Replaces the whole configuration (the logger included) and empties the
   * cache; `null` returns to LibreChat's environment variables and keeps the
   * logger. Invalid options throw a TypeError naming the option, and the
   * configuration in force stays as it was.
   */
  function configure(options) {
    if (options === null || options === undefined) {
      native.configure(handle, null);
      forgetMemo();
      return;
    }
    if (typeof options !== 'object' || Array.isArray(options)) {
      throw new TypeError(`${where}: options must be an object or null, not ${describe(options)}`);
    }
    const { json, logger: nextLogger, assertionFunction, actorFunction, storeFunction } = nativeOptions(options, where);
    const failure = native.configure(handle, json, assertionFunction, actorFunction, storeFunction);
    if (failure) {
      const message = where === 'configure' ? failure.message : failure.message.replace(/^configure:/, `${where}:`);
      throw Object.assign(new TypeError(message), { option: failure.option });
    }
    logger = nextLogger;
    forgetMemo();
  }

  /** Sets this thread's logger (winston, pino, console…) without touching the configuration; `null` silences it. */
  function setLogger(candidate) {
    logger = checkLogger(candidate, 'setLogger');
  }

  /**
   * Forgets every cached token and remembered throttle of this client, in
   * every thread. A shared Redis tier keeps its entries (the other instances
   * use them; they expire on their own): `fromCache = false` replaces one.
   */
  function clearCache() {
    native.clearCache(handle);
    forgetMemo();
  }

  /**
   * The token endpoint in use: the configured one, or the one discovered from
   * the issuer by an exchange; null before discovery.
   */
  function tokenEndpoint() {
    return native.tokenEndpoint(handle);
  }

  /** This client's counters since it was made (the default client's: since the package was loaded). */
  function stats() {
    const counters = native.stats(handle, unreportedHits, unreportedJoins);
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
      sessions: counters.sessions,
      sessionRenewals: counters.sessionRenewals,
      sessionFailures: counters.sessionFailures,
    };
  }

  /**
   * Releases the client: its cache, configuration and (once its exchanges
   * under way have answered) its connections. Every later call rejects.
   * Resolves when this thread's exchanges of the client have answered.
   */
  function close() {
    if (!closed) {
      closed = true;
      native.closeClient(handle);
      forgetMemo();
      flights.clear();
    }
    if (pendingCalls.size === 0) return Promise.resolve();
    return new Promise((resolve) => {
      const previous = whenIdle;
      whenIdle = () => {
        whenIdle = null;
        if (previous !== null) previous();
        resolve();
      };
    });
  }

  /**
   * The native outcome of one session call that `start(id)` begins: at once
   * when it cannot start (`start` returns it), else when it finishes.
   */
  function startSessionCall(start) {
    const id = (nextCallId = (nextCallId + 1) >>> 0);
    const immediate = start(id);
    if (immediate !== null) return immediate;
    if (pendingCalls.size === 0) native.holdLoop(channel, true);
    return new Promise((resolve) => pendingCalls.set(id, resolve));
  }

  /** The environment, while this client still needs it. */
  function neededEnv() {
    return generations === null || generations[native.ENV_SLOT] !== 0 ? openIdEnv() : undefined;
  }

  /**
   * Begins a long-running session for the user whose access token
   * `assertion` is: exchanges it as `acquireOboToken` does, asking for
   * `offline_access`, and keeps the refresh token (never returned). Store
   * `sessionKey` with the job; `acquireSessionToken` serves tokens from it
   * later, without the user.
   * @returns {Promise<{sessionKey: string, access_token: string, token_type: 'Bearer', expires_in: number, expires_at: number, scope: string}>}
   */
  async function beginOboSession(options) {
    checkOptions(options, BEGIN);
    const { assertion, user, identityContext } = options;
    const signal = checkSignal(options.signal, BEGIN);
    if (signal !== undefined && signal.aborted) throw abortReason(signal);
    if (closed) throw closedError();
    if (typeof assertion !== 'string' || assertion === '') {
      throw Object.assign(new TypeError(`${BEGIN}: assertion must be a non-empty string (the user's access token)`), {
        option: 'assertion',
      });
    }
    const scopes = requiredScopes(options.scopes, BEGIN);
    const sessionKey = checkSessionKey(options.sessionKey, BEGIN, true);
    const audiences = targetList(options.audience, 'audience', BEGIN);
    const resources = targetList(options.resource, 'resource', BEGIN);
    const { subject, tenant, issuer } = acquireIdentity(user, identityContext, assertion, BEGIN);
    for (const [name, text] of [['the subject', subject], ['the tenant', tenant], ['the issuer', issuer], ['assertion', assertion]]) {
      if (!lacksSurrogates(text)) throw new TypeError(`${BEGIN}: ${name} contains a lone UTF-16 surrogate and cannot be encoded`);
    }
    const env = neededEnv();
    const pending = startSessionCall((id) =>
      native.beginSession(handle, channel, id, tenant, issuer, subject, scopes, assertion, sessionKey, env, logger !== null, audiences, resources),
    );
    const begun = settleSession(pending, BEGIN, (outcome) => ({
      sessionKey: outcome.sessionKey,
      ...tokenResult(outcome.accessToken, outcome.expiresIn, scopes, outcome.expiresAtMs, true),
    }));
    return signal === undefined ? begun : abortable(begun, signal);
  }

  /**
   * A token for `scopes` from a session: its own while fresh, else one
   * renewal with the session's refresh token (one at a time per session, in
   * this process and, with Redis, in the deployment). `forceRefresh` renews
   * unless a renewal that ended after this call was made can serve it.
   * @returns {Promise<{access_token: string, token_type: 'Bearer', expires_in: number, expires_at: number, scope: string}>}
   */
  async function acquireSessionToken(options) {
    checkOptions(options, SESSION_TOKEN);
    const signal = checkSignal(options.signal, SESSION_TOKEN);
    if (signal !== undefined && signal.aborted) throw abortReason(signal);
    if (closed) throw closedError();
    const sessionKey = checkSessionKey(options.sessionKey, SESSION_TOKEN, false);
    const scopes = requiredScopes(options.scopes, SESSION_TOKEN);
    const force = Boolean(options.forceRefresh);
    const env = neededEnv();
    const pending = startSessionCall((id) =>
      native.acquireSession(handle, channel, id, sessionKey, scopes, force, env, logger !== null),
    );
    const served = settleSession(pending, SESSION_TOKEN, (outcome) =>
      tokenResult(outcome.accessToken, outcome.expiresIn, scopes, outcome.expiresAtMs, true),
    );
    return signal === undefined ? served : abortable(served, signal);
  }

  /** Ends a session wherever it is stored. Resolves to whether it existed. */
  async function endOboSession(sessionKey) {
    if (closed) throw closedError();
    const key = checkSessionKey(sessionKey, END, false);
    const env = neededEnv();
    return settleSession(
      startSessionCall((id) => native.endSession(handle, channel, id, key, env)),
      END,
      (outcome) => outcome.existed === true,
    );
  }

  /** For tests: what this thread's memo holds. */
  function memoStats() {
    return memo === null ? { entries: 0, subjects: 0 } : { entries: memo.size, subjects: memo.subjects };
  }

  return {
    exchangeOboToken,
    acquireOboToken,
    getGraphApiToken,
    beginOboSession,
    acquireSessionToken,
    endOboSession,
    configure,
    setLogger,
    clearCache,
    stats,
    tokenEndpoint,
    close,
    memoStats,
    /** For tests: joins this thread made in JavaScript (`coalesced` also counts the native single flight's). */
    threadJoins: () => joinsWithoutNativeCall,
  };
}

/** The module's top-level functions: the process's engine, configured by `configure()` or the environment. */
const defaultClient = makeClient(native.defaultClient(), 'configure');

/**
 * A client of its own: configuration (as `configure()` takes it, or
 * LibreChat's environment variables without options), cache, exchanges
 * under way, throttles, counters and Redis namespace. Invalid options throw
 * a TypeError naming the option.
 */
function createOboClient(options) {
  if (options !== undefined && options !== null && (typeof options !== 'object' || Array.isArray(options))) {
    throw new TypeError(`createOboClient: options must be an object, not ${describe(options)}`);
  }
  const handle = native.createClient();
  const client = makeClient(handle, 'createOboClient');
  try {
    client.configure(options === undefined ? null : options);
  } catch (err) {
    native.closeClient(handle);
    throw err;
  }
  return Object.freeze({
    exchangeOboToken: client.exchangeOboToken,
    acquireOboToken: client.acquireOboToken,
    getGraphApiToken: client.getGraphApiToken,
    beginOboSession: client.beginOboSession,
    acquireSessionToken: client.acquireSessionToken,
    endOboSession: client.endOboSession,
    clearCache: client.clearCache,
    stats: client.stats,
    tokenEndpoint: client.tokenEndpoint,
    close: client.close,
  });
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

/** For tests: what this thread's memo (of the default client) holds. */
const __internals = { buildOboCacheKey, memoStats: defaultClient.memoStats, threadJoins: defaultClient.threadJoins };

// Named one by one: ESM importers see only the names of a literal of identifiers (cjs-module-lexer).
const {
  exchangeOboToken,
  acquireOboToken,
  getGraphApiToken,
  beginOboSession,
  acquireSessionToken,
  endOboSession,
  configure,
  setLogger,
  clearCache,
  stats,
  tokenEndpoint,
} = defaultClient;

module.exports = {
  exchangeOboToken,
  acquireOboToken,
  getGraphApiToken,
  beginOboSession,
  acquireSessionToken,
  endOboSession,
  configure,
  setLogger,
  clearCache,
  stats,
  tokenEndpoint,
  createOboClient,
  __internals,
};
