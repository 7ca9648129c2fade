'use strict';
/**
 * Contestant "stack on Redis": LibreChat's service exactly as stack.js runs
 * it, over the token store LibreChat uses when several instances share a
 * Redis (`USE_REDIS=true`): `standardCache(OPENID_EXCHANGED_TOKENS, 10 min)`
 * in `api/cache/cacheFactory.js`, i.e. a Keyv on `@keyv/redis` whose client
 * is `createClient({ url })` from `@keyv/redis` (`api/cache/redisClients.js`),
 * with the deployment's key prefix as the adapter's namespace and `::` as
 * its separator.
 *
 * Every read is a Redis GET and Keyv's JSON parse; there is no in-process
 * tier in front of it, and the in-flight map is per process, so instances
 * that miss the same key at once each exchange it.
 *
 * `setup(provider, { redisUri, redisKeyPrefix })`: both are required.
 */
const { Keyv } = require('keyv');
const { default: KeyvRedis, createClient } = require('@keyv/redis');
const { createStackContestant } = require('./stack.js');

const NAMESPACE = 'openid_exchanged_tokens';
const TEN_MINUTES_MS = 600_000;
/** LibreChat's `GLOBAL_PREFIX_SEPARATOR`. */
const PREFIX_SEPARATOR = '::';

async function createTokensCache({ redisUri, redisKeyPrefix }) {
  if (!redisUri) throw new Error('stack-redis: setup needs params.redisUri');
  const client = createClient({ url: redisUri });
  client.on('error', (err) => process.stderr.write(`stack-redis: redis client error: ${err.message}\n`));
  const keyvRedis = new KeyvRedis(client);
  const cache = new Keyv(keyvRedis, { namespace: NAMESPACE, ttl: TEN_MINUTES_MS });
  keyvRedis.namespace = redisKeyPrefix || '';
  keyvRedis.keyPrefixSeparator = PREFIX_SEPARATOR;
  // Connect now, as a server does at start, so the first timed call does not pay for it.
  await keyvRedis.getClient();
  return cache;
}

module.exports = createStackContestant({
  name: 'stack-redis',
  createTokensCache,
  // The entries live in Redis: not countable without a round trip.
  cacheSize: () => null,
});
