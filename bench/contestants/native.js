'use strict';
/**
 * Contestant "native": the obo-native package itself (the facade at the
 * package root, over the Rust addon), called as today's LibreChat calls it:
 * `exchangeOboToken(user, assertion, scopes, true, identityContext)`.
 */
const obo = require('../..');
// The addon and the facade's identity rules, for the two-call miss path of before issue 19 (workload 2b).
const addon = require('../../loader.js');
const { resolveIdentity } = require('../../lib/identity.js');
/** The process's engine, which the package's top-level functions use (a handle to it; any number may exist). */
const defaultEngine = typeof addon.defaultClient === 'function' ? addon.defaultClient() : undefined;
/** `lookup` with the engine handle where the addon has clients, without it where it has not. */
const lookup = (...key) => (defaultEngine === undefined ? addon.lookup(...key) : addon.lookup(defaultEngine, ...key));

/**
 * Whether this build implements today's contract (identity context,
 * assertion-bound keys, `expires_at`); an older build ignores the fifth
 * argument, and the runner says so in the results.
 */
const identityAware = typeof obo.__internals?.buildOboCacheKey === 'function';

module.exports = {
  name: 'native',
  identityAware,
  returnsExpiresAt: identityAware,

  /**
   * @param {{tokenEndpoint: string, clientId: string, clientSecret: string}} provider
   * @param {{redisUri?: string, redisKeyPrefix?: string, cacheEncryptionKey?: string}} [params]
   *   with `redisUri`, the Redis tier shared by the instances of the multi-instance workload
   */
  async setup(provider, params = {}) {
    const redis = params.redisUri
      ? { redisUri: params.redisUri, redisKeyPrefix: params.redisKeyPrefix, cacheEncryptionKey: params.cacheEncryptionKey }
      : {};
    obo.configure({
      tokenEndpoint: provider.tokenEndpoint,
      clientId: provider.clientId,
      clientSecret: provider.clientSecret,
      tokenEndpointAuthMethod: 'client_secret_basic',
      // Above the memory workload's 100 000 entries plus its warm-up, so nothing is evicted (default 100 000).
      maxCacheEntries: 1_000_000,
      ...redis,
    });
  },

  exchangeOboToken: obo.exchangeOboToken,

  /** Each caller of a fan-out gets a result object of its own (the bench checks it). */
  ownResults: true,

  /**
   * The miss path as it was before issue 19: a synchronous `lookup` in the
   * addon (the assertion converted and hashed) before the call, which then
   * makes its own single call. Only for workload 2b, on keys that miss.
   */
  exchangeLookingUpFirst(user, accessToken, scopes, fromCache, identityContext) {
    const who = resolveIdentity(user, identityContext, { subject: '', tenant: '', issuer: '', error: undefined });
    if (lookup(who.tenant, who.issuer, who.subject, scopes, accessToken)) {
      throw new Error('exchangeLookingUpFirst: the key was already cached; workload 2b needs keys that miss');
    }
    return obo.exchangeOboToken(user, accessToken, scopes, fromCache, identityContext);
  },

  cacheSize() {
    return obo.stats().cacheSize;
  },

  /** The package's counters (the Redis tier's among them). */
  stats: () => obo.stats(),
};
