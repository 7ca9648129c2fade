'use strict';
/** Helpers shared by the benchmark's child processes and worker threads. */
const crypto = require('node:crypto');
const fs = require('node:fs');
const path = require('node:path');

const CONTESTANTS = ['native', 'lean', 'stack', 'stack-redis'];
const SCOPE = 'api://mcp-server-4f1c2d/Tools.ReadWrite';
const ASSERTION_LENGTH = 1536;
const TENANT = '72f988bf-86f1-41af-91ab-2d7cd011db47';
const ISSUER = `https://login.microsoftonline.com/${TENANT}/v2.0`;

function loadContestant(name) {
  if (!CONTESTANTS.includes(name)) throw new Error(`unknown contestant ${name}`);
  return require(path.join(__dirname, 'contestants', `${name}.js`));
}

const b64 = (value) => Buffer.from(JSON.stringify(value)).toString('base64url');

/**
 * The two arguments today's LibreChat passes for one signed-in user: the
 * user (with its OpenID fields) and the identity context the MCP resolver
 * builds from the request (subject, tenant, issuer).
 */
function identity(subject) {
  return {
    user: { openidId: subject, tenantId: TENANT, openidIssuer: ISSUER, email: 'jane.doe@contoso.example' },
    context: { openidSubject: subject, tenantId: TENANT, openidIssuer: ISSUER },
  };
}

/**
 * A copy of `text` in a new string object, flat, whose hash V8 has not yet
 * computed: what a caller holds after parsing a request's header.
 */
const freshCopy = (text) => Buffer.from(text, 'latin1').toString('latin1');

/**
 * Bytes that depend only on `seed`: `seededBytes(seed)(n)` is the next `n`
 * bytes of SHAKE256(seed, counter). Processes that must build the same
 * assertions (the instances of the multi-instance workload) use it in place
 * of `crypto.randomBytes`.
 */
function seededBytes(seed) {
  let counter = 0;
  return (n) => crypto.createHash('shake256', { outputLength: n }).update(`${seed}\x1f${counter++}`).digest();
}

/**
 * A ~1.5 KB JWT-shaped access token (an Entra v1 access token's claims and an
 * RS256-sized signature), distinct per `subject`, as a flat string. Random
 * unless `randomBytes` and `issuedAt` (seconds) are given, in which case the
 * same arguments give the same token in every process.
 */
function makeAssertion(subject, { randomBytes = crypto.randomBytes, issuedAt } = {}) {
  const now = issuedAt ?? Math.floor(Date.now() / 1000);
  const header = b64({ typ: 'JWT', alg: 'RS256', x5t: 'JDNa_4i4r7FgigL3sHIlI3xV-IU', kid: 'JDNa_4i4r7FgigL3sHIlI3xV-IU' });
  const signature = randomBytes(256).toString('base64url');
  const claims = {
    aud: 'api://librechat-4f1c2d',
    iss: 'https://sts.windows.net/72f988bf-86f1-41af-91ab-2d7cd011db47/',
    iat: now,
    nbf: now,
    exp: now + 3600,
    acr: '1',
    aio: '',
    amr: ['pwd', 'mfa'],
    appid: '0c3f2d1e-9a8b-4c7d-8e6f-5a4b3c2d1e0f',
    appidacr: '1',
    family_name: 'Doe',
    given_name: 'Jane',
    ipaddr: '203.0.113.7',
    name: 'Jane Doe',
    oid: subject,
    rh: '0.AXEAv4j5cvGGr0GRqy180BHbR0ZJ2Ao8Pw5MjX5vWktgLR1xAAA.',
    scp: 'access_as_user',
    sub: crypto.createHash('sha256').update(String(subject)).digest('base64url'),
    tid: '72f988bf-86f1-41af-91ab-2d7cd011db47',
    unique_name: 'jane.doe@contoso.example',
    upn: 'jane.doe@contoso.example',
    uti: randomBytes(16).toString('base64url'),
    ver: '1.0',
  };
  const bare = header.length + 2 + b64(claims).length + signature.length;
  // base64url grows 4/3: pad `aio` so the token is ~ASSERTION_LENGTH characters.
  const padBytes = Math.max(0, Math.floor(((ASSERTION_LENGTH - bare) * 3) / 4) - 2);
  claims.aio = randomBytes(Math.ceil((padBytes * 3) / 4)).toString('base64url').slice(0, padBytes);
  return freshCopy(`${header}.${b64(claims)}.${signature}`); // flat, not a rope
}

/** The signature part of the token the mock IdP mints for (assertion, scope). */
const expectedDigest = (assertion, scope) =>
  crypto.createHash('sha256').update(`${assertion}\n${scope}`).digest('base64url');

/**
 * Throws unless `result` is today's result shape for (assertion, scope):
 * `expires_at` is required when `withExpiresAt` (a contestant that returns
 * it), and must then lie in the future, at most a day away.
 */
