'use strict';
/**
 * The network edge of the addon: TLS trust (Mozilla's roots, the system's,
 * NODE_EXTRA_CA_CERTS; no system bundle), proxies (explicit, PROXY in env
 * mode, HTTPS_PROXY/NO_PROXY; never for loopback), no redirects, DNS
 * failures, timeouts, connection resets, process exit and worker termination
 * with requests in flight.
 *
 * Workplace rule: all traffic stays on loopback. Loopback endpoints are never
 * proxied, so the proxy cases address the provider as PROXIED_HOST, a name
 * only the test's proxy resolves (to 127.0.0.1); it refuses any other target.
 * A case that must reach that name directly runs in its own mount namespace
 * with a private /etc/hosts. The DNS cases run in their own network and mount
 * namespaces with a private resolv.conf pointing at a responder on 127.0.0.1:53.
 *
 * What Rust reads from the real process environment (NODE_EXTRA_CA_CERTS,
 * HTTP(S)_PROXY, NO_PROXY) is set for child processes only: jest gives this
 * file a copy of process.env.
 */
const fs = require('node:fs');
const os = require('node:os');
const net = require('node:net');
const path = require('node:path');
const http = require('node:http');
const crypto = require('node:crypto');
const { spawn, execFileSync } = require('node:child_process');
const { Worker } = require('node:worker_threads');
const { obo, sleep, until, optionsFor, settle, textsOf } = require('./helpers');
const { startMockIdp } = require('../testing');

const { exchangeOboToken, configure, stats } = obo;

const FIXTURES = path.join(__dirname, 'fixtures', 'net');
const PROXY_USER = 'user';
const PROXY_PASSWORD = 'pa55w0rd-secret';
const UNKNOWN_HOST = 'login.nonexistent.example';
/** The provider's name behind the proxy: not loopback, and resolved by nobody but the proxy (or a private hosts file). */
const PROXIED_HOST = 'idp.proxied.test';

/** `url` with the provider addressed by PROXIED_HOST instead of 127.0.0.1. */
const proxied = (url) => url.replace('//127.0.0.1:', `//${PROXIED_HOST}:`);

/** Every error this file produced (in this process or in a child), checked for secrets in afterAll. */
const collected = [];
/** Every assertion (user access token) sent. */
const assertionsUsed = new Set();

function assertionFor(label) {
  const assertion = `net-assertion-${label}-${crypto.randomBytes(6).toString('hex')}`;
  assertionsUsed.add(assertion);
  return assertion;
}

/** Settles an exchange; a rejection is collected. */
async function attempt(promise, where) {
  const outcome = await settle(promise);
  if (outcome.error) collected.push({ where, error: outcome.error });
  return outcome;
}

/** The token received is the one the mock minted for this assertion and scope. */
function expectToken(received, provider, assertion, scope) {
  expect(received).toBe(provider.expectedToken(assertion, scope));
}

/** A throwaway CA and a certificate for 127.0.0.1 / localhost signed by it. */
function makeCertificates(dir) {
  const run = (...args) => execFileSync('openssl', args, { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] });
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  run('req', '-x509', ...ec, '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '2',
    '-subj', '/CN=obo-native network test CA',
    '-addext', 'basicConstraints=critical,CA:TRUE',
    '-addext', 'keyUsage=critical,keyCertSign,cRLSign');
  run('req', '-new', ...ec, '-keyout', 'server.key', '-out', 'server.csr', '-subj', '/CN=127.0.0.1');
  fs.writeFileSync(
    path.join(dir, 'server.ext'),
    [
      `subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:${PROXIED_HOST}`,
      'basicConstraints=critical,CA:FALSE',
      'keyUsage=critical,digitalSignature',
      'extendedKeyUsage=serverAuth',
      '',
    ].join('\n'),
  );
  run('x509', '-req', '-in', 'server.csr', '-CA', 'ca.pem', '-CAkey', 'ca.key',
    '-set_serial', `0x${crypto.randomBytes(8).toString('hex')}`,
    '-days', '2', '-extfile', 'server.ext', '-out', 'server.pem');
  return {
    caPath: path.join(dir, 'ca.pem'),
    key: fs.readFileSync(path.join(dir, 'server.key')),
    cert: fs.readFileSync(path.join(dir, 'server.pem')),
  };
}

