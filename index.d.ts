/** The signed-in user; only `openidId`, `tenantId` and `openidIssuer` are read. */
export interface OboUser {
  /** The OpenID subject. */
  openidId?: string | null
  tenantId?: string | null
  openidIssuer?: string | null
  [key: string]: unknown
}

/**
 * Who the exchange is for, as LibreChat builds it from the request; each field
 * wins over the user's. Values are trimmed; blank ones count as absent.
 */
export interface OboIdentityContext {
  appUserId?: string | null
  /** The OpenID subject (else `user.openidId`). */
  openidSubject?: string | null
  /** Else `user.tenantId`, else `'no-tenant'`. */
  tenantId?: string | null
  /** Else `user.openidIssuer`, else `'no-issuer'`; trailing `/` and `/.well-known/openid-configuration` are dropped. */
  openidIssuer?: string | null
}

/** What an exchange resolves with, as LibreChat's OboTokenService returns it. */
export interface OboToken {
  access_token: string
  token_type: 'Bearer'
  /** Seconds the token still lives (the remaining lifetime on a cache hit). */
  expires_in: number
  /** The requested scopes, as given. */
  scope: string
}

/** The result of a call made with an identity context: also the absolute expiry. */
export interface OboTokenWithExpiry extends OboToken {
  /** When the token expires, in ms since the Unix epoch (the original expiry on a cache hit). */
  expires_at: number
}

/** What a `clientAssertion` function is told about the request it authenticates. */
export interface ClientAssertionRequest {
  clientId: string
  /** The token endpoint the request goes to (after home-tenant routing): the assertion's `aud`. */
  tokenEndpoint: string
}

/**
 * Returns the client assertion (a JWT) for a request; surrounding whitespace is trimmed. A throw, a
 * rejection, or no answer within `timeoutMs` fails that exchange at once, without a request and without a
 * retry, with `code: 'ECLIENTASSERTION'`; the error's `retryable` is the thrown error's own boolean
 * `retryable`, else false.
 */
export type ClientAssertionProvider = (request: ClientAssertionRequest) => string | PromiseLike<string>

/** The options of `acquireOboToken`. */
export interface AcquireOboTokenOptions {
  /** The signed-in user's access token. */
  assertion: string
  /** A string, or an array joined with spaces. */
  scopes: string | readonly string[]
  /** Who the token is for; without `user` and `identityContext`, the assertion's own `tid`, `iss` and `oid` (else `sub`). */
  user?: OboUser | null
  identityContext?: OboIdentityContext | null
  /** Skip the cache (a new token is requested and cached). */
  forceRefresh?: boolean
  /**
   * A claims challenge: the `claims` of Entra's error body (JSON), or the
   * base64 `claims` of a `WWW-Authenticate` challenge. Sent as the `claims`
   * parameter, merged with `clientCapabilities`; skips the cache and the
   * exchanges under way, and the token is cached like any other.
   */
  claims?: string | null
  /** Token exchange: this call's audiences, in place of the configured ones (and a key of their own). */
  audience?: string | readonly string[] | null
  /** Token exchange: this call's resources, in place of the configured ones (and a key of their own). */
  resource?: string | readonly string[] | null
  /**
   * Walks away from the call: once aborted, the call rejects with
   * `signal.reason` (an `AbortError` `DOMException` for `controller.abort()`),
   * at once and without a request when it was aborted before the call. An
   * exchange under way goes on for its other callers and still fills the cache.
   */
  signal?: OboAbortSignal | null
}

