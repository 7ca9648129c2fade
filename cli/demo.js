'use strict';
/**
 * `obo-native demo` (`npm start`): the embedded mock identity provider on
 * loopback, and what obo-native does with it — a first exchange, a cache hit,
 * 1 000 concurrent calls coalesced into one request, a 503 retried, a
 * throttled key — then the stats() table. No network, no configuration.
 */
const { palette, duration, count } = require('./ui.js');

const SPINNER = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];
const STEPS = 6;
const CONCURRENT = 1000;
const HOT_LOOP = 100_000;

const STAT_NOTES = {
  cacheHits: 'calls answered from the cache',
  cacheMisses: 'calls that found no token in the cache',
  coalesced: 'calls that joined an exchange already in flight',
  exchanges: 'exchanges run against the provider',
  retries: 'requests repeated after a transient failure',
  failures: 'exchanges that failed',
  throttled: 'calls refused from memory (Retry-After)',
  cacheSize: 'tokens in the cache now',
  inFlight: 'exchanges in flight now',
};

/** A live status line on a terminal (a spinner and a text); nothing elsewhere. */
function progressLine(stream) {
  const live = Boolean(stream.isTTY);
  let text = '';
  let frame = 0;
  let timer = null;
  const draw = () => {
    stream.write(`\r\u001b[2K      ${SPINNER[frame++ % SPINNER.length]} ${text}`);
  };
  return {
    live,
    start(initial) {
      text = initial;
      if (!live) return;
      draw();
      timer = setInterval(draw, 80);
    },
    update(next) {
      text = next;
    },
    stop() {
      if (!live) return;
      clearInterval(timer);
      timer = null;
      stream.write('\r\u001b[2K');
    },
  };
}

const pause = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function until(condition, timeoutMs = 30_000) {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error('the mock identity provider did not receive the request in time');
    await pause(2);
  }
}

