/**
 * A loopback identity provider for tests: an OpenID discovery document and a
 * token endpoint that answers the jwt-bearer (On-Behalf-Of) grant the way
 * Microsoft Entra ID does, records every request, and plays queued faults.
 *
 * ```js
 * const { startMockIdp, faults } = require('obo-native/testing');
 * const idp = await startMockIdp();
 * configure({ issuer: idp.issuer, clientId: idp.clientId, clientSecret: idp.clientSecret });
 * idp.enqueue(faults.unavailable(1));
 * // ...
 * await idp.close();
 * ```
 */

/** `urn:ietf:params:oauth:grant-type:jwt-bearer` */
export declare const GRANT_TYPE: 'urn:ietf:params:oauth:grant-type:jwt-bearer'

/** `urn:ietf:params:oauth:client-assertion-type:jwt-bearer`, the `client_assertion_type` of `private_key_jwt`. */
export declare const CLIENT_ASSERTION_TYPE: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer'

/** `urn:ietf:params:oauth:grant-type:token-exchange` (RFC 8693), answered with `tokenExchange`. */
export declare const TOKEN_EXCHANGE_GRANT_TYPE: 'urn:ietf:params:oauth:grant-type:token-exchange'

/** `urn:ietf:params:oauth:token-type:access_token` */
export declare const ACCESS_TOKEN_TYPE: 'urn:ietf:params:oauth:token-type:access_token'

/**
 * The token exchange grant as the provider offers it; every RFC 8693
 * parameter of a request is checked (a failed check is an `invalid_request`
 * or `invalid_target`, as Keycloak, Okta and Auth0 answer).
 */
export interface MockTokenExchange {
  /** The audiences the provider knows; another is an `invalid_target`. Default: any. */
  audiences?: readonly string[]
  /** The resources the provider knows; another is an `invalid_target`. Default: any absolute URI. */
  resources?: readonly string[]
  /** Default: the access token and JWT types. */
  subjectTokenTypes?: readonly string[]
  /** A request without `audience` is an `invalid_request` (Okta). Default false. */
  requireAudience?: boolean
  /** Answer with this `issued_token_type` instead of the requested type (a misbehaving provider). */
  issuedTokenType?: string
  /** Answer with this `token_type` instead of `Bearer` (access tokens) or `N_A` (other types). */
  tokenType?: string
}

/** An OAuth 2.0 error body, as Entra ID sends it. */
export interface MockErrorBody {
  error: string
  error_description?: string
  error_codes?: number[]
  timestamp?: string
  trace_id?: string
  correlation_id?: string
  suberror?: string
  claims?: string
  [field: string]: unknown
}

/**
 * A queued answer for the next token request. A fault with only `delayMs` or
 * `hold` delays the normal answer; one with `status` or `body` replaces it.
 */
export interface MockFault {
  /** HTTP status of the answer (200 when only `body` is given). */
  status?: number
  /** The answer's body: an object is sent as JSON, a string as is. */
  body?: MockErrorBody | Record<string, unknown> | string
  /** Extra response headers. */
  headers?: Record<string, string>
  /** Sent as the `Retry-After` header (seconds, or an HTTP date). */
  retryAfter?: number | string
  /** Waits this long before answering. */
  delayMs?: number
  /** Holds the request until `release()` (or `reset()`/`close()`). */
  hold?: boolean
  /** Destroys the connection without an answer. */
  reset?: boolean
  /** Never answers: the client's timeout must end the request. */
  hang?: boolean
}

