'use strict';
/**
 * `npm run bench`: native vs lean JS vs the stack baseline (issue 4).
 *
 * Starts the mock identity provider in a process of its own (bench/idp.js),
 * then for every workload runs each contestant in a fresh child process
 * (bench/worker.js), alternating native, lean, stack, native, … for
 * BENCH_ROUNDS rounds; reports medians and min–max, ratios and targets on
 * stdout and in bench/results.md.
 *
 * Environment:
 *   BENCH_ROUNDS=n       rounds per workload (default 5; at least 3 is advised)
 *   BENCH_QUICK=1        smaller workloads, 3 rounds; results go to bench/.out/results-quick.md
 *   BENCH_ONLY=hit,miss  a subset of workloads (hit, miss, fanout, memory, mixed, workers)
 *   BENCH_RESULTS=path   where to write the markdown (default as above)
 *   BENCH_CPU_PROF=1     children run with --cpu-prof into bench/.out/prof/
 */
const { fork, execFileSync } = require('node:child_process');
const crypto = require('node:crypto');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const QUICK = /^(1|true|yes)$/i.test(process.env.BENCH_QUICK || '');
const ROUNDS = Math.max(1, Number(process.env.BENCH_ROUNDS) || (QUICK ? 3 : 5));
const OUT_DIR = path.join(__dirname, '.out');
const RESULTS =
  process.env.BENCH_RESULTS || (QUICK ? path.join(OUT_DIR, 'results-quick.md') : path.join(__dirname, 'results.md'));
const CPU_PROF = /^(1|true|yes)$/i.test(process.env.BENCH_CPU_PROF || '');
const CHILD_TIMEOUT_MS = 180_000;
const CONTESTANTS = ['native', 'lean', 'stack'];

const PARAMS = QUICK
  ? {
      hitWarmMs: 100,
      hitMeasureMs: 300,
      missWarm: 256,
      misses: 1000,
      fanoutCalls: 10_000,
      fanoutIterations: 3,
      memoryEntries: 5_000,
      mixedUsers: 1_000,
      mixedCalls: 20_000,
      mixedMissRate: 0.05,
      workerThreads: 4,
      hotKeys: 256,
      workerCalls: 50_000,
      workerWarmCalls: 25_000,
      workerLanes: 8,
      concurrency: 64,
    }
  : {
      hitWarmMs: 300,
      hitMeasureMs: 1_000,
      missWarm: 512,
      misses: 4_000,
      fanoutCalls: 10_000,
      fanoutIterations: 5,
      memoryEntries: 20_000,
      mixedUsers: 1_000,
      mixedCalls: 100_000,
      mixedMissRate: 0.05,
      workerThreads: 4,
      hotKeys: 256,
      workerCalls: 400_000,
      workerWarmCalls: 50_000,
      workerLanes: 8,
      concurrency: 64,
    };

const lower = 'lower';
const higher = 'higher';
/** What each workload reports; `better` orients the ratios (> 1 = native better). */
const WORKLOADS = [
  {
    id: 'hit',
    title: '1. cache hit (sequential, same user, 1.5 KB assertion)',
    metrics: [{ key: 'usPerHit', label: 'µs per call', better: lower, digits: 3 }],
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
    id: 'fanout',
    title: `3. fan-out (${PARAMS.fanoutCalls} concurrent calls, one cold key; median of ${PARAMS.fanoutIterations} per run)`,
    metrics: [
      { key: 'providerRequests', label: 'provider requests (max per fan-out)', better: null, digits: 0 },
      { key: 'settleMs', label: 'ms to settle all', better: lower, digits: 1 },
    ],
  },
  {
    id: 'memory',
    title: `4. memory (${PARAMS.memoryEntries} cached entries)`,
    metrics: [{ key: 'rssBytesPerEntry', label: 'RSS bytes per entry', better: lower, digits: 0 }],
  },
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
];

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

