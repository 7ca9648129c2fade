//! Log lines for the caller's logger, worded like LibreChat's service so that
//! existing log searches keep working. A call collects them only when its
//! thread has a logger; they never hold a token or a secret.

use std::sync::Arc;

use crate::error::ExchangeError;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    Debug,
    Info,
    Warn,
    Error,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
        }
    }
}

/// One log line.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    pub level: Level,
    pub message: String,
    /// The error a warning or failure is about, logged as the second argument
    /// as LibreChat's service does (already redacted).
    pub error: Option<Arc<ExchangeError>>,
}

/// Where a call's events go: nowhere (its thread has no logger: the message
/// is not even formatted), or to a sink that delivers each one as it happens.
pub enum Events {
    Off,
    Stream(Box<dyn Fn(Event) + Send + Sync>),
}

impl Events {
    /// True when the call's thread has a logger that its events reach.
    pub fn is_streaming(&self) -> bool {
        matches!(self, Events::Stream(_))
    }

    pub fn push(&mut self, level: Level, message: impl FnOnce() -> String) {
        if let Events::Stream(sink) = self {
            sink(Event { level, message: format!("[OboTokenService] {}", message()), error: None });
        }
    }

    /// An event with the error it is about.
    pub fn push_error(
        &mut self,
        level: Level,
        message: impl FnOnce() -> String,
        error: impl FnOnce() -> ExchangeError,
    ) {
        if let Events::Stream(sink) = self {
            let error = Some(Arc::new(error()));
            sink(Event { level, message: format!("[OboTokenService] {}", message()), error });
        }
    }
}

impl std::fmt::Debug for Events {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Events::Off => "Events::Off",
            Events::Stream(_) => "Events::Stream",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_is_formatted_without_a_logger() {
        let mut quiet = Events::Off;
        quiet.push(Level::Warn, || unreachable!("formatted without a logger"));
        quiet.push_error(Level::Warn, || unreachable!("formatted"), || unreachable!("built without a logger"));
    }

    #[test]
    fn a_stream_delivers_each_event_at_once() {
        let seen = std::sync::Arc::new(parking_lot::Mutex::new(Vec::new()));
        let sink = seen.clone();
        let mut events = Events::Stream(Box::new(move |event| sink.lock().push(event)));
        events.push(Level::Warn, || "one".into());
        assert_eq!(seen.lock().len(), 1);
        events.push(Level::Error, || "two".into());
        assert_eq!(seen.lock()[1], Event { level: Level::Error, message: "[OboTokenService] two".into(), error: None });
        events.push_error(Level::Warn, || "three".into(), || ExchangeError::failed("why"));
        assert_eq!(seen.lock()[2].error.as_ref().unwrap().message, "why");
    }
}
