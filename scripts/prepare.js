#!/usr/bin/env node
'use strict';
/**
 * `prepare`: what `npm install` runs in a clone (never for users of the
 * published package, whose manifest has no scripts). Builds the release addon.
 *
 * On Linux x64 with glibc the build is the released one, linked against
 * glibc 2.17 by `cargo zigbuild` (scripts/build-compat.sh), whenever zig and
 * cargo-zigbuild are installed; OBO_NATIVE_COMPAT=1 requires it (and lets the
 * script install them: CI sets it), OBO_NATIVE_COMPAT=0 never uses it.
 * Otherwise a plain `napi build`, whose glibc floor is this machine's.
 *
 * A clone installed without its own dependencies (e.g. `npm install
 * ../obo-native` on an unbuilt checkout) has no napi-rs CLI: that ends in a
 * message saying what to run, not in `napi: not found`.
 */
const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const ROOT = path.join(__dirname, '..');

function run(command, args) {
  const result = spawnSync(command, args, { cwd: ROOT, stdio: 'inherit', shell: process.platform === 'win32' });
  if (result.error) throw result.error;
  return result.status;
}

function quiet(command, args) {
  const result = spawnSync(command, args, { cwd: ROOT, stdio: 'ignore', shell: process.platform === 'win32' });
  return !result.error && result.status === 0;
}

function fail(lines) {
  console.error(`obo-native: ${lines.join('\n  ')}`);
  process.exit(1);
}

function isLinuxX64Glibc() {
  if (process.platform !== 'linux' || process.arch !== 'x64') return false;
  const report = process.report && process.report.getReport();
  return Boolean(report && report.header && report.header.glibcVersionRuntime);
}

/** On PATH, or in the virtual environment scripts/install-zig.sh makes. */
function zigToolsPresent() {
  const tools = process.env.OBO_NATIVE_TOOLS || path.join(os.homedir(), '.cache', 'obo-native-tools');
  if (fs.existsSync(path.join(tools, 'zig-venv', 'bin', 'cargo-zigbuild'))) return true;
  return quiet('cargo-zigbuild', ['--version']) && (quiet('zig', ['version']) || quiet('python3', ['-m', 'ziglang', 'version']));
}

function main() {
  try {
    require.resolve('@napi-rs/cli/package.json', { paths: [ROOT] });
  } catch {
    fail([
      `cannot build ${ROOT}: its build tools are not installed.`,
      'Run `npm install` inside that folder first (it needs Rust >= 1.88, a C compiler and Node.js >= 20.17),',
      'or install the published package (`npm install obo-native`), which needs none of them.',
    ]);
  }
  if (!quiet('cargo', ['--version'])) {
    fail(['building needs Rust >= 1.88 (`cargo` was not found on PATH): https://rustup.rs', 'or install the published package (`npm install obo-native`), which needs no Rust.']);
  }

  const compat = process.env.OBO_NATIVE_COMPAT;
  if (isLinuxX64Glibc() && compat !== '0' && (compat === '1' || zigToolsPresent())) {
    process.exit(run('sh', [path.join('scripts', 'build-compat.sh')]));
  }
  if (compat === '1') fail(['OBO_NATIVE_COMPAT=1: the glibc 2.17 build is for Linux x64 with glibc only.']);
  const status = run('npm', ['run', 'build']);
  if (status === 0 && isLinuxX64Glibc()) {
    console.log('obo-native: built against this machine\'s glibc; `npm run build:compat` builds the released way, for glibc 2.17 and later.');
  }
  process.exit(status);
}

main();