/**
 * A certificate for 127.0.0.1 whose issuer is named exactly as ISRG Root X1,
 * one of Mozilla's roots, but signed by a key of ours. A client that trusts
 * Mozilla's roots finds that root and rejects the signature (BadSignature);
 * one that does not rejects an unknown issuer (UnknownIssuer).
 */
function forgeUnderMozillaRootName(dir) {
  const run = (...args) => execFileSync('openssl', args, { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] });
  run('genpkey', '-algorithm', 'RSA', '-pkeyopt', 'rsa_keygen_bits:2048', '-out', 'forged-root.key');
  // The real root's subject, byte for byte, with our key.
  run('x509', '-in', path.join(FIXTURES, 'isrg-root-x1.pem'), '-signkey', 'forged-root.key', '-out', 'forged-root.pem');
  run('req', '-new', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'forged.key', '-out', 'forged.csr', '-subj', '/CN=127.0.0.1');
  run('x509', '-req', '-in', 'forged.csr', '-CA', 'forged-root.pem', '-CAkey', 'forged-root.key',
    '-set_serial', `0x${crypto.randomBytes(8).toString('hex')}`,
    '-days', '2', '-extfile', 'server.ext', '-out', 'forged.pem');
  return { key: fs.readFileSync(path.join(dir, 'forged.key')), cert: fs.readFileSync(path.join(dir, 'forged.pem')) };
}

/** Where the proxy sends a target host: PROXIED_HOST only. */
const upstreamOf = (host) => (host.toLowerCase() === PROXIED_HOST ? '127.0.0.1' : null);

/**
 * A forward proxy on loopback: CONNECT is tunnelled, only to PROXIED_HOST.
 * `seen` records every request; `requireAuth = true` answers 407 to everything.
 */
async function startProxy() {
  const seen = [];
  const sockets = new Set();
  const track = (socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
  };
  const proxy = { seen, requireAuth: false };
  // Plain http is allowed only to loopback, which is never proxied: a request
  // in absolute form reaching this proxy is a bug, recorded and refused.
  const server = http.createServer((req, res) => {
    seen.push({ method: req.method, url: req.url, headers: req.headers });
    if (proxy.requireAuth) {
      res.writeHead(407, { 'proxy-authenticate': 'Basic realm="net-test"', 'content-type': 'text/plain' });
      res.end('Proxy Authentication Required');
      return;
    }
    res.writeHead(403).end();
  });
  server.on('connection', track);
  server.on('connect', (req, socket, head) => {
    seen.push({ method: 'CONNECT', url: req.url, headers: req.headers });
    if (proxy.requireAuth) {
      socket.end(
        'HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm="net-test"\r\nContent-Length: 0\r\n\r\n',
      );
      return;
    }
    const match = /^(\[[^\]]+\]|[^:]+):(\d+)$/.exec(req.url);
    const upstreamHost = match && upstreamOf(match[1]);
    if (!upstreamHost) {
      socket.end('HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n');
      return;
    }
    const upstream = net.connect({ host: upstreamHost, port: Number(match[2]) }, () => {
      socket.write('HTTP/1.1 200 Connection Established\r\n\r\n');
      if (head.length) upstream.write(head);
      upstream.pipe(socket);
      socket.pipe(upstream);
    });
    track(upstream);
    upstream.on('error', () => socket.destroy());
    socket.on('error', () => upstream.destroy());
  });
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', resolve);
  });
  proxy.port = server.address().port;
  proxy.url = `http://127.0.0.1:${proxy.port}`;
  proxy.reset = () => {
    seen.length = 0;
    proxy.requireAuth = false;
  };
  proxy.close = async () => {
    for (const socket of sockets) socket.destroy();
    await new Promise((resolve) => server.close(() => resolve()));
  };
  return proxy;
}

/**
 * Runs a child with a clean environment (PATH, the spec, and `env`: nothing
 * inherited, so no proxy or CA variables leak in). Collects stdout JSON lines
 * with the time each arrived, and the exit time.
 */
