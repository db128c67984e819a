//! Capped exponential backoff with jitter, for retried events and dead-letter publishes.

use std::time::Duration;

/// How long to wait before each retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The wait before the first retry (before jitter).
    pub base: Duration,
    /// The longest wait, however many retries came before.
    pub cap: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            base: Duration::from_millis(100),
            cap: Duration::from_secs(30),
        }
    }
}

impl Backoff {
    /// The wait before retry number `attempt` (1 for the first retry), given `unit`, a
    /// uniform random number in `[0, 1)`: "equal jitter", between half and all of
    /// `min(cap, base · 2^(attempt-1))`, so waits grow but retries of many partitions do not
    /// fall into step.
    pub fn delay(&self, attempt: u32, unit: f64) -> Duration {
        let exp = attempt.saturating_sub(1).min(32);
        let full = self
            .base
            .checked_mul(1u32 << exp.min(31))
            .unwrap_or(self.cap)
            .min(self.cap);
        let unit = unit.clamp(0.0, 1.0);
        full / 2 + full.mul_f64(unit / 2.0)
    }

    /// [`Backoff::delay`] with a random jitter.
    pub fn delay_jittered(&self, attempt: u32) -> Duration {
        self.delay(attempt, random_unit())
    }
}

/// A uniform number in `[0, 1)`, good enough for jitter (not for anything else): the
/// standard library's randomly keyed hasher over a counter.
fn random_unit() -> f64 {
    use std::collections::hash_map::RandomState;
    use std::hash::BuildHasher;
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let bits = RandomState::new().hash_one(n);
    (bits >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_exponentially_then_caps() {
        let b = Backoff {
            base: Duration::from_millis(100),
            cap: Duration::from_secs(2),
        };
        // unit = 1 (almost): the full wait.
        let full = |a| b.delay(a, 1.0);
        assert_eq!(full(1), Duration::from_millis(100));
        assert_eq!(full(2), Duration::from_millis(200));
        assert_eq!(full(3), Duration::from_millis(400));
        assert_eq!(full(5), Duration::from_millis(1600));
        assert_eq!(full(6), Duration::from_secs(2));
        assert_eq!(full(1000), Duration::from_secs(2));
        assert_eq!(full(u32::MAX), Duration::from_secs(2));
    }

    #[test]
    fn jitter_stays_between_half_and_all() {
        let b = Backoff::default();
        assert_eq!(b.delay(3, 0.0), Duration::from_millis(200));
        for attempt in 1..40 {
            let d = b.delay_jittered(attempt);
            let full = b.delay(attempt, 1.0);
            assert!(d >= full / 2 && d <= full, "{attempt}: {d:?}");
        }
    }

    #[test]
    fn random_units_are_in_range_and_vary() {
        let xs: Vec<f64> = (0..100).map(|_| random_unit()).collect();
        assert!(xs.iter().all(|x| (0.0..1.0).contains(x)));
        assert!(xs.windows(2).any(|w| w[0] != w[1]));
    }
}
