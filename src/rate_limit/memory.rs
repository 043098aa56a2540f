//! The in-memory store: one sliding window per (limit class, user), in a sharded map.
//!
//! Guards against memory exhaustion by many identities: state per user is fixed whatever the
//! limit (the 61-slot window: 252 bytes; about 320 bytes per user with the map, measured at
//! 1,000,000 users, plus the user id), idle users are pruned, and the number of tracked users is
//! capped; past the cap, new users are refused rather than letting an active user's count be
//! dropped (which would let that user over-spend). At the cap, a new user triggers a scan for
//! idle users at most once per window slot (nobody can become idle faster), so a stream of new
//! identities cannot make every request scan the whole map.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use dashmap::DashMap;

use super::window::{Verdict, Window, ceil_secs, slot_ms};

pub use crate::config::rate_limit::Limit;

impl Limit {
    fn window_ms(&self) -> u64 {
        u64::try_from(self.window.as_millis())
            .unwrap_or(u64::MAX)
            .max(1)
    }
}

/// Why the memory store could not decide normally.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overflow {
    /// The tracked-user cap is reached and nobody is idle: the new user is refused.
    TrackedUsersCap,
}

/// The windows of one limit class, by user.
type UserWindows = DashMap<Arc<str>, Box<Window>>;

/// Sliding windows for every tracked user, one map per limit class.
pub struct MemoryStore {
    // Boxed: the map over-allocates its slots (up to 2x), so slots stay small (24 bytes) and
    // the 252-byte windows live outside it.
    classes: Vec<(Limit, UserWindows)>,
    max_tracked: usize,
    epoch: Instant,
    /// When a new user at the cap last triggered a scan for idle users (store milliseconds + 1;
    /// 0: never).
    last_cap_scan: AtomicU64,
    /// Scans made at the cap (for tests).
    cap_scans: AtomicU64,
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore")
            .field("tracked", &self.tracked())
            .finish_non_exhaustive()
    }
}

impl MemoryStore {
    /// A store with one limit class per entry of `limits` (the default first), tracking at most
    /// `max_tracked` users in all.
    pub fn new(limits: &[Limit], max_tracked: usize) -> MemoryStore {
        MemoryStore {
            classes: limits.iter().map(|l| (*l, DashMap::new())).collect(),
            max_tracked: max_tracked.max(1),
            epoch: Instant::now(),
            last_cap_scan: AtomicU64::new(0),
            cap_scans: AtomicU64::new(0),
        }
    }

    /// Milliseconds on the store's monotonic clock.
    pub fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Users tracked now.
    pub fn tracked(&self) -> usize {
        self.classes.iter().map(|(_, map)| map.len()).sum()
    }

    /// The limit of a class.
    pub fn limit(&self, class: usize) -> Option<Limit> {
        self.classes.get(class).map(|(limit, _)| *limit)
    }

    /// Decides one request for `user` in `class` at the store's current time.
    pub fn decide(&self, class: usize, user: &Arc<str>) -> Result<Verdict, Overflow> {
        self.decide_at(class, user, self.now_ms())
    }

    /// Decides at an explicit time (for tests and benchmarks with their own clock).
    pub fn decide_at(
        &self,
        class: usize,
        user: &Arc<str>,
        now_ms: u64,
    ) -> Result<Verdict, Overflow> {
        let Some((limit, map)) = self.classes.get(class).or_else(|| self.classes.first()) else {
            return Err(Overflow::TrackedUsersCap);
        };
        let slot_ms = slot_ms(limit.window_ms());
        if let Some(mut window) = map.get_mut(user.as_ref()) {
            return Ok(window.decide(now_ms, limit.requests, slot_ms));
        }
        if self.tracked() >= self.max_tracked {
            if self.claim_cap_scan(now_ms, slot_ms) {
                self.prune_at(now_ms);
            }
            if self.tracked() >= self.max_tracked {
                return Err(Overflow::TrackedUsersCap);
            }
        }
        let mut window = map
            .entry(user.clone())
            .or_insert_with(|| Box::new(Window::new(now_ms / slot_ms)));
        Ok(window.decide(now_ms, limit.requests, slot_ms))
    }

    /// Whether this caller may scan for idle users now: at most once per `slot_ms`, and by one
    /// caller at a time.
    fn claim_cap_scan(&self, now_ms: u64, slot_ms: u64) -> bool {
        let last = self.last_cap_scan.load(Ordering::Relaxed);
        if last != 0 && now_ms.saturating_add(1).saturating_sub(last) < slot_ms {
            return false;
        }
        let claimed = self
            .last_cap_scan
            .compare_exchange(
                last,
                now_ms.saturating_add(1),
                Ordering::Relaxed,
                Ordering::Relaxed,
            )
            .is_ok();
        if claimed {
            self.cap_scans.fetch_add(1, Ordering::Relaxed);
        }
        claimed
    }

    /// Seconds a user refused at the cap should wait: until idle users can be pruned.
    pub fn cap_retry_after(&self, class: usize) -> u64 {
        ceil_secs(self.limit(class).map_or(60_000, |l| l.window_ms()))
    }

    /// Drops users with nothing counted any more and returns the memory.
    pub fn prune(&self) {
        self.prune_at(self.now_ms());
        for (_, map) in &self.classes {
            map.shrink_to_fit();
        }
    }

    fn prune_at(&self, now_ms: u64) {
        for (limit, map) in &self.classes {
            let slot = now_ms / slot_ms(limit.window_ms());
            map.retain(|_, w| !w.is_idle(slot));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const LIMIT: Limit = Limit {
        requests: 2,
        window: Duration::from_secs(60),
    };

    #[test]
    fn users_are_separate_and_the_cap_holds() {
        let store = MemoryStore::new(&[LIMIT], 2);
        let (a, b, c): (Arc<str>, Arc<str>, Arc<str>) = ("a".into(), "b".into(), "c".into());
        assert!(store.decide_at(0, &a, 0).unwrap().admitted);
        assert!(store.decide_at(0, &a, 1).unwrap().admitted);
        assert!(!store.decide_at(0, &a, 2).unwrap().admitted);
        assert!(store.decide_at(0, &b, 3).unwrap().admitted);
        assert_eq!(store.decide_at(0, &c, 4), Err(Overflow::TrackedUsersCap));
        // Once a and b are idle they are pruned and c gets in.
        assert!(store.decide_at(0, &c, 62_000).unwrap().admitted);
        assert_eq!(store.tracked(), 1);
    }

    #[test]
    fn new_users_at_the_cap_scan_at_most_once_per_slot() {
        let store = MemoryStore::new(&[LIMIT], 1_000);
        for i in 0..1_000 {
            let user: Arc<str> = format!("user-{i}").into();
            assert!(store.decide_at(0, &user, 0).unwrap().admitted);
        }
        // 10,000 new identities within one slot (1 s of a 60 s window): one scan, not 10,000.
        for i in 0..10_000u64 {
            let user: Arc<str> = format!("new-{i}").into();
            let at = 10 + i / 20;
            assert_eq!(
                store.decide_at(0, &user, at),
                Err(Overflow::TrackedUsersCap)
            );
        }
        assert_eq!(store.cap_scans.load(Ordering::Relaxed), 1);
        // The next slot may scan again.
        let late: Arc<str> = "late".into();
        assert!(store.decide_at(0, &late, 2_000).is_err());
        assert_eq!(store.cap_scans.load(Ordering::Relaxed), 2);
    }
}
