'use strict';
/**
 * `obo-native exchange`: one real On-Behalf-Of exchange, for an administrator
 * setting it up. Prints the token endpoint used, the time taken, `expires_in`
 * and the (unverified) claims of the token received — never the token unless
 * --show-token, never the assertion, never the client secret — and, when the
 * provider refuses, what it means and how to fix it.
 *
 * Exit codes: 0 success, 1 exchange refused, 2 bad usage.
 */
const crypto = require('node:crypto');
const fs = require('node:fs');
const net = require('node:net');
const { parseArgs } = require('node:util');

const { explain } = require('./explain.js');
const { decodeJwt, summarizeClaims, pickClaims, assertionRemarks, assertionSummary } = require('./claims.js');
const { palette, rows, duration, wrap } = require('./ui.js');

const EXIT_OK = 0;
const EXIT_REFUSED = 1;
const EXIT_USAGE = 2;

const AUTH_METHODS = ['client_secret_basic', 'client_secret_post', 'private_key_jwt', 'none'];
/** The user the exchange is made for: a name of its own, so it shares nothing with a real user. */
const CLI_USER = { openidId: 'obo-native-cli' };

const HELP = `Usage: obo-native exchange --scope SCOPES --assertion-file PATH [options]

Performs one real On-Behalf-Of exchange and explains the result.

Options:
  --scope SCOPES          the downstream scopes, e.g. "api://<app-id>/Read" or
                          "https://graph.microsoft.com/.default" (required)
  --assertion-file PATH   a file holding the signed-in user's access token;
                          "-" reads it from stdin (required)
  --issuer URL            OpenID issuer, for discovery     (default: $OPENID_ISSUER)
  --token-endpoint URL    token endpoint, skips discovery
  --client-id ID          this application's client id     (default: $OPENID_CLIENT_ID)
  --auth-method METHOD    client_secret_basic | client_secret_post | private_key_jwt | none
                          (default: $OPENID_TOKEN_ENDPOINT_AUTH_METHOD, else client_secret_basic,
                          or private_key_jwt with the credentials below)
  --certificate PATH      private_key_jwt: the app's certificate (PEM, leaf first)
  --private-key PATH      private_key_jwt: the certificate's key (PEM, PKCS#8 or PKCS#1)
  --client-assertion-file PATH
                          private_key_jwt: a file holding a client assertion, such as
                          a workload identity token (default: $AZURE_FEDERATED_TOKEN_FILE
                          when OPENID_CLIENT_SECRET is not set)
  --grant-type TYPE       jwt-bearer (Entra ID) | token-exchange (RFC 8693: Keycloak, Okta,
                          Auth0)                             (default: $OBO_GRANT_TYPE, else jwt-bearer)
  --audience NAME         token-exchange: an audience; repeat for several
                          (default: $OBO_AUDIENCE, space-separated)
  --resource URI          token-exchange: a resource; repeat for several
                          (default: $OBO_RESOURCE, space-separated)
  --show-token            also print the token received
  --json                  print the result as JSON on stdout
  -h, --help              show this help

The client secret is read only from $OPENID_CLIENT_SECRET (never from a flag,
so it stays out of your shell history), and a private key only from a file.
$PROXY, $HTTPS_PROXY, $NO_PROXY and $NODE_EXTRA_CA_CERTS are honoured.

Exit codes: 0 success, 1 exchange refused, 2 bad usage.

Example:
  OPENID_ISSUER=https://login.microsoftonline.com/<tenant-id>/v2.0 \\
  OPENID_CLIENT_ID=<client-id> OPENID_CLIENT_SECRET=<secret> \\
  npx obo-native exchange --scope "api://<downstream-app-id>/.default" --assertion-file token.txt

  With a certificate instead of a secret:
  npx obo-native exchange --scope "api://<downstream-app-id>/.default" --assertion-file token.txt \\
    --certificate app.crt.pem --private-key app.key.pem
`;

class UsageError extends Error {}

function env(name) {
  const value = process.env[name];
  return typeof value === 'string' && value.trim() !== '' ? value.trim() : undefined;
}

