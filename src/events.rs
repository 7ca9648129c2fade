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

/// Collects events for a call whose thread has a logger; otherwise costs
/// nothing (the message is not even formatted).
pub struct Events(Option<Vec<Event>>);

impl Events {
    pub fn new(wanted: bool) -> Events {
        Events(wanted.then(Vec::new))
    }

    pub fn push(&mut self, level: Level, message: impl FnOnce() -> String) {
        if let Some(events) = self.0.as_mut() {
            events.push(Event { level, message: format!("[OboTokenService] {}", message()) });
        }
    }

    pub fn into_vec(self) -> Vec<Event> {
        self.0.unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_is_formatted_without_a_logger() {
        let mut quiet = Events::new(false);
        quiet.push(Level::Warn, || unreachable!("formatted without a logger"));
        assert!(quiet.into_vec().is_empty());
        let mut loud = Events::new(true);
        loud.push(Level::Debug, || "hello".into());
        assert_eq!(loud.into_vec(), vec![Event { level: Level::Debug, message: "[OboTokenService] hello".into() }]);
    }
}
