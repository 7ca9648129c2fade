'use strict';
/**
 * The RFC 8693 token exchange grant (`grantType: 'token-exchange'`), against
 * the loopback provider taught the grant (it checks every parameter): the
 * request, its defaults and options, repeated audiences and resources, the
 * key, the response rules, the final errors and the environment variables.
 */
const { obo, until, settle, thrownBy } = require('./helpers');
const { startMockIdp, TOKEN_EXCHANGE_GRANT_TYPE, ACCESS_TOKEN_TYPE } = require('../testing');

const { acquireOboToken, exchangeOboToken, configure, createOboClient, stats } = obo;

const JWT_TYPE = 'urn:ietf:params:oauth:token-type:jwt';
const SCOPE = 'openid mcp:read';
const user = { openidId: 'user-1' };

let idp;
let entra;

/** Options for the default client against the token-exchange provider. */
const exchangeOptions = (extra = {}) => ({
  tokenEndpoint: idp.tokenEndpoint,
  clientId: idp.clientId,
  clientSecret: idp.clientSecret,
  grantType: 'token-exchange',
  retryDelayMs: 1,
  ...extra,
});

const call = (extra = {}) => ({ assertion: 'subject-token-1', scopes: SCOPE, user, ...extra });
/** The parameters of a recorded request, repeated ones as arrays. */
const params = (request) => new URLSearchParams(request.body);

beforeAll(async () => {
  [idp, entra] = await Promise.all([
    startMockIdp({ tenant: 'keycloak', clientId: 'librechat', clientSecret: 'kc-secret', tokenExchange: { audiences: ['mcp-a', 'mcp-b'] } }),
    startMockIdp({ tenant: 'entra' }),
  ]);
});

beforeEach(() => {
  idp.reset();
  entra.reset();
  configure(exchangeOptions());
});

afterAll(async () => {
  configure(null);
  await Promise.all([idp.close(), entra.close()]);
});

