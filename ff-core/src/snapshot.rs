//! What the describe and list calls return.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::error::EngineError;
use crate::execution::Failure;
use crate::flow::{DependencyGroup, EdgeKind, GroupVerdict};
use crate::id::{Capability, ExecutionId, FlowId, Lane, LeaseId, NodeKey, WorkerId};
use crate::limits;
use crate::partition::Partition;
use crate::policy::RetryPolicy;
use crate::state::{AttemptOutcome, EndReason, ExecutionState, ExecutionStatus, FlowState};
use crate::time::Timestamp;

/// One attempt of an execution.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptRecord {
    /// 1-based attempt number.
    pub number: u32,
    /// The worker that claimed it.
    pub worker: WorkerId,
    /// Its lease.
    pub lease_id: LeaseId,
    /// The epoch of its lease.
    pub epoch: u64,
    /// When it was claimed.
    pub started_at: Timestamp,
    /// When it ended, if it has.
    pub ended_at: Option<Timestamp>,
    /// How it ended, if it has.
    pub outcome: Option<AttemptOutcome>,
    /// The worker's failure, for attempts that failed.
    pub failure: Option<Failure>,
}

/// The current lease of a running execution.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseInfo {
    /// The lease.
    pub lease_id: LeaseId,
    /// Its holder.
    pub worker: WorkerId,
    /// When it expires unless renewed.
    pub expires_at: Timestamp,
}

/// Everything known about one execution.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExecutionSnapshot {
    /// Its id.
    pub id: ExecutionId,
    /// Its flow and node key, for flow members.
    pub flow: Option<(FlowId, NodeKey)>,
    /// State, epoch, attempts started and end reason.
    pub status: ExecutionStatus,
    /// Its lane.
    pub lane: Lane,
    /// Its priority.
    pub priority: i32,
    /// Capabilities a worker must offer.
    pub required_capabilities: BTreeSet<Capability>,
    /// The submitted payload.
    pub payload: Vec<u8>,
    /// Its retry policy.
    pub retry: RetryPolicy,
    /// When it was created.
    pub created_at: Timestamp,
    /// For `delayed`: when it becomes claimable.
    pub available_at: Option<Timestamp>,
    /// The absolute deadline, if any.
    pub deadline: Option<Timestamp>,
    /// For `running`: the current lease.
    pub lease: Option<LeaseInfo>,
    /// The last progress a worker reported.
    pub progress: Option<Vec<u8>>,
    /// The result, for `succeeded`.
    pub result: Option<Vec<u8>>,
    /// When it reached its terminal state.
    pub finished_at: Option<Timestamp>,
    /// Every attempt, oldest first.
    pub attempts: Vec<AttemptRecord>,
}

impl ExecutionSnapshot {
    /// The current state.
    pub fn state(&self) -> ExecutionState {
        self.status.state
    }
}

/// One member of a flow, as `describe_flow` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowMember {
    /// Its key.
    pub key: NodeKey,
    /// Its execution.
    pub execution_id: ExecutionId,
    /// Its state.
    pub state: ExecutionState,
    /// Why it ended, if it has.
    pub end_reason: Option<EndReason>,
}

/// One edge of a flow.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowEdge {
    /// Upstream node.
    pub from: NodeKey,
    /// Downstream node.
    pub to: NodeKey,
    /// Edge kind.
    pub kind: EdgeKind,
    /// Whether it passes the upstream result.
    pub pass_result: bool,
    /// Whether the upstream's completion has been applied to the downstream group.
    pub applied: bool,
}

/// The dependency group of one node with incoming edges.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupSnapshot {
    /// The downstream node.
    pub node: NodeKey,
    /// Its group.
    pub group: DependencyGroup,
    /// Incoming edges.
    pub incoming: u32,
    /// Applied edges that were satisfied.
    pub satisfied: u32,
    /// Applied edges that were not.
    pub unsatisfied: u32,
    /// Where the group stands.
    pub verdict: GroupVerdict,
}

/// Exact member counts of a flow, maintained with every transition.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowCounts {
    /// Members.
    pub total: u32,
    /// Terminal members.
    pub terminal: u32,
    /// Terminal members whose end fails the flow ([`EndReason::fails_flow`]).
    pub failing: u32,
}

/// Everything known about one flow.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowSnapshot {
    /// Its id.
    pub id: FlowId,
    /// Its state.
    pub state: FlowState,
    /// Whether `cancel_flow` was called.
    pub cancel_requested: bool,
    /// Member counts.
    pub counts: FlowCounts,
    /// When it was created.
    pub created_at: Timestamp,
    /// When its last member ended.
    pub finished_at: Option<Timestamp>,
    /// Members, in creation order.
    pub members: Vec<FlowMember>,
    /// Edges, in creation order.
    pub edges: Vec<FlowEdge>,
    /// Dependency groups of the members that have incoming edges, in member order.
    pub groups: Vec<GroupSnapshot>,
}

impl FlowSnapshot {
    /// The member with key `key`.
    pub fn member(&self, key: &NodeKey) -> Option<&FlowMember> {
        self.members.iter().find(|m| &m.key == key)
    }
}

/// An opaque position in a listing.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ListCursor(pub String);

/// Lists the executions of one partition in one state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ListQuery {
    /// The partition.
    pub partition: Partition,
    /// The state.
    pub state: ExecutionState,
    /// Only this lane, if set.
    pub lane: Option<Lane>,
    /// Continue after this position.
    pub after: Option<ListCursor>,
    /// Most entries, `1..=`[`limits::MAX_PAGE_SIZE`].
    pub limit: u32,
}

impl ListQuery {
    /// The first page of 100 executions in `state` on `partition`.
    pub fn new(partition: Partition, state: ExecutionState) -> Self {
        ListQuery {
            partition,
            state,
            lane: None,
            after: None,
            limit: 100,
        }
    }

    /// Filters by lane.
    pub fn with_lane(mut self, lane: Lane) -> Self {
        self.lane = Some(lane);
        self
    }

    /// Continues after `cursor`.
    pub fn after(mut self, cursor: Option<ListCursor>) -> Self {
        self.after = cursor;
        self
    }

    /// Sets the page size.
    pub fn with_limit(mut self, limit: u32) -> Self {
        self.limit = limit;
        self
    }

    /// Checks the query against the documented limits.
    pub fn validate(&self) -> Result<(), EngineError> {
        limits::check_count("limit", self.limit, limits::MAX_PAGE_SIZE)
    }
}

/// One line of a listing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecutionSummary {
    /// Its id.
    pub id: ExecutionId,
    /// Its state.
    pub state: ExecutionState,
    /// Its lane.
    pub lane: Lane,
    /// Its priority.
    pub priority: i32,
    /// Its flow, for members.
    pub flow_id: Option<FlowId>,
    /// When it was created.
    pub created_at: Timestamp,
}

/// One page of a listing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Page<T> {
    /// The entries.
    pub items: Vec<T>,
    /// Where the next page starts; `None` on the last page.
    pub next: Option<ListCursor>,
}
