'use strict';
/**
 * `npm run bench`: native vs lean JS vs the stack baseline (issues 4, 8, 10, 12).
 *
 * Starts the mock identity provider in a process of its own (bench/idp.js),
 * then for every workload runs each contestant in a fresh child process
 * (bench/worker.js), alternating native, lean, stack, native, … for
 * BENCH_ROUNDS rounds; reports medians and min–max, ratios and targets on
 * stdout and in bench/results.md, with the commit and the addon it measured
 * and every attempt, failed ones included. The multi-instance workload runs
 * several children of one contestant at once on a private `redis-server`
 * this runner starts on a free port (never the shared 6379), flushed before
 * every run; without redis-server it is skipped, and results.md says so.
 *
 * Environment:
 *   BENCH_ROUNDS=n       rounds per workload (default 5, quick 3; verdicts need ≥ 3 to show a spread)
 *   BENCH_QUICK=1        smaller workloads; results go to bench/.out/results-quick.md
 *   (BENCH_ONLY, BENCH_CONTESTANTS or BENCH_PARAMS set: results go to bench/.out/results-partial.md)
 *   BENCH_ONLY=hit,miss  a subset of workloads, by id or prefix (hit, hitFresh, miss, missCalls, fanout,
 *                        memory, memory1200, memory2500, mixed, workers, multiInstance)
 *   BENCH_CONTESTANTS=native,lean  a subset of contestants (native, lean, stack, stack-redis;
 *                        investigations: ratios need every contestant of a workload)
 *   BENCH_PARAMS='{"memoryReads":0}'  JSON merged over the workload parameters (investigations)
 *   BENCH_RESULTS=path   where to write the markdown (default as above)
 *   BENCH_CPU_PROF=1     children run with --cpu-prof into bench/.out/prof/
 *   BENCH_RENDER=raw.json  no runs: render a raw results file again (same BENCH_QUICK/BENCH_PARAMS as its run)
 *   BENCH_BUILD=0        do not run `npm run build` first; the bench then refuses an addon that is not
 *                        the release build of the Rust sources in the tree (bench/provenance.js)
 * Children inherit the environment, so e.g. `MALLOC_ARENA_MAX=1 npm run bench`
 * applies to every contestant; the results record the MALLOC_* variables.
 */
const { fork, execFileSync, spawnSync } = require('node:child_process');
const crypto = require('node:crypto');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { mergeHistograms, histogramQuantile } = require('./common.js');
const provenance = require('./provenance.js');
// The jest suite's private redis-server (free port, never 6379, no persistence).
const { startRedis, redisCli } = require('../__test__/support/redis.js');

const QUICK = /^(1|true|yes)$/i.test(process.env.BENCH_QUICK || '');
const ROUNDS = Math.max(1, Number(process.env.BENCH_ROUNDS) || (QUICK ? 3 : 5));
const OUT_DIR = path.join(__dirname, '.out');
/** Only a full run of every workload and contestant, with the default parameters, replaces bench/results.md. */
const PARTIAL = ['BENCH_ONLY', 'BENCH_CONTESTANTS', 'BENCH_PARAMS'].some((name) => process.env[name]);
const RESULTS =
  process.env.BENCH_RESULTS ||
  (QUICK
    ? path.join(OUT_DIR, 'results-quick.md')
    : PARTIAL
      ? path.join(OUT_DIR, 'results-partial.md')
      : path.join(__dirname, 'results.md'));
const CPU_PROF = /^(1|true|yes)$/i.test(process.env.BENCH_CPU_PROF || '');
/** A stack memory run makes 100 000 exchanges at ~2 000/s on a quiet machine. */
const CHILD_TIMEOUT_MS = 900_000;
/** The table's columns; a workload may put another contestant in the stack column (its `baseline`). */
const COLUMNS = ['native', 'lean', 'stack'];
const CONTESTANTS = [...COLUMNS, 'stack-redis'];

const DEFAULT_PARAMS = QUICK
  ? {
      hitWarmMs: 100,
      hitMeasureMs: 300,
      missWarm: 256,
      misses: 1000,
      missCallsBlock: 500,
      missCallsBlocks: 2,
      fanoutCalls: 10_000,
      fanoutIterations: 3,
      memoryCounts: [1_000, 5_000, 20_000],
      memoryTokenLengths: [1200, 2500],
      memoryReads: 3,
      memoryHot: 8_000,
      memoryFreshAssertions: false,
      mixedUsers: 1_000,
      mixedCalls: 20_000,
      mixedMissRate: 0.05,
      workerThreads: 4,
      hotKeys: 256,
      workerCalls: 50_000,
      workerWarmCalls: 25_000,
      workerLanes: 8,
      multiInstances: 4,
      multiUsers: 1_000,
      multiSteadyMs: 500,
      multiHitWarmMs: 100,
      multiHitMs: 200,
      concurrency: 64,
    }
  : {
      hitWarmMs: 300,
      hitMeasureMs: 1_000,
      missWarm: 512,
      misses: 4_000,
      missCallsBlock: 1_000,
      missCallsBlocks: 4,
      fanoutCalls: 10_000,
      fanoutIterations: 5,
      memoryCounts: [1_000, 5_000, 20_000, 100_000],
      memoryTokenLengths: [1200, 2500],
      memoryReads: 3,
      memoryHot: 8_000,
      memoryFreshAssertions: false,
      mixedUsers: 1_000,
      mixedCalls: 100_000,
      mixedMissRate: 0.05,
      workerThreads: 4,
      hotKeys: 256,
      workerCalls: 400_000,
      workerWarmCalls: 50_000,
      workerLanes: 8,
      multiInstances: 4,
      multiUsers: 1_000,
      multiSteadyMs: 2_000,
      multiHitWarmMs: 200,
      multiHitMs: 500,
      concurrency: 64,
    };

const PARAMS = { ...DEFAULT_PARAMS, ...JSON.parse(process.env.BENCH_PARAMS || '{}') };
const ONLY_CONTESTANTS = (process.env.BENCH_CONTESTANTS || '')
  .split(',')
  .map((s) => s.trim())
  .filter(Boolean);
for (const name of ONLY_CONTESTANTS) {
  if (!CONTESTANTS.includes(name)) throw new Error(`BENCH_CONTESTANTS: unknown contestant ${name} (${CONTESTANTS.join(', ')})`);
}

/** The slope is taken between the last two counts of the memory workload. */
function slopeSpan() {
  const counts = [...PARAMS.memoryCounts].sort((a, b) => a - b);
  const from = counts[Math.max(0, counts.length - 2)];
  return `${from.toLocaleString('en-US')} → ${counts[counts.length - 1].toLocaleString('en-US')}`;
}

const lower = 'lower';
const higher = 'higher';
const hitMetrics = [{ key: 'usPerHit', label: 'µs per call', better: lower, digits: 3 }];
/**
 * What each workload runs and reports. `child` names the function in
 * worker.js (default: `id`), `params` are added to PARAMS for its children,
 * `idp` is the provider state every run starts from, `contestants` who takes
 * part (default the three columns), `baseline` who fills the stack column
 * (default stack), `redis` whether its runs need the private Redis (they
 * then run as several instances, see runMultiInstance); `better` orients the
 * ratios (> 1 = native better).
 */
