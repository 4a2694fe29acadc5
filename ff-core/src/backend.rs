//! The `EngineBackend` trait: the one contract every backend implements (DESIGN §5).
//!
//! The trait is object-safe and used as `Arc<dyn EngineBackend>`. Every method validates its
//! input first and answers bad input with [`EngineError::Validation`] (or `Conflict`,
//! `NotFound`) *without changing anything*. Every state change is atomic: it happens entirely
//! or not at all, together with every index that depends on it (one Valkey FCALL, one Postgres
//! transaction, one lock in memory). All time arithmetic uses the backend's clock.
//!
//! # Fencing
//!
//! A claim mints a lease ([`Fence`]: execution, lease id, epoch) and moves the execution to a
//! new epoch. Worker writes (`renew`, `complete`, `fail`, `progress`) succeed only while that
//! lease is current and unexpired by the backend clock, and otherwise return
//! [`EngineError::Fenced`] carrying the current status. Lease expiry, attempt timeout, cancel
//! and deadline expiry of a running execution bump the epoch, so a late worker is fenced out
//! even before anyone claims again. Repeating a terminal call (`complete`, `fail`) with the
//! fence that already ended the attempt the same way succeeds without changing anything, so a
//! worker whose reply was lost can retry safely; ending it the *other* way returns
//! [`EngineError::NotActive`].
//!
//! # Partitions and ids
//!
//! Every id handed to a backend is checked against its [`PartitionConfig`]: an execution id
//! naming a partition the deployment does not have is a `Validation` error on field
//! `execution_id`, never a panic or a lookup on the wrong partition.
//!
//! # The fence check, step by step
//!
//! For `renew`, `progress`, `complete` and `fail`, in this order:
//!
//! 1. the request is validated and the id checked against the partition config;
//! 2. the execution must exist (`NotFound`);
//! 3. `fence.epoch` must equal the current epoch (`Fenced { reason: StaleEpoch }`);
//! 4. `fence.lease_id` must be the lease of the latest attempt (`Fenced { LeaseMismatch }`);
//! 5. if the execution is `running`: its lease must not have expired — it is valid while
//!    `now < lease_expires_at` (`Fenced { LeaseExpired }`) — and the call takes effect;
//! 6. otherwise the call is a repeat: `complete` succeeds unchanged if this attempt
//!    succeeded, `fail` succeeds with the same disposition if this attempt failed (the
//!    execution may since have been promoted from `delayed` to `ready`: the epoch only moves
//!    on the next claim); everything else is `NotActive` with the current status.
//!
//! # Lifecycle details every backend implements the same way
//!
//! - **Ready order**: priority descending, then a FIFO sequence taken when the execution
//!   became ready (creation, promotion, satisfaction, retry). `change_priority` keeps the
//!   sequence.
//! - **Delay**: `spec.delay` counts from when the execution became eligible: creation for
//!   standalone executions and flow roots, satisfaction of the dependency group for other
//!   members. Zero delay means `ready` at once.
//! - **Deadline**: `created_at + spec.deadline`. Past it, the deadline scanner moves any
//!   unfinished execution (blocked ones included) to `expired` (`DeadlineExceeded`), bumping
//!   the epoch of a running one. `claim` never hands out an execution whose deadline has
//!   passed.
//! - **Attempts**: a claim appends an [`crate::AttemptRecord`]; the transition that ends the
//!   attempt sets its `ended_at` and outcome. A worker `fail` records the [`crate::Failure`].
//! - **Failed attempts** (worker `fail`, lease expiry, attempt timeout): with attempts left
//!   and a retryable failure (expiry and timeout are always retryable), the execution goes
//!   `delayed` until `now + retry.delay_after(attempt, random)` (straight to `ready` when that
//!   delay is zero); otherwise `failed` with `NonRetryable` when the worker said so — even on
//!   the last attempt — or `AttemptsExhausted`. Expiry and timeout bump the epoch. In a flow
//!   whose cancel was requested, a failed attempt with attempts left ends the execution
//!   `Cancelled(Flow)` instead of retrying, and `fail` answers `Failed`.
//! - **Cascade**: an edge is satisfied when [`crate::EdgeKind::satisfied_by`] the upstream's
//!   outcome bucket; each group is decided once by [`crate::GroupPolicy::evaluate`].
//!   Satisfied: the node becomes `ready` (or `delayed` by its own delay) if it is still
//!   `blocked` and, with `CancelRemaining`, its unfinished upstreams are cancelled
//!   (`Cancelled(GroupSatisfied)`) whatever the node's own state. Impossible: a `blocked` node
//!   is `skipped` (`DependencyImpossible`). Edges applied after the verdict still count in the
//!   group's `satisfied` / `unsatisfied` (visible in [`crate::GroupSnapshot`]) but change
//!   nothing else. Each edge carries an `applied` mark, which is what makes application
//!   idempotent per edge — including an edge added by `add_nodes` from an upstream whose own
//!   completion is still pending. When one call ends several members (a scan batch,
//!   `cancel_flow`), the order in which their completions cascade is unspecified.
//! - **Data passing**: a claim's `inputs` are read at claim time: one entry per `pass_result`
//!   edge whose upstream has succeeded by then (a `LetRun` upstream finishing after the claim
//!   is not included).
//! - **Flow state**: counters `total`, `terminal` and `failing` ([`crate::EndReason::fails_flow`])
//!   change in the same atomic unit as each member transition; when `terminal == total` the
//!   flow takes [`crate::FlowState::finished`] and its `finished_at`.
//! - **Retention**: a flow's members are never removed on their own, only with their flow.