function checkResult(result, assertion, scope, what, withExpiresAt = false) {
  if (
    !result ||
    typeof result.access_token !== 'string' ||
    result.token_type !== 'Bearer' ||
    result.scope !== scope ||
    !(result.expires_in > 0)
  ) {
    throw new Error(`${what}: malformed result ${JSON.stringify(result).slice(0, 300)}`);
  }
  if (withExpiresAt) {
    const left = result.expires_at - Date.now();
    if (!(left > 0 && left <= 86_400_000)) {
      throw new Error(`${what}: expires_at ${result.expires_at} is not an absolute expiry in the next 24 h`);
    }
  }
  if (assertion !== undefined && !result.access_token.endsWith(`.${expectedDigest(assertion, scope)}`)) {
    throw new Error(`${what}: the token does not belong to this assertion and scope`);
  }
}

/** Runs `task(i)` for i in [0, n) with at most `concurrency` in flight. */
async function pool(n, concurrency, task) {
  let next = 0;
  const lane = async () => {
    for (;;) {
      const i = next++;
      if (i >= n) return;
      await task(i);
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, n) }, lane));
}

const tick = () => new Promise((resolve) => setImmediate(resolve));
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Full collections until the heap stops shrinking (needs --expose-gc). */
async function settleHeap() {
  if (typeof global.gc !== 'function') return;
  for (let i = 0; i < 4; i++) {
    global.gc();
    await tick();
  }
  await sleep(50);
  global.gc();
}

/** A small deterministic PRNG (mulberry32), so every contestant gets the same workload. */
function prng(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * CPU time of this process's threads so far, in ms, by kind (Linux only, from
 * /proc/self/task/<tid>/schedstat; null elsewhere): the JavaScript main
 * thread, the addon's Tokio threads (named `obo-native`), and every other
 * thread (V8 GC and compiler helpers, libuv). Threads that exited are not
 * counted.
 */
function threadCpu() {
  const out = { main: 0, tokio: 0, other: 0 };
  try {
    for (const tid of fs.readdirSync('/proc/self/task')) {
      let ns;
      let comm;
      try {
        ns = Number(fs.readFileSync(`/proc/self/task/${tid}/schedstat`, 'utf8').split(' ')[0]);
        comm = fs.readFileSync(`/proc/self/task/${tid}/comm`, 'utf8').trim();
      } catch {
        continue; // the thread exited meanwhile
      }
      const ms = ns / 1e6;
      if (Number(tid) === process.pid) out.main += ms;
      else if (comm.startsWith('obo-native')) out.tokio += ms;
      else out.other += ms;
    }
  } catch {
    return null;
  }
  return out;
}

const threadCpuSince = (before) => {
  const after = threadCpu();
  if (!before || !after) return null;
  return { main: after.main - before.main, tokio: after.tokio - before.tokio, other: after.other - before.other };
};

function quantile(sorted, q) {
  if (sorted.length === 0) return NaN;
  const index = Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1));
  return sorted[index];
}

/**
 * Latency histogram that processes can merge: 16 buckets per octave (≈ 4.4 %
 * wide) from 1/16 µs to 2^24 µs (~17 s), values outside clamped to the ends.
 */
const HISTOGRAM_PER_OCTAVE = 16;
const HISTOGRAM_MIN_LOG2_US = -4;
const HISTOGRAM_BUCKETS = (24 - HISTOGRAM_MIN_LOG2_US) * HISTOGRAM_PER_OCTAVE + 1;

const latencyHistogram = () => new Float64Array(HISTOGRAM_BUCKETS);

function recordLatency(histogram, ms) {
  const us = ms * 1000;
  const at = us > 0 ? Math.floor((Math.log2(us) - HISTOGRAM_MIN_LOG2_US) * HISTOGRAM_PER_OCTAVE) : 0;
  histogram[at < 0 ? 0 : at >= HISTOGRAM_BUCKETS ? HISTOGRAM_BUCKETS - 1 : at]++;
}

/** Sums histograms (arrays or typed arrays, e.g. received over IPC). */
function mergeHistograms(histograms) {
  const sum = latencyHistogram();
  for (const h of histograms) for (let i = 0; i < HISTOGRAM_BUCKETS; i++) sum[i] += h[i] || 0;
  return sum;
}

/** The `q` quantile in ms: the upper edge of the bucket that holds it (NaN when empty). */
function histogramQuantile(histogram, q) {
  let total = 0;
  for (let i = 0; i < histogram.length; i++) total += histogram[i];
  if (total === 0) return NaN;
  const rank = Math.max(1, Math.ceil(q * total));
  let seen = 0;
  for (let i = 0; i < histogram.length; i++) {
    seen += histogram[i];
    if (seen >= rank) return 2 ** ((i + 1) / HISTOGRAM_PER_OCTAVE + HISTOGRAM_MIN_LOG2_US) / 1000;
  }
  return NaN;
}

module.exports = {
  CONTESTANTS,
  SCOPE,
  TENANT,
  ISSUER,
  identity,
  freshCopy,
  loadContestant,
  makeAssertion,
  seededBytes,
  expectedDigest,
  checkResult,
  pool,
  tick,
  sleep,
  settleHeap,
  prng,
  quantile,
  latencyHistogram,
  recordLatency,
  mergeHistograms,
  histogramQuantile,
  threadCpu,
  threadCpuSince,
};