async function demo({ stream = process.stdout } = {}) {
  const obo = require('../index.js');
  const { startMockIdp, faults } = require('../testing.js');
  const c = palette(stream);
  const say = (line = '') => stream.write(`${line}\n`);
  const step = (n, title) => say(`${c.cyan(`[${n}/${STEPS}]`)} ${c.bold(title)}`);
  const detail = (line) => say(`      ${line}`);
  const progress = progressLine(stream);
  const assertion = 'demo-user-access-token';

  const idp = await startMockIdp();
  try {
    obo.configure({ issuer: idp.issuer, clientId: idp.clientId, clientSecret: idp.clientSecret });
    obo.clearCache();
    const requests = () => idp.tokenRequests().length;
    let callCount = 0;
    const exchange = (...args) => {
      callCount++;
      return obo.exchangeOboToken(...args);
    };

    say(c.bold('obo-native demo: On-Behalf-Of exchanges against the embedded mock identity provider'));
    say(c.dim(`mock provider ${idp.issuer} (loopback; no network, no real tokens)`));
    say();

    // 1. A first exchange: discovery, then one token request.
    step(1, 'First exchange for a user and a scope');
    const alice = { openidId: 'alice' };
    const scope = 'api://mcp-server/Files.Read';
    let before = requests();
    let t0 = performance.now();
    const first = await exchange(alice, assertion, scope);
    let elapsed = performance.now() - t0;
    detail(`${c.green('✔')} token received in ${c.bold(duration(elapsed))} (OpenID discovery + 1 token request) · expires_in ${first.expires_in} s`);
    detail(c.dim(`provider requests: ${requests() - before}`));
    say();

    // 2. The same call again: served from the cache.
    step(2, 'The same call again: a cache hit');
    before = requests();
    t0 = performance.now();
    await exchange(alice, assertion, scope);
    elapsed = performance.now() - t0;
    t0 = performance.now();
    for (let i = 0; i < HOT_LOOP; i++) await exchange(alice, assertion, scope);
    const loop = performance.now() - t0;
    detail(`${c.green('✔')} answered in ${c.bold(duration(elapsed))}, without a request; ${count(HOT_LOOP)} more hits took ${duration(loop)} (${duration(loop / HOT_LOOP)} each)`);
    detail(c.dim(`provider requests: ${requests() - before}`));
    say();

    // 3. 1 000 concurrent calls on a cold key: one request, held at the provider until all have joined.
    step(3, `${count(CONCURRENT)} concurrent calls for a new user, cold cache`);
    const bob = { openidId: 'bob' };
    before = requests();
    idp.enqueue({ hold: true });
    let resolved = 0;
    t0 = performance.now();
    progress.start(`${count(CONCURRENT)} calls made…`);
    const calls = Array.from({ length: CONCURRENT }, () =>
      exchange(bob, assertion, scope).then((token) => {
        resolved++;
        progress.update(`${count(resolved)}/${count(CONCURRENT)} resolved`);
        return token;
      }),
    );
    const made = performance.now();
    await until(() => idp.heldCount() === 1);
    progress.update(`${count(CONCURRENT)} calls waiting on ${requests() - before} request held at the provider…`);
    if (progress.live) await pause(700); // long enough to read
    const released = performance.now();
    idp.release();
    const tokens = await Promise.all(calls);
    const done = performance.now();
    progress.stop();
    const same = tokens.every((token) => token.access_token === tokens[0].access_token);
    detail(
      `${c.green('✔')} ${count(resolved)} calls → ${c.bold(`${requests() - before} request`)} to the provider; ` +
        `all resolved ${duration(done - released)} after it answered${same ? ', with the same token' : ''}`,
    );
    detail(c.dim(`calls made in ${duration(made - t0)}; the first started the exchange, the other ${count(CONCURRENT - 1)} joined it${progress.live ? ' (the provider held the request so you could watch)' : ''}`));
    say();

    // 4. A transient 503: retried once, after 300 ms; the caller only sees the token.
    step(4, 'The provider answers 503 Service Unavailable, then recovers');
    before = requests();
    idp.enqueue(faults.unavailable());
    progress.start('503 received, retrying in 300 ms…');
    t0 = performance.now();
    const carol = await exchange({ openidId: 'carol' }, assertion, scope);
    elapsed = performance.now() - t0;
    progress.stop();
    detail(`${c.green('✔')} token received in ${c.bold(duration(elapsed))} · ${requests() - before} requests (503, then a retry after 300 ms) · expires_in ${carol.expires_in} s`);
    say();

    // 5. Throttling: a Retry-After longer than maxRetryAfterMs is not waited for; the key is refused from memory.
    step(5, 'The provider throttles a key: 429 with Retry-After: 30');
    const dave = { openidId: 'dave' };
    before = requests();
    idp.enqueue(faults.throttled(30));
    t0 = performance.now();
    const refused = await exchange(dave, assertion, scope).then(() => null, (err) => err);
    elapsed = performance.now() - t0;
    if (!refused) throw new Error('the throttled exchange was not refused');
    detail(`${c.yellow('✖')} refused in ${duration(elapsed)}: ${refused.message} · retryAfter ${refused.retryAfter} s, retryable ${refused.retryable}`);
    detail(c.dim(`provider requests: ${requests() - before} (not retried: 30 s is more than maxRetryAfterMs, 5 s)`));
    before = requests();
    t0 = performance.now();
    const remembered = await exchange(dave, assertion, scope).then(() => null, (err) => err);
    elapsed = performance.now() - t0;
    detail(
      `${c.yellow('✖')} the next call for that key: refused from memory in ${duration(elapsed)} ` +
        `(throttled: ${remembered && remembered.throttled}) · provider requests: ${requests() - before}`,
    );
    before = requests();
    await exchange({ openidId: 'erin' }, assertion, scope);
    detail(`${c.green('✔')} another user meanwhile: served · provider requests: ${requests() - before}`);
    say();

    // 6. The counters.
    step(6, 'stats()');
    const stats = obo.stats();
    const width = Math.max(...Object.keys(stats).map((name) => name.length));
    const numbers = Object.values(stats).map((value) => count(value));
    const numberWidth = Math.max(...numbers.map((text) => text.length));
    Object.keys(stats).forEach((name, i) => {
      detail(`${name.padEnd(width)}  ${numbers[i].padStart(numberWidth)}  ${c.dim(STAT_NOTES[name] || '')}`);
    });
    say();
    say(`The provider received ${c.bold(String(requests()))} token requests for ${c.bold(count(callCount))} calls.`);
    say(c.dim('Next: "npx obo-native exchange --help" to try your identity provider; require(\'obo-native/testing\') for this mock in your tests.'));
    return 0;
  } finally {
    progress.stop();
    obo.configure(null);
    await idp.close();
  }
}

module.exports = { demo };