function parse(argv) {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      strict: true,
      allowPositionals: false,
      options: {
        issuer: { type: 'string' },
        'token-endpoint': { type: 'string' },
        'client-id': { type: 'string' },
        'auth-method': { type: 'string' },
        scope: { type: 'string' },
        'assertion-file': { type: 'string' },
        certificate: { type: 'string' },
        'private-key': { type: 'string' },
        'client-assertion-file': { type: 'string' },
        'grant-type': { type: 'string' },
        audience: { type: 'string', multiple: true },
        resource: { type: 'string', multiple: true },
        'show-token': { type: 'boolean' },
        json: { type: 'boolean' },
        help: { type: 'boolean', short: 'h' },
      },
    });
  } catch (err) {
    let message = String(err.message).split('\n')[0];
    if (/client-secret|secret/i.test(message)) {
      message += ' (the client secret is read only from OPENID_CLIENT_SECRET, never from a flag)';
    }
    throw new UsageError(message);
  }
  return parsed.values;
}

/** The settings of the exchange, from flags and LibreChat's variables. */
function settings(flags) {
  if (flags.issuer !== undefined && flags['token-endpoint'] !== undefined) {
    throw new UsageError('pass either --issuer or --token-endpoint, not both');
  }
  const tokenEndpoint = flags['token-endpoint'];
  const issuer = tokenEndpoint === undefined ? flags.issuer ?? env('OPENID_ISSUER') : undefined;
  if (!tokenEndpoint && !issuer) {
    throw new UsageError('no identity provider: pass --issuer URL or --token-endpoint URL, or set OPENID_ISSUER');
  }
  const clientId = flags['client-id'] ?? env('OPENID_CLIENT_ID');
  if (!clientId) throw new UsageError('no client id: pass --client-id ID or set OPENID_CLIENT_ID');
  const credentials = clientCredentials(flags);
  const authMethod =
    flags['auth-method'] ?? (credentials ? 'private_key_jwt' : env('OPENID_TOKEN_ENDPOINT_AUTH_METHOD') ?? 'client_secret_basic');
  if (!AUTH_METHODS.includes(authMethod)) {
    const from = flags['auth-method'] !== undefined ? '--auth-method' : 'OPENID_TOKEN_ENDPOINT_AUTH_METHOD';
    throw new UsageError(`${from} must be one of ${AUTH_METHODS.join(', ')}, not "${authMethod}"`);
  }
  if (credentials && authMethod !== 'private_key_jwt') {
    throw new UsageError(`${credentials.flags.join(' and ')} ${credentials.flags.length > 1 ? 'are' : 'is'} for --auth-method private_key_jwt, not ${authMethod}`);
  }
  if (authMethod === 'private_key_jwt' && !credentials) {
    throw new UsageError('--auth-method private_key_jwt needs --certificate PATH with --private-key PATH, or --client-assertion-file PATH');
  }
  const clientSecret = authMethod === 'private_key_jwt' ? undefined : env('OPENID_CLIENT_SECRET');
  if (authMethod !== 'none' && authMethod !== 'private_key_jwt' && !clientSecret) {
    throw new UsageError(`OPENID_CLIENT_SECRET is not set: it is required with --auth-method ${authMethod} (it is read only from the environment)`);
  }
  if (!flags.scope || !flags.scope.trim()) throw new UsageError('--scope SCOPES is required');
  if (flags['assertion-file'] === undefined || flags['assertion-file'] === '') {
    throw new UsageError('--assertion-file PATH is required (the signed-in user\'s access token; "-" reads stdin)');
  }
  return {
    issuer,
    tokenEndpoint,
    clientId,
    authMethod,
    clientSecret,
    credentials,
    proxy: env('PROXY'),
    scope: flags.scope.trim(),
    assertionFile: flags['assertion-file'],
    ...grantSettings(flags),
  };
}

