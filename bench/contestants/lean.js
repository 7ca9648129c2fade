'use strict';
/**
 * Contestant "lean JS": what a careful engineer would ship in plain
 * JavaScript with today's LibreChat contract (shared/reference/UPSTREAM.md),
 * and no framework, built for the fastest honest hit.
 *
 * - identity tuple (tenant, issuer, subject) with upstream's fallbacks,
 *   trimming, issuer normalisation and defaults; values that need no
 *   normalisation (the usual case) are used as they are, and the last issuer
 *   seen is remembered with its normal form;
 * - the cache is `Map<subject, Slot[]>`; a slot holds the rest of the key
 *   (tenant, issuer, scopes, the caller's assertion string) and either the
 *   result or the in-flight promise. A lookup hashes only the short subject
 *   and compares the assertion with `===` (pointer equality when the caller
 *   passes the same string object, else length then bytes): no key string
 *   is built, no digest computed, and a fresh 1.5 KB string is never hashed.
 *   Equal assertions are exactly those with equal SHA-256, so this is
 *   upstream's key without its cost. The assertion string is kept by
 *   reference for the entry's lifetime;
 * - the hit path is a plain function that returns `Promise.resolve(result)`;
 * - entries served while `expires_at > now + 30 s` (upstream's TTL
 *   `max(1000, expires_at − now − 30 000)` plus its usable-expiry check);
 * - single flight through the same slots, joined only by `fromCache`
 *   callers; `fromCache = false` neither reads nor joins, and still writes;
 * - `node:http`/`node:https` with one keep-alive agent; one retry after
 *   300 ms on transient failures (HTTP 429/5xx, network codes, timeout texts);
 * - result `{ access_token, token_type: 'Bearer', expires_in, expires_at, scope }`.
 */
const http = require('node:http');
const https = require('node:https');

const GRANT_TYPE = 'urn:ietf:params:oauth:grant-type:jwt-bearer';
const GRANT_TYPE_FORM = encodeURIComponent(GRANT_TYPE);
const DEFAULT_EXPIRES_IN_S = 3600;
const EXPIRY_BUFFER_MS = 30_000;
const NO_TENANT = 'no-tenant';
const NO_ISSUER = 'no-issuer';
const DISCOVERY_SUFFIX = '/.well-known/openid-configuration';
const RETRY_DELAY_MS = 300;
const TIMEOUT_MS = 30_000;
const TRANSIENT_STATUS = new Set([429, 500, 502, 503, 504]);
const TRANSIENT_CODES = new Set(['ETIMEDOUT', 'ECONNRESET', 'EAI_AGAIN', 'ENOTFOUND']);
const TRANSIENT_TEXT = /timeout|timed out|socket hang up|temporarily unavailable|too many requests|service unavailable/i;

/**
 * subject → slots `{ tenant, issuer, scopes, assertion, result, serveUntil, pending }`:
 * `result` with `serveUntil` once exchanged, or `pending` (a promise) while in flight.
 */
const slotsBySubject = new Map();
let entries = 0;
let target = null;
let lastIssuerIn;
let lastIssuerOut;

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
  slotsBySubject.clear();
  entries = 0;
}

/** A printable ASCII character: nothing `trim()` would remove. */
const solid = (code) => code > 32 && code < 127;

/** Upstream's `value?.trim() || undefined`, without trimming what needs none. */
function identityValue(value) {
  if (typeof value !== 'string' || value.length === 0) return undefined;
  if (solid(value.charCodeAt(0)) && solid(value.charCodeAt(value.length - 1))) return value;
  const trimmed = value.trim();
  return trimmed ? trimmed : undefined;
}

/** Trimmed, without trailing `/` and without a trailing discovery path; the last one seen is remembered. */
function issuerValue(value) {
  if (typeof value !== 'string') return undefined;
  if (value === lastIssuerIn) return lastIssuerOut;
  let issuer = value.trim();
  let end = issuer.length;
  while (end > 0 && issuer.charCodeAt(end - 1) === 47) end--;
  issuer = issuer.slice(0, end);
  if (issuer.endsWith(DISCOVERY_SUFFIX)) issuer = issuer.slice(0, -DISCOVERY_SUFFIX.length);
  lastIssuerIn = value;
  lastIssuerOut = issuer || undefined;
  return lastIssuerOut;
}

