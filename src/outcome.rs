//! What an exchange hands back: a token, or the error shared by every caller
//! of the flight.
//!
//! It lives in a module of its own because both the engine (which runs the
//! exchange) and the shared Redis tier (which serves another instance's token
//! and shares this one's) speak of it. Defined in either, the two modules
//! would import each other.

use std::sync::Arc;

use crate::cache::Hit;
use crate::error::ExchangeError;

/// A token handed to a caller.
#[derive(Clone, Debug, PartialEq)]
pub struct Token {
    pub access_token: Arc<str>,
    pub expires_in: u64,
    /// Absolute expiry, ms since the Unix epoch, as computed when the token arrived.
    pub expires_at_ms: u64,
}

impl From<Hit> for Token {
    fn from(hit: Hit) -> Token {
        Token { access_token: hit.access_token, expires_in: hit.expires_in, expires_at_ms: hit.expires_at_ms }
    }
}

/// The outcome of one exchange, cloned to every caller that joined it.
pub type Outcome = Result<Token, Arc<ExchangeError>>;
