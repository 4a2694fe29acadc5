//! A worker that dies holding leases: its executions are retried elsewhere after expiry.

use std::sync::Arc;
use std::time::Duration;

use ff_core::memory::MemoryBackend;
use ff_core::{
    AttemptOutcome, EdgeSpec, EngineBackend, ExecutionSpec, FlowSpec, FlowState, Lane, NodeKey,
    NodeSpec, RetryPolicy, WorkerId,
};
use ff_engine::{Engine, Job, Worker};

use crate::common::{RunningWorker, eventually, fast_config, finished_flow};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn executions_of_a_dead_worker_are_retried_by_another_after_lease_expiry() {
    let backend: Arc<dyn EngineBackend> = Arc::new(MemoryBackend::new());
    let engine = Engine::builder(Arc::clone(&backend))
        .config(fast_config())
        .start()
        .await
        .expect("engine starts");
    let lane = Lane::new("failover").expect("lane");
    let retry = RetryPolicy::fixed(3, Duration::from_millis(1));
    let key = |k: &str| NodeKey::new(k).expect("key");
    let mut flows = Vec::new();
    for i in 0..20 {
        let spec = FlowSpec::new()
            .node(NodeSpec::new(
                key("first"),
                ExecutionSpec::new(lane.clone(), format!("{i}")).with_retry(retry.clone()),
            ))
            .node(NodeSpec::new(
                key("second"),
                ExecutionSpec::new(lane.clone(), format!("{i}")).with_retry(retry.clone()),
            ))
            .edge(EdgeSpec::new(key("first"), key("second")));
        flows.push(backend.create_flow(&spec).await.expect("flow created"));
    }

    // Worker A claims every root and hangs; then it dies with the leases held.
    let doomed_id = WorkerId::new("doomed").expect("id");
    let doomed = RunningWorker::start(
        Worker::builder(Arc::clone(&backend))
            .id(doomed_id.clone())
            .lane(lane.clone())
            .concurrency(50)
            .lease_ttl(Duration::from_secs(30))
            .handler(|_job: Job| std::future::pending())
            .build()
            .expect("worker"),
    );
    let stats = doomed.stats.clone();
    eventually(
        "the doomed worker holds every root",
        Duration::from_secs(5),
        || {
            let claimed = stats.snapshot().claimed;
            async move { (claimed == 20).then_some(()) }
        },
    )
    .await;
    doomed.kill();

    // Nothing happens until the leases expire by the backend clock.
    backend
        .advance_clock(Duration::from_secs(31))
        .await
        .expect("clock control");

    let survivor_id = WorkerId::new("survivor").expect("id");
    let survivor = RunningWorker::start(
        Worker::builder(Arc::clone(&backend))
            .id(survivor_id.clone())
            .lane(lane.clone())
            .concurrency(8)
            .handler(|job: Job| async move { Ok(Some(job.payload().to_vec())) })
            .build()
            .expect("worker"),
    );
    for created in &flows {
        let flow = finished_flow(&backend, &created.flow_id, Duration::from_secs(10)).await;
        assert_eq!(flow.state, FlowState::Succeeded, "{flow:?}");
        let first = created.id(&key("first")).expect("node id");
        let attempts = backend
            .describe_execution(&first)
            .await
            .expect("describe")
            .attempts;
        assert_eq!(attempts.len(), 2, "{attempts:?}");
        assert_eq!(attempts[0].worker, doomed_id);
        assert_eq!(attempts[0].outcome, Some(AttemptOutcome::LeaseExpired));
        assert_eq!(attempts[1].worker, survivor_id);
        assert_eq!(attempts[1].outcome, Some(AttemptOutcome::Succeeded));
    }
    let report = survivor.stop().await;
    assert_eq!(report.succeeded, 40);
    assert_eq!(report.lease_lost, 0);
    let lease_expiry = engine.stats();
    assert!(
        lease_expiry
            .scanner("lease_expiry")
            .is_some_and(|s| s.processed >= 20),
        "{lease_expiry:?}"
    );
    engine.shutdown().await.expect("clean shutdown");
}
