'use strict';
/**
 * Plain-words explanations of a failed On-Behalf-Of exchange, with the fix:
 * the common Microsoft Entra ID refusals (by AADSTS code), client
 * authentication, TLS, proxy and network failures, throttling, discovery,
 * and the refusals of RFC 8693 token exchange (Keycloak, Okta, Auth0).
 *
 *   explain(err, { clientId, proxy, proxyReachable, issuer, tokenEndpoint, authMethod })
 *     → { id, title, meaning, fix: string[], codes: number[] }
 *   explainCode('AADSTS50013' | '50013' | 'invalid_grant')
 *     → { known, code, title, meaning, fix: string[] } or null (for `obo-native explain`)
 *
 * `err` is a rejection of `exchangeOboToken` (see the README for its fields).
 * Nothing here prints or returns a secret: only the error's own texts.
 */

const TRANSPORT_CODES = new Set(['ETIMEDOUT', 'ECONNRESET', 'ECONNREFUSED', 'ENOTFOUND', 'EAI_AGAIN']);
const CONFIG_UNAVAILABLE = 'OpenID configuration not available';

const appRegistration = 'Entra admin center > App registrations > (this application)';

/** Explanations of Entra's AADSTS codes, by code. `ctx` fills in names. */
const ENTRA = {
  50013: (ctx) => ({
    id: 'assertion_invalid',
    title: 'AADSTS50013: the user\'s token (the assertion) failed validation',
    meaning:
      'Entra ID could not accept the token sent as the assertion: it was not issued to this application ' +
      '(its audience is another API, often Microsoft Graph), it comes from another tenant or cloud, or it was cut or altered on the way.',
    fix: [
      `Send the access token the user got for THIS application: its "aud" must be this app (${ctx.clientIdText}), ` +
        'so sign the user in with a scope this app exposes (Expose an API), e.g. api://<client-id>/<scope>.',
      'A Microsoft Graph token cannot be used as an assertion; neither can a token issued for another API.',
      'Check that OPENID_CLIENT_ID is the application the token was issued to, and that the token is passed whole (no quotes, no line breaks).',
    ],
  }),
  500131: (ctx) => ({
    id: 'assertion_audience',
    title: 'AADSTS500131: the assertion\'s audience is not this application',
    meaning: 'The user\'s token was issued for another application, so this application cannot exchange it.',
    fix: [
      `Use a token whose "aud" is this application (${ctx.clientIdText}): sign the user in with a scope this app exposes (api://<client-id>/<scope>).`,
      'Check that OPENID_CLIENT_ID is the application the user signed in to.',
    ],
  }),
  500133: () => ({
    id: 'assertion_expired',
    title: 'AADSTS500133: the user\'s token has expired',
    meaning: 'The assertion is outside its validity period: the user\'s access token expired before the exchange (or this machine\'s clock is wrong).',
    fix: [
      'Use a fresh token: have the user sign in again, or make sure the server refreshes the user\'s token before it expires.',
      'Check the clock of this machine (NTP): a few minutes of drift is enough to make a valid token look expired.',
    ],
  }),
  65001: (ctx) => ({
    id: 'consent_required',
    title: 'AADSTS65001: consent is missing for the downstream API',
    meaning:
      `Neither an administrator nor the user has consented to this application calling the downstream API with the scope requested${ctx.scopeText}.`,
    fix: [
      `Grant it: ${appRegistration} > API permissions > Add a permission (the downstream API, delegated, the scope requested) > Grant admin consent for <tenant>.`,
      'Or have the user consent: sign in once interactively with that scope (prompt=consent).',
      'For your own downstream API, you can also list this application in its knownClientApplications so consent is given at sign-in.',
    ],
  }),
  70011: (ctx) => ({
    id: 'invalid_scope',
    title: 'AADSTS70011: the scope is not valid',
    meaning: `Entra ID does not accept the scope requested${ctx.scopeText}.`,
    fix: [
      'Ask for scopes of one resource only, separated by spaces: api://<downstream-app-id>/<scope>, or <resource>/.default (e.g. https://graph.microsoft.com/.default).',
      'Do not mix two resources in one request, and check the scope is exposed by the downstream application (Expose an API) and spelled exactly.',
    ],
  }),
  7000215: () => ({
    id: 'invalid_client_secret',
    title: 'AADSTS7000215: the client secret is wrong',
    meaning: 'Entra ID refused this application\'s client secret.',
    fix: [
      'OPENID_CLIENT_SECRET must be the secret\'s Value (shown only once, when it is created), not its Secret ID.',
      `Check it has not expired: ${appRegistration} > Certificates & secrets; create a new one if needed.`,
      'Make sure the value has no surrounding quotes or spaces, and that it belongs to the application of OPENID_CLIENT_ID.',
    ],
  }),
  700027: (ctx) => ({
    id: 'client_assertion_signature',
    title: 'AADSTS700027: the client assertion was refused (certificate not registered, or a bad signature)',
    meaning:
      'Entra ID could not verify the JWT this application signed to authenticate (private_key_jwt): the certificate it names is not ' +
      `registered on the application${ctx.thumbprintText}, it has expired, or the signature does not match it.`,
    fix: [
      `Upload the certificate (the public part, .cer/.pem) to ${appRegistration} > Certificates & secrets > Certificates, and compare the thumbprint listed there with the one shown above.`,
      'The private key must be the key of that certificate, and the certificate file must start with that certificate (leaf first, chain after).',
      'After a rotation, register the new certificate before switching to it, and keep the old one until every instance uses the new one.',
      'AD FS and older providers want RS256 with an x5t thumbprint: configure({ clientAssertionAlgorithm: \'RS256\' }). Subject name/issuer authentication needs sendX5c: true.',
    ],
  }),
  700024: () => ({
    id: 'client_assertion_time',
    title: 'AADSTS700024: the client assertion is outside its time window',
    meaning:
      'The JWT that authenticates this application is not yet valid or already expired (its nbf/exp), or it is valid for more than ten minutes. ' +
      'With a certificate, obo-native signs assertions valid for ten minutes from now, so this machine\'s clock is the usual cause.',
    fix: [
      'Check the clock of this machine (NTP): a few minutes of drift is enough.',
      'With a client assertion from a file or a function (workload identity, a vault), make sure it is fresh: Kubernetes rotates the projected token, so read the file again rather than copying its content once.',
    ],
  }),
  70021: (ctx) => federatedIdentity(70021, ctx),
  700213: (ctx) => federatedIdentity(700213, ctx),
  50027: () => ({
    id: 'client_assertion_malformed',
    title: 'AADSTS50027: a JWT in the request is malformed',
    meaning:
      'Entra ID could not read a token of the request: the client assertion (private_key_jwt) or the user\'s assertion is not a well-formed JWT, or a required claim is missing or wrong (aud, iss, sub, jti, exp).',
    fix: [
      'With --client-assertion-file or a clientAssertion function, the value must be the JWT itself: no quotes, no "Bearer ", no line breaks, no JSON around it.',
      'The client assertion\'s aud must be the token endpoint called, and iss and sub the client id: obo-native signs them so with a certificate; check them in an assertion made elsewhere.',
    ],
  }),
  700016: (ctx) => ({
    id: 'unknown_application',
    title: 'AADSTS700016: the application is not known in this tenant',
    meaning: `No application with client id ${ctx.clientIdText} exists in the tenant of the issuer${ctx.issuerText}.`,
    fix: [
      'OPENID_CLIENT_ID must be the Application (client) ID shown on the app registration\'s Overview page.',
      'The tenant in the issuer URL must be the tenant where the application is registered (or where a multi-tenant application has been consented).',
      'Check the cloud too: login.microsoftonline.com (global), login.microsoftonline.us (US Government), login.partner.microsoftonline.cn (China).',
    ],
  }),
  50076: (ctx) => mfa(50076, ctx),
  50079: (ctx) => mfa(50079, ctx),
  53003: (ctx) => ({
    id: 'conditional_access_blocked',
    title: 'AADSTS53003: blocked by a Conditional Access policy',
    meaning: 'A Conditional Access policy denies this user access to the downstream API (for example a device, location or app condition).',
    fix: [
      `Look up the sign-in: Entra admin center > Monitoring > Sign-in logs > Service principal sign-ins${ctx.correlationText}; its Conditional Access tab names the policy that failed.`,
      'An administrator must change that policy or the user must meet its conditions; retrying does not help.',
    ],
  }),
  50196: () => ({
    id: 'loop_detected',
    title: 'AADSTS50196: Entra ID detected a request loop',
    meaning:
      'This application sent too many identical token requests (same user, same scope) in a short time, so Entra ID stopped answering them. It usually means tokens are not cached.',
    fix: [
      'Call exchangeOboToken with fromCache = true (the default): obo-native caches tokens and sends one request for concurrent calls.',
      'Do not loop over fromCache = false, and wait a few minutes before trying again.',
    ],
  }),
  240002: (ctx) => ({
    id: 'id_token_as_assertion',
    title: 'AADSTS240002: an id_token was sent instead of an access token',
    meaning: 'The assertion is the user\'s id_token. On-Behalf-Of needs the user\'s access token issued for this application.',
    fix: [
      'Send the access token, not the id_token.',
      `Make the sign-in ask for a scope of this application (e.g. api://${ctx.clientId || '<client-id>'}/<scope>; in LibreChat, in OPENID_SCOPE) so that the access token is issued for this application.`,
    ],
  }),
};

