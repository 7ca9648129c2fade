'use strict';
/**
 * The mock provider's client-assertion verifier (private_key_jwt), proven
 * with assertions made by node:crypto, so that it can be trusted when it
 * judges the ones the native side signs. Certificates are made by openssl in
 * a temporary directory; without openssl the suite is skipped with a notice
 * (and fails on CI, where openssl must be present).
 */
const crypto = require('node:crypto');
const { startMockIdp, GRANT_TYPE, CLIENT_ASSERTION_TYPE } = require('../testing');
const { opensslAvailable, makePki } = require('./support/pki');

const hasOpenssl = opensslAvailable('the mock client-assertion tests');
const describeWithOpenssl = hasOpenssl ? describe : describe.skip;

const der = (pem) => new crypto.X509Certificate(pem).raw;
const thumbprint = (algorithm, pem) => crypto.createHash(algorithm).update(der(pem)).digest('base64url');
const encode = (value) => Buffer.from(JSON.stringify(value)).toString('base64url');

/**
 * A client assertion signed by node:crypto. `header` and `payload` entries
 * replace the defaults (undefined removes one); `signWith` picks another key.
 */
function assertion({ key, cert, alg = 'PS256', audience, clientId, header = {}, payload = {}, signWith = alg, now = Math.floor(Date.now() / 1000) }) {
  const thumbprints = alg === 'PS256' ? { 'x5t#S256': thumbprint('sha256', cert) } : { x5t: thumbprint('sha1', cert) };
  const fullHeader = { alg, typ: 'JWT', ...thumbprints, ...header };
  const fullPayload = { aud: audience, iss: clientId, sub: clientId, jti: crypto.randomUUID(), iat: now, nbf: now, exp: now + 600, ...payload };
  for (const part of [fullHeader, fullPayload]) {
    for (const [name, value] of Object.entries(part)) if (value === undefined) delete part[name];
  }
  const signed = `${encode(fullHeader)}.${encode(fullPayload)}`;
  const signature =
    signWith === 'PS256'
      ? crypto.sign('sha256', Buffer.from(signed), { key, padding: crypto.constants.RSA_PKCS1_PSS_PADDING, saltLength: 32 })
      : crypto.sign('sha256', Buffer.from(signed), key);
  return `${signed}.${signature.toString('base64url')}`;
}

/** Posts an On-Behalf-Of request authenticated by `fields` to `url`. */
async function exchange(url, fields, headers = {}) {
  const response = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded', ...headers },
    body: new URLSearchParams({
      grant_type: GRANT_TYPE,
      requested_token_use: 'on_behalf_of',
      assertion: 'user-assertion',
      scope: 'api://downstream/.default',
      ...fields,
    }),
  });
  const text = await response.text();
  let body;
  try {
    body = JSON.parse(text);
  } catch {
    body = text;
  }
  return { status: response.status, body };
}

const asClient = (idp, jwt, extra = {}) => ({
  client_id: idp.clientId,
  client_assertion_type: CLIENT_ASSERTION_TYPE,
  client_assertion: jwt,
  ...extra,
});

/** Expects an Entra error answer with this status, error and AADSTS code. */
function expectEntraError(result, status, error, code) {
  expect({ status: result.status, error: result.body.error, codes: result.body.error_codes }).toEqual({ status, error, codes: [code] });
  expect(result.body.error_description).toMatch(new RegExp(`^AADSTS${code}: `));
}

