'use strict';
/**
 * Test certificates made with openssl, for the suites that exercise
 * private_key_jwt: the CLI's, the mock provider's verifier and the package's
 * own credentials. Without openssl those suites are skipped with a visible
 * notice, and fail on CI, where openssl must be present.
 */
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { execFileSync } = require('node:child_process');

/** Whether openssl runs here; says so when it does not (and throws on CI). */
function opensslAvailable(suite) {
  try {
    execFileSync('openssl', ['version'], { stdio: 'ignore' });
    return true;
  } catch {
    if (process.env.CI) throw new Error(`openssl is required on CI to make the test certificates (${suite})`);
    console.warn(`NOTICE: openssl not found; skipping ${suite}`);
    return false;
  }
}

/**
 * A CA, a client certificate it issued (key in PKCS#8 and PKCS#1), and another,
 * self-signed client certificate that no provider has registered.
 */
function makePki(label = 'obo-native test') {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'obo-native-pki-'));
  try {
    const sh = (...args) => execFileSync('openssl', args, { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] });
    const rsa = ['-newkey', 'rsa:2048', '-nodes'];
    sh('req', '-x509', ...rsa, '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '2', '-subj', `/CN=${label} CA`,
      '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign');
    sh('req', '-new', ...rsa, '-keyout', 'client.key', '-out', 'client.csr', '-subj', `/CN=${label} client`);
    sh('x509', '-req', '-in', 'client.csr', '-CA', 'ca.pem', '-CAkey', 'ca.key', '-set_serial', '11', '-days', '2', '-out', 'client.pem');
    sh('pkey', '-in', 'client.key', '-traditional', '-out', 'client.pkcs1.key');
    sh('req', '-x509', ...rsa, '-keyout', 'other.key', '-out', 'other.pem', '-days', '2', '-subj', `/CN=${label} other client`);
    const read = (name) => fs.readFileSync(path.join(dir, name), 'utf8');
    return {
      caCert: read('ca.pem'),
      clientKey: read('client.key'),
      clientKeyPkcs1: read('client.pkcs1.key'),
      clientCert: read('client.pem'),
      otherKey: read('other.key'),
      otherCert: read('other.pem'),
    };
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

module.exports = { opensslAvailable, makePki };
