'use strict';
/**
 * One benchmark run: loads ONE contestant, runs ONE workload against the
 * provider, prints one JSON line `{ contestant, workload, metrics, info }` on
 * stdout and exits.
 *
 *   node --expose-gc bench/worker.js <native|lean|stack|stack-redis> <workload> '<provider json>' '<params json>'
 *
 * Forked by run.js with an IPC channel, through which it asks the provider
 * process for its request counter (`count`) or to zero it (`reset`). Run by
 * hand without IPC, provider counts are reported as null. The multi-instance
 * workload is one of several such children, and is paced by the runner over
 * the same channel (it cannot run by hand).
 */
const crypto = require('node:crypto');
const { performance } = require('node:perf_hooks');
const path = require('node:path');
const { Worker } = require('node:worker_threads');
const {
  SCOPE,
  identity,
  freshCopy,
  loadContestant,
  makeAssertion,
  checkResult,
  pool,
  settleHeap,
  prng,
  quantile,
  seededBytes,
  latencyHistogram,
  recordLatency,
  tick,
  threadCpu,
  threadCpuSince,
} = require('./common.js');

const now = () => performance.now();

// --- provider control, relayed by the runner ---------------------------------
let nextId = 0;
const waiting = new Map();
const commands = [];
let commandWaiter = null;
process.on('message', (message) => {
  if (message && message.idpReply !== undefined) {
    const resolve = waiting.get(message.idpReply);
    waiting.delete(message.idpReply);
    if (resolve) resolve(message.result);
  } else if (message && message.multiGo !== undefined) {
    commands.push(message.multiGo);
    if (commandWaiter) commandWaiter();
  }
});
/** The runner's next command to a multi-instance child; throws unless it is `expected`. */
async function command(expected) {
  while (commands.length === 0) await new Promise((resolve) => (commandWaiter = resolve));
  commandWaiter = null;
  const got = commands.shift();
  if (got !== expected) throw new Error(`multiInstance: expected the runner's ${expected}, got ${got}`);
}
function idp(cmd) {
  if (!process.send) return Promise.resolve(null);
  return new Promise((resolve) => {
    const id = ++nextId;
    waiting.set(id, resolve);
    process.send({ idp: cmd, id });
  });
}
const tokenRequests = async () => {
  const answer = await idp('count');
  return answer ? answer.tokenRequests : null;
};

// --- workloads -----------------------------------------------------------------

/**
 * 1. Sequential hits on one cached key: µs per call. `fresh` passes a new,
 * equal assertion string per call (made before each timed batch), as a server
 * does that parses the token from each request; otherwise the same string
 * object every call (V8 then has its hash cached).
 */
async function hitWith(c, P, fresh) {
  const { user, context } = identity('7d3f6a2e-1b4c-4e8f-9a0d-2c5b8e1f4a7d');
  const token = makeAssertion(user.openidId);
  const first = await c.exchangeOboToken(user, token, SCOPE, true, context);
  checkResult(first, token, SCOPE, 'hit/first', c.returnsExpiresAt);
  const ex = c.exchangeOboToken;
  const batch = 2000;
  const copies = new Array(batch).fill(token);
  const refill = () => {
    if (fresh) for (let i = 0; i < batch; i++) copies[i] = freshCopy(token);
  };
  const timedBatch = async () => {
    refill();
    const t0 = now();
    for (let i = 0; i < batch; i++) await ex(user, copies[i], SCOPE, true, context);
    return now() - t0;
  };
  let warmed = 0;
  while (warmed < P.hitWarmMs) warmed += await timedBatch();
  refill();
  checkResult(await ex(user, copies[0], SCOPE, true, context), token, SCOPE, 'hit/warm', c.returnsExpiresAt);
  await settleHeap();
  await idp('reset');
  let calls = 0;
  let elapsed = 0;
  let cpuUs = 0;
  do {
    refill();
    const cpu0 = process.cpuUsage();
    const t0 = now();
    for (let i = 0; i < batch; i++) await ex(user, copies[i], SCOPE, true, context);
    elapsed += now() - t0;
    const cpu = process.cpuUsage(cpu0);
    cpuUs += cpu.user + cpu.system;
    calls += batch;
  } while (elapsed < P.hitMeasureMs);
  const providerRequests = await tokenRequests();
  if (providerRequests !== null && providerRequests !== 0) {
    throw new Error(`hit: ${providerRequests} provider requests while every call should hit`);
  }
  return {
    metrics: { usPerHit: (elapsed * 1000) / calls },
    info: { calls, elapsedMs: elapsed, cpuUsPerHit: cpuUs / calls, freshAssertion: fresh, providerRequests },
  };
}

