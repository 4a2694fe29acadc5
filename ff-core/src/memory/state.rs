//! The in-memory backend's state and the transitions every operation is built from.
//!
//! One [`State`] lives behind one lock, so every operation is trivially atomic. The indexes
//! mirror what a server backend keeps (ready per lane; delayed, leases, attempt timeouts,
//! deadlines, terminal and pending completions per partition), and every state change goes
//! through the few transition functions here, which keep the indexes in step with the state.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use crate::cascade::CompletionEvent;
use crate::error::EngineError;
use crate::execution::{ExecutionSpec, FailDisposition, Failure};
use crate::flow::{DependencyGroup, EdgeKind, GroupVerdict};
use crate::hint::Hint;
use crate::id::{ExecutionId, FlowId, InstanceId, Lane, NodeKey};
use crate::partition::{Partition, PartitionConfig};
use crate::snapshot::{AttemptRecord, FlowCounts, LeaseInfo};
use crate::state::{
    AttemptOutcome, CancelSource, EndReason, ExecutionState, ExecutionStatus, FlowState,
};
use crate::time::Timestamp;

/// One execution.
#[derive(Debug)]
pub(super) struct Exec {
    pub(super) id: ExecutionId,
    /// Flow and node key, for members.
    pub(super) member: Option<(FlowId, NodeKey)>,
    pub(super) spec: ExecutionSpec,
    pub(super) state: ExecutionState,
    pub(super) epoch: u64,
    pub(super) end_reason: Option<EndReason>,
    pub(super) created_at: Timestamp,
    /// For `delayed`.
    pub(super) available_at: Option<Timestamp>,
    pub(super) deadline_at: Option<Timestamp>,
    /// FIFO position while `ready`.
    pub(super) ready_seq: u64,
    /// For `running`.
    pub(super) lease: Option<LeaseInfo>,
    /// For `running` with an attempt timeout.
    pub(super) attempt_deadline: Option<Timestamp>,
    pub(super) progress: Option<Vec<u8>>,
    pub(super) result: Option<Vec<u8>>,
    pub(super) finished_at: Option<Timestamp>,
    pub(super) attempts: Vec<AttemptRecord>,
    /// What the latest worker `fail` led to, so a repeat answers the same.
    pub(super) last_fail: Option<FailDisposition>,
}

impl Exec {
    pub(super) fn status(&self) -> ExecutionStatus {
        ExecutionStatus {
            state: self.state,
            epoch: self.epoch,
            attempt: self.attempt_count(),
            end_reason: self.end_reason,
        }
    }

    pub(super) fn attempt_count(&self) -> u32 {
        u32::try_from(self.attempts.len()).unwrap_or(u32::MAX)
    }

    pub(super) fn flow_id(&self) -> Option<FlowId> {
        self.member.as_ref().map(|(flow, _)| *flow)
    }
}

/// One edge of a flow.
#[derive(Debug)]
pub(super) struct Edge {
    pub(super) from: ExecutionId,
    pub(super) to: ExecutionId,
    pub(super) kind: EdgeKind,
    pub(super) pass_result: bool,
    /// Set once the upstream's outcome has been counted in the downstream group: the per-edge
    /// idempotency mark of the cascade contract.
    pub(super) applied: bool,
}

/// The dependency group of a member with incoming edges.
#[derive(Debug)]
pub(super) struct Group {
    pub(super) group: DependencyGroup,
    pub(super) incoming: u32,
    pub(super) satisfied: u32,
    pub(super) unsatisfied: u32,
    pub(super) verdict: GroupVerdict,
}

/// One flow and its graph.
#[derive(Debug)]
pub(super) struct Flow {
    pub(super) id: FlowId,
    pub(super) created_at: Timestamp,
    pub(super) cancel_requested: bool,
    pub(super) state: FlowState,
    pub(super) counts: FlowCounts,
    pub(super) finished_at: Option<Timestamp>,
    /// Members in creation order.
    pub(super) members: Vec<ExecutionId>,
    pub(super) keys: HashMap<NodeKey, ExecutionId>,
    /// Edges in creation order.
    pub(super) edges: Vec<Edge>,
    pub(super) outgoing: HashMap<ExecutionId, Vec<usize>>,
    pub(super) incoming: HashMap<ExecutionId, Vec<usize>>,
    pub(super) groups: HashMap<ExecutionId, Group>,
}

