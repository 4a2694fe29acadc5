//! The in-memory reference backend (feature `memory`).
//!
//! It states the semantics of DESIGN §3–§5 in the plainest form: all state behind one lock,
//! every operation a single critical section (so trivially atomic), the same indexes a server
//! backend keeps, and every state change through a handful of transition functions
//! (`memory/state.rs`). It is the embedded default of the demo and of tests that need no
//! server, and it passes the same conformance suite as every other backend — in both cascade
//! modes: inline (small out-degrees cascade inside the terminal transition) and deferred
//! (`inline_cascade_limit(0)`: every completion waits for `cascade_completion`).
//!
//! Its clock is controllable ([`MemoryBackendBuilder::frozen_clock`],
//! [`EngineBackend::advance_clock`]), so time-driven behaviour is tested without sleeping.
//!
//! Nothing survives the process: it is a reference and an embedded default, not a durable
//! store.

mod cascade;
mod clock;
mod control;
mod ownership;
mod read;
mod scan;
mod state;
mod worker;

#[cfg(test)]
mod tests;

use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::sync::broadcast;

use crate::backend::{Capabilities, EngineBackend, HealthReport};
use crate::cascade::{CascadeProgress, CompletionEvent};
use crate::error::EngineError;
use crate::execution::{
    CancelOutcome, ClaimRequest, ClaimedExecution, CompleteRequest, Completed, CreatedExecution,
    ExecutionSpec, FailOutcome, FailRequest, Fence,
};
use crate::flow::{CancelFlowMode, CancelFlowOutcome, CreatedFlow, FlowPatch, FlowSpec};
use crate::hint::{Hint, HintReceiver};
use crate::id::{ExecutionId, FlowId, InstanceId};
use crate::limits;
use crate::ownership::{InstanceInfo, PartitionGrant, PartitionOwner};
use crate::partition::{Partition, PartitionConfig};
use crate::scan::{DueSummary, ScanReport, ScanRequest};
use crate::snapshot::{ExecutionSnapshot, ExecutionSummary, FlowSnapshot, ListQuery, Page};
use crate::time::Timestamp;

use self::cascade::CASCADE_CHUNK;
use self::clock::MemoryClock;
use self::state::State;

/// The default [`Capabilities::inline_cascade_limit`] of the in-memory backend.
pub const DEFAULT_INLINE_CASCADE_LIMIT: u32 = 64;

/// How many hints a slow subscriber may fall behind before it sees [`Hint::Lagged`].
const HINT_BUFFER: usize = 4_096;

/// The in-memory reference backend. Cheap to create; share it as `Arc<dyn EngineBackend>`.
#[derive(Debug)]
pub struct MemoryBackend {
    state: Mutex<State>,
    clock: MemoryClock,
    config: PartitionConfig,
    inline_cascade_limit: u32,
    hints: broadcast::Sender<Hint>,
}

/// Builds a [`MemoryBackend`].
#[derive(Debug)]
pub struct MemoryBackendBuilder {
    config: PartitionConfig,
    inline_cascade_limit: u32,
    clock: MemoryClock,
}

impl MemoryBackendBuilder {
    /// The partition config (default 256 partitions).
    pub fn partitions(mut self, config: PartitionConfig) -> Self {
        self.config = config;
        self
    }

    /// Cascade completions inline when a member has at most `limit` outgoing edges; 0 leaves
    /// every completion pending for `cascade_completion` (default
    /// [`DEFAULT_INLINE_CASCADE_LIMIT`]).
    pub fn inline_cascade_limit(mut self, limit: u32) -> Self {
        self.inline_cascade_limit = limit;
        self
    }

    /// Uses a clock frozen at `at`, moved only by [`EngineBackend::advance_clock`]. The default
    /// is the host clock (plus whatever `advance_clock` added).
    pub fn frozen_clock(mut self, at: Timestamp) -> Self {
        self.clock = MemoryClock::frozen(at);
        self
    }

