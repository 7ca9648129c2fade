'use strict';
/**
 * Independent clients: `createOboClient(options)` gives a client with its own
 * configuration, cache, exchanges under way, throttles and counters, beside
 * the module's top-level functions (the default client), which stay as they are.
 */
const { obo, until, optionsFor, settle, thrownBy } = require('./helpers');
const { startMockIdp } = require('../testing');

const { createOboClient } = obo;

const user = { openidId: 'user-1' };
const SCOPE = 'api://mcp/Read';

let idpA;
let idpB;
const clients = [];

/** A client that the test's afterEach closes. */
function client(options) {
  const made = createOboClient(options);
  clients.push(made);
  return made;
}

beforeAll(async () => {
  [idpA, idpB] = await Promise.all([
    startMockIdp({ tenant: 'tenant-a', clientId: 'app-a', clientSecret: 'secret-a' }),
    startMockIdp({ tenant: 'tenant-b', clientId: 'app-b', clientSecret: 'secret-b' }),
  ]);
});

beforeEach(() => {
  idpA.reset();
  idpB.reset();
  obo.configure(optionsFor(idpA));
});

afterEach(async () => {
  await Promise.all(clients.splice(0).map((made) => made.close()));
});

afterAll(async () => {
  await Promise.all([idpA.close(), idpB.close()]);
});