// --- targets (issue 4) -----------------------------------------------------------
/** Each: [workload, metric] → (summaries by contestant) → { text, met }. */
const TARGETS = {
  'hit.usPerHit': (s) => ({
    text: '≥ 5× faster than stack; ≤ lean',
    met: s.stack.median / s.native.median >= 5 && s.native.median <= s.lean.median,
  }),
  'miss.exchangesPerSec': (s) => ({
    text: '≥ 3× stack; ≥ 1.2× lean',
    met: s.native.median >= 3 * s.stack.median && s.native.median >= 1.2 * s.lean.median,
  }),
  'miss.cpuMsPerExchange': (s) => ({
    text: '≤ ⅛ stack; ≤ ⅓ lean',
    met: s.native.median <= s.stack.median / 8 && s.native.median <= s.lean.median / 3,
  }),
  'miss.elu': (s) => ({
    text: 'well under both (taken as ≤ ½ of each)',
    met: s.native.median <= 0.5 * s.lean.median && s.native.median <= 0.5 * s.stack.median,
  }),
  'fanout.providerRequests': (s) => ({
    text: 'exactly 1 (every run)',
    met: s.native.n > 0 && s.native.min === 1 && s.native.max === 1 && s.native.n === s.native.values.length,
  }),
  'fanout.settleMs': (s) => ({
    text: 'no slower than either',
    met: s.native.median <= s.lean.median && s.native.median <= s.stack.median,
  }),
  'memory.rssBytesPerEntry': (s) => ({ text: '≤ lean', met: s.native.median <= s.lean.median }),
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
          control(cmd) {
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
              child.send({ id, cmd });
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
function runChild(idp, contestant, workload) {
  return new Promise((resolve, reject) => {
    const execArgv = ['--expose-gc'];
    if (CPU_PROF) {
      const dir = path.join(OUT_DIR, 'prof');
      fs.mkdirSync(dir, { recursive: true });
      execArgv.push('--cpu-prof', `--cpu-prof-dir=${dir}`, `--cpu-prof-name=${workload}-${contestant}-${Date.now()}.cpuprofile`);
    }
    const child = fork(
      path.join(__dirname, 'worker.js'),
      [contestant, workload, JSON.stringify(idp.provider), JSON.stringify(PARAMS)],
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
      reject(new Error(`${contestant}/${workload} failed (code ${code}, signal ${signal}): ${stderr.trim().slice(-2000)}`));
    });
  });
}

// --- formatting ----------------------------------------------------------------------
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

/** A short digest of the addon binaries and the facade now on disk (they may be rebuilt during a run). */
function addonDigest() {
  const root = path.join(__dirname, '..');
  const hash = crypto.createHash('sha256');
  for (const file of [...fs.readdirSync(root).filter((f) => f.endsWith('.node')), 'index.js'].sort()) {
    try {
      hash.update(file).update(fs.readFileSync(path.join(root, file)));
    } catch {
      hash.update(`${file} missing`);
    }
  }
  return hash.digest('hex').slice(0, 12);
}

/** What is being measured: the commit, and digests of the addon and the facade as they are on disk. */
function build() {
  const root = path.join(__dirname, '..');
  const digest = (file) => {
    try {
      return crypto.createHash('sha256').update(fs.readFileSync(path.join(root, file))).digest('hex').slice(0, 12);
    } catch {
      return 'missing';
    }
  };
  let commit = 'unknown';
  try {
    commit = execFileSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: root, stdio: ['ignore', 'pipe', 'ignore'] })
      .toString()
      .trim();
  } catch {
    // not a git checkout
  }
  const addons = fs.readdirSync(root).filter((f) => f.endsWith('.node'));
  return {
    commit,
    addon: addons.map((f) => `${f} ${digest(f)}`).join(', ') || 'none',
    facade: `index.js ${digest('index.js')}`,
  };
}