const WORKLOADS = [
  {
    id: 'hit',
    title: '1a. cache hit (sequential, same user, 1.5 KB assertion, same string object every call)',
    metrics: hitMetrics,
  },
  {
    id: 'hitFresh',
    title: '1b. cache hit (sequential, same user, 1.5 KB assertion, a fresh equal string per call)',
    metrics: hitMetrics,
  },
  {
    id: 'miss',
    title: `2. miss path (unique users, ${PARAMS.concurrency} in flight, ${PARAMS.misses} exchanges)`,
    metrics: [
      { key: 'exchangesPerSec', label: 'exchanges/s', better: higher, digits: 0 },
      { key: 'cpuMsPerExchange', label: 'CPU ms per exchange', better: lower, digits: 3 },
      { key: 'elu', label: 'event-loop utilisation', better: lower, digits: 2 },
    ],
  },
  {
    id: 'missCalls',
    title:
      `2b. miss path, native only: one call into the addon per miss (now) against lookup + exchange (before issue 19), ` +
      `same process, ${PARAMS.missCallsBlocks * 2} alternating blocks of ${PARAMS.missCallsBlock} exchanges`,
    contestants: ['native'],
    metrics: [
      { key: 'cpuUsOneCall', label: 'CPU µs per exchange, one call (now)', better: null, digits: 1 },
      { key: 'cpuUsTwoCalls', label: 'CPU µs per exchange, lookup + exchange (before)', better: null, digits: 1 },
      { key: 'cpuUsSaved', label: 'CPU µs saved per exchange (before − now, per run)', better: null, digits: 1 },
    ],
  },
  {
    id: 'fanout',
    title: `3. fan-out (${PARAMS.fanoutCalls} concurrent calls, one cold key; median of ${PARAMS.fanoutIterations} per run)`,
    metrics: [
      { key: 'providerRequests', label: 'provider requests (max per fan-out)', better: null, digits: 0 },
      { key: 'settleMs', label: 'ms to settle all', better: lower, digits: 1 },
      { key: 'resultObjects', label: 'distinct result objects (fewest in a fan-out)', better: null, digits: 0 },
    ],
  },
  ...PARAMS.memoryTokenLengths.map((tokenLength) => ({
    id: `memory${tokenLength}`,
    child: 'memory',
    params: { tokenLength },
    idp: { tokenLength },
    title:
      `4. memory, ${tokenLength}-character tokens (${PARAMS.memoryCounts.join(' → ')} entries, ` +
      `each read ${PARAMS.memoryReads} more times after its miss, the latest ${PARAMS.memoryHot} twice more` +
      `${PARAMS.memoryFreshAssertions ? ', a fresh assertion string per call' : ''})`,
    metrics: [
      ...PARAMS.memoryCounts.map((count) => ({
        key: `rssPerEntry${count}`,
        count,
        label: `RSS bytes per entry at ${count.toLocaleString('en-US')} entries (from the baseline, memo included)`,
        better: lower,
        digits: 0,
      })),
      { key: 'rssSlope', label: `RSS bytes per entry, slope ${slopeSpan()}`, better: lower, digits: 0 },
      { key: 'heapSlope', label: 'of which V8 heap (used, after gc)', better: lower, digits: 0 },
      { key: 'offHeapSlope', label: 'of which outside the V8 heap (RSS − heapTotal)', better: lower, digits: 0 },
    ],
  })),
  {
    id: 'mixed',
    title: `5. mixed (${Math.round((1 - PARAMS.mixedMissRate) * 100)} % hits over ${PARAMS.mixedUsers} users, ${Math.round(PARAMS.mixedMissRate * 100)} % misses, ${PARAMS.concurrency} in flight)`,
    metrics: [
      { key: 'callsPerSec', label: 'calls/s', better: higher, digits: 0 },
      { key: 'p99Ms', label: 'p99 latency ms', better: lower, digits: 2 },
    ],
  },
  {
    id: 'workers',
    title: `6. worker threads (${PARAMS.workerThreads} threads, ${PARAMS.hotKeys} hot keys, ${PARAMS.workerLanes} in flight each)`,
    metrics: [
      { key: 'callsPerSec', label: 'hot calls/s (all threads)', better: higher, digits: 0 },
      { key: 'providerRequests', label: 'provider requests (cold fill)', better: lower, digits: 0 },
    ],
  },
  {
    id: 'multiInstance',
    title:
      `7. multi-instance (${PARAMS.multiInstances} processes × the same ${PARAMS.multiUsers} users, one shared Redis, ` +
      `${PARAMS.concurrency} in flight each; stack column: stack-redis, i.e. Keyv + @keyv/redis)`,
    contestants: ['native', 'stack-redis'],
    baseline: 'stack-redis',
    redis: true,
    metrics: [
      { key: 'providerRequests', label: `provider requests, cold start (${PARAMS.multiUsers} distinct keys)`, better: lower, digits: 0 },
      { key: 'coldMs', label: 'cold start: ms until every instance has served every user', better: lower, digits: 0 },
      { key: 'callsPerSec', label: 'steady calls/s (all instances)', better: higher, digits: 0 },
      { key: 'p50Ms', label: 'steady p50 latency ms', better: lower, digits: 4 },
      { key: 'p99Ms', label: 'steady p99 latency ms', better: lower, digits: 3 },
      { key: 'usPerHit', label: 'µs per hit (sequential, one instance at a time), a fresh assertion string per call', better: lower, digits: 3 },
      { key: 'usPerHitSame', label: 'µs per hit (likewise), the same string object every call', better: lower, digits: 3 },
    ],
  },
];
for (const workload of WORKLOADS) {
  workload.child = workload.child || workload.id;
  workload.contestants = (workload.contestants || COLUMNS).filter(
    (c) => ONLY_CONTESTANTS.length === 0 || ONLY_CONTESTANTS.includes(c),
  );
}

// --- statistics ------------------------------------------------------------------
function median(values) {
  const sorted = values.filter((v) => typeof v === 'number' && Number.isFinite(v)).sort((a, b) => a - b);
  if (sorted.length === 0) return NaN;
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}
function summary(values) {
  const finite = values.filter((v) => typeof v === 'number' && Number.isFinite(v));
  return { median: median(finite), min: Math.min(...finite), max: Math.max(...finite), n: finite.length, values };
}

// --- targets (issues 4 and 8) ----------------------------------------------------
const MET = 'met';
const MISSED = 'missed';
const INCONCLUSIVE = 'inconclusive';

/**
 * Whether native is at least `factor` times better than `other`, judged on
 * the whole spread of the rounds: met when even native's worst round beats
 * `factor` × the other's best, missed when even native's best round does
 * not reach `factor` × the other's worst, inconclusive in between (the gap
 * is inside the spread). With one round the spread is zero.
 */
