//! Where sessions live: in this process (every thread, lost on restart), or
//! in a store of the host (its database) through three async functions. The
//! Redis tier's place is in `redis.rs`.
//!
//! A host store sees only what it needs to keep a value: an id and a value,
//! both opaque. The id is a keyed hash (HMAC under `cacheEncryptionKey`) of
//! the session's id, itself a digest of the client and the session key; the
//! value is the record sealed with AES-256-GCM under the same key, with the id
//! as associated data, so that a value copied under another id does not open.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use parking_lot::Mutex;

use super::record::SessionRecord;
use super::SessionId;
use crate::cache::wall_clock_ms;
use crate::redis_tier::Sealer;

/// Why a store could not be asked. The text names the store and what failed,
/// never an id, a value or a secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreUnavailable(pub String);

/// What a host function answers; `Err` holds why it failed.
pub type HostFuture<T> = Pin<Box<dyn Future<Output = Result<T, String>> + Send>>;

/// The host's `sessionStore: { get(id), set(id, value, ttlMs), delete(id) }`,
/// bridged by the napi layer.
pub trait HostSessionStore: Send + Sync {
    fn get(&self, id: String) -> HostFuture<Option<String>>;
    fn set(&self, id: String, value: String, ttl_ms: u64) -> HostFuture<()>;
    fn delete(&self, id: String) -> HostFuture<()>;
}

/// Sessions in this process's memory.
#[derive(Default)]
pub struct InProcess {
    records: Mutex<HashMap<SessionId, SessionRecord>>,
    writes: std::sync::atomic::AtomicU64,
}

/// Lapsed records are swept out once every this many writes.
const SWEEP_EVERY: u64 = 256;

impl InProcess {
    pub fn load(&self, id: &SessionId) -> Option<SessionRecord> {
        let mut records = self.records.lock();
        let record = records.get(id)?;
        if record.is_lapsed(wall_clock_ms()) {
            records.remove(id);
            return None;
        }
        Some(record.clone())
    }

    pub fn save(&self, id: &SessionId, record: &SessionRecord) {
        let mut records = self.records.lock();
        if self.writes.fetch_add(1, std::sync::atomic::Ordering::Relaxed).is_multiple_of(SWEEP_EVERY) {
            let now_ms = wall_clock_ms();
            records.retain(|_, kept| !kept.is_lapsed(now_ms));
        }
        records.insert(*id, record.clone());
    }

    pub fn remove(&self, id: &SessionId) -> bool {
        self.records.lock().remove(id).is_some()
    }

    pub fn len(&self) -> usize {
        self.records.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Sessions in the host's store.
pub struct HostStore {
    functions: Arc<dyn HostSessionStore>,
    sealer: Sealer,
    /// How long one call of a host function may take.
    timeout: Duration,
}

impl HostStore {
    pub fn new(functions: Arc<dyn HostSessionStore>, encryption_key: &[u8; 32], timeout: Duration) -> HostStore {
        HostStore { functions, sealer: Sealer::new(encryption_key), timeout }
    }

    /// The id the host keeps the session under.
    pub fn id(&self, id: &SessionId) -> String {
        format!("obo-session:{}", self.sealer.tag(id.as_bytes()))
    }

    async fn call<T>(&self, what: &str, call: HostFuture<T>) -> Result<T, StoreUnavailable> {
        match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(why)) => Err(StoreUnavailable(format!("the sessionStore's {what} function failed: {why}"))),
            Err(_) => Err(StoreUnavailable(format!(
                "the sessionStore's {what} function did not settle within {} ms",
                self.timeout.as_millis()
            ))),
        }
    }

    /// A value that does not open under its id with this key (altered, moved,
    /// or sealed under another key) is no session.
    pub async fn load(&self, id: &SessionId) -> Result<Option<SessionRecord>, StoreUnavailable> {
        let name = self.id(id);
        let Some(value) = self.call("get", self.functions.get(name.clone())).await? else { return Ok(None) };
        let record = URL_SAFE_NO_PAD
            .decode(value.trim())
            .ok()
            .and_then(|sealed| self.sealer.open(&name, &sealed))
            .and_then(|plaintext| SessionRecord::from_json(&plaintext));
        Ok(record.filter(|record| !record.is_lapsed(wall_clock_ms())))
    }

    pub async fn save(&self, id: &SessionId, record: &SessionRecord) -> Result<(), StoreUnavailable> {
        let name = self.id(id);
        let value = URL_SAFE_NO_PAD.encode(self.sealer.seal(&name, &record.to_json()));
        let ttl_ms = record.lapses_at_ms.saturating_sub(wall_clock_ms()).max(1);
        self.call("set", self.functions.set(name, value, ttl_ms)).await
    }