/** The options of `beginOboSession`. */
export interface BeginOboSessionOptions {
  /** The signed-in user's access token, exchanged once (with `offline_access`) to begin the session. */
  assertion: string
  /** A string, or an array joined with spaces. `offline_access` is added when absent. */
  scopes: string | readonly string[]
  /** Who the session is for; without `user` and `identityContext`, the assertion's own `tid`, `iss` and `oid` (else `sub`). */
  user?: OboUser | null
  identityContext?: OboIdentityContext | null
  /**
   * The host's own key (a schedule or job id), used as given; beginning again
   * under the same key replaces that session. Default: 32 random bytes, base64url.
   * Keep it like a secret: whoever has it can act for the user.
   */
  sessionKey?: string | null
  /** `grantType: 'token-exchange'`: this exchange's `audience` values, in place of the configured ones. */
  audience?: string | readonly string[] | null
  /** `grantType: 'token-exchange'`: this exchange's `resource` values (absolute URIs), in place of the configured ones. */
  resource?: string | readonly string[] | null
  /** Walks away from the call, as in `acquireOboToken`. */
  signal?: OboAbortSignal | null
}

/** A session just begun: its key (store it with the job) and its first token. The refresh token is never returned. */
export interface OboSessionBegun extends OboTokenWithExpiry {
  sessionKey: string
}

/** The options of `acquireSessionToken`. */
export interface AcquireSessionTokenOptions {
  sessionKey: string
  /** A string, or an array joined with spaces. */
  scopes: string | readonly string[]
  /**
   * Renew even though the session holds a fresh token for these scopes
   * (unless a renewal that ended after this call was made can serve it).
   */
  forceRefresh?: boolean
  /** Walks away from the call; a renewal under way goes on and serves its other callers. */
  signal?: OboAbortSignal | null
}

/**
 * A host's own store of sessions (Mongo, Postgres…). `id` and `value` are
 * opaque strings: the value is sealed (AES-256-GCM under `cacheEncryptionKey`)
 * and bound to its id, and neither holds the session key or the refresh token.
 * Keep `value` under `id` for `ttlMs`; `get` resolves to `null`/`undefined` when there is none.
 */
export interface OboSessionStore {
  get(id: string): Promise<string | null | undefined>
  set(id: string, value: string, ttlMs: number): Promise<unknown>
  delete(id: string): Promise<unknown>
}

/** What `signal` needs of an `AbortSignal`: the DOM's and Node.js's fit, without either's type library. */
export interface OboAbortSignal {
  readonly aborted: boolean
  readonly reason?: unknown
  addEventListener(type: 'abort', listener: () => void, options?: { once?: boolean }): void
  removeEventListener(type: 'abort', listener: () => void): void
}

/** Any object with these methods: winston, pino, console. */
export interface Logger {
  debug(message: string, ...meta: unknown[]): unknown
  info(message: string, ...meta: unknown[]): unknown
  warn(message: string, ...meta: unknown[]): unknown
  error(message: string, ...meta: unknown[]): unknown
}

