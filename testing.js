'use strict';
/**
 * A loopback identity provider for tests: an OpenID discovery document and a
 * token endpoint that answers the jwt-bearer (On-Behalf-Of) grant the way
 * Microsoft Entra ID does, records every request, and plays queued faults
 * (status and body, delay, hold, connection reset, Retry-After, hang). Given
 * a `clientCertificate`, it verifies `private_key_jwt` client assertions the
 * way Entra ID does; with `multiTenant` it also serves `/common`,
 * `/organizations` and any tenant id, for home-tenant routing. With
 * `tokenExchange` it also answers the OAuth 2.0 Token Exchange grant (RFC
 * 8693) the way Keycloak, Okta and Auth0 do, checking every parameter.
 *
 *   const { startMockIdp } = require('obo-native/testing');
 *   const idp = await startMockIdp();
 *   configure({ issuer: idp.issuer, clientId: idp.clientId, clientSecret: idp.clientSecret });
 *   idp.enqueue({ status: 503, retryAfter: 1 });
 *   ...
 *   await idp.close();
 */
const http = require('node:http');
const https = require('node:https');
const crypto = require('node:crypto');

const GRANT_TYPE = 'urn:ietf:params:oauth:grant-type:jwt-bearer';
const TOKEN_EXCHANGE_GRANT_TYPE = 'urn:ietf:params:oauth:grant-type:token-exchange';
const ACCESS_TOKEN_TYPE = 'urn:ietf:params:oauth:token-type:access_token';
const CLIENT_ASSERTION_TYPE = 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer';
/** The longest life the package promises its client assertions (and this provider enforces). */
const MAX_ASSERTION_LIFETIME = 600;
/** The clock skew Entra tolerates on `nbf`. */
const CLOCK_SKEW = 300;

const base64url = (value) => Buffer.from(value).toString('base64url');

