//! Helpers shared by the engine tests: a fast config, polling with a deadline, workers run in
//! the background.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use ff_core::{EngineBackend, ExecutionState, FlowId, FlowSnapshot, Lane, ListQuery, Partition};
use ff_engine::{
    Backoff, EngineConfig, Handler, ScannerSchedule, Worker, WorkerReport, WorkerStats,
};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Short intervals and TTLs, so time-driven behaviour shows within milliseconds.
pub(crate) fn fast_config() -> EngineConfig {
    let mut config = EngineConfig::default();
    config.scanners = ScannerSchedule::all_every(Duration::from_millis(20));
    config.ownership_ttl = Duration::from_millis(300);
    config.item_backoff = Backoff::new(Duration::from_millis(50), Duration::from_millis(500));
    config.restart_backoff = Backoff::new(Duration::from_millis(10), Duration::from_millis(200));
    config.shutdown_timeout = Duration::from_secs(5);
    config
}

/// Polls `check` until it returns `Some`, failing the test with `what` after `timeout`.
pub(crate) async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A worker running in the background until [`RunningWorker::stop`].
pub(crate) struct RunningWorker {
    pub(crate) stats: WorkerStats,
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<WorkerReport, ff_core::EngineError>>,
}

impl RunningWorker {
    pub(crate) fn start(worker: Worker) -> Self {
        let stats = worker.stats();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(worker.run(async move {
            let _ = stopped.await;
        }));
        RunningWorker { stats, stop, task }
    }

    /// Graceful stop: drains, returns the report.
    pub(crate) async fn stop(self) -> WorkerReport {
        let _ = self.stop.send(());
        self.task
            .await
            .expect("worker task ended normally")
            .expect("worker ran without error")
    }

    /// Crash: the task is aborted with its executions still leased.
    pub(crate) fn kill(self) {
        self.task.abort();
    }
}

/// A worker on `lane` with `concurrency` slots running `handler`.
pub(crate) fn worker(
    backend: &Arc<dyn EngineBackend>,
    lane: &Lane,
    concurrency: usize,
    handler: impl Handler,
) -> Worker {
    Worker::builder(Arc::clone(backend))
        .lane(lane.clone())
        .concurrency(concurrency)
        .handler(handler)
        .build()
        .expect("valid worker")
}

/// The flow's snapshot once it is terminal.
pub(crate) async fn finished_flow(
    backend: &Arc<dyn EngineBackend>,
    flow: &FlowId,
    timeout: Duration,
) -> FlowSnapshot {
    ff_core::wait::wait_for_flow(backend, flow, timeout, Duration::from_millis(10))
        .await
        .expect("describe_flow works")
        .unwrap_or_else(|| panic!("flow {flow} did not finish within {timeout:?}"))
}

/// How many executions are in `state`, over every partition.
pub(crate) async fn count_in_state(
    backend: &Arc<dyn EngineBackend>,
    state: ExecutionState,
) -> usize {
    let mut total = 0;
    for p in backend.partition_config().all() {
        total += list_all(backend, p, state).await.len();
    }
    total
}

async fn list_all(
    backend: &Arc<dyn EngineBackend>,
    partition: Partition,
    state: ExecutionState,
) -> Vec<ff_core::ExecutionSummary> {
    let mut out = Vec::new();
    let mut cursor = None;
    loop {
        let page = backend
            .list_executions(
                &ListQuery::new(partition, state)
                    .after(cursor)
                    .with_limit(1000),
            )
            .await
            .expect("list_executions works");
        out.extend(page.items);
        match page.next {
            Some(next) => cursor = Some(next),
            None => return out,
        }
    }
}

/// A flow id whose partition is `partition`.
pub(crate) fn flow_on(backend: &Arc<dyn EngineBackend>, partition: Partition) -> FlowId {
    let config = backend.partition_config();
    (0..100_000)
        .map(|_| FlowId::new())
        .find(|f| f.partition(&config) == partition)
        .expect("some random flow id lands on every partition")
}
