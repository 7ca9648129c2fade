//! The one question the engine asks about client credentials: "the
//! `client_assertion` for a request to this endpoint?". Whether the answer is
//! signed here, configured as a string, read from a federated token file or
//! fetched by the host's function is settled by `configure()`.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::SystemTime;

use super::federated::FederatedTokenFile;
use super::jwt::ClientAssertionSigner;

/// What a `clientAssertion` function is told: msal-node's
/// `ClientAssertionConfig` (`clientId`, `tokenEndpoint`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AssertionRequest {
    pub client_id: String,
    /// The endpoint the request goes to (after home-tenant routing): the assertion's `aud`.
    pub token_endpoint: String,
}

/// The answer of a host function: the assertion, or why there is none.
pub type AssertionFuture = Pin<Box<dyn Future<Output = Result<Arc<str>, String>> + Send>>;

/// A `clientAssertion` function of the host (a vault, an HSM), bridged by the
/// napi layer. It is called only when a request is about to be sent.
pub trait AssertionCallback: Send + Sync {
    fn call(&self, request: AssertionRequest) -> AssertionFuture;
}

/// No client assertion could be had, so no request is sent. The message says
/// where it failed and never holds an assertion.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientAssertionError(String);

impl ClientAssertionError {
    pub fn message(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ClientAssertionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ClientAssertionError {}

/// The exchange fails without a request: nothing was sent, so nothing is retried for it.
impl From<ClientAssertionError> for crate::error::ExchangeError {
    fn from(err: ClientAssertionError) -> Self {
        crate::error::ExchangeError::failed(format!("OBO token request not sent: {}", err.0))
            .with_code(CLIENT_ASSERTION_UNAVAILABLE)
    }
}

/// The `code` of an exchange that failed because no client assertion could be had.
pub const CLIENT_ASSERTION_UNAVAILABLE: &str = "ECLIENTASSERTION";

/// Where the `client_assertion` of `private_key_jwt` comes from.
#[derive(Clone)]
pub enum ClientAssertionSource {
    /// `clientCertificate` + `clientPrivateKey`: signed here, reused per endpoint.
    Certificate(Arc<ClientAssertionSigner>),
    /// `clientAssertion` given as a string, sent as is.
    Fixed(Arc<str>),
    /// `AZURE_FEDERATED_TOKEN_FILE`: the file's content, re-read when it changes.
    FederatedTokenFile(Arc<FederatedTokenFile>),
    /// `clientAssertion` given as a function.
    Callback(Arc<dyn AssertionCallback>),
}

impl ClientAssertionSource {
    /// The assertion for a request to `token_endpoint` (the URL actually called).
    pub async fn assertion(&self, token_endpoint: &str, client_id: &str) -> Result<Arc<str>, ClientAssertionError> {
        match self {
            ClientAssertionSource::Certificate(signer) => signer
                .assertion(token_endpoint, client_id, SystemTime::now())
                .map_err(|why| ClientAssertionError(why.to_string())),
            ClientAssertionSource::Fixed(assertion) => Ok(assertion.clone()),
            ClientAssertionSource::FederatedTokenFile(file) => {
                file.assertion().map_err(|why| ClientAssertionError(why.to_string()))
            }
            ClientAssertionSource::Callback(callback) => {
                let request =
                    AssertionRequest { client_id: client_id.to_owned(), token_endpoint: token_endpoint.to_owned() };
                match callback.call(request).await {
                    Ok(assertion) if !assertion.trim().is_empty() => Ok(assertion),
                    Ok(_) => {
                        Err(ClientAssertionError("the clientAssertion function returned an empty assertion".into()))
                    }
                    Err(why) => Err(ClientAssertionError(format!("the clientAssertion function failed: {why}"))),
                }
            }
        }
    }

    /// The assertion when it is fixed by the configuration: the secret an
    /// error text must never contain (the others change per request; the
    /// caller redacts the one it sent).
    pub fn fixed_secret(&self) -> Option<&str> {
        match self {
            ClientAssertionSource::Fixed(assertion) => Some(assertion),
            _ => None,
        }
    }
}

/// Equal sources give the same assertions: a `configure()` repeating them changes nothing.
impl PartialEq for ClientAssertionSource {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (ClientAssertionSource::Certificate(a), ClientAssertionSource::Certificate(b)) => a == b,
            (ClientAssertionSource::Fixed(a), ClientAssertionSource::Fixed(b)) => a == b,
            (ClientAssertionSource::FederatedTokenFile(a), ClientAssertionSource::FederatedTokenFile(b)) => {
                a.path() == b.path()
            }
            (ClientAssertionSource::Callback(a), ClientAssertionSource::Callback(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

impl fmt::Debug for ClientAssertionSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientAssertionSource::Certificate(signer) => f.debug_tuple("Certificate").field(signer).finish(),
            ClientAssertionSource::Fixed(_) => f.write_str("Fixed([redacted])"),
            ClientAssertionSource::FederatedTokenFile(file) => f.debug_tuple("FederatedTokenFile").field(file).finish(),
            ClientAssertionSource::Callback(_) => f.write_str("Callback"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use parking_lot::Mutex;

    struct Recording {
        answer: Result<&'static str, &'static str>,
        calls: Mutex<Vec<AssertionRequest>>,
    }

    impl AssertionCallback for Recording {
        fn call(&self, request: AssertionRequest) -> AssertionFuture {
            self.calls.lock().push(request);
            let answer = self.answer.map(Arc::from).map_err(str::to_owned);
            Box::pin(async move { answer })
        }
    }

    fn callback(answer: Result<&'static str, &'static str>) -> (Arc<Recording>, ClientAssertionSource) {
        let recording = Arc::new(Recording { answer, calls: Mutex::new(Vec::new()) });
        (recording.clone(), ClientAssertionSource::Callback(recording))
    }

    const ENDPOINT: &str = "https://login.example/tenant/oauth2/v2.0/token";

    #[tokio::test]
    async fn a_function_is_asked_with_the_client_and_the_endpoint() {
        let (recording, source) = callback(Ok("vault.signed.jwt"));
        assert_eq!(&*source.assertion(ENDPOINT, "app").await.unwrap(), "vault.signed.jwt");
        assert_eq!(
            *recording.calls.lock(),
            vec![AssertionRequest { client_id: "app".into(), token_endpoint: ENDPOINT.into() }]
        );
    }

    #[tokio::test]
    async fn a_failing_or_empty_function_is_an_error() {
        let (_, failing) = callback(Err("vault unreachable"));
        assert_eq!(
            failing.assertion(ENDPOINT, "app").await.unwrap_err().message(),
            "the clientAssertion function failed: vault unreachable"
        );
        let (_, empty) = callback(Ok("  "));
        assert_eq!(
            empty.assertion(ENDPOINT, "app").await.unwrap_err().message(),
            "the clientAssertion function returned an empty assertion"
        );
    }

    #[tokio::test]
    async fn a_fixed_assertion_is_sent_as_is_and_never_shown() {
        let source = ClientAssertionSource::Fixed("fixed.client.assertion".into());
        assert_eq!(&*source.assertion(ENDPOINT, "app").await.unwrap(), "fixed.client.assertion");
        assert_eq!(source.fixed_secret(), Some("fixed.client.assertion"));
        assert_eq!(format!("{source:?}"), "Fixed([redacted])");
    }

    #[test]
    fn sources_compare_by_what_they_give() {
        let (recording, first) = callback(Ok("a"));
        assert_eq!(first, ClientAssertionSource::Callback(recording));
        assert_ne!(first, callback(Ok("a")).1, "another function");
        assert_eq!(ClientAssertionSource::Fixed("x".into()), ClientAssertionSource::Fixed("x".into()));
        assert_ne!(ClientAssertionSource::Fixed("x".into()), ClientAssertionSource::Fixed("y".into()));
        let file = |path: &str| ClientAssertionSource::FederatedTokenFile(Arc::new(FederatedTokenFile::new(path)));
        assert_eq!(file("/var/run/token"), file("/var/run/token"));
        assert_ne!(file("/var/run/token"), ClientAssertionSource::Fixed("/var/run/token".into()));
    }
}