function findSlot(slots, tenant, issuer, scopes, assertion) {
  for (let i = 0; i < slots.length; i++) {
    const slot = slots[i];
    if (slot.scopes === scopes && slot.tenant === tenant && slot.issuer === issuer && slot.assertion === assertion) {
      return slot;
    }
  }
  return undefined;
}

function dropSlot(subject, slot) {
  const slots = slotsBySubject.get(subject);
  if (slots === undefined) return;
  const at = slots.indexOf(slot);
  if (at < 0) return;
  slots.splice(at, 1);
  if (slot.result !== null) entries--;
  if (slots.length === 0) slotsBySubject.delete(subject);
}

function storeResult(subject, tenant, issuer, scopes, assertion, result) {
  let slots = slotsBySubject.get(subject);
  if (slots === undefined) {
    slots = [];
    slotsBySubject.set(subject, slots);
  }
  const serveUntil = result.expires_at - EXPIRY_BUFFER_MS;
  const slot = findSlot(slots, tenant, issuer, scopes, assertion);
  if (slot === undefined) {
    slots.push({ tenant, issuer, scopes, assertion, result, serveUntil, pending: null });
    entries++;
    return;
  }
  if (slot.result === null) entries++;
  slot.result = result;
  slot.serveUntil = serveUntil;
  slot.pending = null;
}

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

function expiresInSeconds(value) {
  if (value == null) return DEFAULT_EXPIRES_IN_S;
  const seconds = Number(value);
  if (!Number.isFinite(seconds)) return DEFAULT_EXPIRES_IN_S;
  return Math.max(1, Math.floor(seconds));
}

async function performExchange(subject, tenant, issuer, scopes, assertion) {
  const grant = await requestWithRetry(assertion, scopes);
  const expiresIn = expiresInSeconds(grant.expires_in);
  const result = {
    access_token: grant.access_token,
    token_type: 'Bearer',
    expires_in: expiresIn,
    expires_at: Date.now() + expiresIn * 1000,
    scope: scopes,
  };
  storeResult(subject, tenant, issuer, scopes, assertion, result);
  return result;
}

function exchangeOboToken(user, accessToken, scopes, fromCache = true, identityContext) {
  if (!accessToken) return Promise.reject(new Error('Access token is required for OBO exchange'));
  if (!scopes) return Promise.reject(new Error('Scopes are required for OBO exchange'));
  if (target === null) return Promise.reject(new Error('OpenID configuration not available'));
  const subject = identityValue(identityContext?.openidSubject) ?? identityValue(user?.openidId);
  if (subject === undefined) {
    return Promise.reject(new Error('User must be authenticated via OpenID to perform OBO token exchange'));
  }
  const tenant = identityValue(identityContext?.tenantId) ?? identityValue(user?.tenantId) ?? NO_TENANT;
  const issuer = issuerValue(identityContext?.openidIssuer) ?? issuerValue(user?.openidIssuer) ?? NO_ISSUER;
  const scope = String(scopes);
  const assertion = String(accessToken);
  if (fromCache) {
    const slots = slotsBySubject.get(subject);
    const slot = slots === undefined ? undefined : findSlot(slots, tenant, issuer, scope, assertion);
    if (slot !== undefined) {
      if (slot.result !== null) {
        if (Date.now() < slot.serveUntil) return Promise.resolve(slot.result);
        slot.result = null;
        entries--;
      }
      if (slot.pending !== null) return slot.pending;
      if (slot.result === null) dropSlot(subject, slot);
    }
  }
  const promise = performExchange(subject, tenant, issuer, scope, assertion);
  if (!fromCache) return promise;
  let slots = slotsBySubject.get(subject);
  if (slots === undefined) {
    slots = [];
    slotsBySubject.set(subject, slots);
  }
  const flight = { tenant, issuer, scopes: scope, assertion, result: null, serveUntil: 0, pending: promise };
  slots.push(flight);
  // On success performExchange turned this slot into the entry; a failure leaves nothing behind.
  promise.catch(() => {
    if (flight.pending !== promise) return;
    flight.pending = null;
    if (flight.result === null) dropSlot(subject, flight);
  });
  return promise;
}

module.exports = {
  name: 'lean',
  returnsExpiresAt: true,
  setup,
  exchangeOboToken,
  cacheSize: () => entries,
};
