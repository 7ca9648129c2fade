'use strict';
/**
 * The CLI end to end: `node cli.js …` as a child process against the mock
 * identity provider running in this (jest) process. Success (text, JSON,
 * --show-token, stdin, auth methods, discovery or not), each explained
 * refusal, TLS and proxy failures, usage errors and exit codes, the demo.
 * Secrets never appear in the output: neither the assertion, nor the client
 * secret, nor the token unless --show-token.
 */
const { spawn, execFileSync } = require('node:child_process');
const crypto = require('node:crypto');
const fs = require('node:fs');
const http = require('node:http');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');

const { startMockIdp, faults, entraError } = require('../testing');
const { opensslAvailable } = require('./support/pki');

const ROOT = path.join(__dirname, '..');
const CLI = path.join(ROOT, 'cli.js');
const SECRET = 'cli-test-client-secret-value';
const SCOPE = 'api://downstream-api/Files.Read';

const base64url = (value) => Buffer.from(JSON.stringify(value)).toString('base64url');
/** A user's access token as Entra issues it for this application (unsigned: the mock does not check). */
function accessToken(claims = {}) {
  const payload = {
    aud: 'api://mock-client-id',
    iss: 'https://sts.windows.net/mock-tenant/',
    scp: 'access_as_user',
    tid: 'mock-tenant',
    exp: Math.floor(Date.now() / 1000) + 3600,
    oid: 'user-object-id',
    ...claims,
  };
  return `${base64url({ typ: 'JWT', alg: 'RS256', kid: 'k' })}.${base64url(payload)}.${crypto.randomBytes(32).toString('base64url')}`;
}
const ASSERTION = accessToken();

let idp;
let tmp;
let assertionFile;

/** A port nothing listens on. */
async function closedPort() {
  const server = net.createServer();
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address();
  await new Promise((resolve) => server.close(resolve));
  return port;
}

/** The environment of a run: LibreChat's variables for the mock, nothing inherited that could change the result. */
function envFor(extra = {}) {
  const env = {
    PATH: process.env.PATH,
    HOME: process.env.HOME || os.tmpdir(),
    NO_COLOR: '1',
    OPENID_ISSUER: idp.issuer,
    OPENID_CLIENT_ID: idp.clientId,
    OPENID_CLIENT_SECRET: SECRET,
    ...extra,
  };
  for (const [name, value] of Object.entries(env)) if (value === undefined) delete env[name];
  return env;
}

/** Runs the CLI asynchronously (the mock provider answers from this event loop). */
function run(args, { env = {}, input, cwd = ROOT } = {}) {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLI, ...args], { cwd, env: envFor(env), stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk) => (stdout += chunk));
    child.stderr.on('data', (chunk) => (stderr += chunk));
    const timer = setTimeout(() => child.kill('SIGKILL'), 25_000);
    child.on('error', reject);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr, output: stdout + stderr });
    });
    child.stdin.end(input === undefined ? '' : input);
  });
}

/** Text with its line wrapping undone, for matching sentences. */
const flat = (text) => text.replace(/\s+/g, ' ');

const exchangeArgs = (...more) => ['exchange', '--scope', SCOPE, '--assertion-file', assertionFile, ...more];

/** Nothing secret in what the CLI printed. */
function expectNoSecrets(result, { token } = {}) {
  expect(result.output).not.toContain(ASSERTION);
  expect(result.output).not.toContain(ASSERTION.split('.')[2]);
  expect(result.output).not.toContain(SECRET);
  if (token) expect(result.output).not.toContain(digest(token));
}

/** The part of a minted token that depends only on assertion and scope (its iat/exp move with the clock). */
const digest = (token) => token.split('.')[2];

beforeAll(async () => {
  idp = await startMockIdp({ clientSecret: SECRET });
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'obo-cli-'));
  assertionFile = path.join(tmp, 'assertion.txt');
  fs.writeFileSync(assertionFile, `${ASSERTION}\n`);
});

beforeEach(() => idp.reset());

afterAll(async () => {
  await idp.close();
  fs.rmSync(tmp, { recursive: true, force: true });
});