function runChild({ script, command, args, env = {}, spec = {}, onLine, timeoutMs = 20_000, where }) {
  return new Promise((resolve, reject) => {
    const child = spawn(command || process.execPath, args || [script], {
      env: { PATH: process.env.PATH, ...env, OBO_NET_SPEC: JSON.stringify(spec) },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    const result = { stdout: '', stderr: '', lines: [], exitAt: null, timedOut: false };
    let buffer = '';
    child.stdout.setEncoding('utf8');
    child.stderr.setEncoding('utf8');
    child.stdout.on('data', (chunk) => {
      result.stdout += chunk;
      buffer += chunk;
      let newline;
      while ((newline = buffer.indexOf('\n')) >= 0) {
        const line = buffer.slice(0, newline);
        buffer = buffer.slice(newline + 1);
        let value;
        try {
          value = JSON.parse(line);
        } catch {
          value = { text: line };
        }
        result.lines.push({ at: performance.now(), value });
        if (onLine) onLine(value, child);
      }
    });
    child.stderr.on('data', (chunk) => {
      result.stderr += chunk;
    });
    const timer = setTimeout(() => {
      result.timedOut = true;
      child.kill('SIGKILL');
    }, timeoutMs);
    child.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.on('exit', () => {
      result.exitAt = performance.now();
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      Object.assign(result, { code, signal });
      collected.push({ where: `${where} (child stderr)`, error: { stderr: result.stderr } });
      for (const { value } of result.lines) {
        for (const error of childErrors(value)) collected.push({ where: `${where} (child)`, error });
      }
      resolve(result);
    });
  });
}

function childErrors(value) {
  if (!value || typeof value !== 'object') return [];
  const errors = [];
  if (value.error) errors.push(value.error);
  if (value.crashed) errors.push(value.crashed);
  for (const entry of value.results || []) if (entry.error) errors.push(entry.error);
  return errors;
}

/** The one report line of an exchange child, with a clear failure if missing. */
function reportOf(result) {
  const line = result.lines.find(({ value }) => value.results || value.error !== undefined || value.refused);
  if (!line) {
    throw new Error(
      `child gave no report: code=${result.code} signal=${result.signal} timedOut=${result.timedOut}\nstdout: ${result.stdout}\nstderr: ${result.stderr}`,
    );
  }
  return line;
}

let tmp;
let certs;
let idp; // http
let tlsIdp; // https, certificate from the throwaway CA
let forgedIdp; // https, certificate claiming a Mozilla root as issuer
let proxy;

beforeAll(async () => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'obo-net-'));
  certs = makeCertificates(tmp);
  idp = await startMockIdp();
  tlsIdp = await startMockIdp({ tls: { key: certs.key, cert: certs.cert } });
  forgedIdp = await startMockIdp({ tls: forgeUnderMozillaRootName(tmp) });
  proxy = await startProxy();
});

beforeEach(() => {
  idp.reset();
  tlsIdp.reset();
  forgedIdp.reset();
  proxy.reset();
  configure(optionsFor(idp));
});

afterAll(async () => {
  await Promise.all([idp, tlsIdp, forgedIdp, proxy].filter(Boolean).map((server) => server.close()));
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
});

afterAll(() => {
  const secrets = [idp.clientSecret, PROXY_PASSWORD, ...assertionsUsed];
  expect(collected.length).toBeGreaterThan(0);
  const leaks = [];
  for (const { where, error } of collected) {
    for (const text of textsOf(error)) {
      for (const secret of secrets) {
        if (text.includes(secret)) leaks.push({ where, secret, text });
      }
    }
  }
  expect(leaks).toEqual([]);
});

