'use strict';
/**
 * What the benchmark measures, and whether it may: the addon must be the
 * release build of the sources in the tree, so that results.md can say how
 * to rebuild the very bytes it measured (issue 20). A `.node` file is
 * ignored by git, so "clean tree" says nothing about it; a binary left over
 * from an earlier build, or built with other flags, would otherwise be
 * measured and reported under the commit of the sources.
 *
 * `prepare()` runs `npm run build` first (cargo rebuilds only what its
 * inputs changed; a fresh tree costs a few seconds), unless told not to, and
 * then refuses to go on unless the `.node` on disk is byte for byte the
 * release artifact cargo produced, and no Rust input is newer than that
 * artifact. It returns the toolchain, profile and command to record.
 */
const { execFileSync, spawnSync } = require('node:child_process');
const crypto = require('node:crypto');
const fs = require('node:fs');
const path = require('node:path');

const ROOT = path.join(__dirname, '..');
/** What cargo reads to build the addon; a change to any of them changes the binary. */
const RUST_INPUTS = ['src', 'Cargo.toml', 'Cargo.lock', 'build.rs'];
const BUILD_COMMAND = 'npm run build';

/** A program's output without its final newline (porcelain lines start with a space), or null. */
function run(program, args) {
  try {
    return execFileSync(program, args, { cwd: ROOT, stdio: ['ignore', 'pipe', 'ignore'] }).toString().trimEnd();
  } catch {
    return null;
  }
}

const sha256 = (file) => crypto.createHash('sha256').update(fs.readFileSync(file)).digest('hex');

/** rustc, cargo and napi CLI versions, and the environment that changes what cargo builds. */
function toolchain() {
  const rustcVerbose = run('rustc', ['-vV']) || '';
  const field = (name) => (new RegExp(`^${name}: (.*)$`, 'm').exec(rustcVerbose) || [])[1] || null;
  let napiCli = null;
  try {
    napiCli = require(path.join(ROOT, 'node_modules', '@napi-rs', 'cli', 'package.json')).version;
  } catch {
    // not installed: `npm run build` would fail anyway
  }
  const buildEnv = Object.fromEntries(
    Object.entries(process.env).filter(([name]) => /^(RUSTFLAGS|CARGO_ENCODED_RUSTFLAGS|CARGO_PROFILE_|CARGO_BUILD_|CARGO_TARGET_DIR|CARGO_INCREMENTAL)/.test(name)),
  );
  return {
    rustc: rustcVerbose.split('\n')[0] || 'unknown (rustc not found)',
    rustcCommit: field('commit-hash'),
    host: field('host'),
    llvm: field('LLVM version'),
    cargo: run('cargo', ['-V']) || 'unknown',
    napiCli,
    buildEnv,
  };
}

/** The shared library cargo writes for `profile` (napi builds with `--target <host>`). */
function artifact(host, profile) {
  const targetDir = process.env.CARGO_TARGET_DIR ? path.resolve(ROOT, process.env.CARGO_TARGET_DIR) : path.join(ROOT, 'target');
  const name =
    process.platform === 'win32' ? 'obo_native.dll' : process.platform === 'darwin' ? 'libobo_native.dylib' : 'libobo_native.so';
  return path.join(targetDir, host || '', profile, name);
}

/**
 * Where the dependencies of the release artifact were compiled: their build
 * scripts' OUT_DIR paths are compiled into them (e.g. serde's `include!`),
 * which changes the addon's bytes, so rebuilding the same bytes needs the
 * same target directory path (or a remapped one). Read from the
 * `root-output` file cargo keeps for each build script run.
 */
function dependenciesBuiltIn(host) {
  const buildDir = path.join(path.dirname(artifact(host, 'release')), 'build');
  const suffix = `${path.sep}${path.join(host || '', 'release', 'build')}${path.sep}`;
  const roots = new Set();
  let entries = [];
  try {
    entries = fs.readdirSync(buildDir);
  } catch {
    return [];
  }
  for (const entry of entries) {
    // The addon's own build script (napi-build) only passes linker arguments: its OUT_DIR is in no code.
    if (entry.startsWith('obo-native-')) continue;
    try {
      const outDir = fs.readFileSync(path.join(buildDir, entry, 'root-output'), 'utf8').trim();
      const at = outDir.indexOf(suffix);
      if (at > 0) roots.add(outDir.slice(0, at));
    } catch {
      // a build script that has not run here, or a crate without one
    }
  }
  return [...roots].sort();
}