function atLeast(better, native, other, factor) {
  if (!native || !other || native.n === 0 || other.n === 0) return INCONCLUSIVE;
  if (better === lower) {
    if (native.max * factor <= other.min) return MET;
    if (native.min * factor > other.max) return MISSED;
  } else {
    if (native.min >= factor * other.max) return MET;
    if (native.max < factor * other.min) return MISSED;
  }
  return INCONCLUSIVE;
}
/** Native's rounds against a fixed bound, the same way. */
function within(better, native, bound) {
  if (!native || native.n === 0) return INCONCLUSIVE;
  if (better === lower) return native.max <= bound ? MET : native.min > bound ? MISSED : INCONCLUSIVE;
  return native.min >= bound ? MET : native.max < bound ? MISSED : INCONCLUSIVE;
}
const both = (...verdicts) =>
  verdicts.includes(MISSED) ? MISSED : verdicts.every((v) => v === MET) ? MET : INCONCLUSIVE;

/** [workload id, metric key] → (summaries by contestant, workload) → [{ text, verdict }] */
const hitTargets = (s) => [
  {
    text: '≥ 10× faster than stack and ≥ 2× faster than lean (issue 8)',
    verdict: both(atLeast(lower, s.native, s.stack, 10), atLeast(lower, s.native, s.lean, 2)),
  },
];
/**
 * Issue 19 bounds memory by the token's length + 300 B "past 20,000" entries: at the counts above
 * this one. Up to it, the per-thread memo (≤ 10,000 entries, all of them hot) is a large share of
 * what each entry costs; the rows below it are judged against lean only.
 */
const MEMORY_BOUND_ABOVE = 20_000;
const memorySlopeTargets = (s, workload) => [
  {
    text: `≤ the token's length + 300 (${workload.params.tokenLength + 300}) (issue 8)`,
    verdict: within(lower, s.native, workload.params.tokenLength + 300),
  },
  { text: '≤ lean (issue 8)', verdict: atLeast(lower, s.native, s.lean, 1) },
];
/** Issue 19: native ≤ lean at every size, and within the token's length + 300 B past 20,000 entries. */
const memoryAtCountTargets = (count) => (s, workload) => [
  { text: '≤ lean (issue 19)', verdict: atLeast(lower, s.native, s.lean, 1) },
  ...(count > MEMORY_BOUND_ABOVE
    ? [
        {
          text: `≤ the token's length + 300 (${workload.params.tokenLength + 300}) (issue 19)`,
          verdict: within(lower, s.native, workload.params.tokenLength + 300),
        },
      ]
    : []),
];
const multiHitTargets = (s) => [
  { text: "≥ 100× faster than the stack's Redis round trip (issue 10)", verdict: atLeast(lower, s.native, s.stack, 100) },
];
const TARGETS = {
  'hit.usPerHit': hitTargets,
  'hitFresh.usPerHit': hitTargets,
  'miss.exchangesPerSec': (s) => [
    { text: '≥ 3× stack and ≥ 1.2× lean (issue 4)', verdict: both(atLeast(higher, s.native, s.stack, 3), atLeast(higher, s.native, s.lean, 1.2)) },
    {
      text: 'no worse than the last published ratios, 6.5× stack and 1.84× lean (issue 8)',
      verdict: both(atLeast(higher, s.native, s.stack, 6.5), atLeast(higher, s.native, s.lean, 1.84)),
    },
  ],
  'miss.cpuMsPerExchange': (s) => [
    { text: '≤ ⅛ stack and ≤ ⅓ lean (issue 4)', verdict: both(atLeast(lower, s.native, s.stack, 8), atLeast(lower, s.native, s.lean, 3)) },
    {
      text: 'no worse than the last published ratios, 9.4× stack and 2.4× lean (issue 8)',
      verdict: both(atLeast(lower, s.native, s.stack, 9.4), atLeast(lower, s.native, s.lean, 2.4)),
    },
  ],
  'miss.elu': (s) => [
    { text: 'well under both (taken as ≤ ½ of each)', verdict: both(atLeast(lower, s.native, s.lean, 2), atLeast(lower, s.native, s.stack, 2)) },
  ],
  'fanout.providerRequests': (s) => [
    {
      text: 'exactly 1 (every fan-out of every run)',
      verdict: s.native.n > 0 && s.native.n === s.native.values.length && s.native.min === 1 && s.native.max === 1 ? MET : MISSED,
    },
  ],
  'fanout.settleMs': (s) => [
    { text: 'no slower than lean JS, in the same run (issue 19)', verdict: atLeast(lower, s.native, s.lean, 1) },
    { text: 'no slower than stack', verdict: atLeast(lower, s.native, s.stack, 1) },
  ],
  'fanout.resultObjects': (s) => [
    {
      text: `each caller its own result object: ${PARAMS.fanoutCalls.toLocaleString('en-US')} in every fan-out (issue 19)`,
      verdict: s.native.n > 0 && s.native.min === PARAMS.fanoutCalls ? MET : MISSED,
    },
  ],
  'missCalls.cpuUsSaved': (s) => [
    {
      text: 'one call per miss costs less CPU than lookup + exchange, in every run (issue 19)',
      verdict: !s.native || s.native.n === 0 ? INCONCLUSIVE : s.native.min > 0 ? MET : s.native.max <= 0 ? MISSED : INCONCLUSIVE,
    },
  ],
  ...Object.fromEntries(
    PARAMS.memoryTokenLengths.flatMap((n) => [
      [`memory${n}.rssSlope`, memorySlopeTargets],
      ...PARAMS.memoryCounts.map((count) => [`memory${n}.rssPerEntry${count}`, memoryAtCountTargets(count)]),
    ]),
  ),
  'multiInstance.providerRequests': (s, workload, attempts) => {
    const failedGuard = attempts.some((a) => a.workload === workload.id && a.contestant === 'native' && a.guard === 'providerRequests');
    const exact = s.native.n > 0 && s.native.n === s.native.values.length && s.native.min === PARAMS.multiUsers && s.native.max === PARAMS.multiUsers;
    return [
      {
        text: `= distinct keys (${PARAMS.multiUsers}), exactly, in every run and every attempt (issue 10)`,
        verdict: exact && !failedGuard ? MET : MISSED,
      },
    ];
  },
  'multiInstance.usPerHit': multiHitTargets,
  'multiInstance.usPerHitSame': multiHitTargets,
};

