'use strict';
/**
 * Contestant "stack baseline": the seed service's algorithm on its real stack.
 *
 * - `openid-client` v6: a `Configuration` from `discovery()` (client_secret_basic,
 *   `allowInsecureRequests` because the provider is loopback http), and
 *   `genericGrantRequest(config, jwt-bearer, { scope, assertion, requested_token_use })`;
 * - a `keyv` v5 in-memory namespace (its default Map store and JSON
 *   serialisation, as LibreChat's `getLogStores` builds it), key
 *   `${openidId}:${scopes}`, TTL `expires_in` seconds (3600 when absent);
 * - a module-level in-flight `Map` (joined by `fromCache` callers after the
 *   cache read; slot removed on settle only if it still holds that promise);
 * - one retry after 300 ms on transient failures.
 */
const { Keyv } = require('keyv');

const GRANT_TYPE = 'urn:ietf:params:oauth:grant-type:jwt-bearer';
const DEFAULT_TTL_S = 3600;
const RETRY_DELAY_MS = 300;
const TRANSIENT_STATUS = new Set([429, 500, 502, 503, 504]);
const TRANSIENT_CODES = new Set(['ETIMEDOUT', 'ECONNRESET', 'EAI_AGAIN', 'ENOTFOUND']);
const TRANSIENT_TEXT = /timeout|socket hang up|temporarily unavailable|too many requests|service unavailable/i;

let client = null;
let openIdConfig = null;
let tokensCache = null;
const inFlight = new Map();

async function setup(provider) {
  client = await import('openid-client');
  openIdConfig = await client.discovery(
    new URL(provider.issuer),
    provider.clientId,
    { client_secret: provider.clientSecret, token_endpoint_auth_method: 'client_secret_basic' },
    client.ClientSecretBasic(provider.clientSecret),
    { execute: [client.allowInsecureRequests] },
  );
  tokensCache = new Keyv({ namespace: 'openid_exchanged_tokens' });
  inFlight.clear();
}

const getOpenIdConfig = () => openIdConfig;

function isTransient(err) {
  if (!err) return false;
  const status = err.status ?? err.response?.status;
  if (TRANSIENT_STATUS.has(status)) return true;
  const code = err.code ?? err.cause?.code;
  if (TRANSIENT_CODES.has(code)) return true;
  return TRANSIENT_TEXT.test(String(err.message || ''));
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function requestWithRetry(config, accessToken, scopes) {
  const request = () =>
    client.genericGrantRequest(config, GRANT_TYPE, {
      scope: scopes,
      assertion: accessToken,
      requested_token_use: 'on_behalf_of',
    });
  try {
    return await request();
  } catch (first) {
    if (!isTransient(first)) {
      first.retryable = false;
      first.oboFailureReason = 'exchange_failed';
      throw first;
    }
    await sleep(RETRY_DELAY_MS);
    try {
      return await request();
    } catch (second) {
      second.retryable = isTransient(second);
      second.oboFailureReason = 'exchange_failed';
      throw second;
    }
  }
}

async function performExchange(config, cacheKey, accessToken, scopes) {
  const grant = await requestWithRetry(config, accessToken, scopes);
  const result = {
    access_token: grant.access_token,
    token_type: 'Bearer',
    expires_in: grant.expires_in || DEFAULT_TTL_S,
    scope: scopes,
  };
  await tokensCache.set(cacheKey, result, result.expires_in * 1000);
  return result;
}

async function exchangeOboToken(user, accessToken, scopes, fromCache = true) {
  if (!user?.openidId) {
    throw new Error('User must be authenticated via OpenID to perform OBO token exchange');
  }
  if (!accessToken) throw new Error('Access token is required for OBO exchange');
  if (!scopes) throw new Error('Scopes are required for OBO exchange');
  const config = getOpenIdConfig();
  if (!config) throw new Error('OpenID configuration not available');

  const cacheKey = `${user.openidId}:${scopes}`;
  if (fromCache) {
    const cached = await tokensCache.get(cacheKey);
    if (cached) return cached;
    const pending = inFlight.get(cacheKey);
    if (pending) return pending;
  }
  const promise = performExchange(config, cacheKey, accessToken, scopes);
  inFlight.set(cacheKey, promise);
  try {
    return await promise;
  } finally {
    if (inFlight.get(cacheKey) === promise) inFlight.delete(cacheKey);
  }
}

module.exports = {
  name: 'stack',
  setup,
  exchangeOboToken,
  cacheSize: () => (tokensCache ? tokensCache.store.size : 0),
};
