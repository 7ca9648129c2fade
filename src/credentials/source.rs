//! The one question the engine asks about client credentials: "the
//! `client_assertion` for a request to this endpoint?". Whether the answer is
//! signed here, configured as a string, read from a federated token file or
//! fetched by the host's function is settled by `configure()`.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

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
pub type AssertionFuture = Pin<Box<dyn Future<Output = Result<Arc<str>, AssertionFailure>> + Send>>;

/// Why a host function gave no assertion, and whether it says a later call
/// may succeed (its error's own boolean `retryable`; false when it has none).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AssertionFailure {
    pub message: String,
    pub retryable: bool,
}

impl AssertionFailure {
    /// A failure the function did not qualify: not retryable.
    pub fn new(message: impl Into<String>) -> AssertionFailure {
        AssertionFailure { message: message.into(), retryable: false }
    }
}

/// A `clientAssertion` function of the host (a vault, an HSM), bridged by the
/// napi layer. It is called only when a request is about to be sent.
pub trait AssertionCallback: Send + Sync {
    fn call(&self, request: AssertionRequest) -> AssertionFuture;
}

/// No client assertion could be had, so no request is sent. The message says
/// where it failed and never holds an assertion. It is never retried within
/// the call; `retryable` tells the caller whether a later call may succeed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientAssertionError {
    message: String,
    retryable: bool,
}

impl ClientAssertionError {
    fn new(message: impl Into<String>) -> ClientAssertionError {
        ClientAssertionError { message: message.into(), retryable: false }
    }

    pub fn message(&self) -> &str {
        &self.message
    }

    pub fn retryable(&self) -> bool {
        self.retryable
    }
}

impl fmt::Display for ClientAssertionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ClientAssertionError {}

/// The exchange fails without a request: nothing was sent, so nothing is retried for it.
impl From<ClientAssertionError> for crate::error::ExchangeError {
    fn from(err: ClientAssertionError) -> Self {
        let mut failure = crate::error::ExchangeError::failed(format!("OBO token request not sent: {}", err.message))
            .with_code(CLIENT_ASSERTION_UNAVAILABLE);
        failure.retryable = err.retryable;
        failure
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
    /// The assertion for a request to `token_endpoint` (the URL actually
    /// called). A host function has `deadline` to answer: its own, apart from
    /// the request's, as a vault that never answers is not a slow provider.
    pub async fn assertion(
        &self,
        token_endpoint: &str,
        client_id: &str,
        deadline: Duration,
    ) -> Result<Arc<str>, ClientAssertionError> {
        match self {
            ClientAssertionSource::Certificate(signer) => signer
                .assertion(token_endpoint, client_id, SystemTime::now())
                .map_err(|why| ClientAssertionError::new(why.to_string())),
            ClientAssertionSource::Fixed(assertion) => Ok(assertion.clone()),
            ClientAssertionSource::FederatedTokenFile(file) => {
                file.assertion().map_err(|why| ClientAssertionError::new(why.to_string()))
            }
            ClientAssertionSource::Callback(callback) => {
                let request =
                    AssertionRequest { client_id: client_id.to_owned(), token_endpoint: token_endpoint.to_owned() };
                match tokio::time::timeout(deadline, callback.call(request)).await {
                    Err(_) => Err(ClientAssertionError::new(format!(
                        "the clientAssertion function did not settle within {} ms (timeoutMs)",
                        deadline.as_millis()
                    ))),
                    // Trimmed, as a fixed string and the federated file are.
                    Ok(Ok(assertion)) => match assertion.trim() {
                        "" => {
                            Err(ClientAssertionError::new("the clientAssertion function returned an empty assertion"))
                        }
                        trimmed if trimmed.len() == assertion.len() => Ok(assertion),
                        trimmed => Ok(Arc::from(trimmed)),
                    },
                    Ok(Err(failure)) => Err(ClientAssertionError {
                        message: format!("the clientAssertion function failed: {}", failure.message),
                        retryable: failure.retryable,
                    }),
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
            let answer = self.answer.map(Arc::from).map_err(AssertionFailure::new);
            Box::pin(async move { answer })
        }
    }

    fn callback(answer: Result<&'static str, &'static str>) -> (Arc<Recording>, ClientAssertionSource) {
        let recording = Arc::new(Recording { answer, calls: Mutex::new(Vec::new()) });
        (recording.clone(), ClientAssertionSource::Callback(recording))
    }

    const ENDPOINT: &str = "https://login.example/tenant/oauth2/v2.0/token";
    const DEADLINE: Duration = Duration::from_secs(5);

    #[tokio::test]
    async fn a_function_is_asked_with_the_client_and_the_endpoint() {
        let (recording, source) = callback(Ok("vault.signed.jwt"));
        assert_eq!(&*source.assertion(ENDPOINT, "app", DEADLINE).await.unwrap(), "vault.signed.jwt");
        assert_eq!(
            *recording.calls.lock(),
            vec![AssertionRequest { client_id: "app".into(), token_endpoint: ENDPOINT.into() }]
        );
    }

    #[tokio::test]
    async fn a_failing_or_empty_function_is_an_error() {
        let (_, failing) = callback(Err("vault unreachable"));
        assert_eq!(
            failing.assertion(ENDPOINT, "app", DEADLINE).await.unwrap_err().message(),
            "the clientAssertion function failed: vault unreachable"
        );
        let (_, empty) = callback(Ok("  "));
        assert_eq!(
            empty.assertion(ENDPOINT, "app", DEADLINE).await.unwrap_err().message(),
            "the clientAssertion function returned an empty assertion"
        );
    }

    #[tokio::test]
    async fn a_functions_assertion_is_trimmed() {
        let (_, padded) = callback(Ok(" \n vault.signed.jwt\t "));
        assert_eq!(&*padded.assertion(ENDPOINT, "app", DEADLINE).await.unwrap(), "vault.signed.jwt");
    }

    struct Silent;

    impl AssertionCallback for Silent {
        fn call(&self, _: AssertionRequest) -> AssertionFuture {
            Box::pin(std::future::pending())
        }
    }

    #[tokio::test]
    async fn a_function_that_never_settles_misses_its_own_deadline_and_is_not_retryable() {
        let source = ClientAssertionSource::Callback(Arc::new(Silent));
        let err = source.assertion(ENDPOINT, "app", Duration::from_millis(50)).await.unwrap_err();
        assert_eq!(err.message(), "the clientAssertion function did not settle within 50 ms (timeoutMs)");
        assert!(!err.retryable());
    }

    #[tokio::test]
    async fn a_function_decides_whether_its_failure_is_retryable() {
        struct Qualified(bool);
        impl AssertionCallback for Qualified {
            fn call(&self, _: AssertionRequest) -> AssertionFuture {
                let failure = AssertionFailure { message: "vault timed out".into(), retryable: self.0 };
                Box::pin(async move { Err(failure) })
            }
        }
        for retryable in [true, false] {
            let source = ClientAssertionSource::Callback(Arc::new(Qualified(retryable)));
            let err = crate::error::ExchangeError::from(source.assertion(ENDPOINT, "app", DEADLINE).await.unwrap_err());
            assert_eq!((err.retryable, err.code.as_deref()), (retryable, Some(CLIENT_ASSERTION_UNAVAILABLE)));
        }
    }

    #[tokio::test]
    async fn a_fixed_assertion_is_sent_as_is_and_never_shown() {
        let source = ClientAssertionSource::Fixed("fixed.client.assertion".into());
        assert_eq!(&*source.assertion(ENDPOINT, "app", DEADLINE).await.unwrap(), "fixed.client.assertion");
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
