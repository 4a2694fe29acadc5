//! A fault injector around the real in-memory backend: delegates every method, counts the
//! scanner calls, and panics where a test arms it. Not a mock: every call that does not panic is the real backend's.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use ff_core::memory::MemoryBackend;
use ff_core::*;

#[derive(Debug, Default)]
pub(crate) struct Faults {
    /// `cascade_completion` panics for this execution's completion.
    pub(crate) cascade: Mutex<Option<ExecutionId>>,
    /// `scan` panics for this partition and scanner kind.
    pub(crate) scan: Mutex<Option<(Partition, ScanKind)>>,
    /// `subscribe_hints` panics this many more times.
    pub(crate) subscribe_panics: AtomicU32,
    /// `scan` calls so far.
    pub(crate) scans: AtomicU32,
    /// `due_summary` calls so far.
    pub(crate) due_summaries: AtomicU32,
}

#[derive(Debug)]
pub(crate) struct Faulty {
    pub(crate) inner: MemoryBackend,
    pub(crate) faults: Faults,
}

impl Faulty {
    pub(crate) fn new(inner: MemoryBackend) -> Self {
        Faulty {
            inner,
            faults: Faults::default(),
        }
    }
}

#[async_trait]
impl EngineBackend for Faulty {
    fn name(&self) -> &'static str {
        self.inner.name()
    }
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
    fn partition_config(&self) -> PartitionConfig {
        self.inner.partition_config()
    }
    async fn now(&self) -> Result<Timestamp, EngineError> {
        self.inner.now().await
    }
    async fn advance_clock(&self, by: Duration) -> Result<Timestamp, EngineError> {
        self.inner.advance_clock(by).await
    }
    async fn health(&self) -> Result<HealthReport, EngineError> {
        self.inner.health().await
    }
    async fn subscribe_hints(&self) -> Result<HintReceiver, EngineError> {
        let armed = self
            .faults
            .subscribe_panics
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if armed {
            panic!("injected: subscribe_hints panics");
        }
        self.inner.subscribe_hints().await
    }
    async fn create_execution(
        &self,
        spec: &ExecutionSpec,
    ) -> Result<CreatedExecution, EngineError> {
        self.inner.create_execution(spec).await
    }
    async fn create_flow(&self, spec: &FlowSpec) -> Result<CreatedFlow, EngineError> {
        self.inner.create_flow(spec).await
    }
    async fn add_nodes(
        &self,
        flow: &FlowId,
        patch: &FlowPatch,
    ) -> Result<CreatedFlow, EngineError> {
        self.inner.add_nodes(flow, patch).await
    }
    async fn claim(&self, request: &ClaimRequest) -> Result<Vec<ClaimedExecution>, EngineError> {
        self.inner.claim(request).await
    }
    async fn renew(&self, fence: &Fence, ttl: Duration) -> Result<Timestamp, EngineError> {
        self.inner.renew(fence, ttl).await
    }
    async fn complete(&self, request: &CompleteRequest) -> Result<Completed, EngineError> {
        self.inner.complete(request).await
    }
    async fn fail(&self, request: &FailRequest) -> Result<FailOutcome, EngineError> {
        self.inner.fail(request).await
    }
    async fn progress(&self, fence: &Fence, progress: &[u8]) -> Result<(), EngineError> {
        self.inner.progress(fence, progress).await
    }
    async fn cancel_execution(&self, id: &ExecutionId) -> Result<CancelOutcome, EngineError> {
        self.inner.cancel_execution(id).await
    }
    async fn cancel_flow(
        &self,
        flow: &FlowId,
        mode: CancelFlowMode,
    ) -> Result<CancelFlowOutcome, EngineError> {
        self.inner.cancel_flow(flow, mode).await
    }
    async fn change_priority(&self, id: &ExecutionId, priority: i32) -> Result<(), EngineError> {
        self.inner.change_priority(id, priority).await
    }
    async fn pending_completions(
        &self,
        partition: Partition,
        limit: u32,
    ) -> Result<Vec<CompletionEvent>, EngineError> {
        self.inner.pending_completions(partition, limit).await
    }
    async fn cascade_completion(
        &self,
        event: &CompletionEvent,
    ) -> Result<CascadeProgress, EngineError> {
        if *self.faults.cascade.lock().expect("fault lock") == Some(event.execution_id) {
            panic!(
                "injected: cascade_completion panics for {}",
                event.execution_id
            );
        }
        self.inner.cascade_completion(event).await
    }
    async fn scan(&self, request: &ScanRequest) -> Result<ScanReport, EngineError> {
        if *self.faults.scan.lock().expect("fault lock") == Some((request.partition, request.kind))
        {
            panic!(
                "injected: {} scan panics on partition {}",
                request.kind, request.partition
            );
        }
        self.faults.scans.fetch_add(1, Ordering::Relaxed);
        self.inner.scan(request).await
    }
    async fn due_summary(&self, partitions: &[Partition]) -> Result<DueSummary, EngineError> {
        self.faults.due_summaries.fetch_add(1, Ordering::Relaxed);
        self.inner.due_summary(partitions).await
    }
    async fn heartbeat_instance(
        &self,
        instance: &InstanceId,
        ttl: Duration,
    ) -> Result<Vec<InstanceInfo>, EngineError> {
        self.inner.heartbeat_instance(instance, ttl).await
    }
    async fn remove_instance(&self, instance: &InstanceId) -> Result<(), EngineError> {
        self.inner.remove_instance(instance).await
    }
    async fn acquire_partitions(
        &self,
        instance: &InstanceId,
        partitions: &[Partition],
        ttl: Duration,
    ) -> Result<Vec<PartitionGrant>, EngineError> {
        self.inner
            .acquire_partitions(instance, partitions, ttl)
            .await
    }
    async fn release_partitions(
        &self,
        instance: &InstanceId,
        partitions: &[Partition],
    ) -> Result<(), EngineError> {
        self.inner.release_partitions(instance, partitions).await
    }
    async fn partition_owners(&self) -> Result<Vec<PartitionOwner>, EngineError> {
        self.inner.partition_owners().await
    }
    async fn describe_execution(&self, id: &ExecutionId) -> Result<ExecutionSnapshot, EngineError> {
        self.inner.describe_execution(id).await
    }
    async fn describe_flow(&self, id: &FlowId) -> Result<FlowSnapshot, EngineError> {
        self.inner.describe_flow(id).await
    }
    async fn list_executions(
        &self,
        query: &ListQuery,
    ) -> Result<Page<ExecutionSummary>, EngineError> {
        self.inner.list_executions(query).await
    }
}
