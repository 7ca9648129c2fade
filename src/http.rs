//! The HTTP client: one pooled keep-alive client per proxy setting, TLS by
//! rustls, no redirects, bodies read with a size cap, and transport failures
//! named the way Node.js names them (`ETIMEDOUT`, `ECONNRESET`, …) so callers'
//! checks keep working.
//!
//! Trusted roots are Mozilla's (as Node.js ships them), the system's store
//! when there is one, and `NODE_EXTRA_CA_CERTS`: a container image without a
//! CA bundle still reaches Entra.
//!
//! Loopback hosts are always reached directly, whatever the proxy settings, as
//! Go's `net/http` does: plain http is allowed only to them, and a proxy would
//! see the assertion and the client secret in clear.

use std::error::Error as _;
use std::sync::LazyLock;
use std::time::{Duration, SystemTime};

use parking_lot::Mutex;
use reqwest::header::{HeaderMap, AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};
use reqwest::{Client, Url};

use crate::config::without_credentials;
use crate::error::ExchangeError;
use crate::retry::parse_retry_after;

/// The most a token endpoint or discovery document may send.
pub const MAX_BODY_BYTES: usize = 1 << 20;

/// What the server answered, read whole.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub content_type: Option<String>,
    pub retry_after: Option<Duration>,
    pub body: Vec<u8>,
}

/// Clients by the proxy they go through (`None`: the environment's).
type ClientsByProxy = Vec<(Option<Url>, Client)>;

static CLIENTS: LazyLock<Mutex<ClientsByProxy>> = LazyLock::new(|| Mutex::new(Vec::new()));

/// The client for a proxy setting. Kept across `configure()` calls so that
/// pooled connections survive a re-configuration with the same proxy.
pub fn client_for(proxy: Option<&Url>) -> Result<Client, String> {
    let mut clients = CLIENTS.lock();
    if let Some((_, client)) = clients.iter().find(|(known, _)| known.as_ref() == proxy) {
        return Ok(client.clone());
    }
    let client = build_client(proxy)?;
    if clients.len() >= 8 {
        clients.remove(0);
    }
    clients.push((proxy.cloned(), client.clone()));
    Ok(client)
}

/// A system store whose certificates are all unusable makes reqwest refuse to
/// build; Mozilla's roots and `NODE_EXTRA_CA_CERTS` are enough without it.
fn build_client(proxy: Option<&Url>) -> Result<Client, String> {
    if let Ok(client) = client_builder(proxy)?.build() {
        return Ok(client);
    }
    client_builder(proxy)?
        .tls_built_in_native_certs(false)
        .build()
        .map_err(|why| format!("the HTTP client could not be built: {why}"))
}

fn client_builder(proxy: Option<&Url>) -> Result<reqwest::ClientBuilder, String> {
    let mut builder = Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(256)
        .tcp_nodelay(true)
        .user_agent(concat!("obo-native/", env!("CARGO_PKG_VERSION")));
    let proxies = match proxy {
        Some(proxy) => vec![reqwest::Proxy::all(proxy.clone()).map_err(|_| "the proxy URL is not usable".to_owned())?],
        None => proxies_from_env(),
    };
    // Without a proxy of ours, reqwest would read the environment itself, loopback included.
    builder = builder.no_proxy();
    for proxy in proxies {
        builder = builder.proxy(proxy.no_proxy(direct_hosts()));
    }
    for certificate in extra_ca_certificates() {
        builder = builder.add_root_certificate(certificate);
    }
    Ok(builder)
}

/// Hosts never proxied: `NO_PROXY` (or `no_proxy`) and loopback.
const LOOPBACK_HOSTS: &str = "localhost, 127.0.0.0/8, ::1, ::ffff:127.0.0.0/104";

fn direct_hosts() -> Option<reqwest::NoProxy> {
    let from_env = first_env(&["NO_PROXY", "no_proxy"]).unwrap_or_default();
    reqwest::NoProxy::from_string(&format!("{from_env},{LOOPBACK_HOSTS}"))
}

