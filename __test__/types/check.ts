/**
 * Compiled with `tsc --noEmit -p __test__/types/tsconfig.json` by
 * __test__/types.test.js: the public types as a user imports them, through the
 * package's own name and `exports` map (self-reference, module nodenext).
 * Each `@ts-expect-error` line proves a wrong use is rejected; tsc fails if it
 * is accepted.
 */
import {
  exchangeOboToken,
  acquireOboToken,
  getGraphApiToken,
  configure,
  clearCache,
  stats,
  createOboClient,
} from 'obo-native'
import type { OboToken, OboTokenWithExpiry, OboIdentityContext, ConfigureOptions, OboStats, OboError, OboUser, Logger } from 'obo-native'
import type { AcquireOboTokenOptions, ClientAssertionRequest, OboClient, OboClientOptions, OboAbortSignal } from 'obo-native'
import { __internals } from 'obo-native'
import * as librechat from 'obo-native/librechat'
import { startMockIdp, faults, mintToken, GRANT_TYPE, TOKEN_EXCHANGE_GRANT_TYPE } from 'obo-native/testing'
import type { MockIdp, MockFault, MockRequest } from 'obo-native/testing'

type Equal<A, B> = (<T>() => T extends A ? 1 : 2) extends <T>() => T extends B ? 1 : 2 ? true : false
function assertType<T extends true>(): void {}

// ---- OboToken: the exact shape LibreChat's callers read ----
assertType<Equal<OboToken, { access_token: string; token_type: 'Bearer'; expires_in: number; scope: string }>>()

// ---- exchangeOboToken ----
type Exchange = typeof exchangeOboToken
assertType<Equal<ReturnType<Exchange>, Promise<OboToken>>>()
assertType<Equal<Parameters<Exchange>[1], string>>()
assertType<Equal<Parameters<Exchange>[2], string>>()
assertType<Equal<Parameters<Exchange>[3], boolean | null | undefined>>()

async function uses(): Promise<void> {
  const user: OboUser = { openidId: 'oidc-sub-123', email: 'user@example.com', name: 'User' }
  const token: OboToken = await exchangeOboToken(user, 'access-token', 'api://mcp/Read')
  const header: string = `${token.token_type} ${token.access_token}`
  const seconds: number = token.expires_in
  const scope: string = token.scope
  await exchangeOboToken(user, 'access-token', 'api://mcp/Read', false)
  await exchangeOboToken({ openidId: null }, 'access-token', 'api://mcp/Read', true)
  await exchangeOboToken({ email: 'no-openid@example.com' }, 'access-token', 'api://mcp/Read')
  await exchangeOboToken(null, 'access-token', 'api://mcp/Read')
  await exchangeOboToken(undefined, 'access-token', 'api://mcp/Read')
  // A LibreChat user document: any object with an openidId.
  const libreChatUser = { _id: 'x', openidId: 'sub', provider: 'openid', role: 'USER' }
  await exchangeOboToken(libreChatUser, 'access-token', 'api://mcp/Read')

  // ---- today's LibreChat: the identity context, and expires_at in the result ----
  const context: OboIdentityContext = { openidSubject: 'sub', tenantId: 'tenant-a', openidIssuer: 'https://issuer-a.example.com' }
  const withExpiry: OboTokenWithExpiry = await exchangeOboToken(user, 'access-token', 'api://mcp/Read', true, context)
  const expiresAt: number = withExpiry.expires_at
  await exchangeOboToken({ openidId: 'sub', tenantId: 't', openidIssuer: 'https://i' }, 'access-token', 'api://mcp/Read', null)
  await getGraphApiToken(user, 'access-token', 'https://graph.microsoft.com/.default', true, context)
  const key: string | null = __internals.buildOboCacheKey({ user, accessToken: 'a', scopes: 's', identityContext: context })
  const sameKey: string | null = librechat.__internals.buildOboCacheKey({ user, accessToken: 'a', scopes: 's' })
  // @ts-expect-error a four-argument call's result has no expires_at
  token.expires_at
  // @ts-expect-error tenantId is a string
  await exchangeOboToken(user, 'access-token', 'api://mcp/Read', true, { tenantId: 42 })

  // @ts-expect-error scopes are required
  await exchangeOboToken(user, 'access-token')
  // @ts-expect-error openidId is a string
  await exchangeOboToken({ openidId: 42 }, 'access-token', 'api://mcp/Read')
  // @ts-expect-error the access token is a string
  await exchangeOboToken(user, 12345, 'api://mcp/Read')
  // @ts-expect-error scopes are one space-separated string, not an array
  await exchangeOboToken(user, 'access-token', ['api://mcp/Read'])
  // @ts-expect-error fromCache is a boolean
  await exchangeOboToken(user, 'access-token', 'api://mcp/Read', 'yes')
  // @ts-expect-error the token type is always 'Bearer'
  const basic: OboToken['token_type'] = 'Basic'
  // @ts-expect-error expires_in is a number
  const text: string = token.expires_in
  // @ts-expect-error there is no refresh token
  token.refresh_token

  // ---- getGraphApiToken: same signature ----
  const graph: OboToken = await getGraphApiToken(user, 'access-token', 'https://graph.microsoft.com/.default')
  await getGraphApiToken(user, 'access-token', 'https://graph.microsoft.com/.default', false)
  // @ts-expect-error scopes are required
  await getGraphApiToken(user, 'access-token')

  // ---- rejections ----
  try {
    await exchangeOboToken(user, 'access-token', 'api://mcp/Read')
  } catch (caught) {
    const err = caught as OboError
    const message: string = err.message
    const retryable: boolean | undefined = err.retryable
    const reason: 'exchange_failed' | 'empty_exchange_response' | undefined = err.oboFailureReason
    const status: number | undefined = err.status
    const code: string | undefined = err.code
    const oauthError: string | undefined = err.error
    const description: string | undefined = err.error_description
    const codes: number[] | undefined = err.error_codes
    const correlation: string | undefined = err.correlation_id
    const trace: string | undefined = err.trace_id
    const timestamp: string | undefined = err.timestamp
    const suberror: string | undefined = err.suberror
    const claims: string | undefined = err.claims
    const retryAfter: number | undefined = err.retryAfter
    const throttled: boolean | undefined = err.throttled
    const asError: Error = err
    // @ts-expect-error error_codes are numbers
    const wrongCodes: string[] | undefined = err.error_codes
    // @ts-expect-error not a failure reason
    const wrongReason: 'nope' = err.oboFailureReason
  }
  void [header, seconds, scope, graph]
}

