'use strict';
/**
 * Findings of review 9 that show from JavaScript: a throttle learned by an
 * exchange that began before `configure()`/`clearCache()` is not kept after it.
 */
const { obo, until, optionsFor, settle } = require('./helpers');
const { startMockIdp, faults } = require('../testing');

const { exchangeOboToken, configure, clearCache } = obo;

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
