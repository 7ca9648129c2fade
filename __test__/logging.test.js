'use strict';
/** Events reach the caller's logger with LibreChat's prefix, and never a token or secret. */
const { obo, until, optionsFor, useMockIdp, settle, textsOf } = require('./helpers');
const { faults } = require('../testing');

const ctx = useMockIdp();
const ASSERTION = 'eyJ0eXAiOiJKV1QifQ.logging-assertion-payload.signature-part';

function recordingLogger() {
  const lines = [];
  const logger = {};
  for (const level of ['debug', 'info', 'warn', 'error']) logger[level] = (message) => lines.push({ level, message });
  return { logger, lines };
}

describe('logging', () => {
  it('logs requesting, success, cached use, joining, retrying, throttling and failure', async () => {
    const { logger, lines } = recordingLogger();
    obo.configure(optionsFor(ctx.idp, { logger, maxRetryAfterMs: 0 }));
    const user = { openidId: 'log-user' };
    ctx.idp.enqueue({ status: 503, body: '' });
    const first = await obo.exchangeOboToken(user, ASSERTION, 'api://log');
    await obo.exchangeOboToken(user, ASSERTION, 'api://log');
    await obo.exchangeOboToken(user, ASSERTION, 'api://log');
    ctx.idp.enqueue({ hold: true });
    const pair = [obo.exchangeOboToken(user, ASSERTION, 'api://join'), obo.exchangeOboToken(user, ASSERTION, 'api://join')];
    await until(() => ctx.idp.heldCount() === 1);
    ctx.idp.release();
    await Promise.all(pair);
    ctx.idp.enqueue(faults.throttled(30));
    await settle(obo.exchangeOboToken(user, ASSERTION, 'api://busy'));
    await settle(obo.exchangeOboToken(user, ASSERTION, 'api://busy'));
    ctx.idp.enqueue(faults.invalidSignature());
    await settle(obo.exchangeOboToken(user, ASSERTION, 'api://bad'));

    const messages = lines.map((line) => `${line.level} ${line.message}`);
    const expectLine = (pattern) => expect(messages).toEqual(expect.arrayContaining([expect.stringMatching(pattern)]));
    expectLine(/^debug \[OboTokenService\] Performing OBO token exchange for user log-user with scopes: api:\/\/log$/);
    expectLine(/^warn \[OboTokenService\] Transient OBO token exchange failure, retrying in 20 ms: .*HTTP 503/);
    expectLine(/^debug \[OboTokenService\] OBO token exchange successful for user log-user \(expires in 3600 s\)$/);
    expectLine(/^debug \[OboTokenService\] Using cached OBO token for user log-user and scopes api:\/\/log$/);
    expectLine(/^debug \[OboTokenService\] Joining in-flight OBO token exchange for user log-user and scopes api:\/\/join$/);
    expectLine(/^warn \[OboTokenService\] The identity provider throttled user log-user and scopes api:\/\/busy for 30 s$/);
    expectLine(/^warn \[OboTokenService\] OBO token requests for user log-user and scopes api:\/\/busy are throttled/);
    expectLine(/^error \[OboTokenService\] OBO token exchange failed: invalid_grant: AADSTS50013/);
    expect(lines.filter((line) => /Using cached/.test(line.message))).toHaveLength(2);
    const all = messages.join('\n');
    expect(all).not.toContain(ASSERTION);
    expect(all).not.toContain(first.access_token);
    expect(all).not.toContain(ctx.idp.clientSecret);
  });

  it('delivers each event as it happens: a retry is logged while the call still waits', async () => {
    const { logger, lines } = recordingLogger();
    obo.configure(optionsFor(ctx.idp, { logger, retryDelayMs: 800 }));
    ctx.idp.enqueue({ status: 503, body: '' });
    let settled = false;
    const call = obo.exchangeOboToken({ openidId: 'live' }, ASSERTION, 'api://live').finally(() => {
      settled = true;
    });
    await until(() => lines.some((line) => /retrying in 800 ms/.test(line.message)));
    expect(settled).toBe(false);
    await call;
    expect(lines.at(-1).message).toMatch(/OBO token exchange successful for user live/);
  });

  it('logs nothing without a logger, and survives a logger that throws', async () => {
    const { logger, lines } = recordingLogger();
    obo.setLogger(logger);
    obo.setLogger(null);
    await obo.exchangeOboToken({ openidId: 'quiet' }, ASSERTION, 'api://quiet');
    expect(lines).toHaveLength(0);
    const angry = { debug: () => { throw new Error('disk full'); }, info() {}, warn() {}, error() {} };
    obo.setLogger(angry);
    const result = await obo.exchangeOboToken({ openidId: 'angry' }, ASSERTION, 'api://angry');
    expect(result.access_token).toBe(ctx.idp.expectedToken(ASSERTION, 'api://angry'));
    await obo.exchangeOboToken({ openidId: 'angry' }, ASSERTION, 'api://angry');
    obo.setLogger(null);
  });

  it('refuses a logger without the four methods, keeping the configuration', async () => {
    expect(() => obo.setLogger({ info() {} })).toThrow(/logger has no debug\/warn\/error method/);
    expect(() => obo.configure(optionsFor(ctx.idp, { logger: 'console' }))).toThrow(
      expect.objectContaining({ name: 'TypeError', option: 'logger' }),
    );
    await expect(obo.exchangeOboToken({ openidId: 'kept' }, ASSERTION, 'api://kept')).resolves.toBeDefined();
    const { error } = await settle(obo.exchangeOboToken(null, ASSERTION, 's'));
    expect(textsOf(error).join('')).not.toContain(ASSERTION);
  });
});