// ---- configure / clearCache / stats ----
const options: ConfigureOptions = {
  issuer: 'https://login.microsoftonline.com/tenant-id/v2.0',
  clientId: 'client-id',
  clientSecret: 'secret',
  tokenEndpointAuthMethod: 'client_secret_post',
  proxy: 'http://proxy.local:3128',
  timeoutMs: 10_000,
  maxRetries: 1,
  retryDelayMs: 300,
  expirySkewSeconds: 30,
  maxCacheEntries: 100_000,
  maxRetryAfterMs: 5_000,
}
configure(options)
configure({ tokenEndpoint: 'https://login.microsoftonline.com/tenant-id/oauth2/v2.0/token', clientId: 'client-id', clientSecret: 'secret' })
configure(null)
configure({ issuer: 'https://issuer.example/v2.0', clientId: 'client-id', clientSecret: 'secret', redisUri: 'redis://cache:6380', redisCluster: false, redisKeyPrefix: 'lc:', redisTimeoutMs: 200, cacheEncryptionKey: '00'.repeat(32) })
assertType<Equal<ReturnType<typeof configure>, void>>()
// @ts-expect-error options (or null) are required
configure()
// @ts-expect-error unknown options are refused
configure({ issuer: 'https://issuer.example/v2.0', clientId: 'client-id', clientSecret: 'secret', timeout: 5 })
// @ts-expect-error timeoutMs is a number
configure({ issuer: 'https://issuer.example/v2.0', clientId: 'client-id', clientSecret: 'secret', timeoutMs: '5000' })
// @ts-expect-error options are an object
configure('https://issuer.example/v2.0')

clearCache()
assertType<Equal<ReturnType<typeof clearCache>, void>>()

const counters: OboStats = stats()
const statNames: Array<keyof OboStats> = [
  'cacheHits',
  'cacheMisses',
  'coalesced',
  'exchanges',
  'retries',
  'failures',
  'throttled',
  'cacheSize',
  'inFlight',
  'redisHits',
  'redisMisses',
  'redisErrors',
  'lockWaits',
]
const hits: number = counters.cacheHits + counters.cacheMisses + counters.coalesced + counters.exchanges
const rest: number = counters.retries + counters.failures + counters.throttled + counters.cacheSize + counters.inFlight
const shared: number = counters.redisHits + counters.redisMisses + counters.redisErrors + counters.lockWaits
// @ts-expect-error counters are numbers
const hitsText: string = counters.cacheHits
// @ts-expect-error no such counter
counters.evictions

// ---- Logger: LibreChat's winston logger fits ----
const winstonLike = {
  error: (message: string, ...meta: unknown[]): void => void [message, meta],
  warn: (message: string, ...meta: unknown[]): void => void [message, meta],
  info: (message: string, ...meta: unknown[]): void => void [message, meta],
  debug: (message: string, ...meta: unknown[]): void => void [message, meta],
}
const logger: Logger = winstonLike