const hit = (c, P) => hitWith(c, P, false);
const hitFresh = (c, P) => hitWith(c, P, true);

/** 2. Unique users, 64 in flight: exchanges/s, CPU ms per exchange, ELU. */
async function miss(c, P) {
  const tag = Date.now().toString(36);
  const total = P.missWarm + P.misses;
  const users = Array.from({ length: total }, (_, i) => identity(`miss-${tag}-${i}`));
  const tokens = users.map((u) => makeAssertion(u.user.openidId));
  const results = new Array(total);
  const run = (offset) => async (i) => {
    const { user, context } = users[offset + i];
    results[offset + i] = await c.exchangeOboToken(user, tokens[offset + i], SCOPE, true, context);
  };
  await pool(P.missWarm, P.concurrency, run(0));
  await settleHeap();
  await idp('reset');
  const threads0 = threadCpu();
  const elu0 = performance.eventLoopUtilization();
  const cpu0 = process.cpuUsage();
  const t0 = now();
  await pool(P.misses, P.concurrency, run(P.missWarm));
  const elapsed = now() - t0;
  const cpu = process.cpuUsage(cpu0);
  const elu = performance.eventLoopUtilization(elu0);
  const threads = threadCpuSince(threads0);
  const providerRequests = await tokenRequests();
  for (let i = 0; i < total; i++) checkResult(results[i], tokens[i], SCOPE, `miss/${i}`, c.returnsExpiresAt);
  if (providerRequests !== null && providerRequests !== P.misses) {
    throw new Error(`miss: ${P.misses} exchanges made ${providerRequests} provider requests`);
  }
  return {
    metrics: {
      exchangesPerSec: (P.misses * 1000) / elapsed,
      cpuMsPerExchange: (cpu.user + cpu.system) / 1000 / P.misses,
      elu: elu.utilization,
    },
    info: {
      misses: P.misses,
      elapsedMs: elapsed,
      cpuUserMs: cpu.user / 1000,
      cpuSystemMs: cpu.system / 1000,
      // per exchange, µs: JS main thread, Tokio threads, other threads (GC, libuv)
      mainThreadUs: threads ? (threads.main * 1000) / P.misses : null,
      tokioThreadsUs: threads ? (threads.tokio * 1000) / P.misses : null,
      otherThreadsUs: threads ? (threads.other * 1000) / P.misses : null,
      providerRequests,
    },
  };
}

/**
 * 2b. Native only: CPU per exchange of the miss path as it is (one call into
 * the addon per miss) against the path before issue 19 (a `lookup` call,
 * converting and hashing the assertion, then the exchange), in the same
 * process, in alternating blocks of unique users (ABBA order, so that drift
 * of the machine's load falls on both alike).
 */
