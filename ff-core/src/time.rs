//! Backend time.
//!
//! Every lease, delay and deadline is computed with the *backend's* clock (`TIME` in Valkey,
//! `clock_timestamp()` in Postgres, a controllable clock in memory), never the caller's, so
//! that workers with skewed clocks cannot extend or cut each other's leases. A [`Timestamp`]
//! is therefore always a reading of some backend clock, in milliseconds since the Unix epoch.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A point in time on a backend clock: milliseconds since the Unix epoch.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Timestamp(u64);

impl Timestamp {
    /// The Unix epoch.
    pub const EPOCH: Timestamp = Timestamp(0);

    /// A timestamp from milliseconds since the Unix epoch.
    pub const fn from_millis(millis: u64) -> Self {
        Timestamp(millis)
    }

    /// Milliseconds since the Unix epoch.
    pub const fn as_millis(self) -> u64 {
        self.0
    }

    /// The current time of the host (not of any backend). Used by clocks that *are* the host
    /// clock, such as the in-memory backend's default clock.
    pub fn now_system() -> Self {
        let millis = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0);
        Timestamp(u64::try_from(millis).unwrap_or(u64::MAX))
    }

    /// `self + d`, saturating at the far future.
    pub fn saturating_add(self, d: Duration) -> Self {
        Timestamp(self.0.saturating_add(duration_millis(d)))
    }

    /// `self - d`, saturating at the epoch.
    pub fn saturating_sub(self, d: Duration) -> Self {
        Timestamp(self.0.saturating_sub(duration_millis(d)))
    }

    /// The time from `earlier` to `self`, zero if `earlier` is later.
    pub fn duration_since(self, earlier: Timestamp) -> Duration {
        Duration::from_millis(self.0.saturating_sub(earlier.0))
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}ms", self.0)
    }
}

/// A duration in whole milliseconds (rounded up, so that a non-zero duration never becomes a
/// zero one), saturating at `u64::MAX`.
pub fn duration_millis(d: Duration) -> u64 {
    let millis = d.as_millis() + u128::from(!d.subsec_nanos().is_multiple_of(1_000_000));
    u64::try_from(millis).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_saturates() {
        let t = Timestamp::from_millis(10);
        assert_eq!(
            t.saturating_sub(Duration::from_millis(20)),
            Timestamp::EPOCH
        );
        assert_eq!(
            Timestamp::from_millis(u64::MAX).saturating_add(Duration::from_secs(1)),
            Timestamp::from_millis(u64::MAX)
        );
        assert_eq!(t.duration_since(Timestamp::from_millis(15)), Duration::ZERO);
    }

    #[test]
    fn sub_millisecond_durations_round_up() {
        assert_eq!(duration_millis(Duration::from_micros(1)), 1);
        assert_eq!(duration_millis(Duration::from_millis(5)), 5);
        assert_eq!(duration_millis(Duration::ZERO), 0);
    }
}