/** The options of every grant; `null`/`undefined` fields mean the default. */
export interface OboBaseOptions {
  /** OpenID discovery from `{issuer}/.well-known/openid-configuration`. */
  issuer?: string | null
  /** The token endpoint, without discovery (takes precedence over `issuer`). */
  tokenEndpoint?: string | null
  clientId: string
  clientSecret?: string | null
  /** Default `client_secret_basic`, or `private_key_jwt` when a certificate or `clientAssertion` is given. */
  tokenEndpointAuthMethod?: 'client_secret_basic' | 'client_secret_post' | 'private_key_jwt' | 'none' | null
  /**
   * `private_key_jwt`: the application's certificate, PEM text (not a path), leaf
   * first, chain optional. Requests then carry a client assertion signed with
   * `clientPrivateKey` instead of a secret.
   */
  clientCertificate?: string | null
  /** The certificate's RSA key, PEM text: PKCS#8 (`PRIVATE KEY`) or PKCS#1 (`RSA PRIVATE KEY`), not encrypted. */
  clientPrivateKey?: string | null
  /**
   * `private_key_jwt` without a certificate here: the client assertion itself,
   * or a function (sync or async) asked for one each time a request is about
   * to be sent (a vault, an HSM). It runs on the thread that called `configure()`.
   */
  clientAssertion?: string | ClientAssertionProvider | null
  /** Default `'PS256'` (with `x5t#S256`); `'RS256'` (with `x5t`) for AD FS and older providers. */
  clientAssertionAlgorithm?: 'PS256' | 'RS256' | null
  /** Also send the certificate chain (`x5c`), for subject name and issuer authentication. Default false. */
  sendX5c?: boolean | null
  /** Client capabilities sent with every request as `xms_cc` claims, e.g. `['cp1']` for continuous access evaluation. */
  clientCapabilities?: readonly string[] | null
  /** An http(s) forward proxy; default `PROXY`, then `HTTPS_PROXY`/`HTTP_PROXY`/`NO_PROXY`. */
  proxy?: string | null
  /** Per attempt. Default 30000. */
  timeoutMs?: number | null
  /** Default 1. */
  maxRetries?: number | null
  /** Default 300. */
  retryDelayMs?: number | null
  /** A token is served while more than this many seconds of its life remain. Default 30. */
  expirySkewSeconds?: number | null
  /** Default 100000. */
  maxCacheEntries?: number | null
  /** The longest `Retry-After` waited for inside a call; longer ones throttle the key. Default 5000. */
  maxRetryAfterMs?: number | null
  /** Where events go; default: nowhere. */
  logger?: Logger | null
  /**
   * The Redis tier shared by several instances: `redis://` or `rediss://`
   * (credentials allowed); several comma-separated URIs mean a cluster.
   * Without it, no Redis is used. Requires `cacheEncryptionKey`.
   */
  redisUri?: string | null
  /** A single `redisUri` is a cluster seed. Default false. */
  redisCluster?: boolean | null
  /** Prepended to every key name. Default none. */
  redisKeyPrefix?: string | null
  redisUsername?: string | null
  redisPassword?: string | null
  /** Path to a PEM file of the CA to trust for `rediss://`. */
  redisCa?: string | null
  /** The budget of one Redis operation. Default 200. */
  redisTimeoutMs?: number | null
  /**
   * 64 hex characters: Redis key names and values, and the sessions in a
   * `sessionStore`, are protected by keys derived from it.
   */
  cacheEncryptionKey?: string | null
  /**
   * Where long-running sessions live: without it, in this process (every
   * thread; lost on restart), or in Redis with `redisUri`. Requires
   * `cacheEncryptionKey`. Without Redis, renewals are one at a time per
   * process only.
   */
  sessionStore?: OboSessionStore | null
  /** How long a session lives after its last renewal. Default 90 days (7776000000). */
  sessionTtlMs?: number | null
}

/** What an `actorToken` function is told, and returns: like a `clientAssertion` function. */
export type ActorTokenProvider = (request: ClientAssertionRequest) => string | PromiseLike<string>

/** Entra ID's On-Behalf-Of: the jwt-bearer grant (the default). */
export interface JwtBearerOptions extends OboBaseOptions {
  grantType?: 'jwt-bearer' | null
  audience?: never
  resource?: never
  subjectTokenType?: never
  requestedTokenType?: never
  actorToken?: never
  actorTokenType?: never
}

/** OAuth 2.0 Token Exchange (RFC 8693): Keycloak, Okta, Auth0, Ping, ZITADEL. See docs/token-exchange.md. */
export interface TokenExchangeOptions extends OboBaseOptions {
  grantType: 'token-exchange'
  /** Sent as `audience`, one parameter per value (Okta requires it; Keycloak: the target client's id). */
  audience?: string | readonly string[] | null
  /** Sent as `resource`, one parameter per value: absolute URIs without a fragment (RFC 8707). */
  resource?: string | readonly string[] | null
  /** Default `urn:ietf:params:oauth:token-type:access_token` (Auth0: the type of its Custom Token Exchange Profile). */
  subjectTokenType?: string | null
  /** Default `urn:ietf:params:oauth:token-type:access_token`; a token of another type is refused (`code: 'ETOKENTYPE'`). */
  requestedTokenType?: string | null
  /** Sent as `actor_token`: a string, or a function (sync or async) asked before each request. */
  actorToken?: string | ActorTokenProvider | null
  /** Default `urn:ietf:params:oauth:token-type:access_token`; only with `actorToken`. */
  actorTokenType?: string | null
}