describe('the request', () => {
  it('has the RFC 8693 parameters and defaults, and no jwt-bearer ones', async () => {
    const token = await acquireOboToken(call());
    const [request] = idp.tokenRequests();
    const sent = params(request);
    expect(Object.fromEntries(sent)).toEqual({
      grant_type: TOKEN_EXCHANGE_GRANT_TYPE,
      subject_token: 'subject-token-1',
      subject_token_type: ACCESS_TOKEN_TYPE,
      requested_token_type: ACCESS_TOKEN_TYPE,
      scope: SCOPE,
    });
    expect(sent.has('assertion') || sent.has('requested_token_use')).toBe(false);
    expect(request.clientAuthentication).toBe('client_secret_basic');
    expect(token).toEqual({
      access_token: idp.expectedExchangeToken('subject-token-1', SCOPE),
      token_type: 'Bearer',
      expires_in: 3600,
      expires_at: expect.any(Number),
      scope: SCOPE,
    });
  });

  it('exchangeOboToken callers see the same result shape as with jwt-bearer', async () => {
    const exchanged = await exchangeOboToken(user, 'subject-token-1', SCOPE);
    configure({ tokenEndpoint: entra.tokenEndpoint, clientId: entra.clientId, clientSecret: entra.clientSecret });
    const onBehalfOf = await exchangeOboToken(user, 'subject-token-1', SCOPE);
    expect(Object.keys(exchanged)).toEqual(Object.keys(onBehalfOf));
    expect(exchanged.token_type).toBe('Bearer');
    expect(exchanged.access_token).toBe(idp.expectedExchangeToken('subject-token-1', SCOPE));
  });

  it('sends the configured token types, actor token and client authentication', async () => {
    configure(
      exchangeOptions({
        tokenEndpointAuthMethod: 'client_secret_post',
        subjectTokenType: JWT_TYPE,
        requestedTokenType: JWT_TYPE,
        actorToken: ' actor.jwt.value ',
        actorTokenType: JWT_TYPE,
      }),
    );
    const token = await acquireOboToken(call());
    const sent = params(idp.tokenRequests()[0]);
    expect(sent.get('subject_token_type')).toBe(JWT_TYPE);
    expect(sent.get('requested_token_type')).toBe(JWT_TYPE);
    expect(sent.get('actor_token')).toBe('actor.jwt.value');
    expect(sent.get('actor_token_type')).toBe(JWT_TYPE);
    expect(sent.get('client_id')).toBe('librechat');
    expect(sent.get('client_secret')).toBe('kc-secret');
    // A JWT was requested: the provider's token_type N_A is accepted, and callers still read Bearer.
    expect(token.token_type).toBe('Bearer');
  });

  it('authenticates with private_key_jwt as with jwt-bearer', async () => {
    const vault = await startMockIdp({ tokenExchange: true, clientSecret: null, acceptClientAssertion: (jwt) => jwt === 'signed.client.jwt' });
    try {
      configure({ tokenEndpoint: vault.tokenEndpoint, clientId: vault.clientId, grantType: 'token-exchange', clientAssertion: async () => 'signed.client.jwt' });
      await acquireOboToken(call());
      const [request] = vault.tokenRequests();
      expect(request.clientAuthentication).toBe('private_key_jwt');
      expect(params(request).get('subject_token')).toBe('subject-token-1');
      expect(params(request).get('client_assertion')).toBe('signed.client.jwt');
    } finally {
      await vault.close();
    }
  });

  it('asks an actorToken function, sync or async, before each request', async () => {
    const asked = [];
    configure(
      exchangeOptions({
        actorToken: (request) => {
          asked.push(request);
          return `actor-${asked.length}`;
        },
      }),
    );
    await acquireOboToken(call());
    await acquireOboToken(call({ assertion: 'subject-token-2' }));
    expect(asked).toEqual([
      { clientId: 'librechat', tokenEndpoint: idp.tokenEndpoint },
      { clientId: 'librechat', tokenEndpoint: idp.tokenEndpoint },
    ]);
    expect(idp.tokenRequests().map((request) => params(request).get('actor_token'))).toEqual(['actor-1', 'actor-2']);
    expect(params(idp.tokenRequests()[0]).get('actor_token_type')).toBe(ACCESS_TOKEN_TYPE);

    configure(exchangeOptions({ actorToken: async () => 'async-actor' }));
    await acquireOboToken(call());
    expect(params(idp.tokenRequests()[2]).get('actor_token')).toBe('async-actor');
  });

  it('an actorToken function that fails sends no request', async () => {
    configure(
      exchangeOptions({
        actorToken: async () => {
          throw new Error('vault sealed');
        },
      }),
    );
    const { error } = await settle(acquireOboToken(call()));
    expect(error.message).toBe('OBO token request not sent: the actorToken function failed: vault sealed');
    expect(error.code).toBe('EACTORTOKEN');
    expect(idp.tokenRequestCount()).toBe(0);
  });

  it('an actorToken function has the clientAssertion function\'s deadline and says itself whether to retry', async () => {
    configure(exchangeOptions({ timeoutMs: 200, actorToken: () => new Promise(() => {}) }));
    const silent = await settle(acquireOboToken(call()));
    expect(silent.error.message).toBe('OBO token request not sent: the actorToken function did not settle within 200 ms (timeoutMs)');
    expect(silent.error.retryable).toBe(false);
    configure(
      exchangeOptions({
        actorToken: () => {
          throw Object.assign(new Error('vault busy'), { retryable: true });
        },
      }),
    );
    const busy = await settle(acquireOboToken(call()));
    expect(busy.error).toMatchObject({ code: 'EACTORTOKEN', retryable: true });
    expect(idp.tokenRequestCount()).toBe(0);
  });

  it('repeats audience and resource, configured or per call', async () => {
    configure(exchangeOptions({ audience: ['mcp-a', 'mcp-b'], resource: 'https://mcp.example.com/api' }));
    await acquireOboToken(call());
    await acquireOboToken(call({ audience: 'mcp-b', resource: ['https://a.example.com/', 'https://b.example.com/'] }));
    const [configured, perCall] = idp.tokenRequests();
    expect(configured.audiences).toEqual(['mcp-a', 'mcp-b']);
    expect(configured.resources).toEqual(['https://mcp.example.com/api']);
    expect(params(configured).getAll('audience')).toEqual(['mcp-a', 'mcp-b']);
    expect(perCall.audiences).toEqual(['mcp-b']);
    expect(perCall.resources).toEqual(['https://a.example.com/', 'https://b.example.com/']);
  });
});

