//! [`CountingBackend`]: an [`EngineBackend`] decorator that counts the calls made through it.
//!
//! Every workload runs through one, so the report can say how many backend calls an executed
//! node cost (round trips per node is what separates a queue from a slow queue), and the
//! idle-engine measurement is nothing but this counter read over an idle interval. It
//! delegates every method unchanged; the only cost is one relaxed atomic increment per call.
//!
//! Every method must be written out here, those with a default body included
//! (`advance_clock`, `subscribe_hints`, `due_summary`): one left out would silently answer
//! with the trait's default instead of the backend's own implementation, and the bench would
//! measure something no deployment runs. A method added to the trait must be added here.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use ff_core::{
    CancelFlowMode, CancelFlowOutcome, CancelOutcome, Capabilities, CascadeProgress, ClaimRequest,
    ClaimedExecution, CompleteRequest, Completed, CompletionEvent, CreatedExecution, CreatedFlow,
    DueSummary, EngineBackend, EngineError, ExecutionId, ExecutionSnapshot, ExecutionSpec,
    ExecutionSummary, FailOutcome, FailRequest, Fence, FlowId, FlowPatch, FlowSnapshot, FlowSpec,
    HealthReport, HintReceiver, InstanceId, InstanceInfo, ListQuery, Page, Partition,
    PartitionConfig, PartitionGrant, PartitionOwner, ScanReport, ScanRequest, Timestamp,
};

/// The async methods of [`EngineBackend`], in trait order: the index of each counter.
const METHODS: [&str; 27] = [
    "now",
    "advance_clock",
    "health",
    "subscribe_hints",
    "create_execution",
    "create_flow",
    "add_nodes",
    "claim",
    "renew",
    "complete",
    "fail",
    "progress",
    "cancel_execution",
    "cancel_flow",
    "change_priority",
    "pending_completions",
    "cascade_completion",
    "scan",
    "due_summary",
    "heartbeat_instance",
    "remove_instance",
    "acquire_partitions",
    "release_partitions",
    "partition_owners",
    "describe_execution",
    "describe_flow",
    "list_executions",
];

/// Call counts by method name, as [`CountingBackend::snapshot`] returns them.
pub type CallSnapshot = BTreeMap<&'static str, u64>;

/// Counts every async call on the wrapped backend (the sync meta methods cost no round trip
/// and are not counted).
#[derive(Debug)]
pub struct CountingBackend {
    inner: Arc<dyn EngineBackend>,
    counts: [AtomicU64; METHODS.len()],
}

impl CountingBackend {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn EngineBackend>) -> Self {
        CountingBackend {
            inner,
            counts: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }

    fn count(&self, method: &'static str) {
        if let Some(i) = METHODS.iter().position(|m| *m == method) {
            self.counts[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The calls made so far, by method (methods never called are left out).
    pub fn snapshot(&self) -> CallSnapshot {
        METHODS
            .iter()
            .zip(&self.counts)
            .map(|(name, count)| (*name, count.load(Ordering::Relaxed)))
            .filter(|(_, count)| *count > 0)
            .collect()
    }

    /// Every call made so far.
    pub fn total(&self) -> u64 {
        self.counts.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }
}

/// `after - before`, per method.
pub fn difference(after: &CallSnapshot, before: &CallSnapshot) -> CallSnapshot {
    after
        .iter()
        .map(|(name, count)| {
            (
                *name,
                count.saturating_sub(before.get(name).copied().unwrap_or(0)),
            )
        })
        .filter(|(_, count)| *count > 0)
        .collect()
}

#[async_trait]
impl EngineBackend for CountingBackend {
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
        self.count("now");
        self.inner.now().await
    }

    async fn advance_clock(&self, by: Duration) -> Result<Timestamp, EngineError> {
        self.count("advance_clock");
        self.inner.advance_clock(by).await
    }

    async fn health(&self) -> Result<HealthReport, EngineError> {
        self.count("health");
        self.inner.health().await
    }

    async fn subscribe_hints(&self) -> Result<HintReceiver, EngineError> {
        self.count("subscribe_hints");
        self.inner.subscribe_hints().await
    }

    async fn create_execution(
        &self,
        spec: &ExecutionSpec,
    ) -> Result<CreatedExecution, EngineError> {
        self.count("create_execution");
        self.inner.create_execution(spec).await
    }

    async fn create_flow(&self, spec: &FlowSpec) -> Result<CreatedFlow, EngineError> {
        self.count("create_flow");
        self.inner.create_flow(spec).await
    }

    async fn add_nodes(
        &self,
        flow: &FlowId,
        patch: &FlowPatch,
    ) -> Result<CreatedFlow, EngineError> {
        self.count("add_nodes");
        self.inner.add_nodes(flow, patch).await
    }

    async fn claim(&self, request: &ClaimRequest) -> Result<Vec<ClaimedExecution>, EngineError> {
        self.count("claim");
        self.inner.claim(request).await
    }

    async fn renew(&self, fence: &Fence, ttl: Duration) -> Result<Timestamp, EngineError> {
        self.count("renew");
        self.inner.renew(fence, ttl).await
    }

    async fn complete(&self, request: &CompleteRequest) -> Result<Completed, EngineError> {
        self.count("complete");
        self.inner.complete(request).await
    }

    async fn fail(&self, request: &FailRequest) -> Result<FailOutcome, EngineError> {
        self.count("fail");
        self.inner.fail(request).await
    }

    async fn progress(&self, fence: &Fence, progress: &[u8]) -> Result<(), EngineError> {
        self.count("progress");
        self.inner.progress(fence, progress).await
    }

    async fn cancel_execution(&self, id: &ExecutionId) -> Result<CancelOutcome, EngineError> {
        self.count("cancel_execution");
        self.inner.cancel_execution(id).await
    }

    async fn cancel_flow(
        &self,
        flow: &FlowId,
        mode: CancelFlowMode,
    ) -> Result<CancelFlowOutcome, EngineError> {
        self.count("cancel_flow");
        self.inner.cancel_flow(flow, mode).await
    }

    async fn change_priority(&self, id: &ExecutionId, priority: i32) -> Result<(), EngineError> {
        self.count("change_priority");
        self.inner.change_priority(id, priority).await
    }

    async fn pending_completions(
        &self,
        partition: Partition,
        limit: u32,
    ) -> Result<Vec<CompletionEvent>, EngineError> {
        self.count("pending_completions");
        self.inner.pending_completions(partition, limit).await
    }

    async fn cascade_completion(
        &self,
        event: &CompletionEvent,
    ) -> Result<CascadeProgress, EngineError> {
        self.count("cascade_completion");
        self.inner.cascade_completion(event).await
    }

    async fn scan(&self, request: &ScanRequest) -> Result<ScanReport, EngineError> {
        self.count("scan");
        self.inner.scan(request).await
    }

    async fn due_summary(&self, partitions: &[Partition]) -> Result<DueSummary, EngineError> {
        self.count("due_summary");
        self.inner.due_summary(partitions).await
    }

    async fn heartbeat_instance(
        &self,
        instance: &InstanceId,
        ttl: Duration,
    ) -> Result<Vec<InstanceInfo>, EngineError> {
        self.count("heartbeat_instance");
        self.inner.heartbeat_instance(instance, ttl).await
    }

    async fn remove_instance(&self, instance: &InstanceId) -> Result<(), EngineError> {
        self.count("remove_instance");
        self.inner.remove_instance(instance).await
    }

    async fn acquire_partitions(
        &self,
        instance: &InstanceId,
        partitions: &[Partition],
        ttl: Duration,
    ) -> Result<Vec<PartitionGrant>, EngineError> {
        self.count("acquire_partitions");
        self.inner
            .acquire_partitions(instance, partitions, ttl)
            .await
    }

    async fn release_partitions(
        &self,
        instance: &InstanceId,
        partitions: &[Partition],
    ) -> Result<(), EngineError> {
        self.count("release_partitions");
        self.inner.release_partitions(instance, partitions).await
    }

    async fn partition_owners(&self) -> Result<Vec<PartitionOwner>, EngineError> {
        self.count("partition_owners");
        self.inner.partition_owners().await
    }

    async fn describe_execution(&self, id: &ExecutionId) -> Result<ExecutionSnapshot, EngineError> {
        self.count("describe_execution");
        self.inner.describe_execution(id).await
    }

    async fn describe_flow(&self, id: &FlowId) -> Result<FlowSnapshot, EngineError> {
        self.count("describe_flow");
        self.inner.describe_flow(id).await
    }

    async fn list_executions(
        &self,
        query: &ListQuery,
    ) -> Result<Page<ExecutionSummary>, EngineError> {
        self.count("list_executions");
        self.inner.list_executions(query).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ff_core::memory::MemoryBackend;
    use ff_core::{ClaimRequest, Lane, WorkerId};

    #[tokio::test]
    async fn counts_each_call_by_method() -> Result<(), EngineError> {
        let counting = CountingBackend::new(Arc::new(MemoryBackend::new()));
        let lane = Lane::new("count")?;
        counting
            .create_execution(&ExecutionSpec::new(lane.clone(), b"x".to_vec()))
            .await?;
        let claimed = counting
            .claim(&ClaimRequest::new(WorkerId::random(), lane.clone()))
            .await?;
        counting
            .claim(&ClaimRequest::new(WorkerId::random(), lane))
            .await?;
        let before = counting.snapshot();
        counting
            .complete(&CompleteRequest::new(claimed[0].fence))
            .await?;
        let after = counting.snapshot();
        assert_eq!(before.get("create_execution"), Some(&1));
        assert_eq!(before.get("claim"), Some(&2));
        assert_eq!(difference(&after, &before), [("complete", 1)].into());
        assert_eq!(counting.total(), 4);
        Ok(())
    }
}