/** A request the provider received. */
export interface MockRequest {
  method: string
  path: string
  headers: Record<string, string | string[] | undefined>
  /** The raw request body. */
  body: string
  /** The body as form fields (`grant_type`, `assertion`, `scope`, `requested_token_use`, …). */
  form: Record<string, string>
  /** `Date.now()` when it arrived. */
  at: number
  /** The queued fault it was answered with, if any. */
  fault?: MockFault
  /** Token requests: the tenant segment of the path it was sent to (`common`, a tenant id, … with `multiTenant`). */
  tenant?: string
  /** Token requests: how the client authenticated (`client_assertion` and `claims` are in `form`). */
  clientAuthentication?: 'client_secret_basic' | 'client_secret_post' | 'private_key_jwt' | 'none'
  /** Token requests with a client assertion that is a readable JWT: its decoded header and payload. */
  clientAssertion?: { header: Record<string, unknown>; payload: Record<string, unknown> }
  /** Token exchange requests: each `audience` parameter, in order. */
  audiences?: string[]
  /** Token exchange requests: each `resource` parameter, in order. */
  resources?: string[]
}

/** A custom answer to a token request (see `respond`). */
export interface MockAnswer {
  status?: number
  body?: unknown
  headers?: Record<string, string>
}

export interface MockIdpOptions {
  /** Also answer the token exchange grant (RFC 8693); without it, `unsupported_grant_type`, as Entra ID answers. */
  tokenExchange?: boolean | MockTokenExchange
  /** Default `'127.0.0.1'`. */
  host?: string
  /** Default 0: a free port. */
  port?: number
  /** The issuer is `http://host:port/{tenant}/v2.0`. Default `'mock-tenant'`. */
  tenant?: string
  /** Default `'mock-client-id'`. */
  clientId?: string
  /**
   * Default `'mock-client-secret-value'`; `null` accepts any client, except that
   * a client sending no credentials is refused (AADSTS7000218) when client
   * assertions are checked.
   */
  clientSecret?: string | null
  /**
   * Certificates registered for `private_key_jwt` (PEM; the first certificate
   * of each text). Client assertions are then verified as Entra ID does: the
   * PS256/RS256 signature with the certificate's key, `x5t#S256`/`x5t` and
   * `x5c` against it, `aud` = the URL called, `iss` = `sub` = the client id,
   * `jti` of 16+ characters, `exp` in the future and at most `iat` + 10 min.
   * Failures answer AADSTS700027 (unknown key, bad signature), AADSTS700024
   * (time window) or AADSTS50027 (malformed JWT, wrong claim).
   */
  clientCertificate?: string | Uint8Array | Array<string | Uint8Array>
  /** A CA (PEM) whose certificates, sent in `x5c`, are accepted too (subject name and issuer authentication). */
  clientCertificateIssuer?: string | Uint8Array
  /**
   * Decides on a client assertion before the certificate checks (workload
   * identity): `true` accepts, `false` refuses with AADSTS70021, an answer is
   * sent as is, `undefined` leaves it to the certificates (AADSTS70021 when
   * none is registered).
   */
  acceptClientAssertion?: (assertion: string, request: MockRequest) => boolean | MockAnswer | undefined | void
  /**
   * Also serve the token endpoint at `/common`, `/organizations` and any
   * tenant id or domain name in place of `/{tenant}` (home-tenant routing tests).
   */
  multiTenant?: boolean
  /** `expires_in` of minted tokens, sent as is (`undefined` omits it). Default 3600. */
  expiresIn?: number | string | null | undefined
  /** An answer for a valid token request, or undefined for the default. */
  respond?: (request: MockRequest) => MockAnswer | undefined | null | void
  /** Serve https with this key and certificate (PEM). */
  tls?: { key: string | Uint8Array; cert: string | Uint8Array; [option: string]: unknown }
  /** Keep every request in `requests` (default); false only counts them (long runs). */
  record?: boolean
}

