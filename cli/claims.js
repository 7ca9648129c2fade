'use strict';
/**
 * Reading (never verifying) the claims of a JWT, for display by the CLI:
 * what an administrator needs to see of a token without seeing the token.
 */

/** Microsoft Graph's application id, the `aud` of Graph tokens (v1 form). */
const GRAPH_APP_ID = '00000003-0000-0000-c000-000000000000';
/** Microsoft Graph's audience URLs, in the global and national clouds. */
const GRAPH_AUDIENCE = /^https:\/\/(graph\.microsoft\.(com|us|de)|dod-graph\.microsoft\.us|microsoftgraph\.chinacloudapi\.cn)\/?$/i;

function decodePart(part) {
  if (typeof part !== 'string' || !/^[A-Za-z0-9_-]+={0,2}$/.test(part)) return undefined;
  try {
    const value = JSON.parse(Buffer.from(part, 'base64url').toString('utf8'));
    return value !== null && typeof value === 'object' && !Array.isArray(value) ? value : undefined;
  } catch {
    return undefined;
  }
}

/**
 * The header and payload of a compact JWS, or null when `token` is not one
 * (an opaque or encrypted token). The signature is not checked.
 */
function decodeJwt(token) {
  if (typeof token !== 'string') return null;
  const parts = token.trim().split('.');
  if (parts.length !== 3) return null;
  const header = decodePart(parts[0]);
  const payload = decodePart(parts[1]);
  if (!header || !payload) return null;
  return { header, payload };
}

/** `exp`/`iat`/`nbf` as an ISO date and a distance from now, e.g. "in 59 min". */
function describeTime(seconds, nowMs = Date.now()) {
  if (typeof seconds !== 'number' || !Number.isFinite(seconds)) return String(seconds);
  const iso = new Date(seconds * 1000).toISOString().replace('.000Z', 'Z');
  return `${seconds} (${iso}, ${relative(seconds * 1000 - nowMs)})`;
}

function relative(ms) {
  const past = ms < 0;
  const abs = Math.abs(ms);
  let text;
  if (abs < 90_000) text = `${Math.round(abs / 1000)} s`;
  else if (abs < 90 * 60_000) text = `${Math.round(abs / 60_000)} min`;
  else if (abs < 48 * 3_600_000) text = `${Math.round(abs / 3_600_000)} h`;
  else text = `${Math.round(abs / 86_400_000)} days`;
  return past ? `${text} ago` : `in ${text}`;
}

/** Claims worth showing, in a stable order, as [name, printable value]. */
const SHOWN = ['aud', 'scp', 'roles', 'exp', 'tid', 'iss', 'azp', 'appid', 'ver'];

function summarizeClaims(payload, nowMs = Date.now()) {
  const rows = [];
  for (const name of SHOWN) {
    if (!(name in payload)) continue;
    const value = payload[name];
    let text;
    if (name === 'exp') text = describeTime(value, nowMs);
    else if (Array.isArray(value)) text = value.join(' ');
    else text = typeof value === 'string' ? value : JSON.stringify(value);
    rows.push([name, text]);
  }
  return rows;
}

/** The claims of `summarizeClaims`, as a plain object (for --json). */
function pickClaims(payload) {
  const picked = {};
  for (const name of SHOWN) if (name in payload) picked[name] = payload[name];
  return picked;
}

/**
 * Remarks on the token the user sent as the assertion, from its claims alone:
 * the mistakes behind the most common OBO refusals, seen before the provider
 * says so. `clientId` is the middle-tier application (this server).
 */
function assertionRemarks(token, { clientId, nowMs = Date.now() } = {}) {
  const decoded = decodeJwt(token);
  if (!decoded) {
    return ['The assertion is not a JWT (three base64url parts): Entra ID expects the access token of the signed-in user.'];
  }
  const claims = decoded.payload;
  const remarks = [];
  const audiences = [].concat(claims.aud ?? []).map(String);
  const hasScopes = claims.scp !== undefined || claims.roles !== undefined;
  if (!hasScopes && (claims.nonce !== undefined || claims.at_hash !== undefined || claims.c_hash !== undefined)) {
    remarks.push('The assertion looks like an id_token (it has no scp or roles claim): send the user\'s access token instead.');
  } else if (!hasScopes) {
    remarks.push('The assertion has no scp or roles claim, so it may not be an access token.');
  }
  if (typeof claims.exp === 'number' && claims.exp * 1000 <= nowMs) {
    remarks.push(`The assertion expired ${relative(claims.exp * 1000 - nowMs).replace(/ ago$/, '')} ago (exp ${describeTime(claims.exp, nowMs)}).`);
  }
  if (audiences.some((aud) => aud === GRAPH_APP_ID || GRAPH_AUDIENCE.test(aud))) {
    remarks.push('The assertion is a Microsoft Graph token (aud is Graph): OBO needs a token issued to this application, not to Graph.');
  } else if (clientId && audiences.length > 0 && !audiences.some((aud) => aud.includes(clientId))) {
    remarks.push(
      `The assertion's audience (${audiences.join(', ')}) does not name this application's client id (${clientId}): ` +
        'unless it is this application\'s Application ID URI, the token was issued for another API.',
    );
  }
  return remarks;
}

/** The assertion's claims that identify it, for display (no personal data). */
function assertionSummary(token, nowMs = Date.now()) {
  const decoded = decodeJwt(token);
  if (!decoded) return [];
  return summarizeClaims(decoded.payload, nowMs).filter(([name]) => ['aud', 'scp', 'roles', 'exp', 'tid'].includes(name));
}

module.exports = { decodeJwt, describeTime, relative, summarizeClaims, pickClaims, assertionRemarks, assertionSummary, GRAPH_APP_ID };