describeWithOpenssl('mock provider: private_key_jwt client assertions', () => {
  let pki;
  let idp;
  let sign;

  beforeAll(async () => {
    pki = makePki();
    idp = await startMockIdp({ clientCertificate: pki.clientCert, clientSecret: 'still-accepted-secret' });
    sign = (options = {}) =>
      assertion({ key: pki.clientKey, cert: pki.clientCert, audience: idp.tokenEndpoint, clientId: idp.clientId, ...options });
  });
  beforeEach(() => idp.reset());
  afterAll(async () => {
    if (idp) await idp.close();
  });

  it('accepts a PS256 assertion with the x5t#S256 thumbprint, and records what was sent', async () => {
    const jwt = sign();
    const result = await exchange(idp.tokenEndpoint, asClient(idp, jwt, { claims: '{"access_token":{"xms_cc":{"values":["cp1"]}}}' }));
    expect(result.status).toBe(200);
    expect(result.body.access_token).toBe(idp.expectedToken('user-assertion', 'api://downstream/.default'));
    const [request] = idp.tokenRequests();
    expect(request.clientAuthentication).toBe('private_key_jwt');
    expect(request.form.client_assertion).toBe(jwt);
    expect(request.form.claims).toBe('{"access_token":{"xms_cc":{"values":["cp1"]}}}');
    expect(request.clientAssertion.header).toEqual({ alg: 'PS256', typ: 'JWT', 'x5t#S256': thumbprint('sha256', pki.clientCert) });
    expect(request.clientAssertion.payload).toMatchObject({ aud: idp.tokenEndpoint, iss: idp.clientId, sub: idp.clientId });
  });

  it('accepts an RS256 assertion with the x5t (SHA-1) thumbprint', async () => {
    const result = await exchange(idp.tokenEndpoint, asClient(idp, sign({ alg: 'RS256' })));
    expect(result.status).toBe(200);
  });

  it('accepts x5c when its leaf is the registered certificate, and refuses one that is not the thumbprint', async () => {
    const x5c = [der(pki.clientCert).toString('base64'), der(pki.caCert).toString('base64')];
    expect((await exchange(idp.tokenEndpoint, asClient(idp, sign({ header: { x5c } })))).status).toBe(200);
    const swapped = sign({ header: { x5c: [der(pki.otherCert).toString('base64')] } });
    expectEntraError(await exchange(idp.tokenEndpoint, asClient(idp, swapped)), 401, 'invalid_client', 700027);
    const garbage = sign({ header: { x5c: ['bm90IGEgY2VydGlmaWNhdGU='] } });
    expectEntraError(await exchange(idp.tokenEndpoint, asClient(idp, garbage)), 400, 'invalid_request', 50027);
  });

  it('refuses a signature that does not verify with the certificate (AADSTS700027)', async () => {
    const otherKey = sign({ key: pki.otherKey });
    const otherPadding = sign({ signWith: 'RS256' });
    const tampered = sign().replace(/\.([^.]+)\./, (_, payload) => `.${encode({ ...JSON.parse(Buffer.from(payload, 'base64url')), sub: 'x' })}.`);
    for (const jwt of [otherKey, otherPadding, tampered]) {
      const result = await exchange(idp.tokenEndpoint, asClient(idp, jwt));
      expectEntraError(result, 401, 'invalid_client', 700027);
      expect(result.body.error_description).toMatch(/did not match the expected signature value/);
    }
  });

  it('refuses an unregistered certificate (AADSTS700027, key not found)', async () => {
    const stranger = assertion({ key: pki.otherKey, cert: pki.otherCert, audience: idp.tokenEndpoint, clientId: idp.clientId });
    const result = await exchange(idp.tokenEndpoint, asClient(idp, stranger));
    expectEntraError(result, 401, 'invalid_client', 700027);
    expect(result.body.error_description).toContain(`The key was not found., Thumbprint of key used by client: '${thumbprint('sha256', pki.otherCert)}'`);
    const noThumbprint = sign({ header: { 'x5t#S256': undefined } });
    expectEntraError(await exchange(idp.tokenEndpoint, asClient(idp, noThumbprint)), 401, 'invalid_client', 700027);
  });

  it('checks aud, iss, sub and jti (AADSTS50027)', async () => {
    const cases = [
      [{ aud: `${idp.origin}/other-tenant/oauth2/v2.0/token` }, /aud/],
      [{ aud: undefined }, /aud/],
      [{ iss: 'someone-else' }, /iss and sub/],
      [{ sub: 'someone-else' }, /iss and sub/],
      [{ jti: 'short' }, /jti/],
      [{ jti: undefined }, /jti/],
      [{ iat: undefined }, /iat/],
      [{ exp: 'soon' }, /exp/],
    ];
    for (const [payload, reason] of cases) {
      const result = await exchange(idp.tokenEndpoint, asClient(idp, sign({ payload })));
      expectEntraError(result, 400, 'invalid_request', 50027);
      expect(result.body.error_description).toMatch(reason);
    }
  });

  it('checks the time window: not expired, not from the future, at most ten minutes long (AADSTS700024)', async () => {
    const now = Math.floor(Date.now() / 1000);
    for (const payload of [
      { iat: now - 700, nbf: now - 700, exp: now - 100 },
      { iat: now, nbf: now, exp: now + 601 },
      { iat: now + 900, nbf: now + 900, exp: now + 1200 },
    ]) {
      const result = await exchange(idp.tokenEndpoint, asClient(idp, sign({ payload })));
      expectEntraError(result, 401, 'invalid_client', 700024);
      expect(result.body.error_description).toContain(`expiry time of assertion ${payload.exp}`);
    }
    // Within the clock skew Entra tolerates, and exactly ten minutes long: accepted.
    const skewed = sign({ payload: { iat: now + 60, nbf: now + 60, exp: now + 660 } });
    expect((await exchange(idp.tokenEndpoint, asClient(idp, skewed))).status).toBe(200);
  });

  it('refuses malformed assertions (AADSTS50027)', async () => {
    const unsigned = `${encode({ alg: 'none', typ: 'JWT' })}.${encode({ aud: idp.tokenEndpoint })}.`;
    for (const jwt of ['not-a-jwt', 'a.b.c', unsigned, sign({ header: { alg: 'HS256' } })]) {
      expectEntraError(await exchange(idp.tokenEndpoint, asClient(idp, jwt)), 400, 'invalid_request', 50027);
    }
  });

  it('wants exactly one client authentication, of the right type', async () => {
    const jwt = sign();
    const both = await exchange(idp.tokenEndpoint, asClient(idp, jwt, { client_secret: 'still-accepted-secret' }));
    expect(both.status).toBe(400);
    expect(both.body.error).toBe('invalid_request');
    const basic = `Basic ${Buffer.from(`${idp.clientId}:still-accepted-secret`).toString('base64')}`;
    expect((await exchange(idp.tokenEndpoint, asClient(idp, jwt), { authorization: basic })).status).toBe(400);
    const wrongType = await exchange(idp.tokenEndpoint, asClient(idp, jwt, { client_assertion_type: 'urn:other' }));
    expectEntraError(wrongType, 400, 'invalid_request', 90014);
    const wrongClient = await exchange(idp.tokenEndpoint, asClient(idp, jwt, { client_id: 'another-app' }));
    expectEntraError(wrongClient, 400, 'unauthorized_client', 700016);
    const none = await exchange(idp.tokenEndpoint, { client_id: idp.clientId });
    expectEntraError(none, 401, 'invalid_client', 7000218);
    // A secret alone still works when the provider has one.
    const secret = await exchange(idp.tokenEndpoint, { client_id: idp.clientId, client_secret: 'still-accepted-secret' });
    expect(secret.status).toBe(200);
    expect(idp.tokenRequests().at(-1).clientAuthentication).toBe('client_secret_post');
  });
});