describe('the key', () => {
  it('two audiences are two exchanges; the same call twice is one', async () => {
    const a = await acquireOboToken(call({ audience: 'mcp-a' }));
    const b = await acquireOboToken(call({ audience: 'mcp-b' }));
    expect(a.access_token).toBe(idp.expectedExchangeToken('subject-token-1', SCOPE, { audience: 'mcp-a' }));
    expect(b.access_token).toBe(idp.expectedExchangeToken('subject-token-1', SCOPE, { audience: 'mcp-b' }));
    expect(a.access_token).not.toBe(b.access_token);
    // Again, in either order: the memo and the native cache answer each with its own token.
    expect((await acquireOboToken(call({ audience: 'mcp-b' }))).access_token).toBe(b.access_token);
    expect((await acquireOboToken(call({ audience: 'mcp-a' }))).access_token).toBe(a.access_token);
    expect((await acquireOboToken(call({ audience: ['mcp-a'] }))).access_token).toBe(a.access_token);
    expect(idp.tokenRequestCount()).toBe(2);
    // Without a per-call audience the configured (none) is a third key.
    await acquireOboToken(call());
    expect(idp.tokenRequestCount()).toBe(3);
  });

  it('a per-call audience equal to the configured one shares its token', async () => {
    configure(exchangeOptions({ audience: 'mcp-a' }));
    const configured = await acquireOboToken(call());
    const named = await acquireOboToken(call({ audience: 'mcp-a' }));
    expect(named.access_token).toBe(configured.access_token);
    expect(idp.tokenRequestCount()).toBe(1);
  });

  it('concurrent calls on one key are one exchange; another audience or resource is its own', async () => {
    idp.enqueue({ hold: true }, { hold: true }, { hold: true });
    const before = stats();
    const calls = [
      acquireOboToken(call({ audience: 'mcp-a' })),
      acquireOboToken(call({ audience: 'mcp-a' })),
      acquireOboToken(call({ audience: 'mcp-b' })),
      acquireOboToken(call({ audience: 'mcp-a', resource: 'https://r.example.com/' })),
    ];
    await until(() => idp.heldCount() === 3);
    idp.release();
    const [first, second, other, withResource] = await Promise.all(calls);
    expect(second.access_token).toBe(first.access_token);
    expect(new Set([first.access_token, other.access_token, withResource.access_token]).size).toBe(3);
    expect(idp.tokenRequestCount()).toBe(3);
    expect(stats().coalesced - before.coalesced).toBe(1);
  });

  it('a throttled audience does not throttle another', async () => {
    idp.enqueue({ status: 429, retryAfter: 60, body: { error: 'temporarily_unavailable', error_description: 'slow down' } });
    configure(exchangeOptions({ maxRetries: 0 }));
    const throttled = await settle(acquireOboToken(call({ audience: 'mcp-a' })));
    expect(throttled.error.status).toBe(429);
    const again = await settle(acquireOboToken(call({ audience: 'mcp-a' })));
    expect(again.error.throttled).toBe(true);
    const other = await acquireOboToken(call({ audience: 'mcp-b' }));
    expect(other.access_token).toBe(idp.expectedExchangeToken('subject-token-1', SCOPE, { audience: 'mcp-b' }));
    expect(idp.tokenRequestCount()).toBe(2);
  });
});