async function missCalls(c, P) {
  if (typeof c.exchangeLookingUpFirst !== 'function') throw new Error('missCalls: the contestant has no two-call path to compare');
  const tag = Date.now().toString(36);
  const perBlock = P.missCallsBlock;
  const order = [];
  for (let b = 0; b < P.missCallsBlocks; b++) order.push(...(b % 2 === 0 ? ['one', 'two'] : ['two', 'one']));
  const total = P.missWarm + order.length * perBlock;
  const users = Array.from({ length: total }, (_, i) => identity(`calls-${tag}-${i}`));
  const tokens = users.map((u) => makeAssertion(u.user.openidId));
  const results = new Array(total);
  const paths = { one: c.exchangeOboToken, two: c.exchangeLookingUpFirst };
  const block = (offset, n, ask) =>
    pool(n, P.concurrency, async (i) => {
      const { user, context } = users[offset + i];
      results[offset + i] = await ask(user, tokens[offset + i], SCOPE, true, context);
    });
  const half = P.missWarm >> 1;
  await block(0, half, paths.one);
  await block(half, P.missWarm - half, paths.two);
  await settleHeap();
  await idp('reset');
  const spent = { one: { cpuUs: 0, mainUs: 0, tokioUs: 0, n: 0 }, two: { cpuUs: 0, mainUs: 0, tokioUs: 0, n: 0 } };
  let offset = P.missWarm;
  for (const variant of order) {
    const threads0 = threadCpu();
    const cpu0 = process.cpuUsage();
    await block(offset, perBlock, paths[variant]);
    const cpu = process.cpuUsage(cpu0);
    const threads = threadCpuSince(threads0);
    spent[variant].cpuUs += cpu.user + cpu.system;
    if (threads) {
      spent[variant].mainUs += threads.main * 1000;
      spent[variant].tokioUs += threads.tokio * 1000;
    }
    spent[variant].n += perBlock;
    offset += perBlock;
  }
  const providerRequests = await tokenRequests();
  for (let i = 0; i < total; i++) checkResult(results[i], tokens[i], SCOPE, `missCalls/${i}`, c.returnsExpiresAt);
  const measured = total - P.missWarm;
  if (providerRequests !== null && providerRequests !== measured) {
    throw new Error(`missCalls: ${measured} exchanges made ${providerRequests} provider requests`);
  }
  const perExchange = (variant, field) => spent[variant][field] / spent[variant].n;
  return {
    metrics: {
      cpuUsOneCall: perExchange('one', 'cpuUs'),
      cpuUsTwoCalls: perExchange('two', 'cpuUs'),
      cpuUsSaved: perExchange('two', 'cpuUs') - perExchange('one', 'cpuUs'),
    },
    info: {
      exchangesEach: spent.one.n,
      blocks: order,
      mainThreadUsOneCall: perExchange('one', 'mainUs'),
      mainThreadUsTwoCalls: perExchange('two', 'mainUs'),
      tokioThreadsUsOneCall: perExchange('one', 'tokioUs'),
      tokioThreadsUsTwoCalls: perExchange('two', 'tokioUs'),
      providerRequests,
    },
  };
}

/** 3. 10 000 concurrent calls on one cold key: provider requests, time to settle all. */
async function fanout(c, P) {
  const tag = Date.now().toString(36);
  // Warm the code paths and the connection on keys of their own.
  for (let w = 0; w < 2; w++) {
    const { user, context } = identity(`fan-warm-${tag}-${w}`);
    const token = makeAssertion(user.openidId);
    await Promise.all(Array.from({ length: 1000 }, () => c.exchangeOboToken(user, token, SCOPE, true, context)));
  }
  const settleMs = [];
  const requests = [];
  const resultObjects = [];
  for (let k = 0; k < P.fanoutIterations; k++) {
    const { user, context } = identity(`fan-${tag}-${k}`);
    const token = makeAssertion(user.openidId);
    const calls = new Array(P.fanoutCalls);
    await settleHeap();
    await idp('reset');
    const t0 = now();
    for (let i = 0; i < P.fanoutCalls; i++) calls[i] = c.exchangeOboToken(user, token, SCOPE, true, context);
    const results = await Promise.all(calls);
    settleMs.push(now() - t0);
    requests.push(await tokenRequests());
    checkResult(results[0], token, SCOPE, 'fanout', c.returnsExpiresAt);
    for (const result of results) {
      if (result.access_token !== results[0].access_token) throw new Error('fanout: callers got different tokens');
    }
    resultObjects.push(new Set(results).size);
  }
  // A contestant that promises each caller its own result (callers may change theirs) must keep it.
  if (c.ownResults && resultObjects.some((n) => n !== P.fanoutCalls)) {
    throw new Error(`fanout: ${P.fanoutCalls} callers shared result objects (${resultObjects.join(', ')} distinct)`);
  }
  const sorted = [...settleMs].sort((a, b) => a - b);
  return {
    metrics: {
      settleMs: quantile(sorted, 0.5),
      providerRequests: requests.includes(null) ? null : Math.max(...requests),
      resultObjects: Math.min(...resultObjects),
    },
    info: {
      calls: P.fanoutCalls,
      iterations: P.fanoutIterations,
      settleMsEach: settleMs,
      providerRequestsEach: requests,
      resultObjectsEach: resultObjects,
    },
  };
}

