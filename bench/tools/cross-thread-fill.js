'use strict';
/**
 * Repeats workload 6's cold fill and counts the provider's token requests
 * each time: 4 worker threads ask, at the same moment, for the same 256 cold
 * keys (8 in flight per thread). A cache shared across threads with single
 * flight makes exactly 256 requests; one cache per thread makes 4 × 256.
 *
 *   node bench/tools/cross-thread-fill.js [native|lean|stack] [iterations=30]
 *
 * Prints every iteration that made a different number of requests, then a
 * summary. Not part of `npm run bench`.
 */
const { fork } = require('node:child_process');
const path = require('node:path');
const { Worker, isMainThread, workerData, parentPort } = require('node:worker_threads');
const { SCOPE, identity, loadContestant, makeAssertion, pool } = require('../common.js');

const THREADS = 4;
const KEYS = 256;
const LANES = 8;

function startIdp() {
  return new Promise((resolve, reject) => {
    const child = fork(path.join(__dirname, '..', 'idp.js'), [], { stdio: ['ignore', 'ignore', 'inherit', 'ipc'] });
    const pending = new Map();
    let nextId = 0;
    child.on('message', (message) => {
      if (message.provider) {
        resolve({
          provider: message.provider,
          control: (cmd) =>
            new Promise((done) => {
              const id = ++nextId;
              pending.set(id, done);
              child.send({ id, cmd });
            }),
          close: () => child.kill(),
        });
        return;
      }
      const done = pending.get(message.id);
      pending.delete(message.id);
      if (done) done(message);
    });
    child.once('error', reject);
  });
}

async function main() {
  const name = process.argv[2] || 'native';
  const iterations = Number(process.argv[3]) || 30;
  const expected = name === 'native' ? KEYS : THREADS * KEYS;
  const idp = await startIdp();
  const counts = [];
  try {
    for (let iteration = 0; iteration < iterations; iteration++) {
      const users = Array.from({ length: KEYS }, (_, i) => `fill-${Date.now().toString(36)}-${iteration}-${i}`);
      const tokens = users.map((id) => makeAssertion(id));
      const workers = [];
      await new Promise((resolve, reject) => {
        let ready = 0;
        let done = 0;
        for (let t = 0; t < THREADS; t++) {
          const worker = new Worker(__filename, { workerData: { name, provider: idp.provider, users, tokens } });
          workers.push(worker);
          worker.on('error', reject);
          worker.on('message', async (message) => {
            if (message === 'ready' && ++ready === THREADS) {
              await idp.control('reset');
              workers.forEach((w) => w.postMessage('go'));
            }
            if (message === 'done' && ++done === THREADS) resolve();
          });
        }
      });
      const { tokenRequests } = await idp.control('count');
      counts.push(tokenRequests);
      if (tokenRequests !== expected) {
        console.log(`iteration ${iteration}: ${tokenRequests} provider requests for ${KEYS} keys (expected ${expected})`);
      }
      await Promise.all(workers.map((w) => w.terminate()));
    }
  } finally {
    idp.close();
  }
  const off = counts.filter((c) => c !== expected).length;
  console.log(
    `${name}: ${iterations} cold fills, ${off} with a number of provider requests other than ${expected} ` +
      `(min ${Math.min(...counts)}, max ${Math.max(...counts)})`,
  );
}

async function thread() {
  const c = loadContestant(workerData.name);
  await c.setup(workerData.provider);
  const users = workerData.users.map((subject) => identity(subject));
  parentPort.postMessage('ready');
  parentPort.once('message', async () => {
    await pool(users.length, LANES, (k) =>
      c.exchangeOboToken(users[k].user, workerData.tokens[k], SCOPE, true, users[k].context),
    );
    parentPort.postMessage('done');
  });
}

if (isMainThread) {
  main().catch((err) => {
    console.error(err);
    process.exit(1);
  });
} else {
  thread();
}
