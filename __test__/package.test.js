'use strict';
/**
 * Packaging: `npm pack` holds the loader, the types, the README, the CLI and
 * the addon built for this platform (and nothing of the sources or tests);
 * the tarball installs into a fresh project without a registry, and an
 * exchange runs through it from CommonJS, from ESM
 * (`import { exchangeOboToken } from 'obo-native'`), from TypeScript (types
 * resolved through `exports`), and through its `obo-native` bin.
 */
const { execFile } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { promisify } = require('node:util');

const { startMockIdp } = require('../testing');

const run = promisify(execFile);
const ROOT = path.join(__dirname, '..');
const TSC = path.join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc');
const NPM = process.platform === 'win32' ? 'npm.cmd' : 'npm';

jest.setTimeout(180_000);

/** The environment of child processes: ours, minus what `npm test` sets for its own package. */
function cleanEnv(extra = {}) {
  const env = {};
  for (const [name, value] of Object.entries(process.env)) {
    if (/^npm_/i.test(name) || name === 'INIT_CWD' || name === 'NODE_OPTIONS') continue;
    env[name] = value;
  }
  return { ...env, NO_COLOR: '1', ...extra };
}

let tmp;
let tarball;
let packedFiles;
let consumer;
let idp;

beforeAll(async () => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'obo-pack-'));
  // --ignore-scripts: pack the addon already built, without `prepare` rebuilding it.
  const { stdout } = await run(NPM, ['pack', '--ignore-scripts', '--json', '--pack-destination', tmp], {
    cwd: ROOT,
    env: cleanEnv(),
    maxBuffer: 16 << 20,
  });
  const [info] = JSON.parse(stdout);
  tarball = path.join(tmp, info.filename);
  packedFiles = info.files.map((file) => file.path.replace(/\\/g, '/'));

  consumer = path.join(tmp, 'consumer');
  fs.mkdirSync(consumer);
  await run(NPM, ['init', '-y'], { cwd: consumer, env: cleanEnv() });
  // No dependencies: nothing is fetched from a registry.
  await run(NPM, ['install', tarball, '--ignore-scripts', '--no-audit', '--no-fund', '--offline', '--no-package-lock'], {
    cwd: consumer,
    env: cleanEnv(),
  });
  idp = await startMockIdp({ clientSecret: 'pack-test-client-secret' });
});

afterAll(async () => {
  if (idp) await idp.close();
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
});