/** The token the provider mints for an assertion and scopes: tests can tell a mix-up. */
function mintToken(assertion, scope, { lifetime = 3600, tenant = 'mock-tenant' } = {}) {
  const digest = crypto.createHash('sha256').update(`${assertion}\n${scope}`).digest('base64url');
  const now = Math.floor(Date.now() / 1000);
  const header = base64url(JSON.stringify({ typ: 'JWT', alg: 'none', kid: 'mock' }));
  const payload = base64url(
    JSON.stringify({
      aud: String(scope).split(' ')[0].replace(/\/[^/]*$/, '') || scope,
      scp: String(scope)
        .split(' ')
        .map((s) => s.replace(/^.*\//, ''))
        .join(' '),
      tid: tenant,
      iat: now,
      exp: now + lifetime,
      obo: digest,
    }),
  );
  return `${header}.${payload}.${digest}`;
}

/** An answer shaped like Entra's error bodies (AADSTS code, trace and correlation ids), for `enqueue`. */
function entraError(status, error, code, description, extra = {}) {
  return {
    status,
    body: {
      error,
      error_description: `AADSTS${code}: ${description} Trace ID: mock-trace Correlation ID: mock-correlation Timestamp: 2026-01-01 00:00:00Z`,
      error_codes: [code],
      timestamp: '2026-01-01 00:00:00Z',
      trace_id: 'mock-trace',
      correlation_id: 'mock-correlation',
      ...extra,
    },
  };
}

/** Ready-made Entra answers, for `enqueue`. */
const faults = {
  invalidSignature: () => entraError(400, 'invalid_grant', 50013, 'Assertion failed signature validation.'),
  assertionExpired: () => entraError(400, 'invalid_grant', 500133, 'Assertion is not within its valid time range.'),
  consentRequired: () =>
    entraError(400, 'invalid_grant', 65001, 'The user or administrator has not consented to use the application.', {
      suberror: 'consent_required',
    }),
  mfaRequired: () =>
    entraError(400, 'interaction_required', 50076, 'Due to a configuration change made by your administrator, you must use multi-factor authentication.', {
      suberror: 'basic_action',
      claims: '{"access_token":{"capolids":{"essential":true,"values":["mock-policy"]}}}',
    }),
  invalidScope: () => entraError(400, 'invalid_scope', 70011, 'The provided value for the input parameter \'scope\' is not valid.'),
  badClientSecret: () => entraError(401, 'invalid_client', 7000215, 'Invalid client secret provided.'),
  /** A client assertion signed by an unknown key, or with a signature that does not verify. */
  invalidClientAssertionSignature: (reason = 'The key was not found.', thumbprint = '') =>
    entraError(401, 'invalid_client', 700027, `Client assertion contains an invalid signature. [Reason - ${reason}, Thumbprint of key used by client: '${thumbprint}']`),
  clientAssertionOutOfTime: (detail = '') =>
    entraError(401, 'invalid_client', 700024, `Client assertion is not within its valid time range.${detail ? ` ${detail}` : ''}`),
  malformedClientAssertion: (detail = '') => entraError(400, 'invalid_request', 50027, `JWT token is invalid or malformed.${detail ? ` ${detail}` : ''}`),
  noFederatedIdentity: () =>
    entraError(400, 'invalid_client', 70021, 'No matching federated identity record found for presented assertion.'),
  unknownApplication: () => entraError(400, 'unauthorized_client', 700016, 'Application not found in the directory.'),
  loopDetected: () => entraError(400, 'invalid_grant', 50196, 'The server terminated an operation because it encountered a client request loop.'),
  throttled: (retryAfter = 5) => ({ status: 429, retryAfter, body: { error: 'temporarily_unavailable', error_description: 'AADSTS90055: Too many requests.' } }),
  unavailable: (retryAfter) => ({ status: 503, retryAfter, body: 'Service Unavailable', headers: { 'content-type': 'text/plain' } }),
};

function readBody(req, limit = 8 << 20) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    let size = 0;
    req.on('data', (chunk) => {
      size += chunk.length;
      if (size > limit) {
        reject(new Error('request body too large'));
        req.destroy();
        return;
      }
      chunks.push(chunk);
    });
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

/** The certificates of a PEM text, in order. */
function pemCertificates(pem) {
  const blocks = String(pem).match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) || [];
  return blocks.map((block) => new crypto.X509Certificate(block));
}

/** A certificate the provider accepts client assertions from, with both thumbprints. */
function registered(certificate) {
  return {
    certificate,
    x5tS256: crypto.createHash('sha256').update(certificate.raw).digest('base64url'),
    x5t: crypto.createHash('sha1').update(certificate.raw).digest('base64url'),
  };
}

/** A compact JWS's header and payload (JSON objects) and what its signature covers, or null. */
function decodeJwt(jwt) {
  const parts = String(jwt).split('.');
  if (parts.length !== 3) return null;
  try {
    const header = JSON.parse(Buffer.from(parts[0], 'base64url').toString('utf8'));
    const payload = JSON.parse(Buffer.from(parts[1], 'base64url').toString('utf8'));
    if (!header || typeof header !== 'object' || Array.isArray(header)) return null;
    if (!payload || typeof payload !== 'object' || Array.isArray(payload)) return null;
    return { header, payload, signed: Buffer.from(`${parts[0]}.${parts[1]}`), signature: Buffer.from(parts[2], 'base64url') };
  } catch {
    return null;
  }
}

const SIGNATURE_CHECKS = {
  PS256: (data, key, signature) =>
    crypto.verify('sha256', data, { key, padding: crypto.constants.RSA_PKCS1_PSS_PADDING, saltLength: 32 }, signature),
  RS256: (data, key, signature) => crypto.verify('sha256', data, key, signature),
};

/**
 * Checks a `private_key_jwt` client assertion the way Entra ID does for a
 * certificate credential; null when it passes, else the Entra answer.
 * `certificates` are the registered ones; `issuer`, when given, also vouches
 * for a leaf sent in `x5c` (subject name and issuer authentication).
 */
function checkClientAssertion(jwt, { certificates, issuer, audience, clientId, now = Date.now() / 1000 }) {
  const decoded = decodeJwt(jwt);
  if (!decoded) return faults.malformedClientAssertion();
  const { header, payload } = decoded;
  const check = SIGNATURE_CHECKS[header.alg];
  if (!check) return faults.malformedClientAssertion(`(mock: alg ${JSON.stringify(header.alg)} is not PS256 or RS256)`);
  const thumbprint = header['x5t#S256'] ?? header.x5t;
  const matches = (candidate) =>
    (header['x5t#S256'] === undefined || candidate.x5tS256 === header['x5t#S256']) && (header.x5t === undefined || candidate.x5t === header.x5t);
  const chain = Array.isArray(header.x5c) ? header.x5c.map((entry) => (typeof entry === 'string' ? tryCertificate(entry) : null)) : [];
  if (header.x5c !== undefined && (chain.length === 0 || chain.includes(null))) {
    return faults.malformedClientAssertion('(mock: x5c is not a list of base64 DER certificates)');
  }
  let key = thumbprint === undefined ? undefined : certificates.find(matches);
  if (chain.length > 0) {
    const leaf = registered(chain[0]);
    if (thumbprint !== undefined && !matches(leaf)) {
      return faults.invalidClientAssertionSignature('The x5c certificate does not match the thumbprint.', String(thumbprint));
    }
    const vouched = issuer !== null && issuer !== undefined && chain[0].checkIssued(issuer) && chain[0].verify(issuer.publicKey);
    key = vouched ? leaf : certificates.find((candidate) => candidate.x5tS256 === leaf.x5tS256);
  }
  if (!key) return faults.invalidClientAssertionSignature('The key was not found.', String(thumbprint ?? ''));
  let verified = false;
  try {
    verified = check(decoded.signed, key.certificate.publicKey, decoded.signature);
  } catch {
    verified = false;
  }
  if (!verified) {
    return faults.invalidClientAssertionSignature('The provided signature value did not match the expected signature value.', String(thumbprint));
  }
  if (payload.aud !== audience) return faults.malformedClientAssertion(`(mock: aud ${JSON.stringify(payload.aud)} is not ${audience})`);
  if (payload.iss !== clientId || payload.sub !== clientId) {
    return faults.malformedClientAssertion(`(mock: iss and sub must be the client id ${clientId})`);
  }
  if (typeof payload.jti !== 'string' || payload.jti.length < 16) return faults.malformedClientAssertion('(mock: jti must have at least 16 characters)');
  for (const claim of ['iat', 'exp']) {
    if (!Number.isFinite(payload[claim])) return faults.malformedClientAssertion(`(mock: ${claim} must be a number)`);
  }
  const notBefore = Number.isFinite(payload.nbf) ? payload.nbf : payload.iat;
  const timeWindow = `Current time: ${Math.floor(now)}, assertion valid from ${notBefore}, expiry time of assertion ${payload.exp}.`;
  if (payload.exp <= now || notBefore > now + CLOCK_SKEW || payload.exp - payload.iat > MAX_ASSERTION_LIFETIME) {
    return faults.clientAssertionOutOfTime(timeWindow);
  }
  return null;
}

function tryCertificate(base64Der) {
  try {
    return new crypto.X509Certificate(Buffer.from(base64Der, 'base64'));
  } catch {
    return null;
  }
}

/**
 * Starts the provider on loopback.
 * @param {object} [options]
 * @param {string} [options.host='127.0.0.1']
 * @param {number} [options.port=0] 0 picks a free port.
 * @param {string} [options.tenant='mock-tenant'] the issuer is `http://host:port/{tenant}/v2.0`.
 * @param {string} [options.clientId='mock-client-id']
 * @param {string|null} [options.clientSecret='mock-client-secret-value'] null accepts any client (that sends no client assertion, when assertions are checked).
 * @param {string|Buffer|Array<string|Buffer>} [options.clientCertificate] registers certificates (PEM; the first of each) for
 *   `private_key_jwt`: client assertions are then verified (signature, thumbprints, x5c, aud, iss, sub, jti, time window).
 * @param {string|Buffer} [options.clientCertificateIssuer] a CA (PEM) whose certificates sent in `x5c` are accepted too.
 * @param {(assertion: string, request: object) => boolean|object|undefined} [options.acceptClientAssertion] decides on a
 *   client assertion first (workload identity): true accepts, false refuses (AADSTS70021), an answer is sent as is,
 *   undefined leaves it to the certificate checks.
 * @param {boolean} [options.multiTenant=false] also serve the token endpoint at `/common`, `/organizations` and any tenant
 *   (a GUID or domain name) in place of `/{tenant}`; each request records the `tenant` it was sent to.
 * @param {number|string|undefined|null} [options.expiresIn=3600] `expires_in` of minted tokens (sent as is).
 * @param {(req: object) => object|undefined} [options.respond] an answer for a token request, or undefined for the default.
 * @param {{key: string|Buffer, cert: string|Buffer}} [options.tls] serve https with this key and certificate.
 * @param {boolean} [options.record=true] keep every request in `requests`; false only counts them (long runs).
 */
async function startMockIdp(options = {}) {
  const {
    host = '127.0.0.1',
    port = 0,
    tenant = 'mock-tenant',
    clientId = 'mock-client-id',
    clientSecret = 'mock-client-secret-value',
    multiTenant = false,
  } = options;
  const certificates = [options.clientCertificate ?? []]
    .flat()
    .map((pem) => pemCertificates(pem)[0])
    .filter(Boolean)
    .map(registered);
  const certificateIssuer = options.clientCertificateIssuer ? pemCertificates(options.clientCertificateIssuer)[0] : null;
  const checksAssertions = certificates.length > 0 || certificateIssuer !== null || typeof options.acceptClientAssertion === 'function';
  const tokenExchange = tokenExchangeSettings(options.tokenExchange);
  const state = {
    expiresIn: 'expiresIn' in options ? options.expiresIn : 3600,
    respond: options.respond,
    queue: [],
    discoveryFailures: 0,
    held: [],
    requests: [],
  };
  const sockets = new Set();
  const record = options.record !== false;
  /** The last token minted per (assertion, scope): `expectedToken` answers with it. */
  const minted = new Map();
  let tokenRequestCount = 0;

  const handler = async (req, res) => {
    let body = '';
    try {
      body = await readBody(req);
    } catch {
      return;
    }
    const url = new URL(req.url, 'http://mock');
    const form = Object.fromEntries(new URLSearchParams(body));
    const entry = { method: req.method, path: url.pathname, headers: req.headers, body, form, at: Date.now() };
    if (record) state.requests.push(entry);
    const send = (status, payload, headers = {}) => {
      if (res.destroyed || res.writableEnded) return;
      const text = typeof payload === 'string' ? payload : JSON.stringify(payload);
      res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', ...headers });
      res.end(text);
    };

    if (req.method === 'GET' && url.pathname === `/${tenant}/v2.0/.well-known/openid-configuration`) {
      if (state.discoveryFailures > 0) {
        state.discoveryFailures--;
        return send(503, 'Service Unavailable', { 'content-type': 'text/plain' });
      }
      return send(200, idp.discoveryDocument());
    }
    const tokenTenant = req.method === 'POST' ? tokenEndpointTenant(url.pathname) : null;
    if (tokenTenant === null) {
      return send(404, { error: 'not_found' });
    }
    entry.tenant = tokenTenant;

    tokenRequestCount++;
    const fault = state.queue.shift();
    if (fault) {
      entry.fault = fault;
      if (fault.reset) {
        req.socket.destroy();
        return;
      }
      if (fault.hang) return; // never answers; the client's timeout must end it
      if (fault.hold) {
        await new Promise((release) => state.held.push(release));
      }
      if (fault.delayMs) await new Promise((resolve) => setTimeout(resolve, fault.delayMs));
      if (fault.status || fault.body !== undefined) {
        const headers = { ...(fault.headers || {}) };
        if (fault.retryAfter !== undefined) headers['retry-after'] = String(fault.retryAfter);
        return send(fault.status || 200, fault.body === undefined ? '' : fault.body, headers);
      }
    }

    const auth = checkClient(req.headers, form, entry);
    if (auth) return send(auth.status, auth.body, auth.headers);
    if (form.grant_type === TOKEN_EXCHANGE_GRANT_TYPE && tokenExchange !== null) {
      const answer = answerTokenExchange(tokenExchange, new URLSearchParams(body), entry, state, (subject, scope, target) => {
        const token = mintExchanged(subject, scope, target);
        if (record) minted.set(exchangeKey(subject, scope, target), token);
        return token;
      });
      return send(answer.status, answer.body, answer.headers);
    }
    if (form.grant_type !== GRANT_TYPE) {
      return send(400, { error: 'unsupported_grant_type', error_description: 'AADSTS70003: unsupported grant type' });
    }
    if (form.requested_token_use !== 'on_behalf_of' || !form.assertion || !form.scope) {
      return send(400, { error: 'invalid_request', error_description: 'AADSTS900144: missing on_behalf_of parameters' });
    }
    const custom = state.respond && state.respond(entry);
    if (custom) {
      return send(custom.status || 200, custom.body === undefined ? '' : custom.body, custom.headers);
    }
    const accessToken = mint(form.assertion, form.scope);
    if (record) minted.set(`${form.assertion}\n${form.scope}`, accessToken);
    const answer = {
      token_type: 'Bearer',
      scope: form.scope,
      access_token: accessToken,
      ext_expires_in: 3600,
    };
    if (state.expiresIn !== undefined) answer.expires_in = state.expiresIn;
    return send(200, answer);
  };

  /** The tenant a token request was sent to, or null when the path is no token endpoint. */
  function tokenEndpointTenant(pathname) {
    const match = /^\/([^/]+)\/oauth2\/v2\.0\/token$/.exec(pathname);
    if (!match) return null;
    const segment = match[1];
    if (segment === tenant) return segment;
    if (!multiTenant) return null;
    const guid = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
    const domain = /^(?=.{1,253}$)([a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z0-9-]*[a-z][a-z0-9-]*$/i;
    return /^(common|organizations)$/i.test(segment) || guid.test(segment) || domain.test(segment) ? segment : null;
  }

  /** The answer Entra gives a client that fails to authenticate, or null when it passes. */
  function checkClient(headers, form, entry) {
    const withSecret = (headers.authorization || '').startsWith('Basic ') || form.client_secret !== undefined;
    if (form.client_assertion === undefined && form.client_assertion_type === undefined) {
      entry.clientAuthentication = (headers.authorization || '').startsWith('Basic ')
        ? 'client_secret_basic'
        : form.client_secret !== undefined
          ? 'client_secret_post'
          : 'none';
      if (!withSecret && checksAssertions) {
        return entraError(401, 'invalid_client', 7000218, "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.");
      }
      if (clientSecret === null) return null;
      return clientAuthenticates(headers, form) ? null : faults.badClientSecret();
    }
    entry.clientAuthentication = 'private_key_jwt';
    const decoded = decodeJwt(form.client_assertion);
    if (decoded) entry.clientAssertion = { header: decoded.header, payload: decoded.payload };
    if (withSecret) {
      return { status: 400, body: { error: 'invalid_request', error_description: 'AADSTS9002313: Invalid request. Request is malformed or invalid. (mock: a client assertion and a client secret were both sent)' } };
    }
    if (form.client_assertion_type !== CLIENT_ASSERTION_TYPE || !form.client_assertion) {
      return entraError(400, 'invalid_request', 90014, "The required field 'client_assertion' or 'client_assertion_type' is missing or invalid.");
    }
    if (form.client_id !== undefined && form.client_id !== clientId) return faults.unknownApplication();
    if (!checksAssertions) return clientSecret === null ? null : faults.invalidClientAssertionSignature();
    if (typeof options.acceptClientAssertion === 'function') {
      const verdict = options.acceptClientAssertion(form.client_assertion, entry);
      if (verdict === true) return null;
      if (verdict === false) return faults.noFederatedIdentity();
      if (verdict && typeof verdict === 'object') return { status: verdict.status || 400, body: verdict.body, headers: verdict.headers };
      if (certificates.length === 0 && certificateIssuer === null) return faults.noFederatedIdentity();
    }
    return checkClientAssertion(form.client_assertion, {
      certificates,
      issuer: certificateIssuer,
      audience: `${origin}${entry.path}`,
      clientId,
    });
  }

  function clientAuthenticates(headers, form) {
    const authorization = headers.authorization || '';
    if (authorization.startsWith('Basic ')) {
      const [id, secret] = Buffer.from(authorization.slice(6), 'base64')
        .toString('utf8')
        .split(':')
        .map((part) => decodeURIComponent(part.replace(/\+/g, ' ')));
      return id === clientId && secret === clientSecret;
    }
    return form.client_secret !== undefined && form.client_id === clientId && form.client_secret === clientSecret;
  }

  const server = options.tls ? https.createServer(options.tls, handler) : http.createServer(handler);
  server.keepAliveTimeout = 120_000;
  server.on('connection', (socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
  });
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, resolve);
  });
  const address = server.address();
  const origin = `${options.tls ? 'https' : 'http'}://${address.family === 'IPv6' ? `[${address.address}]` : address.address}:${address.port}`;

  const mint = (assertion, scope) =>
    mintToken(assertion, scope, { lifetime: Number(state.expiresIn) || 3600, tenant });
  /** A token exchange's token tells its subject token, scope, audiences and resources apart. */
  const exchangeKey = (subject, scope, { audience = [], resource = [] } = {}) =>
    `${subject}\n${scope}\naudience=${[audience].flat().join(' ')}\nresource=${[resource].flat().join(' ')}`;
  const mintExchanged = (subject, scope, target) => mint(subject, exchangeKey('', scope, target));

  const idp = {
    origin,
    port: address.port,
    issuer: `${origin}/${tenant}/v2.0`,
    tokenEndpoint: `${origin}/${tenant}/oauth2/v2.0/token`,
    /** The token endpoint of another tenant segment (`common`, `organizations`, a tenant id); needs `multiTenant`. */
    tokenEndpointFor: (segment) => `${origin}/${segment}/oauth2/v2.0/token`,
    clientId,
    clientSecret,
    /** Every request received, oldest first. */
    requests: state.requests,
    /** The token requests only. */
    tokenRequests: () => state.requests.filter((r) => r.method === 'POST'),
    discoveryDocument: () => ({
      issuer: `${origin}/${tenant}/v2.0`,
      token_endpoint: `${origin}/${tenant}/oauth2/v2.0/token`,
      authorization_endpoint: `${origin}/${tenant}/oauth2/v2.0/authorize`,
      jwks_uri: `${origin}/${tenant}/discovery/v2.0/keys`,
      token_endpoint_auth_methods_supported: ['client_secret_post', 'client_secret_basic', 'private_key_jwt'],
      grant_types_supported: ['authorization_code', 'refresh_token', GRANT_TYPE, ...(tokenExchange ? [TOKEN_EXCHANGE_GRANT_TYPE] : [])],
    }),
    /** The token minted for this assertion and scope (the last one), or what would be minted now. */
    expectedToken: (assertion, scope) => minted.get(`${assertion}\n${scope}`) ?? mint(assertion, scope),
    /** Token exchange: the token minted for this subject token, scope, audiences and resources. */
    expectedExchangeToken: (subjectToken, scope, target = {}) =>
      minted.get(exchangeKey(subjectToken, scope, target)) ?? mintExchanged(subjectToken, scope, target),
    /**
     * Queues answers for the next token requests, in order. Each is
     * `{ status, body, headers, retryAfter, delayMs, hold, reset, hang }`;
     * a fault with only `delayMs` or `hold` delays the normal answer.
     */
    enqueue: (...answers) => {
      state.queue.push(...answers);
      return idp;
    },
    /** Lets every held request go on. */
    release: () => {
      const held = state.held.splice(0);
      held.forEach((release) => release());
      return held.length;
    },
    heldCount: () => state.held.length,
    /** Token requests received since the start or the last reset (counted even when not recorded). */
    tokenRequestCount: () => tokenRequestCount,
    /** The next `count` discovery requests answer 503. */
    failDiscovery: (count = 1) => {
      state.discoveryFailures = count;
    },
    discoveryRequests: () => state.requests.filter((r) => r.method === 'GET'),
    setExpiresIn: (value) => {
      state.expiresIn = value;
    },
    setResponder: (respond) => {
      state.respond = respond;
    },
    /** Forgets requests, queued answers and held requests (which are released). */
    reset: () => {
      state.requests.length = 0;
      minted.clear();
      tokenRequestCount = 0;
      state.queue.length = 0;
      state.discoveryFailures = 0;
      idp.release();
      state.expiresIn = 'expiresIn' in options ? options.expiresIn : 3600;
      state.respond = options.respond;
    },
    close: async () => {
      idp.release();
      for (const socket of sockets) socket.destroy();
      await new Promise((resolve) => server.close(() => resolve()));
    },
  };
  return idp;
}