use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::cascade::{CascadeProgress, CompletionEvent};
use crate::error::EngineError;
use crate::execution::{
    CancelOutcome, ClaimRequest, ClaimedExecution, CompleteRequest, Completed, CreatedExecution,
    ExecutionSpec, FailOutcome, FailRequest, Fence,
};
use crate::flow::{CancelFlowMode, CancelFlowOutcome, CreatedFlow, FlowPatch, FlowSpec};
use crate::hint::HintReceiver;
use crate::id::{ExecutionId, FlowId, InstanceId};
use crate::ownership::{InstanceInfo, PartitionGrant, PartitionOwner};
use crate::partition::{Partition, PartitionConfig};
use crate::scan::{DueSummary, PartitionDue, ScanReport, ScanRequest};
use crate::snapshot::{ExecutionSnapshot, ExecutionSummary, FlowSnapshot, ListQuery, Page};
use crate::time::Timestamp;

/// What a backend supports beyond the required contract. Plain data: tests and the engine
/// read it; every flag defaults to false.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Capabilities {
    /// [`EngineBackend::advance_clock`] moves the backend clock forward (tests of
    /// time-driven behaviour without sleeping). Without it, the call answers
    /// [`EngineError::Unavailable`].
    pub clock_control: bool,
    /// [`EngineBackend::subscribe_hints`] returns a live stream. Without it, the call answers
    /// [`EngineError::Unavailable`] and consumers poll.
    pub hints: bool,
    /// `complete` and `fail` honour `claim_next` (otherwise they always return no next
    /// executions, which is also a valid answer).
    pub claim_next: bool,
    /// Terminal transitions apply the cascade inline when the member's out-degree is at most
    /// this; above it, the completion stays pending for `cascade_completion`. 0 = never inline.
    pub inline_cascade_limit: u32,
}

impl Capabilities {
    /// No optional capability.
    pub const fn none() -> Self {
        Capabilities {
            clock_control: false,
            hints: false,
            claim_next: false,
            inline_cascade_limit: 0,
        }
    }

    /// Sets `clock_control`.
    pub const fn with_clock_control(mut self, on: bool) -> Self {
        self.clock_control = on;
        self
    }

    /// Sets `hints`.
    pub const fn with_hints(mut self, on: bool) -> Self {
        self.hints = on;
        self
    }

    /// Sets `claim_next`.
    pub const fn with_claim_next(mut self, on: bool) -> Self {
        self.claim_next = on;
        self
    }

    /// Sets `inline_cascade_limit`.
    pub const fn with_inline_cascade_limit(mut self, limit: u32) -> Self {
        self.inline_cascade_limit = limit;
        self
    }
}