export interface MockIdp {
  /** `http://127.0.0.1:<port>` (`https://` with `tls`) */
  readonly origin: string
  readonly port: number
  /** `http://127.0.0.1:<port>/<tenant>/v2.0` (serves `/.well-known/openid-configuration`). */
  readonly issuer: string
  /** `http://127.0.0.1:<port>/<tenant>/oauth2/v2.0/token` */
  readonly tokenEndpoint: string
  /** `http://127.0.0.1:<port>/<segment>/oauth2/v2.0/token`; other segments than the tenant need `multiTenant`. */
  tokenEndpointFor(segment: string): string
  readonly clientId: string
  readonly clientSecret: string | null
  /** Every request received, oldest first (a live array). */
  readonly requests: MockRequest[]
  /** The token requests only. */
  tokenRequests(): MockRequest[]
  /** The discovery document the provider serves. */
  discoveryDocument(): {
    issuer: string
    token_endpoint: string
    authorization_endpoint: string
    jwks_uri: string
    token_endpoint_auth_methods_supported: string[]
    grant_types_supported: string[]
  }
  /** The token minted for this assertion and scope (the last one), or what would be minted now. */
  expectedToken(assertion: string, scope: string): string
  /** Token exchange: the token minted for this subject token, scope, audiences and resources. */
  expectedExchangeToken(
    subjectToken: string,
    scope: string,
    target?: { audience?: string | readonly string[]; resource?: string | readonly string[] },
  ): string
  /** Queues answers for the next token requests, in order. */
  enqueue(...faults: MockFault[]): MockIdp
  /** Lets every held request go on; returns how many were held. */
  release(): number
  /** How many requests are held now. */
  heldCount(): number
  /** Token requests received since the start or the last reset (counted even when not recorded). */
  tokenRequestCount(): number
  /** The next `count` (default 1) discovery requests answer 503. */
  failDiscovery(count?: number): void
  /** The discovery (GET) requests only. */
  discoveryRequests(): MockRequest[]
  setExpiresIn(value: number | string | null | undefined): void
  setResponder(respond: MockIdpOptions['respond']): void
  /** Forgets requests and queued answers, releases held requests, restores the options. */
  reset(): void
  /** Releases held requests, closes connections and stops the server. */
  close(): Promise<void>
}

/** Starts the provider on loopback. */
export declare function startMockIdp(options?: MockIdpOptions): Promise<MockIdp>

/** The (unsigned) JWT the provider mints for an assertion and scope. */
export declare function mintToken(
  assertion: string,
  scope: string,
  options?: { lifetime?: number; tenant?: string },
): string

/** An answer shaped like Entra's error bodies (AADSTS code, trace and correlation ids), for `enqueue`. */
export declare function entraError(
  status: number,
  error: string,
  code: number,
  description: string,
  extra?: Partial<MockErrorBody>,
): MockEntraFault

/** A fault with an Entra error body. */
export interface MockEntraFault extends MockFault {
  status: number
  body: MockErrorBody
}

/** Ready-made Entra answers, for `enqueue`. */
export declare const faults: {
  /** 400 invalid_grant, AADSTS50013 */
  invalidSignature(): MockEntraFault
  /** 400 invalid_grant, AADSTS500133 */
  assertionExpired(): MockEntraFault
  /** 400 invalid_grant, AADSTS65001 (suberror consent_required) */
  consentRequired(): MockEntraFault
  /** 400 interaction_required, AADSTS50076 with a claims challenge */
  mfaRequired(): MockEntraFault
  /** 400 invalid_scope, AADSTS70011 */
  invalidScope(): MockEntraFault
  /** 401 invalid_client, AADSTS7000215 */
  badClientSecret(): MockEntraFault
  /** 401 invalid_client, AADSTS700027 (default reason: the key was not found) */
  invalidClientAssertionSignature(reason?: string, thumbprint?: string): MockEntraFault
  /** 401 invalid_client, AADSTS700024 */
  clientAssertionOutOfTime(detail?: string): MockEntraFault
  /** 400 invalid_request, AADSTS50027 */
  malformedClientAssertion(detail?: string): MockEntraFault
  /** 400 invalid_client, AADSTS70021 */
  noFederatedIdentity(): MockEntraFault
  /** 400 unauthorized_client, AADSTS700016 */
  unknownApplication(): MockEntraFault
  /** 400 invalid_grant, AADSTS50196 */
  loopDetected(): MockEntraFault
  /** 429 temporarily_unavailable with Retry-After (default 5 s) */
  throttled(retryAfter?: number): MockEntraFault & { retryAfter: number }
  /** 503 with a text body, and Retry-After when given */
  unavailable(retryAfter?: number): MockFault & { status: 503; body: string }
}