describeWithOpenssl('mock provider: other ways to accept a client assertion', () => {
  let pki;
  const started = [];
  const start = async (options) => {
    const idp = await startMockIdp(options);
    started.push(idp);
    return idp;
  };

  beforeAll(() => {
    pki = makePki();
  });
  afterAll(async () => {
    await Promise.all(started.map((idp) => idp.close()));
  });

  it('accepts a certificate sent in x5c that a trusted issuer signed (subject name and issuer)', async () => {
    const idp = await start({ clientCertificateIssuer: pki.caCert, clientSecret: null });
    const base = { key: pki.clientKey, cert: pki.clientCert, audience: idp.tokenEndpoint, clientId: idp.clientId };
    const x5c = [der(pki.clientCert).toString('base64')];
    expect((await exchange(idp.tokenEndpoint, asClient(idp, assertion({ ...base, header: { x5c } })))).status).toBe(200);
    // Without x5c the certificate is unknown; a self-signed one is not vouched for.
    expectEntraError(await exchange(idp.tokenEndpoint, asClient(idp, assertion(base))), 401, 'invalid_client', 700027);
    const stranger = assertion({
      ...base,
      key: pki.otherKey,
      cert: pki.otherCert,
      header: { x5c: [der(pki.otherCert).toString('base64')] },
    });
    expectEntraError(await exchange(idp.tokenEndpoint, asClient(idp, stranger)), 401, 'invalid_client', 700027);
  });

  it('lets acceptClientAssertion decide first (workload identity), then falls back to certificates', async () => {
    const seen = [];
    const idp = await start({
      clientCertificate: [pki.otherCert, pki.clientCert],
      acceptClientAssertion: (jwt, request) => {
        seen.push({ jwt, path: request.path });
        if (jwt === 'federated-ok') return true;
        if (jwt === 'federated-bad') return false;
        if (jwt === 'federated-custom') return { status: 401, body: { error: 'invalid_client', error_description: 'custom' } };
        return undefined;
      },
    });
    expect((await exchange(idp.tokenEndpoint, asClient(idp, 'federated-ok'))).status).toBe(200);
    expectEntraError(await exchange(idp.tokenEndpoint, asClient(idp, 'federated-bad')), 400, 'invalid_client', 70021);
    const custom = await exchange(idp.tokenEndpoint, asClient(idp, 'federated-custom'));
    expect(custom).toEqual({ status: 401, body: { error: 'invalid_client', error_description: 'custom' } });
    const signed = assertion({ key: pki.clientKey, cert: pki.clientCert, audience: idp.tokenEndpoint, clientId: idp.clientId });
    expect((await exchange(idp.tokenEndpoint, asClient(idp, signed))).status).toBe(200);
    expect(seen.map((entry) => entry.jwt)).toEqual(['federated-ok', 'federated-bad', 'federated-custom', signed]);
    expect(seen.every((entry) => entry.path === new URL(idp.tokenEndpoint).pathname)).toBe(true);

    const federatedOnly = await start({ acceptClientAssertion: () => undefined });
    expectEntraError(await exchange(federatedOnly.tokenEndpoint, asClient(federatedOnly, signed)), 400, 'invalid_client', 70021);
  });

  it('serves common, organizations and tenant ids with multiTenant, checking aud against the URL called', async () => {
    const idp = await start({ clientCertificate: pki.clientCert, multiTenant: true });
    const tenantId = '72f988bf-86f1-41af-91ab-2d7cd011db47';
    for (const segment of ['common', 'organizations', tenantId, 'contoso.onmicrosoft.com', 'mock-tenant']) {
      const url = idp.tokenEndpointFor(segment);
      const jwt = assertion({ key: pki.clientKey, cert: pki.clientCert, audience: url, clientId: idp.clientId });
      expect((await exchange(url, asClient(idp, jwt))).status).toBe(200);
      expect(idp.tokenRequests().at(-1).tenant).toBe(segment);
      // The same assertion at another tenant's endpoint has the wrong audience.
      const elsewhere = await exchange(idp.tokenEndpointFor('organizations' === segment ? 'common' : 'organizations'), asClient(idp, jwt));
      expectEntraError(elsewhere, 400, 'invalid_request', 50027);
    }
    for (const segment of ['..', '%2e%2e', 'a b', 'evil.com%23', 'under_score.com']) {
      expect((await exchange(`${idp.origin}/${segment}/oauth2/v2.0/token`, {})).status).toBe(404);
    }
    const singleTenant = await start({ clientSecret: null });
    expect((await exchange(singleTenant.tokenEndpointFor('common'), {})).status).toBe(404);
    expect((await exchange(singleTenant.tokenEndpoint, {})).status).toBe(200);
  });
});