impl Flow {
    pub(super) fn is_open(&self) -> bool {
        self.state == FlowState::Running && !self.cancel_requested
    }
}

/// What retention removes: a standalone execution, or a flow with all of its members.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) enum RetentionItem {
    Execution(ExecutionId),
    Flow(FlowId),
}

/// The time-ordered indexes of one partition.
#[derive(Debug, Default)]
pub(super) struct PartitionIndex {
    /// Every execution of the partition, for listing.
    pub(super) executions: BTreeSet<ExecutionId>,
    pub(super) delayed: BTreeSet<(Timestamp, ExecutionId)>,
    pub(super) leases: BTreeSet<(Timestamp, ExecutionId)>,
    pub(super) timeouts: BTreeSet<(Timestamp, ExecutionId)>,
    pub(super) deadlines: BTreeSet<(Timestamp, ExecutionId)>,
    pub(super) terminal: BTreeSet<(Timestamp, RetentionItem)>,
    /// Pending completions by record sequence (oldest first).
    pub(super) completions: BTreeMap<u64, CompletionEvent>,
    pub(super) completion_seq: HashMap<ExecutionId, u64>,
}

/// Position in a lane's ready queue: priority descending, then FIFO.
pub(super) type ReadyKey = (i32, u64, ExecutionId);

/// Everything the in-memory backend stores.
#[derive(Debug)]
pub(super) struct State {
    pub(super) config: PartitionConfig,
    pub(super) inline_cascade_limit: u32,
    pub(super) executions: HashMap<ExecutionId, Exec>,
    pub(super) flows: HashMap<FlowId, Flow>,
    pub(super) partitions: Vec<PartitionIndex>,
    pub(super) ready: HashMap<Lane, BTreeSet<ReadyKey>>,
    /// Source of FIFO and completion sequences.
    pub(super) seq: u64,
    pub(super) instances: BTreeMap<InstanceId, Timestamp>,
    pub(super) owners: BTreeMap<Partition, (InstanceId, Timestamp)>,
    /// Completions to cascade before the current operation returns.
    pub(super) inline_queue: VecDeque<ExecutionId>,
    /// Hints raised by the current operation, sent once the lock is released.
    pub(super) hints: Vec<Hint>,
}

impl State {
    pub(super) fn new(config: PartitionConfig, inline_cascade_limit: u32) -> Self {
        State {
            config,
            inline_cascade_limit,
            executions: HashMap::new(),
            flows: HashMap::new(),
            partitions: (0..config.partitions)
                .map(|_| PartitionIndex::default())
                .collect(),
            ready: HashMap::new(),
            seq: 0,
            instances: BTreeMap::new(),
            owners: BTreeMap::new(),
            inline_queue: VecDeque::new(),
            hints: Vec::new(),
        }
    }

    pub(super) fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    pub(super) fn partition_mut(&mut self, partition: Partition) -> &mut PartitionIndex {
        &mut self.partitions[usize::from(partition.index())]
    }

    pub(super) fn partition(&self, partition: Partition) -> &PartitionIndex {
        &self.partitions[usize::from(partition.index())]
    }

    /// Checks an id against the partition config and looks it up.
    pub(super) fn exec(&self, id: &ExecutionId) -> Result<&Exec, EngineError> {
        id.check(&self.config)?;
        self.executions
            .get(id)
            .ok_or_else(|| EngineError::execution_not_found(id))
    }

    /// Like [`State::exec`], mutable, for ids the state itself holds (edges, indexes): a miss there
    /// is an internal inconsistency.
    pub(super) fn known_mut(&mut self, id: &ExecutionId) -> &mut Exec {
        self.executions
            .get_mut(id)
            .unwrap_or_else(|| panic!("memory backend invariant: indexed execution {id} exists"))
    }

    pub(super) fn known(&self, id: &ExecutionId) -> &Exec {
        self.executions
            .get(id)
            .unwrap_or_else(|| panic!("memory backend invariant: indexed execution {id} exists"))
    }

    pub(super) fn flow(&self, id: &FlowId) -> Result<&Flow, EngineError> {
        self.flows
            .get(id)
            .ok_or_else(|| EngineError::flow_not_found(id))
    }

    pub(super) fn known_flow_mut(&mut self, id: &FlowId) -> &mut Flow {
        self.flows
            .get_mut(id)
            .unwrap_or_else(|| panic!("memory backend invariant: member's flow {id} exists"))
    }