// ---- obo-native/librechat: the same functions ----
assertType<Equal<typeof librechat.exchangeOboToken, typeof exchangeOboToken>>()
assertType<Equal<typeof librechat.getGraphApiToken, typeof getGraphApiToken>>()
const libreChatToken: Promise<librechat.OboToken> = librechat.exchangeOboToken({ openidId: 'sub' }, 'access-token', 'api://mcp/Read')
// @ts-expect-error configure is not part of the LibreChat entry
librechat.configure(null)

// ---- obo-native/testing ----
async function mock(): Promise<void> {
  const idp: MockIdp = await startMockIdp({ clientSecret: null, expiresIn: '3600', tenant: 't' })
  configure({ issuer: idp.issuer, clientId: idp.clientId, clientSecret: idp.clientSecret ?? undefined })
  idp
    .enqueue(faults.invalidSignature(), faults.mfaRequired(), faults.throttled(30), faults.unavailable())
    .enqueue({ status: 400, body: { error: 'invalid_grant', error_description: 'AADSTS240002: id_token', error_codes: [240002] } })
    .enqueue({ hold: true }, { delayMs: 50 }, { reset: true }, { hang: true }, { status: 503, retryAfter: 2 })
  const requests: MockRequest[] = idp.tokenRequests()
  const assertion: string | undefined = requests[0]?.form.assertion
  const released: number = idp.release()
  const expected: string = idp.expectedToken('assertion', 'api://mcp/Read')
  const minted: string = mintToken('assertion', 'scope', { lifetime: 60 })
  const grant: 'urn:ietf:params:oauth:grant-type:jwt-bearer' = GRANT_TYPE
  const fault: MockFault = faults.consentRequired()
  idp.reset()
  await idp.close()
  // @ts-expect-error hold is a boolean
  idp.enqueue({ hold: 'yes' })
  // @ts-expect-error an unknown fault
  faults.teapot()
  // @ts-expect-error the port is a number
  await startMockIdp({ port: '8080' })
  void [assertion, released, expected, minted, grant, fault]
}

void [uses, mock, logger, statNames, hits, rest, shared, libreChatToken]

// ---- acquireOboToken and enterprise credentials ----
async function enterprise(): Promise<void> {
  const token: OboTokenWithExpiry = await acquireOboToken({ assertion: 'a', scopes: ['api://x/Read', 'api://x/Write'] })
  const expiresAt: number = token.expires_at
  const options: AcquireOboTokenOptions = { assertion: 'a', scopes: 'api://x/Read', identityContext: { openidSubject: 's' }, forceRefresh: true, claims: '{}' }
  await acquireOboToken(options)
  // @ts-expect-error scopes are strings
  await acquireOboToken({ assertion: 'a', scopes: [1] })
  // @ts-expect-error claims is the challenge's text
  await acquireOboToken({ assertion: 'a', scopes: 's', claims: { access_token: {} } })
  // @ts-expect-error the assertion is required
  await acquireOboToken({ scopes: 's' })
  configure({
    tokenEndpoint: 'https://login.microsoftonline.com/common/oauth2/v2.0/token',
    clientId: 'app',
    tokenEndpointAuthMethod: 'private_key_jwt',
    clientCertificate: '-----BEGIN CERTIFICATE-----',
    clientPrivateKey: '-----BEGIN PRIVATE KEY-----',
    clientAssertionAlgorithm: 'RS256',
    sendX5c: true,
    clientCapabilities: ['cp1'],
  })
  configure({ issuer: 'https://i', clientId: 'app', clientAssertion: async ({ clientId, tokenEndpoint }: ClientAssertionRequest) => `${clientId}${tokenEndpoint}` })
  configure({ issuer: 'https://i', clientId: 'app', clientAssertion: 'signed.elsewhere.jwt' })
  // @ts-expect-error ES256 is not offered
  configure({ issuer: 'https://i', clientId: 'app', clientAssertionAlgorithm: 'ES256' })
  // @ts-expect-error a function returns the assertion, not an object
  configure({ issuer: 'https://i', clientId: 'app', clientAssertion: () => ({ jwt: 'x' }) })
}
void enterprise

