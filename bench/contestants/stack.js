'use strict';
/**
 * Contestant "stack baseline": LibreChat's service as it runs today
 * (`api/server/services/OboTokenService.js`, see
 * shared/reference/UPSTREAM.md), on its real stack.
 *
 * - `openid-client` v6: a `Configuration` from `discovery()` (client_secret_basic,
 *   `allowInsecureRequests` because the provider is loopback http), and
 *   `genericGrantRequest(config, jwt-bearer, { scope, assertion, requested_token_use })`;
 * - identity tuple (tenant, issuer, subject) with upstream's fallbacks,
 *   trimming, issuer normalisation and `no-tenant`/`no-issuer` defaults;
 * - key `tenant\x1fissuer\x1fsubject\x1fscopes\x1fsha256hex(assertion)`, the
 *   digest computed with node:crypto on every call, as upstream does;
 * - a `keyv` v5 in-memory namespace (its default Map store and JSON
 *   serialisation, as LibreChat's `getLogStores` builds it), TTL
 *   `max(1000, expires_at − now − 30 000)` ms; a cached entry is served only
 *   while `expires_at > now + 30 s` (stack-redis.js runs this same code on
 *   LibreChat's Redis store);
 * - a module-level in-flight `Map` on the same key, joined by `fromCache`
 *   callers after the cache read; `fromCache = false` neither reads nor joins,
 *   and still writes the cache;
 * - one retry after 300 ms on transient failures; result
 *   `{ access_token, token_type: 'Bearer', expires_in, expires_at, scope }`.
 *
 * Upstream's debug log lines are left out: with no logger configured they
 * would only cost this contestant string building.
 */
const crypto = require('node:crypto');
const { Keyv } = require('keyv');

const GRANT_TYPE = 'urn:ietf:params:oauth:grant-type:jwt-bearer';
const DEFAULT_EXPIRES_IN_S = 3600;
const EXPIRY_BUFFER_MS = 30_000;
const MIN_LIFETIME_MS = 1000;
const RETRY_DELAY_MS = 300;
const NO_TENANT = 'no-tenant';
const NO_ISSUER = 'no-issuer';
const SEPARATOR = '\x1f';
const DISCOVERY_SUFFIX = '/.well-known/openid-configuration';
const TRANSIENT_STATUS = new Set([429, 500, 502, 503, 504]);
const TRANSIENT_CODES = new Set(['ETIMEDOUT', 'ECONNRESET', 'EAI_AGAIN', 'ENOTFOUND']);
const TRANSIENT_TEXT = ['timed out', 'timeout', 'econnreset', 'socket hang up', 'temporarily unavailable', 'too many requests', 'service unavailable'];

// --- identity, as @librechat/api resolves it ------------------------------------
function identityValue(value) {
  const trimmed = value?.trim();
  return trimmed ? trimmed : undefined;
}

function issuerValue(value) {
  const trimmed = value?.trim().replace(/\/+$/, '');
  if (!trimmed) return undefined;
  if (!trimmed.endsWith(DISCOVERY_SUFFIX)) return trimmed;
  return trimmed.slice(0, -DISCOVERY_SUFFIX.length) || undefined;
}

function identityTuple(user, identityContext) {
  const subject = identityValue(identityContext?.openidSubject) ?? identityValue(user?.openidId);
  if (!subject) return null;
  return {
    subject,
    tenantId: identityValue(identityContext?.tenantId) ?? identityValue(user?.tenantId) ?? NO_TENANT,
    openidIssuer: issuerValue(identityContext?.openidIssuer) ?? issuerValue(user?.openidIssuer ?? undefined) ?? NO_ISSUER,
  };
}

const sha256hex = (value) => crypto.createHash('sha256').update(value).digest('hex');

function cacheKeyOf(user, accessToken, scopes, identityContext) {
  const tuple = identityTuple(user, identityContext);
  if (!tuple) return null;
  return [[tuple.tenantId, tuple.openidIssuer, tuple.subject].join(SEPARATOR), scopes, sha256hex(accessToken)].join(SEPARATOR);
}

// --- lifetime ---------------------------------------------------------------------
function expiresInSeconds(value) {
  if (value == null) return DEFAULT_EXPIRES_IN_S;
  const seconds = Number(value);
  if (!Number.isFinite(seconds)) return DEFAULT_EXPIRES_IN_S;
  return Math.max(1, Math.floor(seconds));
}

const usable = (expiresAt, now = Date.now()) =>
  expiresAt != null && Number.isFinite(expiresAt) && expiresAt > now + EXPIRY_BUFFER_MS;