/** The grant, and for token exchange its audiences and resources (flags, else OBO_* variables). */
function grantSettings(flags) {
  const grantType = flags['grant-type'] ?? env('OBO_GRANT_TYPE') ?? 'jwt-bearer';
  const list = (flag, name) => flags[flag] ?? env(name)?.split(/\s+/);
  if (grantType !== 'token-exchange') {
    const given = ['audience', 'resource'].find((flag) => flags[flag] !== undefined);
    if (given) throw new UsageError(`--${given} is for --grant-type token-exchange, not ${grantType}`);
    return { grantType };
  }
  return { grantType, audience: list('audience', 'OBO_AUDIENCE'), resource: list('resource', 'OBO_RESOURCE') };
}

function readCredentialFile(flag, file) {
  try {
    return fs.readFileSync(file, 'utf8');
  } catch (err) {
    throw new UsageError(`cannot read ${flag} ${file}: ${err.code || err.message}`);
  }
}

/**
 * The private_key_jwt credentials the flags name (or AZURE_FEDERATED_TOKEN_FILE
 * when no client secret is set), read from their files; undefined for none.
 */
function clientCredentials(flags) {
  const certificate = flags.certificate;
  const privateKey = flags['private-key'];
  let assertionFile = flags['client-assertion-file'];
  const named = [
    ['--certificate', certificate],
    ['--private-key', privateKey],
    ['--client-assertion-file', assertionFile],
  ].filter(([, value]) => value !== undefined);
  const method = flags['auth-method'] ?? env('OPENID_TOKEN_ENDPOINT_AUTH_METHOD');
  const federated = env('AZURE_FEDERATED_TOKEN_FILE');
  if (named.length === 0 && federated && !env('OPENID_CLIENT_SECRET') && (method === undefined || method === 'private_key_jwt')) {
    assertionFile = federated;
    named.push(['AZURE_FEDERATED_TOKEN_FILE', assertionFile]);
  }
  if (named.length === 0) return undefined;
  const flagNames = named.map(([flag]) => flag);
  if (assertionFile !== undefined && (certificate !== undefined || privateKey !== undefined)) {
    throw new UsageError('pass either --client-assertion-file or --certificate with --private-key, not both');
  }
  if (assertionFile !== undefined) {
    const clientAssertion = readCredentialFile(named[0][0], assertionFile).trim();
    if (!clientAssertion) throw new UsageError(`the client assertion file ${assertionFile} is empty`);
    return { flags: flagNames, clientAssertion, source: assertionFile };
  }
  if (certificate === undefined) throw new UsageError('--private-key needs --certificate PATH (the key\'s certificate, PEM)');
  if (privateKey === undefined) throw new UsageError('--certificate needs --private-key PATH (the certificate\'s private key, PEM)');
  const certificateText = readCredentialFile('--certificate', certificate);
  let thumbprint;
  try {
    thumbprint = new crypto.X509Certificate(certificateText).fingerprint.replace(/:/g, '');
  } catch {
    thumbprint = undefined; // configure() says what is wrong with it
  }
  return {
    flags: flagNames,
    clientCertificate: certificateText,
    clientPrivateKey: readCredentialFile('--private-key', privateKey),
    thumbprint,
  };
}

async function readAssertion(file) {
  let text;
  if (file === '-') {
    if (process.stdin.isTTY) process.stderr.write('Paste the user\'s access token, then press Ctrl-D:\n');
    const chunks = [];
    for await (const chunk of process.stdin) chunks.push(chunk);
    text = Buffer.concat(chunks).toString('utf8');
  } else {
    try {
      text = fs.readFileSync(file, 'utf8');
    } catch (err) {
      throw new UsageError(`cannot read --assertion-file ${file}: ${err.code || err.message}`);
    }
  }
  text = text.trim();
  // A saved token response ({"access_token": "..."}) is accepted as is.
  if (text.startsWith('{')) {
    try {
      const json = JSON.parse(text);
      if (json && typeof json.access_token === 'string') text = json.access_token.trim();
    } catch {
      // not JSON: used as it is
    }
  }
  text = text.replace(/^Bearer\s+/i, '');
  if (!text) throw new UsageError(`the assertion is empty (${file === '-' ? 'stdin' : file})`);
  return text;
}