function mfa(code, ctx) {
  const register = code === 50079;
  return {
    id: 'mfa_required',
    title: `AADSTS${code}: multi-factor authentication is required`,
    meaning:
      (register
        ? 'The user must register for multi-factor authentication before the downstream API can be called. '
        : 'A Conditional Access policy requires multi-factor authentication for the downstream API, and the user\'s sign-in did not include it. ') +
      'On-Behalf-Of cannot ask the user anything: the user has to sign in again.',
    fix: [
      'Send the user back to an interactive sign-in, passing the claims challenge (below) as the "claims" parameter of the authorization request.',
      'Or require MFA already at the sign-in to this application, so the user\'s token satisfies the downstream policy.',
    ].concat(ctx.claims ? [`Claims challenge: ${ctx.claims}`] : []),
  };
}

function federatedIdentity(code, ctx) {
  return {
    id: 'no_federated_identity',
    title: `AADSTS${code}: no federated identity credential matches the client assertion`,
    meaning:
      'The client assertion is a token of another identity provider (workload identity: a Kubernetes service account token, a GitHub Actions token, …), ' +
      `and the application${ctx.clientId ? ` ${ctx.clientId}` : ''} has no federated credential whose issuer, subject and audience match it.`,
    fix: [
      `Add or fix the credential: ${appRegistration} (or the managed identity) > Certificates & secrets > Federated credentials. Issuer, subject and audience must equal the token's iss, sub and aud exactly (audience api://AzureADTokenExchange by default).`,
      'On AKS: the service account must carry the azure.workload.identity/client-id annotation, and the pod the azure.workload.identity/use: "true" label; the subject is system:serviceaccount:<namespace>:<service account>.',
      'A new federated credential can take a minute or two to apply.',
    ],
  };
}