describe('TLS trust', () => {
  it('rejects a certificate from an unknown CA with CERT_UNTRUSTED, not retryable, no request served', async () => {
    configure(optionsFor(tlsIdp));
    const { error } = await attempt(
      exchangeOboToken({ openidId: 'tls-user' }, assertionFor('tls-untrusted'), 'api://tls/.default'),
      'tls untrusted',
    );
    expect(error).toMatchObject({ code: 'CERT_UNTRUSTED', retryable: false, oboFailureReason: 'exchange_failed' });
    expect(tlsIdp.tokenRequests()).toHaveLength(0);
  });

  it('trusts the CA given in NODE_EXTRA_CA_CERTS (child process)', async () => {
    const assertion = assertionFor('tls-trusted');
    const result = await runChild({
      where: 'tls trusted',
      script: path.join(FIXTURES, 'exchange-child.js'),
      env: { NODE_EXTRA_CA_CERTS: certs.caPath },
      spec: { options: optionsFor(tlsIdp), calls: [{ user: 'tls-user', assertion, scope: 'api://tls/.default' }] },
    });
    const { value } = reportOf(result);
    expect(value.results).toEqual([
      {
        value: {
          access_token: expect.any(String),
          token_type: 'Bearer',
          expires_in: 3600,
          scope: 'api://tls/.default',
        },
      },
    ]);
    expectToken(value.results[0].value.access_token, tlsIdp, assertion, 'api://tls/.default');
    expect(tlsIdp.tokenRequests()).toHaveLength(1);
    expect(result.code).toBe(0);
  });

  describe('without a usable system CA bundle (child processes)', () => {
    /** The system store as rustls reads it: SSL_CERT_FILE and SSL_CERT_DIR. */
    function bareSystem(bundle) {
      const dir = fs.mkdtempSync(path.join(tmp, 'no-ca-'));
      const file = path.join(dir, 'bundle.pem');
      if (bundle !== undefined) fs.writeFileSync(file, bundle);
      return { SSL_CERT_FILE: file, SSL_CERT_DIR: dir };
    }
    const exchangeIn = async (where, env, provider, label) => {
      const assertion = assertionFor(label);
      const result = await runChild({
        where,
        script: path.join(FIXTURES, 'exchange-child.js'),
        env,
        spec: { options: optionsFor(provider), calls: [{ user: 'bare-user', assertion, scope: 'api://bare/.default' }] },
      });
      return { assertion, outcome: reportOf(result).value.results[0] };
    };

    it("trusts Mozilla's roots: a forged certificate under a Mozilla root's name is a bad signature, not an unknown issuer", async () => {
      const { outcome } = await exchangeIn('forged under Mozilla root', bareSystem(), forgedIdp, 'tls-forged');
      expect(outcome.error).toMatchObject({ code: 'CERT_UNTRUSTED', retryable: false });
      expect(outcome.error.message).toMatch(/BadSignature/);
      expect(forgedIdp.tokenRequests()).toHaveLength(0);
    });

    it('builds a client and trusts NODE_EXTRA_CA_CERTS when there is no bundle at all', async () => {
      const env = { ...bareSystem(), NODE_EXTRA_CA_CERTS: certs.caPath };
      const { assertion, outcome } = await exchangeIn('no CA bundle', env, tlsIdp, 'tls-no-bundle');
      expect(outcome.error).toBeUndefined();
      expectToken(outcome.value.access_token, tlsIdp, assertion, 'api://bare/.default');
    });

    it('builds a client when the bundle holds no usable certificate', async () => {
      const broken = '-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n';
      const env = { ...bareSystem(broken), NODE_EXTRA_CA_CERTS: certs.caPath };
      const { assertion, outcome } = await exchangeIn('broken CA bundle', env, tlsIdp, 'tls-broken-bundle');
      expect(outcome.error).toBeUndefined();
      expectToken(outcome.value.access_token, tlsIdp, assertion, 'api://bare/.default');
    });
  });
});