function render(results, info, failures) {
  const lines = [];
  lines.push(`# obo-native benchmark${QUICK ? ' (quick mode)' : ''}`, '');
  lines.push(
    `Machine: ${info.machine.cpu}, ${info.machine.cores} cores, ${info.machine.memoryGB} GB, ${info.machine.platform}; ` +
      `Node ${info.machine.node}; ${info.machine.date}; load average at start ${info.machine.loadAvg.join(' / ')}.`,
  );
  lines.push(
    '',
    `Build: commit ${info.build.commit} (working tree as on disk); ${info.build.addon}; ${info.build.facade} (sha256 prefixes).`,
  );
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
  lines.push(
    '',
    `Load average (1 min) when runs ended: median ${fmt(median(loads), 2)}, range ${fmt(Math.min(...loads), 2)}–${fmt(Math.max(...loads), 2)} ` +
      `(the machine is shared: other processes compete for the ${info.machine.cores} cores).`,
  );
  if (builds.size > 1) {
    lines.push(
      '',
      `**Warning: ${builds.size} different builds of the addon/facade were measured in this run** (${[...builds].join(', ')}); ` +
        'see bench/.out/raw-*.json (`run.build`) for which run used which.',
    );
  } else if (info.buildAfter && JSON.stringify(info.buildAfter) !== JSON.stringify(info.build)) {
    lines.push(
      '',
      `**Warning: the addon or facade changed during the run** (at the end: ${info.buildAfter.addon}; ${info.buildAfter.facade}); ` +
        'runs before and after the change are mixed in these numbers.',
    );
  }
  lines.push('');
  lines.push(
    `Method: ${ROUNDS} rounds; each run is a fresh child process (native, lean, stack alternating); ` +
      `the identity provider (bench/idp.js, the mock of testing.js) runs in its own process on loopback. ` +
      `Cells: median (min–max) over rounds. Ratios: how many times better native is (> 1 = native better), from medians. ` +
      `Total time ${(info.elapsedMs / 60000).toFixed(1)} min.`,
    '',
  );
  lines.push('| Workload | Metric | native | lean JS | stack baseline | native vs lean | native vs stack | Target | Met |');
  lines.push('|---|---|---|---|---|---|---|---|---|');
  let met = 0;
  let missed = 0;
  for (const workload of WORKLOADS) {
    const byContestant = results[workload.id];
    if (!byContestant) continue;
    for (const metric of workload.metrics) {
      const s = {};
      for (const c of CONTESTANTS) s[c] = summary((byContestant[c] || []).map((r) => r.metrics[metric.key]));
      const target = TARGETS[`${workload.id}.${metric.key}`];
      const verdict = target ? target(s) : null;
      if (verdict) verdict.met ? met++ : missed++;
      lines.push(
        `| ${workload.title} | ${metric.label} | ${cell(s.native, metric.digits)} | ${cell(s.lean, metric.digits)} | ` +
          `${cell(s.stack, metric.digits)} | ${advantage(metric, s.native.median, s.lean.median)} | ` +
          `${advantage(metric, s.native.median, s.stack.median)} | ${verdict ? verdict.text : '—'} | ` +
          `${verdict ? (verdict.met ? '✅ met' : '❌ missed') : '—'} |`,
      );
    }
  }
  lines.push('', `Targets: ${met} met, ${missed} missed.`, '');

  // Details: medians of what each run reported besides its headline metrics.
  lines.push('<details><summary>Details (medians of per-run extras)</summary>', '');
  lines.push('| Workload | Detail | native | lean JS | stack baseline |', '|---|---|---|---|---|');
  const DETAILS = {
    hit: [['cpuUsPerHit', 'process CPU µs per hit', 3]],
    miss: [
      ['cpuUserMs', 'CPU user ms (measured phase)', 0],
      ['cpuSystemMs', 'CPU system ms (measured phase)', 0],
      ['mainThreadUs', 'CPU µs per exchange: JS main thread', 1],
      ['tokioThreadsUs', 'CPU µs per exchange: addon Tokio threads', 1],
      ['otherThreadsUs', 'CPU µs per exchange: other threads (V8 GC/JIT, libuv)', 1],
      ['providerRequests', 'provider requests (measured phase)', 0],
    ],
    memory: [
      ['heapBytesPerEntry', 'V8 heap bytes per entry', 0],
      ['rssBeforeMB', 'RSS before (MB)', 1],
      ['rssAfterMB', 'RSS after (MB)', 1],
    ],
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
    fanout: [],
  };
  for (const workload of WORKLOADS) {
    const byContestant = results[workload.id];
    if (!byContestant) continue;
    for (const [key, label, digits] of DETAILS[workload.id] || []) {
      const cells = CONTESTANTS.map((c) => cell(summary((byContestant[c] || []).map((r) => r.info[key])), digits));
      lines.push(`| ${workload.id} | ${label} | ${cells.join(' | ')} |`);
    }
  }
  lines.push('', '</details>', '');
  lines.push(`Parameters: \`${JSON.stringify(PARAMS)}\``, '');
  if (failures.length) {
    lines.push('## Failed runs', '');
    for (const f of failures) lines.push(`- ${f.contestant}/${f.workload} round ${f.round}: ${f.error.split('\n')[0]}`);
    lines.push('');
  }
  return { text: lines.join('\n'), met, missed };
}