/**
 * The OAuth error codes a token endpoint answers (RFC 6749 §5.2, and those
 * Entra ID adds), for `obo-native explain <code>` and for refusals that have
 * no more specific explanation.
 */
const OAUTH = {
  invalid_request: {
    meaning: 'The identity provider found the request malformed: a parameter is missing, repeated or not valid.',
    fix: ['The AADSTS code in the error_description names the parameter; run "obo-native explain AADSTS<number>" with it.'],
  },
  invalid_client: {
    meaning: 'Client authentication failed at the token endpoint: the application\'s secret, certificate or client assertion was refused, or the client id is unknown.',
    fix: [
      'With a secret: OPENID_CLIENT_SECRET must be the secret\'s Value (not its ID), not expired, and belong to OPENID_CLIENT_ID.',
      'With a certificate or a client assertion: the certificate must be registered on the application, and the assertion\'s aud the token endpoint, its iss and sub the client id.',
      'On-Behalf-Of needs a confidential client: "none" (no secret) is refused by Entra ID.',
    ],
  },
  invalid_grant: {
    meaning: 'The identity provider refused the user\'s token (the assertion) or the grant: expired, issued for another application, or needing a new sign-in.',
    fix: [
      'The AADSTS code in the error_description says which; run "obo-native explain AADSTS<number>" with it.',
      'The assertion must be the access token the user got for THIS application (its aud), still valid.',
    ],
  },
  unauthorized_client: {
    meaning: 'This application is not allowed to use the On-Behalf-Of (jwt-bearer) grant.',
    fix: ['Check the application registration: On-Behalf-Of needs a web (confidential) application with a secret or certificate.'],
  },
  unsupported_grant_type: {
    meaning: 'The identity provider does not support the On-Behalf-Of (jwt-bearer) grant at this endpoint.',
    fix: ['Check the token endpoint (for Entra ID: https://login.microsoftonline.com/<tenant-id>/oauth2/v2.0/token) and that the provider supports RFC 7523.'],
  },
  invalid_scope: {
    meaning: 'The identity provider refused the scope requested.',
    fix: [
      'Ask for scopes of one resource only: api://<downstream-app-id>/<scope>, or <resource>/.default.',
      'Check the scope is exposed by the downstream application (Expose an API) and spelled exactly.',
    ],
  },
  interaction_required: {
    meaning: 'The user must sign in again interactively (multi-factor authentication, Conditional Access, or consent) before this token can be issued.',
    fix: ['Send the user back to an interactive sign-in, with the claims challenge of the error as the "claims" parameter when there is one.'],
  },
  consent_required: {
    meaning: 'Neither an administrator nor the user has consented to this application calling the downstream API with this scope.',
    fix: [`Grant it: ${appRegistration} > API permissions > Add a permission > Grant admin consent for <tenant>; or have the user consent at an interactive sign-in.`],
  },
  temporarily_unavailable: {
    meaning: 'The identity provider is overloaded or throttling this application, and asks to come back later (often with Retry-After).',
    fix: ['Wait as long as Retry-After says: obo-native refuses that user and scope until then, without a request.', 'If it keeps happening, check that tokens are cached (fromCache = true).'],
  },
  server_error: {
    meaning: 'The identity provider failed to answer; this is usually temporary.',
    fix: ['Try again in a few minutes; check the provider\'s status page (for Entra ID: https://status.azure.com).'],
  },
};

