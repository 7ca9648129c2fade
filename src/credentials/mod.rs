//! Client credentials for `private_key_jwt`: enterprises forbid client
//! secrets, and Entra ID recommends certificates instead. The client proves
//! who it is with a short-lived JWT signed by the certificate's key (RFC 7523
//! client authentication), so no reusable secret travels with each request.
//!
//! Where no certificate can be held, the assertion comes from elsewhere: a
//! string or a function of the host (a vault, an HSM), or the federated token
//! file of workload identity.
//!
//! `configure()` builds a [`ClientAssertionSource`] (for certificates, a
//! [`ClientAssertionSigner`], which checks the key and the certificate once);
//! the engine then only asks it for the assertion of the endpoint it is about
//! to call. RSA keys only (PS256, or RS256 for AD FS): that is what Entra ID
//! and AD FS take for certificate credentials.

mod der;
pub mod federated;
pub mod jwt;
pub mod pem;
pub mod source;
#[cfg(test)]
pub(crate) mod test_pki;

pub use federated::{FederatedTokenError, FederatedTokenFile, FEDERATED_TOKEN_FILE_ENV};
pub use jwt::{AssertionAlgorithm, ClientAssertionSigner, SigningError, ASSERTION_LIFETIME, RENEW_BEFORE_EXPIRY};
pub use source::{
    AssertionCallback, AssertionFailure, AssertionFuture, AssertionRequest, ClientAssertionError,
    ClientAssertionSource, CLIENT_ASSERTION_UNAVAILABLE,
};

/// The `client_assertion_type` that goes with a JWT `client_assertion`.
pub const CLIENT_ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// An error of a request that carried `client_assertion`: the assertion is
/// a credential, so no text of the error may hold it, in any encoding.
pub fn without_client_assertion(
    err: crate::error::ExchangeError,
    client_assertion: Option<&str>,
) -> crate::error::ExchangeError {
    match client_assertion {
        Some(assertion) => {
            let mut secrets = crate::error::Secrets::default();
            secrets.push(assertion);
            err.redacted(&secrets)
        }
        None => err,
    }
}