// ---- OAuth 2.0 Token Exchange (RFC 8693) ----

const TOKEN_TYPE_URI = /^[A-Za-z][A-Za-z0-9+.-]*:\S+$/;
/** Parameters that may be repeated (RFC 8693 §2.1); any other repeated one is an invalid_request. */
const REPEATABLE = new Set(['audience', 'resource']);

/**
 * The `tokenExchange` option: `true` for the defaults, or
 * `{ audiences, resources, subjectTokenTypes, requireAudience, issuedTokenType, tokenType }`;
 * null when the provider does not offer the grant (it then answers unsupported_grant_type, as Entra ID does).
 */
function tokenExchangeSettings(option) {
  if (!option) return null;
  const settings = option === true ? {} : option;
  return {
    /** Audiences the provider knows (any when absent); another one is an invalid_target. */
    audiences: settings.audiences ?? null,
    /** Resources the provider knows (any absolute URI when absent). */
    resources: settings.resources ?? null,
    subjectTokenTypes: settings.subjectTokenTypes ?? [ACCESS_TOKEN_TYPE, 'urn:ietf:params:oauth:token-type:jwt'],
    /** Okta: a request without `audience` is an invalid_request. */
    requireAudience: Boolean(settings.requireAudience),
    /** Answer with this `issued_token_type` instead of the requested one (a misbehaving provider). */
    issuedTokenType: settings.issuedTokenType,
    /** Answer with this `token_type` instead of `Bearer` / `N_A`. */
    tokenType: settings.tokenType,
  };
}