/**
 * What a code from a log means, without any exchange: an AADSTS number
 * (`AADSTS50013` or `50013`) or an OAuth error code (`invalid_grant`).
 * `null` when the text is neither; `known: false` for a code not explained here.
 */
function explainCode(text) {
  const code = String(text).trim();
  const aadsts = code.match(/^(?:AADSTS)?(\d{4,8})$/i);
  if (aadsts) {
    const number = Number(aadsts[1]);
    const lookup = `https://login.microsoftonline.com/error?code=${number}`;
    if (!ENTRA[number]) {
      return { known: false, code: `AADSTS${number}`, title: `AADSTS${number}`, meaning: 'obo-native has no explanation of this code offline.', fix: [`Look it up: ${lookup}`] };
    }
    const explanation = ENTRA[number]({ clientIdText: 'OPENID_CLIENT_ID', scopeText: '', issuerText: '', thumbprintText: '', correlationText: '' });
    return { known: true, code: `AADSTS${number}`, ...explanation, fix: [...explanation.fix, `Microsoft's page for the code: ${lookup}`] };
  }
  if (/^[a-z]+(_[a-z]+)+$/i.test(code)) {
    const error = code.toLowerCase();
    // Token exchange's own codes (invalid_target, and unsupported_grant_type for both dialects).
    const exchange = tokenExchangeRefusal({ error }, { clientIdText: 'OPENID_CLIENT_ID', audienceText: '' });
    if (exchange !== null) return { known: true, code: error, ...exchange };
    const entry = OAUTH[error];
    if (!entry) {
      return { known: false, code: error, title: error, meaning: 'obo-native has no explanation of this OAuth error code offline.', fix: ['Read the error_description that came with it; it usually names an AADSTS code: run "obo-native explain AADSTS<number>".'] };
    }
    return { known: true, code: error, id: error, title: `${error} (OAuth error)`, ...entry };
  }
  return null;
}

/** The AADSTS codes of an error: its `error_codes`, or those its texts name. */
function entraCodes(err) {
  const codes = [];
  if (Array.isArray(err.error_codes)) {
    for (const code of err.error_codes) if (Number.isInteger(Number(code))) codes.push(Number(code));
  }
  for (const text of [err.error_description, err.message]) {
    if (typeof text !== 'string') continue;
    for (const match of text.matchAll(/AADSTS(\d+)/g)) codes.push(Number(match[1]));
  }
  return [...new Set(codes)];
}