describe('obo-native exchange: success', () => {
  it('prints the endpoint, time, expires_in and the claims, not the token, and exits 0', async () => {
    const result = await run(exchangeArgs());
    expect(result.code).toBe(0);
    const token = idp.expectedToken(ASSERTION, SCOPE);
    expect(result.stdout).toMatch(/✔ On-Behalf-Of exchange succeeded/);
    expect(result.stdout).toContain(`Token endpoint   ${idp.tokenEndpoint}`);
    expect(result.stdout).toContain(`(discovered from ${idp.issuer})`);
    expect(idp.discoveryRequests()).toHaveLength(1);
    expect(result.stdout).toMatch(/Client\s+mock-client-id \(client_secret_basic\)/);
    expect(result.stdout).toMatch(/Time\s+[\d.]+ (µs|ms|s) \(OpenID discovery and token request\)/);
    expect(result.stdout).toMatch(/expires_in\s+3600 s \(until \d{4}-\d\d-\d\dT/);
    expect(result.stdout).toMatch(/aud\s+api:\/\/downstream-api\n/);
    expect(result.stdout).toMatch(/scp\s+Files\.Read\n/);
    expect(result.stdout).toMatch(/exp\s+\d{10} \(\d{4}-.*in 60 min\)/);
    expect(result.stdout).toMatch(/tid\s+mock-tenant/);
    expect(result.stdout).toContain('add --show-token to print it');
    expect(result.stderr).toBe('');
    expectNoSecrets(result, { token });

    const [request] = idp.tokenRequests();
    expect(idp.tokenRequests()).toHaveLength(1);
    expect(request.form).toMatchObject({
      grant_type: 'urn:ietf:params:oauth:grant-type:jwt-bearer',
      assertion: ASSERTION,
      scope: SCOPE,
      requested_token_use: 'on_behalf_of',
    });
    expect(request.headers.authorization).toBe(`Basic ${Buffer.from(`mock-client-id:${SECRET}`).toString('base64')}`);
  });

  it('prints the token with --show-token', async () => {
    const result = await run(exchangeArgs('--show-token'));
    expect(result.code).toBe(0);
    const printed = result.stdout.match(/access_token:\n(\S+)\n/);
    expect(printed).not.toBeNull();
    expect(digest(printed[1])).toBe(digest(idp.expectedToken(ASSERTION, SCOPE)));
    expectNoSecrets(result);
  });

  it('prints JSON with --json (the token only with --show-token)', async () => {
    const result = await run(exchangeArgs('--json'));
    expect(result.code).toBe(0);
    const json = JSON.parse(result.stdout);
    expect(json).toMatchObject({
      ok: true,
      tokenEndpoint: idp.tokenEndpoint,
      issuer: idp.issuer,
      clientId: 'mock-client-id',
      authMethod: 'client_secret_basic',
      scope: SCOPE,
      token_type: 'Bearer',
      expires_in: 3600,
      claims: { aud: 'api://downstream-api', scp: 'Files.Read', tid: 'mock-tenant', exp: expect.any(Number) },
    });
    expect(json.elapsedMs).toBeGreaterThan(0);
    expect(json).not.toHaveProperty('access_token');
    expectNoSecrets(result, { token: idp.expectedToken(ASSERTION, SCOPE) });

    const shown = JSON.parse((await run(exchangeArgs('--json', '--show-token'))).stdout);
    expect(digest(shown.access_token)).toBe(digest(idp.expectedToken(ASSERTION, SCOPE)));
  });

  it('uses --token-endpoint without discovery, and flags over the environment', async () => {
    const result = await run(
      ['exchange', '--token-endpoint', idp.tokenEndpoint, '--client-id', 'mock-client-id', '--scope', SCOPE, '--assertion-file', assertionFile],
      { env: { OPENID_ISSUER: 'https://login.example.invalid/tenant/v2.0', OPENID_CLIENT_ID: 'someone-else' } },
    );
    expect(result.code).toBe(0);
    expect(result.stdout).toContain(`Token endpoint   ${idp.tokenEndpoint}\n`);
    expect(result.stdout).not.toContain('discovered');
    expect(idp.requests.filter((r) => r.method === 'GET')).toHaveLength(0);
    expect(idp.tokenRequests()).toHaveLength(1);
  });

  it('reads the assertion from stdin with "-" (a "Bearer " prefix and new lines are dropped)', async () => {
    const result = await run(['exchange', '--scope', SCOPE, '--assertion-file', '-'], { input: `Bearer ${ASSERTION}\r\n` });
    expect(result.code).toBe(0);
    expect(idp.tokenRequests()[0].form.assertion).toBe(ASSERTION);
    expectNoSecrets(result);
  });

  it('authenticates with client_secret_post from --auth-method or OPENID_TOKEN_ENDPOINT_AUTH_METHOD', async () => {
    const byFlag = await run(exchangeArgs('--auth-method', 'client_secret_post'));
    expect(byFlag.code).toBe(0);
    expect(byFlag.stdout).toMatch(/Client\s+mock-client-id \(client_secret_post\)/);
    const byEnv = await run(exchangeArgs(), { env: { OPENID_TOKEN_ENDPOINT_AUTH_METHOD: 'client_secret_post' } });
    expect(byEnv.code).toBe(0);
    for (const request of idp.tokenRequests()) {
      expect(request.headers.authorization).toBeUndefined();
      expect(request.form).toMatchObject({ client_id: 'mock-client-id', client_secret: SECRET });
    }
    expect(idp.tokenRequests()).toHaveLength(2);
  });

  it('prints --help and exits 0', async () => {
    const result = await run(['exchange', '--help']);
    expect(result.code).toBe(0);
    expect(result.stdout).toContain('Usage: obo-native exchange');
    expect(result.stdout).toContain('OPENID_CLIENT_SECRET');
    const top = await run(['--help']);
    expect(top.code).toBe(0);
    expect(top.stdout).toContain('obo-native demo');
    const version = await run(['--version']);
    expect(version.stdout.trim()).toBe(require('../package.json').version);
  });
});

describe('obo-native exchange: refusals are explained (exit 1)', () => {
  const cases = [
    ['AADSTS50013 invalid assertion', faults.invalidSignature(), [/AADSTS50013/, /not issued to this application/, /Expose an API/]],
    ['AADSTS500133 expired assertion', faults.assertionExpired(), [/AADSTS500133: the user's token has expired/, /fresh token/, /clock/]],
    ['AADSTS65001 consent missing', faults.consentRequired(), [/consent is missing/, /API permissions > .*Grant admin consent/, /Suberror\s+consent_required/]],
    ['AADSTS70011 invalid scope', faults.invalidScope(), [/the scope is not valid/, /\/\.default/, new RegExp(`requested \\(${SCOPE.replace(/[./]/g, '\\$&')}\\)`)]],
    ['AADSTS7000215 bad secret', faults.badClientSecret(), [/client secret is wrong/, /Value .*not its Secret ID/, /HTTP status\s+401/]],
    ['AADSTS700016 unknown application', faults.unknownApplication(), [/not known in this tenant/, /Application \(client\) ID/, /client id mock-client-id/]],
    ['AADSTS50076 MFA required', faults.mfaRequired(), [/multi-factor authentication is required/, /"claims" parameter/, /Claims challenge: \{"access_token":\{"capolids"/]],
    [
      'AADSTS50079 MFA registration required',
      entraError(400, 'interaction_required', 50079, 'Due to a configuration change made by your administrator, you must enroll in multi-factor authentication.', {
        claims: '{"access_token":{"capolids":{"essential":true,"values":["p2"]}}}',
      }),
      [/AADSTS50079/, /register for multi-factor/, /Claims challenge: .*p2/],
    ],
    [
      'AADSTS53003 Conditional Access',
      entraError(400, 'access_denied', 53003, 'Access has been blocked by Conditional Access policies.'),
      [/blocked by a Conditional Access policy/, /Sign-in logs.*correlation id mock-correlation/],
    ],
    ['AADSTS50196 loop', faults.loopDetected(), [/request loop/, /fromCache = true/]],
    [
      'AADSTS240002 id_token as assertion',
      entraError(400, 'invalid_grant', 240002, "Input id_token cannot be used as 'urn:ietf:params:oauth:grant-type:jwt-bearer' grant."),
      [/an id_token was sent instead of an access token/, /Send the access token, not the id_token/, /api:\/\/mock-client-id/],
    ],
    [
      'invalid_client without an AADSTS code',
      { status: 401, body: { error: 'invalid_client', error_description: 'Client authentication failed.' } },
      [/invalid_client: the identity provider refused this application's credentials/, /OPENID_CLIENT_SECRET/, /client_secret_post/],
    ],
    ['throttling (429, Retry-After 30)', faults.throttled(30), [/Throttled: the identity provider asks to wait 30 s/, /Retry-After\s+30 s/, /Wait 30 s/]],
    [
      'an unknown AADSTS code',
      entraError(400, 'invalid_grant', 9999999, 'Something new.'),
      [/invalid_grant \(AADSTS9999999\)/, /https:\/\/login\.microsoftonline\.com\/error\?code=9999999/, /correlation id mock-correlation/],
    ],
  ];

  it.each(cases)('%s', async (_name, fault, patterns) => {
    idp.enqueue(fault);
    const result = await run(exchangeArgs());
    expect(result.code).toBe(1);
    expect(result.stdout).toBe('');
    expect(result.stderr).toMatch(/✖ On-Behalf-Of exchange refused/);
    expect(result.stderr).toContain(`Token endpoint   ${idp.tokenEndpoint}`);
    expect(result.stderr).toMatch(/What it means:\n {4}\S/);
    expect(result.stderr).toMatch(/How to fix it:\n {4}• /);
    for (const pattern of patterns) expect(flat(result.stderr)).toMatch(pattern);
    if (fault.body && fault.body.correlation_id) {
      expect(result.stderr).toMatch(/Correlation ID\s+\S+-correlation/);
      expect(result.stderr).toMatch(/Trace ID\s+\S+-trace/);
      expect(result.stderr).toMatch(/Error\s+\w+: AADSTS\d+: /);
      expect(result.stderr).not.toMatch(/Error\s+.*Trace ID:/); // the long tail is shown apart
    }
    expectNoSecrets(result);
  });

  it('gives every field and the explanation with --json', async () => {
    idp.enqueue(faults.consentRequired());
    const result = await run(exchangeArgs('--json'));
    expect(result.code).toBe(1);
    const json = JSON.parse(result.stdout);
    expect(json).toMatchObject({
      ok: false,
      tokenEndpoint: idp.tokenEndpoint,
      error: {
        status: 400,
        code: 'invalid_grant',
        error: 'invalid_grant',
        error_codes: [65001],
        suberror: 'consent_required',
        correlation_id: 'mock-correlation',
        trace_id: 'mock-trace',
        retryable: false,
        oboFailureReason: 'exchange_failed',
      },
      explanation: { id: 'consent_required', title: expect.stringMatching(/65001/), fix: expect.any(Array) },
      assertion: { claims: { aud: 'api://mock-client-id', scp: 'access_as_user' }, remarks: [] },
    });
    expectNoSecrets(result);
  });

  it('explains a 503 that persists after the retry', async () => {
    idp.enqueue(faults.unavailable(), faults.unavailable());
    const result = await run(exchangeArgs());
    expect(result.code).toBe(1);
    expect(result.stderr).toMatch(/The identity provider is unavailable \(HTTP 503\)/);
    expect(idp.tokenRequests()).toHaveLength(2);
  });

  it('explains an answer without access_token', async () => {
    idp.enqueue({ status: 200, body: { token_type: 'Bearer', expires_in: 3600 } });
    const result = await run(exchangeArgs());
    expect(result.code).toBe(1);
    expect(result.stderr).toMatch(/answered without an access token/);
  });

  it('points at the assertion when it is an id_token, expired, or for Graph', async () => {
    const file = path.join(tmp, 'id-token.txt');
    const idToken = accessToken({ scp: undefined, nonce: 'n', exp: Math.floor(Date.now() / 1000) - 600 });
    fs.writeFileSync(file, idToken);
    idp.enqueue(entraError(400, 'invalid_grant', 240002, 'Input id_token cannot be used.'));
    const result = await run(['exchange', '--scope', SCOPE, '--assertion-file', file]);
    expect(result.code).toBe(1);
    expect(result.stderr).toMatch(/The assertion looks like an id_token/);
    expect(result.stderr).toMatch(/The assertion expired 10 min ago/);
    expect(result.stderr).not.toContain(idToken);

    const graph = path.join(tmp, 'graph.txt');
    fs.writeFileSync(graph, accessToken({ aud: '00000003-0000-0000-c000-000000000000' }));
    idp.enqueue(faults.invalidSignature());
    const graphResult = await run(['exchange', '--scope', SCOPE, '--assertion-file', graph]);
    expect(graphResult.stderr).toMatch(/is a Microsoft Graph token/);
  });

  it('explains a wrong issuer (discovery answers 404)', async () => {
    const result = await run(exchangeArgs(), { env: { OPENID_ISSUER: `${idp.origin}/wrong-tenant/v2.0` } });
    expect(result.code).toBe(1);
    expect(result.stderr).toMatch(/OpenID discovery failed \(HTTP 404\)/);
    expect(result.stderr).toMatch(/https:\/\/login\.microsoftonline\.com\/<tenant-id>\/v2\.0/);
    expect(result.stderr).toMatch(/--token-endpoint/);
  });

  it('explains a refused connection (ECONNREFUSED), without a proxy', async () => {
    const port = await closedPort();
    const result = await run(['exchange', '--token-endpoint', `http://127.0.0.1:${port}/t/oauth2/v2.0/token`, '--scope', SCOPE, '--assertion-file', assertionFile]);
    expect(result.code).toBe(1);
    expect(result.stderr).toMatch(/Network: the identity provider could not be reached \(ECONNREFUSED\)/);
    expect(flat(result.stderr)).toMatch(/set PROXY=/);
    expectNoSecrets(result);
  });
});

describe('obo-native exchange: TLS and proxies', () => {
  const hasOpenssl = (() => {
    try {
      execFileSync('openssl', ['version'], { stdio: 'ignore' });
      return true;
    } catch {
      return false;
    }
  })();

  /**
   * A test that needs `openssl` to make its certificates. Without it the test
   * is skipped with a notice, except under CI, where the test fails instead.
   */
  function withOpenssl(title, test) {
    if (hasOpenssl) return it(title, test);
    const notice = `openssl is not installed: cannot make certificates for "${title}"`;
    if (process.env.CI && !/^(0|false)$/i.test(process.env.CI)) {
      return it(title, () => {
        throw new Error(`${notice} (CI is set, so this fails instead of skipping; install openssl)`);
      });
    }
    console.warn(`SKIPPED: ${notice}; install openssl to run it (under CI it fails)`);
    return it.skip(title, test);
  }

  /** A throwaway CA and a certificate for 127.0.0.1 signed by it. */
  function makeCertificates(dir) {
    const sh = (...args) => execFileSync('openssl', args, { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] });
    const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
    sh('req', '-x509', ...ec, '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '2', '-subj', '/CN=obo-native cli test CA',
      '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign');
    sh('req', '-new', ...ec, '-keyout', 'server.key', '-out', 'server.csr', '-subj', '/CN=127.0.0.1');
    fs.writeFileSync(path.join(dir, 'server.ext'),
      'subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n');
    sh('x509', '-req', '-in', 'server.csr', '-CA', 'ca.pem', '-CAkey', 'ca.key', '-set_serial', `0x${crypto.randomBytes(8).toString('hex')}`,
      '-days', '2', '-extfile', 'server.ext', '-out', 'server.pem');
    return { caPath: path.join(dir, 'ca.pem'), key: fs.readFileSync(path.join(dir, 'server.key')), cert: fs.readFileSync(path.join(dir, 'server.pem')) };
  }

  /** A proxy that answers 407 to everything (absolute-form requests and CONNECT). */
  async function startAuthProxy() {
    const server = http.createServer((req, res) => {
      res.writeHead(407, { 'proxy-authenticate': 'Basic realm="cli-test"', 'content-type': 'text/plain' });
      res.end('Proxy Authentication Required');
    });
    server.on('connect', (req, socket) => {
      socket.end('HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm="cli-test"\r\nContent-Length: 0\r\n\r\n');
    });
    await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
    return { url: `http://127.0.0.1:${server.address().port}`, close: () => new Promise((resolve) => server.close(resolve)) };
  }

  withOpenssl('explains an untrusted certificate, and NODE_EXTRA_CA_CERTS fixes it', async () => {
    const dir = fs.mkdtempSync(path.join(tmp, 'tls-'));
    const certs = makeCertificates(dir);
    const tlsIdp = await startMockIdp({ clientSecret: SECRET, tls: { key: certs.key, cert: certs.cert } });
    try {
      const args = ['exchange', '--token-endpoint', tlsIdp.tokenEndpoint, '--scope', SCOPE, '--assertion-file', assertionFile];
      const refused = await run(args);
      expect(refused.code).toBe(1);
      expect(refused.stderr).toMatch(/TLS: the server's certificate was not trusted/);
      expect(refused.stderr).toMatch(/NODE_EXTRA_CA_CERTS/);
      expect(refused.stderr).toMatch(/by 127\.0\.0\.1:\d+/);
      expect(tlsIdp.tokenRequests()).toHaveLength(0);

      const trusted = await run(args, { env: { NODE_EXTRA_CA_CERTS: certs.caPath } });
      expect(trusted.code).toBe(0);
      expect(tlsIdp.tokenRequests()).toHaveLength(1);
    } finally {
      await tlsIdp.close();
    }
  });

  it('explains a proxy that cannot be reached', async () => {
    const port = await closedPort();
    // Loopback is never proxied: the provider is named by a host only a proxy could resolve.
    const result = await run(exchangeArgs('--token-endpoint', 'https://login.proxied.test/tenant/oauth2/v2.0/token'), {
      env: { PROXY: `http://user:proxy-password-1234@127.0.0.1:${port}` },
    });
    expect(result.code).toBe(1);
    expect(result.stderr).toMatch(new RegExp(`Proxy\\s+http://127\\.0\\.0\\.1:${port} \\(PROXY\\)`));
    expect(result.stderr).toMatch(/Proxy: the request through .* failed \(ECONNREFUSED\)/);
    expect(result.stderr).toMatch(/cannot be reached from this machine/);
    expect(result.stderr).toMatch(/Check the proxy URL in PROXY/);
    expect(result.output).not.toContain('proxy-password-1234');
  });

  it('explains a proxy that requires authentication (HTTP 407)', async () => {
    const proxy = await startAuthProxy();
    try {
      const endpoint = 'https://login.proxied.test/tenant/oauth2/v2.0/token';
      const result = await run(['exchange', '--token-endpoint', endpoint, '--scope', SCOPE, '--assertion-file', assertionFile], {
        env: { PROXY: proxy.url },
      });
      expect(result.code).toBe(1);
      expect(result.stderr).toMatch(/HTTP 407: the proxy requires authentication/);
      expect(result.stderr).toMatch(/PROXY=http:\/\/user:password@/);
      expect(idp.tokenRequests()).toHaveLength(0);
    } finally {
      await proxy.close();
    }
  });

  withOpenssl('explains a proxy refusing the HTTPS tunnel (CONNECT 407)', async () => {
    const dir = fs.mkdtempSync(path.join(tmp, 'tls-'));
    const certs = makeCertificates(dir);
    const tlsIdp = await startMockIdp({ clientSecret: SECRET, tls: { key: certs.key, cert: certs.cert } });
    const proxy = await startAuthProxy();
    try {
      const endpoint = tlsIdp.tokenEndpoint.replace('//127.0.0.1:', '//login.proxied.test:');
      const result = await run(['exchange', '--token-endpoint', endpoint, '--scope', SCOPE, '--assertion-file', assertionFile], {
        env: { PROXY: proxy.url, NODE_EXTRA_CA_CERTS: certs.caPath },
      });
      expect(result.code).toBe(1);
      expect(result.stderr).toMatch(/the proxy requires authentication/);
    } finally {
      await Promise.all([tlsIdp.close(), proxy.close()]);
    }
  });
});

describe('obo-native exchange: bad usage (exit 2)', () => {
  const cases = [
    ['an unknown flag', ['exchange', '--scope', SCOPE, '--assertion-file', 'x', '--nope'], {}, /Unknown option '--nope'/],
    ['a client secret flag', ['exchange', '--client-secret', 's3cret-value', '--scope', SCOPE], {}, /only from OPENID_CLIENT_SECRET/],
    ['a missing --scope', ['exchange', '--assertion-file', 'ASSERTION_FILE'], {}, /--scope SCOPES is required/],
    ['a missing assertion', ['exchange', '--scope', SCOPE], {}, /--assertion-file PATH is required/],
    ['an unreadable assertion file', ['exchange', '--scope', SCOPE, '--assertion-file', '/nonexistent/token.txt'], {}, /cannot read --assertion-file .*ENOENT/],
    ['an empty assertion', ['exchange', '--scope', SCOPE, '--assertion-file', '-'], {}, /the assertion is empty \(stdin\)/],
    ['a missing client id', ['exchange', '--scope', SCOPE, '--assertion-file', 'ASSERTION_FILE'], { OPENID_CLIENT_ID: undefined }, /no client id: pass --client-id/],
    ['a missing issuer', ['exchange', '--scope', SCOPE, '--assertion-file', 'ASSERTION_FILE'], { OPENID_ISSUER: undefined }, /no identity provider: pass --issuer URL or --token-endpoint URL, or set OPENID_ISSUER/],
    ['a missing client secret', ['exchange', '--scope', SCOPE, '--assertion-file', 'ASSERTION_FILE'], { OPENID_CLIENT_SECRET: undefined }, /OPENID_CLIENT_SECRET is not set/],
    ['an unknown auth method', ['exchange', '--scope', SCOPE, '--assertion-file', 'ASSERTION_FILE', '--auth-method', 'tls_client_auth'], {}, /--auth-method must be one of/],
    ['private_key_jwt without credentials', ['exchange', '--scope', SCOPE, '--assertion-file', 'ASSERTION_FILE', '--auth-method', 'private_key_jwt'], {}, /needs --certificate PATH with --private-key PATH, or --client-assertion-file PATH/],
    ['a certificate without its key', ['exchange', '--scope', SCOPE, '--assertion-file', 'ASSERTION_FILE', '--certificate', 'ASSERTION_FILE'], {}, /--certificate needs --private-key PATH/],
    ['an unreadable client assertion file', ['exchange', '--scope', SCOPE, '--assertion-file', 'ASSERTION_FILE', '--client-assertion-file', '/nonexistent/federated'], {}, /cannot read --client-assertion-file .*ENOENT/],
    ['a certificate with a client assertion', ['exchange', '--scope', SCOPE, '--assertion-file', 'ASSERTION_FILE', '--certificate', 'c', '--private-key', 'k', '--client-assertion-file', 'f'], {}, /either --client-assertion-file or --certificate/],
    ['a client assertion with a secret method', ['exchange', '--scope', SCOPE, '--assertion-file', 'ASSERTION_FILE', '--client-assertion-file', 'ASSERTION_FILE', '--auth-method', 'client_secret_post'], {}, /--client-assertion-file is for --auth-method private_key_jwt/],
    ['an unknown OPENID_TOKEN_ENDPOINT_AUTH_METHOD', ['exchange', '--scope', SCOPE, '--assertion-file', 'ASSERTION_FILE'], { OPENID_TOKEN_ENDPOINT_AUTH_METHOD: 'tls_client_auth' }, /OPENID_TOKEN_ENDPOINT_AUTH_METHOD must be one of/],
    ['both --issuer and --token-endpoint', ['exchange', '--issuer', 'https://a.example/v2.0', '--token-endpoint', 'https://a.example/token', '--scope', SCOPE, '--assertion-file', 'ASSERTION_FILE'], {}, /either --issuer or --token-endpoint/],
    ['a plain-http issuer that is not loopback', ['exchange', '--issuer', 'http://login.example.com/t/v2.0', '--scope', SCOPE, '--assertion-file', 'ASSERTION_FILE'], {}, /--issuer \/ OPENID_ISSUER must be an https URL/],
    ['an invalid PROXY', ['exchange', '--scope', SCOPE, '--assertion-file', 'ASSERTION_FILE'], { PROXY: 'socks5://proxy:1080' }, /PROXY must be an http:\/\/ or https:\/\/ proxy URL/],
    ['an unknown command', ['exchnage'], {}, /unknown command "exchnage"/],
    ['no command', [], {}, /Usage:/],
  ];

  it.each(cases)('%s', async (_name, args, env, pattern) => {
    const result = await run(args.map((arg) => (arg === 'ASSERTION_FILE' ? assertionFile : arg)), { env });
    expect(result.code).toBe(2);
    expect(result.output).toMatch(pattern);
    expect(result.output).not.toContain('s3cret-value');
    expect(idp.requests).toHaveLength(0);
    expectNoSecrets(result);
  });

  it('answers JSON for bad usage with --json', async () => {
    const result = await run(['exchange', '--json', '--assertion-file', assertionFile]);
    expect(result.code).toBe(2);
    expect(JSON.parse(result.stdout)).toEqual({ ok: false, usage: expect.stringMatching(/--scope/) });
  });
});

describe('obo-native demo', () => {
  it('runs the embedded provider and shows each step and the stats table (also as npm start)', async () => {
    const result = await run(['demo'], { env: { OPENID_ISSUER: undefined, OPENID_CLIENT_ID: undefined, OPENID_CLIENT_SECRET: undefined } });
    expect(result.stderr).toBe('');
    expect(result.code).toBe(0);
    const out = result.stdout;
    for (let step = 1; step <= 6; step++) expect(out).toContain(`[${step}/6]`);
    expect(out).toMatch(/token received in [\d.]+ (µs|ms)/);
    expect(out).toMatch(/answered in [\d.]+ (µs|ms), without a request/);
    expect(out).toMatch(/1 000 calls → 1 request to the provider/);
    expect(out).toMatch(/2 requests \(503, then a retry after 300 ms\)/);
    expect(out).toMatch(/retryAfter 30 s/);
    expect(out).toMatch(/refused from memory .*\(throttled: true\) · provider requests: 0/);
    expect(out).toMatch(/coalesced\s+999/);
    expect(out).toMatch(/exchanges\s+5/);
    expect(out).toMatch(/retries\s+1/);
    expect(out).toMatch(/The provider received 6 token requests for 101 006 calls/);
    expect(out).not.toMatch(/\u001b\[/); // no colour when not a terminal
    expect(require('../package.json').scripts.start).toBe('node cli.js demo');
  });
});

describe('obo-native demo | head', () => {
  it('ends quietly, without an unhandled EPIPE, when its reader goes away', async () => {
    const child = spawn(process.execPath, [CLI, 'demo'], { cwd: ROOT, env: envFor(), stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (chunk) => (stderr += chunk));
    // Like `head -1`: the reader takes the first lines and closes the pipe.
    child.stdout.once('data', () => child.stdout.destroy());
    const timer = setTimeout(() => child.kill('SIGKILL'), 25_000);
    const [code, signal] = await new Promise((resolve) => child.on('close', (...ended) => resolve(ended)));
    clearTimeout(timer);
    expect(stderr).not.toMatch(/EPIPE|Unhandled|unexpected failure/);
    expect({ code, signal }).toEqual({ code: 0, signal: null });
  });
});

describe('obo-native explain <code>', () => {
  it('explains an AADSTS number offline, with or without its prefix, and exits 0', async () => {
    for (const code of ['AADSTS65001', '65001', 'aadsts65001']) {
      const result = await run(['explain', code], { env: { OPENID_ISSUER: undefined, OPENID_CLIENT_ID: undefined, OPENID_CLIENT_SECRET: undefined } });
      expect(result.code).toBe(0);
      expect(result.stderr).toBe('');
      expect(result.stdout).toMatch(/^AADSTS65001: consent is missing for the downstream API\n/);
      expect(flat(result.stdout)).toContain('Grant admin consent for <tenant>');
      expect(result.stdout).toContain('https://login.microsoftonline.com/error?code=65001');
    }
    expect(idp.tokenRequestCount()).toBe(0);
  });

  it('explains an OAuth error code, also as JSON', async () => {
    const result = await run(['explain', 'invalid_grant', '--json']);
    expect(result.code).toBe(0);
    expect(JSON.parse(result.stdout)).toEqual({
      known: true,
      code: 'invalid_grant',
      title: 'invalid_grant (OAuth error)',
      meaning: expect.stringContaining("refused the user's token"),
      fix: expect.arrayContaining([expect.stringContaining('obo-native explain AADSTS<number>')]),
    });
  });

  it('says so for a code it does not know (exit 1), and refuses what is not a code (exit 2)', async () => {
    const unknown = await run(['explain', 'AADSTS9999999']);
    expect(unknown.code).toBe(1);
    expect(unknown.stdout).toContain('https://login.microsoftonline.com/error?code=9999999');
    for (const args of [['explain'], ['explain', 'hello world'], ['explain', '65001', '50013']]) {
      const bad = await run(args);
      expect(bad.code).toBe(2);
      expect(bad.stderr).toMatch(/^obo-native explain: /);
    }
  });
});

describe('obo-native exchange: certificates and client assertions', () => {
  const hasOpenssl = opensslAvailable('the CLI certificate tests');
  const itWithOpenssl = hasOpenssl ? it : it.skip;
  let certIdp;
  const files = {};

  beforeAll(async () => {
    if (!hasOpenssl) return;
    const dir = path.join(tmp, 'pki');
    fs.mkdirSync(dir);
    const sh = (...args) => execFileSync('openssl', args, { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] });
    for (const name of ['app', 'other']) {
      sh('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', `${name}.key`, '-out', `${name}.pem`, '-days', '2', '-subj', `/CN=obo-native cli ${name}`);
      files[`${name}Cert`] = path.join(dir, `${name}.pem`);
      files[`${name}Key`] = path.join(dir, `${name}.key`);
    }
    files.workload = path.join(dir, 'workload-token');
    fs.writeFileSync(files.workload, 'workload.cli-token\n');
    files.unknownWorkload = path.join(dir, 'unknown-token');
    fs.writeFileSync(files.unknownWorkload, 'workload.unknown\n');
    certIdp = await startMockIdp({
      clientCertificate: fs.readFileSync(files.appCert, 'utf8'),
      acceptClientAssertion: (assertion) => (assertion === 'workload.cli-token' ? true : assertion.startsWith('workload.') ? false : undefined),
    });
  });
  afterAll(async () => {
    if (certIdp) await certIdp.close();
  });
  beforeEach(() => certIdp && certIdp.reset());

  const args = (...more) => ['exchange', '--token-endpoint', certIdp.tokenEndpoint, '--scope', SCOPE, '--assertion-file', assertionFile, ...more];
  const noSecretEnv = { OPENID_ISSUER: undefined, OPENID_CLIENT_SECRET: undefined };
  const sha1 = (pemFile) => new crypto.X509Certificate(fs.readFileSync(pemFile)).fingerprint.replace(/:/g, '');

  itWithOpenssl('--certificate and --private-key: a signed client assertion, the thumbprint shown, no key printed', async () => {
    const result = await run(args('--certificate', files.appCert, '--private-key', files.appKey), { env: noSecretEnv });
    expect(result.code).toBe(0);
    expect(flat(result.stdout)).toContain(`Client mock-client-id (private_key_jwt, certificate thumbprint ${sha1(files.appCert)})`);
    const [request] = certIdp.tokenRequests();
    expect(request.clientAuthentication).toBe('private_key_jwt');
    expect(request.clientAssertion.payload.aud).toBe(certIdp.tokenEndpoint);
    expect(result.output).not.toContain('PRIVATE KEY');
    expect(result.output).not.toContain(request.form.client_assertion);
    expectNoSecrets(result);
  });

  itWithOpenssl('a certificate the provider does not know: AADSTS700027 explained, with its thumbprint', async () => {
    const result = await run(args('--certificate', files.otherCert, '--private-key', files.otherKey, '--json'), { env: noSecretEnv });
    expect(result.code).toBe(1);
    const json = JSON.parse(result.stdout);
    expect(json).toMatchObject({ authMethod: 'private_key_jwt', explanation: { id: 'client_assertion_signature' } });
    expect(flat(json.explanation.meaning)).toContain(sha1(files.otherCert));
    expect(result.output).not.toContain(certIdp.tokenRequests()[0].form.client_assertion);
  });

  itWithOpenssl('a key that is not the certificate\'s is bad usage naming --certificate', async () => {
    const result = await run(args('--certificate', files.appCert, '--private-key', files.otherKey), { env: noSecretEnv });
    expect(result.code).toBe(2);
    expect(result.stderr).toMatch(/--certificate: .*does not match/);
    expect(result.output).not.toContain('PRIVATE KEY-----\n');
    expect(certIdp.requests).toHaveLength(0);
  });

  itWithOpenssl('--client-assertion-file, and AZURE_FEDERATED_TOKEN_FILE when no secret is set', async () => {
    const byFlag = await run(args('--client-assertion-file', files.workload), { env: noSecretEnv });
    expect(byFlag.code).toBe(0);
    expect(flat(byFlag.stdout)).toContain(`(private_key_jwt, client assertion from ${files.workload})`);
    expect(byFlag.output).not.toContain('workload.cli-token');
    const byEnv = await run(args(), { env: { ...noSecretEnv, AZURE_FEDERATED_TOKEN_FILE: files.workload } });
    expect(byEnv.code).toBe(0);
    expect(certIdp.tokenRequests().map((request) => request.form.client_assertion)).toEqual(['workload.cli-token', 'workload.cli-token']);
  });

  itWithOpenssl('a client assertion without a federated credential: AADSTS70021 explained', async () => {
    const result = await run(args('--client-assertion-file', files.unknownWorkload), { env: noSecretEnv });
    expect(result.code).toBe(1);
    expect(flat(result.stderr)).toMatch(/AADSTS70021: no federated identity credential matches the client assertion/);
    expect(flat(result.stderr)).toMatch(/Federated credentials/);
    expect(result.output).not.toContain('workload.unknown');
  });
});