/// `HTTP_PROXY`, `HTTPS_PROXY` and `ALL_PROXY` (or their lower-case names),
/// read as reqwest and curl read them: `ALL_PROXY` stands in for a scheme
/// without its own, unusable values are ignored, and none is trusted in a CGI
/// request (`REQUEST_METHOD` set), where `HTTP_PROXY` may come from a header.
fn proxies_from_env() -> Vec<reqwest::Proxy> {
    if std::env::var_os("REQUEST_METHOD").is_some() {
        return Vec::new();
    }
    let all = first_env(&["ALL_PROXY", "all_proxy"]);
    let http = first_env(&["HTTP_PROXY", "http_proxy"]);
    let https = first_env(&["HTTPS_PROXY", "https_proxy"]);
    let usable = |value: &Option<String>, make: fn(&str) -> reqwest::Result<reqwest::Proxy>| {
        value.as_deref().filter(|value| !value.trim().is_empty()).and_then(|value| make(value).ok())
    };
    [
        usable(&http, |url| reqwest::Proxy::http(url)).or_else(|| usable(&all, |url| reqwest::Proxy::http(url))),
        usable(&https, |url| reqwest::Proxy::https(url)).or_else(|| usable(&all, |url| reqwest::Proxy::https(url))),
    ]
    .into_iter()
    .flatten()
    .collect()
}

/// The value of the first of `names` that is set.
fn first_env(names: &[&str]) -> Option<String> {
    names.iter().find_map(|name| std::env::var(name).ok())
}

/// The certificates of `NODE_EXTRA_CA_CERTS`, as Node.js reads them: a file
/// that cannot be read is skipped, as Node.js does (with a warning there).
fn extra_ca_certificates() -> Vec<reqwest::Certificate> {
    let Some(path) = std::env::var_os("NODE_EXTRA_CA_CERTS").filter(|path| !path.is_empty()) else {
        return Vec::new();
    };
    std::fs::read(path).ok().and_then(|pem| reqwest::Certificate::from_pem_bundle(&pem).ok()).unwrap_or_default()
}

/// `POST` of a form body, whole answer read, within `timeout`.
pub async fn post_form(
    client: &Client,
    url: &Url,
    authorization: Option<&str>,
    body: String,
    timeout: Duration,
) -> Result<Answer, ExchangeError> {
    let mut request = client
        .post(url.clone())
        .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header(reqwest::header::ACCEPT, "application/json")
        .body(body);
    if let Some(authorization) = authorization {
        request = request.header(AUTHORIZATION, authorization);
    }
    fetch(request, url, timeout, "OBO token request").await
}

/// `GET` of a JSON document (discovery), whole answer read, within `timeout`.
pub async fn get(client: &Client, url: &Url, timeout: Duration) -> Result<Answer, ExchangeError> {
    let request = client.get(url.clone()).header(reqwest::header::ACCEPT, "application/json");
    fetch(request, url, timeout, "OpenID discovery request").await
}