function transportCode(err) {
  if (typeof err.code === 'string' && (TRANSPORT_CODES.has(err.code) || err.code === 'CERT_UNTRUSTED')) return err.code;
  // Failures of discovery reach JavaScript without a code; their message names it.
  const named = typeof err.message === 'string' && err.message.match(/\((ETIMEDOUT|ECONNRESET|ECONNREFUSED|ENOTFOUND|EAI_AGAIN)\)/);
  if (named) return named[1];
  if (typeof err.message === 'string' && /TLS certificate was not accepted|certificate/i.test(err.message)) return 'CERT_UNTRUSTED';
  return undefined;
}

const NETWORK = {
  ENOTFOUND: ['the host name could not be resolved (DNS)', 'Check the spelling of the URL and this machine\'s DNS.'],
  EAI_AGAIN: ['the host name could not be resolved right now (temporary DNS failure)', 'Check this machine\'s DNS, then try again.'],
  ECONNREFUSED: ['the connection was refused: nothing listens at that address and port', 'Check the host and port of the URL.'],
  ETIMEDOUT: ['there was no answer in time', 'A firewall may be dropping outbound traffic.'],
  ECONNRESET: ['the connection was cut before the answer was complete', 'A firewall or proxy may be interfering; try again.'],
};

function hostOf(url) {
  try {
    return new URL(url).host;
  } catch {
    return undefined;
  }
}

// ---- Token exchange (RFC 8693) ----

/**
 * The usual words of a provider whose client may not exchange tokens:
 * Keycloak (standard token exchange v2, and the legacy v1), Okta, and
 * oidc-provider. Matched on `error_description`.
 */
const EXCHANGE_NOT_ALLOWED = [
  /standard token exchange is not enabled/i,
  /client not allowed to exchange/i,
  /client is not within the token audience/i,
  /client is not the token holder/i,
  /public client is not allowed to exchange/i,
  /not authorized to use the provided grant type/i,
  /requested grant type is not allowed for this client/i,
  /policy evaluation failed/i,
];

const EXCHANGE_SETUP = [
  'Keycloak (26.2+, standard token exchange v2): Clients > (this client) > Settings > Capability config: Client authentication ON, "Standard Token Exchange" ON. ' +
    'The user\'s token must name this client in its audience: add an Audience mapper (Included Client Audience: this client) to the client scope of the application the user signs in to.',
  'Okta (on-behalf-of token exchange, custom authorization server): Applications > (this API Services app) > General > Grant type: Token Exchange; ' +
    'Security > API > (authorization server) > Access Policies: a rule that allows the Token Exchange grant for this client and the scopes requested.',
  'Auth0 (custom token exchange): enable Custom Token Exchange on the application, and create a Custom Token Exchange Profile whose subject_token_type is the one sent (subjectTokenType / OBO_SUBJECT_TOKEN_TYPE).',
];