describe('createOboClient', () => {
  it('returns a client with exactly the documented functions', () => {
    const made = client(optionsFor(idpA));
    expect(Object.keys(made).sort()).toEqual(
      ['acquireOboToken', 'clearCache', 'close', 'exchangeOboToken', 'getGraphApiToken', 'stats', 'tokenEndpoint'].sort(),
    );
    expect(Object.isFrozen(made)).toBe(true);
    expect(made.tokenEndpoint()).toBe(idpA.tokenEndpoint);
  });

  it('validates its options as configure() does: a TypeError naming the option', () => {
    const cases = [
      [{ tokenEndpoint: idpA.tokenEndpoint, clientSecret: 's' }, 'clientId'],
      [{ clientId: 'a', clientSecret: 's' }, 'issuer'],
      [{ ...optionsFor(idpA), timeoutMs: 0 }, 'timeoutMs'],
      [{ ...optionsFor(idpA), tokenEndpointAuthMethod: 'magic' }, 'tokenEndpointAuthMethod'],
      [{ ...optionsFor(idpA), tokenEndpont: 'x' }, 'tokenEndpont'],
      [{ ...optionsFor(idpA), logger: { debug() {} } }, 'logger'],
      [{ ...optionsFor(idpA), maxRetries: { many: true } }, 'maxRetries'],
    ];
    for (const [options, option] of cases) {
      const err = thrownBy(() => createOboClient(options));
      expect(err).toBeInstanceOf(TypeError);
      expect(err.option).toBe(option);
      expect(err.message).toMatch(/^createOboClient: /);
    }
    for (const options of [42, 'issuer', [optionsFor(idpA)]]) {
      const err = thrownBy(() => createOboClient(options));
      expect(err).toBeInstanceOf(TypeError);
      expect(err.message).toMatch(/^createOboClient: options must be an object/);
    }
  });

  it('leaves the default client untouched when its options are refused', async () => {
    expect(thrownBy(() => createOboClient({ clientId: 'a' }))).toBeInstanceOf(TypeError);
    await obo.exchangeOboToken(user, 'assertion-1', SCOPE);
    expect(idpA.tokenRequests()).toHaveLength(1);
    expect(obo.tokenEndpoint()).toBe(idpA.tokenEndpoint);
  });

  it('two clients and the default client each have their own cache, counters and provider', async () => {
    obo.clearCache();
    const before = obo.stats();
    const a = client(optionsFor(idpA));
    const b = client(optionsFor(idpB));
    const [fromA, fromB] = await Promise.all([
      a.exchangeOboToken(user, 'assertion-1', SCOPE),
      b.exchangeOboToken(user, 'assertion-1', SCOPE),
    ]);
    expect(fromA.access_token).toBe(idpA.expectedToken('assertion-1', SCOPE));
    expect(fromB.access_token).toBe(idpB.expectedToken('assertion-1', SCOPE));
    expect(fromA.access_token).not.toBe(fromB.access_token);
    // The same key again: each client answers from its own cache (a memo hit after a native one).
    await a.exchangeOboToken(user, 'assertion-1', SCOPE);
    await a.exchangeOboToken(user, 'assertion-1', SCOPE);
    expect((await b.exchangeOboToken(user, 'assertion-1', SCOPE)).access_token).toBe(fromB.access_token);
    expect(idpA.tokenRequests()).toHaveLength(1);
    expect(idpB.tokenRequests()).toHaveLength(1);
    expect(a.stats()).toMatchObject({ exchanges: 1, cacheHits: 2, cacheMisses: 1, cacheSize: 1 });
    expect(b.stats()).toMatchObject({ exchanges: 1, cacheHits: 1, cacheMisses: 1, cacheSize: 1 });
    // The default client saw none of it.
    const after = obo.stats();
    expect(after.exchanges - before.exchanges).toBe(0);
    expect(after.cacheSize).toBe(0);
    const fromDefault = await obo.exchangeOboToken(user, 'assertion-1', SCOPE);
    expect(fromDefault.access_token).toBe(idpA.expectedToken('assertion-1', SCOPE));
    expect(idpA.tokenRequests()).toHaveLength(2);
  });

  it('clearCache() of one client leaves the others cached', async () => {
    const a = client(optionsFor(idpA));
    const b = client(optionsFor(idpB));
    await a.exchangeOboToken(user, 'assertion-1', SCOPE);
    await b.exchangeOboToken(user, 'assertion-1', SCOPE);
    await obo.exchangeOboToken(user, 'assertion-1', SCOPE);
    a.clearCache();
    expect(a.stats().cacheSize).toBe(0);
    expect(b.stats().cacheSize).toBe(1);
    expect(obo.stats().cacheSize).toBe(1);
    await b.exchangeOboToken(user, 'assertion-1', SCOPE);
    await obo.exchangeOboToken(user, 'assertion-1', SCOPE);
    expect(idpB.tokenRequests()).toHaveLength(1);
    expect(idpA.tokenRequests()).toHaveLength(2);
    await a.exchangeOboToken(user, 'assertion-1', SCOPE);
    expect(idpA.tokenRequests()).toHaveLength(3);
  });

  it('a client\'s exchanges under way are its own: the same key on two clients is two requests', async () => {
    const a = client(optionsFor(idpA));
    const b = client(optionsFor(idpA));
    idpA.enqueue({ hold: true }, { hold: true });
    const calls = [
      a.exchangeOboToken(user, 'assertion-1', SCOPE),
      a.exchangeOboToken(user, 'assertion-1', SCOPE),
      b.exchangeOboToken(user, 'assertion-1', SCOPE),
    ];
    await until(() => idpA.heldCount() === 2);
    idpA.release();
    const results = await Promise.all(calls);
    expect(new Set(results.map((result) => result.access_token)).size).toBe(1);
    expect(idpA.tokenRequests()).toHaveLength(2);
    expect(a.stats().coalesced).toBe(1);
    expect(b.stats().coalesced).toBe(0);
  });

  it('each client logs to its own logger', async () => {
    const linesA = [];
    const linesB = [];
    const logger = (lines) => ({
      debug: (message) => lines.push(message),
      info: (message) => lines.push(message),
      warn: (message) => lines.push(message),
      error: (message) => lines.push(message),
    });
    const a = client({ ...optionsFor(idpA), logger: logger(linesA) });
    const b = client({ ...optionsFor(idpB), logger: logger(linesB) });
    await a.exchangeOboToken({ openidId: 'user-a' }, 'assertion-1', SCOPE);
    await b.exchangeOboToken({ openidId: 'user-b' }, 'assertion-1', SCOPE);
    expect(linesA.join('\n')).toContain('user-a');
    expect(linesA.join('\n')).not.toContain('user-b');
    expect(linesB.join('\n')).toContain('user-b');
    expect(linesB.join('\n')).not.toContain('user-a');
  });

  it('acquireOboToken and getGraphApiToken go to the client\'s provider', async () => {
    const b = client(optionsFor(idpB));
    const acquired = await b.acquireOboToken({ assertion: 'assertion-2', scopes: [SCOPE], user });
    expect(acquired.access_token).toBe(idpB.expectedToken('assertion-2', SCOPE));
    expect(typeof acquired.expires_at).toBe('number');
    const graph = await b.getGraphApiToken(user, 'assertion-3', 'https://graph.microsoft.com/.default');
    expect(graph.access_token).toBe(idpB.expectedToken('assertion-3', 'https://graph.microsoft.com/.default'));
    expect(idpA.tokenRequests()).toHaveLength(0);
  });

  it('without options a client reads LibreChat\'s environment variables', async () => {
    const saved = { ...process.env };
    try {
      process.env.OPENID_ISSUER = idpB.issuer;
      process.env.OPENID_CLIENT_ID = idpB.clientId;
      process.env.OPENID_CLIENT_SECRET = idpB.clientSecret;
      const fromEnv = client();
      expect(fromEnv.tokenEndpoint()).toBeNull();
      const token = await fromEnv.exchangeOboToken(user, 'assertion-1', SCOPE);
      expect(token.access_token).toBe(idpB.expectedToken('assertion-1', SCOPE));
      expect(fromEnv.tokenEndpoint()).toBe(idpB.tokenEndpoint);
      expect(obo.tokenEndpoint()).toBe(idpA.tokenEndpoint);
    } finally {
      process.env = saved;
    }
  });
});