// --- main ------------------------------------------------------------------------------
async function main() {
  const only = (process.env.BENCH_ONLY || '')
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
  const workloads = WORKLOADS.filter((w) => only.length === 0 || only.includes(w.id));
  if (workloads.length === 0) throw new Error(`BENCH_ONLY matches no workload (${WORKLOADS.map((w) => w.id).join(', ')})`);
  fs.mkdirSync(OUT_DIR, { recursive: true });
  const info = { machine: machine(), build: build(), params: PARAMS, rounds: ROUNDS, quick: QUICK };
  const started = Date.now();
  console.error(
    `obo-native bench: ${workloads.length} workloads × ${ROUNDS} rounds × 3 contestants${QUICK ? ' (quick)' : ''}; ` +
      `${info.machine.cpu}, ${info.machine.cores} cores, Node ${info.machine.node}`,
  );
  const idp = await startIdp();
  const results = {};
  const failures = [];
  try {
    for (const workload of workloads) {
      results[workload.id] = { native: [], lean: [], stack: [] };
      for (let round = 1; round <= ROUNDS; round++) {
        for (const contestant of CONTESTANTS) {
          await idp.control('reset');
          let result = null;
          for (let attempt = 1; attempt <= 2 && !result; attempt++) {
            try {
              result = await runChild(idp, contestant, workload.id);
            } catch (err) {
              console.error(`  ! ${err.message.split('\n')[0]}${attempt === 1 ? ' (retrying once)' : ''}`);
              if (attempt === 2) failures.push({ workload: workload.id, contestant, round, error: err.message });
            }
          }
          if (!result) continue;
          result.run = { round, build: addonDigest(), loadAvg1m: +os.loadavg()[0].toFixed(2) };
          results[workload.id][contestant].push(result);
          const shown = workload.metrics.map((m) => `${m.key}=${fmt(result.metrics[m.key], m.digits)}`).join(' ');
          console.error(`  ${workload.id.padEnd(7)} round ${round} ${contestant.padEnd(6)} ${shown}`);
        }
      }
    }
  } finally {
    await idp.control('close').catch(() => idp.child.kill());
  }
  info.elapsedMs = Date.now() - started;
  info.buildAfter = build();
  const { text, met, missed } = render(results, info, failures);
  process.stdout.write(`${text}\n`);
  fs.mkdirSync(path.dirname(RESULTS), { recursive: true });
  fs.writeFileSync(RESULTS, `${text}\n`);
  const raw = path.join(OUT_DIR, `raw-${QUICK ? 'quick-' : ''}${info.machine.date.replace(/[:.]/g, '-')}.json`);
  fs.writeFileSync(raw, JSON.stringify({ info, results, failures }, null, 2));
  console.error(`wrote ${path.relative(process.cwd(), RESULTS)} and ${path.relative(process.cwd(), raw)}; targets ${met} met, ${missed} missed`);
  if (failures.length) process.exitCode = 1;
}

main().catch((err) => {
  console.error(err && err.stack ? err.stack : err);
  process.exit(1);
});