const exchangeError = (error, description, status = 400) => ({ status, body: { error, error_description: `${description} (mock RFC 8693)` } });

/**
 * Answers a token exchange request after client authentication, checking
 * every parameter of RFC 8693 §2.1 and answering as §2.2 says. Records the
 * audiences and resources on the request.
 */
function answerTokenExchange(settings, params, entry, state, mint) {
  entry.audiences = params.getAll('audience');
  entry.resources = params.getAll('resource');
  for (const name of new Set(params.keys())) {
    if (!REPEATABLE.has(name) && params.getAll(name).length > 1) {
      return exchangeError('invalid_request', `parameter ${name} is repeated`);
    }
  }
  for (const name of ['assertion', 'requested_token_use']) {
    if (params.has(name)) return exchangeError('invalid_request', `parameter ${name} belongs to the jwt-bearer grant, not to token exchange`);
  }
  const subjectToken = params.get('subject_token');
  const subjectTokenType = params.get('subject_token_type');
  if (!subjectToken) return exchangeError('invalid_request', 'subject_token is required');
  if (!subjectTokenType) return exchangeError('invalid_request', 'subject_token_type is required');
  if (!settings.subjectTokenTypes.includes(subjectTokenType)) {
    return exchangeError('invalid_request', `subject_token_type ${subjectTokenType} is not supported`);
  }
  const requested = params.get('requested_token_type') ?? ACCESS_TOKEN_TYPE;
  if (!TOKEN_TYPE_URI.test(requested)) return exchangeError('invalid_request', 'requested_token_type must be a token type URI');
  if (params.has('actor_token') !== params.has('actor_token_type')) {
    return exchangeError('invalid_request', 'actor_token and actor_token_type go together');
  }
  if (params.has('actor_token_type') && !TOKEN_TYPE_URI.test(params.get('actor_token_type'))) {
    return exchangeError('invalid_request', 'actor_token_type must be a token type URI');
  }
  if (settings.requireAudience && entry.audiences.length === 0) return exchangeError('invalid_request', 'audience is required');
  for (const audience of entry.audiences) {
    if (audience === '' || (settings.audiences !== null && !settings.audiences.includes(audience))) {
      return exchangeError('invalid_target', `audience ${JSON.stringify(audience)} is not known`);
    }
  }
  for (const resource of entry.resources) {
    let url = null;
    try {
      url = new URL(resource);
    } catch {
      url = null;
    }
    if (url === null || url.hash !== '' || (settings.resources !== null && !settings.resources.includes(resource))) {
      return exchangeError('invalid_target', `resource ${JSON.stringify(resource)} is not known`);
    }
  }
  const custom = state.respond && state.respond(entry);
  if (custom) return { status: custom.status || 200, body: custom.body === undefined ? '' : custom.body, headers: custom.headers };
  const scope = params.get('scope') ?? '';
  const answer = {
    access_token: mint(subjectToken, scope, { audience: entry.audiences, resource: entry.resources }),
    issued_token_type: settings.issuedTokenType ?? requested,
    token_type: settings.tokenType ?? (requested === ACCESS_TOKEN_TYPE ? 'Bearer' : 'N_A'),
  };
  if (scope !== '') answer.scope = scope;
  if (state.expiresIn !== undefined) answer.expires_in = state.expiresIn;
  return { status: 200, body: answer };
}

module.exports = {
  startMockIdp,
  mintToken,
  entraError,
  faults,
  GRANT_TYPE,
  CLIENT_ASSERTION_TYPE,
  TOKEN_EXCHANGE_GRANT_TYPE,
  ACCESS_TOKEN_TYPE,
};
