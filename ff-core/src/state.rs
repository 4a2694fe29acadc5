//! The state model of executions and flows (DESIGN §3, §4).
//!
//! An execution has exactly one [`ExecutionState`] at a time, and every backend writes it
//! atomically with every index that depends on it. Terminal states are final (only retention
//! removes them). Each terminal state records *why* it was reached ([`EndReason`]), because a
//! flow's own outcome depends on it: a member cancelled by a satisfied group's
//! `CancelRemaining` does not fail its flow, a member cancelled by a user does.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::EngineError;

/// The state of one execution.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExecutionState {
    /// A flow member waiting for its dependency group to be satisfied.
    Blocked,
    /// Not claimable before its `available_at` (initial delay or retry backoff).
    Delayed,
    /// Claimable, ordered by priority then by the time it became ready.
    Ready,
    /// Leased by a worker.
    Running,
    /// Terminal: completed by a worker.
    Succeeded,
    /// Terminal: failed permanently (non-retryable error or attempts exhausted).
    Failed,
    /// Terminal: cancelled by a user, by its flow, or by a satisfied group.
    Cancelled,
    /// Terminal: its absolute execution deadline passed.
    Expired,
    /// Terminal: a flow member whose dependency group can no longer be satisfied.
    Skipped,
}

impl ExecutionState {
    /// Every state, in lifecycle order.
    pub const ALL: [ExecutionState; 9] = [
        ExecutionState::Blocked,
        ExecutionState::Delayed,
        ExecutionState::Ready,
        ExecutionState::Running,
        ExecutionState::Succeeded,
        ExecutionState::Failed,
        ExecutionState::Cancelled,
        ExecutionState::Expired,
        ExecutionState::Skipped,
    ];

    /// Whether the state is final.
    pub const fn is_terminal(self) -> bool {
        matches!(
            self,
            ExecutionState::Succeeded
                | ExecutionState::Failed
                | ExecutionState::Cancelled
                | ExecutionState::Expired
                | ExecutionState::Skipped
        )
    }

    /// The stable lower-case name used in storage and logs.
    pub const fn as_str(self) -> &'static str {
        match self {
            ExecutionState::Blocked => "blocked",
            ExecutionState::Delayed => "delayed",
            ExecutionState::Ready => "ready",
            ExecutionState::Running => "running",
            ExecutionState::Succeeded => "succeeded",
            ExecutionState::Failed => "failed",
            ExecutionState::Cancelled => "cancelled",
            ExecutionState::Expired => "expired",
            ExecutionState::Skipped => "skipped",
        }
    }

    /// How a terminal state counts for a dependency group: `succeeded` is a success,
    /// `skipped` a skip, every other terminal state a failure. `None` for non-terminal states.
    pub const fn bucket(self) -> Option<OutcomeBucket> {
        match self {
            ExecutionState::Succeeded => Some(OutcomeBucket::Success),
            ExecutionState::Skipped => Some(OutcomeBucket::Skip),
            ExecutionState::Failed | ExecutionState::Cancelled | ExecutionState::Expired => {
                Some(OutcomeBucket::Failure)
            }
            _ => None,
        }
    }
}

impl fmt::Display for ExecutionState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ExecutionState {
    type Err = EngineError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ExecutionState::ALL
            .into_iter()
            .find(|state| state.as_str() == s)
            .ok_or_else(|| {
                EngineError::validation("state", format!("unknown execution state {s:?}"))
            })
    }
}

/// How a terminal outcome counts towards a dependency group (DESIGN §4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutcomeBucket {
    /// The upstream succeeded.
    Success,
    /// The upstream was skipped.
    Skip,
    /// The upstream failed, was cancelled or expired.
    Failure,
}

/// Who cancelled an execution.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CancelSource {
    /// `cancel_execution` was called for it.
    User,
    /// `cancel_flow` was called for its flow.
    Flow,
    /// A downstream dependency group with `OnSatisfied::CancelRemaining` was satisfied while
    /// this upstream was still unfinished. Does not fail the flow.
    GroupSatisfied,
}

impl CancelSource {
    /// Stable lower-case name.
    pub const fn as_str(self) -> &'static str {
        match self {
            CancelSource::User => "user",
            CancelSource::Flow => "flow",
            CancelSource::GroupSatisfied => "group_satisfied",
        }
    }
}

