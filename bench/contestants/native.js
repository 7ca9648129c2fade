'use strict';
/**
 * Contestant "native": the obo-native package itself (the facade at the
 * package root, over the Rust addon).
 */
const obo = require('../..');

module.exports = {
  name: 'native',

  /** @param {{tokenEndpoint: string, clientId: string, clientSecret: string}} provider */
  async setup(provider) {
    obo.configure({
      tokenEndpoint: provider.tokenEndpoint,
      clientId: provider.clientId,
      clientSecret: provider.clientSecret,
      tokenEndpointAuthMethod: 'client_secret_basic',
    });
  },

  exchangeOboToken: obo.exchangeOboToken,

  cacheSize() {
    return obo.stats().cacheSize;
  },
};