// --- the provider process ----------------------------------------------------------
function startIdp() {
  return new Promise((resolve, reject) => {
    const child = fork(path.join(__dirname, 'idp.js'), [], { stdio: ['ignore', 'ignore', 'inherit', 'ipc'] });
    const pending = new Map();
    let nextId = 0;
    let provider = null;
    child.on('message', (message) => {
      if (message && message.provider && !provider) {
        provider = message.provider;
        resolve({
          provider,
          child,
          control(cmd, value) {
            return new Promise((done, fail) => {
              const id = ++nextId;
              const timer = setTimeout(() => {
                pending.delete(id);
                fail(new Error(`provider did not answer ${cmd}`));
              }, 10_000);
              pending.set(id, (answer) => {
                clearTimeout(timer);
                done(answer);
              });
              child.send({ id, cmd, value });
            });
          },
        });
        return;
      }
      const waiter = message && pending.get(message.id);
      if (waiter) {
        pending.delete(message.id);
        waiter(message);
      }
    });
    child.once('error', reject);
    child.once('exit', (code) => {
      if (!provider) reject(new Error(`the provider process exited (${code}) before listening`));
    });
  });
}

// --- one child run -------------------------------------------------------------------
function childExecArgv(workload, contestant, suffix = '') {
  const execArgv = ['--expose-gc'];
  if (CPU_PROF) {
    const dir = path.join(OUT_DIR, 'prof');
    fs.mkdirSync(dir, { recursive: true });
    execArgv.push('--cpu-prof', `--cpu-prof-dir=${dir}`, `--cpu-prof-name=${workload.id}-${contestant}${suffix}-${Date.now()}.cpuprofile`);
  }
  return execArgv;
}

function runChild(idp, contestant, workload) {
  const params = { ...PARAMS, ...(workload.params || {}) };
  return new Promise((resolve, reject) => {
    const execArgv = childExecArgv(workload, contestant);
    const child = fork(
      path.join(__dirname, 'worker.js'),
      [contestant, workload.child, JSON.stringify(idp.provider), JSON.stringify(params)],
      { execArgv, stdio: ['ignore', 'pipe', 'pipe', 'ipc'] },
    );
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d) => (stderr += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), CHILD_TIMEOUT_MS);
    child.on('message', async (message) => {
      if (!message || message.idp === undefined) return;
      try {
        const result = await idp.control(message.idp);
        if (child.connected) child.send({ idpReply: message.id, result });
      } catch (err) {
        if (child.connected) child.send({ idpReply: message.id, result: null });
      }
    });
    child.on('exit', (code, signal) => {
      clearTimeout(timer);
      const line = stdout.trim().split('\n').filter(Boolean).pop();
      if (code === 0 && line) {
        try {
          resolve(JSON.parse(line));
          return;
        } catch {
          /* fall through */
        }
      }
      reject(new Error(`${contestant}/${workload.id} failed (code ${code}, signal ${signal}): ${stderr.trim().slice(-2000)}`));
    });
  });
}

// --- the multi-instance workload (issue 10) --------------------------------------------

/** Whether redis-server and redis-cli can run here; the multi-instance workload is skipped otherwise. */
function redisInstalled() {
  const works = (program) => spawnSync(program, ['--version'], { stdio: 'ignore' }).status === 0;
  return works('redis-server') && works('redis-cli');
}

/** A failed correctness guard: fails the attempt, and the results name the guard. */
function guardFailure(guard, message) {
  return Object.assign(new Error(message), { guard });
}

/**
 * One instance of the multi-instance workload: a worker.js child that
 * reports each phase over IPC (`{ multi: phase, … }`) and waits for the
 * runner's `{ multiGo: phase }` before the next.
 */
class Instance {
  constructor(contestant, workload, params, provider) {
    this.label = `${contestant}/${workload.id}#${params.multiInstance}`;
    this.child = fork(
      path.join(__dirname, 'worker.js'),
      [contestant, workload.child, JSON.stringify(provider), JSON.stringify(params)],
      { execArgv: childExecArgv(workload, contestant, `-${params.multiInstance}`), stdio: ['ignore', 'pipe', 'pipe', 'ipc'] },
    );
    this.stdout = '';
    this.stderr = '';
    this.child.stdout.setEncoding('utf8').on('data', (d) => (this.stdout += d));
    this.child.stderr.setEncoding('utf8').on('data', (d) => (this.stderr += d));
    this.reports = new Map();
    this.waiters = new Map();
    this.exited = null;
    this.child.on('message', (message) => {
      if (!message || message.multi === undefined) return;
      const waiter = this.waiters.get(message.multi);
      if (waiter) {
        this.waiters.delete(message.multi);
        waiter.resolve(message);
      } else {
        this.reports.set(message.multi, message);
      }
    });
    this.exit = new Promise((resolve) => {
      this.child.on('exit', (code, signal) => {
        this.exited = { code, signal };
        for (const [phase, waiter] of this.waiters) waiter.reject(this.failure(`before reporting ${phase}`));
        this.waiters.clear();
        resolve(this.exited);
      });
    });
  }

  failure(when) {
    const { code, signal } = this.exited;
    return new Error(`${this.label} exited ${when} (code ${code}, signal ${signal}): ${this.stderr.trim().slice(-2000)}`);
  }

  /** The child's report of `phase`. */
  next(phase) {
    const report = this.reports.get(phase);
    if (report) {
      this.reports.delete(phase);
      return Promise.resolve(report);
    }
    if (this.exited) return Promise.reject(this.failure(`before reporting ${phase}`));
    return new Promise((resolve, reject) => this.waiters.set(phase, { resolve, reject }));
  }

  go(phase) {
    this.child.send({ multiGo: phase });
  }

  /** The JSON line the child prints when it ends. */
  async result() {
    await this.exit;
    const line = this.stdout.trim().split('\n').filter(Boolean).pop();
    if (this.exited.code !== 0 || !line) throw this.failure('at the end');
    return JSON.parse(line);
  }

  kill() {
    if (!this.exited) this.child.kill('SIGKILL');
  }
}

const sum = (values) => values.reduce((a, b) => a + b, 0);

/**
 * One run of the multi-instance workload: `multiInstances` children of one
 * contestant on the private Redis (flushed first), all configured alike,
 * paced through the phases together (cold, steady), then one at a time
 * (hit). The provider's counter is read between phases. Guards (a failure
 * fails the attempt and names its guard): native's cold start makes exactly
 * one provider request per distinct key and gives every instance the same
 * token per user; the stack's makes between one and `multiInstances` per key;
 * neither makes any request once warm.
 */