describe('proxies (https through CONNECT to PROXIED_HOST, a name only the proxy resolves)', () => {
  const script = path.join(FIXTURES, 'exchange-child.js');
  const tokenEndpoint = () => proxied(tlsIdp.tokenEndpoint);
  const tunnelled = () => expect.objectContaining({ method: 'CONNECT', url: `${PROXIED_HOST}:${tlsIdp.port}` });

  it('tunnels https through the configured proxy with CONNECT (child process)', async () => {
    const assertion = assertionFor('proxy-connect');
    const result = await runChild({
      where: 'proxy connect',
      script,
      env: { NODE_EXTRA_CA_CERTS: certs.caPath },
      spec: {
        options: optionsFor(tlsIdp, { tokenEndpoint: tokenEndpoint(), proxy: proxy.url }),
        calls: [{ user: 'proxy-user', assertion, scope: 'api://proxy/.default' }],
      },
    });
    const { value } = reportOf(result);
    expect(value.results[0].error).toBeUndefined();
    expectToken(value.results[0].value.access_token, tlsIdp, assertion, 'api://proxy/.default');
    expect(proxy.seen).toEqual([tunnelled()]);
    expect(tlsIdp.tokenRequests()).toHaveLength(1);
  });

  it('uses PROXY in env mode for both discovery and the token request (child process)', async () => {
    const { discoveryDocument } = tlsIdp;
    // The provider names itself by PROXIED_HOST, as one behind a proxy would.
    tlsIdp.discoveryDocument = () => {
      const document = discoveryDocument();
      return { ...document, issuer: proxied(document.issuer), token_endpoint: proxied(document.token_endpoint) };
    };
    const assertion = assertionFor('proxy-env');
    let result;
    try {
      result = await runChild({
        where: 'env proxy',
        script,
        env: {
          NODE_EXTRA_CA_CERTS: certs.caPath,
          OPENID_ISSUER: proxied(tlsIdp.issuer),
          OPENID_CLIENT_ID: tlsIdp.clientId,
          OPENID_CLIENT_SECRET: tlsIdp.clientSecret,
          PROXY: proxy.url,
        },
        spec: { options: null, calls: [{ user: 'env-user', assertion, scope: 'api://env/.default' }] },
      });
    } finally {
      tlsIdp.discoveryDocument = discoveryDocument;
    }
    const { value } = reportOf(result);
    expect(value.results[0].error).toBeUndefined();
    expectToken(value.results[0].value.access_token, tlsIdp, assertion, 'api://env/.default');
    // Only the proxy knows the name: both requests came through its tunnel(s).
    expect(tlsIdp.discoveryRequests()).toHaveLength(1);
    expect(tlsIdp.tokenRequests()).toHaveLength(1);
    expect(proxy.seen.length).toBeGreaterThan(0);
    for (const request of proxy.seen) expect(request).toEqual(tunnelled());
  });

  it('follows HTTPS_PROXY from the real environment, and NO_PROXY bypasses it (child processes)', async () => {
    const through = assertionFor('proxy-https-env');
    const direct = assertionFor('proxy-no-proxy');
    const call = (assertion) => ({
      options: optionsFor(tlsIdp, { tokenEndpoint: tokenEndpoint() }),
      calls: [{ user: 'u', assertion, scope: 'api://e/.default' }],
    });

    const viaProxy = reportOf(
      await runChild({
        where: 'HTTPS_PROXY',
        script,
        env: { NODE_EXTRA_CA_CERTS: certs.caPath, HTTPS_PROXY: proxy.url },
        spec: call(through),
      }),
    ).value;
    expect(viaProxy.results[0].error).toBeUndefined();
    expectToken(viaProxy.results[0].value.access_token, tlsIdp, through, 'api://e/.default');
    expect(proxy.seen).toEqual([tunnelled()]);

    // Reaching PROXIED_HOST directly takes a resolver that knows it: a private /etc/hosts.
    proxy.reset();
    const hosts = path.join(tmp, 'hosts-no-proxy');
    fs.writeFileSync(hosts, `127.0.0.1 ${PROXIED_HOST}\n`);
    const bypass = reportOf(
      await runChild({
        where: 'NO_PROXY',
        command: 'unshare',
        args: ['--mount', 'sh', '-c', 'mount --bind "$1" /etc/hosts && exec "$2" "$3"', 'sh', hosts, process.execPath, script],
        env: { NODE_EXTRA_CA_CERTS: certs.caPath, HTTPS_PROXY: proxy.url, NO_PROXY: `other.example, ${PROXIED_HOST}` },
        spec: call(direct),
      }),
    ).value;
    expect(bypass.results[0].error).toBeUndefined();
    expectToken(bypass.results[0].value.access_token, tlsIdp, direct, 'api://e/.default');
    expect(proxy.seen).toEqual([]);
    expect(tlsIdp.tokenRequests()).toHaveLength(2);
  });

  it('never shows the proxy password when the proxy refuses CONNECT with 407 (child process)', async () => {
    proxy.requireAuth = true;
    const proxyUrl = `http://${PROXY_USER}:${PROXY_PASSWORD}@127.0.0.1:${proxy.port}`;
    const result = await runChild({
      where: 'proxy 407 connect',
      script,
      env: { NODE_EXTRA_CA_CERTS: certs.caPath },
      spec: {
        options: optionsFor(tlsIdp, { tokenEndpoint: tokenEndpoint(), proxy: proxyUrl, maxRetries: 0 }),
        calls: [{ user: 'p407', assertion: assertionFor('proxy-407-connect'), scope: 'api://p/.default' }],
      },
    });
    const { value } = reportOf(result);
    const { error } = value.results[0];
    expect(error).toMatchObject({ status: 407, retryable: false, message: expect.stringMatching(/proxy refused the tunnel/) });
    expect(textsOf(error).join('\n')).not.toContain(PROXY_PASSWORD);
    expect(result.stderr).not.toContain(PROXY_PASSWORD);
    expect(proxy.seen).toEqual([tunnelled()]);
    expect(proxy.seen[0].headers['proxy-authorization']).toBe(
      `Basic ${Buffer.from(`${PROXY_USER}:${PROXY_PASSWORD}`).toString('base64')}`,
    );
    expect(tlsIdp.tokenRequests()).toHaveLength(0);
  });
});