const cargoHome = () => process.env.CARGO_HOME || path.join(require('node:os').homedir(), '.cargo');

/** The newest of the Rust inputs cargo would see (tracked or not, unless ignored), with its time. */
function newestInput() {
  const listed = run('git', ['ls-files', '-co', '--exclude-standard', '--', ...RUST_INPUTS]);
  const files = listed === null ? [] : listed.split('\n').filter(Boolean);
  let newest = { file: null, mtimeMs: 0 };
  for (const file of files) {
    try {
      const { mtimeMs } = fs.statSync(path.join(ROOT, file));
      if (mtimeMs > newest.mtimeMs) newest = { file, mtimeMs };
    } catch {
      // deleted in the working tree: cargo does not read it either
    }
  }
  return newest;
}

/** Rust inputs that differ from the commit: then the hash cannot be rebuilt from the commit alone. */
function rustInputsChanged() {
  const status = run('git', ['status', '--porcelain', '--untracked-files=normal', '--', ...RUST_INPUTS]);
  return status === null ? null : status.split('\n').filter(Boolean).map((line) => line.slice(3));
}

/**
 * Builds (unless `build` is false) and checks the addon; throws when the
 * `.node` is not the release build of the sources in the tree.
 */
function prepare({ build = true, log = (line) => process.stderr.write(`${line}\n`) } = {}) {
  const tools = toolchain();
  let buildMs = null;
  if (build) {
    log(`  building the addon first: ${BUILD_COMMAND} (cargo rebuilds only if the sources changed)`);
    const t0 = Date.now();
    const built = spawnSync('npm', ['run', 'build'], { cwd: ROOT, stdio: ['ignore', 'inherit', 'inherit'], shell: process.platform === 'win32' });
    buildMs = Date.now() - t0;
    if (built.status !== 0) throw new Error(`${BUILD_COMMAND} failed (exit ${built.status}); nothing measured`);
  }
  const nodeFiles = fs.readdirSync(ROOT).filter((f) => f.endsWith('.node')).sort();
  if (nodeFiles.length !== 1) {
    throw new Error(`expected exactly one addon (*.node) at the package root, found ${nodeFiles.length}: ${nodeFiles.join(', ') || 'none'}`);
  }
  const addon = nodeFiles[0];
  const addonDigest = sha256(path.join(ROOT, addon));
  const candidates = ['release', 'debug'].map((profile) => ({ profile, file: artifact(tools.host, profile) }));
  const match = candidates.find(({ file }) => fs.existsSync(file) && sha256(file) === addonDigest);
  const profile = match ? match.profile : null;
  if (profile !== 'release') {
    throw new Error(
      `${addon} is ${profile ? `the ${profile} build` : 'no build cargo made in this tree'} ` +
        `(it matches no ${candidates[0].file}); run ${BUILD_COMMAND}, or let the bench build (unset BENCH_BUILD=0)`,
    );
  }
  const newest = newestInput();
  const builtAt = fs.statSync(match.file).mtimeMs;
  if (newest.mtimeMs > builtAt) {
    throw new Error(
      `${newest.file} is newer than the release build of ${addon} (${new Date(newest.mtimeMs).toISOString()} > ` +
        `${new Date(builtAt).toISOString()}): the binary does not match the sources; run ${BUILD_COMMAND}, or unset BENCH_BUILD=0`,
    );
  }
  return {
    addon,
    addonSha256: addonDigest,
    profile,
    buildCommand: BUILD_COMMAND,
    rebuiltBeforeRun: build,
    buildMs,
    builtAt: new Date(builtAt).toISOString(),
    checkout: ROOT,
    targetDir: path.resolve(path.dirname(match.file), '..', '..'),
    dependenciesBuiltIn: dependenciesBuiltIn(tools.host),
    cargoHome: cargoHome(),
    rustInputsChanged: rustInputsChanged(),
    toolchain: tools,
  };
}

module.exports = { prepare, toolchain, RUST_INPUTS, BUILD_COMMAND };