/**
 * 4. Memory per cached entry, tokens of `P.tokenLength` characters. Users
 * arrive in groups of 256: each is served by a miss (64 in flight), then
 * read `P.memoryReads` more times while still recent, as a conversation's
 * tool calls re-read its token. Before each reading the most recent
 * `P.memoryHot` users are read twice more (the active users of the moment),
 * so native's per-thread memo holds its working set at every reading instead
 * of whatever a sweep left in it. Readings (after forced collections) at the
 * baseline (after a warm-up) and at every count of `P.memoryCounts`: bytes
 * per entry from the baseline to each count (everything a deployment of that
 * many users holds, the memo included), and the slope between the last two
 * counts (what one more entry costs once the memo is full). The identities
 * and assertions of all users are made before the baseline and held
 * throughout, as a server's sessions hold them; with
 * `P.memoryFreshAssertions` every call passes a fresh copy of the assertion
 * (a server parses it from each request), so whatever a cache keeps of it
 * beyond the call shows in its bytes per entry.
 */
async function memory(c, P) {
  const tag = Date.now().toString(36);
  const counts = [...P.memoryCounts].sort((a, b) => a - b);
  const total = counts[counts.length - 1];
  const warm = 512;
  const group = 256;
  const users = Array.from({ length: warm + total }, (_, i) => identity(`mem-${tag}-${i}`));
  const tokens = users.map((u) => makeAssertion(u.user.openidId));
  const samples = new Map();
  const assertion = P.memoryFreshAssertions ? (i) => freshCopy(tokens[i]) : (i) => tokens[i];
  const call = async (i) => {
    const { user, context } = users[i];
    const result = await c.exchangeOboToken(user, assertion(i), SCOPE, true, context);
    // Keep a small sample for the checks, nothing that grows with the count.
    if (i % 997 === 0) samples.set(i, result);
  };
  const pass = (from, to) => pool(to - from, P.concurrency, (i) => call(from + i));
  const fill = async (from, to) => {
    for (let start = from; start < to; start += group) {
      const end = Math.min(to, start + group);
      for (let r = 0; r <= P.memoryReads; r++) await pass(start, end);
    }
    const hotFrom = Math.max(0, to - P.memoryHot);
    for (let r = 0; r < 2; r++) await pass(hotFrom, to);
  };
  const reading = async () => {
    await settleHeap();
    const m = process.memoryUsage();
    return { rss: m.rss, heapUsed: m.heapUsed, heapTotal: m.heapTotal, external: m.external, entries: c.cacheSize() };
  };
  await fill(0, warm); // connections, code paths, pools
  const readings = [await reading()];
  let made = warm;
  for (const count of counts) {
    await fill(made, warm + count);
    made = warm + count;
    readings.push(await reading());
  }
  for (const [i, result] of samples) checkResult(result, tokens[i], SCOPE, `memory/${i}`, c.returnsExpiresAt);
  const grown = readings[readings.length - 1].entries - readings[0].entries;
  if (grown !== total) throw new Error(`memory: the cache grew by ${grown} entries, not ${total}`);
  for (const s of samples.values()) {
    if (s.access_token.length < P.tokenLength - 2) {
      throw new Error(`memory: tokens are ${s.access_token.length} characters, not ${P.tokenLength}`);
    }
  }
  const per = (field, a, b) => (readings[b][field] - readings[a][field]) / (readings[b].entries - readings[a].entries);
  const offHeap = (r) => r.rss - r.heapTotal;
  const offHeapPer = (a, b) => (offHeap(readings[b]) - offHeap(readings[a])) / (readings[b].entries - readings[a].entries);
  const last = readings.length - 1;
  const first = Math.max(1, last - 1);
  const atEveryCount = (name, perEntry) =>
    Object.fromEntries(counts.map((count, k) => [`${name}${count}`, perEntry(0, k + 1)]));
  return {
    metrics: {
      ...atEveryCount('rssPerEntry', (a, b) => per('rss', a, b)),
      rssSlope: per('rss', first, last),
      heapSlope: per('heapUsed', first, last),
      offHeapSlope: offHeapPer(first, last),
    },
    info: {
      tokenLength: P.tokenLength,
      tokenLengthSeen: samples.values().next().value.access_token.length,
      counts,
      reads: P.memoryReads,
      hot: P.memoryHot,
      freshAssertions: P.memoryFreshAssertions,
      ...atEveryCount('heapPerEntry', (a, b) => per('heapUsed', a, b)),
      ...atEveryCount('offHeapPerEntry', offHeapPer),
      ...atEveryCount('externalPerEntry', (a, b) => per('external', a, b)),
      externalSlope: per('external', first, last),
      heapTotalSlope: per('heapTotal', first, last),
      readings,
      mallocArenaMax: process.env.MALLOC_ARENA_MAX ?? null,
    },
  };
}

