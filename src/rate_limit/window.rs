//! The sliding-window arithmetic shared by the in-memory and the Redis stores.
//!
//! Guards against double bursts at window boundaries: time is cut into slots of `window / 60`,
//! and a request is admitted only if the requests counted in the last 61 slots (which cover the
//! whole window ending now, plus at most one slot more) number fewer than the limit. So no
//! interval of length `window` ever holds more than `limit` admissions; the price is that the
//! window may act up to one slot (1/60) longer than configured: a slight under-admission, never
//! an over-admission. Refused requests are not counted.

/// Slots per window: the granularity is `window / SLOTS`.
pub const SLOTS: u64 = 60;
/// Slots counted: the window's slots plus the current, partly elapsed one.
pub const COUNTED: usize = SLOTS as usize + 1;

/// The outcome of one decision, ready for the `RateLimit-*` and `Retry-After` headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    /// Whether the request is admitted.
    pub admitted: bool,
    /// The limit in force.
    pub limit: u32,
    /// Requests still admissible in the current window, after this one.
    pub remaining: u32,
    /// Seconds until the oldest counted request leaves the window (at least 1).
    pub reset_secs: u64,
    /// Seconds until a request would be admitted again (refusals only; at least 1).
    pub retry_after_secs: u64,
}

/// Slot length in milliseconds for a window (at least 1 ms).
pub fn slot_ms(window_ms: u64) -> u64 {
    (window_ms / SLOTS).max(1)
}

/// Per-key state: a count per slot for the last 61 slots. 61 × 4 + 8 bytes, whatever the limit.
#[derive(Debug, Clone)]
pub struct Window {
    counts: [u32; COUNTED],
    /// Index of the newest slot written; the ring holds slots `newest - 60 ..= newest`.
    newest: u64,
}

impl Window {
    /// An empty window.
    pub fn new(slot: u64) -> Window {
        Window {
            counts: [0; COUNTED],
            newest: slot,
        }
    }

    /// Whether nothing counted remains at `slot` (the key may be evicted).
    pub fn is_idle(&self, slot: u64) -> bool {
        slot > self.newest + SLOTS
    }

    fn advance(&mut self, slot: u64) {
        if slot <= self.newest {
            return;
        }
        let steps = (slot - self.newest).min(COUNTED as u64);
        for step in 1..=steps {
            self.counts[((self.newest + step) % COUNTED as u64) as usize] = 0;
        }
        self.newest = slot;
    }

    /// Decides one request at `now_ms` and counts it if admitted.
    pub fn decide(&mut self, now_ms: u64, limit: u32, slot_ms: u64) -> Verdict {
        let slot = (now_ms / slot_ms).max(self.newest);
        self.advance(slot);
        // Oldest first: slot - 60 ..= slot.
        let oldest = slot.saturating_sub(SLOTS);
        let counts = (oldest..=slot).map(|s| (s, self.counts[(s % COUNTED as u64) as usize]));
        let total: u64 = counts.clone().map(|(_, c)| u64::from(c)).sum();
        let leaves_at = |s: u64| ((s + SLOTS + 1) * slot_ms).saturating_sub(now_ms);
        if total < u64::from(limit) {
            let first_counted = counts
                .clone()
                .find(|(_, c)| *c > 0)
                .map_or(slot, |(s, _)| s);
            let index = (slot % COUNTED as u64) as usize;
            self.counts[index] = self.counts[index].saturating_add(1);
            Verdict {
                admitted: true,
                limit,
                remaining: u32::try_from(u64::from(limit) - total - 1).unwrap_or(0),
                reset_secs: ceil_secs(leaves_at(first_counted)),
                retry_after_secs: 0,
            }
        } else {
            // The earliest slot whose expiry brings the count below the limit.
            let mut freed = 0u64;
            let mut reopens = slot;
            for (s, c) in counts {
                freed += u64::from(c);
                if total - freed < u64::from(limit) {
                    reopens = s;
                    break;
                }
            }
            let wait = ceil_secs(leaves_at(reopens));
            Verdict {
                admitted: false,
                limit,
                remaining: 0,
                reset_secs: wait,
                retry_after_secs: wait,
            }
        }
    }
}

/// Milliseconds to whole seconds, rounded up, at least 1.
pub fn ceil_secs(ms: u64) -> u64 {
    ms.div_ceil(1000).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Admissions in every interval of length `window` never exceed the limit, whatever the
    /// arrival pattern: the property a fixed window breaks at its boundary.
    #[test]
    fn never_more_than_limit_in_any_window() {
        let window_ms = 60_000;
        let slot = slot_ms(window_ms);
        let limit = 10;
        let mut w = Window::new(0);
        let mut admitted = Vec::new();
        // Bursts just before and after round minutes, then steady traffic.
        let mut times: Vec<u64> = (0..30).map(|i| 59_000 + i * 50).collect();
        times.extend((0..400).map(|i| 61_000 + i * 997));
        for t in times {
            if w.decide(t, limit, slot).admitted {
                admitted.push(t);
            }
        }
        for (i, start) in admitted.iter().enumerate() {
            let within = admitted[i..]
                .iter()
                .take_while(|t| **t < start + window_ms)
                .count();
            assert!(
                within <= limit as usize,
                "{within} admitted in the window from {start}"
            );
        }
        // Under-admission is bounded: over a long steady stream, close to the limit per window.
        assert!(admitted.len() >= 60, "{}", admitted.len());
    }

    #[test]
    fn retry_after_is_when_a_slot_frees_and_headers_count_down() {
        let slot = slot_ms(60_000);
        let mut w = Window::new(0);
        let first = w.decide(10_000, 3, slot);
        assert_eq!((first.admitted, first.remaining), (true, 2));
        assert_eq!(first.reset_secs, 61); // slot 10 stops counting when slot 71 begins
        assert_eq!(w.decide(20_000, 3, slot).remaining, 1);
        assert_eq!(w.decide(30_000, 3, slot).remaining, 0);
        let refused = w.decide(40_000, 3, slot);
        assert!(!refused.admitted);
        assert_eq!(refused.retry_after_secs, 31); // the 10 s request leaves at 71 s
        // Just before that, still refused; at it, admitted.
        assert!(!w.decide(70_999, 3, slot).admitted);
        assert!(w.decide(71_000, 3, slot).admitted);
    }

    #[test]
    fn idle_windows_are_detected() {
        let mut w = Window::new(0);
        w.decide(0, 1, 1000);
        assert!(!w.is_idle(60));
        assert!(w.is_idle(61));
    }
}
