'use strict';
/**
 * Findings of review 9 that show from JavaScript: a throttle learned by an
 * exchange that began before `configure()`/`clearCache()` is not kept after
 * it, and secrets echoed back in any encoded form (form-urlencoded,
 * percent-encoded, the Basic authorization value, the proxy's credentials)
 * never reach an error or a log line.
 */
const http = require('node:http');
const { obo, until, optionsFor, settle, textsOf } = require('./helpers');
const { startMockIdp, faults } = require('../testing');
const { formsOf, basicValues, leaksIn } = require('./support/secret-forms');
const { recordingLogger } = require('./support/recording-logger');

const { exchangeOboToken, configure, clearCache } = obo;

/** Entra-like: `~` (sent as %7E), plus characters that form and percent encoding treat differently. */
const CLIENT_SECRET = 'Xq8Q~a.b_c-d e+f/g=h';
/** Not a JWT, so that the form body has to escape it. */
const ASSERTION = 'user-assertion~with space+plus/slash=eq';
/** Short secrets are redacted too (4 characters or more). */
const SHORT_SECRET = 'k~y5';
const PROXY_USER = 'proxy-user';
const PROXY_PASSWORD = 'pr0xy~pass word';
/** Not loopback, so that it goes through the proxy; only the proxy resolves it. */
const PROXIED_HOST = 'idp.review.test';

/** An OAuth error body that repeats what the request carried. */
function echo(entry) {
  const description = `echo body=${entry.body} authorization=${entry.headers.authorization || ''}`;
  return {
    status: 400,
    body: { error: 'invalid_request', error_description: description, claims: entry.body, correlation_id: entry.body },
  };
}

describe('a throttle learned before configure()/clearCache() is not kept after it', () => {
  let idp;
  beforeAll(async () => {
    idp = await startMockIdp();
  });
  afterAll(() => idp.close());
  beforeEach(() => {
    idp.reset();
    configure(optionsFor(idp, { maxRetryAfterMs: 0 }));
  });

  const resets = {
    'clearCache()': () => clearCache(),
    'configure()': () => configure(optionsFor(idp, { maxRetryAfterMs: 0 })),
  };

  it.each(Object.keys(resets))('a 429 answered after %s does not refuse the next call', async (reset) => {
    const user = { openidId: `throttle-${reset}` };
    idp.enqueue({ hold: true, ...faults.throttled(60) });
    const pending = settle(exchangeOboToken(user, 'a-throttled-assertion', 'api://t/.default'));
    await until(() => idp.heldCount() === 1);
    resets[reset]();
    idp.release();
    const first = await pending;
    expect(first.error).toMatchObject({ status: 429, retryAfter: 60 });

    const second = await settle(exchangeOboToken(user, 'a-throttled-assertion', 'api://t/.default'));
    expect(second.error).toBeUndefined();
    expect(second.value.access_token).toBe(idp.expectedToken('a-throttled-assertion', 'api://t/.default'));
    expect(idp.tokenRequests()).toHaveLength(2);
  });

  it('a 429 answered before clearCache() is still honoured until then', async () => {
    const user = { openidId: 'throttle-control' };
    idp.enqueue(faults.throttled(60));
    await settle(exchangeOboToken(user, 'a-throttled-assertion', 'api://t/.default'));
    const refused = await settle(exchangeOboToken(user, 'a-throttled-assertion', 'api://t/.default'));
    expect(refused.error).toMatchObject({ status: 429, throttled: true });
    expect(idp.tokenRequests()).toHaveLength(1);
  });
});

describe('a call made after clearCache()/configure() starts its own exchange', () => {
  let idp;
  beforeAll(async () => {
    idp = await startMockIdp();
  });
  afterAll(() => idp.close());
  beforeEach(() => {
    idp.reset();
    configure(optionsFor(idp));
    idp.setResponder((record) => ({
      body: { token_type: 'Bearer', access_token: `token-${idp.tokenRequests().indexOf(record) + 1}`, expires_in: 3600 },
    }));
  });

  const resets = {
    'clearCache()': () => clearCache(),
    'configure()': () => configure(optionsFor(idp)),
  };

  it.each(Object.keys(resets))('after %s, a new caller is not joined to the exchange under way', async (reset) => {
    const user = { openidId: `fresh-${reset}` };
    idp.enqueue({ hold: true }, { hold: true });
    const before = exchangeOboToken(user, 'fresh-assertion', 'api://f/.default');
    await until(() => idp.heldCount() === 1);
    resets[reset]();
    const after = exchangeOboToken(user, 'fresh-assertion', 'api://f/.default');
    await until(() => idp.heldCount() === 2);
    idp.release();
    // The old exchange still answers its own caller; the new one is the one kept.
    expect((await before).access_token).toBe('token-1');
    expect((await after).access_token).toBe('token-2');
    expect((await exchangeOboToken(user, 'fresh-assertion', 'api://f/.default')).access_token).toBe('token-2');
    expect(idp.tokenRequests()).toHaveLength(2);
  });
});

