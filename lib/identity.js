'use strict';
/**
 * Who a token is for, as LibreChat's service works it out today: the subject,
 * tenant and issuer of the signed-in user, from the caller's identity context
 * first and the user object second. Two users of different tenants or issuers
 * with the same OpenID subject are two people, and must never share a token.
 *
 * Kept apart from the facade because the hot path resolves an identity on
 * every call: it writes into a caller-owned object instead of allocating one.
 */
const NO_TENANT = 'no-tenant';
const NO_ISSUER = 'no-issuer';
const DISCOVERY_SUFFIX = '/.well-known/openid-configuration';
const SLASH = 47;
const LAST_OF_SUFFIX = DISCOVERY_SUFFIX.charCodeAt(DISCOVERY_SUFFIX.length - 1);

function describe(value) {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'an array';
  const type = typeof value;
  return type === 'object' ? 'an object' : type === 'undefined' ? 'undefined' : `a ${type}`;
}

function withoutTrailingSlashes(text) {
  let end = text.length;
  while (end > 0 && text.charCodeAt(end - 1) === SLASH) end--;
  return end === text.length ? text : text.slice(0, end);
}

/** An issuer without trailing `/` characters or a trailing discovery path. */
function normalizeIssuer(issuer) {
  const last = issuer.charCodeAt(issuer.length - 1);
  if (last !== SLASH && last !== LAST_OF_SUFFIX) return issuer;
  let normalized = withoutTrailingSlashes(issuer);
  if (normalized.endsWith(DISCOVERY_SUFFIX)) {
    normalized = withoutTrailingSlashes(normalized.slice(0, -DISCOVERY_SUFFIX.length));
  }
  return normalized;
}

/**
 * A field of the context or the user: trimmed text, or '' when absent or
 * blank (the next source is then asked). Anything but a string, null or
 * undefined is refused with a TypeError naming the field.
 */
function field(value, name, failures) {
  if (typeof value === 'string') {
    // Most values need no trimming: checking both ends is cheaper than trim() on the hot path.
    const length = value.length;
    if (length !== 0 && solid(value.charCodeAt(0)) && solid(value.charCodeAt(length - 1))) return value;
    return value.trim();
  }
  if (value === undefined || value === null) return '';
  failures.error ??= new TypeError(`exchangeOboToken: ${name} must be a string, not ${describe(value)}`);
  return '';
}

/** A printable ASCII character: nothing `trim()` would remove. */
function solid(code) {
  return code > 32 && code < 127;
}

/** The last issuer normalised, and its normal form: callers pass the same few issuers. */
let lastIssuerIn = '';
let lastIssuerOut = '';

function normalizedIssuer(issuer) {
  if (issuer === lastIssuerIn) return lastIssuerOut;
  const normalized = normalizeIssuer(issuer);
  lastIssuerIn = issuer;
  lastIssuerOut = normalized;
  return normalized;
}

/**
 * Fills `out` with `{ subject, tenant, issuer, error }` for this call. An
 * empty subject means the user is not authenticated via OpenID. `error` is a
 * TypeError for a field of the wrong type. A throwing getter throws.
 */
function resolveIdentity(user, context, out) {
  out.error = undefined;
  const person = (user !== null && typeof user === 'object') || typeof user === 'function' ? user : undefined;
  let source = undefined;
  if (context !== undefined && context !== null) {
    if (typeof context !== 'object') {
      out.error = new TypeError(`exchangeOboToken: identityContext must be an object, not ${describe(context)}`);
      out.subject = out.tenant = out.issuer = '';
      return out;
    }
    source = context;
  }
  let subject = source === undefined ? '' : field(source.openidSubject, 'identityContext.openidSubject', out);
  if (subject === '' && person !== undefined) subject = field(person.openidId, 'user.openidId', out);
  let tenant = source === undefined ? '' : field(source.tenantId, 'identityContext.tenantId', out);
  if (tenant === '' && person !== undefined) tenant = field(person.tenantId, 'user.tenantId', out);
  let issuer = source === undefined ? '' : field(source.openidIssuer, 'identityContext.openidIssuer', out);
  if (issuer === '' && person !== undefined) issuer = field(person.openidIssuer, 'user.openidIssuer', out);
  if (issuer !== '') issuer = normalizedIssuer(issuer);
  out.subject = subject;
  out.tenant = tenant === '' ? NO_TENANT : tenant;
  out.issuer = issuer === '' ? NO_ISSUER : issuer;
  return out;
}

module.exports = { resolveIdentity, describe };
