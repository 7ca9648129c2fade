'use strict';
/**
 * `require('obo-native/librechat')`: the drop-in for LibreChat's
 * OboTokenService / GraphTokenService. Same functions and signatures as the
 * package, configured from LibreChat's environment variables, and the host's
 * `@librechat/data-schemas` logger when there is one (child processes, with a
 * fake host application on disk).
 */
const { spawn } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const obo = require('..');
const librechat = require('../librechat');
const { startMockIdp, faults } = require('../testing');

const ROOT = path.join(__dirname, '..');
const ENTRY = path.join(ROOT, 'librechat.js');
const SECRET = 'librechat-test-client-secret';
const ASSERTION = 'eyJ0eXAiOiJKV1QifQ.librechat-assertion-payload.signature-part';
const ENV_NAMES = ['OPENID_ISSUER', 'OPENID_CLIENT_ID', 'OPENID_CLIENT_SECRET', 'OPENID_TOKEN_ENDPOINT_AUTH_METHOD', 'PROXY'];

let idp;
let tmp;
const savedEnv = {};

beforeAll(async () => {
  idp = await startMockIdp({ clientSecret: SECRET });
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'obo-librechat-'));
  for (const name of ENV_NAMES) savedEnv[name] = process.env[name];
});

beforeEach(() => {
  idp.reset();
  for (const name of ENV_NAMES) delete process.env[name];
  obo.configure(null);
  obo.clearCache();
});

afterAll(async () => {
  for (const name of ENV_NAMES) {
    if (savedEnv[name] === undefined) delete process.env[name];
    else process.env[name] = savedEnv[name];
  }
  obo.configure(null);
  await idp.close();
  fs.rmSync(tmp, { recursive: true, force: true });
});

function useLibreChatEnv() {
  process.env.OPENID_ISSUER = idp.issuer;
  process.env.OPENID_CLIENT_ID = idp.clientId;
  process.env.OPENID_CLIENT_SECRET = SECRET;
}

describe('obo-native/librechat exports', () => {
  it('exports exchangeOboToken and getGraphApiToken, the package\'s own functions', () => {
    expect(Object.keys(librechat).sort()).toEqual(['__internals', 'exchangeOboToken', 'getGraphApiToken']);
    expect(librechat.exchangeOboToken).toBe(obo.exchangeOboToken);
    expect(librechat.getGraphApiToken).toBe(obo.getGraphApiToken);
    expect(librechat.__internals.buildOboCacheKey).toBe(obo.__internals.buildOboCacheKey);
    // (user, accessToken, scopes, fromCache = true): three declared parameters, as in LibreChat.
    expect(librechat.exchangeOboToken.length).toBe(3);
    expect(librechat.getGraphApiToken.length).toBe(3);
  });

  it('is what package.json exports as obo-native/librechat', () => {
    const pkg = require('../package.json');
    expect(pkg.exports['./librechat']).toEqual({ types: './librechat.d.ts', default: './librechat.js' });
    expect(pkg.files).toEqual(expect.arrayContaining(['librechat.js', 'librechat.d.ts']));
  });
});