/// The answer to [`EngineBackend::health`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthReport {
    /// The backend's name.
    pub backend: String,
    /// The server's version, for server backends.
    pub server_version: Option<String>,
    /// The backend clock at the time of the check.
    pub now: Timestamp,
    /// Round-trip time of the check.
    pub latency: Duration,
}

/// The storage and coordination contract of FlowFabric. See the module docs for what holds
/// for every method: validation before any write, atomicity, fencing, the backend clock.
///
/// A wrapper around another backend (metrics, fault injection) must forward *every* method,
/// including those with a default body (`advance_clock`, `subscribe_hints`, `due_summary`):
/// otherwise it silently answers with the default instead of the inner backend.
#[async_trait]
pub trait EngineBackend: Send + Sync + std::fmt::Debug {
    // ---------------------------------------------------------------- meta

    /// A short stable name (`memory`, `valkey`, `postgres`), used in errors and metrics.
    fn name(&self) -> &'static str;

    /// Optional features this backend supports.
    fn capabilities(&self) -> Capabilities;

    /// The deployment's partition config (stored on first start, checked on every start).
    fn partition_config(&self) -> PartitionConfig;

    /// The backend clock.
    async fn now(&self) -> Result<Timestamp, EngineError>;

    /// Moves the backend clock forward by `by` and returns the new time. Only with
    /// [`Capabilities::clock_control`]; otherwise [`EngineError::Unavailable`].
    async fn advance_clock(&self, by: Duration) -> Result<Timestamp, EngineError> {
        let _ = by;
        Err(EngineError::Unavailable {
            operation: "advance_clock",
            backend: self.name(),
        })
    }

    /// Checks that the backend is reachable and answers.
    async fn health(&self) -> Result<HealthReport, EngineError>;

    /// Subscribes to wake-up hints. Only with [`Capabilities::hints`]; otherwise
    /// [`EngineError::Unavailable`]. Hints are lossy; see [`crate::hint`].
    async fn subscribe_hints(&self) -> Result<HintReceiver, EngineError> {
        Err(EngineError::Unavailable {
            operation: "subscribe_hints",
            backend: self.name(),
        })
    }

    // ---------------------------------------------------------------- submission

    /// Creates a standalone execution: `ready`, or `delayed` when `spec.delay` is non-zero.
    ///
    /// With an idempotency key, a second call with the same key returns the first execution
    /// (`created: false`) unchanged, whatever the rest of the spec says, for as long as
    /// retention keeps it.
    ///
    /// Errors: `Validation` for a spec outside the limits.
    async fn create_execution(&self, spec: &ExecutionSpec)
    -> Result<CreatedExecution, EngineError>;

    /// Creates a flow with its whole graph in one atomic call: every node without incoming
    /// edges is `ready` (or `delayed`), every other node `blocked`; no node is claimable before
    /// its edges exist.
    ///
    /// Idempotent on `spec.id`: if the flow exists, returns its nodes with `created: false`
    /// and changes nothing.
    ///
    /// Errors: `Validation` (limits, unknown node in an edge, self-edge, quorum out of range,
    /// empty flow), `Conflict` (cycle, duplicate node key, duplicate edge); see
    /// [`FlowSpec::validate`].
    async fn create_flow(&self, spec: &FlowSpec) -> Result<CreatedFlow, EngineError>;

    /// Adds nodes and edges to an open flow in one atomic call (dynamic fan-out). Edges must
    /// end at nodes of the patch; they may start at existing nodes, and an edge from an
    /// existing node that already finished is applied within the call.
    ///
    /// Idempotent: if every node key of the patch already exists in the flow, returns those
    /// nodes with `created: false` and changes nothing.
    ///
    /// Errors: `NotFound` (flow, or an existing upstream node key), `Conflict::DuplicateNode`
    /// (some but not all keys exist), `Conflict::FlowNotOpen` (the flow finished or a cancel
    /// was requested), and every error of [`FlowPatch::validate`].
    async fn add_nodes(&self, flow: &FlowId, patch: &FlowPatch)
    -> Result<CreatedFlow, EngineError>;

    // ---------------------------------------------------------------- worker