/** What configure() refused, said with the flag or variable the user controls. */
function configUsage(err) {
  const option = err && err.option;
  const detail = String(err.message || err).replace(/^configure: option "[^"]+" /, '');
  switch (option) {
    case 'issuer':
      return `--issuer / OPENID_ISSUER ${detail}`;
    case 'tokenEndpoint':
      return `--token-endpoint ${detail}`;
    case 'clientId':
      return `--client-id / OPENID_CLIENT_ID ${detail}`;
    case 'clientSecret':
      return `OPENID_CLIENT_SECRET ${detail}`;
    case 'tokenEndpointAuthMethod':
      return `--auth-method ${detail}`;
    case 'clientCertificate':
      return `--certificate: ${detail}`;
    case 'clientPrivateKey':
      return `--private-key: ${detail}`;
    case 'clientAssertion':
      return `--client-assertion-file: ${detail}`;
    case 'proxy':
      return `PROXY ${detail}`;
    case 'grantType':
      return `--grant-type / OBO_GRANT_TYPE ${detail}`;
    case 'audience':
      return `--audience / OBO_AUDIENCE: ${detail}`;
    case 'resource':
      return `--resource / OBO_RESOURCE: ${detail}`;
    default:
      return detail;
  }
}

function withoutCredentials(url) {
  try {
    const parsed = new URL(url);
    parsed.username = '';
    parsed.password = '';
    return parsed.toString().replace(/\/$/, '');
  } catch {
    return '(an unparsable proxy URL)';
  }
}

/** The proxy the addon will use for `target`, roughly as reqwest decides, for display. */
function proxyFor(s, target) {
  let host;
  let https = true;
  try {
    const url = new URL(target);
    host = url.hostname;
    https = url.protocol === 'https:';
  } catch {
    return undefined;
  }
  // The package reaches loopback hosts directly, whatever the proxy settings.
  if (host === 'localhost' || host === '[::1]' || /^127\.\d+\.\d+\.\d+$/.test(host)) return undefined;
  if (s.proxy) return { url: s.proxy, from: 'PROXY' };
  const noProxy = (process.env.NO_PROXY || process.env.no_proxy || '').split(',').map((x) => x.trim()).filter(Boolean);
  if (noProxy.some((entry) => entry === '*' || host === entry.replace(/^\./, '') || host.endsWith(entry.startsWith('.') ? entry : `.${entry}`))) {
    return undefined;
  }
  const names = https ? ['HTTPS_PROXY', 'https_proxy', 'ALL_PROXY', 'all_proxy'] : ['HTTP_PROXY', 'http_proxy', 'ALL_PROXY', 'all_proxy'];
  for (const name of names) if (env(name)) return { url: env(name), from: name };
  return undefined;
}

/** Whether a TCP connection to the proxy opens (to tell a dead proxy from a refusing target). */
function reachable(url, timeoutMs = 1500) {
  return new Promise((resolve) => {
    let parsed;
    try {
      parsed = new URL(url);
    } catch {
      resolve(false);
      return;
    }
    const port = Number(parsed.port) || (parsed.protocol === 'https:' ? 443 : 80);
    const socket = net.connect({ host: parsed.hostname.replace(/^\[|\]$/g, ''), port });
    const done = (ok) => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(timeoutMs, () => done(false));
    socket.once('connect', () => done(true));
    socket.once('error', () => done(false));
  });
}

/** The message without Entra's trailing "Trace ID: … Correlation ID: … Timestamp: …" (shown apart). */
function shortMessage(message) {
  return String(message).replace(/\s*Trace ID:[\s\S]*$/, '').trim();
}

const ERROR_FIELDS = [
  'status',
  'code',
  'error',
  'error_description',
  'error_codes',
  'suberror',
  'claims',
  'correlation_id',
  'trace_id',
  'timestamp',
  'retryable',
  'retryAfter',
  'throttled',
  'oboFailureReason',
];