describe('obo-native/librechat, configured from LibreChat\'s environment', () => {
  it('exchanges with OPENID_ISSUER, OPENID_CLIENT_ID and OPENID_CLIENT_SECRET (discovery, client_secret_basic)', async () => {
    useLibreChatEnv();
    const token = await librechat.exchangeOboToken({ openidId: 'env-user', email: 'u@example.com' }, ASSERTION, 'api://mcp/Read');
    expect(token).toEqual({ access_token: idp.expectedToken(ASSERTION, 'api://mcp/Read'), token_type: 'Bearer', expires_in: 3600, scope: 'api://mcp/Read' });
    expect(idp.requests.filter((r) => r.method === 'GET')).toHaveLength(1);
    expect(idp.tokenRequests()[0].headers.authorization).toBe(`Basic ${Buffer.from(`${idp.clientId}:${SECRET}`).toString('base64')}`);
    // A second call is a cache hit (fromCache defaults to true).
    await librechat.exchangeOboToken({ openidId: 'env-user' }, ASSERTION, 'api://mcp/Read');
    expect(idp.tokenRequests()).toHaveLength(1);
  });

  it('honours OPENID_TOKEN_ENDPOINT_AUTH_METHOD=client_secret_post', async () => {
    useLibreChatEnv();
    process.env.OPENID_TOKEN_ENDPOINT_AUTH_METHOD = 'client_secret_post';
    await librechat.exchangeOboToken({ openidId: 'post-user' }, ASSERTION, 'api://mcp/Read');
    expect(idp.tokenRequests()[0].form).toMatchObject({ client_id: idp.clientId, client_secret: SECRET });
  });

  it('rejects like OboTokenService without configuration and with bad arguments', async () => {
    await expect(librechat.exchangeOboToken({ openidId: 'u' }, ASSERTION, 'api://mcp/Read')).rejects.toThrow('OpenID configuration not available');
    await expect(librechat.exchangeOboToken({ email: 'x' }, ASSERTION, 'api://mcp/Read')).rejects.toThrow(
      'User must be authenticated via OpenID to perform OBO token exchange',
    );
    await expect(librechat.exchangeOboToken({ openidId: 'u' }, '', 'api://mcp/Read')).rejects.toThrow('Access token is required for OBO exchange');
    await expect(librechat.exchangeOboToken({ openidId: 'u' }, ASSERTION, '')).rejects.toThrow('Scopes are required for OBO exchange');
  });

  it('getGraphApiToken prefixes failures like GraphTokenService and keeps the cause', async () => {
    useLibreChatEnv();
    idp.enqueue(faults.consentRequired());
    const failure = librechat.getGraphApiToken({ openidId: 'graph-user' }, ASSERTION, 'https://graph.microsoft.com/.default');
    await expect(failure).rejects.toThrow(/^Graph token acquisition failed: invalid_grant: AADSTS65001: /);
    const err = await failure.catch((e) => e);
    expect(err).toMatchObject({ retryable: false, oboFailureReason: 'exchange_failed', status: 400 });
    expect(err.cause).toMatchObject({ error_codes: [65001], correlation_id: 'mock-correlation' });

    const token = await librechat.getGraphApiToken({ openidId: 'graph-user' }, ASSERTION, 'https://graph.microsoft.com/.default');
    expect(token.scope).toBe('https://graph.microsoft.com/.default');
  });
});