describe('close()', () => {
  it('later calls reject with a clear error and send nothing', async () => {
    const a = client(optionsFor(idpA));
    await a.exchangeOboToken(user, 'assertion-1', SCOPE);
    await expect(a.close()).resolves.toBeUndefined();
    const calls = await Promise.all([
      settle(a.exchangeOboToken(user, 'assertion-1', SCOPE)),
      settle(a.acquireOboToken({ assertion: 'assertion-1', scopes: SCOPE, user })),
      settle(a.getGraphApiToken(user, 'assertion-1', SCOPE)),
    ]);
    for (const { error } of calls) {
      expect(error).toBeInstanceOf(Error);
      expect(error.message).toContain('this OBO client is closed (close() was called)');
      expect(error.code).toBe('ERR_OBO_CLIENT_CLOSED');
    }
    expect(calls[2].error.message).toMatch(/^Graph token acquisition failed: /);
    expect(idpA.tokenRequests()).toHaveLength(1);
    expect(a.stats().cacheSize).toBe(0);
    // Closing again is harmless; the default client goes on.
    await a.close();
    await obo.exchangeOboToken(user, 'assertion-9', SCOPE);
    expect(idpA.tokenRequests()).toHaveLength(2);
  });

  it('an exchange under way still answers its caller, and close() resolves after it', async () => {
    const a = client(optionsFor(idpA));
    idpA.enqueue({ hold: true });
    const pending = a.exchangeOboToken(user, 'assertion-1', SCOPE);
    await until(() => idpA.heldCount() === 1);
    let closed = false;
    const closing = a.close().then(() => {
      closed = true;
    });
    const rejected = await settle(a.exchangeOboToken(user, 'assertion-1', SCOPE));
    expect(rejected.error.code).toBe('ERR_OBO_CLIENT_CLOSED');
    expect(closed).toBe(false);
    idpA.release();
    const token = await pending;
    expect(token.access_token).toBe(idpA.expectedToken('assertion-1', SCOPE));
    await closing;
    expect(closed).toBe(true);
    // What arrived after close() was not cached.
    expect(a.stats().cacheSize).toBe(0);
  });
});