    /// Stores a new execution in `initial` state (blocked, or about to be made eligible) and
    /// indexes its deadline.
    pub(super) fn insert_execution(&mut self, exec: Exec) {
        let id = exec.id;
        let deadline = exec.deadline_at;
        let partition = self.partition_mut(id.partition());
        partition.executions.insert(id);
        if let Some(at) = deadline {
            partition.deadlines.insert((at, id));
        }
        self.executions.insert(id, exec);
    }

    /// Removes an execution from the indexes of its current (non-terminal) state.
    fn leave_state_indexes(&mut self, id: &ExecutionId) {
        let exec = self.known(id);
        let (state, lane, priority, seq) = (
            exec.state,
            exec.spec.lane.clone(),
            exec.spec.priority,
            exec.ready_seq,
        );
        let available_at = exec.available_at;
        let lease_expiry = exec.lease.as_ref().map(|l| l.expires_at);
        let attempt_deadline = exec.attempt_deadline;
        let partition = id.partition();
        match state {
            ExecutionState::Ready => {
                if let Some(queue) = self.ready.get_mut(&lane) {
                    queue.remove(&(-priority, seq, *id));
                    if queue.is_empty() {
                        self.ready.remove(&lane);
                    }
                }
            }
            ExecutionState::Delayed => {
                if let Some(at) = available_at {
                    self.partition_mut(partition).delayed.remove(&(at, *id));
                }
            }
            ExecutionState::Running => {
                let index = self.partition_mut(partition);
                if let Some(at) = lease_expiry {
                    index.leases.remove(&(at, *id));
                }
                if let Some(at) = attempt_deadline {
                    index.timeouts.remove(&(at, *id));
                }
            }
            _ => {}
        }
    }

    /// `→ ready`, at the back of its priority's FIFO.
    pub(super) fn make_ready(&mut self, id: &ExecutionId) {
        self.leave_state_indexes(id);
        let seq = self.next_seq();
        let exec = self.known_mut(id);
        exec.state = ExecutionState::Ready;
        exec.available_at = None;
        exec.ready_seq = seq;
        let key = (-exec.spec.priority, seq, *id);
        let lane = exec.spec.lane.clone();
        let queue = self.ready.entry(lane.clone()).or_default();
        queue.insert(key);
        // Only the first ready execution of an idle lane wakes anyone: a busy lane's workers
        // are already claiming, and a hint per execution would flood every subscriber.
        if queue.len() == 1 {
            self.hints.push(Hint::WorkReady {
                partition: id.partition(),
                lane,
            });
        }
    }

    /// `→ delayed` until `at`.
    pub(super) fn make_delayed(&mut self, id: &ExecutionId, at: Timestamp) {
        self.leave_state_indexes(id);
        let exec = self.known_mut(id);
        exec.state = ExecutionState::Delayed;
        exec.available_at = Some(at);
        self.partition_mut(id.partition()).delayed.insert((at, *id));
    }

    /// A new or newly satisfied execution becomes claimable: `ready`, or `delayed` by its own
    /// delay. A member of a flow whose cancel was requested is cancelled instead.
    pub(super) fn make_eligible(&mut self, id: &ExecutionId, now: Timestamp) {
        if self.cancel_requested_for(id) {
            self.terminate(id, EndReason::Cancelled(CancelSource::Flow), now);
            return;
        }
        let delay = self.known(id).spec.delay;
        if delay.is_zero() {
            self.make_ready(id);
        } else {
            self.make_delayed(id, now.saturating_add(delay));
        }
    }

    fn cancel_requested_for(&self, id: &ExecutionId) -> bool {
        self.known(id)
            .flow_id()
            .and_then(|flow| self.flows.get(&flow))
            .is_some_and(|flow| flow.cancel_requested)
    }

    /// Ends the running attempt: records its outcome, drops the lease and its indexes.
    pub(super) fn end_attempt(
        &mut self,
        id: &ExecutionId,
        outcome: AttemptOutcome,
        failure: Option<Failure>,
        now: Timestamp,
    ) {
        self.leave_state_indexes(id);
        let exec = self.known_mut(id);
        exec.lease = None;
        exec.attempt_deadline = None;
        if let Some(attempt) = exec.attempts.last_mut()
            && attempt.outcome.is_none()
        {
            attempt.ended_at = Some(now);
            attempt.outcome = Some(outcome);
            attempt.failure = failure;
        }
    }