    /// Whether a session was there to delete.
    pub async fn remove(&self, id: &SessionId) -> Result<bool, StoreUnavailable> {
        let existed = self.load(id).await?.is_some();
        self.call("delete", self.functions.delete(self.id(id))).await?;
        Ok(existed)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A host store in memory that records every id and value it is given.
    #[derive(Default)]
    pub(crate) struct MemoryStore {
        pub values: Mutex<HashMap<String, (String, u64)>>,
        pub failing: std::sync::atomic::AtomicBool,
        /// Only `set` fails.
        pub failing_writes: std::sync::atomic::AtomicBool,
    }

    impl MemoryStore {
        fn answer<T: Send + 'static>(&self, value: T) -> HostFuture<T> {
            let failing = self.failing.load(std::sync::atomic::Ordering::SeqCst);
            Box::pin(async move {
                if failing {
                    Err("database offline".to_owned())
                } else {
                    Ok(value)
                }
            })
        }
    }

    impl HostSessionStore for Arc<MemoryStore> {
        fn get(&self, id: String) -> HostFuture<Option<String>> {
            let value = self.values.lock().get(&id).map(|(value, _)| value.clone());
            self.answer(value)
        }
        fn set(&self, id: String, value: String, ttl_ms: u64) -> HostFuture<()> {
            if self.failing_writes.load(std::sync::atomic::Ordering::SeqCst) {
                return Box::pin(async { Err("disk full".to_owned()) });
            }
            if !self.failing.load(std::sync::atomic::Ordering::SeqCst) {
                self.values.lock().insert(id, (value, ttl_ms));
            }
            self.answer(())
        }
        fn delete(&self, id: String) -> HostFuture<()> {
            self.values.lock().remove(&id);
            self.answer(())
        }
    }

    fn record() -> SessionRecord {
        SessionRecord::new("rt-secret-value".into(), "user".into(), wall_clock_ms(), Duration::from_secs(3600))
    }

    #[tokio::test]
    async fn a_host_store_holds_opaque_ids_and_sealed_values_bound_to_them() {
        let memory = Arc::new(MemoryStore::default());
        let store = HostStore::new(Arc::new(memory.clone()), &[7; 32], Duration::from_secs(5));
        let id = SessionId::derive(b"client", "schedule-42");
        store.save(&id, &record()).await.unwrap();
        let (name, (value, ttl_ms)) = memory.values.lock().iter().next().map(|(k, v)| (k.clone(), v.clone())).unwrap();
        for shown in [&name, &value] {
            for secret in ["schedule-42", "rt-secret-value", &URL_SAFE_NO_PAD.encode("schedule-42")] {
                assert!(!shown.contains(secret), "{shown}");
            }
        }
        assert!(ttl_ms > 3_590_000 && ttl_ms <= 3_600_000, "{ttl_ms}");
        assert_eq!(store.load(&id).await.unwrap().unwrap().refresh_token, "rt-secret-value");
        // The value moved under another session's id does not open there.
        let other = SessionId::derive(b"client", "schedule-43");
        memory.values.lock().insert(store.id(&other), (value, ttl_ms));
        assert_eq!(store.load(&other).await.unwrap(), None);
        // Nor under another key.
        let rekeyed = HostStore::new(Arc::new(memory.clone()), &[8; 32], Duration::from_secs(5));
        assert_eq!(rekeyed.load(&id).await.unwrap(), None);
        assert!(store.remove(&id).await.unwrap());
        assert!(!store.remove(&id).await.unwrap());
    }

    #[tokio::test]
    async fn a_failing_or_silent_host_function_is_unavailable_not_absent() {
        let memory = Arc::new(MemoryStore::default());
        memory.failing.store(true, std::sync::atomic::Ordering::SeqCst);
        let store = HostStore::new(Arc::new(memory.clone()), &[7; 32], Duration::from_secs(5));
        let id = SessionId::derive(b"client", "k");
        let err = store.load(&id).await.unwrap_err();
        assert_eq!(err.0, "the sessionStore's get function failed: database offline");

        struct Silent;
        impl HostSessionStore for Silent {
            fn get(&self, _: String) -> HostFuture<Option<String>> {
                Box::pin(std::future::pending())
            }
            fn set(&self, _: String, _: String, _: u64) -> HostFuture<()> {
                Box::pin(std::future::pending())
            }
            fn delete(&self, _: String) -> HostFuture<()> {
                Box::pin(std::future::pending())
            }
        }
        let silent = HostStore::new(Arc::new(Silent), &[7; 32], Duration::from_millis(20));
        let err = silent.save(&id, &record()).await.unwrap_err();
        assert_eq!(err.0, "the sessionStore's set function did not settle within 20 ms");
    }

    #[test]
    fn the_in_process_store_forgets_lapsed_sessions() {
        let store = InProcess::default();
        let id = SessionId::derive(b"client", "k");
        let mut lapsed = record();
        lapsed.lapses_at_ms = 1;
        store.save(&id, &lapsed);
        assert_eq!(store.len(), 1);
        assert_eq!(store.load(&id), None);
        assert!(store.is_empty());
        store.save(&id, &record());
        assert!(store.remove(&id) && !store.remove(&id));
    }
}