/** 5. 95 % hits over 1 000 users, 5 % misses, 64 in flight: calls/s and p99. */
async function mixed(c, P) {
  const tag = Date.now().toString(36);
  const hot = Array.from({ length: P.mixedUsers }, (_, i) => identity(`mix-${tag}-${i}`));
  const hotTokens = hot.map((u) => makeAssertion(u.user.openidId));
  const random = prng(20260101);
  const kind = new Uint8Array(P.mixedCalls);
  const index = new Int32Array(P.mixedCalls);
  let missCount = 0;
  for (let i = 0; i < P.mixedCalls; i++) {
    if (random() < P.mixedMissRate) {
      kind[i] = 1;
      index[i] = missCount++;
    } else {
      index[i] = Math.floor(random() * P.mixedUsers);
    }
  }
  const cold = Array.from({ length: missCount }, (_, i) => identity(`mix-miss-${tag}-${i}`));
  const coldTokens = cold.map((u) => makeAssertion(u.user.openidId));
  const ask = (who, token) => c.exchangeOboToken(who.user, token, SCOPE, true, who.context);
  await pool(hot.length, P.concurrency, async (i) => {
    checkResult(await ask(hot[i], hotTokens[i]), hotTokens[i], SCOPE, 'mixed/fill', c.returnsExpiresAt);
  });
  // A short warm pass over the hot set, so JIT state matches the measured phase.
  for (let r = 0; r < 3; r++) {
    await pool(hot.length, P.concurrency, (i) => ask(hot[i], hotTokens[i]));
  }
  await settleHeap();
  await idp('reset');
  const latency = new Float64Array(P.mixedCalls);
  const elu0 = performance.eventLoopUtilization();
  const cpu0 = process.cpuUsage();
  const t0 = now();
  await pool(P.mixedCalls, P.concurrency, async (i) => {
    const start = now();
    if (kind[i] === 1) await ask(cold[index[i]], coldTokens[index[i]]);
    else await ask(hot[index[i]], hotTokens[index[i]]);
    latency[i] = now() - start;
  });
  const elapsed = now() - t0;
  const cpu = process.cpuUsage(cpu0);
  const elu = performance.eventLoopUtilization(elu0);
  const providerRequests = await tokenRequests();
  if (providerRequests !== null && providerRequests !== missCount) {
    throw new Error(`mixed: ${missCount} misses made ${providerRequests} provider requests`);
  }
  latency.sort();
  return {
    metrics: {
      callsPerSec: (P.mixedCalls * 1000) / elapsed,
      p99Ms: quantile(latency, 0.99),
    },
    info: {
      calls: P.mixedCalls,
      misses: missCount,
      p50Ms: quantile(latency, 0.5),
      p999Ms: quantile(latency, 0.999),
      elapsedMs: elapsed,
      cpuMsTotal: (cpu.user + cpu.system) / 1000,
      elu: elu.utilization,
      providerRequests,
    },
  };
}