async function exchange(argv) {
  const out = process.stdout;
  const errOut = process.stderr;
  let flags;
  try {
    flags = parse(argv);
  } catch (err) {
    return usageFailure(err, argv.includes('--json'));
  }
  if (flags.help) {
    out.write(HELP);
    return EXIT_OK;
  }

  let s;
  let assertion;
  try {
    s = settings(flags);
    assertion = await readAssertion(s.assertionFile);
  } catch (err) {
    if (err instanceof UsageError) return usageFailure(err, flags.json);
    throw err;
  }

  const obo = require('../index.js');
  const credentials = s.credentials || {};
  try {
    obo.configure({
      issuer: s.issuer,
      tokenEndpoint: s.tokenEndpoint,
      clientId: s.clientId,
      clientSecret: s.clientSecret,
      tokenEndpointAuthMethod: s.authMethod,
      proxy: s.proxy,
      clientCertificate: credentials.clientCertificate,
      clientPrivateKey: credentials.clientPrivateKey,
      clientAssertion: credentials.clientAssertion,
      grantType: s.grantType,
      audience: s.audience,
      resource: s.resource,
    });
  } catch (err) {
    return usageFailure(new UsageError(configUsage(err)), flags.json);
  }

  const secrets = [assertion, s.clientSecret, credentials.clientAssertion, credentials.clientPrivateKey].filter(
    (x) => typeof x === 'string' && x.length >= 4,
  );
  const scrub = (text, token) => {
    let clean = String(text);
    for (const secret of secrets) clean = clean.split(secret).join('[redacted]');
    if (token && !flags['show-token']) clean = clean.split(token).join('[token]');
    return clean;
  };

  const proxy = proxyFor(s, s.tokenEndpoint || s.issuer);
  const shownProxy = proxy ? `${withoutCredentials(proxy.url)}` : undefined;
  const started = performance.now();
  let token;
  let failure;
  try {
    token = await obo.exchangeOboToken(CLI_USER, assertion, s.scope, false);
  } catch (err) {
    failure = err;
  }
  const elapsedMs = performance.now() - started;
  // The endpoint the exchange used (null when discovery itself failed).
  const endpointUsed = obo.tokenEndpoint();
  const endpointText = s.tokenEndpoint
    ? s.tokenEndpoint
    : endpointUsed
      ? `${endpointUsed}\n(discovered from ${s.issuer})`
      : `discovered from ${s.issuer}`;
  const timeText = `${duration(elapsedMs)}${s.issuer ? ' (OpenID discovery and token request)' : ''}`;
  const credentialText = credentials.thumbprint
    ? `, certificate thumbprint ${credentials.thumbprint}`
    : credentials.source
      ? `, client assertion from ${credentials.source}`
      : '';
  const common = [
    ['Token endpoint', endpointText],
    ['Client', `${s.clientId} (${s.authMethod}${credentialText})`],
    ...(shownProxy ? [['Proxy', `${shownProxy} (${proxy.from})`]] : []),
    ['Scope', s.scope],
    ['Time', timeText],
  ];
  const base = {
    tokenEndpoint: endpointUsed,
    issuer: s.issuer || null,
    clientId: s.clientId,
    authMethod: s.authMethod,
    ...(credentials.thumbprint ? { certificateThumbprint: credentials.thumbprint } : {}),
    proxy: shownProxy || null,
    scope: s.scope,
    elapsedMs: Math.round(elapsedMs * 1000) / 1000,
  };

  if (!failure) {
    const decoded = decodeJwt(token.access_token);
    const expiresAt = new Date(Date.now() + token.expires_in * 1000).toISOString();
    if (flags.json) {
      const result = {
        ok: true,
        ...base,
        token_type: token.token_type,
        expires_in: token.expires_in,
        expiresAt,
        claims: decoded ? pickClaims(decoded.payload) : null,
      };
      if (flags['show-token']) result.access_token = token.access_token;
      out.write(`${JSON.stringify(result, null, 2)}\n`);
      return EXIT_OK;
    }
    const c = palette(out);
    const lines = [
      c.green(c.bold('✔ On-Behalf-Of exchange succeeded')),
      '',
      rows([...common, ['expires_in', `${token.expires_in} s (until ${expiresAt.replace(/\.\d{3}Z$/, 'Z')})`], ['token_type', token.token_type]], { width: 17 }),
      '',
    ];
    if (decoded) {
      lines.push(c.bold('  Claims of the token received (decoded, not verified):'));
      lines.push(rows(summarizeClaims(decoded.payload), { indent: 4 }));
    } else {
      lines.push('  The token received is not a JWT (an opaque or encrypted token): its claims cannot be shown.');
    }
    lines.push('');
    if (flags['show-token']) {
      lines.push(c.bold('  access_token:'), token.access_token);
    } else {
      lines.push(c.dim('  The token itself is not shown; add --show-token to print it.'));
    }
    out.write(`${lines.map((line) => scrub(line)).join('\n')}\n`);
    return EXIT_OK;
  }

  const err = failure && typeof failure === 'object' ? failure : { message: String(failure) };
  const context = {
    clientId: s.clientId,
    scope: s.scope,
    issuer: s.issuer,
    tokenEndpoint: endpointUsed,
    authMethod: s.authMethod,
    certificateThumbprint: credentials.thumbprint,
    proxy: shownProxy,
    audience: s.audience,
  };
  const transport = /ETIMEDOUT|ECONNRESET|ECONNREFUSED|ENOTFOUND|EAI_AGAIN/.test(`${err.code || ''} ${err.message || ''}`);
  if (proxy && transport) context.proxyReachable = await reachable(proxy.url);
  const explanation = explain(err, context);
  const remarks = assertionRemarks(assertion, { clientId: s.clientId });

  if (flags.json) {
    const error = { message: scrub(err.message) };
    for (const name of ERROR_FIELDS) {
      if (err[name] !== undefined) error[name] = typeof err[name] === 'string' ? scrub(err[name]) : err[name];
    }
    const result = {
      ok: false,
      ...base,
      error,
      explanation: { id: explanation.id, title: explanation.title, meaning: explanation.meaning, fix: explanation.fix.map((line) => scrub(line)) },
      assertion: { claims: Object.fromEntries(assertionSummary(assertion)), remarks },
    };
    out.write(`${JSON.stringify(result, null, 2)}\n`);
    return EXIT_REFUSED;
  }

  const c = palette(errOut);
  const details = [...common, ['Error', wrap(shortMessage(err.message), 76)]];
  if (err.status !== undefined) details.push(['HTTP status', String(err.status)]);
  if (explanation.codes.length) details.push(['AADSTS', explanation.codes.join(', ')]);
  if (err.suberror) details.push(['Suberror', err.suberror]);
  if (err.correlation_id) details.push(['Correlation ID', err.correlation_id]);
  if (err.trace_id) details.push(['Trace ID', err.trace_id]);
  if (err.timestamp) details.push(['Timestamp', err.timestamp]);
  if (err.retryAfter !== undefined) details.push(['Retry-After', `${err.retryAfter} s`]);
  const lines = [c.red(c.bold('✖ On-Behalf-Of exchange refused')), '', rows(details, { width: 17 }), ''];
  lines.push(c.bold(`  ${explanation.title}`));
  lines.push(`  ${c.bold('What it means:')}`, `    ${wrap(explanation.meaning, 86, '    ')}`);
  lines.push(`  ${c.bold('How to fix it:')}`);
  for (const fix of explanation.fix) lines.push(`    • ${wrap(fix, 84, '      ')}`);
  const summary = assertionSummary(assertion);
  if (remarks.length || summary.length) {
    lines.push('', c.bold('  The assertion you sent (claims decoded, not verified; the token is not shown):'));
    if (summary.length) lines.push(rows(summary, { indent: 4 }));
    for (const remark of remarks) lines.push(`    ${c.yellow('!')} ${wrap(remark, 84, '      ')}`);
  }
  errOut.write(`${lines.map((line) => scrub(line)).join('\n')}\n`);
  return EXIT_REFUSED;
}

function usageFailure(err, json) {
  const message = err instanceof UsageError ? err.message : String(err && err.message ? err.message : err);
  process.stderr.write(`obo-native exchange: ${message}\nRun "obo-native exchange --help" for usage.\n`);
  if (json) process.stdout.write(`${JSON.stringify({ ok: false, usage: message }, null, 2)}\n`);
  return EXIT_USAGE;
}

module.exports = { exchange, HELP, EXIT_OK, EXIT_REFUSED, EXIT_USAGE };
