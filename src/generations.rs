//! Counters the JavaScript side reads without calling into Rust, so that its
//! per-thread memo of hot tokens can tell, for the cost of two array reads,
//! whether the Rust cache still holds what it memoised.
//!
//! Slot 0 is the epoch: it moves when the whole cache is emptied (`configure`,
//! `clearCache`). Every other slot covers a bucket of keys and moves whenever
//! an entry of that bucket is replaced or removed. A memo entry records both
//! numbers when it is made and is valid while both are unchanged.
//!
//! One more slot, [`ENV_SLOT`], is 1 while the configuration is still to be
//! read from the environment, so that JavaScript reads `process.env` only then.
//!
//! Each JavaScript thread reads its own [`Mirror`] (an external `ArrayBuffer`
//! must not share memory with another isolate's), and every change is written
//! to the canonical counters and then to each mirror, under one lock so that a
//! mirror never goes back to an older value.

use std::hash::{DefaultHasher, Hasher};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

/// Buckets of keys; a power of two. 16 KiB of counters per mirror.
pub const BUCKETS: usize = 4096;
/// 1 while the configuration is to come from the environment and was not read yet.
pub const ENV_SLOT: usize = 1 + BUCKETS;
pub const SLOTS: usize = 2 + BUCKETS;

type Counters = [AtomicU32; SLOTS];

fn new_counters() -> Box<Counters> {
    Box::new([const { AtomicU32::new(0) }; SLOTS])
}

/// A copy of the counters for one JavaScript thread.
pub struct Mirror(Box<Counters>);

impl Mirror {
    /// The counters as bytes, for an external `ArrayBuffer` read as `Int32Array`.
    pub fn as_ptr_and_len(&self) -> (*mut u8, usize) {
        (self.0.as_ptr() as *mut u8, std::mem::size_of::<Counters>())
    }

    pub fn get(&self, slot: u32) -> u32 {
        self.0[slot as usize].load(Ordering::Acquire)
    }
}

pub struct Generations {
    canonical: Box<Counters>,
    mirrors: Mutex<Vec<Arc<Mirror>>>,
}

/// A key's place among the counters and the values seen, as handed to JavaScript.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stamp {
    pub epoch: u32,
    pub slot: u32,
    pub generation: u32,
}

impl Generations {
    pub fn new() -> Self {
        Generations { canonical: new_counters(), mirrors: Mutex::new(Vec::new()) }
    }

    /// The slot (1..=BUCKETS) of a cache key. Fixed hash keys: every thread
    /// must agree on it.
    pub fn slot_of(key: &[u8]) -> u32 {
        let mut hasher = DefaultHasher::new();
        hasher.write(key);
        1 + (hasher.finish() as usize & (BUCKETS - 1)) as u32
    }

    pub fn stamp(&self, key: &[u8]) -> Stamp {
        let slot = Self::slot_of(key);
        Stamp {
            epoch: self.canonical[0].load(Ordering::Acquire),
            slot,
            generation: self.canonical[slot as usize].load(Ordering::Acquire),
        }
    }

    pub fn epoch(&self) -> u32 {
        self.canonical[0].load(Ordering::Acquire)
    }

    /// Marks every key of `slot` as changed (the slot from [`Generations::slot_of`]).
    pub fn bump_slot(&self, slot: u32) {
        self.bump(slot as usize);
    }

    pub fn bump_epoch(&self) {
        self.bump(0);
    }

    fn bump(&self, slot: usize) {
        let mirrors = self.mirrors.lock();
        let value = self.canonical[slot].fetch_add(1, Ordering::AcqRel).wrapping_add(1);
        for mirror in mirrors.iter() {
            mirror.0[slot].store(value, Ordering::Release);
        }
    }

    /// Whether the configuration is still to be read from the environment.
    pub fn set_env_needed(&self, needed: bool) {
        let mirrors = self.mirrors.lock();
        self.canonical[ENV_SLOT].store(u32::from(needed), Ordering::Release);
        for mirror in mirrors.iter() {
            mirror.0[ENV_SLOT].store(u32::from(needed), Ordering::Release);
        }
    }

    /// A new mirror, up to date, kept current until [`Generations::release`].
    pub fn mirror(&self) -> Arc<Mirror> {
        let mut mirrors = self.mirrors.lock();
        let mirror = new_counters();
        for (copy, value) in mirror.iter().zip(self.canonical.iter()) {
            copy.store(value.load(Ordering::Acquire), Ordering::Relaxed);
        }
        let mirror = Arc::new(Mirror(mirror));
        mirrors.push(mirror.clone());
        mirror
    }

    pub fn release(&self, mirror: &Arc<Mirror>) {
        self.mirrors.lock().retain(|kept| !Arc::ptr_eq(kept, mirror));
    }

    pub fn mirrors(&self) -> usize {
        self.mirrors.lock().len()
    }
}

impl Default for Generations {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bump_changes_the_stamp_of_that_key_and_every_mirror() {
        let generations = Generations::new();
        let early = generations.mirror();
        let before = generations.stamp(b"3:abcscope");
        generations.bump_slot(Generations::slot_of(b"3:abcscope"));
        let after = generations.stamp(b"3:abcscope");
        assert_eq!(before.slot, after.slot);
        assert_ne!(before.generation, after.generation);
        assert_eq!(before.epoch, after.epoch);
        let late = generations.mirror();
        for mirror in [&early, &late] {
            assert_eq!(mirror.get(after.slot), after.generation);
        }
        generations.bump_epoch();
        assert_ne!(generations.stamp(b"3:abcscope").epoch, after.epoch);
        assert_eq!(early.get(0), generations.epoch());
        generations.release(&early);
        assert_eq!(generations.mirrors(), 1);
        generations.bump_epoch();
        assert_ne!(early.get(0), generations.epoch());
        assert_eq!(late.get(0), generations.epoch());
        generations.set_env_needed(true);
        assert_eq!(late.get(ENV_SLOT as u32), 1);
        generations.set_env_needed(false);
        assert_eq!(late.get(ENV_SLOT as u32), 0);
    }

    #[test]
    fn slots_are_in_range_and_spread() {
        let mut seen = std::collections::HashSet::new();
        for i in 0..1000 {
            let slot = Generations::slot_of(format!("user{i}:scope").as_bytes());
            assert!((1..=BUCKETS as u32).contains(&slot));
            seen.insert(slot);
        }
        assert!(seen.len() > 700, "{}", seen.len());
    }
}
