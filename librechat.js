'use strict';
/**
 * The LibreChat drop-in: `exchangeOboToken` (OboTokenService) and
 * `getGraphApiToken` (GraphTokenService) with their exact signatures,
 * configured from LibreChat's environment variables (OPENID_ISSUER,
 * OPENID_CLIENT_ID, OPENID_CLIENT_SECRET, OPENID_TOKEN_ENDPOINT_AUTH_METHOD,
 * PROXY, and for a Redis tier shared by several instances USE_REDIS,
 * REDIS_URI, USE_REDIS_CLUSTER, REDIS_KEY_PREFIX, REDIS_USERNAME,
 * REDIS_PASSWORD, REDIS_CA, CREDS_KEY), read when the first exchange needs them.
 *
 * In api/server/services/OboTokenService.js:
 *
 *   module.exports = require('obo-native/librechat');
 *
 * When the host application has `@librechat/data-schemas`, its `logger` is
 * used; otherwise nothing is logged.
 */
const path = require('node:path');
const { createRequire } = require('node:module');

const obo = require('./index.js');

const LOGGER_PACKAGE = '@librechat/data-schemas';

/**
 * The places to resolve the host's packages from: this package (the usual
 * node_modules lookup), the application's entry script, and the working
 * directory (LibreChat runs from its repository root or from api/).
 */
function hostRequires() {
  const requires = [require];
  const bases = [];
  if (require.main && typeof require.main.filename === 'string') bases.push(require.main.filename);
  try {
    bases.push(path.join(process.cwd(), 'noop.js'));
  } catch {
    // no working directory (deleted): skip it
  }
  for (const base of bases) {
    try {
      requires.push(createRequire(base));
    } catch {
      // not a usable path: skip it
    }
  }
  return requires;
}

/** LibreChat's logger, or undefined when the host does not have it. */
function findHostLogger() {
  for (const load of hostRequires()) {
    try {
      const { logger } = load(LOGGER_PACKAGE);
      if (logger) return logger;
    } catch {
      // not resolvable from there (or failed to load): try the next place
    }
  }
  return undefined;
}

const hostLogger = findHostLogger();
if (hostLogger) {
  try {
    obo.setLogger(hostLogger);
  } catch {
    // not a logger with debug/info/warn/error: log nothing rather than fail the host's start-up
  }
}

const { exchangeOboToken, getGraphApiToken, __internals } = obo;

module.exports = { exchangeOboToken, getGraphApiToken, __internals };