    /// Leases up to `request.max` ready executions of `request.lane` whose required
    /// capabilities are a subset of the worker's, in one call. Each claim starts attempt
    /// `n + 1`, bumps the epoch and mints a lease expiring `lease_ttl` from now (backend
    /// clock). Never blocks: returns what is ready now, possibly nothing.
    ///
    /// Order: within a partition, higher priority first, then the one that became ready first.
    /// Across partitions, ordering is best-effort (a backend visits partitions that have ready
    /// work; it does not merge them).
    ///
    /// A delayed execution whose time has passed may be promoted and claimed in the same call.
    ///
    /// Errors: `Validation` (batch size 0 or above the limit, lease TTL out of range).
    async fn claim(&self, request: &ClaimRequest) -> Result<Vec<ClaimedExecution>, EngineError>;

    /// Extends a lease to `ttl` from now (backend clock) and returns the new expiry.
    ///
    /// Errors: `Fenced` (stale epoch, other lease, or already expired), `NotActive` (the
    /// execution is no longer running), `NotFound`, `Validation` (TTL out of range).
    async fn renew(&self, fence: &Fence, ttl: Duration) -> Result<Timestamp, EngineError>;

    /// `running → succeeded` with an optional result; for a flow member, records its
    /// completion (and may apply the cascade inline). With `claim_next`, also claims the
    /// worker's next executions in the same call (a backend may look only where it is cheap,
    /// e.g. on the same partition, and return fewer than asked).
    ///
    /// Idempotent: repeating it with the fence that already completed the execution succeeds
    /// and changes nothing (it may still claim next executions).
    ///
    /// Errors: `Fenced` (not the current lease, or it expired), `NotActive` (the same lease
    /// already ended the attempt another way, e.g. `fail`), `NotFound`, `Validation`.
    async fn complete(&self, request: &CompleteRequest) -> Result<Completed, EngineError>;

    /// Fails the current attempt. With attempts left and a retryable failure, the execution
    /// goes `delayed` for the policy's backoff; otherwise it is `failed` (and, for a flow
    /// member, its completion is recorded). `claim_next` as for [`EngineBackend::complete`].
    ///
    /// Idempotent: repeating it with the fence whose attempt it already failed succeeds with
    /// the same disposition and changes nothing.
    ///
    /// Errors: as for [`EngineBackend::complete`].
    async fn fail(&self, request: &FailRequest) -> Result<FailOutcome, EngineError>;

    /// Records the worker's progress (at most [`crate::limits::MAX_PROGRESS_BYTES`]) on the
    /// execution; visible in [`EngineBackend::describe_execution`]. Does not extend the lease.
    ///
    /// Errors: as for [`EngineBackend::renew`].
    async fn progress(&self, fence: &Fence, progress: &[u8]) -> Result<(), EngineError>;

    // ---------------------------------------------------------------- control

    /// Cancels an unfinished execution (`Cancelled(User)`): a running one is fenced out (epoch
    /// bump); a flow member's completion is recorded and cascades like any other. An execution
    /// that already ended is left alone and reported as [`CancelOutcome::AlreadyTerminal`].
    ///
    /// Errors: `NotFound`, `Validation`.
    async fn cancel_execution(&self, id: &ExecutionId) -> Result<CancelOutcome, EngineError>;

    /// Cancels a flow: marks it cancel-requested (it accepts no new nodes and finishes as
    /// `cancelled`), and cancels its unfinished members (`Cancelled(Flow)`) — all of them with
    /// [`CancelFlowMode::CancelAll`], those that have not started with
    /// [`CancelFlowMode::CancelPending`]. A backend may cancel a large flow's members in the
    /// cancel backlog ([`crate::ScanKind::CancelBacklog`]); none of them can be claimed
    /// meanwhile. A running member that later fails with attempts left is cancelled instead of
    /// retried. Cancelling a flow that already finished changes nothing. Repeating it is
    /// harmless.
    ///
    /// Errors: `NotFound`.
    async fn cancel_flow(
        &self,
        flow: &FlowId,
        mode: CancelFlowMode,
    ) -> Result<CancelFlowOutcome, EngineError>;

    /// Changes the priority of an unfinished execution; a ready one is re-queued at its new
    /// priority (keeping its place in time).
    ///
    /// Errors: `NotActive` (terminal), `NotFound`, `Validation` (priority out of range).
    async fn change_priority(&self, id: &ExecutionId, priority: i32) -> Result<(), EngineError>;

