'use strict';
/**
 * Enterprise credentials end to end: private_key_jwt assertions signed by the
 * addon and verified by the mock provider (signature, thumbprints, x5c, aud,
 * iss/sub, jti, lifetime), client assertions from a string, a function or the
 * federated token file, claims challenges and client capabilities,
 * home-tenant routing, and acquireOboToken. Certificates are made by openssl
 * in a temporary directory; without openssl the suite is skipped with a
 * notice (and fails on CI, where openssl must be present).
 */
const crypto = require('node:crypto');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { startMockIdp, CLIENT_ASSERTION_TYPE } = require('../testing');
const { obo, until, settle, thrownBy, textsOf } = require('./helpers');
const { opensslAvailable, makePki } = require('./support/pki');

const hasOpenssl = opensslAvailable('the credentials tests');
const describeWithOpenssl = hasOpenssl ? describe : describe.skip;

const der = (pem) => new crypto.X509Certificate(pem).raw;
const thumbprint = (algorithm, pem) => crypto.createHash(algorithm).update(der(pem)).digest('base64url');
const encode = (value) => Buffer.from(JSON.stringify(value)).toString('base64url');
/** A user's access token as the tests need it: readable claims, signature not checked by the mock. */
const userToken = (claims) => `${encode({ typ: 'JWT', alg: 'RS256' })}.${encode(claims)}.c2lnbmF0dXJl`;

const TENANT_ID = '72f988bf-86f1-41af-91ab-2d7cd011db47';
const CAE = '{"access_token":{"nbf":{"essential":true,"value":"1700000000"}}}';
const XMS_CC = { access_token: { xms_cc: { values: ['cp1'] } } };
const user = { openidId: 'user-1' };

/** Runs `script` in a worker thread that requires the package from `workerData.root`; resolves with its first message, after it exits. */
function runWorker(script, data = {}) {
  const { Worker } = require('node:worker_threads');
  return new Promise((resolve, reject) => {
    const worker = new Worker(script, { eval: true, workerData: { root: path.join(__dirname, '..'), ...data } });
    let message;
    worker.once('message', (value) => {
      message = value;
      worker.terminate();
    });
    worker.once('error', reject);
    worker.once('exit', () => resolve(message));
  });
}

