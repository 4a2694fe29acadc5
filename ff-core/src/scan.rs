//! Scanner operations: everything time-driven (DESIGN §5, §6).
//!
//! Each scanner call works on one partition, processes up to `limit` due items, each
//! atomically, by the backend's clock. Items are visited in due order after an optional
//! cursor, so a poisoned item (one that fails every time) is reported in
//! [`ScanReport::failures`] and passed over instead of blocking the items behind it; the
//! engine keeps the cursor, backs off failing items and passes them in [`ScanRequest::skip`].

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::EngineError;
use crate::limits;
use crate::partition::Partition;
use crate::policy::check_duration;
use crate::time::Timestamp;

/// What a scanner call does with each due item.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum ScanKind {
    /// Running executions whose lease expired: a failed attempt (`lease_expired`) that
    /// retries or fails like any other, bumping the epoch.
    LeaseExpiry,
    /// Delayed executions whose `available_at` has passed become ready.
    DelayedPromotion,
    /// Running executions whose attempt timeout passed: a failed attempt (`attempt_timeout`).
    AttemptTimeout,
    /// Unfinished executions whose absolute deadline passed become `expired`.
    ExecutionDeadline,
    /// Flows whose cancel was deferred: cancel their remaining members.
    CancelBacklog,
    /// Remove terminal standalone executions, and finished flows with all their members,
    /// that ended more than `older_than` ago. Flow members are only ever removed with their
    /// flow.
    Retention {
        /// The retention horizon.
        older_than: Duration,
    },
}

impl ScanKind {
    /// Stable name, for logs and metrics.
    pub const fn name(&self) -> &'static str {
        match self {
            ScanKind::LeaseExpiry => "lease_expiry",
            ScanKind::DelayedPromotion => "delayed_promotion",
            ScanKind::AttemptTimeout => "attempt_timeout",
            ScanKind::ExecutionDeadline => "execution_deadline",
            ScanKind::CancelBacklog => "cancel_backlog",
            ScanKind::Retention { .. } => "retention",
        }
    }
}

impl fmt::Display for ScanKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An opaque position in a partition's due order, returned by one call and passed to the
/// next.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ScanCursor(pub String);

/// One scanner call.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ScanRequest {
    /// The partition.
    pub partition: Partition,
    /// What to do.
    pub kind: ScanKind,
    /// Most items to process, `1..=`[`limits::MAX_SCAN_BATCH`].
    pub limit: u32,
    /// Continue after this position; `None` starts from the earliest due item.
    pub after: Option<ScanCursor>,
    /// Item ids to pass over (in backoff after failures).
    pub skip: Vec<String>,
}

impl ScanRequest {
    /// A scan from the start of the due order.
    pub fn new(partition: Partition, kind: ScanKind, limit: u32) -> Self {
        ScanRequest {
            partition,
            kind,
            limit,
            after: None,
            skip: Vec::new(),
        }
    }

    /// Continues after `cursor`.
    pub fn after(mut self, cursor: Option<ScanCursor>) -> Self {
        self.after = cursor;
        self
    }

    /// Passes over `items`.
    pub fn skipping(mut self, items: Vec<String>) -> Self {
        self.skip = items;
        self
    }

    /// Checks the request against the documented limits.
    pub fn validate(&self) -> Result<(), EngineError> {
        limits::check_count("limit", self.limit, limits::MAX_SCAN_BATCH)?;
        if let ScanKind::Retention { older_than } = self.kind {
            check_duration("kind.older_than", older_than)?;
        }
        Ok(())
    }
}

/// One item a scanner call could not process.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScanFailure {
    /// The item's id (an execution id or a flow id).
    pub item: String,
    /// What went wrong.
    pub error: String,
}

/// The answer to a scanner call.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScanReport {
    /// Items processed.
    pub processed: u32,
    /// Items that failed; they stay due.
    pub failures: Vec<ScanFailure>,
    /// Where to continue; `None` when the call reached the end of the due items.
    pub next: Option<ScanCursor>,
    /// Due items left after this call (may be an estimate), for backlog metrics.
    pub backlog: u64,
}

/// When the time-driven work of one partition next falls due, index by index: what
/// [`crate::EngineBackend::due_summary`] answers so scanners visit only partitions with
/// something to do.
///
/// Every time is *at most* the true earliest due time of its index (a backend may answer
/// earlier, e.g. "now" when it cannot tell cheaply), and `None` only when the index is empty.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionDue {
    /// The partition.
    pub partition: Partition,
    /// Earliest lease expiry of a running execution.
    pub lease_expiry: Option<Timestamp>,
    /// Earliest `available_at` of a delayed execution.
    pub delayed: Option<Timestamp>,
    /// Earliest attempt timeout of a running execution.
    pub attempt_timeout: Option<Timestamp>,
    /// Earliest deadline of an unfinished execution.
    pub deadline: Option<Timestamp>,
    /// Set (to when it was requested, or earlier) while a deferred flow cancel waits.
    pub cancel_backlog: Option<Timestamp>,
    /// Finish time of the oldest standalone execution or flow retention may remove.
    pub finished: Option<Timestamp>,
    /// Record time of the oldest pending completion.
    pub completions: Option<Timestamp>,
}

impl PartitionDue {
    /// Every index possibly due at `now`: the answer of a backend that cannot tell.
    pub const fn everything_at(partition: Partition, now: Timestamp) -> Self {
        PartitionDue {
            partition,
            lease_expiry: Some(now),
            delayed: Some(now),
            attempt_timeout: Some(now),
            deadline: Some(now),
            cancel_backlog: Some(now),
            finished: Some(now),
            completions: Some(now),
        }
    }

    /// Nothing due on `partition` (every index empty).
    pub const fn nothing(partition: Partition) -> Self {
        PartitionDue {
            partition,
            lease_expiry: None,
            delayed: None,
            attempt_timeout: None,
            deadline: None,
            cancel_backlog: None,
            finished: None,
            completions: None,
        }
    }

    /// When a scan of `kind` next has something to do here (for retention: when the oldest
    /// finished item passes the horizon); `None` when its index is empty.
    pub fn next_for(&self, kind: &ScanKind) -> Option<Timestamp> {
        match kind {
            ScanKind::LeaseExpiry => self.lease_expiry,
            ScanKind::DelayedPromotion => self.delayed,
            ScanKind::AttemptTimeout => self.attempt_timeout,
            ScanKind::ExecutionDeadline => self.deadline,
            ScanKind::CancelBacklog => self.cancel_backlog,
            ScanKind::Retention { older_than } => {
                self.finished.map(|at| at.saturating_add(*older_than))
            }
        }
    }
}

/// The answer to [`crate::EngineBackend::due_summary`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DueSummary {
    /// The backend clock when the summary was taken: compare the due times with it.
    pub now: Timestamp,
    /// One entry per requested partition, in request order.
    pub partitions: Vec<PartitionDue>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retention_is_due_after_the_horizon() {
        let mut due = PartitionDue::nothing(Partition(1));
        let retention = ScanKind::Retention {
            older_than: Duration::from_secs(60),
        };
        assert_eq!(due.next_for(&retention), None);
        due.finished = Some(Timestamp::from_millis(1_000));
        assert_eq!(
            due.next_for(&retention),
            Some(Timestamp::from_millis(61_000))
        );
        let all = PartitionDue::everything_at(Partition(1), Timestamp::from_millis(5));
        assert_eq!(
            all.next_for(&ScanKind::LeaseExpiry),
            Some(Timestamp::from_millis(5))
        );
    }
}
