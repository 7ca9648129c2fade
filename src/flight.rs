//! Single flight: concurrent callers for one key share one request to the
//! identity provider. Entra answers bursts of identical OBO requests with
//! errors that look permanent (AADSTS50196, "loop detected"), so a cold cache
//! under a fan-out of tool calls must produce exactly one request.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use dashmap::mapref::entry::Entry;
use dashmap::DashMap;
use tokio::sync::watch;

use crate::cache::CacheKey;

pub struct FlightMap<T> {
    flights: DashMap<CacheKey, (u64, watch::Receiver<Option<T>>)>,
    next_id: AtomicU64,
}

/// What a caller does for a key: run the exchange, or wait for the one running.
pub enum Role<T> {
    Leader(FlightGuard<T>),
    Follower(Follower<T>),
}

pub struct Follower<T>(watch::Receiver<Option<T>>);

impl<T: Clone> Follower<T> {
    /// The leader's result; `None` if the leader vanished without one.
    pub async fn result(mut self) -> Option<T> {
        let value = self.0.wait_for(Option::is_some).await.ok()?;
        value.clone()
    }
}

/// The leader's slot. Completing it hands the result to every follower and
/// frees the slot; dropping it unfinished frees the slot too, and followers
/// see `None` rather than waiting for ever.
pub struct FlightGuard<T> {
    map: Arc<FlightMap<T>>,
    key: CacheKey,
    id: u64,
    sender: watch::Sender<Option<T>>,
}

impl<T: Clone> FlightMap<T> {
    pub fn new() -> Arc<Self> {
        Arc::new(FlightMap { flights: DashMap::new(), next_id: AtomicU64::new(0) })
    }

    pub fn join_or_lead(self: &Arc<Self>, key: &CacheKey) -> Role<T> {
        match self.flights.entry(*key) {
            Entry::Occupied(flight) => Role::Follower(Follower(flight.get().1.clone())),
            Entry::Vacant(slot) => {
                let id = self.next_id.fetch_add(1, Ordering::Relaxed);
                let (sender, receiver) = watch::channel(None);
                slot.insert((id, receiver));
                Role::Leader(FlightGuard { map: self.clone(), key: *key, id, sender })
            }
        }
    }

    pub fn len(&self) -> usize {
        self.flights.len()
    }

    pub fn is_empty(&self) -> bool {
        self.flights.is_empty()
    }
}

impl<T> FlightGuard<T> {
    pub fn complete(self, value: T) {
        self.sender.send_replace(Some(value));
        // Drop frees the slot.
    }
}

impl<T> Drop for FlightGuard<T> {
    fn drop(&mut self) {
        self.map.flights.remove_if(&self.key, |_, (id, _)| *id == self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::test_key;

    #[tokio::test]
    async fn followers_get_the_leaders_result_and_the_slot_is_freed() {
        let map = FlightMap::<u32>::new();
        let key = test_key("u", "s");
        let Role::Leader(guard) = map.join_or_lead(&key) else { panic!("first caller leads") };
        let followers: Vec<_> = (0..10)
            .map(|_| match map.join_or_lead(&key) {
                Role::Follower(follower) => tokio::spawn(follower.result()),
                Role::Leader(_) => panic!("second caller follows"),
            })
            .collect();
        assert_eq!(map.len(), 1);
        guard.complete(7);
        for follower in followers {
            assert_eq!(follower.await.unwrap(), Some(7));
        }
        assert!(map.is_empty());
        assert!(matches!(map.join_or_lead(&key), Role::Leader(_)));
    }

    #[tokio::test]
    async fn a_vanished_leader_releases_its_followers() {
        let map = FlightMap::<u32>::new();
        let key = test_key("u", "s");
        let guard = map.join_or_lead(&key);
        let Role::Follower(follower) = map.join_or_lead(&key) else { panic!() };
        drop(guard);
        assert_eq!(follower.result().await, None);
        assert!(map.is_empty());
    }

    #[tokio::test]
    async fn different_keys_do_not_share() {
        let map = FlightMap::<u32>::new();
        let _a = map.join_or_lead(&test_key("u", "a"));
        assert!(matches!(map.join_or_lead(&test_key("u", "b")), Role::Leader(_)));
    }

    #[tokio::test]
    async fn a_late_guard_does_not_free_a_newer_flight() {
        let map = FlightMap::<u32>::new();
        let key = test_key("u", "s");
        let Role::Leader(first) = map.join_or_lead(&key) else { panic!() };
        map.flights.remove(&key);
        let Role::Leader(_second) = map.join_or_lead(&key) else { panic!() };
        first.complete(1);
        assert_eq!(map.len(), 1);
    }
}