async fn fetch(
    request: reqwest::RequestBuilder,
    url: &Url,
    timeout: Duration,
    what: &str,
) -> Result<Answer, ExchangeError> {
    let attempt = async {
        let mut response = request.send().await.map_err(|err| transport_error(&err, url, what, timeout))?;
        let status = response.status().as_u16();
        let content_type = header_text(response.headers(), CONTENT_TYPE);
        let retry_after = header_text(response.headers(), RETRY_AFTER);
        if response.content_length().is_some_and(|length| length > MAX_BODY_BYTES as u64) {
            return Err(too_large(url, what, status));
        }
        // Sized once when announced (and already checked against the cap): no regrowth.
        let mut body = Vec::with_capacity(response.content_length().map_or(0, |length| length as usize));
        while let Some(chunk) = response.chunk().await.map_err(|err| transport_error(&err, url, what, timeout))? {
            if body.len() + chunk.len() > MAX_BODY_BYTES {
                return Err(too_large(url, what, status));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Answer {
            status,
            content_type,
            retry_after: retry_after.and_then(|value| parse_retry_after(&value, SystemTime::now())),
            body,
        })
    };
    match tokio::time::timeout(timeout, attempt).await {
        Ok(answer) => answer,
        Err(_) => Err(timed_out(url, what, timeout)),
    }
}

fn header_text(headers: &HeaderMap, name: reqwest::header::HeaderName) -> Option<String> {
    headers.get(name).and_then(|value| value.to_str().ok()).map(str::to_owned)
}

fn too_large(url: &Url, what: &str, status: u16) -> ExchangeError {
    ExchangeError::failed(format!(
        "{what} to {} failed: the answer (HTTP {status}) is larger than {} bytes",
        printable(url),
        MAX_BODY_BYTES
    ))
    .with_status(status)
}

fn timed_out(url: &Url, what: &str, timeout: Duration) -> ExchangeError {
    ExchangeError::failed(format!(
        "{what} to {} timed out after {} ms (ETIMEDOUT)",
        printable(url),
        timeout.as_millis()
    ))
    .with_code("ETIMEDOUT")
}

fn printable(url: &Url) -> String {
    without_credentials(url).to_string()
}

/// A failure before an answer, named as Node.js would name it.
fn transport_error(err: &reqwest::Error, url: &Url, what: &str, timeout: Duration) -> ExchangeError {
    if err.is_timeout() {
        return timed_out(url, what, timeout);
    }
    let (code, cause) = classify(err);
    let message = match code {
        Some(code) => format!("{what} to {} failed: {cause} ({code})", printable(url)),
        None => format!("{what} to {} failed: {cause}", printable(url)),
    };
    let mut error = ExchangeError::failed(message);
    error.code = code.map(str::to_owned);
    if cause.contains(PROXY_AUTH_REQUIRED) {
        error.status = Some(407);
    }
    error
}

const PROXY_AUTH_REQUIRED: &str = "proxy authorization required";

/// The Node.js error code and a plain description of the innermost cause.
fn classify(err: &reqwest::Error) -> (Option<&'static str>, String) {
    let mut innermost = err.to_string();
    let mut source = err.source();
    let mut texts = Vec::new();
    while let Some(cause) = source {
        innermost = cause.to_string();
        texts.push(innermost.to_ascii_lowercase());
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind::*;
            let code = match io.kind() {
                ConnectionRefused => Some("ECONNREFUSED"),
                ConnectionReset | ConnectionAborted | BrokenPipe | UnexpectedEof => Some("ECONNRESET"),
                TimedOut => Some("ETIMEDOUT"),
                _ => None,
            };
            if let Some(code) = code {
                return (code.into(), describe(code));
            }
        }
        source = cause.source();
    }
    let all = texts.join(" | ");
    if all.contains(PROXY_AUTH_REQUIRED) {
        return (
            None,
            format!("the proxy refused the tunnel: {PROXY_AUTH_REQUIRED} (HTTP 407; check the proxy's credentials)"),
        );
    }
    if all.contains("tunnel error") {
        return (None, format!("the proxy could not open a tunnel ({innermost})"));
    }
    let code = if all.contains("certificate") || all.contains("unknownissuer") || all.contains("tls handshake") {
        return (Some("CERT_UNTRUSTED"), format!("the TLS certificate was not accepted ({innermost})"));
    } else if all.contains("temporary failure in name resolution") || all.contains("try again") {
        Some("EAI_AGAIN")
    } else if all.contains("dns error") || all.contains("lookup address") || all.contains("name or service not known") {
        Some("ENOTFOUND")
    } else if all.contains("connection closed before message completed")
        || all.contains("incomplete message")
        || all.contains("connection reset")
    {
        Some("ECONNRESET")
    } else if all.contains("connection refused") {
        Some("ECONNREFUSED")
    } else {
        None
    };
    match code {
        Some(code) => (Some(code), describe(code)),
        None => (None, innermost),
    }
}

fn describe(code: &str) -> String {
    match code {
        "ECONNREFUSED" => "connection refused".into(),
        "ECONNRESET" => "the connection was reset before the answer was complete".into(),
        "ETIMEDOUT" => "timed out".into(),
        "ENOTFOUND" => "the host name could not be resolved".into(),
        "EAI_AGAIN" => "the host name could not be resolved now (temporary DNS failure)".into(),
        other => other.into(),
    }
}