/// Why an execution reached its terminal state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "reason", content = "source")]
pub enum EndReason {
    /// `succeeded`: a worker completed it.
    Completed,
    /// `failed`: the last allowed attempt failed (by the worker, lease expiry or timeout).
    AttemptsExhausted,
    /// `failed`: a worker reported a non-retryable error.
    NonRetryable,
    /// `cancelled`, with who cancelled it.
    Cancelled(CancelSource),
    /// `expired`: the absolute execution deadline passed.
    DeadlineExceeded,
    /// `skipped`: its dependency group became impossible to satisfy.
    DependencyImpossible,
}

impl EndReason {
    /// The terminal state this reason ends in.
    pub const fn state(self) -> ExecutionState {
        match self {
            EndReason::Completed => ExecutionState::Succeeded,
            EndReason::AttemptsExhausted | EndReason::NonRetryable => ExecutionState::Failed,
            EndReason::Cancelled(_) => ExecutionState::Cancelled,
            EndReason::DeadlineExceeded => ExecutionState::Expired,
            EndReason::DependencyImpossible => ExecutionState::Skipped,
        }
    }

    /// Whether a member ending this way makes its flow `failed` (DESIGN §4): failures,
    /// expiries, skips and cancels for any reason other than a flow cancel or a satisfied
    /// group's `CancelRemaining`.
    pub const fn fails_flow(self) -> bool {
        match self {
            EndReason::Completed
            | EndReason::Cancelled(CancelSource::Flow)
            | EndReason::Cancelled(CancelSource::GroupSatisfied) => false,
            EndReason::AttemptsExhausted
            | EndReason::NonRetryable
            | EndReason::Cancelled(CancelSource::User)
            | EndReason::DeadlineExceeded
            | EndReason::DependencyImpossible => true,
        }
    }

    /// Stable lower-case name used in storage.
    pub const fn as_str(self) -> &'static str {
        match self {
            EndReason::Completed => "completed",
            EndReason::AttemptsExhausted => "attempts_exhausted",
            EndReason::NonRetryable => "non_retryable",
            EndReason::Cancelled(CancelSource::User) => "cancelled_by_user",
            EndReason::Cancelled(CancelSource::Flow) => "cancelled_by_flow",
            EndReason::Cancelled(CancelSource::GroupSatisfied) => "cancelled_by_group",
            EndReason::DeadlineExceeded => "deadline_exceeded",
            EndReason::DependencyImpossible => "dependency_impossible",
        }
    }

    /// Every reason, for parsing and tests.
    pub const ALL: [EndReason; 8] = [
        EndReason::Completed,
        EndReason::AttemptsExhausted,
        EndReason::NonRetryable,
        EndReason::Cancelled(CancelSource::User),
        EndReason::Cancelled(CancelSource::Flow),
        EndReason::Cancelled(CancelSource::GroupSatisfied),
        EndReason::DeadlineExceeded,
        EndReason::DependencyImpossible,
    ];
}

impl fmt::Display for EndReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for EndReason {
    type Err = EngineError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        EndReason::ALL
            .into_iter()
            .find(|reason| reason.as_str() == s)
            .ok_or_else(|| {
                EngineError::validation("end_reason", format!("unknown end reason {s:?}"))
            })
    }
}

/// How one attempt ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttemptOutcome {
    /// The worker completed it.
    Succeeded,
    /// The worker reported a failure.
    Failed,
    /// The lease expired before the worker finished (`lease_expired`).
    LeaseExpired,
    /// The per-attempt timeout passed (`attempt_timeout`).
    TimedOut,
    /// The execution was cancelled while this attempt ran.
    Cancelled,
    /// The execution deadline passed while this attempt ran.
    Expired,
}

impl AttemptOutcome {
    /// Stable lower-case name used in storage.
    pub const fn as_str(self) -> &'static str {
        match self {
            AttemptOutcome::Succeeded => "succeeded",
            AttemptOutcome::Failed => "failed",
            AttemptOutcome::LeaseExpired => "lease_expired",
            AttemptOutcome::TimedOut => "attempt_timeout",
            AttemptOutcome::Cancelled => "cancelled",
            AttemptOutcome::Expired => "expired",
        }
    }

    /// Every outcome, for parsing.
    pub const ALL: [AttemptOutcome; 6] = [
        AttemptOutcome::Succeeded,
        AttemptOutcome::Failed,
        AttemptOutcome::LeaseExpired,
        AttemptOutcome::TimedOut,
        AttemptOutcome::Cancelled,
        AttemptOutcome::Expired,
    ];
}