// --- the exchange -----------------------------------------------------------------
function isTransient(err) {
  const status = err?.status ?? err?.statusCode ?? err?.response?.status;
  if (status != null && TRANSIENT_STATUS.has(status)) return true;
  const code = typeof err?.code === 'string' ? err.code.toUpperCase() : undefined;
  if (code != null && TRANSIENT_CODES.has(code)) return true;
  const message = String(err?.message ?? '').toLowerCase();
  return TRANSIENT_TEXT.some((text) => message.includes(text));
}

function tag(err, retryable) {
  if (err && typeof err === 'object') {
    err.retryable = retryable;
    err.oboFailureReason = 'exchange_failed';
  }
  return err;
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// --- the service, over a token store ------------------------------------------------
/**
 * Upstream's service with its module state (openid-client configuration,
 * Keyv namespace, in-flight map) over the Keyv that `createTokensCache(params)`
 * makes at setup: Keyv's in-memory default here, Keyv on Redis in
 * stack-redis.js. The code of the exchange is the same for both.
 */
function createStackContestant({ name, createTokensCache, cacheSize }) {
  let client = null;
  let openIdConfig = null;
  let tokensCache = null;
  const inFlight = new Map();

  async function setup(provider, params = {}) {
    client = await import('openid-client');
    openIdConfig = await client.discovery(
      new URL(provider.issuer),
      provider.clientId,
      { client_secret: provider.clientSecret, token_endpoint_auth_method: 'client_secret_basic' },
      client.ClientSecretBasic(provider.clientSecret),
      { execute: [client.allowInsecureRequests] },
    );
    tokensCache = await createTokensCache(params);
    inFlight.clear();
  }

  const getOpenIdConfig = () => openIdConfig;

  async function performExchange(config, cacheKey, accessToken, scopes) {
    const request = () =>
      client.genericGrantRequest(config, GRANT_TYPE, {
        scope: scopes,
        assertion: accessToken,
        requested_token_use: 'on_behalf_of',
      });
    let grant;
    try {
      grant = await request();
    } catch (first) {
      if (!isTransient(first)) throw tag(first, false);
      await sleep(RETRY_DELAY_MS);
      try {
        grant = await request();
      } catch (second) {
        throw tag(second, isTransient(second));
      }
    }
    if (!grant?.access_token) {
      throw Object.assign(new Error('The identity provider returned no access token for the OBO exchange'), {
        retryable: false,
        oboFailureReason: 'empty_exchange_response',
      });
    }
    const expiresIn = expiresInSeconds(grant.expires_in);
    const now = Date.now();
    const expiresAt = now + expiresIn * 1000;
    const result = { access_token: grant.access_token, token_type: 'Bearer', expires_in: expiresIn, expires_at: expiresAt, scope: scopes };
    await tokensCache.set(cacheKey, result, Math.max(MIN_LIFETIME_MS, expiresAt - now - EXPIRY_BUFFER_MS));
    return result;
  }

  async function exchangeOboToken(user, accessToken, scopes, fromCache = true, identityContext) {
    if (!accessToken) throw new Error('Access token is required for OBO exchange');
    if (!scopes) throw new Error('Scopes are required for OBO exchange');
    const config = getOpenIdConfig();
    if (!config) throw new Error('OpenID configuration not available');
    const cacheKey = cacheKeyOf(user, accessToken, scopes, identityContext);
    if (!cacheKey) throw new Error('User must be authenticated via OpenID to perform OBO token exchange');

    if (fromCache) {
      const cached = await tokensCache.get(cacheKey);
      if (cached && usable(cached.expires_at)) return cached;
      const pending = inFlight.get(cacheKey);
      if (pending) return pending;
    }
    const promise = performExchange(config, cacheKey, accessToken, scopes);
    if (fromCache) {
      inFlight.set(cacheKey, promise);
      promise
        .finally(() => {
          if (inFlight.get(cacheKey) === promise) inFlight.delete(cacheKey);
        })
        .catch(() => {});
    }
    return promise;
  }

  return {
    name,
    returnsExpiresAt: true,
    setup,
    exchangeOboToken,
    cacheSize: () => (tokensCache ? cacheSize(tokensCache) : 0),
  };
}

module.exports = createStackContestant({
  name: 'stack',
  createTokensCache: () => new Keyv({ namespace: 'openid_exchanged_tokens' }),
  cacheSize: (cache) => cache.store.size,
});
module.exports.createStackContestant = createStackContestant;
