'use strict';
/**
 * One benchmark run: loads ONE contestant, runs ONE workload against the
 * provider, prints one JSON line `{ contestant, workload, metrics, info }` on
 * stdout and exits.
 *
 *   node --expose-gc bench/worker.js <native|lean|stack> <workload> '<provider json>' '<params json>'
 *
 * Forked by run.js with an IPC channel, through which it asks the provider
 * process for its request counter (`count`) or to zero it (`reset`). Run by
 * hand without IPC, provider counts are reported as null.
 */
const { performance } = require('node:perf_hooks');
const path = require('node:path');
const { Worker } = require('node:worker_threads');
const {
  SCOPE,
  loadContestant,
  makeAssertion,
  checkResult,
  pool,
  settleHeap,
  prng,
  quantile,
  tick,
  threadCpu,
  threadCpuSince,
} = require('./common.js');

const now = () => performance.now();

// --- provider control, relayed by the runner ---------------------------------
let nextId = 0;
const waiting = new Map();
process.on('message', (message) => {
  if (message && message.idpReply !== undefined) {
    const resolve = waiting.get(message.idpReply);
    waiting.delete(message.idpReply);
    if (resolve) resolve(message.result);
  }
});
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

/** 1. Sequential hits on one cached key: µs per call. */
async function hit(c, P) {
  const user = { openidId: '7d3f6a2e-1b4c-4e8f-9a0d-2c5b8e1f4a7d', email: 'jane.doe@contoso.example' };
  const token = makeAssertion(user.openidId);
  const first = await c.exchangeOboToken(user, token, SCOPE);
  checkResult(first, token, SCOPE, 'hit/first');
  const ex = c.exchangeOboToken;
  const batch = 2000;
  let t0 = now();
  while (now() - t0 < P.hitWarmMs) {
    for (let i = 0; i < batch; i++) await ex(user, token, SCOPE);
  }
  const last = await ex(user, token, SCOPE);
  checkResult(last, token, SCOPE, 'hit/warm');
  await settleHeap();
  await idp('reset');
  let calls = 0;
  let elapsed = 0;
  const cpu0 = process.cpuUsage();
  t0 = now();
  do {
    for (let i = 0; i < batch; i++) await ex(user, token, SCOPE);
    calls += batch;
    elapsed = now() - t0;
  } while (elapsed < P.hitMeasureMs);
  const cpu = process.cpuUsage(cpu0);
  return {
    metrics: { usPerHit: (elapsed * 1000) / calls },
    info: { calls, elapsedMs: elapsed, cpuUsPerHit: (cpu.user + cpu.system) / calls, providerRequests: await tokenRequests() },
  };
}