/** Explanations of the refusals particular to token exchange, or null. */
function tokenExchangeRefusal(e, ctx) {
  const description = typeof e.error_description === 'string' ? e.error_description : '';
  if (e.code === 'ETOKENTYPE') {
    return {
      id: 'issued_token_type',
      title: 'Token exchange: the provider issued another type of token than the one requested',
      meaning: 'The answer\'s issued_token_type (or token_type N_A) says the token is not what was requested, so obo-native did not use it and cached nothing.',
      fix: [
        'Set requestedTokenType (OBO_REQUESTED_TOKEN_TYPE) to the type the downstream service takes, or configure the provider to issue access tokens to this client.',
      ],
    };
  }
  if (e.code === 'EACTORTOKEN') {
    return {
      id: 'actor_token_unavailable',
      title: 'Token exchange: the actorToken function gave no token',
      meaning: 'No request was sent: the function configured as actorToken threw, rejected, or returned an empty value.',
      fix: ['Check the function (its own error is in the message), or configure actorToken as a string.'],
    };
  }
  if (e.error === 'invalid_target') {
    return {
      id: 'invalid_target',
      title: 'invalid_target: the provider refused the audience or resource requested',
      meaning: `The provider does not know the audience or resource${ctx.audienceText} sent with the exchange, or this client may not ask for a token for it.`,
      fix: [
        'Keycloak: the audience is the client id of the target client; it must be available to this client (an optional client scope with an Audience mapper for it, requested in the scope).',
        'Okta: the audience is the custom authorization server\'s audience (e.g. api://default), and it is required.',
        'Auth0: the audience is the API identifier (Applications > APIs).',
        'Set it with audience / resource (OBO_AUDIENCE / OBO_RESOURCE, space-separated), or per call in acquireOboToken({ audience }).',
      ],
    };
  }
  if (e.error === 'unsupported_grant_type') {
    return {
      id: 'unsupported_grant_type',
      title: 'unsupported_grant_type: the provider does not offer this grant at this endpoint',
      meaning:
        'The token endpoint does not take the grant sent. Entra ID takes only jwt-bearer (grantType "jwt-bearer", the default); ' +
        'Keycloak, Okta and Auth0 take token exchange (grantType "token-exchange", OBO_GRANT_TYPE=token-exchange) once it is enabled.',
      fix: [
        'For Entra ID, leave grantType unset (or "jwt-bearer"); for the others, set grantType "token-exchange".',
        ...EXCHANGE_SETUP,
        'Okta offers token exchange only on a custom authorization server (https://<domain>/oauth2/<server-id>), not on the org authorization server.',
      ],
    };
  }
  if (EXCHANGE_NOT_ALLOWED.some((pattern) => pattern.test(description))) {
    return {
      id: 'exchange_not_allowed',
      title: `${e.error || 'Refused'}: this client is not allowed to exchange tokens`,
      meaning: `The provider knows the token exchange grant, but refuses it to this client (${ctx.clientIdText}): "${description}".`,
      fix: EXCHANGE_SETUP,
    };
  }
  return null;
}

/**
 * @param {Error & Record<string, any>} err a rejection of exchangeOboToken
 * @param {object} [context]
 * @param {string} [context.clientId]
 * @param {string} [context.scope]
 * @param {string} [context.issuer]
 * @param {string} [context.tokenEndpoint]
 * @param {string} [context.proxy] the proxy in use (without credentials), if any
 * @param {boolean} [context.proxyReachable] whether a TCP connection to the proxy succeeded
 * @param {string} [context.authMethod]
 */
