//! Several engine instances on one backend: partitions split without overlap, and a dead
//! instance's partitions (and pending completions) are taken over.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use ff_core::memory::MemoryBackend;
use ff_core::{
    ClaimRequest, CompleteRequest, EdgeSpec, EngineBackend, ExecutionSpec, ExecutionState,
    FlowSpec, InstanceId, Lane, NodeKey, NodeSpec, Partition, PartitionConfig, WorkerId,
};
use ff_engine::{Engine, EngineHandle};

use crate::common::{eventually, fast_config, flow_on};

async fn start(backend: &Arc<dyn EngineBackend>, name: &str) -> EngineHandle {
    Engine::builder(Arc::clone(backend))
        .config(fast_config())
        .instance_id(InstanceId::new(name).expect("instance id"))
        .start()
        .await
        .expect("engine starts")
}

/// The owned sets when they are disjoint, non-empty, cover every partition and match the
/// backend's owner table; `None` while the split is still settling.
async fn settled_split(
    backend: &Arc<dyn EngineBackend>,
    engines: Vec<&EngineHandle>,
) -> Option<Vec<BTreeSet<Partition>>> {
    let sets: Vec<BTreeSet<Partition>> = engines
        .iter()
        .map(|e| e.owned_partitions().into_iter().collect())
        .collect();
    let total: usize = sets.iter().map(BTreeSet::len).sum();
    let union: BTreeSet<Partition> = sets.iter().flatten().copied().collect();
    let all = backend.partition_config().partitions as usize;
    if sets.iter().any(BTreeSet::is_empty) || union.len() != all || total != all {
        return None;
    }
    let owners = backend.partition_owners().await.expect("owners");
    for (engine, set) in engines.iter().zip(&sets) {
        let listed: BTreeSet<Partition> = owners
            .iter()
            .filter(|o| &o.owner == engine.instance_id())
            .map(|o| o.partition)
            .collect();
        if &listed != set {
            return None;
        }
    }
    Some(sets)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_split_partitions_and_take_over_from_a_dead_one() {
    let backend: Arc<dyn EngineBackend> = Arc::new(
        MemoryBackend::builder()
            .partitions(PartitionConfig::new(32).expect("32 partitions"))
            .inline_cascade_limit(0)
            .build(),
    );
    let one = start(&backend, "engine-1").await;
    let two = start(&backend, "engine-2").await;
    eventually(
        "two instances split the partitions",
        Duration::from_secs(10),
        || settled_split(&backend, vec![&one, &two]),
    )
    .await;

    let three = start(&backend, "engine-3").await;
    let split = eventually(
        "three instances split the partitions",
        Duration::from_secs(10),
        || settled_split(&backend, vec![&one, &two, &three]),
    )
    .await;
    let orphaned = split[2].clone();

    // engine-3 dies without a word.
    three.abort();

    // Completions recorded on its partitions now wait for a new owner.
    let lane = Lane::new("takeover").expect("lane");
    let key = |k: &str| NodeKey::new(k).expect("key");
    let mut flows = Vec::new();
    for &partition in orphaned.iter().take(4) {
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
    let claimed = backend
        .claim(&ClaimRequest::new(WorkerId::random(), lane.clone()).with_max(10))
        .await
        .expect("claim");
    assert_eq!(claimed.len(), flows.len(), "only the upstreams are ready");
    for c in claimed {
        backend
            .complete(&CompleteRequest::new(c.fence))
            .await
            .expect("complete");
    }
    for created in &flows {
        let pending = backend
            .pending_completions(created.flow_id.partition(&backend.partition_config()), 10)
            .await
            .expect("pending");
        assert_eq!(
            pending.len(),
            1,
            "the upstream's completion waits for an owner"
        );
    }

    let split = eventually(
        "the survivors take every partition",
        Duration::from_secs(10),
        || settled_split(&backend, vec![&one, &two]),
    )
    .await;
    assert!(
        orphaned
            .iter()
            .all(|p| split[0].contains(p) || split[1].contains(p))
    );

    for created in &flows {
        let down = created.id(&key("down")).expect("down id");
        let backend = Arc::clone(&backend);
        eventually(
            "the orphaned completion is cascaded",
            Duration::from_secs(10),
            || {
                let backend = Arc::clone(&backend);
                async move {
                    let state = backend
                        .describe_execution(&down)
                        .await
                        .expect("describe")
                        .state();
                    (state == ExecutionState::Ready).then_some(())
                }
            },
        )
        .await;
    }
    let dispatched = one.stats().completions_dispatched + two.stats().completions_dispatched;
    assert_eq!(dispatched, flows.len() as u64);

    one.shutdown().await.expect("shutdown");
    two.shutdown().await.expect("shutdown");
    let left: Vec<_> = backend
        .partition_owners()
        .await
        .expect("owners")
        .into_iter()
        .filter(|o| o.owner.as_str() != "engine-3")
        .collect();
    assert!(
        left.is_empty(),
        "graceful shutdown releases every partition: {left:?}"
    );
}