/** 6. 4 worker threads on one hot key set: cold-fill provider requests, hot calls/s. */
async function workers(c, P) {
  const threads = [];
  const messages = [];
  // One assertion per hot user, the same in every thread (a user has one token).
  const users = Array.from({ length: P.hotKeys }, (_, i) => `hot-${P.tag}-${i}`);
  const tokens = users.map((id) => makeAssertion(id));
  const waiters = [];
  const each = (type) =>
    new Promise((resolve, reject) => {
      waiters.push({ type, resolve, reject, got: [] });
      drain();
    });
  function drain() {
    while (waiters.length && messages.length) {
      const waiter = waiters[0];
      const message = messages.shift();
      if (message.type === 'error') {
        waiter.reject(new Error(`worker thread: ${message.message}`));
        waiters.shift();
        continue;
      }
      if (message.type !== waiter.type) {
        waiter.reject(new Error(`worker thread: expected ${waiter.type}, got ${message.type}`));
        waiters.shift();
        continue;
      }
      waiter.got.push(message);
      if (waiter.got.length === threads.length) {
        waiters.shift();
        waiter.resolve(waiter.got);
      }
    }
  }
  for (let t = 0; t < P.workerThreads; t++) {
    const worker = new Worker(path.join(__dirname, 'thread.js'), {
      workerData: {
        contestant: c.name,
        provider: P.provider,
        thread: t,
        users,
        tokens,
        calls: P.workerCalls,
        warmCalls: P.workerWarmCalls,
        lanes: P.workerLanes,
        tag: P.tag,
      },
    });
    worker.on('message', (message) => {
      messages.push(message);
      drain();
    });
    worker.on('error', (err) => {
      messages.push({ type: 'error', message: err && err.stack ? err.stack : String(err) });
      drain();
    });
    threads.push(worker);
  }
  await each('ready');
  await idp('reset');
  threads.forEach((w) => w.postMessage('fill'));
  const filled = await each('filled');
  const fillRequests = await tokenRequests();
  threads.forEach((w) => w.postMessage('warm'));
  await each('warmed');
  await idp('reset');
  const elu0 = performance.eventLoopUtilization();
  const cpu0 = process.cpuUsage();
  const t0 = now();
  threads.forEach((w) => w.postMessage('go'));
  const done = await each('done');
  const elapsed = now() - t0;
  const cpu = process.cpuUsage(cpu0);
  const hotRequests = await tokenRequests();
  const calls = done.reduce((sum, m) => sum + m.calls, 0);
  await Promise.all(threads.map((w) => w.terminate()));
  return {
    metrics: { callsPerSec: (calls * 1000) / elapsed, providerRequests: fillRequests },
    info: {
      threads: P.workerThreads,
      hotKeys: P.hotKeys,
      calls,
      elapsedMs: elapsed,
      cpuUsPerCall: (cpu.user + cpu.system) / calls,
      fillMs: Math.max(...filled.map((m) => m.elapsedMs)),
      providerRequestsWhileHot: hotRequests,
      mainThreadElu: performance.eventLoopUtilization(elu0).utilization,
    },
  };
}

/**
 * 7. One of `P.multiInstances` instances (processes) sharing one Redis, each
 * serving the same `P.multiUsers` users: the runner starts them together and
 * paces them through the phases, reads the provider's counter between phases
 * and judges across instances. This child reports each phase to the runner:
 * - `cold`: every user once, in the same order in every instance and at the
 *   same moment (a cold start behind a load balancer: all instances see the
 *   same users' first calls), `P.concurrency` in flight; latency of each
 *   call; every result checked; a digest of the tokens, so the runner can
 *   tell whether every instance holds the same token per user;
 * - `steady`: passes over the users, `P.concurrency` in flight, for at least
 *   `P.multiSteadyMs`, all instances at once: calls, time, latencies;
 * - `hit`: the cost of one hit, with the other instances idle: sequential
 *   calls over the users after `P.multiHitWarmMs` of warm-up, for at least
 *   `P.multiHitMs` each way: first with a fresh copy of each assertion per
 *   call (as a server parses it from each request; copies made outside the
 *   timing), then with the same string objects every call (V8 has their
 *   hashes cached), as workloads 1b and 1a do for one user.
 * Assertions come from `seededBytes(multiTag/i)` so that every instance
 * passes the same token for a user.
 */