async function runMultiInstance(idp, redis, contestant, workload) {
  const P = { ...PARAMS, ...(workload.params || {}) };
  await redisCli(redis.port, 'FLUSHALL');
  const shared = {
    redisUri: redis.uri,
    redisKeyPrefix: 'obo-bench',
    // A throwaway key for a throwaway Redis, new for every run.
    cacheEncryptionKey: crypto.randomBytes(32).toString('hex'),
    multiTag: `${Date.now().toString(36)}${crypto.randomBytes(3).toString('hex')}`,
    multiIssuedAt: Math.floor(Date.now() / 1000),
  };
  const instances = Array.from(
    { length: P.multiInstances },
    (_, i) => new Instance(contestant, workload, { ...P, ...shared, multiInstance: i }, idp.provider),
  );
  const timer = setTimeout(() => instances.forEach((x) => x.kill()), CHILD_TIMEOUT_MS);
  const everyone = (phase) => Promise.all(instances.map((x) => x.next(phase)));
  const providerCount = async () => (await idp.control('count')).tokenRequests;
  try {
    await everyone('ready');
    await idp.control('reset');
    instances.forEach((x) => x.go('cold'));
    const cold = await everyone('cold');
    const coldRequests = await providerCount();
    await idp.control('reset');
    instances.forEach((x) => x.go('steady'));
    const steady = await everyone('steady');
    const hits = [];
    for (const x of instances) {
      x.go('hit');
      hits.push(await x.next('hit'));
    }
    const warmRequests = await providerCount();
    instances.forEach((x) => x.go('finish'));
    const ends = await Promise.all(instances.map((x) => x.result()));
    const redisKeys = Number(String(await redisCli(redis.port, 'DBSIZE')).trim());
    const usedMemory = /used_memory:(\d+)/.exec(String(await redisCli(redis.port, 'INFO', 'memory')));

    const keys = P.multiUsers;
    const sameTokens = new Set(cold.map((r) => r.tokenDigest)).size === 1;
    const failures = [];
    if (contestant === 'native' && coldRequests !== keys) {
      failures.push(['providerRequests', `the cold start made ${coldRequests} provider requests for ${keys} distinct keys (must be exactly ${keys})`]);
    }
    if (contestant !== 'native' && !(coldRequests >= keys && coldRequests <= keys * P.multiInstances)) {
      failures.push(['providerRequests', `the cold start made ${coldRequests} provider requests for ${keys} keys on ${P.multiInstances} instances`]);
    }
    if (warmRequests !== 0) failures.push(['warmRequests', `${warmRequests} provider requests in the steady and hit phases, where every call should hit`]);
    if (contestant === 'native' && !sameTokens) failures.push(['sameTokens', 'the instances hold different tokens for the same user']);
    if (failures.length) {
      throw guardFailure(failures[0][0], `multiInstance/${contestant}: ${failures.map((f) => f[1]).join('; ')}`);
    }

    const coldMs = Math.max(...cold.map((r) => r.elapsedMs));
    const coldHistogram = mergeHistograms(cold.map((r) => r.histogram));
    const steadyHistogram = mergeHistograms(steady.map((r) => r.histogram));
    const stats = ends.map((e) => e.info.stats).filter(Boolean);
    const statSum = (field) => (stats.length ? sum(stats.map((st) => st[field] ?? 0)) : null);
    return {
      contestant,
      workload: workload.id,
      metrics: {
        providerRequests: coldRequests,
        coldMs,
        callsPerSec: (sum(steady.map((r) => r.calls)) * 1000) / Math.max(...steady.map((r) => r.elapsedMs)),
        p50Ms: histogramQuantile(steadyHistogram, 0.5),
        p99Ms: histogramQuantile(steadyHistogram, 0.99),
        usPerHit: median(hits.map((r) => r.usPerHit)),
        usPerHitSame: median(hits.map((r) => r.usPerHitSame)),
      },
      info: {
        instances: P.multiInstances,
        users: keys,
        coldCallsPerSec: (keys * P.multiInstances * 1000) / coldMs,
        coldP50Ms: histogramQuantile(coldHistogram, 0.5),
        coldP99Ms: histogramQuantile(coldHistogram, 0.99),
        coldMsEach: cold.map((r) => r.elapsedMs),
        steadyCalls: sum(steady.map((r) => r.calls)),
        steadyP999Ms: histogramQuantile(steadyHistogram, 0.999),
        steadyCpuUsPerCall: median(steady.map((r) => r.cpuUsPerCall)),
        usPerHitEach: hits.map((r) => r.usPerHit),
        usPerHitSameEach: hits.map((r) => r.usPerHitSame),
        cpuUsPerHit: median(hits.map((r) => r.cpuUsPerHit)),
        cpuUsPerHitSame: median(hits.map((r) => r.cpuUsPerHitSame)),
        warmProviderRequests: warmRequests,
        sameTokens: sameTokens ? 1 : 0,
        redisHits: statSum('redisHits'),
        redisMisses: statSum('redisMisses'),
        redisErrors: statSum('redisErrors'),
        lockWaits: statSum('lockWaits'),
        redisKeys,
        redisUsedMemoryMB: usedMemory ? Number(usedMemory[1]) / 2 ** 20 : null,
        setupMs: median(ends.map((e) => e.info.setupMs)),
        identityAware: ends.every((e) => e.info.identityAware !== false),
      },
    };
  } finally {
    clearTimeout(timer);
    instances.forEach((x) => x.kill());
  }
}

// --- formatting ----------------------------------------------------------------------
/** Who fills `column` of the table for `workload`. */
const columnContestant = (workload, column) => (column === 'stack' && workload.baseline ? workload.baseline : column);

function fmt(value, digits) {
  if (value === null || value === undefined || Number.isNaN(value)) return 'n/a';
  if (!Number.isFinite(value)) return String(value);
  return value.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits });
}
function cell(s, digits) {
  if (!s || s.n === 0) return 'n/a';
  if (s.min === s.max) return fmt(s.median, digits);
  return `${fmt(s.median, digits)} (${fmt(s.min, digits)}–${fmt(s.max, digits)})`;
}
function advantage(metric, native, other) {
  if (!metric.better || !(native > 0) || !(other > 0)) return '—';
  const factor = metric.better === lower ? other / native : native / other;
  return `${factor >= 10 ? factor.toFixed(0) : factor.toFixed(2)}×`;
}

function machine() {
  const cpus = os.cpus();
  return {
    cpu: cpus[0] ? cpus[0].model : 'unknown',
    cores: cpus.length,
    node: process.version,
    platform: `${os.platform()} ${os.release()} ${os.arch()}`,
    memoryGB: +(os.totalmem() / 2 ** 30).toFixed(1),
    loadAvg: os.loadavg().map((l) => +l.toFixed(2)),
    date: new Date().toISOString(),
  };
}

const ROOT = path.join(__dirname, '..');

function sha256Of(file) {
  try {
    return crypto.createHash('sha256').update(fs.readFileSync(path.join(ROOT, file))).digest('hex');
  } catch {
    return 'missing';
  }
}

/** git's output with only the final newline removed (porcelain lines start with a space), or null. */
function git(args) {
  try {
    return execFileSync('git', args, { cwd: ROOT, stdio: ['ignore', 'pipe', 'ignore'] }).toString().replace(/\n$/, '');
  } catch {
    return null;
  }
}

/**
 * What is being measured: the commit, whether the working tree differs from
 * it (and where), and the SHA-256 of the addon binaries and the JavaScript
 * the native contestant loads, as they are on disk.
 */
function build() {
  const status = git(['status', '--porcelain', '--untracked-files=normal']);
  const changed = status === null ? null : status.split('\n').filter(Boolean).map((line) => line.slice(3));
  return {
    commit: git(['rev-parse', 'HEAD']) || 'unknown (not a git checkout)',
    branch: git(['rev-parse', '--abbrev-ref', 'HEAD']),
    dirty: changed === null ? null : changed.length > 0,
    changed,
    files: Object.fromEntries(
      [...fs.readdirSync(ROOT).filter((f) => f.endsWith('.node')).sort(), 'loader.js', 'index.js'].map((f) => [f, sha256Of(f)]),
    ),
  };
}

