/**
 * The LibreChat drop-in: `exchangeOboToken` (OboTokenService) and
 * `getGraphApiToken` (GraphTokenService) with their exact signatures,
 * configured from LibreChat's environment variables (OPENID_ISSUER,
 * OPENID_CLIENT_ID, OPENID_CLIENT_SECRET, OPENID_TOKEN_ENDPOINT_AUTH_METHOD,
 * PROXY). Uses `@librechat/data-schemas`' logger when the host has it.
 *
 * ```js
 * // api/server/services/OboTokenService.js
 * module.exports = require('obo-native/librechat');
 * ```
 */
export { exchangeOboToken, getGraphApiToken, __internals } from './index.js'
export type { OboToken, OboTokenWithExpiry, OboUser, OboIdentityContext, OboError } from './index.js'