impl fmt::Display for AttemptOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for AttemptOutcome {
    type Err = EngineError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        AttemptOutcome::ALL
            .into_iter()
            .find(|outcome| outcome.as_str() == s)
            .ok_or_else(|| {
                EngineError::validation("attempt_outcome", format!("unknown attempt outcome {s:?}"))
            })
    }
}

/// The state of a flow, maintained exactly (not sampled) in the same atomic unit as its
/// members' transitions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FlowState {
    /// At least one member is not terminal.
    Running,
    /// Every member is terminal and none ended in a way that fails the flow.
    Succeeded,
    /// Every member is terminal and at least one failed, expired, was skipped, or was
    /// cancelled by a user (see [`EndReason::fails_flow`]).
    Failed,
    /// Every member is terminal and the flow was cancelled.
    Cancelled,
}

impl FlowState {
    /// Whether the flow has finished.
    pub const fn is_terminal(self) -> bool {
        !matches!(self, FlowState::Running)
    }

    /// Stable lower-case name.
    pub const fn as_str(self) -> &'static str {
        match self {
            FlowState::Running => "running",
            FlowState::Succeeded => "succeeded",
            FlowState::Failed => "failed",
            FlowState::Cancelled => "cancelled",
        }
    }

    /// The state of a flow whose members are all terminal (DESIGN §4).
    pub const fn finished(cancel_requested: bool, any_member_failed_flow: bool) -> FlowState {
        if cancel_requested {
            FlowState::Cancelled
        } else if any_member_failed_flow {
            FlowState::Failed
        } else {
            FlowState::Succeeded
        }
    }
}

impl fmt::Display for FlowState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for FlowState {
    type Err = EngineError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [
            FlowState::Running,
            FlowState::Succeeded,
            FlowState::Failed,
            FlowState::Cancelled,
        ]
        .into_iter()
        .find(|state| state.as_str() == s)
        .ok_or_else(|| EngineError::validation("flow_state", format!("unknown flow state {s:?}")))
    }
}

/// The current status of an execution as far as fencing is concerned. Carried by
/// [`EngineError::Fenced`] and [`EngineError::NotActive`] so a caller whose reply was lost can
/// tell "my call already landed" from "I lost the lease".
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ExecutionStatus {
    /// The current state.
    pub state: ExecutionState,
    /// The current lease epoch (bumped by every claim, lease expiry, cancel and expiry of a
    /// running execution).
    pub epoch: u64,
    /// The number of attempts started so far.
    pub attempt: u32,
    /// Why it ended, when the state is terminal.
    pub end_reason: Option<EndReason>,
}

impl fmt::Display for ExecutionStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "state {} at epoch {} (attempt {})",
            self.state, self.epoch, self.attempt
        )?;
        if let Some(reason) = self.end_reason {
            write!(f, ", ended: {reason}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for state in ExecutionState::ALL {
            assert_eq!(state.as_str().parse::<ExecutionState>().ok(), Some(state));
        }
        for reason in EndReason::ALL {
            assert_eq!(reason.as_str().parse::<EndReason>().ok(), Some(reason));
            assert!(reason.state().is_terminal());
        }
        for outcome in AttemptOutcome::ALL {
            assert_eq!(
                outcome.as_str().parse::<AttemptOutcome>().ok(),
                Some(outcome)
            );
        }
        assert!("bogus".parse::<ExecutionState>().is_err());
    }

    #[test]
    fn buckets_follow_the_design() {
        assert_eq!(
            ExecutionState::Succeeded.bucket(),
            Some(OutcomeBucket::Success)
        );
        assert_eq!(ExecutionState::Skipped.bucket(), Some(OutcomeBucket::Skip));
        for failure in [
            ExecutionState::Failed,
            ExecutionState::Cancelled,
            ExecutionState::Expired,
        ] {
            assert_eq!(failure.bucket(), Some(OutcomeBucket::Failure));
        }
        assert_eq!(ExecutionState::Running.bucket(), None);
    }

    #[test]
    fn flow_outcome_rules() {
        assert!(!EndReason::Cancelled(CancelSource::GroupSatisfied).fails_flow());
        assert!(EndReason::Cancelled(CancelSource::User).fails_flow());
        assert!(EndReason::DependencyImpossible.fails_flow());
        assert_eq!(FlowState::finished(true, true), FlowState::Cancelled);
        assert_eq!(FlowState::finished(false, true), FlowState::Failed);
        assert_eq!(FlowState::finished(false, false), FlowState::Succeeded);
    }
}
