//! Log lines for the caller's logger, worded like LibreChat's service so that
//! existing log searches keep working. A call collects them only when its
//! thread has a logger; they never hold a token or a secret.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    Debug,
    Warn,
    Error,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Debug => "debug",
            Level::Warn => "warn",
            Level::Error => "error",
        }
    }
}

/// One log line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub level: Level,
    pub message: String,
}

/// Where a call's events go: nowhere (its thread has no logger: the message
/// is not even formatted), into a list handed over with the outcome, or to a
/// sink that delivers each one as it happens.
pub enum Events {
    Off,
    Collect(Vec<Event>),
    Stream(Box<dyn Fn(Event) + Send + Sync>),
}

impl Events {
    pub fn push(&mut self, level: Level, message: impl FnOnce() -> String) {
        let event = || Event { level, message: format!("[OboTokenService] {}", message()) };
        match self {
            Events::Off => {}
            Events::Collect(events) => events.push(event()),
            Events::Stream(sink) => sink(event()),
        }
    }

    /// The collected events (none when off or streamed).
    pub fn into_vec(self) -> Vec<Event> {
        match self {
            Events::Collect(events) => events,
            Events::Off | Events::Stream(_) => Vec::new(),
        }
    }
}

impl std::fmt::Debug for Events {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Events::Off => f.write_str("Events::Off"),
            Events::Collect(events) => f.debug_tuple("Events::Collect").field(events).finish(),
            Events::Stream(_) => f.write_str("Events::Stream"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_is_formatted_without_a_logger() {
        let mut quiet = Events::Off;
        quiet.push(Level::Warn, || unreachable!("formatted without a logger"));
        assert!(quiet.into_vec().is_empty());
        let mut loud = Events::Collect(Vec::new());
        loud.push(Level::Debug, || "hello".into());
        assert_eq!(loud.into_vec(), vec![Event { level: Level::Debug, message: "[OboTokenService] hello".into() }]);
    }

    #[test]
    fn a_stream_delivers_each_event_at_once() {
        let seen = std::sync::Arc::new(parking_lot::Mutex::new(Vec::new()));
        let sink = seen.clone();
        let mut events = Events::Stream(Box::new(move |event| sink.lock().push(event)));
        events.push(Level::Warn, || "one".into());
        assert_eq!(seen.lock().len(), 1);
        events.push(Level::Error, || "two".into());
        assert_eq!(seen.lock()[1].message, "[OboTokenService] two");
        assert!(events.into_vec().is_empty());
    }
}
