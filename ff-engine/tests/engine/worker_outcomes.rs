//! What the worker records for each way a handler can end.

use std::sync::Arc;
use std::time::Duration;

use ff_core::memory::MemoryBackend;
use ff_core::{AttemptOutcome, EngineBackend, ExecutionSpec, ExecutionState, Lane, RetryPolicy};
use ff_engine::{HandlerError, Job};

use crate::common::{RunningWorker, eventually, worker};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panics_and_errors_fail_attempts_and_results_complete_them() {
    let backend: Arc<dyn EngineBackend> = Arc::new(MemoryBackend::new());
    let lane = Lane::new("outcomes").expect("lane");
    let retry = RetryPolicy::fixed(2, Duration::from_millis(1));
    let mut ids = Vec::new();
    for payload in ["panic-once", "permanent", "retry-once", "ok"] {
        let spec = ExecutionSpec::new(lane.clone(), payload).with_retry(retry.clone());
        ids.push(backend.create_execution(&spec).await.expect("created").id);
    }
    let handler = |job: Job| async move {
        match (job.payload(), job.attempt()) {
            (b"panic-once", 1) => panic!("handler bug on the first attempt"),
            (b"permanent", _) => Err(HandlerError::permanent("bad input")),
            (b"retry-once", 1) => Err(HandlerError::retryable("flaky dependency")),
            _ => Ok(Some(job.payload().to_vec())),
        }
    };
    let running = RunningWorker::start(worker(&backend, &lane, 4, handler));
    let states = |backend: Arc<dyn EngineBackend>, ids: Vec<ff_core::ExecutionId>| async move {
        let mut out = Vec::new();
        for id in &ids {
            out.push(backend.describe_execution(id).await.expect("describe"));
        }
        out
    };
    // Retries wait in `delayed` for 1 ms. No engine runs here: the test promotes due retries
    // itself with the scanner call.
    let snapshots = eventually("every execution ends", Duration::from_secs(10), || {
        let backend = Arc::clone(&backend);
        let ids = ids.clone();
        async move {
            for p in backend.partition_config().all() {
                let _ = backend
                    .scan(&ff_core::ScanRequest::new(
                        p,
                        ff_core::ScanKind::DelayedPromotion,
                        100,
                    ))
                    .await;
            }
            let snapshots = states(backend, ids).await;
            snapshots
                .iter()
                .all(|s| s.state().is_terminal())
                .then_some(snapshots)
        }
    })
    .await;
    let report = running.stop().await;

    let [panicked, permanent, retried, ok] = &snapshots[..] else {
        panic!("four executions");
    };
    assert_eq!(panicked.state(), ExecutionState::Succeeded);
    assert_eq!(panicked.attempts[0].outcome, Some(AttemptOutcome::Failed));
    let failure = panicked.attempts[0]
        .failure
        .clone()
        .expect("failure recorded");
    assert!(
        failure.retryable && failure.message.contains("handler bug"),
        "{failure:?}"
    );
    assert_eq!(permanent.state(), ExecutionState::Failed);
    assert_eq!(
        permanent.attempts.len(),
        1,
        "a permanent error is not retried"
    );
    assert_eq!(retried.state(), ExecutionState::Succeeded);
    assert_eq!(retried.attempts.len(), 2);
    assert_eq!(ok.state(), ExecutionState::Succeeded);
    assert_eq!(ok.result.as_deref(), Some(&b"ok"[..]));
    assert_eq!(report.succeeded, 3);
    assert_eq!(report.retry_scheduled, 2);
    assert_eq!(report.failed, 1);
    assert_eq!(report.lease_lost, 0);
}
