#!/usr/bin/env node
'use strict';
/**
 * `npm run package`: the tarballs a release publishes, in dist/.
 *
 * - dist/obo-native-<platform>-<version>.tgz for every platform whose binary is
 *   here: `obo-native.<platform>.node` in the repository root (a local build)
 *   or anywhere under the artifacts folder (OBO_NATIVE_ARTIFACTS, default
 *   `artifacts/`, where the release workflow downloads its builds; the
 *   artifacts win over a local build).
 * - dist/obo-native-<version>.tgz, the main package, packed from a staging copy
 *   whose manifest has no scripts and no devDependencies (so `prepare`, which
 *   builds a clone, never reaches a user), no addon of its own, and every
 *   platform package as an optional dependency at its own version.
 *
 * Each tarball is what `npm publish <tarball>` takes, unchanged.
 * `--out DIR` writes them to DIR instead of dist/.
 */
const { execFileSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const ROOT = path.join(__dirname, '..');
const NPM_DIRS = path.join(ROOT, 'npm');
const outAt = process.argv.indexOf('--out');
const DIST = outAt > 0 && process.argv[outAt + 1] ? path.resolve(process.argv[outAt + 1]) : path.join(ROOT, 'dist');
const NPM = process.platform === 'win32' ? 'npm.cmd' : 'npm';

const manifest = JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8'));
const { name, version } = manifest;
const binaryName = manifest.napi.binaryName;
const artifacts = path.resolve(ROOT, process.env.OBO_NATIVE_ARTIFACTS || 'artifacts');

/** Every file under dir, recursively (none when dir does not exist). */
function walk(dir) {
  if (!fs.existsSync(dir)) return [];
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const full = path.join(dir, entry.name);
    return entry.isDirectory() ? walk(full) : [full];
  });
}

/** `npm pack` of a staged folder into dist/; returns the tarball's name. */
function pack(dir) {
  const env = { ...process.env };
  // Under `npm run`, npm's own settings for this package would leak into the child.
  for (const key of Object.keys(env)) if (/^npm_/i.test(key)) delete env[key];
  const out = execFileSync(NPM, ['pack', '--json', '--ignore-scripts', '--pack-destination', DIST], { cwd: dir, env, encoding: 'utf8' });
  return JSON.parse(out)[0].filename;
}

function copyInto(stage, relative) {
  const from = path.join(ROOT, relative);
  const to = path.join(stage, relative);
  fs.mkdirSync(path.dirname(to), { recursive: true });
  fs.cpSync(from, to, { recursive: true });
}

/**
 * `npm publish --provenance` refuses a manifest whose repository is not the
 * one that built it; in GitHub Actions that repository is known, so every
 * manifest names it (elsewhere the manifests are left as they are).
 */
const provenance = process.env.GITHUB_REPOSITORY
  ? { repository: { type: 'git', url: `git+${process.env.GITHUB_SERVER_URL || 'https://github.com'}/${process.env.GITHUB_REPOSITORY}.git` } }
  : {};

function main() {
  const platforms = fs.readdirSync(NPM_DIRS).filter((dir) => fs.existsSync(path.join(NPM_DIRS, dir, 'package.json')));
  const found = walk(artifacts);
  fs.mkdirSync(DIST, { recursive: true });
  for (const file of fs.readdirSync(DIST)) if (file.endsWith('.tgz')) fs.rmSync(path.join(DIST, file));

  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'obo-package-'));
  const packed = [];
  try {
    const optionalDependencies = {};
    for (const platform of platforms) {
      const platformManifest = JSON.parse(fs.readFileSync(path.join(NPM_DIRS, platform, 'package.json'), 'utf8'));
      optionalDependencies[platformManifest.name] = version;

      const binary = `${binaryName}.${platform}.node`;
      const source = found.find((file) => path.basename(file) === binary) || [path.join(ROOT, binary)].find((file) => fs.existsSync(file));
      if (!source) continue;
      const stage = path.join(tmp, platform);
      fs.mkdirSync(stage);
      fs.writeFileSync(path.join(stage, 'package.json'), `${JSON.stringify({ ...platformManifest, version, ...provenance }, null, 2)}\n`);
      fs.copyFileSync(path.join(NPM_DIRS, platform, 'README.md'), path.join(stage, 'README.md'));
      fs.copyFileSync(path.join(ROOT, 'LICENSE'), path.join(stage, 'LICENSE'));
      fs.copyFileSync(source, path.join(stage, binary));
      packed.push({ tarball: pack(stage), from: path.relative(ROOT, source) });
    }

    const stage = path.join(tmp, name);
    fs.mkdirSync(stage);
    const files = manifest.files.filter((entry) => !entry.endsWith('.node'));
    for (const entry of files) copyInto(stage, entry.replace(/\/$/, ''));
    const published = { ...manifest, ...provenance, files, optionalDependencies };
    delete published.scripts;
    delete published.devDependencies;
    delete published.jest;
    fs.writeFileSync(path.join(stage, 'package.json'), `${JSON.stringify(published, null, 2)}\n`);
    packed.push({ tarball: pack(stage), from: 'package.json' });
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
  for (const { tarball, from } of packed) console.log(`${path.relative(process.cwd(), path.join(DIST, tarball))}  (${from})`);
}

main();