/** 2. Unique users, 64 in flight: exchanges/s, CPU ms per exchange, ELU. */
async function miss(c, P) {
  const tag = Date.now().toString(36);
  const total = P.missWarm + P.misses;
  const users = Array.from({ length: total }, (_, i) => ({ openidId: `miss-${tag}-${i}` }));
  const tokens = users.map((u) => makeAssertion(u.openidId));
  const results = new Array(total);
  const run = (offset) => async (i) => {
    results[offset + i] = await c.exchangeOboToken(users[offset + i], tokens[offset + i], SCOPE);
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
  for (let i = 0; i < total; i++) checkResult(results[i], tokens[i], SCOPE, `miss/${i}`);
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

/** 3. 10 000 concurrent calls on one cold key: provider requests, time to settle all. */
async function fanout(c, P) {
  const tag = Date.now().toString(36);
  // Warm the code paths and the connection on keys of their own.
  for (let w = 0; w < 2; w++) {
    const user = { openidId: `fan-warm-${tag}-${w}` };
    const token = makeAssertion(user.openidId);
    await Promise.all(Array.from({ length: 1000 }, () => c.exchangeOboToken(user, token, SCOPE)));
  }
  const settleMs = [];
  const requests = [];
  for (let k = 0; k < P.fanoutIterations; k++) {
    const user = { openidId: `fan-${tag}-${k}` };
    const token = makeAssertion(user.openidId);
    const calls = new Array(P.fanoutCalls);
    await settleHeap();
    await idp('reset');
    const t0 = now();
    for (let i = 0; i < P.fanoutCalls; i++) calls[i] = c.exchangeOboToken(user, token, SCOPE);
    const results = await Promise.all(calls);
    settleMs.push(now() - t0);
    requests.push(await tokenRequests());
    checkResult(results[0], token, SCOPE, 'fanout');
    for (const result of results) {
      if (result.access_token !== results[0].access_token) throw new Error('fanout: callers got different tokens');
    }
  }
  const sorted = [...settleMs].sort((a, b) => a - b);
  return {
    metrics: {
      settleMs: quantile(sorted, 0.5),
      providerRequests: requests.includes(null) ? null : Math.max(...requests),
    },
    info: { calls: P.fanoutCalls, iterations: P.fanoutIterations, settleMsEach: settleMs, providerRequestsEach: requests },
  };
}

/** 4. RSS growth per cached entry over N entries made by misses. */
async function memory(c, P) {
  const tag = Date.now().toString(36);
  const n = P.memoryEntries;
  const warm = 512;
  // Everything the measurement needs is allocated before the baseline.
  const users = Array.from({ length: warm + n }, (_, i) => ({ openidId: `mem-${tag}-${i}` }));
  const tokens = users.map((u) => makeAssertion(u.openidId));
  const samples = new Array(warm + n);
  const run = (offset) => async (i) => {
    const result = await c.exchangeOboToken(users[offset + i], tokens[offset + i], SCOPE);
    // Keep a small sample for the checks, nothing that grows with n.
    if ((offset + i) % 997 === 0) samples[offset + i] = result;
  };
  await pool(warm, P.concurrency, run(0)); // connections, code paths, pools
  const size0 = c.cacheSize ? c.cacheSize() : null;
  await settleHeap();
  const m0 = process.memoryUsage();
  await pool(n, P.concurrency, run(warm));
  await settleHeap();
  const m1 = process.memoryUsage();
  const size1 = c.cacheSize ? c.cacheSize() : null;
  samples.forEach((result, i) => checkResult(result, tokens[i], SCOPE, `memory/${i}`));
  if (size1 !== null && size1 - size0 !== n) throw new Error(`memory: cache grew by ${size1 - size0}, not ${n}`);
  return {
    metrics: { rssBytesPerEntry: (m1.rss - m0.rss) / n },
    info: {
      entries: n,
      rssBeforeMB: m0.rss / 2 ** 20,
      rssAfterMB: m1.rss / 2 ** 20,
      heapBytesPerEntry: (m1.heapUsed - m0.heapUsed) / n,
      externalBytesPerEntry: (m1.external - m0.external) / n,
      cacheEntries: size1,
    },
  };
}

/** 5. 95 % hits over 1 000 users, 5 % misses, 64 in flight: calls/s and p99. */
async function mixed(c, P) {
  const tag = Date.now().toString(36);
  const hot = Array.from({ length: P.mixedUsers }, (_, i) => ({ openidId: `mix-${tag}-${i}` }));
  const hotTokens = hot.map((u) => makeAssertion(u.openidId));
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
  const cold = Array.from({ length: missCount }, (_, i) => ({ openidId: `mix-miss-${tag}-${i}` }));
  const coldTokens = cold.map((u) => makeAssertion(u.openidId));
  await pool(hot.length, P.concurrency, async (i) => {
    checkResult(await c.exchangeOboToken(hot[i], hotTokens[i], SCOPE), hotTokens[i], SCOPE, 'mixed/fill');
  });
  // A short warm pass over the hot set, so JIT state matches the measured phase.
  for (let r = 0; r < 3; r++) {
    await pool(hot.length, P.concurrency, (i) => c.exchangeOboToken(hot[i], hotTokens[i], SCOPE));
  }
  await settleHeap();
  await idp('reset');
  const latency = new Float64Array(P.mixedCalls);
  const elu0 = performance.eventLoopUtilization();
  const cpu0 = process.cpuUsage();
  const t0 = now();
  await pool(P.mixedCalls, P.concurrency, async (i) => {
    const start = now();
    if (kind[i] === 1) await c.exchangeOboToken(cold[index[i]], coldTokens[index[i]], SCOPE);
    else await c.exchangeOboToken(hot[index[i]], hotTokens[index[i]], SCOPE);
    latency[i] = now() - start;
  });
  const elapsed = now() - t0;
  const cpu = process.cpuUsage(cpu0);
  const elu = performance.eventLoopUtilization(elu0);
  const providerRequests = await tokenRequests();
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

const WORKLOADS = { hit, miss, fanout, memory, mixed, workers };

async function main() {
  const [name, workload, providerJson, paramsJson] = process.argv.slice(2);
  if (!WORKLOADS[workload]) throw new Error(`unknown workload ${workload} (${Object.keys(WORKLOADS).join(', ')})`);
  const provider = JSON.parse(providerJson);
  const params = { concurrency: 64, ...JSON.parse(paramsJson || '{}'), provider, tag: Date.now().toString(36) };
  const contestant = loadContestant(name);
  const tSetup = now();
  if (workload !== 'workers') await contestant.setup(provider);
  const setupMs = now() - tSetup;
  await tick();
  const result = await WORKLOADS[workload](contestant, params);
  result.info = { ...result.info, setupMs, rssEndMB: process.memoryUsage().rss / 2 ** 20 };
  const line = JSON.stringify({ contestant: name, workload, ...result });
  process.stdout.write(`${line}\n`, () => process.exit(0));
}

main().catch((err) => {
  process.stderr.write(`${err && err.stack ? err.stack : err}\n`);
  process.exit(1);
});