/** A short digest of everything `build().files` lists, recorded with every run (a rebuild mid-run shows up). */
function addonDigest() {
  const hash = crypto.createHash('sha256');
  for (const [file, digest] of Object.entries(build().files)) hash.update(`${file} ${digest}\n`);
  return hash.digest('hex').slice(0, 12);
}

const paths = (list) => (list && list.length ? list.map((p) => `\`${p}\``).join(' and ') : 'an unknown path');

/** How the addon was built, and how to rebuild the same bytes (issue 20). */
function reproduction(b) {
  const a = b.addon;
  if (!a) return ['**The addon was not checked against its sources** (a run from before bench/provenance.js).'];
  const t = a.toolchain;
  const env = Object.entries(t.buildEnv);
  const lines = [
    `Addon: \`${a.addon}\`, the **${a.profile}** build (\`${a.buildCommand}\`: \`napi build --platform --release\`, ` +
      `Cargo.toml's \`[profile.release]\`), built ${a.builtAt}${a.rebuiltBeforeRun ? ` by the bench itself before the runs (${fmt(a.buildMs / 1000, 0)} s)` : ''}; ` +
      `checked to be the artifact cargo made, with no Rust source newer than it. ` +
      `Toolchain: ${t.rustc}${t.llvm ? ` (LLVM ${t.llvm})` : ''}, ${t.cargo}, host \`${t.host}\`, @napi-rs/cli ${t.napiCli}; ` +
      `${env.length ? `build environment ${env.map(([k, v]) => `\`${k}=${v}\``).join(' ')}` : 'no RUSTFLAGS/CARGO_* overrides'}; checkout at \`${a.checkout}\`.`,
  ];
  const changed = a.rustInputsChanged;
  if (a.dependenciesBuiltIn && a.dependenciesBuiltIn.length > 1) {
    lines.push(
      '',
      `**The dependencies were compiled in more than one target directory** (${paths(a.dependenciesBuiltIn)}: a target/ copied ` +
        `from another checkout and partly rebuilt here): no fresh build reproduces this mix; for a reproducible hash, run ` +
        `\`cargo clean\` and let the bench build again.`,
    );
  }
  if (changed && changed.length) {
    lines.push(
      '',
      `**The Rust sources differed from the commit** (${changed.join(', ')}): this addon's SHA-256 cannot be rebuilt from the commit alone.`,
    );
  } else {
    lines.push(
      '',
      `To reproduce the addon's SHA-256 \`${a.addonSha256}\`: check out \`${b.commit}\`, install the same toolchain ` +
        `(\`rustup toolchain install ${(/rustc (\S+)/.exec(t.rustc) || [])[1] || '<version>'}\` and make it the default), then ` +
        `\`npm ci --ignore-scripts && ${a.buildCommand} && sha256sum ${a.addon}\`` +
        `${env.length ? ' with the build environment above' : ''}, ` +
        `with the dependencies compiled in a target directory at ${paths(a.dependenciesBuiltIn)} and CARGO_HOME at \`${a.cargoHome}\` ` +
        `(e.g. \`CARGO_TARGET_DIR=${a.dependenciesBuiltIn[0] || '<that path>'}\` on a fresh build). ` +
        `The binary depends on those two paths: build scripts' OUT_DIR and the registry's source paths are compiled into it ` +
        `(the checkout's own path is not). Same toolchain, Cargo.lock, sources and paths give the same bytes on every rebuild; ` +
        `another rustc (or LLVM), other RUSTFLAGS, another Cargo.lock or other paths give other bytes.`,
    );
  }
  return lines;
}

const MARK = { [MET]: '✅ met', [MISSED]: '❌ missed', [INCONCLUSIVE]: '❔ inconclusive' };