/** The options of `configure()`, by grant. */
export type ConfigureOptions = JwtBearerOptions | TokenExchangeOptions

/** Counters since the package was loaded (a client's: since it was created), for the whole process. */
export interface OboStats {
  cacheHits: number
  cacheMisses: number
  coalesced: number
  exchanges: number
  retries: number
  failures: number
  throttled: number
  cacheSize: number
  inFlight: number
  /** Reads of the Redis tier that found a token. */
  redisHits: number
  /** Reads of the Redis tier that found none (an unavailable Redis counts one). */
  redisMisses: number
  /** Redis operations that failed or timed out. */
  redisErrors: number
  /** Waits for another instance's exchange (or session renewal) of the same key. */
  lockWaits: number
  /** Long-running sessions held in this process (0 when they live in Redis or a `sessionStore`). */
  sessions: number
  /** Refresh tokens redeemed for sessions. */
  sessionRenewals: number
  /** Session calls (begin or acquire) that failed. */
  sessionFailures: number
}

/**
 * A rejected exchange. Validation failures are plain `Error`/`TypeError`s without these fields
 * (with `option` naming the argument for `acquireOboToken`, e.g. `'claims'`).
 */
export interface OboError extends Error {
  retryable: boolean
  oboFailureReason: 'exchange_failed' | 'empty_exchange_response'
  /** HTTP status, when the provider answered. */
  status?: number
  /**
   * `ETIMEDOUT`, `ECONNRESET`, `ECONNREFUSED`, `ENOTFOUND`, `EAI_AGAIN`, `CERT_UNTRUSTED`,
   * `ECLIENTASSERTION` (no client assertion could be had: no request was sent),
   * `EACTORTOKEN` (the `actorToken` function gave none: no request was sent),
   * `ETOKENTYPE` (token exchange: the provider issued another type of token than the one requested),
   * `ERR_OBO_CLIENT_CLOSED` (the client was closed), or the OAuth `error`.
   */
  code?: string
  error?: string
  error_description?: string
  error_codes?: number[]
  correlation_id?: string
  trace_id?: string
  timestamp?: string
  suberror?: string
  /** A Conditional Access / MFA claims challenge to pass back to the user's sign-in. */
  claims?: string
  /** Seconds to wait, from the provider's `Retry-After`. */
  retryAfter?: number
  /** Refused from a remembered throttle, without a request. */
  throttled?: boolean
}

/**
 * A rejected session call (`beginOboSession`, `acquireSessionToken`,
 * `endOboSession`). Besides the exchange's reasons: `'session_expired'` (the
 * refresh token was refused, `invalid_grant`: the session is ended and the
 * user must sign in again), `'session_not_found'` (never begun, ended or
 * lapsed; no request was sent) and `'no_refresh_token'` (the provider issued
 * none: allow `offline_access`). A store that cannot be reached (Redis, a
 * `sessionStore`) is `'exchange_failed'` with `retryable: true`, never a missing session.
 */
export interface OboSessionError extends Omit<OboError, 'oboFailureReason'> {
  oboFailureReason: OboError['oboFailureReason'] | 'session_expired' | 'session_not_found' | 'no_refresh_token'
}

/**
 * `fromCache` is read by truthiness, as LibreChat's service reads it: `false`,
 * `null`, `0` and `''` bypass the cache and the in-flight exchanges.
 */
export declare function exchangeOboToken(
  user: OboUser | null | undefined,
  accessToken: string,
  scopes: string,
  fromCache: boolean | null | undefined,
  identityContext: OboIdentityContext,
): Promise<OboTokenWithExpiry>
export declare function exchangeOboToken(
  user: OboUser | null | undefined,
  accessToken: string,
  scopes: string,
  fromCache?: boolean | null,
  identityContext?: OboIdentityContext | null,
): Promise<OboToken>

export declare function getGraphApiToken(
  user: OboUser | null | undefined,
  accessToken: string,
  scopes: string,
  fromCache: boolean | null | undefined,
  identityContext: OboIdentityContext,
): Promise<OboTokenWithExpiry>
export declare function getGraphApiToken(
  user: OboUser | null | undefined,
  accessToken: string,
  scopes: string,
  fromCache?: boolean | null,
  identityContext?: OboIdentityContext | null,
): Promise<OboToken>

