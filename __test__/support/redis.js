'use strict';
/**
 * Real `redis-server` processes for the Redis tier's jest tests: a single node
 * or a three-node cluster, on free loopback ports (never the machine's shared
 * 6379), without persistence, each in its own temporary directory.
 *
 * Without `redis-server`/`redis-cli`, `redisAvailable(name)` prints a visible
 * notice and returns false so that the suite can skip; with `REQUIRE_REDIS=1`
 * (CI) it throws instead.
 */
const { spawn, spawnSync, execFile } = require('node:child_process');
const fs = require('node:fs');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');
const { promisify } = require('node:util');

const run = promisify(execFile);
const SHARED_PORT = 6379;

let installed;
function redisAvailable(suite) {
  if (installed === undefined) {
    const works = (program) => spawnSync(program, ['--version'], { stdio: 'ignore' }).status === 0;
    installed = works('redis-server') && works('redis-cli');
  }
  if (!installed) {
    if (process.env.REQUIRE_REDIS === '1') {
      throw new Error('REQUIRE_REDIS=1, but redis-server or redis-cli is not installed');
    }
    console.warn(`NOTICE: redis-server/redis-cli not found: skipping ${suite} (REQUIRE_REDIS=1 fails instead)`);
  }
  return installed;
}

function listenOn(port) {
  return new Promise((resolve) => {
    const server = net.createServer();
    server.once('error', () => resolve(null));
    server.listen(port, '127.0.0.1', () => {
      const bound = server.address().port;
      server.close(() => resolve(bound));
    });
  });
}

/** A free port; `withBus` also needs port + 10000 free, for the cluster bus. */
async function freePort({ withBus = false } = {}) {
  for (;;) {
    const port = await listenOn(0);
    if (port === SHARED_PORT) continue;
    if (withBus && (port > 55535 || (await listenOn(port + 10000)) === null)) continue;
    return port;
  }
}

/** Resolves once something on `port` answers a PING (PONG, or NOAUTH with a password). */
function answersPing(port) {
  return new Promise((resolve) => {
    const socket = net.connect(port, '127.0.0.1');
    const done = (ok) => {
      socket.destroy();
      resolve(ok);
    };
    socket.once('connect', () => socket.write('PING\r\n'));
    socket.once('data', () => done(true));
    socket.once('error', () => done(false));
  });
}

const pause = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

class RedisServer {
  constructor(port, args) {
    this.port = port;
    this.uri = `redis://127.0.0.1:${port}`;
    this.args = args;
    this.dir = fs.mkdtempSync(path.join(os.tmpdir(), `obo-native-redis-${port}-`));
    this.child = null;
  }

  async launch() {
    const child = spawn(
      'redis-server',
      ['--port', String(this.port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', this.dir, ...this.args],
      { stdio: 'ignore' },
    );
    this.child = child;
    let exited = null;
    child.once('exit', (code, signal) => {
      exited = signal || code;
      if (this.child === child) this.child = null;
    });
    const deadline = Date.now() + 20000;
    while (!(await answersPing(this.port))) {
      if (exited !== null) throw new Error(`redis-server on port ${this.port} exited (${exited})`);
      if (Date.now() > deadline) throw new Error(`redis-server on port ${this.port} did not start`);
      await pause(10);
    }
    return this;
  }

  get pid() {
    return this.child ? this.child.pid : null;
  }

  /** Kills it (SIGKILL: no goodbye to clients) and waits for the exit. */
  async kill() {
    const child = this.child;
    if (!child) return;
    this.child = null;
    if (child.exitCode === null && child.signalCode === null) {
      const exited = new Promise((resolve) => child.once('exit', resolve));
      child.kill('SIGKILL');
      await exited;
    }
  }

  /** Starts it again on the same port, empty. */
  async restart() {
    await this.kill();
    return this.launch();
  }

  /** Freezes it (SIGSTOP): connections stay open, nothing answers. */
  pause() {
    this.child.kill('SIGSTOP');
  }

  resume() {
    this.child.kill('SIGCONT');
  }

  async stop() {
    await this.kill();
    fs.rmSync(this.dir, { recursive: true, force: true });
  }
}

/** A single node; `args` are extra `redis-server` arguments (e.g. `['--requirepass', 'x']`). */
async function startRedis({ args = [] } = {}) {
  return new RedisServer(await freePort(), args).launch();
}

/** Three masters, no replicas, every slot assigned; `uris` is the comma-separated list. */
async function startRedisCluster() {
  const args = ['--cluster-enabled', 'yes', '--cluster-config-file', 'nodes.conf', '--cluster-node-timeout', '3000'];
  const nodes = [];
  const stop = () => Promise.all(nodes.map((node) => node.stop()));
  try {
    for (let i = 0; i < 3; i += 1) nodes.push(await new RedisServer(await freePort({ withBus: true }), args).launch());
    const addresses = nodes.map((node) => `127.0.0.1:${node.port}`);
    await run('redis-cli', ['--cluster', 'create', ...addresses, '--cluster-replicas', '0', '--cluster-yes']);
    const deadline = Date.now() + 30000;
    for (const node of nodes) {
      for (;;) {
        const { stdout } = await run('redis-cli', ['-p', String(node.port), 'cluster', 'info']);
        if (stdout.includes('cluster_state:ok') && stdout.includes('cluster_known_nodes:3')) break;
        if (Date.now() > deadline) throw new Error('the Redis cluster did not settle');
        await pause(50);
      }
    }
  } catch (err) {
    await stop();
    throw err;
  }
  return { nodes, uris: nodes.map((node) => node.uri).join(','), stop };
}

/** Runs a `redis-cli` command against `port` and returns its raw output (for scans in tests). */
async function redisCli(port, ...command) {
  const { stdout } = await run('redis-cli', ['-p', String(port), ...command], { encoding: 'buffer' });
  return stdout;
}

module.exports = { redisAvailable, startRedis, startRedisCluster, redisCli, freePort };