// ---- independent clients and cancellation ----
async function clients(): Promise<void> {
  const clientOptions: OboClientOptions = { issuer: 'https://keycloak.example/realms/r', clientId: 'librechat', clientSecret: 's' }
  const client: OboClient = createOboClient(clientOptions)
  const fromEnv: OboClient = createOboClient()
  const token: OboTokenWithExpiry = await client.acquireOboToken({ assertion: 'a', scopes: 's', user: { openidId: 'u' } })
  const plain: OboToken = await client.exchangeOboToken({ openidId: 'u' }, 'a', 's')
  const graph: OboToken = await client.getGraphApiToken({ openidId: 'u' }, 'a', 's')
  const counters: OboStats = client.stats()
  const endpoint: string | null = client.tokenEndpoint()
  client.clearCache()
  const closing: Promise<void> = client.close()
  await fromEnv.close()
  // @ts-expect-error a client is configured once, when it is created
  client.configure(clientOptions)
  // @ts-expect-error the client id is required
  createOboClient({ issuer: 'https://i' })
  // @ts-expect-error unknown options are refused
  createOboClient({ issuer: 'https://i', clientId: 'c', timeout: 5 })
  // @ts-expect-error close() is awaited, not read synchronously
  const closedAt: number = client.close()

  // a Node.js / DOM AbortSignal fits structurally; so does any object with its members
  const signalLike: OboAbortSignal = { aborted: false, addEventListener: () => undefined, removeEventListener: () => undefined }
  await acquireOboToken({ assertion: 'a', scopes: 's', signal: signalLike })
  await client.acquireOboToken({ assertion: 'a', scopes: 's', signal: null })
  // @ts-expect-error a signal is an AbortSignal, not a flag
  await acquireOboToken({ assertion: 'a', scopes: 's', signal: true })
  // @ts-expect-error a signal is an AbortSignal, not a timeout
  await acquireOboToken({ assertion: 'a', scopes: 's', signal: 5000 })
  void [token, plain, graph, counters, endpoint, closing, closedAt]
}
void clients

// ---- token exchange (RFC 8693) ----
async function tokenExchange(): Promise<void> {
  const keycloak: ConfigureOptions = {
    issuer: 'https://sso.example.com/realms/librechat',
    clientId: 'librechat',
    clientSecret: 's',
    grantType: 'token-exchange',
    audience: ['mcp-a', 'mcp-b'],
    resource: 'https://mcp.example.com/api',
    subjectTokenType: 'urn:ietf:params:oauth:token-type:access_token',
    requestedTokenType: 'urn:ietf:params:oauth:token-type:access_token',
    actorToken: async ({ clientId }: ClientAssertionRequest) => `actor-for-${clientId}`,
    actorTokenType: 'urn:ietf:params:oauth:token-type:jwt',
  }
  configure(keycloak)
  configure({ issuer: 'https://x.okta.com/oauth2/default', clientId: 'c', clientSecret: 's', grantType: 'token-exchange', audience: 'api://default', actorToken: 'actor.jwt' })
  createOboClient({ issuer: 'https://tenant.auth0.com/', clientId: 'c', clientSecret: 's', grantType: 'token-exchange', subjectTokenType: 'urn:acme:legacy-token' })
  await acquireOboToken({ assertion: 'a', scopes: 's', audience: 'mcp-a', resource: ['https://r.example.com/'] })
  // @ts-expect-error audience applies to token exchange, not to the default jwt-bearer grant
  configure({ issuer: 'https://i', clientId: 'c', clientSecret: 's', audience: 'mcp-a' })
  // @ts-expect-error no such grant
  configure({ issuer: 'https://i', clientId: 'c', clientSecret: 's', grantType: 'saml2-bearer' })
  // @ts-expect-error audiences are strings
  configure({ issuer: 'https://i', clientId: 'c', clientSecret: 's', grantType: 'token-exchange', audience: [1] })
  // @ts-expect-error the actor token function returns the token, not an object
  configure({ issuer: 'https://i', clientId: 'c', clientSecret: 's', grantType: 'token-exchange', actorToken: () => ({ token: 'x' }) })
  // @ts-expect-error a per-call resource is a string or strings
  await acquireOboToken({ assertion: 'a', scopes: 's', resource: new URL('https://r.example.com/') })
}
void tokenExchange

async function mockTokenExchange(): Promise<void> {
  const idp: MockIdp = await startMockIdp({ tokenExchange: { audiences: ['mcp-a'], requireAudience: true } })
  await startMockIdp({ tokenExchange: true })
  const grant: 'urn:ietf:params:oauth:grant-type:token-exchange' = TOKEN_EXCHANGE_GRANT_TYPE
  const expected: string = idp.expectedExchangeToken('subject', 'scope', { audience: ['mcp-a'] })
  const audiences: string[] | undefined = idp.tokenRequests()[0]?.audiences
  // @ts-expect-error tokenExchange is a flag or settings, not a grant type
  await startMockIdp({ tokenExchange: 'urn:ietf:params:oauth:grant-type:token-exchange' })
  void [grant, expected, audiences]
}
void mockTokenExchange