/**
 * The options-object API beside the drop-in: the result always has `expires_at`.
 * Rejects with a `TypeError` naming the option (`claims`, `scopes`, `assertion`, …) before any request.
 */
export declare function acquireOboToken(options: AcquireOboTokenOptions): Promise<OboTokenWithExpiry>

export declare function configure(options: ConfigureOptions | null): void

/** Sets the logger without touching the rest of the configuration; `null` silences it. */
export declare function setLogger(logger: Logger | null): void

/**
 * Forgets this process's cached tokens and throttles (every thread). A shared
 * Redis tier keeps its entries; `fromCache = false` replaces one.
 */
export declare function clearCache(): void

export declare function stats(): OboStats

/** The token endpoint in use: configured, or discovered from the issuer by an exchange; `null` before discovery. */
export declare function tokenEndpoint(): string | null

/**
 * Begins a long-running On-Behalf-Of session, in the request that has the
 * user: exchanges `assertion` as `acquireOboToken` does with `offline_access`
 * and keeps the refresh token. Store `sessionKey` with the job.
 */
export declare function beginOboSession(options: BeginOboSessionOptions): Promise<OboSessionBegun>

/**
 * A token from a session, in the job, without the user: the session's own
 * while fresh, else one renewal with its refresh token (rotation-safe: one
 * redemption at a time per session, across scopes, threads and, with Redis,
 * instances).
 */
export declare function acquireSessionToken(options: AcquireSessionTokenOptions): Promise<OboTokenWithExpiry>

/** Ends a session wherever it is stored; resolves to whether it existed. */
export declare function endOboSession(sessionKey: string): Promise<boolean>

/** The options of `createOboClient`: those of `configure()`. */
export type OboClientOptions = ConfigureOptions

/**
 * An independent client: its own configuration, cache, exchanges under way,
 * throttles, counters and Redis namespace. The functions are those of the
 * module, for this client.
 */
export interface OboClient {
  exchangeOboToken: typeof exchangeOboToken
  getGraphApiToken: typeof getGraphApiToken
  acquireOboToken: typeof acquireOboToken
  /** Sessions belong to the client that began them. */
  beginOboSession: typeof beginOboSession
  acquireSessionToken: typeof acquireSessionToken
  endOboSession: typeof endOboSession
  /** Forgets this client's cached tokens and throttles (every thread); sessions stay. */
  clearCache(): void
  /** This client's counters since it was created. */
  stats(): OboStats
  tokenEndpoint(): string | null
  /**
   * Releases the client: its cache and configuration at once, its
   * connections once its exchanges under way have answered (they still do).
   * Every later exchange or session call rejects with an `Error` whose
   * `code` is `'ERR_OBO_CLIENT_CLOSED'` (`clearCache`, `stats` and
   * `tokenEndpoint` still answer, from an empty client). Resolves when those
   * exchanges have answered.
   */
  close(): Promise<void>
}

/**
 * A new independent client. Without options it reads LibreChat's environment
 * variables, as the module does. Invalid options throw a `TypeError` naming
 * the option (`err.option`), as `configure()` does.
 */
export declare function createOboClient(options?: OboClientOptions | null): OboClient

/** Helpers for tests of code that uses this package (LibreChat's own among them). */
export declare const __internals: {
  /**
   * LibreChat's cache key: `tenant\x1fissuer\x1fsubject\x1fscopes\x1fsha256hex(assertion)`,
   * or `null` without a subject.
   */
  buildOboCacheKey(input: {
    user?: OboUser | null
    accessToken?: string | null
    scopes?: string | null
    identityContext?: OboIdentityContext | null
  }): string | null
  /** What the calling thread's memo of hot tokens holds. */
  memoStats(): { entries: number; subjects: number }
  /** Calls the calling thread answered by joining its own exchange under way, without a call into the addon. */
  threadJoins(): number
}