    /// A failed attempt (worker failure, lease expiry, attempt timeout): retry after the
    /// policy's backoff if allowed, otherwise `failed`. The attempt must already be ended.
    pub(super) fn after_failed_attempt(
        &mut self,
        id: &ExecutionId,
        retryable: bool,
        now: Timestamp,
        random: f64,
    ) -> FailDisposition {
        let exec = self.known(id);
        let attempts = exec.attempt_count();
        if retryable && exec.spec.retry.has_attempts_left(attempts) {
            if self.cancel_requested_for(id) {
                self.terminate(id, EndReason::Cancelled(CancelSource::Flow), now);
                return FailDisposition::Failed;
            }
            let delay = exec.spec.retry.delay_after(attempts, random);
            let available_at = now.saturating_add(delay);
            if delay.is_zero() {
                self.make_ready(id);
            } else {
                self.make_delayed(id, available_at);
            }
            FailDisposition::RetryScheduled { available_at }
        } else {
            let reason = if retryable {
                EndReason::AttemptsExhausted
            } else {
                EndReason::NonRetryable
            };
            self.terminate(id, reason, now);
            FailDisposition::Failed
        }
    }

    /// Cancels an unfinished execution; a running one loses its lease (epoch bump).
    pub(super) fn cancel(&mut self, id: &ExecutionId, source: CancelSource, now: Timestamp) {
        if self.known(id).state == ExecutionState::Running {
            self.end_attempt(id, AttemptOutcome::Cancelled, None, now);
            self.known_mut(id).epoch += 1;
        }
        self.terminate(id, EndReason::Cancelled(source), now);
    }

    /// Expires an unfinished execution whose deadline passed.
    pub(super) fn expire(&mut self, id: &ExecutionId, now: Timestamp) {
        if self.known(id).state == ExecutionState::Running {
            self.end_attempt(id, AttemptOutcome::Expired, None, now);
            self.known_mut(id).epoch += 1;
        }
        self.terminate(id, EndReason::DeadlineExceeded, now);
    }

    /// `→ terminal`: leaves every index, and either enters retention (standalone) or counts
    /// towards the flow and records the member's completion (cascaded inline when small).
    pub(super) fn terminate(&mut self, id: &ExecutionId, reason: EndReason, now: Timestamp) {
        self.leave_state_indexes(id);
        let exec = self.known_mut(id);
        debug_assert!(!exec.state.is_terminal(), "{id} terminated twice");
        exec.state = reason.state();
        exec.end_reason = Some(reason);
        exec.finished_at = Some(now);
        exec.lease = None;
        exec.attempt_deadline = None;
        exec.available_at = None;
        let deadline = exec.deadline_at;
        let flow_id = exec.flow_id();
        let outcome = exec.state;
        let partition = id.partition();
        if let Some(at) = deadline {
            self.partition_mut(partition).deadlines.remove(&(at, *id));
        }
        let Some(flow_id) = flow_id else {
            self.partition_mut(partition)
                .terminal
                .insert((now, RetentionItem::Execution(*id)));
            return;
        };

        let flow = self.known_flow_mut(&flow_id);
        flow.counts.terminal += 1;
        if reason.fails_flow() {
            flow.counts.failing += 1;
        }
        let out_degree = flow.outgoing.get(id).map_or(0, Vec::len);
        let finished = flow.counts.terminal == flow.counts.total;
        if finished {
            flow.state = FlowState::finished(flow.cancel_requested, flow.counts.failing > 0);
            flow.finished_at = Some(now);
        }

        let seq = self.next_seq();
        let index = self.partition_mut(partition);
        index.completions.insert(
            seq,
            CompletionEvent {
                execution_id: *id,
                flow_id,
                outcome,
                recorded_at: now,
            },
        );
        index.completion_seq.insert(*id, seq);
        if finished {
            index.terminal.insert((now, RetentionItem::Flow(flow_id)));
            self.hints.push(Hint::FlowFinished { flow_id });
        }
        let limit = usize::try_from(self.inline_cascade_limit).unwrap_or(usize::MAX);
        if self.inline_cascade_limit > 0 && out_degree <= limit {
            self.inline_queue.push_back(*id);
        } else {
            self.hints.push(Hint::CompletionPending { partition });
        }
    }

    /// Hints raised so far, to send after the lock is released.
    pub(super) fn take_hints(&mut self) -> Vec<Hint> {
        std::mem::take(&mut self.hints)
    }
}