describe('the response', () => {
  it('an issued_token_type other than the requested one fails, naming both, and nothing is cached', async () => {
    idp.setResponder(() => ({
      body: { access_token: 'an-id-token', issued_token_type: 'urn:ietf:params:oauth:token-type:id_token', token_type: 'N_A', expires_in: 300 },
    }));
    const { error } = await settle(acquireOboToken(call()));
    expect(error.message).toContain('urn:ietf:params:oauth:token-type:id_token');
    expect(error.message).toContain(ACCESS_TOKEN_TYPE);
    expect(error.code).toBe('ETOKENTYPE');
    expect(error.retryable).toBe(false);
    expect(idp.tokenRequestCount()).toBe(1);
    expect(stats().cacheSize).toBe(0);
    idp.setResponder(undefined);
    const token = await acquireOboToken(call());
    expect(token.access_token).toBe(idp.expectedExchangeToken('subject-token-1', SCOPE));
    expect(idp.tokenRequestCount()).toBe(2);
  });

  it('token_type N_A is refused for an access token and accepted for another type', async () => {
    idp.setResponder(() => ({ body: { access_token: 'opaque', issued_token_type: ACCESS_TOKEN_TYPE, token_type: 'N_A' } }));
    const { error } = await settle(acquireOboToken(call()));
    expect(error.message).toContain('N_A');
    expect(error.code).toBe('ETOKENTYPE');
    configure(exchangeOptions({ requestedTokenType: JWT_TYPE }));
    idp.setResponder(() => ({ body: { access_token: 'a.jwt', issued_token_type: JWT_TYPE, token_type: 'N_A', expires_in: 600 } }));
    const token = await acquireOboToken(call());
    expect(token).toMatchObject({ access_token: 'a.jwt', token_type: 'Bearer', expires_in: 600 });
  });

  it.each([
    ['invalid_request', 400],
    ['invalid_client', 401],
    ['invalid_grant', 400],
    ['unauthorized_client', 400],
    ['unsupported_grant_type', 400],
    ['invalid_scope', 400],
    ['invalid_target', 400],
  ])('%s is final: not retried, error and error_description kept', async (code, status) => {
    // A description that reads like a transient failure: the error code decides, not the wording.
    const description = `${code}: the upstream check timed out`;
    idp.enqueue({ status, body: { error: code, error_description: description } }, { status, body: { error: code, error_description: description } });
    const { error } = await settle(acquireOboToken(call()));
    expect(error).toMatchObject({ error: code, error_description: description, code, status, retryable: false });
    expect(error.message).toBe(`${code}: ${description}`);
    expect(idp.tokenRequestCount()).toBe(1);
  });

  it('the provider\'s own checks: an unknown audience is invalid_target, a provider without the grant unsupported_grant_type', async () => {
    const unknown = await settle(acquireOboToken(call({ audience: 'mcp-z' })));
    expect(unknown.error.error).toBe('invalid_target');
    configure({ tokenEndpoint: entra.tokenEndpoint, clientId: entra.clientId, clientSecret: entra.clientSecret, grantType: 'token-exchange' });
    const unsupported = await settle(acquireOboToken(call()));
    expect(unsupported.error.error).toBe('unsupported_grant_type');
    expect(entra.tokenRequestCount()).toBe(1);
  });
});

describe('options', () => {
  it('are checked: a TypeError naming the option, and the configuration in force stays', async () => {
    const cases = [
      [{ grantType: 'saml2-bearer' }, 'grantType'],
      [{ grantType: 'jwt-bearer', audience: 'mcp-a' }, 'audience'],
      [{ grantType: undefined, actorToken: () => 'x' }, 'actorToken'],
      [{ audience: [42] }, 'audience'],
      [{ resource: 'relative/path' }, 'resource'],
      [{ subjectTokenType: 'access_token' }, 'subjectTokenType'],
      [{ actorTokenType: JWT_TYPE }, 'actorTokenType'],
      [{ audience: { name: 'mcp-a' } }, 'audience'],
    ];
    for (const [extra, option] of cases) {
      const err = thrownBy(() => configure(exchangeOptions(extra)));
      expect(err).toBeInstanceOf(TypeError);
      expect(err.option).toBe(option);
    }
    await acquireOboToken(call());
    expect(idp.tokenRequestCount()).toBe(1);
  });

  it('a per-call audience or resource is checked, and refused by a jwt-bearer client', async () => {
    for (const [extra, option] of [
      [{ audience: 7 }, 'audience'],
      [{ resource: [{}] }, 'resource'],
      [{ resource: 'https://r.example.com/#fragment' }, 'resource'],
      [{ audience: ['mcp-a', ' '] }, 'audience'],
    ]) {
      const { error } = await settle(acquireOboToken(call(extra)));
      expect(error).toBeInstanceOf(TypeError);
      expect(error.option).toBe(option);
      expect(error.message).toMatch(/^acquireOboToken: /);
    }
    configure({ tokenEndpoint: entra.tokenEndpoint, clientId: entra.clientId, clientSecret: entra.clientSecret });
    const { error } = await settle(acquireOboToken(call({ audience: 'mcp-a' })));
    expect(error).toBeInstanceOf(TypeError);
    expect(error.option).toBe('audience');
    expect(error.message).toContain('token-exchange');
    expect(idp.tokenRequestCount() + entra.tokenRequestCount()).toBe(0);
  });
});

