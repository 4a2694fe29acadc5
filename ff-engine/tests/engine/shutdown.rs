//! Graceful shutdown with work in flight: nothing lost, nothing left leased.

use std::sync::Arc;
use std::time::Duration;

use ff_core::memory::MemoryBackend;
use ff_core::{EngineBackend, ExecutionSpec, ExecutionState, Lane, RetryPolicy};
use ff_engine::{Engine, Job, Worker};

use crate::common::{RunningWorker, count_in_state, eventually, fast_config, worker};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_drains_work_in_flight_and_releases_everything() {
    let backend: Arc<dyn EngineBackend> = Arc::new(MemoryBackend::new());
    let engine = Engine::builder(Arc::clone(&backend))
        .config(fast_config())
        .start()
        .await
        .expect("engine starts");
    let instance = engine.instance_id().clone();
    let lane = Lane::new("drain").expect("lane");
    for i in 0..200 {
        backend
            .create_execution(&ExecutionSpec::new(lane.clone(), format!("{i}")))
            .await
            .expect("created");
    }
    let slow = |_job: Job| async {
        tokio::time::sleep(Duration::from_millis(50)).await;
        Ok(Some(b"done".to_vec()))
    };
    let first = RunningWorker::start(worker(&backend, &lane, 8, slow));
    let stats = first.stats.clone();
    eventually("work is in flight", Duration::from_secs(5), || {
        let s = stats.snapshot();
        async move { (s.claimed >= 16).then_some(()) }
    })
    .await;

    let report = first.stop().await;
    assert_eq!(report.lease_lost, 0, "{report:?}");
    assert_eq!(
        report.succeeded, report.claimed,
        "every claimed execution finished: {report:?}"
    );
    assert_eq!(count_in_state(&backend, ExecutionState::Running).await, 0);
    assert_eq!(
        count_in_state(&backend, ExecutionState::Succeeded).await as u64,
        report.succeeded
    );
    assert_eq!(
        count_in_state(&backend, ExecutionState::Ready).await as u64,
        200 - report.succeeded,
        "the rest is still there"
    );

    let stopped = engine.shutdown().await.expect("shutdown");
    assert!(stopped.clean, "{stopped:?}");
    let owners = backend.partition_owners().await.expect("owners");
    assert!(
        owners.iter().all(|o| o.owner != instance),
        "partitions released"
    );

    // Another worker (and engine) finish the rest.
    let engine = Engine::builder(Arc::clone(&backend))
        .config(fast_config())
        .start()
        .await
        .expect("engine restarts");
    let second = RunningWorker::start(worker(&backend, &lane, 16, |_job: Job| async { Ok(None) }));
    let backend2 = Arc::clone(&backend);
    eventually("everything succeeds", Duration::from_secs(10), || {
        let backend = Arc::clone(&backend2);
        async move { (count_in_state(&backend, ExecutionState::Succeeded).await == 200).then_some(()) }
    })
    .await;
    second.stop().await;
    engine.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handlers_that_outlive_the_drain_timeout_are_failed_for_a_retry() {
    let backend: Arc<dyn EngineBackend> = Arc::new(MemoryBackend::new());
    let lane = Lane::new("stuck").expect("lane");
    for i in 0..4 {
        let spec = ExecutionSpec::new(lane.clone(), format!("{i}"))
            .with_retry(RetryPolicy::fixed(2, Duration::from_millis(1)));
        backend.create_execution(&spec).await.expect("created");
    }
    let stuck = RunningWorker::start(
        Worker::builder(Arc::clone(&backend))
            .lane(lane.clone())
            .concurrency(4)
            .drain_timeout(Duration::from_millis(100))
            .handler(|_job: Job| std::future::pending())
            .build()
            .expect("worker"),
    );
    let stats = stuck.stats.clone();
    eventually("all four are running", Duration::from_secs(5), || {
        let s = stats.snapshot();
        async move { (s.claimed == 4).then_some(()) }
    })
    .await;
    let report = stuck.stop().await;
    assert_eq!(report.retry_scheduled, 4, "{report:?}");
    assert_eq!(count_in_state(&backend, ExecutionState::Running).await, 0);
    assert_eq!(
        count_in_state(&backend, ExecutionState::Delayed).await
            + count_in_state(&backend, ExecutionState::Ready).await,
        4,
        "retried at once, not left leased until expiry"
    );
}