    /// The backend.
    pub fn build(self) -> MemoryBackend {
        let (hints, _) = broadcast::channel(HINT_BUFFER);
        MemoryBackend {
            state: Mutex::new(State::new(self.config, self.inline_cascade_limit)),
            clock: self.clock,
            config: self.config,
            inline_cascade_limit: self.inline_cascade_limit,
            hints,
        }
    }
}

impl Default for MemoryBackend {
    fn default() -> Self {
        MemoryBackend::new()
    }
}

impl MemoryBackend {
    /// A backend with 256 partitions, the host clock and inline cascades.
    pub fn new() -> Self {
        MemoryBackend::builder().build()
    }

    /// A builder with the defaults of [`MemoryBackend::new`].
    pub fn builder() -> MemoryBackendBuilder {
        MemoryBackendBuilder {
            config: PartitionConfig::default(),
            inline_cascade_limit: DEFAULT_INLINE_CASCADE_LIMIT,
            clock: MemoryClock::system(),
        }
    }

    /// Runs `op` on the state under the lock at the current backend time, then sends the hints
    /// it raised. A poisoned lock (a panic inside an operation — a bug) is recovered rather
    /// than turned into a panic for every later caller.
    fn with_state<T>(&self, op: impl FnOnce(&mut State, Timestamp) -> T) -> T {
        let mut state = self.lock();
        let now = self.clock.now();
        let result = op(&mut state, now);
        let hints = state.take_hints();
        drop(state);
        for hint in hints {
            // No subscriber is fine: hints are optional.
            let _ = self.hints.send(hint);
        }
        result
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[async_trait]
impl EngineBackend for MemoryBackend {
    fn name(&self) -> &'static str {
        "memory"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::none()
            .with_clock_control(true)
            .with_hints(true)
            .with_claim_next(true)
            .with_inline_cascade_limit(self.inline_cascade_limit)
    }

    fn partition_config(&self) -> PartitionConfig {
        self.config
    }

    async fn now(&self) -> Result<Timestamp, EngineError> {
        Ok(self.clock.now())
    }

    async fn advance_clock(&self, by: Duration) -> Result<Timestamp, EngineError> {
        Ok(self.clock.advance(by))
    }

    async fn health(&self) -> Result<HealthReport, EngineError> {
        let started = Instant::now();
        drop(self.lock());
        Ok(HealthReport {
            backend: self.name().to_string(),
            server_version: None,
            now: self.clock.now(),
            latency: started.elapsed(),
        })
    }

    async fn subscribe_hints(&self) -> Result<HintReceiver, EngineError> {
        Ok(HintReceiver::new(self.hints.subscribe()))
    }

    async fn create_execution(
        &self,
        spec: &ExecutionSpec,
    ) -> Result<CreatedExecution, EngineError> {
        self.with_state(|state, now| state.create_execution(spec, now))
    }

    async fn create_flow(&self, spec: &FlowSpec) -> Result<CreatedFlow, EngineError> {
        self.with_state(|state, now| {
            let created = state.create_flow(spec, now)?;
            state.drain_inline(now);
            Ok(created)
        })
    }

    async fn add_nodes(
        &self,
        flow: &FlowId,
        patch: &FlowPatch,
    ) -> Result<CreatedFlow, EngineError> {
        self.with_state(|state, now| {
            let created = state.add_nodes(flow, patch, now)?;
            state.drain_inline(now);
            Ok(created)
        })
    }

    async fn claim(&self, request: &ClaimRequest) -> Result<Vec<ClaimedExecution>, EngineError> {
        self.with_state(|state, now| {
            let claimed = state.claim(request, now)?;
            state.drain_inline(now);
            Ok(claimed)
        })
    }

    async fn renew(&self, fence: &Fence, ttl: Duration) -> Result<Timestamp, EngineError> {
        self.with_state(|state, now| state.renew(fence, ttl, now))
    }

    async fn complete(&self, request: &CompleteRequest) -> Result<Completed, EngineError> {
        self.with_state(|state, now| state.complete(request, now))
    }

    async fn fail(&self, request: &FailRequest) -> Result<FailOutcome, EngineError> {
        let random = rand::random::<f64>();
        self.with_state(|state, now| state.fail(request, now, random))
    }

    async fn progress(&self, fence: &Fence, progress: &[u8]) -> Result<(), EngineError> {
        self.with_state(|state, now| state.progress(fence, progress, now))
    }

    async fn cancel_execution(&self, id: &ExecutionId) -> Result<CancelOutcome, EngineError> {
        self.with_state(|state, now| state.cancel_execution(id, now))
    }

    async fn cancel_flow(
        &self,
        flow: &FlowId,
        mode: CancelFlowMode,
    ) -> Result<CancelFlowOutcome, EngineError> {
        self.with_state(|state, now| state.cancel_flow(flow, mode, now))
    }

    async fn change_priority(&self, id: &ExecutionId, priority: i32) -> Result<(), EngineError> {
        self.with_state(|state, _| state.change_priority(id, priority))
    }

    async fn pending_completions(
        &self,
        partition: Partition,
        limit: u32,
    ) -> Result<Vec<CompletionEvent>, EngineError> {
        self.config.check(partition)?;
        limits::check_count("limit", limit, limits::MAX_SCAN_BATCH)?;
        Ok(self.with_state(|state, _| {
            state
                .partition(partition)
                .completions
                .values()
                .take(limit as usize)
                .copied()
                .collect()
        }))
    }

    async fn cascade_completion(
        &self,
        event: &CompletionEvent,
    ) -> Result<CascadeProgress, EngineError> {
        event.execution_id.check(&self.config)?;
        Ok(self.with_state(|state, now| {
            let progress = state.cascade(&event.execution_id, CASCADE_CHUNK, now);
            state.drain_inline(now);
            progress
        }))
    }

    async fn scan(&self, request: &ScanRequest) -> Result<ScanReport, EngineError> {
        self.with_state(|state, now| state.scan(request, now, &mut rand::random::<f64>))
    }

    async fn due_summary(&self, partitions: &[Partition]) -> Result<DueSummary, EngineError> {
        self.with_state(|state, now| state.due_summary(partitions, now))
    }

    async fn heartbeat_instance(
        &self,
        instance: &InstanceId,
        ttl: Duration,
    ) -> Result<Vec<InstanceInfo>, EngineError> {
        self.with_state(|state, now| state.heartbeat_instance(instance, ttl, now))
    }

    async fn remove_instance(&self, instance: &InstanceId) -> Result<(), EngineError> {
        self.with_state(|state, _| state.remove_instance(instance));
        Ok(())
    }

    async fn acquire_partitions(
        &self,
        instance: &InstanceId,
        partitions: &[Partition],
        ttl: Duration,
    ) -> Result<Vec<PartitionGrant>, EngineError> {
        self.with_state(|state, now| state.acquire_partitions(instance, partitions, ttl, now))
    }

    async fn release_partitions(
        &self,
        instance: &InstanceId,
        partitions: &[Partition],
    ) -> Result<(), EngineError> {
        self.with_state(|state, _| state.release_partitions(instance, partitions))
    }

    async fn partition_owners(&self) -> Result<Vec<PartitionOwner>, EngineError> {
        Ok(self.with_state(|state, now| state.partition_owners(now)))
    }

    async fn describe_execution(&self, id: &ExecutionId) -> Result<ExecutionSnapshot, EngineError> {
        self.with_state(|state, _| state.describe_execution(id))
    }

    async fn describe_flow(&self, id: &FlowId) -> Result<FlowSnapshot, EngineError> {
        self.with_state(|state, _| state.describe_flow(id))
    }

    async fn list_executions(
        &self,
        query: &ListQuery,
    ) -> Result<Page<ExecutionSummary>, EngineError> {
        self.with_state(|state, _| state.list_executions(query))
    }
}
