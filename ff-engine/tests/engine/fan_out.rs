//! A large fan-out, 1 → 10 000 → 1: every edge applied exactly once.

use std::sync::Arc;
use std::time::Duration;

use ff_core::memory::MemoryBackend;
use ff_core::{
    EdgeSpec, EngineBackend, ExecutionSpec, ExecutionState, FlowSpec, FlowState, GroupVerdict,
    Lane, NodeKey, NodeSpec,
};
use ff_engine::{Engine, Job};

use crate::common::{RunningWorker, fast_config, finished_flow, worker};

const WIDTH: usize = 10_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_to_ten_thousand_to_one_applies_every_edge_once() {
    let backend: Arc<dyn EngineBackend> = Arc::new(MemoryBackend::new());
    assert!(
        (WIDTH as u32) > backend.capabilities().inline_cascade_limit,
        "the source's completion must go through the dispatch loop"
    );
    let engine = Engine::builder(Arc::clone(&backend))
        .config(fast_config())
        .start()
        .await
        .expect("engine starts");
    let lane = Lane::new("wide").expect("lane");
    let key = |k: String| NodeKey::new(k).expect("key");
    let mut spec = FlowSpec::new()
        .node(NodeSpec::new(
            key("source".into()),
            ExecutionSpec::new(lane.clone(), "s"),
        ))
        .node(NodeSpec::new(
            key("sink".into()),
            ExecutionSpec::new(lane.clone(), "t"),
        ));
    for i in 0..WIDTH {
        let mid = key(format!("mid-{i}"));
        spec = spec
            .node(NodeSpec::new(
                mid.clone(),
                ExecutionSpec::new(lane.clone(), "m"),
            ))
            .edge(EdgeSpec::new(key("source".into()), mid.clone()))
            .edge(EdgeSpec::new(mid, key("sink".into())));
    }
    let created = backend.create_flow(&spec).await.expect("flow created");
    let running = RunningWorker::start(worker(&backend, &lane, 64, |_job: Job| async { Ok(None) }));

    let flow = finished_flow(&backend, &created.flow_id, Duration::from_secs(120)).await;
    let report = running.stop().await;

    assert_eq!(flow.state, FlowState::Succeeded);
    assert_eq!(flow.counts.total as usize, WIDTH + 2);
    assert_eq!(flow.counts.terminal as usize, WIDTH + 2);
    assert!(
        flow.members
            .iter()
            .all(|m| m.state == ExecutionState::Succeeded)
    );
    assert_eq!(flow.edges.len(), 2 * WIDTH);
    assert!(flow.edges.iter().all(|e| e.applied), "every edge applied");
    assert_eq!(flow.groups.len(), WIDTH + 1);
    for group in &flow.groups {
        let expected = if group.node.as_str() == "sink" {
            WIDTH as u32
        } else {
            1
        };
        assert_eq!(group.incoming, expected, "{group:?}");
        assert_eq!(group.satisfied, expected, "applied exactly once: {group:?}");
        assert_eq!(group.unsatisfied, 0, "{group:?}");
        assert_eq!(group.verdict, GroupVerdict::Satisfied);
    }
    assert_eq!(report.succeeded as usize, WIDTH + 2);
    // The source's 10 000 edges went through this engine's dispatch; the fan-in edges (one
    // per mid) were applied inline by the backend.
    let stats = engine.stats();
    assert_eq!(stats.edges_applied as usize, WIDTH, "{stats:?}");
    assert_eq!(stats.completions_dispatched, 1);
    engine.shutdown().await.expect("shutdown");
}