describe('loopback endpoints are reached directly, whatever the proxy settings (as Go net/http does)', () => {
  const script = path.join(FIXTURES, 'exchange-child.js');

  it('with the proxy option: the provider answers, the proxy sees nothing', async () => {
    configure(optionsFor(idp, { proxy: proxy.url }));
    const assertion = assertionFor('loopback-option');
    const { value, error } = await attempt(
      exchangeOboToken({ openidId: 'loopback-user' }, assertion, 'api://loop/.default'),
      'loopback with proxy option',
    );
    expect(error).toBeUndefined();
    expectToken(value.access_token, idp, assertion, 'api://loop/.default');
    expect(idp.tokenRequests()).toHaveLength(1);
    expect(proxy.seen).toEqual([]);
  });

  it('with PROXY in env mode: discovery and the token request go direct', async () => {
    const saved = process.env;
    process.env = {
      ...saved,
      OPENID_ISSUER: idp.issuer,
      OPENID_CLIENT_ID: idp.clientId,
      OPENID_CLIENT_SECRET: idp.clientSecret,
      PROXY: proxy.url,
    };
    delete process.env.OPENID_TOKEN_ENDPOINT_AUTH_METHOD;
    try {
      configure(null);
      const assertion = assertionFor('loopback-env');
      const { value, error } = await attempt(
        exchangeOboToken({ openidId: 'loopback-env-user' }, assertion, 'api://loop/.default'),
        'loopback with PROXY',
      );
      expect(error).toBeUndefined();
      expectToken(value.access_token, idp, assertion, 'api://loop/.default');
    } finally {
      process.env = saved;
      configure(optionsFor(idp));
    }
    expect(idp.discoveryRequests()).toHaveLength(1);
    expect(idp.tokenRequests()).toHaveLength(1);
    expect(proxy.seen).toEqual([]);
  });

  it.each(['127.0.0.1', 'localhost'])(
    'with HTTP_PROXY, HTTPS_PROXY and ALL_PROXY in the real environment, to %s (child process)',
    async (host) => {
      const assertion = assertionFor(`loopback-env-${host}`);
      const result = await runChild({
        where: `loopback ${host} with env proxies`,
        script,
        env: { HTTP_PROXY: proxy.url, HTTPS_PROXY: proxy.url, ALL_PROXY: proxy.url },
        spec: {
          options: optionsFor(idp, { tokenEndpoint: idp.tokenEndpoint.replace('//127.0.0.1:', `//${host}:`) }),
          calls: [{ user: 'loopback-child', assertion, scope: 'api://loop/.default' }],
        },
      });
      const { value } = reportOf(result);
      expect(value.results[0].error).toBeUndefined();
      expectToken(value.results[0].value.access_token, idp, assertion, 'api://loop/.default');
      expect(idp.tokenRequests()).toHaveLength(1);
      expect(proxy.seen).toEqual([]);
    },
  );
});

describe('redirects', () => {
  it('does not follow a 302: rejects with status 302 after one request', async () => {
    idp.enqueue({ status: 302, body: '', headers: { location: `${idp.origin}/elsewhere/oauth2/v2.0/token` } });
    const { error } = await attempt(
      exchangeOboToken({ openidId: 'redirect-user' }, assertionFor('redirect'), 'api://r/.default'),
      'redirect',
    );
    expect(error).toMatchObject({ status: 302, oboFailureReason: 'exchange_failed' });
    expect(idp.tokenRequests()).toHaveLength(1);
    expect(idp.requests).toHaveLength(1);
  });
});