function render(results, info, attempts, rounds = ROUNDS) {
  const lines = [];
  lines.push(`# obo-native benchmark${QUICK ? ' (quick mode)' : ''}`, '');
  lines.push(
    `Machine: ${info.machine.cpu}, ${info.machine.cores} cores, ${info.machine.memoryGB} GB, ${info.machine.platform}; ` +
      `Node ${info.machine.node}; ${info.machine.date}; load average at start ${info.machine.loadAvg.join(' / ')}` +
      `${Object.keys(info.machine.mallocEnv).length ? `; ${Object.entries(info.machine.mallocEnv).map(([k, v]) => `${k}=${v}`).join(' ')}` : ''}.`,
  );
  const b = info.build;
  lines.push(
    '',
    `Build measured: commit \`${b.commit}\`${b.branch ? ` (${b.branch})` : ''}, working tree ` +
      (b.dirty === null ? 'state unknown' : b.dirty ? `**dirty** (${b.changed.length} paths differ: ${b.changed.slice(0, 12).join(', ')}${b.changed.length > 12 ? ', …' : ''})` : 'clean') +
      '. SHA-256 on disk: ' +
      Object.entries(b.files).map(([file, digest]) => `\`${file}\` ${digest}`).join('; ') +
      '.',
  );
  lines.push('', ...reproduction(b));
  const native = Object.values(results).flatMap((byContestant) => byContestant.native || []);
  if (native.some((r) => r.info.identityAware === false)) {
    lines.push(
      '',
      '**Warning: this build of the addon ignores the identity context** (no `__internals.buildOboCacheKey`): native ran ' +
        "the first generation's algorithm, keyed by (openidId, scopes), while lean and stack ran today's.",
    );
  }
  const builds = new Set();
  const loads = [];
  for (const byContestant of Object.values(results)) {
    for (const runs of Object.values(byContestant)) {
      for (const r of runs) {
        builds.add(r.run.build);
        loads.push(r.run.loadAvg1m);
      }
    }
  }
  if (loads.length) {
    lines.push(
      '',
      `Load average (1 min) when runs ended: median ${fmt(median(loads), 2)}, range ${fmt(Math.min(...loads), 2)}–${fmt(Math.max(...loads), 2)} ` +
        `(the machine is shared: other processes compete for the ${info.machine.cores} cores).`,
    );
  }
  if (builds.size > 1) {
    lines.push(
      '',
      `**Warning: ${builds.size} different builds of the addon/facade were measured in this run** (${[...builds].join(', ')}); ` +
        'see the raw results (`run.build`) for which run used which.',
    );
  } else if (info.buildAfter && JSON.stringify(info.buildAfter.files) !== JSON.stringify(info.build.files)) {
    lines.push('', '**Warning: the addon or facade changed during the run**; runs before and after the change are mixed in these numbers.');
  }
  lines.push('');
  lines.push(
    `Method: ${rounds} round${rounds === 1 ? '' : 's'}; each run is a fresh child process (native, lean, stack alternating); ` +
      `the identity provider (bench/idp.js, the mock of testing.js) runs in its own process on loopback. ` +
      `Every call passes today's five arguments (user, 1.5 KB assertion, scopes, true, identity context). ` +
      `Cells: median (min–max) over rounds. Ratios: how many times better native is (> 1 = native better), from medians. ` +
      `Verdicts use the whole spread: *met* only when native's worst round beats the target against the other's best round, ` +
      `*missed* when even native's best round does not, *inconclusive* when the gap lies inside the spread of the rounds` +
      `${rounds === 1 ? ' (one round shows no spread: these verdicts are indicative only)' : ''}. ` +
      `${results.multiInstance ? 'Workload 7 runs native and stack-redis only (lean has no shared store); its stack column is stack-redis, and each run is 4 child processes on one private redis-server, flushed before the run. ' : ''}` +
      `Total time ${(info.elapsedMs / 60000).toFixed(1)} min.`,
    '',
  );
  lines.push('| Workload | Metric | native | lean JS | stack baseline | native vs lean | native vs stack | Target | Verdict |');
  lines.push('|---|---|---|---|---|---|---|---|---|');
  const tally = { [MET]: 0, [MISSED]: 0, [INCONCLUSIVE]: 0 };
  for (const workload of WORKLOADS) {
    const byContestant = results[workload.id];
    if (!byContestant) continue;
    for (const metric of workload.metrics) {
      const s = {};
      for (const column of COLUMNS) {
        s[column] = summary((byContestant[columnContestant(workload, column)] || []).map((r) => r.metrics[metric.key]));
      }
      const target = TARGETS[`${workload.id}.${metric.key}`];
      const verdicts = target ? target(s, workload, attempts) : [];
      for (const v of verdicts) tally[v.verdict]++;
      lines.push(
        `| ${workload.title} | ${metric.label} | ${cell(s.native, metric.digits)} | ${cell(s.lean, metric.digits)} | ` +
          `${cell(s.stack, metric.digits)} | ${advantage(metric, s.native.median, s.lean.median)} | ` +
          `${advantage(metric, s.native.median, s.stack.median)} | ` +
          `${verdicts.length ? verdicts.map((v) => v.text).join('<br>') : '—'} | ` +
          `${verdicts.length ? verdicts.map((v) => MARK[v.verdict]).join('<br>') : '—'} |`,
      );
    }
  }
  for (const [id, reason] of Object.entries(info.skipped || {})) {
    const workload = WORKLOADS.find((w) => w.id === id);
    lines.push('', `**Skipped: ${workload ? workload.title : id}**: ${reason}.`);
  }
  lines.push('', `Targets: ${tally[MET]} met, ${tally[MISSED]} missed, ${tally[INCONCLUSIVE]} inconclusive.`, '');

  // Details: medians of what each run reported besides its headline metrics.
  lines.push('<details><summary>Details (medians of per-run extras)</summary>', '');
  lines.push('| Workload | Detail | native | lean JS | stack baseline |', '|---|---|---|---|---|');
  const memoryDetails = [
    ...PARAMS.memoryCounts.flatMap((count) => [
      [`heapPerEntry${count}`, `V8 heap bytes per entry, baseline → ${count}`, 0],
      [`offHeapPerEntry${count}`, `outside the V8 heap, bytes per entry, baseline → ${count}`, 0],
      [`externalPerEntry${count}`, `V8 external bytes per entry, baseline → ${count}`, 0],
    ]),
    ['externalSlope', `V8 external bytes per entry (slope ${slopeSpan()})`, 0],
    ['heapTotalSlope', `V8 heapTotal bytes per entry (slope ${slopeSpan()})`, 0],
    ['tokenLengthSeen', 'token length returned', 0],
  ];
  const DETAILS = {
    hit: [['cpuUsPerHit', 'process CPU µs per hit', 3]],
    hitFresh: [['cpuUsPerHit', 'process CPU µs per hit', 3]],
    miss: [
      ['cpuUserMs', 'CPU user ms (measured phase)', 0],
      ['cpuSystemMs', 'CPU system ms (measured phase)', 0],
      ['mainThreadUs', 'CPU µs per exchange: JS main thread', 1],
      ['tokioThreadsUs', 'CPU µs per exchange: addon Tokio threads', 1],
      ['otherThreadsUs', 'CPU µs per exchange: other threads (V8 GC/JIT, libuv)', 1],
      ['providerRequests', 'provider requests (measured phase)', 0],
    ],
    ...Object.fromEntries(PARAMS.memoryTokenLengths.map((n) => [`memory${n}`, memoryDetails])),
    mixed: [
      ['p50Ms', 'p50 latency ms', 4],
      ['p999Ms', 'p99.9 latency ms', 2],
      ['elu', 'event-loop utilisation', 2],
      ['misses', 'misses', 0],
      ['providerRequests', 'provider requests', 0],
    ],
    workers: [
      ['cpuUsPerCall', 'process CPU µs per hot call', 3],
      ['fillMs', 'cold fill ms (slowest thread)', 0],
      ['providerRequestsWhileHot', 'provider requests while hot', 0],
    ],
    multiInstance: [
      ['coldCallsPerSec', 'cold start calls/s (all instances)', 0],
      ['coldP50Ms', 'cold start p50 latency ms', 2],
      ['coldP99Ms', 'cold start p99 latency ms', 2],
      ['steadyP999Ms', 'steady p99.9 latency ms', 3],
      ['steadyCpuUsPerCall', 'steady process CPU µs per call (median instance)', 3],
      ['cpuUsPerHit', 'process CPU µs per sequential hit, fresh string (median instance)', 3],
      ['cpuUsPerHitSame', 'process CPU µs per sequential hit, same string (median instance)', 3],
      ['warmProviderRequests', 'provider requests after the cold start (steady + hit)', 0],
      ['sameTokens', 'every instance got the same token per user (1 = yes)', 0],
      ['redisHits', 'redisHits (sum over instances)', 0],
      ['redisMisses', 'redisMisses (sum)', 0],
      ['lockWaits', 'lockWaits (sum)', 0],
      ['redisErrors', 'redisErrors (sum)', 0],
      ['redisKeys', 'keys in Redis after the run', 0],
      ['redisUsedMemoryMB', 'Redis used_memory after the run, MB', 2],
    ],
  };
  for (const workload of WORKLOADS) {
    const byContestant = results[workload.id];
    if (!byContestant) continue;
    for (const [key, label, digits] of DETAILS[workload.id] || []) {
      const cells = COLUMNS.map((column) =>
        cell(summary((byContestant[columnContestant(workload, column)] || []).map((r) => r.info[key])), digits),
      );
      lines.push(`| ${workload.id} | ${label} | ${cells.join(' | ')} |`);
    }
  }
  lines.push('', '</details>', '');
  lines.push(`Parameters: \`${JSON.stringify(PARAMS)}\``, '');

  // Every attempt, failed ones first: a guard that failed once is part of the evidence.
  const failed = attempts.filter((a) => !a.ok);
  lines.push(
    '## Attempts',
    '',
    `${attempts.length} attempts, ${failed.length} failed` +
      (failed.length
        ? ` (${failed.filter((a) => a.recovered).length} of them succeeded on the retry; a run is retried once).`
        : '.') +
      ' Every attempt, with its error, is in the raw results (`attempts`).',
    '',
  );
  if (failed.length) {
    lines.push('| Workload | Contestant | Round | Attempt | Outcome | Error |', '|---|---|---|---|---|---|');
    for (const a of failed) {
      const error = a.error.replace(/\s+/g, ' ').replace(/\|/g, '\\|').slice(0, 300);
      lines.push(`| ${a.workload} | ${a.contestant} | ${a.round} | ${a.attempt} | ${a.recovered ? 'retry succeeded' : 'run lost'} | ${error} |`);
    }
    lines.push('');
  }
  return { text: lines.join('\n'), tally };
}