describe('the environment', () => {
  let saved;
  beforeEach(() => {
    saved = { ...process.env };
  });
  afterEach(() => {
    process.env = saved;
    configure(null);
  });

  /** A Keycloak-configured LibreChat: its OPENID_* variables, plus the token exchange ones. */
  function keycloakEnv(extra = {}) {
    Object.assign(process.env, {
      OPENID_ISSUER: idp.issuer,
      OPENID_CLIENT_ID: idp.clientId,
      OPENID_CLIENT_SECRET: idp.clientSecret,
      OBO_GRANT_TYPE: 'token-exchange',
      ...extra,
    });
    for (const name of ['OPENID_TOKEN_ENDPOINT_AUTH_METHOD', 'USE_REDIS', 'PROXY']) delete process.env[name];
  }

  it('OBO_GRANT_TYPE, OBO_AUDIENCE and OBO_RESOURCE configure the exchange with LibreChat\'s OPENID_* variables', async () => {
    keycloakEnv({ OBO_AUDIENCE: 'mcp-a mcp-b', OBO_RESOURCE: 'https://mcp.example.com/api' });
    configure(null);
    const token = await exchangeOboToken(user, 'subject-token-1', SCOPE);
    const [request] = idp.tokenRequests();
    expect(params(request).get('grant_type')).toBe(TOKEN_EXCHANGE_GRANT_TYPE);
    expect(params(request).get('subject_token')).toBe('subject-token-1');
    expect(request.audiences).toEqual(['mcp-a', 'mcp-b']);
    expect(request.resources).toEqual(['https://mcp.example.com/api']);
    expect(token.access_token).toBe(
      idp.expectedExchangeToken('subject-token-1', SCOPE, { audience: ['mcp-a', 'mcp-b'], resource: 'https://mcp.example.com/api' }),
    );
    // Discovered from OPENID_ISSUER, as for Entra.
    expect(idp.discoveryRequests()).toHaveLength(1);
  });

  it('a client created without options reads them too', async () => {
    keycloakEnv({ OBO_AUDIENCE: 'mcp-b' });
    const client = createOboClient();
    try {
      await client.acquireOboToken(call());
      expect(idp.tokenRequests()[0].audiences).toEqual(['mcp-b']);
    } finally {
      await client.close();
    }
  });

  it('a wrong variable is named, and no request is sent', async () => {
    keycloakEnv({ OBO_GRANT_TYPE: 'exchange' });
    configure(null);
    const first = await settle(exchangeOboToken(user, 'subject-token-1', SCOPE));
    expect(first.error.message).toMatch(/^OpenID configuration not available: OBO_GRANT_TYPE /);
    keycloakEnv({ OBO_GRANT_TYPE: undefined, OBO_AUDIENCE: 'mcp-a' });
    delete process.env.OBO_GRANT_TYPE;
    configure(null);
    const second = await settle(exchangeOboToken(user, 'subject-token-1', SCOPE));
    expect(second.error.message).toContain('OBO_AUDIENCE applies to OBO_GRANT_TYPE=token-exchange');
    expect(idp.tokenRequestCount()).toBe(0);
  });
});

