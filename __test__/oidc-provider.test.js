'use strict';
/**
 * The token exchange grant against a real OpenID provider: panva's
 * oidc-provider, taught the RFC 8693 grant with registerGrantType
 * (__test__/fixtures/oidc-provider-exchange.mjs, in a child process).
 * Discovery, client authentication and error responses are oidc-provider's
 * own, not the package's mock.
 */
const { spawn } = require('node:child_process');
const { createHash } = require('node:crypto');
const path = require('node:path');
const readline = require('node:readline');
const { obo, settle } = require('./helpers');

const { createOboClient } = obo;

const FIXTURE = path.join(__dirname, 'fixtures', 'oidc-provider-exchange.mjs');
const SCOPE = 'openid mcp:read';
const user = { openidId: 'user-1' };

let child;
let issuer;
const clients = [];

/** The fixture's token for an exchange (see exchangedToken there). */
function exchangedToken(subjectToken, scope, audiences, clientId) {
  const digest = createHash('sha256').update([subjectToken, scope, audiences.join(' '), clientId].join('\n')).digest('base64url');
  return `op.${digest}`;
}

function client(extra = {}) {
  const made = createOboClient({
    issuer,
    clientId: 'librechat',
    clientSecret: 'kc-secret',
    grantType: 'token-exchange',
    retryDelayMs: 1,
    ...extra,
  });
  clients.push(made);
  return made;
}

beforeAll(async () => {
  child = spawn(process.execPath, [FIXTURE], { stdio: ['pipe', 'pipe', 'pipe'] });
  const stderr = [];
  child.stderr.on('data', (chunk) => stderr.push(chunk));
  const firstLine = new Promise((resolve, reject) => {
    readline.createInterface({ input: child.stdout }).once('line', resolve);
    child.once('exit', (code) => reject(new Error(`oidc-provider fixture exited (${code}): ${Buffer.concat(stderr)}`)));
  });
  ({ issuer } = JSON.parse(await firstLine));
});

afterEach(async () => {
  await Promise.all(clients.splice(0).map((made) => made.close()));
});

afterAll(async () => {
  if (!child || child.exitCode !== null) return;
  const exited = new Promise((resolve) => child.once('exit', resolve));
  child.stdin.end();
  await exited;
});

describe('oidc-provider with the token exchange grant', () => {
  it('discovers the token endpoint and exchanges with client_secret_basic; the same call again is cached', async () => {
    const keycloakLike = client();
    const token = await keycloakLike.acquireOboToken({ assertion: 'subject-token-1', scopes: SCOPE, user });
    expect(token).toMatchObject({
      access_token: exchangedToken('subject-token-1', SCOPE, [], 'librechat'),
      token_type: 'Bearer',
      expires_in: 300,
      scope: SCOPE,
    });
    expect(keycloakLike.tokenEndpoint()).toBe(`${issuer}/token`);
    await keycloakLike.acquireOboToken({ assertion: 'subject-token-1', scopes: SCOPE, user });
    expect(keycloakLike.stats()).toMatchObject({ exchanges: 1, cacheSize: 1 });
  });

  it('takes repeated audiences, and two audiences are two tokens', async () => {
    const exchanger = client({ tokenEndpointAuthMethod: 'client_secret_post', clientId: 'librechat-post', clientSecret: 'post-secret' });
    const both = await exchanger.acquireOboToken({ assertion: 'subject-token-1', scopes: SCOPE, user, audience: ['mcp-a', 'mcp-b'] });
    const one = await exchanger.acquireOboToken({ assertion: 'subject-token-1', scopes: SCOPE, user, audience: 'mcp-a' });
    expect(both.access_token).toBe(exchangedToken('subject-token-1', SCOPE, ['mcp-a', 'mcp-b'], 'librechat-post'));
    expect(one.access_token).toBe(exchangedToken('subject-token-1', SCOPE, ['mcp-a'], 'librechat-post'));
    expect(exchanger.stats().exchanges).toBe(2);
  });

  it.each([
    ['a wrong client secret', { clientSecret: 'wrong' }, {}, 'invalid_client'],
    ['a client not allowed the grant', { clientId: 'no-exchange', clientSecret: 'other-secret' }, {}, 'invalid_request'],
    ['an unknown audience', {}, { audience: 'mcp-z' }, 'invalid_target'],
    ['a subject token that is not active', {}, { assertion: 'revoked-token' }, 'invalid_grant'],
  ])('%s is the provider\'s final error, not retried', async (_, options, extra, code) => {
    const refused = client(options);
    const { error } = await settle(refused.acquireOboToken({ assertion: 'subject-token-1', scopes: SCOPE, user, ...extra }));
    expect(error.error).toBe(code);
    expect(typeof error.error_description).toBe('string');
    expect(error.retryable).toBe(false);
    expect(refused.stats()).toMatchObject({ exchanges: 1, retries: 0, failures: 1, cacheSize: 0 });
  });
});