async function multiInstance(c, P) {
  if (!process.send) throw new Error('multiInstance runs under bench/run.js only (it paces the instances)');
  const n = P.multiUsers;
  const users = Array.from({ length: n }, (_, i) => identity(`multi-${P.multiTag}-${i}`));
  const tokens = users.map((u, i) =>
    makeAssertion(u.user.openidId, { randomBytes: seededBytes(`${P.multiTag}/${i}`), issuedAt: P.multiIssuedAt }),
  );
  const ex = c.exchangeOboToken;
  const report = (phase, data) => process.send({ multi: phase, instance: P.multiInstance, ...data });
  await settleHeap();
  report('ready', {});

  await command('cold');
  const results = new Array(n);
  let histogram = latencyHistogram();
  let t0 = now();
  await pool(n, P.concurrency, async (i) => {
    const start = now();
    results[i] = await ex(users[i].user, tokens[i], SCOPE, true, users[i].context);
    recordLatency(histogram, now() - start);
  });
  const coldMs = now() - t0;
  for (let i = 0; i < n; i++) checkResult(results[i], tokens[i], SCOPE, `multiInstance/cold/${i}`, c.returnsExpiresAt);
  const digest = crypto.createHash('sha256');
  for (const r of results) digest.update(`${r.access_token}\n`);
  report('cold', { elapsedMs: coldMs, histogram: Array.from(histogram), tokenDigest: digest.digest('hex') });

  await command('steady');
  histogram = latencyHistogram();
  let calls = 0;
  let elapsed = 0;
  const cpu0 = process.cpuUsage();
  t0 = now();
  do {
    await pool(n, P.concurrency, async (i) => {
      const start = now();
      results[i] = await ex(users[i].user, tokens[i], SCOPE, true, users[i].context);
      recordLatency(histogram, now() - start);
    });
    calls += n;
    elapsed = now() - t0;
  } while (elapsed < P.multiSteadyMs);
  const steadyCpu = process.cpuUsage(cpu0);
  for (let i = 0; i < n; i++) checkResult(results[i], tokens[i], SCOPE, `multiInstance/steady/${i}`, c.returnsExpiresAt);
  report('steady', {
    calls,
    elapsedMs: elapsed,
    histogram: Array.from(histogram),
    cpuUsPerCall: (steadyCpu.user + steadyCpu.system) / calls,
  });

  await command('hit');
  const copies = new Array(n);
  const batch = async (fresh) => {
    for (let i = 0; i < n; i++) copies[i] = fresh ? freshCopy(tokens[i]) : tokens[i];
    const start = now();
    for (let i = 0; i < n; i++) await ex(users[i].user, copies[i], SCOPE, true, users[i].context);
    return now() - start;
  };
  const measureHits = async (fresh) => {
    for (let warmed = 0; warmed < P.multiHitWarmMs; ) warmed += await batch(fresh);
    await settleHeap();
    let hits = 0;
    let elapsedMs = 0;
    let cpuUs = 0;
    do {
      const cpu = process.cpuUsage();
      elapsedMs += await batch(fresh);
      const used = process.cpuUsage(cpu);
      cpuUs += used.user + used.system;
      hits += n;
    } while (elapsedMs < P.multiHitMs);
    const last = n - 1;
    const result = await ex(users[last].user, copies[last], SCOPE, true, users[last].context);
    checkResult(result, tokens[last], SCOPE, 'multiInstance/hit', c.returnsExpiresAt);
    return { usPerHit: (elapsedMs * 1000) / hits, cpuUsPerHit: cpuUs / hits, hits };
  };
  const fresh = await measureHits(true);
  const same = await measureHits(false);
  report('hit', { ...fresh, usPerHitSame: same.usPerHit, cpuUsPerHitSame: same.cpuUsPerHit });

  await command('finish');
  return {
    metrics: {},
    info: { instance: P.multiInstance, stats: typeof c.stats === 'function' ? c.stats() : null },
  };
}

const WORKLOADS = { hit, hitFresh, miss, missCalls, fanout, memory, mixed, workers, multiInstance };

async function main() {
  const [name, workload, providerJson, paramsJson] = process.argv.slice(2);
  if (!WORKLOADS[workload]) throw new Error(`unknown workload ${workload} (${Object.keys(WORKLOADS).join(', ')})`);
  const provider = JSON.parse(providerJson);
  const params = { concurrency: 64, ...JSON.parse(paramsJson || '{}'), provider, tag: Date.now().toString(36) };
  const contestant = loadContestant(name);
  const tSetup = now();
  if (workload !== 'workers') await contestant.setup(provider, params);
  const setupMs = now() - tSetup;
  await tick();
  const result = await WORKLOADS[workload](contestant, params);
  result.info = {
    ...result.info,
    setupMs,
    rssEndMB: process.memoryUsage().rss / 2 ** 20,
    identityAware: contestant.identityAware !== false,
  };
  const line = JSON.stringify({ contestant: name, workload, ...result });
  process.stdout.write(`${line}\n`, () => process.exit(0));
}

main().catch((err) => {
  process.stderr.write(`${err && err.stack ? err.stack : err}\n`);
  process.exit(1);
});