describeWithOpenssl('private_key_jwt, client assertions, claims and routing', () => {
  let pki;
  let idp;
  const tokenRequests = () => idp.tokenRequests();
  const lastRequest = () => tokenRequests().at(-1);
  const base = (extra = {}) => ({ tokenEndpoint: idp.tokenEndpoint, clientId: idp.clientId, retryDelayMs: 20, ...extra });
  const withCertificate = (extra = {}) =>
    base({ tokenEndpointAuthMethod: 'private_key_jwt', clientCertificate: pki.clientCert, clientPrivateKey: pki.clientKey, ...extra });

  beforeAll(async () => {
    pki = makePki();
    idp = await startMockIdp({
      clientCertificate: [pki.clientCert, pki.otherCert],
      clientCertificateIssuer: pki.caCert,
      // Workload identity: these assertions stand for federated tokens the provider trusts.
      acceptClientAssertion: (assertion) => (assertion.startsWith('workload.') ? true : undefined),
      multiTenant: true,
    });
  });
  beforeEach(() => {
    idp.reset();
    obo.configure(withCertificate());
  });
  afterAll(async () => {
    obo.configure(null);
    if (idp) await idp.close();
  });

  describe('certificate credentials', () => {
    test('PS256 with an x5t#S256 thumbprint, verified by the provider; no secret, no Basic header', async () => {
      const result = await obo.exchangeOboToken(user, 'assertion-ps256', 'api://s/.default');
      expect(result.access_token).toBe(idp.expectedToken('assertion-ps256', 'api://s/.default'));
      const request = lastRequest();
      expect(request.clientAuthentication).toBe('private_key_jwt');
      expect(request.headers.authorization).toBeUndefined();
      expect(request.form).toMatchObject({ client_id: idp.clientId, client_assertion_type: CLIENT_ASSERTION_TYPE });
      expect(request.form.client_secret).toBeUndefined();
      const { header, payload } = request.clientAssertion;
      expect(header).toEqual({ alg: 'PS256', typ: 'JWT', 'x5t#S256': thumbprint('sha256', pki.clientCert) });
      expect(payload).toMatchObject({ aud: idp.tokenEndpoint, iss: idp.clientId, sub: idp.clientId });
      expect(payload.jti.length).toBeGreaterThanOrEqual(16);
      expect(payload.nbf).toBe(payload.iat);
      expect(payload.exp - payload.iat).toBeLessThanOrEqual(600);
      expect(Math.abs(payload.iat - Date.now() / 1000)).toBeLessThan(60);
    });

    test('RS256 with an x5t (SHA-1) thumbprint and the x5c chain, from a PKCS#1 key', async () => {
      obo.configure(withCertificate({
        clientCertificate: pki.clientCert + pki.caCert,
        clientPrivateKey: pki.clientKeyPkcs1,
        clientAssertionAlgorithm: 'RS256',
        sendX5c: true,
      }));
      await obo.exchangeOboToken(user, 'assertion-rs256', 'api://s');
      const { header } = lastRequest().clientAssertion;
      expect(header).toEqual({
        alg: 'RS256',
        typ: 'JWT',
        x5t: thumbprint('sha1', pki.clientCert),
        x5c: [der(pki.clientCert).toString('base64'), der(pki.caCert).toString('base64')],
      });
    });

    test('one assertion serves many requests; it is not signed anew per request', async () => {
      await obo.exchangeOboToken({ openidId: 'a' }, 'assertion-a', 'api://s');
      await obo.exchangeOboToken({ openidId: 'b' }, 'assertion-b', 'api://s');
      await obo.exchangeOboToken({ openidId: 'c' }, 'assertion-c', 'api://s', false);
      const sent = tokenRequests().map((request) => request.form.client_assertion);
      expect(sent).toHaveLength(3);
      expect(new Set(sent).size).toBe(1);
    });

    test('key rotation: a configure() with a new certificate signs with the new key from the next request on', async () => {
      await obo.exchangeOboToken(user, 'assertion-1', 'api://s');
      obo.configure(withCertificate({ clientCertificate: pki.otherCert, clientPrivateKey: pki.otherKey }));
      await obo.exchangeOboToken(user, 'assertion-1', 'api://s');
      const [before, after] = tokenRequests();
      expect(before.clientAssertion.header['x5t#S256']).toBe(thumbprint('sha256', pki.clientCert));
      expect(after.clientAssertion.header['x5t#S256']).toBe(thumbprint('sha256', pki.otherCert));
      expect(after.form.client_assertion).not.toBe(before.form.client_assertion);
    });

    test('a certificate the provider does not know is refused with AADSTS700027, and the error holds no assertion', async () => {
      const stranger = await startMockIdp({ clientCertificate: pki.otherCert });
      try {
        obo.configure(withCertificate({ tokenEndpoint: stranger.tokenEndpoint }));
        const { error } = await settle(obo.exchangeOboToken(user, 'assertion-refused', 'api://s'));
        expect(error).toMatchObject({ error: 'invalid_client', status: 401 });
        expect(error.message).toContain('AADSTS700027');
        const sent = stranger.tokenRequests()[0].form.client_assertion;
        for (const text of textsOf(error)) expect(text).not.toContain(sent);
      } finally {
        await stranger.close();
      }
    });

    test('configure() checks the key and the certificate, and keeps the configuration in force when they are wrong', async () => {
      const cases = [
        [withCertificate({ clientPrivateKey: 'not a key' }), 'clientPrivateKey'],
        [withCertificate({ clientPrivateKey: pki.clientKey.replace(/[A-Za-z0-9+/]{64}\n/, 'A'.repeat(64) + '\n') }), 'clientPrivateKey'],
        [withCertificate({ clientPrivateKey: pki.otherKey }), 'clientCertificate'],
        [withCertificate({ clientCertificate: 'certificate.pem' }), 'clientCertificate'],
        [base({ tokenEndpointAuthMethod: 'private_key_jwt' }), 'clientCertificate'],
        [withCertificate({ clientAssertionAlgorithm: 'ES256' }), 'clientAssertionAlgorithm'],
        [withCertificate({ sendX5c: 'yes' }), 'sendX5c'],
        [withCertificate({ clientSecret: 'a-secret-value' }), 'clientSecret'],
        [withCertificate({ clientAssertion: 'a.b.c' }), 'clientAssertion'],
        [withCertificate({ clientCapabilities: ['cp1', 7] }), 'clientCapabilities'],
        [withCertificate({ clientCapabilities: [{}] }), 'clientCapabilities'],
      ];
      for (const [options, option] of cases) {
        const thrown = thrownBy(() => obo.configure(options));
        expect(thrown).toBeInstanceOf(TypeError);
        expect(thrown).toMatchObject({ option });
        expect(thrown.message).not.toMatch(/MII/);
      }
      await obo.exchangeOboToken(user, 'assertion-kept', 'api://s');
      expect(lastRequest().clientAssertion.header['x5t#S256']).toBe(thumbprint('sha256', pki.clientCert));
    });
  });

  describe('client assertions from elsewhere', () => {
    test('a fixed string is sent as the client assertion', async () => {
      obo.configure(base({ clientAssertion: 'workload.fixed' }));
      await obo.exchangeOboToken(user, 'assertion-fixed', 'api://s');
      expect(lastRequest().form).toMatchObject({ client_assertion: 'workload.fixed', client_id: idp.clientId });
    });

    test('a sync function is asked with the client id and the endpoint, only when a request is sent', async () => {
      const asked = [];
      obo.configure(base({
        clientAssertion: (context) => {
          asked.push(context);
          return `workload.sync-${asked.length}`;
        },
      }));
      await obo.exchangeOboToken(user, 'assertion-sync', 'api://s');
      await obo.exchangeOboToken(user, 'assertion-sync', 'api://s');
      expect(asked).toEqual([{ clientId: idp.clientId, tokenEndpoint: idp.tokenEndpoint }]);
      expect(lastRequest().form.client_assertion).toBe('workload.sync-1');
    });

    test('an async function, asked again for each request it must authenticate', async () => {
      let calls = 0;
      obo.configure(base({
        clientAssertion: async () => {
          await new Promise((resolve) => setImmediate(resolve));
          return `workload.async-${++calls}`;
        },
      }));
      await obo.exchangeOboToken(user, 'assertion-async-1', 'api://s');
      await obo.exchangeOboToken(user, 'assertion-async-2', 'api://s');
      expect(tokenRequests().map((request) => request.form.client_assertion)).toEqual(['workload.async-1', 'workload.async-2']);
    });

    test.each([
      ['throws', () => { throw new Error('vault unreachable'); }, 'vault unreachable'],
      ['rejects', async () => { throw new Error('HSM busy'); }, 'HSM busy'],
      ['rejects with a non-error', () => Promise.reject('no key'), 'no key'],
      ['returns no string', () => 42, 'it returned a number, not a string'],
      ['returns an empty string', () => ' ', 'returned an empty assertion'],
    ])('a function that %s fails the exchange with a clear error and sends no request', async (_, clientAssertion, why) => {
      obo.configure(base({ clientAssertion, maxRetries: 0 }));
      const { error } = await settle(obo.exchangeOboToken(user, 'assertion-failing', 'api://s'));
      expect(error).toBeInstanceOf(Error);
      expect(error.message).toContain('clientAssertion function');
      expect(error.message).toContain(why);
      expect(error).toMatchObject({ code: 'ECLIENTASSERTION', oboFailureReason: 'exchange_failed' });
      expect(idp.tokenRequestCount()).toBe(0);
    });

    test('the function runs on the thread that configured it, also for exchanges started elsewhere', async () => {
      const { threadId } = require('node:worker_threads');
      const threads = [];
      obo.configure(base({
        clientAssertion: () => {
          threads.push(threadId);
          return 'workload.main-thread';
        },
      }));
      const script = `
        const { parentPort, workerData } = require('node:worker_threads');
        require(workerData.root).exchangeOboToken({ openidId: 'worker-user' }, 'assertion-worker', 'api://s')
          .then((result) => parentPort.postMessage({ token: result.access_token }), (err) => parentPort.postMessage({ error: err.message }));
      `;
      const answer = await runWorker(script);
      expect(answer).toEqual({ token: idp.expectedToken('assertion-worker', 'api://s') });
      expect(threads).toEqual([threadId]);
      expect(lastRequest().form.client_assertion).toBe('workload.main-thread');
    });

    test('a function whose thread has ended fails the exchange at once, with a clear error', async () => {
      const script = `
        const { parentPort, workerData } = require('node:worker_threads');
        require(workerData.root).configure({
          tokenEndpoint: workerData.tokenEndpoint, clientId: workerData.clientId, maxRetries: 0,
          clientAssertion: () => 'workload.from-worker',
        });
        parentPort.postMessage('configured');
      `;
      expect(await runWorker(script, { tokenEndpoint: idp.tokenEndpoint, clientId: idp.clientId })).toBe('configured');
      const { error } = await settle(obo.exchangeOboToken(user, 'assertion-orphan', 'api://s'));
      expect(error.message).toContain('has ended; call configure() again');
      expect(error.code).toBe('ECLIENTASSERTION');
      expect(idp.tokenRequestCount()).toBe(0);
    });

    test('workload identity: the federated token file, re-read when Kubernetes rotates it', async () => {
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'obo-native-federated-'));
      const file = path.join(dir, 'azure-identity-token');
      const saved = {};
      const names = ['OPENID_ISSUER', 'OPENID_CLIENT_ID', 'OPENID_CLIENT_SECRET', 'OPENID_TOKEN_ENDPOINT_AUTH_METHOD', 'AZURE_FEDERATED_TOKEN_FILE'];
      for (const name of names) saved[name] = process.env[name];
      try {
        fs.writeFileSync(file, 'workload.first\n');
        Object.assign(process.env, { OPENID_ISSUER: idp.issuer, OPENID_CLIENT_ID: idp.clientId, AZURE_FEDERATED_TOKEN_FILE: file });
        delete process.env.OPENID_CLIENT_SECRET;
        delete process.env.OPENID_TOKEN_ENDPOINT_AUTH_METHOD;
        obo.configure(null);
        await obo.exchangeOboToken(user, 'assertion-federated-1', 'api://s');
        expect(lastRequest().form.client_assertion).toBe('workload.first');
        // As the kubelet does: a new file swapped in.
        fs.writeFileSync(`${file}.next`, 'workload.second');
        fs.renameSync(`${file}.next`, file);
        await obo.exchangeOboToken(user, 'assertion-federated-2', 'api://s');
        expect(lastRequest().form.client_assertion).toBe('workload.second');
        fs.rmSync(file);
        const { error } = await settle(obo.exchangeOboToken(user, 'assertion-federated-3', 'api://s'));
        expect(error.message).toContain('federated token file');
        expect(error.message).toContain(file);
      } finally {
        for (const name of names) {
          if (saved[name] === undefined) delete process.env[name];
          else process.env[name] = saved[name];
        }
        obo.configure(withCertificate());
        fs.rmSync(dir, { recursive: true, force: true });
      }
    });
  });

  describe('claims challenges and client capabilities', () => {
    test('clientCapabilities go with every request; a challenge is merged with them key by key', async () => {
      obo.configure(withCertificate({ clientCapabilities: ['cp1'] }));
      await obo.exchangeOboToken(user, 'assertion-cc', 'api://s');
      expect(JSON.parse(lastRequest().form.claims)).toEqual(XMS_CC);
      await obo.acquireOboToken({ assertion: 'assertion-cc', scopes: 'api://s', user, claims: CAE });
      expect(JSON.parse(lastRequest().form.claims)).toEqual({
        access_token: { nbf: { essential: true, value: '1700000000' }, xms_cc: { values: ['cp1'] } },
      });
    });

    test('a challenge bypasses the cache, and its token is cached like any other', async () => {
      const first = await obo.acquireOboToken({ assertion: 'assertion-cae', scopes: 'api://s', user });
      expect(lastRequest().form.claims).toBeUndefined();
      // A token of its own for the challenged request, so that serving the old one would show.
      idp.setResponder((request) =>
        request.form.claims ? { body: { access_token: 'token-satisfying-the-challenge', token_type: 'Bearer', expires_in: 3600 } } : undefined,
      );
      // The base64 form a WWW-Authenticate header carries.
      const challenged = await obo.acquireOboToken({
        assertion: 'assertion-cae',
        scopes: 'api://s',
        user,
        claims: Buffer.from(CAE).toString('base64'),
      });
      expect(idp.tokenRequestCount()).toBe(2);
      expect(JSON.parse(lastRequest().form.claims)).toEqual(JSON.parse(CAE));
      expect(challenged.expires_at).toBeGreaterThanOrEqual(first.expires_at);
      const again = await obo.acquireOboToken({ assertion: 'assertion-cae', scopes: 'api://s', user });
      expect(idp.tokenRequestCount()).toBe(2);
      expect(challenged.access_token).toBe('token-satisfying-the-challenge');
      expect(again.access_token).toBe('token-satisfying-the-challenge');
      expect(first.access_token).not.toBe(challenged.access_token);
    });

    test('a challenge does not join an exchange under way for the same key', async () => {
      idp.enqueue({ hold: true });
      const plain = obo.acquireOboToken({ assertion: 'assertion-flight', scopes: 'api://s', user });
      await until(() => idp.heldCount() === 1);
      const challenged = obo.acquireOboToken({ assertion: 'assertion-flight', scopes: 'api://s', user, claims: CAE });
      await until(() => idp.tokenRequestCount() === 2);
      idp.release();
      await Promise.all([plain, challenged]);
      expect(tokenRequests().map((request) => request.form.claims === undefined)).toEqual([true, false]);
    });

    test.each([
      ['{"access_token":', 'not valid JSON'],
      ['[1,2]', 'must be a JSON object'],
      ['', 'empty'],
      ['%%%', 'base64'],
    ])('malformed claims %j: a TypeError naming claims, and no request', async (claims, why) => {
      const { error } = await settle(obo.acquireOboToken({ assertion: 'assertion-bad', scopes: 'api://s', user, claims }));
      expect(error).toBeInstanceOf(TypeError);
      expect(error).toMatchObject({ option: 'claims' });
      expect(error.message).toContain(why);
      expect(idp.tokenRequestCount()).toBe(0);
    });

    test('claims of the wrong type: a TypeError naming claims', async () => {
      const { error } = await settle(obo.acquireOboToken({ assertion: 'a', scopes: 's', user, claims: { access_token: {} } }));
      expect(error).toBeInstanceOf(TypeError);
      expect(error).toMatchObject({ option: 'claims' });
    });
  });

  describe('home-tenant routing', () => {
    test.each([
      ['common', TENANT_ID, TENANT_ID],
      ['organizations', 'contoso.onmicrosoft.com', 'contoso.onmicrosoft.com'],
      ['common', '../../evil', 'common'],
      ['common', 'evil.example/oauth2?x=', 'common'],
      ['organizations', '127.0.0.1', 'organizations'],
      ['common', 42, 'common'],
    ])('%s with tid %j goes to %s; the client assertion names that endpoint', async (segment, tid, expected) => {
      obo.configure(withCertificate({ tokenEndpoint: idp.tokenEndpointFor(segment) }));
      await obo.acquireOboToken({ assertion: userToken({ tid, oid: 'user-oid' }), scopes: 'api://s', user });
      const request = lastRequest();
      expect(request.tenant).toBe(expected);
      expect(request.clientAssertion.payload.aud).toBe(idp.tokenEndpointFor(expected));
    });

    test('an opaque assertion keeps the configured endpoint; a tenant endpoint is never rewritten', async () => {
      obo.configure(withCertificate({ tokenEndpoint: idp.tokenEndpointFor('common') }));
      await obo.exchangeOboToken(user, 'opaque-assertion', 'api://s');
      expect(lastRequest().tenant).toBe('common');
      obo.configure(withCertificate());
      await obo.acquireOboToken({ assertion: userToken({ tid: TENANT_ID, oid: 'o' }), scopes: 'api://s' });
      expect(lastRequest().tenant).toBe('mock-tenant');
    });
  });

  describe('acquireOboToken', () => {
    test('scopes as an array, the identity from the assertion, and expires_at always', async () => {
      const issuer = 'https://login.microsoftonline.com/' + TENANT_ID + '/v2.0/';
      const assertion = userToken({ tid: TENANT_ID, iss: issuer, oid: 'oid-1', sub: 'pairwise-sub' });
      const result = await obo.acquireOboToken({ assertion, scopes: ['api://s/Read', ' api://s/Write '] });
      expect(result).toEqual({
        access_token: idp.expectedToken(assertion, 'api://s/Read api://s/Write'),
        token_type: 'Bearer',
        expires_in: 3600,
        expires_at: expect.any(Number),
        scope: 'api://s/Read api://s/Write',
      });
      expect(Math.abs(result.expires_at - (Date.now() + 3600_000))).toBeLessThan(120_000);
      // The same identity, given by a context, finds the same cache entry: oid over sub, the issuer normalised.
      const context = { openidSubject: 'oid-1', tenantId: TENANT_ID, openidIssuer: issuer.replace(/\/$/, '') };
      const viaDropIn = await obo.exchangeOboToken(undefined, assertion, 'api://s/Read api://s/Write', true, context);
      expect(viaDropIn.access_token).toBe(result.access_token);
      expect(idp.tokenRequestCount()).toBe(1);
      // Another user with the same subject in another tenant is another entry.
      await obo.acquireOboToken({ assertion, scopes: 'api://s/Read api://s/Write', identityContext: { ...context, tenantId: 'other' } });
      expect(idp.tokenRequestCount()).toBe(2);
    });

    test('forceRefresh skips the cache', async () => {
      const options = { assertion: 'assertion-force', scopes: 'api://s', user };
      await obo.acquireOboToken(options);
      await obo.acquireOboToken(options);
      expect(idp.tokenRequestCount()).toBe(1);
      await obo.acquireOboToken({ ...options, forceRefresh: true });
      expect(idp.tokenRequestCount()).toBe(2);
    });

    test('arguments it cannot use are rejected before any request', async () => {
      const cases = [
        [undefined, TypeError, /options must be an object/],
        [{ scopes: 's', user }, TypeError, /assertion must be a non-empty string/],
        [{ assertion: 'a', scopes: [], user }, TypeError, /scopes are required/],
        [{ assertion: 'a', scopes: ['s', 1], user }, TypeError, /scopes must hold strings/],
        [{ assertion: 'a', scopes: 42, user }, TypeError, /scopes must be a string or an array/],
        [{ assertion: 'opaque', scopes: 's' }, TypeError, /pass user or identityContext/],
        [{ assertion: userToken({ tid: TENANT_ID }), scopes: 's' }, Error, /^User must be authenticated via OpenID/],
        [{ assertion: 'a', scopes: 's', user: { name: 'no subject' } }, Error, /must be authenticated/],
        [{ assertion: 'a', scopes: 's', identityContext: { openidSubject: 7 } }, TypeError, /^acquireOboToken: identityContext\.openidSubject must be a string/],
      ];
      for (const [options, kind, message] of cases) {
        const { error } = await settle(obo.acquireOboToken(options));
        expect(error).toBeInstanceOf(kind);
        expect(error.message).toMatch(message);
      }
      expect(idp.tokenRequestCount()).toBe(0);
    });

    test('the drop-in keeps its exact signature', () => {
      expect(obo.exchangeOboToken.length).toBe(3);
      expect(obo.acquireOboToken.length).toBe(1);
    });
  });
});
