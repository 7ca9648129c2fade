'use strict';
/**
 * Secrets echoed into a failure that is retried: a provider that repeats the
 * request (the user's assertion, the client secret, the Basic authorization
 * value) in a 503 makes the retry warning carry that answer as its error. No
 * argument the logger receives, on the way to the retry or after it, nor the
 * rejection, may hold any form of a secret.
 */
const { obo, optionsFor, settle, textsOf } = require('./helpers');
const { startMockIdp } = require('../testing');
const { formsOf, basicValues, leaksIn } = require('./support/secret-forms');
const { recordingLogger, serialise } = require('./support/recording-logger');

const { exchangeOboToken, getGraphApiToken, configure } = obo;

/** Entra-like: `~` (sent as %7E), plus characters that form and percent encoding treat differently. */
const CLIENT_SECRET = 'Rt7Q~r.e_t-r y+a/i=n';
/** Not a JWT, so that the form body has to escape it. */
const ASSERTION = 'retried-assertion~with space+plus/slash=eq';

/** A retryable answer that repeats what the request carried. */
function echoUnavailable(entry) {
  const description = `echo body=${entry.body} authorization=${entry.headers.authorization || ''}`;
  return {
    status: 503,
    body: { error: 'temporarily_unavailable', error_description: description, claims: entry.body, correlation_id: entry.body },
  };
}

let idp;
beforeAll(async () => {
  idp = await startMockIdp({ clientSecret: CLIENT_SECRET, respond: echoUnavailable });
});
afterAll(async () => {
  configure(null);
  await idp.close();
});
beforeEach(() => idp.reset());

const secretForms = () => [...formsOf(CLIENT_SECRET), ...formsOf(ASSERTION), ...basicValues(idp.clientId, CLIENT_SECRET)];

describe('a retried 503 that echoes the request', () => {
  it.each([
    ['client_secret_post', 1, ['retrying once']],
    ['client_secret_basic', 2, ['retrying (1 of 2)', 'retrying (2 of 2)']],
  ])('with %s and maxRetries %d: every retry warning carries the error, and no argument the logger receives holds a secret', async (method, maxRetries, warnings) => {
    const { logger, calls, texts } = recordingLogger();
    configure(optionsFor(idp, { tokenEndpointAuthMethod: method, maxRetries, logger }));
    const { error } = await settle(exchangeOboToken({ openidId: 'retry-echo-user' }, ASSERTION, 'api://echo/.default'));
    expect(error).toMatchObject({ status: 503, code: 'temporarily_unavailable' });
    // The retry path was taken, and the provider did see the secrets: the echo is real.
    const requests = idp.tokenRequests();
    expect(requests).toHaveLength(maxRetries + 1);
    const sent = requests.map((request) => `${request.body} ${request.headers.authorization || ''}`).join('\n');
    expect(secretForms().some((form) => sent.includes(form))).toBe(true);

    const retries = calls.filter((call) => call.level === 'warn' && /Transient OBO exchange failure/.test(call.args[0]));
    expect(retries.map((call) => call.args[0].replace(/^.*, /, ''))).toEqual(warnings);
    for (const retry of retries) {
      expect(retry.args).toHaveLength(2);
      expect(retry.args[1]).toBeInstanceOf(Error);
      expect(retry.args[1]).toMatchObject({ status: 503, retryable: true, code: 'temporarily_unavailable' });
      expect(retry.args[1].message).toMatch(/^temporarily_unavailable: echo body=/);
    }
    const failure = calls.find((call) => call.level === 'error');
    expect(failure.args[1]).toMatchObject({ status: 503 });
    expect(leaksIn([...texts(), ...textsOf(error)], secretForms())).toEqual([]);
  });

  it('through getGraphApiToken, neither the rejection nor its cause holds a secret', async () => {
    const { logger, texts } = recordingLogger();
    configure(optionsFor(idp, { tokenEndpointAuthMethod: 'client_secret_post', logger }));
    const { error } = await settle(getGraphApiToken({ openidId: 'graph-echo-user' }, ASSERTION, 'https://graph.microsoft.com/.default'));
    expect(error.message).toMatch(/^Graph token acquisition failed: temporarily_unavailable: echo body=/);
    expect(error.cause).toMatchObject({ status: 503 });
    expect(idp.tokenRequests()).toHaveLength(2);
    expect(leaksIn([...texts(), serialise(error)], secretForms())).toEqual([]);
  });
});

describe('the recording logger', () => {
  it('writes out every argument: an Error with its own properties and its cause, deeply', () => {
    const { logger, calls, texts } = recordingLogger();
    const cause = Object.assign(new Error('inner'), { body: 'in-the-cause' });
    const error = Object.assign(new Error('outer', { cause }), { status: 503, detail: { echoed: 'in-a-property' } });
    logger.warn('message', error, 'third-argument');
    expect(calls[0].args).toEqual(['message', error, 'third-argument']);
    const [text] = texts();
    for (const part of ['warn message', 'outer', 'status: 503', 'in-a-property', 'inner', 'in-the-cause', 'third-argument']) {
      expect(text).toContain(part);
    }
  });
});