describe('secrets echoed back in any form are redacted', () => {
  let idp;
  let shortIdp;
  beforeAll(async () => {
    idp = await startMockIdp({ clientSecret: CLIENT_SECRET, respond: echo });
    shortIdp = await startMockIdp({ clientSecret: SHORT_SECRET, respond: echo });
  });
  afterAll(() => Promise.all([idp.close(), shortIdp.close()]));
  beforeEach(() => {
    idp.reset();
    shortIdp.reset();
  });

  async function exchangeAgainst(provider, options) {
    const { logger, texts } = recordingLogger();
    configure(optionsFor(provider, { maxRetries: 0, logger, ...options }));
    const { error } = await settle(exchangeOboToken({ openidId: 'echo-user' }, ASSERTION, 'api://echo/.default'));
    // Every argument of every log call, the error passed with a failure included.
    return { error, lines: texts() };
  }

  it.each(['client_secret_post', 'client_secret_basic'])(
    'with %s: no form of the secret or the assertion in the error or the logs',
    async (method) => {
      const { error, lines } = await exchangeAgainst(idp, { tokenEndpointAuthMethod: method });
      expect(error).toBeInstanceOf(Error);
      expect(error.message).toMatch(/^invalid_request: echo body=/);
      // The provider did see them: the echo is real.
      const [request] = idp.tokenRequests();
      const sent = `${request.body} ${request.headers.authorization || ''}`;
      const forms = [...formsOf(CLIENT_SECRET), ...formsOf(ASSERTION), ...basicValues(idp.clientId, CLIENT_SECRET)];
      expect(forms.some((form) => sent.includes(form))).toBe(true);
      expect(leaksIn([...textsOf(error), ...lines], forms)).toEqual([]);
      expect(lines.length).toBeGreaterThan(0);
    },
  );

  it('a 4-character client secret is redacted too', async () => {
    const { error, lines } = await exchangeAgainst(shortIdp, { tokenEndpointAuthMethod: 'client_secret_post' });
    expect(error.message).toMatch(/^invalid_request: echo body=/);
    expect(shortIdp.tokenRequests()[0].form.client_secret).toBe(SHORT_SECRET);
    expect(leaksIn([...textsOf(error), ...lines], formsOf(SHORT_SECRET))).toEqual([]);
  });

  it('a proxy refusing CONNECT with 407 and an echo of the request leaks no secret either', async () => {
    const seen = [];
    // Plain http goes only to loopback, never through a proxy: what a proxy sees is a CONNECT.
    const proxy = http.createServer((req, res) => res.writeHead(403).end());
    proxy.on('connect', (req, socket) => {
      seen.push(req.url);
      const description = `echo CONNECT ${req.url} proxy-authorization=${req.headers['proxy-authorization'] || ''}`;
      const body = JSON.stringify({ error: 'proxy_authentication_required', error_description: description });
      socket.end(
        `HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm="review"\r\n` +
          `Content-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`,
      );
    });
    await new Promise((resolve) => proxy.listen(0, '127.0.0.1', resolve));
    try {
      const password = encodeURIComponent(PROXY_PASSWORD);
      const proxyUrl = `http://${PROXY_USER}:${password}@127.0.0.1:${proxy.address().port}`;
      const { error, lines } = await exchangeAgainst(idp, {
        tokenEndpoint: `https://${PROXIED_HOST}:${idp.port}/mock-tenant/oauth2/v2.0/token`,
        proxy: proxyUrl,
        tokenEndpointAuthMethod: 'client_secret_basic',
      });
      expect(seen).toEqual([`${PROXIED_HOST}:${idp.port}`]);
      expect(error).toMatchObject({ status: 407 });
      const forms = [...formsOf(PROXY_PASSWORD), ...basicValues(PROXY_USER, PROXY_PASSWORD), ...formsOf(password)];
      expect(leaksIn([...textsOf(error), ...lines], forms)).toEqual([]);
    } finally {
      await new Promise((resolve) => proxy.close(resolve));
    }
  });
});