    // ---------------------------------------------------------------- dispatch

    /// Pending completions of a partition, oldest first, at most `limit`
    /// (`1..=`[`crate::limits::MAX_SCAN_BATCH`]).
    async fn pending_completions(
        &self,
        partition: Partition,
        limit: u32,
    ) -> Result<Vec<CompletionEvent>, EngineError>;

    /// Applies a completion's outgoing edges: each exactly once in effect, in bounded chunks
    /// (call again while `finished` is false), retiring the event after the last one. For each
    /// downstream whose group becomes satisfied: `ready` (or `delayed`), plus cancelling
    /// unfinished upstreams for `CancelRemaining`; impossible: `skipped`, whose own completion
    /// is recorded and cascades further. Updates the flow's counters and state in the same
    /// atomic unit.
    ///
    /// Idempotent: an event already retired (or never recorded) is a no-op returning
    /// `{ edges_applied: 0, finished: true }`.
    async fn cascade_completion(
        &self,
        event: &CompletionEvent,
    ) -> Result<CascadeProgress, EngineError>;

    // ---------------------------------------------------------------- scanners

    /// Runs one scanner step on one partition: up to `request.limit` due items of
    /// `request.kind`, each atomically, by the backend clock. See [`crate::scan`].
    async fn scan(&self, request: &ScanRequest) -> Result<ScanReport, EngineError>;

    /// When each time-driven index of each of `partitions` next has work, with the backend
    /// clock's `now`, in one call: scanners then call [`EngineBackend::scan`] only where
    /// something is due, so an idle engine costs a few calls per second instead of one per
    /// partition and scanner. Read-only.
    ///
    /// Each time is at most the true earliest due time of its index, `None` only for an empty
    /// index (see [`PartitionDue`]). The default answers "everything may be due now" for
    /// every partition — correct, and as costly as scanning everything.
    ///
    /// Errors: `Validation` for a partition outside the config.
    async fn due_summary(&self, partitions: &[Partition]) -> Result<DueSummary, EngineError> {
        let config = self.partition_config();
        for partition in partitions {
            config.check(*partition)?;
        }
        let now = self.now().await?;
        Ok(DueSummary {
            now,
            partitions: partitions
                .iter()
                .map(|&p| PartitionDue::everything_at(p, now))
                .collect(),
        })
    }

    // ---------------------------------------------------------------- coordination

    /// Registers (or keeps alive) an engine instance for `ttl` and returns every live
    /// instance, the caller included, sorted by id.
    async fn heartbeat_instance(
        &self,
        instance: &InstanceId,
        ttl: Duration,
    ) -> Result<Vec<InstanceInfo>, EngineError>;

    /// Deregisters an instance and releases its partitions (graceful shutdown).
    async fn remove_instance(&self, instance: &InstanceId) -> Result<(), EngineError>;

    /// Tries to own each partition for `ttl`: granted when it is free, expired, or already the
    /// caller's (renewed); otherwise reports the holder. Atomic per partition.
    async fn acquire_partitions(
        &self,
        instance: &InstanceId,
        partitions: &[Partition],
        ttl: Duration,
    ) -> Result<Vec<PartitionGrant>, EngineError>;

    /// Releases those of `partitions` the caller owns; others are left alone.
    async fn release_partitions(
        &self,
        instance: &InstanceId,
        partitions: &[Partition],
    ) -> Result<(), EngineError>;

    /// Current, unexpired partition owners, by partition.
    async fn partition_owners(&self) -> Result<Vec<PartitionOwner>, EngineError>;

    // ---------------------------------------------------------------- reads

    /// Everything about one execution. Errors: `NotFound`, `Validation`.
    async fn describe_execution(&self, id: &ExecutionId) -> Result<ExecutionSnapshot, EngineError>;

    /// Everything about one flow. Errors: `NotFound`.
    async fn describe_flow(&self, id: &FlowId) -> Result<FlowSnapshot, EngineError>;

    /// Executions of one partition in one state (optionally one lane), in a stable order,
    /// a page at a time.
    async fn list_executions(
        &self,
        query: &ListQuery,
    ) -> Result<Page<ExecutionSummary>, EngineError>;
}
