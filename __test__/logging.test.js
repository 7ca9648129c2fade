'use strict';
/** Events reach the caller's logger with LibreChat's prefix, and never a token or secret. */
const { obo, until, optionsFor, useMockIdp, settle, textsOf } = require('./helpers');
const { faults } = require('../testing');

const ctx = useMockIdp();
const ASSERTION = 'eyJ0eXAiOiJKV1QifQ.logging-assertion-payload.signature-part';

function recordingLogger() {
  const lines = [];
  const logger = {};
  for (const level of ['debug', 'info', 'warn', 'error']) {
    logger[level] = (message, error) => lines.push({ level, message, error });
  }
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
    // LibreChat's five lines, word for word, with the subject as the user id.
    expect(messages.slice(0, 4)).toEqual([
      'debug [OboTokenService] Requesting new OBO token for user: log-user, scopes: api://log',
      'warn [OboTokenService] Transient OBO exchange failure for user: log-user, retrying once',
      'debug [OboTokenService] Successfully obtained and cached OBO token for user: log-user',
      'debug [OboTokenService] Using cached token for user: log-user',
    ]);
    const expectLine = (pattern) => expect(messages).toEqual(expect.arrayContaining([expect.stringMatching(pattern)]));
    expectLine(/^debug \[OboTokenService\] Joining in-flight OBO exchange for user: log-user$/);
    expectLine(/^warn \[OboTokenService\] Identity provider throttled OBO exchange for user: log-user, scopes: api:\/\/busy, for 30 s$/);
    expectLine(/^warn \[OboTokenService\] Refusing throttled OBO exchange for user: log-user, scopes: api:\/\/busy, for \d+ s more$/);
    expectLine(/^error \[OboTokenService\] OBO exchange failed for user: log-user, scopes: api:\/\/bad: invalid_grant: AADSTS50013/);
    // The retry warning carries the error as its second argument, as upstream's does.
    const retry = lines.find((line) => /retrying once/.test(line.message));
    expect(retry.error).toBeInstanceOf(Error);
    expect(retry.error).toMatchObject({ status: 503, retryable: true });
    const failure = lines.find((line) => line.level === 'error' && /api:\/\/bad/.test(line.message));
    expect(failure.error).toMatchObject({ error: 'invalid_grant', oboFailureReason: 'exchange_failed' });
    expect(lines.filter((line) => line.level === 'debug' && line.error !== undefined)).toHaveLength(0);
    expect(lines.filter((line) => /Using cached/.test(line.message))).toHaveLength(2);
    const all = [...messages, ...lines.flatMap((line) => textsOf(line.error))].join('\n');
    expect(all).not.toContain(ASSERTION);
    expect(all).not.toContain(first.access_token);
    expect(all).not.toContain(ctx.idp.clientSecret);
  });

  it('delivers each event as it happens: a retry is logged while the call still waits', async () => {
    const { logger, lines } = recordingLogger();
    obo.configure(optionsFor(ctx.idp, { logger }));
    ctx.idp.enqueue({ status: 503, body: '' });
    ctx.idp.enqueue({ hold: true });
    let settled = false;
    const call = obo.exchangeOboToken({ openidId: 'live' }, ASSERTION, 'api://live').finally(() => {
      settled = true;
    });
    // The retry is held at the provider, so the call cannot have settled yet.
    await until(() => lines.some((line) => /retrying once/.test(line.message)));
    expect(settled).toBe(false);
    await until(() => ctx.idp.heldCount() === 1);
    ctx.idp.release();
    await call;
    expect(lines.at(-1).message).toBe('[OboTokenService] Successfully obtained and cached OBO token for user: live');
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
