//! Backend calls that panic: the item costs itself, not the scanner's progress on the others;
//! a task that fails is restarted.

use std::sync::Arc;
use std::time::Duration;

use ff_core::memory::MemoryBackend;
use ff_core::{
    ClaimRequest, CompleteRequest, EdgeSpec, EngineBackend, ExecutionId, ExecutionSpec,
    ExecutionState, FlowSpec, Lane, NodeKey, NodeSpec, Partition, PartitionConfig, ScanKind,
    WorkerId,
};
use ff_engine::Engine;

use crate::common::{eventually, fast_config, flow_on};
use crate::faulty::Faulty;

async fn state_of(backend: &Arc<dyn EngineBackend>, id: &ExecutionId) -> ExecutionState {
    backend
        .describe_execution(id)
        .await
        .expect("describe")
        .state()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_cascade_costs_only_its_own_event() {
    let faulty = Arc::new(Faulty::new(
        MemoryBackend::builder()
            .partitions(PartitionConfig::new(8).expect("8 partitions"))
            .inline_cascade_limit(0)
            .build(),
    ));
    // The hint listener's first two subscriptions panic: the task dies and is restarted.
    faulty
        .faults
        .subscribe_panics
        .store(2, std::sync::atomic::Ordering::SeqCst);
    let backend: Arc<dyn EngineBackend> = faulty.clone();

    // Five flows up → down on one partition; the cascade of the first one's `up` panics.
    let lane = Lane::new("isolation").expect("lane");
    let key = |k: &str| NodeKey::new(k).expect("key");
    let partition = Partition(3);
    let mut flows = Vec::new();
    for _ in 0..5 {
        let spec = FlowSpec::with_id(flow_on(&backend, partition))
            .node(NodeSpec::new(
                key("up"),
                ExecutionSpec::new(lane.clone(), "up"),
            ))
            .node(NodeSpec::new(
                key("down"),
                ExecutionSpec::new(lane.clone(), "down"),
            ))
            .edge(EdgeSpec::new(key("up"), key("down")));
        flows.push(backend.create_flow(&spec).await.expect("flow"));
    }
    let poisoned = flows[0].id(&key("up")).expect("id");
    *faulty.faults.cascade.lock().expect("lock") = Some(poisoned);
    let claimed = backend
        .claim(&ClaimRequest::new(WorkerId::random(), lane.clone()).with_max(10))
        .await
        .expect("claim");
    assert_eq!(claimed.len(), 5);
    for c in &claimed {
        backend
            .complete(&CompleteRequest::new(c.fence))
            .await
            .expect("complete");
    }

    let engine = Engine::builder(Arc::clone(&backend))
        .config(fast_config())
        .start()
        .await
        .expect("engine starts");

    for created in &flows[1..] {
        let down = created.id(&key("down")).expect("id");
        eventually("healthy completions are cascaded", Duration::from_secs(10), || {
            let backend = Arc::clone(&backend);
            async move { (state_of(&backend, &down).await == ExecutionState::Ready).then_some(()) }
        })
        .await;
    }
    let poisoned_down = flows[0].id(&key("down")).expect("id");
    assert_eq!(
        state_of(&backend, &poisoned_down).await,
        ExecutionState::Blocked
    );
    let stats = engine.stats();
    assert!(stats.dispatch_errors >= 1, "{stats:?}");
    assert_eq!(stats.completions_dispatched, 4, "{stats:?}");

    let restarted = eventually(
        "the hint listener is restarted",
        Duration::from_secs(10),
        || {
            let stats = engine.stats();
            async move {
                let hints = stats.tasks.iter().find(|t| t.name == "hints")?.clone();
                (hints.restarts == 2).then_some(hints)
            }
        },
    )
    .await;
    assert!(
        restarted
            .last_failure
            .as_deref()
            .is_some_and(|f| f.contains("injected: subscribe_hints panics")),
        "{restarted:?}"
    );

    // Once the backend stops panicking, the event is retried after its backoff and lands.
    *faulty.faults.cascade.lock().expect("lock") = None;
    eventually(
        "the poisoned completion lands once healed",
        Duration::from_secs(10),
        || {
            let backend = Arc::clone(&backend);
            async move {
                (state_of(&backend, &poisoned_down).await == ExecutionState::Ready).then_some(())
            }
        },
    )
    .await;
    assert_eq!(engine.stats().completions_dispatched, 5);
    engine.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scan_that_panics_on_one_partition_does_not_stop_the_others() {
    let faulty = Arc::new(Faulty::new(
        MemoryBackend::builder()
            .partitions(PartitionConfig::new(8).expect("8 partitions"))
            .build(),
    ));
    let backend: Arc<dyn EngineBackend> = faulty.clone();
    let lane = Lane::new("delays").expect("lane");
    let mut ids = Vec::new();
    for i in 0..64 {
        let spec =
            ExecutionSpec::new(lane.clone(), format!("{i}")).with_delay(Duration::from_millis(30));
        ids.push(backend.create_execution(&spec).await.expect("created").id);
    }
    let poisoned = ids[0].partition();
    *faulty.faults.scan.lock().expect("lock") = Some((poisoned, ScanKind::DelayedPromotion));

    let engine = Engine::builder(Arc::clone(&backend))
        .config(fast_config())
        .start()
        .await
        .expect("engine starts");
    let (stuck, healthy): (Vec<ExecutionId>, Vec<ExecutionId>) =
        ids.iter().partition(|id| id.partition() == poisoned);
    assert!(!healthy.is_empty());
    for id in healthy {
        eventually("delayed executions elsewhere are promoted", Duration::from_secs(10), || {
            let backend = Arc::clone(&backend);
            async move { (state_of(&backend, &id).await == ExecutionState::Ready).then_some(()) }
        })
        .await;
    }
    for id in &stuck {
        assert_eq!(state_of(&backend, id).await, ExecutionState::Delayed);
    }
    // The cycle's numbers are published when it ends.
    let healthy_count = (64 - stuck.len()) as u64;
    eventually(
        "the cycle reports the failure and the promotions",
        Duration::from_secs(10),
        || {
            let scanner = engine.stats().scanner("delayed_promotion").cloned();
            async move { scanner.filter(|s| s.errors >= 1 && s.processed >= healthy_count) }
        },
    )
    .await;

    *faulty.faults.scan.lock().expect("lock") = None;
    for id in stuck {
        eventually("the partition is scanned again once healed", Duration::from_secs(10), || {
            let backend = Arc::clone(&backend);
            async move { (state_of(&backend, &id).await == ExecutionState::Ready).then_some(()) }
        })
        .await;
    }
    engine.shutdown().await.expect("shutdown");
}