describe('DNS failures (own network and mount namespaces, private resolver on 127.0.0.1:53)', () => {
  const tokenEndpoint = `https://${UNKNOWN_HOST}/tenant/oauth2/v2.0/token`;

  beforeAll(() => {
    const hosts = fs.readFileSync('/etc/hosts', 'utf8');
    expect(hosts.toLowerCase()).not.toContain(UNKNOWN_HOST);
  });

  async function inNamespaces(mode, env = {}) {
    const resolvConf = path.join(tmp, `resolv-${mode}.conf`);
    fs.writeFileSync(resolvConf, 'nameserver 127.0.0.1\n');
    const result = await runChild({
      where: `dns ${mode}`,
      command: 'unshare',
      args: [
        '--net',
        '--mount',
        'sh',
        '-c',
        'ip link set lo up && mount --bind "$1" /etc/resolv.conf && exec "$2" "$3"',
        'sh',
        resolvConf,
        process.execPath,
        path.join(FIXTURES, 'dns-child.js'),
      ],
      env,
      spec: {
        mode,
        assertion: assertionFor(`dns-${mode}`),
        options: {
          tokenEndpoint,
          clientId: idp.clientId,
          clientSecret: idp.clientSecret,
          timeoutMs: 5000,
          retryDelayMs: 20,
        },
      },
    });
    if (!result.lines.some(({ value }) => value.error !== undefined || value.refused || value.crashed)) {
      throw new Error(
        `the DNS child did not run (is unshare --net --mount permitted here?): code=${result.code} signal=${result.signal}\nstderr: ${result.stderr}`,
      );
    }
    const { value } = result.lines.find(({ value: v }) => v.error !== undefined || v.refused || v.crashed);
    expect(value.refused).toBeUndefined();
    expect(value.crashed).toBeUndefined();
    expect(value.resolvConf).toBe('nameserver 127.0.0.1\n');
    // The name was asked of the private responder, nothing else.
    expect(value.queries.length).toBeGreaterThan(0);
    for (const query of value.queries) expect(query.name.toLowerCase()).toBe(UNKNOWN_HOST);
    expect(result.code).toBe(0);
    return value;
  }

  it('NXDOMAIN rejects with ENOTFOUND, retryable', async () => {
    const { value, error } = await inNamespaces('nxdomain');
    expect(value).toBeNull();
    expect(error).toMatchObject({ code: 'ENOTFOUND', retryable: true, oboFailureReason: 'exchange_failed' });
  });

  it('SERVFAIL rejects with EAI_AGAIN, retryable', async () => {
    const { value, error } = await inNamespaces('servfail');
    expect(value).toBeNull();
    expect(error).toMatchObject({ code: 'EAI_AGAIN', retryable: true, oboFailureReason: 'exchange_failed' });
  });

  it('no DNS answer at all rejects with EAI_AGAIN, retryable', async () => {
    const { value, error } = await inNamespaces('silent', { RES_OPTIONS: 'timeout:1 attempts:1' });
    expect(value).toBeNull();
    expect(error).toMatchObject({ code: 'EAI_AGAIN', retryable: true, oboFailureReason: 'exchange_failed' });
  });
});

describe('process exit', () => {
  const script = path.join(FIXTURES, 'exchange-child.js');

  it('a child that did one exchange exits on its own soon after', async () => {
    const assertion = assertionFor('exit-ok');
    const result = await runChild({
      where: 'exit after success',
      script,
      spec: { options: optionsFor(idp), calls: [{ user: 'exit-user', assertion, scope: 'api://exit/.default' }] },
      timeoutMs: 10_000,
    });
    const line = reportOf(result);
    expectToken(line.value.results[0].value.access_token, idp, assertion, 'api://exit/.default');
    expect(result.timedOut).toBe(false);
    expect(result.code).toBe(0);
    expect(result.exitAt - line.at).toBeLessThan(2000);
  });

  it('a child whose provider hangs times out (ETIMEDOUT, retryable) in time and then exits on its own', async () => {
    idp.enqueue({ hang: true }, { hang: true });
    const result = await runChild({
      where: 'exit after timeout',
      script,
      spec: {
        options: optionsFor(idp, { timeoutMs: 300, maxRetries: 1, retryDelayMs: 50 }),
        calls: [{ user: 'hang-user', assertion: assertionFor('exit-hang'), scope: 'api://hang/.default' }],
      },
      timeoutMs: 10_000,
    });
    const line = reportOf(result);
    const [outcome] = line.value.results;
    expect(outcome.error).toMatchObject({ code: 'ETIMEDOUT', retryable: true, oboFailureReason: 'exchange_failed' });
    expect(line.value.elapsedMs[0]).toBeGreaterThanOrEqual(550);
    expect(line.value.elapsedMs[0]).toBeLessThan(1500);
    expect(idp.tokenRequestCount()).toBe(2);
    expect(result.timedOut).toBe(false);
    expect(result.code).toBe(0);
    expect(result.exitAt - line.at).toBeLessThan(2000);
  });
});