describe('obo-native/librechat uses the host\'s @librechat/data-schemas logger', () => {
  /**
   * A host application on disk; `logger: false` → a data-schemas without a logger, `'throw'` → one that
   * fails to load, `'partial'` → a logger without debug/warn/error.
   */
  function makeHost(name, { logger = true } = {}) {
    const host = path.join(tmp, name);
    const pkg = path.join(host, 'node_modules', '@librechat', 'data-schemas');
    fs.mkdirSync(pkg, { recursive: true });
    fs.writeFileSync(path.join(host, 'package.json'), JSON.stringify({ name, version: '1.0.0', private: true }));
    fs.writeFileSync(path.join(pkg, 'package.json'), JSON.stringify({ name: '@librechat/data-schemas', version: '0.0.0', main: 'index.js' }));
    const body =
      logger === 'throw'
        ? "throw new Error('data-schemas failed to load');\n"
        : logger === 'partial'
          ? "module.exports = { logger: { info: (message) => process.stderr.write(String(message) + '\\n') } };\n"
          : logger
          ? [
              "const write = (level) => (message, ...meta) => process.stderr.write(JSON.stringify({ level, message: String(message) }) + '\\n');",
              "module.exports = { logger: { debug: write('debug'), info: write('info'), warn: write('warn'), error: write('error') } };",
              '',
            ].join('\n')
          : 'module.exports = { somethingElse: true };\n';
    fs.writeFileSync(path.join(pkg, 'index.js'), body);
    return host;
  }

  /** The script of a LibreChat server: loads the drop-in by path and makes a few exchanges. */
  const SCRIPT = `
    const { exchangeOboToken, getGraphApiToken } = require(${JSON.stringify(ENTRY)});
    (async () => {
      const results = [];
      for (const [fn, scope] of [[exchangeOboToken, 'api://mcp/Read'], [exchangeOboToken, 'api://mcp/Read'], [getGraphApiToken, 'api://bad']]) {
        try {
          const token = await fn({ openidId: 'host-user' }, ${JSON.stringify(ASSERTION)}, scope);
          results.push({ ok: true, expires_in: token.expires_in });
        } catch (err) {
          results.push({ ok: false, message: err.message });
        }
      }
      process.stdout.write(JSON.stringify(results));
    })();
  `;

  function runNode(args, { cwd }) {
    return new Promise((resolve, reject) => {
      const child = spawn(process.execPath, args, {
        cwd,
        env: {
          PATH: process.env.PATH,
          HOME: process.env.HOME || os.tmpdir(),
          OPENID_ISSUER: idp.issuer,
          OPENID_CLIENT_ID: idp.clientId,
          OPENID_CLIENT_SECRET: SECRET,
        },
      });
      let stdout = '';
      let stderr = '';
      child.stdout.on('data', (chunk) => (stdout += chunk));
      child.stderr.on('data', (chunk) => (stderr += chunk));
      child.on('error', reject);
      child.on('close', (code) => {
        const logs = stderr
          .split('\n')
          .filter((line) => line.startsWith('{'))
          .map((line) => JSON.parse(line));
        resolve({ code, stdout, stderr, logs, results: stdout ? JSON.parse(stdout) : null });
      });
    });
  }

  const expectResults = (run) => {
    expect(run.code).toBe(0);
    expect(run.results).toEqual([
      { ok: true, expires_in: 3600 },
      { ok: true, expires_in: expect.any(Number) }, // a cache hit: the remaining lifetime
      { ok: false, message: expect.stringMatching(/^Graph token acquisition failed: invalid_scope: AADSTS70011/) },
    ]);
  };

  it('found from the application\'s entry script (require.main)', async () => {
    const host = makeHost('host-main');
    const script = path.join(host, 'server.js');
    fs.writeFileSync(script, SCRIPT);
    idp.setResponder((req) => (req.form.scope === 'api://bad' ? faults.invalidScope() : undefined));
    const run = await runNode([script], { cwd: tmp });
    expectResults(run);
    const messages = run.logs.map((line) => `${line.level} ${line.message}`);
    expect(messages.length).toBeGreaterThan(0);
    expect(messages).toEqual(
      expect.arrayContaining([expect.stringMatching(/^debug \[OboTokenService\] .*host-user/), expect.stringMatching(/^error .*AADSTS70011/)]),
    );
    for (const line of run.stderr.split('\n')) {
      expect(line).not.toContain(ASSERTION);
      expect(line).not.toContain(SECRET);
      expect(line).not.toContain(idp.expectedToken(ASSERTION, 'api://mcp/Read').split('.')[2]);
    }
  });

  it('found from the working directory when there is no entry script', async () => {
    const host = makeHost('host-cwd');
    idp.setResponder((req) => (req.form.scope === 'api://bad' ? faults.invalidScope() : undefined));
    const run = await runNode(['-e', SCRIPT], { cwd: host });
    expectResults(run);
    expect(run.logs.length).toBeGreaterThan(0);
  });

  it('logs nothing when the host has no @librechat/data-schemas, or it has no logger, or it fails to load, or its logger lacks methods', async () => {
    idp.setResponder((req) => (req.form.scope === 'api://bad' ? faults.invalidScope() : undefined));
    const bare = path.join(tmp, 'host-bare');
    fs.mkdirSync(bare, { recursive: true });
    const hosts = [
      bare,
      makeHost('host-no-logger', { logger: false }),
      makeHost('host-throws', { logger: 'throw' }),
      makeHost('host-partial-logger', { logger: 'partial' }),
    ];
    for (const cwd of hosts) {
      idp.reset();
      idp.setResponder((req) => (req.form.scope === 'api://bad' ? faults.invalidScope() : undefined));
      const run = await runNode(['-e', SCRIPT], { cwd });
      expectResults(run);
      expect(run.stderr).toBe('');
    }
  });
});