describe('two clients, two providers, two grants', () => {
  it('serve one process at once, each with its own dialect and cache', async () => {
    const keycloak = createOboClient(exchangeOptions({ audience: 'mcp-a' }));
    const microsoft = createOboClient({ tokenEndpoint: entra.tokenEndpoint, clientId: entra.clientId, clientSecret: entra.clientSecret });
    try {
      const [fromKeycloak, fromEntra] = await Promise.all([
        keycloak.acquireOboToken(call()),
        microsoft.acquireOboToken(call({ scopes: 'api://mcp/.default' })),
      ]);
      expect(fromKeycloak.access_token).toBe(idp.expectedExchangeToken('subject-token-1', SCOPE, { audience: 'mcp-a' }));
      expect(fromEntra.access_token).toBe(entra.expectedToken('subject-token-1', 'api://mcp/.default'));
      const keycloakRequest = params(idp.tokenRequests()[0]);
      const entraRequest = params(entra.tokenRequests()[0]);
      expect(keycloakRequest.get('grant_type')).toBe(TOKEN_EXCHANGE_GRANT_TYPE);
      expect(entraRequest.get('grant_type')).toBe('urn:ietf:params:oauth:grant-type:jwt-bearer');
      expect(entraRequest.get('requested_token_use')).toBe('on_behalf_of');
      expect(keycloak.stats().cacheSize).toBe(1);
      expect(microsoft.stats().cacheSize).toBe(1);
      await keycloak.acquireOboToken(call());
      await microsoft.acquireOboToken(call({ scopes: 'api://mcp/.default' }));
      expect(idp.tokenRequestCount() + entra.tokenRequestCount()).toBe(2);
    } finally {
      await Promise.all([keycloak.close(), microsoft.close()]);
    }
  });
});

describe('the CLI', () => {
  const { spawn } = require('node:child_process');
  const path = require('node:path');
  const { explain } = require('../cli/explain');

  /** Runs `obo-native exchange` with the assertion on stdin; the provider answers from this event loop. */
  function exchangeCli(args, env = {}) {
    return new Promise((resolve, reject) => {
      const child = spawn(
        process.execPath,
        [path.join(__dirname, '..', 'cli.js'), 'exchange', '--scope', SCOPE, '--assertion-file', '-', '--json', ...args],
        {
          env: { PATH: process.env.PATH, NO_COLOR: '1', OPENID_CLIENT_ID: idp.clientId, OPENID_CLIENT_SECRET: idp.clientSecret, ...env },
          stdio: ['pipe', 'pipe', 'pipe'],
        },
      );
      let stdout = '';
      child.stdout.on('data', (chunk) => (stdout += chunk));
      child.on('error', reject);
      child.on('close', (code) => resolve({ code, json: JSON.parse(stdout) }));
      child.stdin.end('subject-token-1\n');
    });
  }

  it('exchange --grant-type token-exchange sends repeated --audience and explains invalid_target', async () => {
    const ok = await exchangeCli(['--token-endpoint', idp.tokenEndpoint, '--grant-type', 'token-exchange', '--audience', 'mcp-a', '--audience', 'mcp-b']);
    expect(ok.code).toBe(0);
    expect(idp.tokenRequests()[0].audiences).toEqual(['mcp-a', 'mcp-b']);
    const refused = await exchangeCli(['--token-endpoint', idp.tokenEndpoint], { OBO_GRANT_TYPE: 'token-exchange', OBO_AUDIENCE: 'mcp-z' });
    expect(refused.code).toBe(1);
    expect(refused.json.explanation.id).toBe('invalid_target');
    expect(refused.json.explanation.meaning).toContain('mcp-z');
  });

  it('the explainer knows unsupported_grant_type and the Keycloak and Okta words for a client not allowed to exchange', () => {
    expect(explain({ error: 'unsupported_grant_type', status: 400, message: 'unsupported_grant_type' }).id).toBe('unsupported_grant_type');
    for (const [error, description] of [
      ['access_denied', 'Client not allowed to exchange'],
      ['unauthorized_client', 'Standard token exchange is not enabled for the requested client'],
      ['access_denied', 'Client is not within the token audience'],
      ['unauthorized_client', 'The client is not authorized to use the provided grant type. Configured grant types: [client_credentials].'],
    ]) {
      const explanation = explain({ error, error_description: description, status: 400, message: `${error}: ${description}` });
      expect(explanation.id).toBe('exchange_not_allowed');
      expect(explanation.fix.join('\n')).toMatch(/Keycloak[\s\S]*Okta/);
    }
    expect(explain({ code: 'ETOKENTYPE', status: 200, message: 'The identity provider issued a token of type x' }).id).toBe('issued_token_type');
    const { explainCode } = require('../cli/explain');
    for (const code of ['invalid_target', 'unsupported_grant_type']) {
      expect(explainCode(code)).toMatchObject({ known: true, id: code });
    }
  });
});