describe('worker threads terminated with requests in flight', () => {
  const workerSpecs = () =>
    [1, 2, 3].map((n) => ({ user: `held-${n}`, assertion: assertionFor(`held-${n}`), scope: `api://held-${n}/.default` }));

  it('do not crash this process, and the main thread exchanges afterwards', async () => {
    idp.enqueue({ hold: true }, { hold: true }, { hold: true });
    const workers = workerSpecs().map(
      (workerData) => new Worker(path.join(FIXTURES, 'hold-worker.js'), { workerData }),
    );
    const workerErrors = [];
    for (const worker of workers) worker.on('error', (err) => workerErrors.push(err));
    await until(() => idp.heldCount() === 3, 10_000);
    await Promise.all(workers.map((worker) => worker.terminate()));
    expect(idp.release()).toBe(3);
    await sleep(200);
    const assertion = assertionFor('after-terminate');
    const { value, error } = await attempt(
      exchangeOboToken({ openidId: 'main-user' }, assertion, 'api://main/.default'),
      'after worker terminate',
    );
    expect(error).toBeUndefined();
    expectToken(value.access_token, idp, assertion, 'api://main/.default');
    await until(() => stats().inFlight === 0, 5000);
    expect(workerErrors).toEqual([]);
    expect(idp.tokenRequests()).toHaveLength(4);
  });

  it('do not crash a child process, which then exchanges and exits with code 0', async () => {
    idp.enqueue({ hold: true }, { hold: true }, { hold: true });
    const after = { user: 'child-main', assertion: assertionFor('child-after'), scope: 'api://child/.default' };
    const events = [];
    const result = await runChild({
      where: 'worker terminate child',
      script: path.join(FIXTURES, 'workers-child.js'),
      spec: { options: optionsFor(idp), workers: workerSpecs(), after },
      timeoutMs: 15_000,
      onLine: (line, child) => {
        events.push(line.event);
        if (line.event === 'calling') {
          until(() => idp.heldCount() === 3, 10_000).then(
            () => child.stdin.write('terminate\n'),
            () => child.stdin.end(),
          );
        } else if (line.event === 'terminated') {
          idp.release();
          sleep(200).then(() => child.stdin.write('exchange\n'));
        } else if (line.event === 'result') {
          child.stdin.end();
        }
      },
    });
    expect(events).toEqual(['calling', 'terminated', 'result']);
    const { value } = result.lines.find(({ value: v }) => v.event === 'result');
    expect(value.error).toBeUndefined();
    expectToken(value.value.access_token, idp, after.assertion, after.scope);
    expect(result.timedOut).toBe(false);
    expect(result.signal).toBeNull();
    expect(result.code).toBe(0);
    expect(idp.tokenRequests()).toHaveLength(4);
  });
});

describe('connection resets', () => {
  it('retries once after a reset and succeeds', async () => {
    idp.enqueue({ reset: true });
    const assertion = assertionFor('reset-once');
    const { value, error } = await attempt(
      exchangeOboToken({ openidId: 'reset-user' }, assertion, 'api://reset/.default'),
      'reset once',
    );
    expect(error).toBeUndefined();
    expectToken(value.access_token, idp, assertion, 'api://reset/.default');
    expect(idp.tokenRequests()).toHaveLength(2);
  });

  it('rejects with ECONNRESET, retryable, when the retry is reset too', async () => {
    idp.enqueue({ reset: true }, { reset: true });
    const { error } = await attempt(
      exchangeOboToken({ openidId: 'reset-user-2' }, assertionFor('reset-twice'), 'api://reset/.default'),
      'reset twice',
    );
    expect(error).toMatchObject({ code: 'ECONNRESET', retryable: true, oboFailureReason: 'exchange_failed' });
    expect(idp.tokenRequests()).toHaveLength(2);
  });
});
