'use strict';
/**
 * Instances of the package in processes of their own (see
 * fixtures/redis-instance.js), driven over IPC: what the multi-instance
 * suites need to act as a deployment of several servers on one Redis.
 */
const path = require('node:path');
const { fork } = require('node:child_process');

const FIXTURE = path.join(__dirname, '..', 'fixtures', 'redis-instance.js');

class Instance {
  static async start(env = {}) {
    const child = fork(FIXTURE, [], { env: { PATH: process.env.PATH, ...env }, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    const instance = new Instance(child);
    await new Promise((resolve, reject) => {
      child.once('message', (message) => (message.ready ? resolve() : reject(new Error('unexpected first message'))));
      child.once('exit', () => reject(new Error('the instance exited before it was ready')));
    });
    return instance;
  }

  constructor(child) {
    this.child = child;
    this.pending = new Map();
    this.nextId = 0;
    child.on('message', ({ id, value, error }) => {
      const call = this.pending.get(id);
      if (!call) return;
      this.pending.delete(id);
      if (error) call.reject(Object.assign(new Error(error.message), error));
      else call.resolve(value);
    });
    child.once('exit', () => {
      for (const call of this.pending.values()) call.reject(new Error('the instance exited'));
      this.pending.clear();
    });
  }

  ask(op, args = {}) {
    const id = ++this.nextId;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.child.send({ id, op, ...args });
    });
  }

  configure(options) {
    return this.ask('configure', { options });
  }

  /** One call, or `count` identical ones, concurrently. */
  async exchange(call, count = 1) {
    const outcomes = await this.ask('exchange', { calls: Array.from({ length: count }, () => call) });
    return count === 1 ? outcomes[0] : outcomes;
  }

  start(call, count = 1) {
    return this.ask('start', { calls: Array.from({ length: count }, () => call) });
  }

  /** Counters since the last `mark()` (the package's own count since it was loaded). */
  async stats() {
    const now = await this.ask('stats');
    const since = this.baseline || {};
    return Object.fromEntries(Object.entries(now).map(([name, value]) => [name, value - (since[name] || 0)]));
  }

  async mark() {
    this.baseline = await this.ask('stats');
  }

  async kill() {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    const exited = new Promise((resolve) => this.child.once('exit', resolve));
    this.child.kill('SIGKILL');
    await exited;
  }
}

/** Polls a condition over IPC until it holds (an event the test waits for). */
async function eventually(condition, timeoutMs = 20000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await condition()) return;
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

module.exports = { Instance, eventually };
