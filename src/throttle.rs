//! Keys the identity provider asked us to leave alone (`Retry-After` longer
//! than a caller should wait). Only that (openidId, scopes) pair is refused
//! until the time has passed; every other key goes on as usual.

use std::sync::Arc;
use std::time::{Duration, Instant};

use dashmap::DashMap;

use crate::cache::CacheKey;
use crate::error::ExchangeError;

#[derive(Default)]
pub struct Throttles {
    until: DashMap<CacheKey, (Instant, Arc<ExchangeError>)>,
}

impl Throttles {
    pub fn remember(&self, key: &CacheKey, until: Instant, error: Arc<ExchangeError>) {
        self.until.insert(*key, (until, error));
    }

    /// The error to answer with, if `key` is throttled at `now`: the
    /// provider's, with the time left and `throttled` set.
    pub fn check(&self, key: &CacheKey, now: Instant) -> Option<ExchangeError> {
        let entry = self.until.get(key)?;
        let (until, error) = entry.value();
        if now >= *until {
            drop(entry);
            self.until.remove_if(key, |_, (until, _)| now >= *until);
            return None;
        }
        let mut error = ExchangeError::clone(error);
        error.retryable = true;
        error.throttled = true;
        error.retry_after = Some(until.saturating_duration_since(now).max(Duration::from_millis(1)));
        Some(error)
    }

    pub fn clear(&self) {
        self.until.clear();
    }

    pub fn len(&self) -> usize {
        self.until.len()
    }

    pub fn is_empty(&self) -> bool {
        self.until.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::test_key;

    #[test]
    fn only_the_throttled_key_is_refused_and_only_until_then() {
        let throttles = Throttles::default();
        let t0 = Instant::now();
        let key = test_key("u", "s");
        let err = Arc::new(ExchangeError::failed("too many requests").with_status(429));
        throttles.remember(&key, t0 + Duration::from_secs(60), err);
        let refused = throttles.check(&key, t0 + Duration::from_secs(10)).unwrap();
        assert_eq!(refused.retry_after_secs(), Some(50));
        assert!(refused.throttled && refused.retryable);
        assert_eq!(refused.status, Some(429));
        assert!(throttles.check(&test_key("u", "t"), t0).is_none());
        assert!(throttles.check(&key, t0 + Duration::from_secs(60)).is_none());
        assert!(throttles.is_empty());
    }
}
