'use strict';
/**
 * Sessions against panva's oidc-provider (in a child process): the session
 * begins with a grant registered in the provider that mints its refresh
 * token, and renews through oidc-provider's own refresh_token grant with
 * rotation, so that reuse detection (which revokes the grant) is not only
 * the mock's.
 */
const path = require('node:path');
const { fork } = require('node:child_process');
const { obo, untilExpired } = require('./helpers');

const { configure, beginOboSession, acquireSessionToken, stats } = obo;

let child;
let provider;
let nextId = 0;
const answers = new Map();

function ask(op) {
  const id = ++nextId;
  return new Promise((resolve) => {
    answers.set(id, resolve);
    child.send({ id, op });
  });
}

beforeAll(async () => {
  child = fork(path.join(__dirname, 'fixtures', 'oidc-provider-sessions.mjs'), [], { stdio: ['ignore', 'ignore', 'ignore', 'ipc'] });
  provider = await new Promise((resolve, reject) => {
    child.once('exit', (code) => reject(new Error(`the oidc-provider fixture exited (${code})`)));
    child.on('message', (message) => {
      if (message.ready) resolve(message);
      else if (answers.has(message.id)) {
        answers.get(message.id)(message.value);
        answers.delete(message.id);
      }
    });
  });
});

afterAll(async () => {
  if (!child) return;
  const exited = new Promise((resolve) => child.once('exit', resolve));
  child.disconnect();
  await exited;
});

beforeEach(() => {
  configure({ tokenEndpoint: provider.tokenEndpoint, clientId: provider.clientId, clientSecret: provider.clientSecret, retryDelayMs: 20 });
});

const basic = () => `Basic ${Buffer.from(`${provider.clientId}:${provider.clientSecret}`).toString('base64')}`;

/** One raw token request to the provider. */
async function tokenRequest(form) {
  const response = await fetch(provider.tokenEndpoint, {
    method: 'POST',
    headers: { authorization: basic(), 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams(form),
  });
  return { status: response.status, body: await response.json() };
}

it("oidc-provider's reuse detection revokes the grant when a rotated refresh token is presented again", async () => {
  const begun = await tokenRequest({
    grant_type: 'urn:ietf:params:oauth:grant-type:jwt-bearer',
    assertion: 'user:raw-client',
    scope: 'api:read offline_access',
    requested_token_use: 'on_behalf_of',
  });
  expect(begun.status).toBe(200);
  const first = begun.body.refresh_token;
  const renewed = await tokenRequest({ grant_type: 'refresh_token', refresh_token: first, scope: 'api:read offline_access' });
  expect(renewed.status).toBe(200);
  expect(renewed.body.refresh_token).not.toBe(first);
  const reused = await tokenRequest({ grant_type: 'refresh_token', refresh_token: first });
  expect(reused.body.error).toBe('invalid_grant');
  // The whole grant is gone: the rotated token, never used, is refused too.
  const afterwards = await tokenRequest({ grant_type: 'refresh_token', refresh_token: renewed.body.refresh_token });
  expect(afterwards.body.error).toBe('invalid_grant');
});

it('a session renews through the refresh_token grant with rotation, many callers at once, and the grant survives', async () => {
  const before = await ask('events');
  const begun = await beginOboSession({ assertion: 'user:agent-1', scopes: 'api:read', user: { openidId: 'agent-1' } });
  expect(begun.scope).toBe('api:read');
  // oidc-provider's access tokens live 1 s: once one has, the eight callers of a round wait for one renewal.
  let servedUntil = begun.expires_at;
  for (let round = 0; round < 3; round++) {
    await untilExpired(servedUntil);
    const results = await Promise.all(Array.from({ length: 8 }, () => acquireSessionToken({ sessionKey: begun.sessionKey, scopes: 'api:read' })));
    for (const result of results) expect(result.access_token).toEqual(expect.any(String));
    servedUntil = Math.max(...results.map((result) => result.expires_at));
  }
  const after = await ask('events');
  expect(after.revoked).toBe(before.revoked);
  expect(after.errors).toEqual(before.errors);
  expect(stats().sessionRenewals).toBeGreaterThanOrEqual(3);
  // Still alive: one more renewal succeeds.
  await expect(acquireSessionToken({ sessionKey: begun.sessionKey, scopes: 'api:read', forceRefresh: true })).resolves.toMatchObject({ scope: 'api:read' });
});

it('a scope the grant does not cover is refused as final, and the session is kept', async () => {
  const begun = await beginOboSession({ assertion: 'user:agent-2', scopes: 'api:read', user: { openidId: 'agent-2' } });
  await expect(acquireSessionToken({ sessionKey: begun.sessionKey, scopes: 'api:write' })).rejects.toMatchObject({
    error: 'invalid_scope',
    retryable: false,
  });
  await expect(acquireSessionToken({ sessionKey: begun.sessionKey, scopes: 'api:read' })).resolves.toMatchObject({ scope: 'api:read' });
});
