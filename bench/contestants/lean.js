'use strict';
/**
 * Contestant "lean JS": what a careful engineer would ship in plain
 * JavaScript with the seed service's contract, and no framework.
 *
 * - `node:http`/`node:https` with one keep-alive agent;
 * - a `Map` cache with an expiry per entry (TTL from `expires_in`, 3600 s
 *   when absent or not a positive number, served until 30 s before expiry);
 * - an in-flight `Map` for single flight (joined only by `fromCache` callers;
 *   the slot is removed on settle only if it still holds that promise);
 * - one retry after 300 ms on transient failures (HTTP 429/5xx, network
 *   codes, timeout texts), as the seed does;
 * - result `{ access_token, token_type: 'Bearer', expires_in, scope }`.
 */
const http = require('node:http');
const https = require('node:https');

const GRANT_TYPE = 'urn:ietf:params:oauth:grant-type:jwt-bearer';
const GRANT_TYPE_FORM = encodeURIComponent(GRANT_TYPE);
const DEFAULT_TTL_S = 3600;
const SKEW_MS = 30_000;
const RETRY_DELAY_MS = 300;
const TIMEOUT_MS = 30_000;
const TRANSIENT_STATUS = new Set([429, 500, 502, 503, 504]);
const TRANSIENT_CODES = new Set(['ETIMEDOUT', 'ECONNRESET', 'EAI_AGAIN', 'ENOTFOUND']);
const TRANSIENT_TEXT = /timeout|timed out|socket hang up|temporarily unavailable|too many requests|service unavailable/i;

/** key → { result, serveUntil } */
const cache = new Map();
/** key → Promise */
const inFlight = new Map();
let target = null;

/** RFC 6749 §2.3.1: client id and secret are form-encoded before Basic. */
const formEncode = (text) => encodeURIComponent(text).replace(/%20/g, '+');

function setup(provider) {
  const url = new URL(provider.tokenEndpoint);
  const secure = url.protocol === 'https:';
  const transport = secure ? https : http;
  const agent = new transport.Agent({ keepAlive: true, keepAliveMsecs: 30_000, scheduling: 'lifo' });
  target = {
    transport,
    agent,
    hostname: url.hostname,
    port: url.port || (secure ? 443 : 80),
    path: `${url.pathname}${url.search}`,
    authorization: `Basic ${Buffer.from(
      `${formEncode(provider.clientId)}:${formEncode(provider.clientSecret)}`,
    ).toString('base64')}`,
  };
  cache.clear();
  inFlight.clear();
}

/** Unambiguous even when either part contains ':'. */
const keyOf = (openidId, scopes) => `${openidId.length}:${openidId}:${scopes}`;

function postToken(assertion, scopes) {
  const body =
    `grant_type=${GRANT_TYPE_FORM}&assertion=${encodeURIComponent(assertion)}` +
    `&scope=${encodeURIComponent(scopes)}&requested_token_use=on_behalf_of`;
  return new Promise((resolve, reject) => {
    const req = target.transport.request(
      {
        agent: target.agent,
        method: 'POST',
        hostname: target.hostname,
        port: target.port,
        path: target.path,
        headers: {
          'content-type': 'application/x-www-form-urlencoded',
          accept: 'application/json',
          authorization: target.authorization,
          'content-length': Buffer.byteLength(body),
        },
      },
      (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (chunk) => {
          text += chunk;
        });
        res.on('error', reject);
        res.on('end', () => {
          let json;
          try {
            json = JSON.parse(text);
          } catch {
            json = undefined;
          }
          if (res.statusCode === 200 && json && typeof json.access_token === 'string' && json.access_token) {
            resolve(json);
            return;
          }
          const oauth = json && typeof json === 'object' ? json : {};
          const detail = oauth.error
            ? `${oauth.error}${oauth.error_description ? `: ${oauth.error_description}` : ''}`
            : res.statusCode === 200
              ? 'the answer has no access_token'
              : `HTTP ${res.statusCode}`;
          const err = new Error(detail);
          err.status = res.statusCode;
          for (const name of ['error', 'error_description', 'error_codes', 'correlation_id', 'trace_id', 'suberror', 'claims']) {
            if (oauth[name] !== undefined) err[name] = oauth[name];
          }
          if (res.headers['retry-after'] !== undefined) err.retryAfter = res.headers['retry-after'];
          reject(err);
        });
      },
    );
    req.setTimeout(TIMEOUT_MS, () => {
      req.destroy(Object.assign(new Error(`OBO token request timed out after ${TIMEOUT_MS} ms`), { code: 'ETIMEDOUT' }));
    });
    req.on('error', reject);
    req.end(body);
  });
}

function isTransient(err) {
  if (!err) return false;
  if (TRANSIENT_STATUS.has(err.status)) return true;
  if (TRANSIENT_CODES.has(err.code)) return true;
  return TRANSIENT_TEXT.test(String(err.message || ''));
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function requestWithRetry(assertion, scopes) {
  try {
    return await postToken(assertion, scopes);
  } catch (first) {
    if (!isTransient(first)) {
      first.retryable = false;
      first.oboFailureReason = 'exchange_failed';
      throw first;
    }
    await sleep(RETRY_DELAY_MS);
    try {
      return await postToken(assertion, scopes);
    } catch (second) {
      second.retryable = isTransient(second);
      second.oboFailureReason = 'exchange_failed';
      throw second;
    }
  }
}

async function performExchange(key, assertion, scopes) {
  const grant = await requestWithRetry(assertion, scopes);
  const lifetime = Number(grant.expires_in);
  const expiresIn = Number.isFinite(lifetime) && lifetime > 0 ? lifetime : DEFAULT_TTL_S;
  const result = { access_token: grant.access_token, token_type: 'Bearer', expires_in: expiresIn, scope: scopes };
  const serveFor = expiresIn * 1000 - SKEW_MS;
  if (serveFor > 0) cache.set(key, { result, serveUntil: Date.now() + serveFor });
  return result;
}

async function exchangeOboToken(user, accessToken, scopes, fromCache = true) {
  const openidId = user && user.openidId;
  if (!openidId) throw new Error('User must be authenticated via OpenID to perform OBO token exchange');
  if (!accessToken) throw new Error('Access token is required for OBO exchange');
  if (!scopes) throw new Error('Scopes are required for OBO exchange');
  if (target === null) throw new Error('OpenID configuration not available');
  const key = keyOf(String(openidId), String(scopes));
  if (fromCache) {
    const entry = cache.get(key);
    if (entry !== undefined) {
      if (Date.now() < entry.serveUntil) return entry.result;
      cache.delete(key);
    }
    const pending = inFlight.get(key);
    if (pending !== undefined) return pending;
  }
  const promise = performExchange(key, accessToken, scopes);
  inFlight.set(key, promise);
  try {
    return await promise;
  } finally {
    if (inFlight.get(key) === promise) inFlight.delete(key);
  }
}

module.exports = {
  name: 'lean',
  setup,
  exchangeOboToken,
  cacheSize: () => cache.size,
};
