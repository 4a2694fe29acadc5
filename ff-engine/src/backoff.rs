//! Backoff: how long to wait after a failure, and which items are waiting.
//!
//! Used by the supervisor (restarting a task), the scanners and the dispatch loop (passing
//! over an item that keeps failing, so it cannot block the items behind it) and the worker
//! (an empty lane, a backend that does not answer).

use std::collections::HashMap;
use std::hash::Hash;
use std::time::Duration;

use rand::Rng;
use tokio::time::Instant;

/// Exponential backoff: `initial × 2^(failures − 1)`, capped at `max`, with up to 20 % of the
/// delay removed at random so that many waiters do not wake in step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    /// Wait after the first failure.
    pub initial: Duration,
    /// Longest wait.
    pub max: Duration,
}

impl Backoff {
    /// A backoff from `initial` to `max`.
    pub const fn new(initial: Duration, max: Duration) -> Self {
        Backoff { initial, max }
    }

    /// The wait after `failures` consecutive failures (1 = the first), without jitter.
    pub fn base_delay(&self, failures: u32) -> Duration {
        let exponent = failures.saturating_sub(1).min(30);
        self.initial
            .saturating_mul(1u32 << exponent)
            .min(self.max)
            .max(self.initial.min(self.max))
    }

    /// The wait after `failures` consecutive failures, with jitter: between 80 % and 100 %
    /// of [`Backoff::base_delay`].
    pub fn delay(&self, failures: u32) -> Duration {
        let base = self.base_delay(failures);
        let keep = rand::rng().random_range(0.8..=1.0);
        base.mul_f64(keep)
    }
}

/// Multiplies `interval` by a random factor in `1 ± jitter` (`jitter` is clamped to
/// `0.0..=0.9`), so that periodic tasks of several engine instances drift apart instead of
/// hitting the backend together.
pub fn jittered(interval: Duration, jitter: f64) -> Duration {
    let jitter = jitter.clamp(0.0, 0.9);
    if jitter == 0.0 {
        return interval;
    }
    interval.mul_f64(rand::rng().random_range(1.0 - jitter..=1.0 + jitter))
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    failures: u32,
    retry_at: Instant,
}

/// Items in backoff after failures: an item that failed `n` times in a row is passed over
/// until its backoff passes, then tried again. An item that succeeds (or has not failed for
/// a long while) is forgotten.
#[derive(Debug)]
pub struct ItemBackoff<K> {
    backoff: Backoff,
    entries: HashMap<K, Entry>,
}

impl<K: Eq + Hash + Clone> ItemBackoff<K> {
    /// Empty, with `backoff` between retries of one item.
    pub fn new(backoff: Backoff) -> Self {
        ItemBackoff {
            backoff,
            entries: HashMap::new(),
        }
    }

    /// Records a failure of `item` and returns how long it is now passed over.
    pub fn failed(&mut self, item: K) -> Duration {
        let now = Instant::now();
        let entry = self.entries.entry(item).or_insert(Entry {
            failures: 0,
            retry_at: now,
        });
        entry.failures = entry.failures.saturating_add(1);
        let wait = self.backoff.delay(entry.failures);
        entry.retry_at = now + wait;
        wait
    }

    /// Forgets `item` (it succeeded).
    pub fn succeeded(&mut self, item: &K) {
        self.entries.remove(item);
    }

    /// Whether `item` is waiting out its backoff now.
    pub fn is_waiting(&self, item: &K) -> bool {
        self.entries
            .get(item)
            .is_some_and(|e| e.retry_at > Instant::now())
    }

    /// Consecutive failures recorded for `item`.
    pub fn failures(&self, item: &K) -> u32 {
        self.entries.get(item).map_or(0, |e| e.failures)
    }

    /// The items waiting out their backoff now.
    pub fn waiting(&self) -> impl Iterator<Item = &K> {
        let now = Instant::now();
        self.entries
            .iter()
            .filter(move |(_, e)| e.retry_at > now)
            .map(|(k, _)| k)
    }

    /// Time until the earliest waiting item may be tried again; `None` when none waits.
    pub fn next_retry_in(&self) -> Option<Duration> {
        let now = Instant::now();
        self.entries
            .values()
            .filter(|e| e.retry_at > now)
            .map(|e| e.retry_at - now)
            .min()
    }

    /// Drops entries whose backoff ended more than `forget_after` ago, so that an item that
    /// stopped failing (or disappeared) does not stay in memory forever.
    pub fn prune(&mut self, forget_after: Duration) {
        let now = Instant::now();
        self.entries.retain(|_, e| e.retry_at + forget_after > now);
    }

    /// Items with a recorded failure.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no item has a recorded failure.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_and_cap() {
        let b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        assert_eq!(b.base_delay(1), Duration::from_millis(100));
        assert_eq!(b.base_delay(2), Duration::from_millis(200));
        assert_eq!(b.base_delay(4), Duration::from_millis(800));
        assert_eq!(b.base_delay(5), Duration::from_secs(1));
        assert_eq!(b.base_delay(u32::MAX), Duration::from_secs(1));
        for failures in 1..10 {
            let d = b.delay(failures);
            assert!(d <= b.base_delay(failures));
            assert!(d >= b.base_delay(failures).mul_f64(0.8));
        }
    }

    #[test]
    fn jitter_stays_in_bounds() {
        let base = Duration::from_secs(10);
        for _ in 0..100 {
            let d = jittered(base, 0.2);
            assert!(d >= Duration::from_secs(8) && d <= Duration::from_secs(12));
        }
        assert_eq!(jittered(base, 0.0), base);
    }

    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn items_wait_out_their_backoff() {
        let mut items =
            ItemBackoff::new(Backoff::new(Duration::from_secs(1), Duration::from_secs(8)));
        let wait = items.failed("a");
        assert!(items.is_waiting(&"a"));
        assert!(!items.is_waiting(&"b"));
        assert_eq!(items.waiting().count(), 1);
        tokio::time::advance(wait + Duration::from_millis(1)).await;
        assert!(!items.is_waiting(&"a"));
        let second = items.failed("a");
        assert_eq!(items.failures(&"a"), 2);
        assert!(second >= Duration::from_millis(1600));
        items.succeeded(&"a");
        assert!(items.is_empty());
        items.failed("b");
        tokio::time::advance(Duration::from_secs(5)).await;
        items.prune(Duration::from_secs(1));
        assert!(items.is_empty());
    }
}