function explain(err, context = {}) {
  const e = err && typeof err === 'object' ? err : { message: String(err) };
  const message = typeof e.message === 'string' ? e.message : '';
  const codes = entraCodes(e);
  const ctx = {
    ...context,
    thumbprintText: context.certificateThumbprint ? ` (this certificate's SHA-1 thumbprint: ${context.certificateThumbprint})` : '',
    claims: typeof e.claims === 'string' ? e.claims : undefined,
    clientIdText: context.clientId ? `client id ${context.clientId}` : 'OPENID_CLIENT_ID',
    scopeText: context.scope ? ` (${context.scope})` : '',
    issuerText: context.issuer ? ` (${context.issuer})` : '',
    correlationText: e.correlation_id ? `, correlation id ${e.correlation_id}` : '',
    audienceText: context.audience ? ` (${[context.audience].flat().join(', ')})` : '',
  };
  const result = (explanation) => ({ codes, ...explanation });

  for (const code of codes) {
    if (ENTRA[code]) return result(ENTRA[code](ctx));
  }

  const exchange = tokenExchangeRefusal(e, ctx);
  if (exchange !== null) return result(exchange);

  if (e.code === 'ECLIENTASSERTION') {
    return result({
      id: 'client_assertion_unavailable',
      title: 'No client assertion: the request was not sent',
      meaning: 'private_key_jwt needs a client assertion for each request, and none could be had: ' + message.replace(/^OBO token request not sent: /, ''),
      fix: [
        'A federated token file (AZURE_FEDERATED_TOKEN_FILE) must exist and be readable by this process; on Kubernetes, check the workload identity webhook mounted it.',
        'A clientAssertion function must return (or resolve to) the JWT as a string, from the thread that called configure().',
      ],
    });
  }

  if (e.error === 'invalid_client' || e.code === 'invalid_client') {
    return result({
      id: 'invalid_client',
      title: 'invalid_client: the identity provider refused this application\'s credentials',
      meaning: `Client authentication failed at the token endpoint (method ${context.authMethod || 'client_secret_basic'}).`,
      fix: context.authMethod === 'private_key_jwt' ? [
        'Check that the certificate is registered on the application (Certificates & secrets > Certificates) and that the key is its key.',
        'With a client assertion from a file or a function: check it is a fresh JWT whose aud is the token endpoint and whose iss and sub are the client id.',
        'Check --client-id / OPENID_CLIENT_ID: it must be the application the credential belongs to.',
      ] : [
        'Check OPENID_CLIENT_SECRET (the secret\'s Value, not its ID, and not expired) and OPENID_CLIENT_ID.',
        'Check the method: --auth-method / OPENID_TOKEN_ENDPOINT_AUTH_METHOD is client_secret_basic by default; some providers want client_secret_post.',
        'On-Behalf-Of needs a confidential client: "none" (no secret) is refused by Entra ID.',
      ],
    });
  }

  if (e.status === 407 || /proxy authori[sz]ation required|proxy authentication required/i.test(message)) {
    return result({
      id: 'proxy_auth',
      title: 'HTTP 407: the proxy requires authentication',
      meaning: `The proxy${context.proxy ? ` ${context.proxy}` : ''} refused the request until it is given credentials.`,
      fix: [
        'Put the credentials in the proxy URL: PROXY=http://user:password@proxy.example:3128 (obo-native never prints them).',
        'Or ask for this server to be allowed through the proxy without authentication.',
      ],
    });
  }

  const transport = transportCode(e);
  const during = message.includes('discovery') ? ' while fetching the OpenID discovery document' : '';
  if (transport === 'CERT_UNTRUSTED') {
    const host = hostOf(context.tokenEndpoint || context.issuer);
    return result({
      id: 'tls',
      title: 'TLS: the server\'s certificate was not trusted',
      meaning:
        `The TLS certificate presented${host ? ` by ${host}` : ''}${during} was not accepted. Usually a TLS-inspecting proxy or firewall ` +
        'replaces certificates with ones signed by a company CA this machine does not trust, or the server uses a self-signed certificate.',
      fix: [
        'Add the company\'s root CA (PEM) to the system trust store (e.g. update-ca-certificates), or point NODE_EXTRA_CA_CERTS at it: obo-native reads both.',
        'Do not turn certificate checks off: this request carries the user\'s token and the client secret.',
      ],
    });
  }

  if (/tunnel error/i.test(message)) {
    return result({
      id: 'proxy',
      title: 'Proxy: the proxy refused to open a tunnel to the identity provider',
      meaning: `The proxy${context.proxy ? ` ${context.proxy}` : ''} did not let the HTTPS connection through (${message.replace(/^.*tunnel error:\s*/i, '')}).`,
      fix: [
        'Check that the proxy allows CONNECT to the identity provider (e.g. login.microsoftonline.com:443).',
        'If the identity provider should be reached directly, list its host in NO_PROXY or unset PROXY.',
      ],
    });
  }

  if (transport && context.proxy) {
    const [what] = NETWORK[transport];
    const proxyDown = context.proxyReachable === false;
    return result({
      id: 'proxy',
      title: `Proxy: the request through ${context.proxy} failed (${transport})`,
      meaning: proxyDown
        ? `The proxy ${context.proxy} cannot be reached from this machine, so the identity provider could not be contacted${during}.`
        : `The request went through the proxy ${context.proxy}, and ${what}${during}.`,
      fix: proxyDown
        ? ['Check the proxy URL in PROXY (host and port) and that the proxy is running.', 'If this machine does not need a proxy, unset PROXY.']
        : [
            'Check that the proxy allows this server to reach the identity provider (e.g. login.microsoftonline.com:443).',
            'If the identity provider should be reached directly, list its host in NO_PROXY or unset PROXY.',
          ],
    });
  }

  if (transport) {
    const [what, hint] = NETWORK[transport];
    const host = hostOf(context.tokenEndpoint || context.issuer);
    return result({
      id: 'network',
      title: `Network: the identity provider could not be reached (${transport})`,
      meaning: `Contacting ${host || 'the identity provider'}${during}: ${what}.`,
      fix: [hint, 'If this network only reaches the internet through a proxy, set PROXY=http://proxy.example:3128 (HTTPS_PROXY is honoured too).'],
    });
  }

  if (message.startsWith(CONFIG_UNAVAILABLE)) {
    const status = e.status || (message.match(/failed: HTTP (\d{3})/) || [])[1];
    const discovery = message.includes('discovery');
    if (discovery && !(Number(status) >= 500)) {
      return result({
        id: 'discovery',
        title: `OpenID discovery failed${status ? ` (HTTP ${status})` : ''}`,
        meaning: `The issuer${ctx.issuerText} did not serve a usable discovery document at <issuer>/.well-known/openid-configuration.`,
        fix: [
          'For Entra ID the issuer is https://login.microsoftonline.com/<tenant-id>/v2.0 (OPENID_ISSUER / --issuer).',
          'Or skip discovery: --token-endpoint https://login.microsoftonline.com/<tenant-id>/oauth2/v2.0/token.',
        ],
      });
    }
    if (!discovery) {
      return result({
        id: 'config',
        title: 'No OpenID configuration',
        meaning: 'The identity provider is not configured.',
        fix: ['Set OPENID_ISSUER and OPENID_CLIENT_ID (and OPENID_CLIENT_SECRET), or call configure({ issuer, clientId, clientSecret }).'],
      });
    }
    // discovery answered 5xx: the provider is unavailable (below)
  }

  if (e.status === 429 || (e.retryAfter !== undefined && e.status === 503) || e.throttled) {
    const wait = e.retryAfter !== undefined ? `${e.retryAfter} s` : 'a while';
    return result({
      id: 'throttled',
      title: `Throttled: the identity provider asks to wait ${wait}`,
      meaning:
        (e.throttled
          ? 'obo-native refused without contacting the provider, because the provider throttled this user and scope a moment ago. '
          : `The provider answered HTTP ${e.status} with Retry-After: too many requests from this application. `) +
        'obo-native waits before asking again for that user and scope.',
      fix: [`Wait ${wait} and try again.`, 'If it keeps happening, check that tokens are cached (fromCache = true) and that calls are not repeated in a loop.'],
    });
  }

  if (e.oboFailureReason === 'empty_exchange_response') {
    return result({
      id: 'empty_response',
      title: 'The token endpoint answered without an access token',
      meaning: 'The answer was a success, but it holds no access_token: the URL is probably not an OAuth token endpoint (a proxy or login page, for instance).',
      fix: ['Check the token endpoint URL (for Entra ID: https://login.microsoftonline.com/<tenant-id>/oauth2/v2.0/token).'],
    });
  }

  if (Number(e.status || (message.match(/failed: HTTP (\d{3})/) || [])[1]) >= 500) {
    const status = e.status || message.match(/failed: HTTP (\d{3})/)[1];
    return result({
      id: 'unavailable',
      title: `The identity provider is unavailable (HTTP ${status})`,
      meaning: 'The provider failed to answer; this is usually temporary (obo-native already retried once).',
      fix: ['Try again in a few minutes; check the provider\'s status page (for Entra ID: https://status.azure.com).'],
    });
  }

  if (typeof e.status === 'number' && !e.error) {
    return result({
      id: 'not_oauth',
      title: `The token endpoint answered HTTP ${e.status} without an OAuth error`,
      meaning: 'The answer is not from an OAuth token endpoint: the URL is probably wrong, or a proxy or gateway answered instead.',
      fix: ['Check the token endpoint URL (for Entra ID: https://login.microsoftonline.com/<tenant-id>/oauth2/v2.0/token), or the issuer it is discovered from.'],
    });
  }

  const lookup = codes.length > 0 ? [`Look the code up: https://login.microsoftonline.com/error?code=${codes[0]}`] : [];
  const logs = e.correlation_id
    ? [`Find the request in Entra admin center > Monitoring > Sign-in logs > Service principal sign-ins, correlation id ${e.correlation_id}.`]
    : [];
  return result({
    id: 'other',
    title: e.error ? `${e.error}${codes.length ? ` (AADSTS${codes[0]})` : ''}` : 'The exchange failed',
    meaning: (OAUTH[e.error] && OAUTH[e.error].meaning) || 'The identity provider refused the exchange; its own words are above.',
    fix: [...lookup, ...logs, ...(lookup.length + logs.length === 0 ? ['Read the error above; rerun with --json for every field of the answer.'] : [])],
  });
}

module.exports = { explain, explainCode, entraCodes, ENTRA_CODES: Object.keys(ENTRA).map(Number), OAUTH_CODES: Object.keys(OAUTH) };