// --- main ------------------------------------------------------------------------------
function selectWorkloads() {
  const only = (process.env.BENCH_ONLY || '')
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
  const chosen = WORKLOADS.filter((w) => only.length === 0 || only.some((o) => w.id === o || w.child === o));
  if (chosen.length === 0) throw new Error(`BENCH_ONLY matches no workload (${WORKLOADS.map((w) => w.id).join(', ')})`);
  return chosen;
}

/** Judges and writes the results of an earlier run again, e.g. after a change of targets. */
function renderAgain(file) {
  const { info, results, attempts } = JSON.parse(fs.readFileSync(file, 'utf8'));
  // Parameters added since that run (e.g. a new workload's) do not matter to it.
  if (Object.keys(info.params).some((key) => JSON.stringify(info.params[key]) !== JSON.stringify(PARAMS[key]))) {
    throw new Error(`${file} was measured with other parameters; set BENCH_QUICK/BENCH_PARAMS as for its run`);
  }
  const { text, tally } = render(results, { ...info, rounds: info.rounds }, attempts, info.rounds);
  fs.writeFileSync(RESULTS, `${text}\n`);
  console.error(`wrote ${path.relative(process.cwd(), RESULTS)} from ${file}; targets ${tally[MET]} met, ${tally[MISSED]} missed, ${tally[INCONCLUSIVE]} inconclusive`);
}

async function main() {
  if (process.env.BENCH_RENDER) {
    renderAgain(process.env.BENCH_RENDER);
    return;
  }
  const workloads = selectWorkloads();
  fs.mkdirSync(OUT_DIR, { recursive: true });
  const mallocEnv = Object.fromEntries(Object.entries(process.env).filter(([k]) => k.startsWith('MALLOC_')));
  // Before anything is recorded: the build may replace the addon.
  const addon = provenance.prepare({ build: process.env.BENCH_BUILD !== '0' });
  const info = { machine: { ...machine(), mallocEnv }, build: { ...build(), addon }, params: PARAMS, rounds: ROUNDS, quick: QUICK };
  const started = Date.now();
  console.error(
    `obo-native bench: ${workloads.length} workloads × ${ROUNDS} rounds × ${new Set(workloads.flatMap((w) => w.contestants)).size} contestants${QUICK ? ' (quick)' : ''}; ` +
      `${info.machine.cpu}, ${info.machine.cores} cores, Node ${info.machine.node}; ` +
      `commit ${info.build.commit.slice(0, 12)}${info.build.dirty ? ' (dirty tree)' : ''}`,
  );
  const idp = await startIdp();
  const results = {};
  const attempts = [];
  let redis = null;
  info.skipped = {};
  try {
    if (workloads.some((w) => w.redis)) {
      if (redisInstalled()) {
        redis = await startRedis();
        console.error(`  private redis-server on port ${redis.port} (pid ${redis.pid})`);
      } else {
        for (const w of workloads.filter((x) => x.redis)) info.skipped[w.id] = 'redis-server/redis-cli not found on this machine';
        console.error('  NOTICE: redis-server/redis-cli not found: skipping the multi-instance workload');
      }
    }
    for (const workload of workloads) {
      if (info.skipped[workload.id]) continue;
      results[workload.id] = Object.fromEntries(workload.contestants.map((c) => [c, []]));
      for (let round = 1; round <= ROUNDS; round++) {
        for (const contestant of workload.contestants) {
          let result = null;
          for (let attempt = 1; attempt <= 2 && !result; attempt++) {
            await idp.control('tokenLength', (workload.idp && workload.idp.tokenLength) || 0);
            await idp.control('reset');
            const record = { workload: workload.id, contestant, round, attempt, ok: false, build: addonDigest(), startedAt: new Date().toISOString() };
            attempts.push(record);
            const t0 = Date.now();
            try {
              result = workload.redis ? await runMultiInstance(idp, redis, contestant, workload) : await runChild(idp, contestant, workload);
              record.ok = true;
            } catch (err) {
              record.error = err.message;
              if (err.guard) record.guard = err.guard;
              console.error(`  ! ${err.message.split('\n')[0]}${attempt === 1 ? ' (retrying once)' : ''}`);
            }
            record.elapsedMs = Date.now() - t0;
          }
          const mine = attempts.filter((a) => a.workload === workload.id && a.contestant === contestant && a.round === round);
          for (const a of mine) if (!a.ok) a.recovered = result !== null;
          if (!result) continue;
          result.run = { round, attempt: mine.length, build: addonDigest(), loadAvg1m: +os.loadavg()[0].toFixed(2) };
          results[workload.id][contestant].push(result);
          const shown = workload.metrics.map((m) => `${m.key}=${fmt(result.metrics[m.key], m.digits)}`).join(' ');
          console.error(`  ${workload.id.padEnd(10)} round ${round} ${contestant.padEnd(6)} ${shown}`);
        }
      }
    }
  } finally {
    await idp.control('close').catch(() => idp.child.kill());
    if (redis) await redis.stop();
  }
  info.elapsedMs = Date.now() - started;
  info.buildAfter = build();
  const { text, tally } = render(results, info, attempts, ROUNDS);
  process.stdout.write(`${text}\n`);
  fs.mkdirSync(path.dirname(RESULTS), { recursive: true });
  fs.writeFileSync(RESULTS, `${text}\n`);
  const raw = path.join(OUT_DIR, `raw-${QUICK ? 'quick-' : ''}${info.machine.date.replace(/[:.]/g, '-')}.json`);
  fs.writeFileSync(raw, JSON.stringify({ info, results, attempts }, null, 2));
  console.error(
    `wrote ${path.relative(process.cwd(), RESULTS)} and ${path.relative(process.cwd(), raw)}; ` +
      `targets ${tally[MET]} met, ${tally[MISSED]} missed, ${tally[INCONCLUSIVE]} inconclusive; ` +
      `${attempts.filter((a) => !a.ok).length} failed attempts`,
  );
  if (attempts.some((a) => !a.ok && !a.recovered)) process.exitCode = 1;
}

main().catch((err) => {
  console.error(err && err.stack ? err.stack : err);
  process.exit(1);
});
