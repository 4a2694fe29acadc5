//! The in-memory backend's controllable clock.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::time::{Timestamp, duration_millis};

/// Either the host clock plus an offset that only grows, or a frozen time that moves only when
/// advanced. Both are monotonic for callers of [`MemoryClock::now`] as long as the host clock
/// is.
#[derive(Debug)]
pub(super) enum MemoryClock {
    /// Host time plus `offset` milliseconds.
    System {
        /// Added by `advance`.
        offset: AtomicU64,
    },
    /// A fixed time, moved only by `advance`: deterministic tests.
    Frozen {
        /// Milliseconds since the epoch.
        now: AtomicU64,
    },
}

impl MemoryClock {
    pub(super) fn system() -> Self {
        MemoryClock::System {
            offset: AtomicU64::new(0),
        }
    }

    pub(super) fn frozen(at: Timestamp) -> Self {
        MemoryClock::Frozen {
            now: AtomicU64::new(at.as_millis()),
        }
    }

    pub(super) fn now(&self) -> Timestamp {
        match self {
            MemoryClock::System { offset } => Timestamp::from_millis(
                Timestamp::now_system()
                    .as_millis()
                    .saturating_add(offset.load(Ordering::Acquire)),
            ),
            MemoryClock::Frozen { now } => Timestamp::from_millis(now.load(Ordering::Acquire)),
        }
    }

    pub(super) fn advance(&self, by: Duration) -> Timestamp {
        let millis = duration_millis(by);
        match self {
            MemoryClock::System { offset } => {
                offset.fetch_add(millis, Ordering::AcqRel);
            }
            MemoryClock::Frozen { now } => {
                now.fetch_add(millis, Ordering::AcqRel);
            }
        }
        self.now()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frozen_clock_moves_only_when_advanced() {
        let clock = MemoryClock::frozen(Timestamp::from_millis(1_000));
        assert_eq!(clock.now(), Timestamp::from_millis(1_000));
        assert_eq!(
            clock.advance(Duration::from_millis(250)),
            Timestamp::from_millis(1_250)
        );
        assert_eq!(clock.now(), Timestamp::from_millis(1_250));
    }

    #[test]
    fn system_clock_advances_by_offset() {
        let clock = MemoryClock::system();
        let before = clock.now();
        let after = clock.advance(Duration::from_secs(3600));
        assert!(after.duration_since(before) >= Duration::from_secs(3600));
    }
}