describe('npm pack', () => {
  it('holds the loader, the types, the README, the CLI and the addon for this platform', () => {
    const addons = fs.readdirSync(ROOT).filter((name) => name.endsWith('.node'));
    expect(addons.length).toBeGreaterThan(0);
    expect(packedFiles).toEqual(
      expect.arrayContaining([
        'package.json',
        'README.md',
        'LICENSE',
        'index.js',
        'loader.js',
        'index.d.ts',
        'librechat.js',
        'librechat.d.ts',
        'testing.js',
        'testing.d.ts',
        'cli.js',
        'cli/claims.js',
        'cli/code.js',
        'cli/demo.js',
        'cli/exchange.js',
        'cli/explain.js',
        'cli/ui.js',
        ...addons,
      ]),
    );
    // Every module the package's own files require is in the tarball.
    for (const file of packedFiles.filter((name) => name.endsWith('.js'))) {
      const source = fs.readFileSync(path.join(ROOT, file), 'utf8');
      for (const [, relative] of source.matchAll(/require\('(\.{1,2}\/[^']+)'\)/g)) {
        const target = path.posix.normalize(path.posix.join(path.posix.dirname(file), relative));
        const candidates = [target, `${target}.js`, `${target}.json`];
        expect({ file, requires: relative, packed: candidates.some((name) => packedFiles.includes(name)) }).toEqual({
          file,
          requires: relative,
          packed: true,
        });
      }
    }
  });

  it('leaves out the sources, the tests and the build output', () => {
    for (const file of packedFiles) {
      expect(file).not.toMatch(/^(src|__test__|target|bench|node_modules|\.ci)\//);
      expect(file).not.toMatch(/^(Cargo\.(toml|lock)|build\.rs|\.gitignore|package-lock\.json)$/);
    }
  });

  it('installs into a fresh project, bin included', () => {
    const installed = path.join(consumer, 'node_modules', 'obo-native');
    expect(fs.existsSync(path.join(installed, 'package.json'))).toBe(true);
    expect(fs.existsSync(path.join(installed, 'src'))).toBe(false);
    const bin = path.join(consumer, 'node_modules', '.bin', process.platform === 'win32' ? 'obo-native.cmd' : 'obo-native');
    expect(fs.existsSync(bin)).toBe(true);
    expect(fs.readFileSync(path.join(installed, 'cli.js'), 'utf8').startsWith('#!/usr/bin/env node')).toBe(true);
  });
});

describe('the installed package', () => {
  const CJS = `
    const path = require('node:path');
    const { exchangeOboToken, getGraphApiToken, configure, clearCache, stats } = require('obo-native');
    const librechat = require('obo-native/librechat');
    const { startMockIdp, faults } = require('obo-native/testing');
    (async () => {
      const idp = await startMockIdp();
      configure({ issuer: idp.issuer, clientId: idp.clientId, clientSecret: idp.clientSecret });
      const user = { openidId: 'cjs-user' };
      const token = await exchangeOboToken(user, 'cjs-assertion', 'api://mcp/Read');
      const again = await librechat.exchangeOboToken(user, 'cjs-assertion', 'api://mcp/Read');
      idp.enqueue(faults.consentRequired());
      const graph = await getGraphApiToken({ openidId: 'cjs-graph' }, 'cjs-assertion', 'https://graph.microsoft.com/.default').catch((err) => err.message);
      const counters = stats();
      clearCache();
      await idp.close();
      console.log(JSON.stringify({
        resolved: path.relative(process.cwd(), require.resolve('obo-native')),
        token, expected: idp.expectedToken('cjs-assertion', 'api://mcp/Read'),
        sameToken: again.access_token === token.access_token,
        graph, requests: idp.tokenRequests().length, counters,
      }));
    })().catch((err) => { console.error(err); process.exit(1); });
  `;

  const ESM = `
    import { exchangeOboToken, configure, stats } from 'obo-native';
    import obo from 'obo-native';
    import { getGraphApiToken } from 'obo-native/librechat';
    import { startMockIdp } from 'obo-native/testing';
    import { createRequire } from 'node:module';
    const idp = await startMockIdp({ expiresIn: 1800 });
    configure({ tokenEndpoint: idp.tokenEndpoint, clientId: idp.clientId, clientSecret: idp.clientSecret });
    const token = await exchangeOboToken({ openidId: 'esm-user' }, 'esm-assertion', 'api://mcp/Write');
    const graph = await getGraphApiToken({ openidId: 'esm-user' }, 'esm-assertion', 'https://graph.microsoft.com/.default');
    await idp.close();
    console.log(JSON.stringify({
      resolved: createRequire(import.meta.url).resolve('obo-native'),
      token, expected: idp.expectedToken('esm-assertion', 'api://mcp/Write'),
      graphScope: graph.scope,
      defaultExport: typeof obo.exchangeOboToken,
      sameFunction: obo.exchangeOboToken === exchangeOboToken,
      exchanges: stats().exchanges,
    }));
  `;

  const digest = (token) => token.split('.')[2];

  it('exchanges from CommonJS (require)', async () => {
    fs.writeFileSync(path.join(consumer, 'cjs.js'), CJS);
    const { stdout } = await run(process.execPath, ['cjs.js'], { cwd: consumer, env: cleanEnv() });
    const result = JSON.parse(stdout);
    expect(result.resolved).toBe(path.join('node_modules', 'obo-native', 'index.js'));
    expect(result.token).toMatchObject({ token_type: 'Bearer', expires_in: 3600, scope: 'api://mcp/Read' });
    expect(digest(result.token.access_token)).toBe(digest(result.expected));
    expect(result.sameToken).toBe(true);
    expect(result.graph).toMatch(/^Graph token acquisition failed: invalid_grant: AADSTS65001/);
    expect(result.requests).toBe(2);
    expect(result.counters).toMatchObject({ exchanges: 2, cacheHits: 1, failures: 1 });
  });

  it('exchanges from ESM (import { exchangeOboToken } from \'obo-native\')', async () => {
    fs.writeFileSync(path.join(consumer, 'esm.mjs'), ESM);
    const { stdout } = await run(process.execPath, ['esm.mjs'], { cwd: consumer, env: cleanEnv() });
    const result = JSON.parse(stdout);
    expect(result.resolved).toBe(path.join(fs.realpathSync(consumer), 'node_modules', 'obo-native', 'index.js'));
    expect(result.token).toMatchObject({ token_type: 'Bearer', expires_in: 1800, scope: 'api://mcp/Write' });
    expect(digest(result.token.access_token)).toBe(digest(result.expected));
    expect(result).toMatchObject({ graphScope: 'https://graph.microsoft.com/.default', defaultExport: 'function', sameFunction: true, exchanges: 2 });
  });

  it('type-checks a TypeScript consumer against the shipped .d.ts files (through exports)', async () => {
    fs.writeFileSync(
      path.join(consumer, 'consumer.mts'),
      [
        "import { exchangeOboToken, configure, type OboToken, type OboError } from 'obo-native';",
        "import { getGraphApiToken } from 'obo-native/librechat';",
        "import { startMockIdp, faults, type MockIdp } from 'obo-native/testing';",
        'const idp: MockIdp = await startMockIdp();',
        'idp.enqueue(faults.throttled(3));',
        "configure({ issuer: idp.issuer, clientId: idp.clientId, clientSecret: 'x' });",
        "const token: OboToken = await exchangeOboToken({ openidId: 'ts' }, 'assertion', 'api://x/.default');",
        "const graph: OboToken = await getGraphApiToken({ openidId: 'ts' }, 'assertion', 'https://graph.microsoft.com/.default');",
        'const codes: number[] | undefined = ({} as OboError).error_codes;',
        'export const seconds: number = token.expires_in + graph.expires_in + (codes?.length ?? 0);',
        '',
      ].join('\n'),
    );
    fs.writeFileSync(
      path.join(consumer, 'tsconfig.json'),
      JSON.stringify({
        compilerOptions: { strict: true, noEmit: true, target: 'es2022', lib: ['es2022'], module: 'nodenext', moduleResolution: 'nodenext', types: [], skipLibCheck: false },
        files: ['consumer.mts'],
      }),
    );
    const result = await run(process.execPath, [TSC, '-p', 'tsconfig.json'], { cwd: consumer, env: cleanEnv() }).then(
      (done) => ({ code: 0, ...done }),
      (err) => ({ code: err.code, stdout: err.stdout, stderr: err.stderr }),
    );
    expect(`${result.stdout}${result.stderr}`).toBe('');
    expect(result.code).toBe(0);
  });

  it('runs the obo-native bin: an exchange against a provider, and the demo', async () => {
    const bin = path.join(consumer, 'node_modules', '.bin', 'obo-native');
    const assertionFile = path.join(consumer, 'assertion.txt');
    fs.writeFileSync(assertionFile, 'bin-assertion');
    const env = cleanEnv({ OPENID_CLIENT_ID: idp.clientId, OPENID_CLIENT_SECRET: 'pack-test-client-secret' });
    const { stdout } = await run(bin, ['exchange', '--token-endpoint', idp.tokenEndpoint, '--scope', 'api://bin/Read', '--assertion-file', assertionFile, '--json'], {
      cwd: consumer,
      env,
    });
    expect(JSON.parse(stdout)).toMatchObject({ ok: true, tokenEndpoint: idp.tokenEndpoint, expires_in: 3600, claims: { aud: 'api://bin' } });
    expect(idp.tokenRequests()).toHaveLength(1);

    const demo = await run(bin, ['demo'], { cwd: consumer, env: cleanEnv() });
    expect(demo.stdout).toMatch(/1 000 calls → 1 request to the provider/);
    expect(demo.stdout).toMatch(/\[6\/6\] stats\(\)/);
  });
});

/** napi-rs's name for this platform, worked out here apart from the loader's own code. */
function thisPlatform() {
  if (process.platform === 'linux') {
    return `linux-${process.arch}-${process.report.getReport().header.glibcVersionRuntime ? 'gnu' : 'musl'}`;
  }
  if (process.platform === 'win32') return `win32-${process.arch}-msvc`;
  return `${process.platform}-${process.arch}`;
}

describe('npm run package', () => {
  const PLATFORMS = fs.readdirSync(path.join(ROOT, 'npm')).sort();
  const { version } = require('../package.json');
  let dist;
  let listing;

  /** A file of a tarball, as text. */
  async function fileOf(tarball, file) {
    const { stdout } = await run('tar', ['-xzOf', path.join(dist, tarball), `package/${file}`], { maxBuffer: 16 << 20 });
    return stdout;
  }

  beforeAll(async () => {
    dist = path.join(tmp, 'dist');
    await run(process.execPath, [path.join(ROOT, 'scripts', 'package.js'), '--out', dist], { cwd: ROOT, env: cleanEnv() });
    listing = fs.readdirSync(dist).sort();
  });

  it('writes the main tarball and one for this platform, named as npm names them', () => {
    expect(listing).toEqual(expect.arrayContaining([`obo-native-${version}.tgz`, `obo-native-${thisPlatform()}-${version}.tgz`]));
    for (const name of listing) {
      expect(name).toMatch(new RegExp(`^obo-native(-(${PLATFORMS.join('|')}))?-${version.replace(/\./g, '\\.')}\\.tgz$`));
    }
  });

  it('publishes a main manifest with no install-time script and every platform package as an optional dependency at its own version', async () => {
    const manifest = JSON.parse(await fileOf(`obo-native-${version}.tgz`, 'package.json'));
    expect(manifest.scripts).toBeUndefined();
    expect(manifest.devDependencies).toBeUndefined();
    expect(manifest.optionalDependencies).toEqual(Object.fromEntries(PLATFORMS.map((platform) => [`obo-native-${platform}`, version])));
    const { stdout } = await run('tar', ['-tzf', path.join(dist, `obo-native-${version}.tgz`)]);
    expect(stdout.split('\n').filter((file) => file.endsWith('.node'))).toEqual([]);
    expect(stdout).toMatch(/^package\/loader\.js$/m);
  });

  it('gives every platform package the os, cpu and libc npm chooses it by', () => {
    expect(PLATFORMS).toEqual(['darwin-arm64', 'darwin-x64', 'linux-arm64-gnu', 'linux-arm64-musl', 'linux-x64-gnu', 'linux-x64-musl', 'win32-x64-msvc']);
    for (const platform of PLATFORMS) {
      const manifest = JSON.parse(fs.readFileSync(path.join(ROOT, 'npm', platform, 'package.json'), 'utf8'));
      const [os, cpu, abi] = platform.split('-');
      expect({ platform, name: manifest.name, os: manifest.os, cpu: manifest.cpu, libc: manifest.libc, main: manifest.main, scripts: manifest.scripts }).toEqual({
        platform,
        name: `obo-native-${platform}`,
        os: [os],
        cpu: [cpu],
        libc: os === 'linux' ? [abi === 'musl' ? 'musl' : 'glibc'] : undefined,
        main: `obo-native.${platform}.node`,
        scripts: undefined,
      });
    }
  });

  it("packs this platform's package with its addon, at the main package's version", async () => {
    const tarball = `obo-native-${thisPlatform()}-${version}.tgz`;
    const manifest = JSON.parse(await fileOf(tarball, 'package.json'));
    expect(manifest).toMatchObject({ name: `obo-native-${thisPlatform()}`, version });
    const addon = await run('tar', ['-tzf', path.join(dist, tarball)]);
    expect(addon.stdout.split('\n').filter(Boolean).sort()).toEqual(['package/LICENSE', 'package/README.md', `package/obo-native.${thisPlatform()}.node`, 'package/package.json']);
  });
});

describe('the loader', () => {
  let count = 0;

  /** A folder holding only loader.js, as an installed obo-native without its platform package. */
  function loaderAlone() {
    const dir = path.join(tmp, `loader-${++count}`);
    fs.mkdirSync(dir);
    fs.copyFileSync(path.join(ROOT, 'loader.js'), path.join(dir, 'loader.js'));
    return dir;
  }

  /** require('./loader.js') in a child process, after `prelude`; what it exported, or what it threw. */
  async function load(dir, prelude = '') {
    const script = `${prelude}
      try {
        console.log(JSON.stringify({ exports: Object.keys(require('./loader.js')).sort() }));
      } catch (err) {
        console.log(JSON.stringify({ name: err.name, message: err.message, code: err.code, platform: err.platform, packageName: err.packageName, cause: err.cause ? err.cause.message : undefined }));
      }`;
    const { stdout } = await run(process.execPath, ['-e', script], { cwd: dir, env: cleanEnv({ NODE_PATH: '' }) });
    return JSON.parse(stdout);
  }

  const addonFile = () => path.join(ROOT, `obo-native.${thisPlatform()}.node`);

  it('throws, with no local build and no platform package, an Error naming the platform, the package and the two ways out', async () => {
    const platform = thisPlatform();
    const result = await load(loaderAlone());
    expect(result).toMatchObject({ name: 'Error', code: 'OBO_NATIVE_NOT_FOUND', platform, packageName: `obo-native-${platform}` });
    expect(result.message).toContain(`obo-native has no native addon for ${platform}`);
    expect(result.message).toContain(`npm install obo-native-${platform}`);
    expect(result.message).toMatch(/build it from source \(Rust >= 1\.88, a C compiler, Node\.js >= 20\.17\): https:\/\/www\.npmjs\.com\/package\/obo-native#from-source/);
    expect(result.message).not.toMatch(/npm bug|bug in npm|npm has a bug/i);
  });

  (process.platform === 'linux' ? it : it.skip)('looks for the musl package when Node runs on musl', async () => {
    const musl = `process.report.getReport = () => ({ header: {}, sharedObjects: ['/lib/ld-musl-${process.arch === 'x64' ? 'x86_64' : 'aarch64'}.so.1'] });`;
    const result = await load(loaderAlone(), musl);
    expect(result).toMatchObject({ code: 'OBO_NATIVE_NOT_FOUND', platform: `linux-${process.arch}-musl`, packageName: `obo-native-linux-${process.arch}-musl` });
    expect(result.message).toContain(`npm install obo-native-linux-${process.arch}-musl`);
  });

  it('says so on a platform no package is published for', async () => {
    const result = await load(loaderAlone(), "Object.defineProperty(process, 'platform', { value: 'freebsd' });");
    expect(result).toMatchObject({ code: 'OBO_NATIVE_NOT_FOUND', platform: `freebsd-${process.arch}`, packageName: `obo-native-freebsd-${process.arch}` });
    expect(result.message).toContain(`obo-native has no prebuilt package for freebsd-${process.arch}`);
    expect(result.message).toContain('linux-x64-gnu, linux-x64-musl, linux-arm64-gnu, linux-arm64-musl, darwin-x64, darwin-arm64, win32-x64-msvc');
    expect(result.message).toMatch(/build it from source/);
  });

  it('reports a local build that is there but does not load, with the loader error as cause', async () => {
    const dir = loaderAlone();
    fs.writeFileSync(path.join(dir, `obo-native.${thisPlatform()}.node`), 'not an addon');
    const result = await load(dir);
    expect(result.code).toBe('OBO_NATIVE_NOT_FOUND');
    expect(result.message).toContain(`obo-native.${thisPlatform()}.node was found but could not be loaded`);
    expect(typeof result.cause).toBe('string');
  });

  it('loads the platform package when there is no local build', async () => {
    const dir = loaderAlone();
    const platformPackage = path.join(dir, 'node_modules', `obo-native-${thisPlatform()}`);
    fs.mkdirSync(platformPackage, { recursive: true });
    fs.copyFileSync(path.join(ROOT, 'npm', thisPlatform(), 'package.json'), path.join(platformPackage, 'package.json'));
    fs.copyFileSync(addonFile(), path.join(platformPackage, `obo-native.${thisPlatform()}.node`));
    const direct = await run(process.execPath, ['-e', `console.log(JSON.stringify(Object.keys(require(${JSON.stringify(addonFile())})).sort()))`], { env: cleanEnv() });
    const result = await load(dir);
    expect(result).toEqual({ exports: JSON.parse(direct.stdout) });
    expect(result.exports.length).toBeGreaterThan(0);
  });
});
