//! An idle engine visits only partitions with something due: a few `due_summary` calls per
//! second, no `scan` call at all, and still reacts when work falls due.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use ff_core::memory::MemoryBackend;
use ff_core::{EngineBackend, ExecutionSpec, ExecutionState, Lane};
use ff_engine::{Engine, EngineConfig};

use crate::common::eventually;
use crate::faulty::Faulty;

#[tokio::test]
async fn an_idle_engine_scans_only_what_is_due() {
    let faulty = Arc::new(Faulty::new(MemoryBackend::new()));
    let backend: Arc<dyn EngineBackend> = faulty.clone();
    let engine = Engine::builder(Arc::clone(&backend))
        .config(EngineConfig::default())
        .start()
        .await
        .expect("engine starts");
    eventually(
        "the engine owns every partition",
        Duration::from_secs(5),
        || async {
            let owners = backend.partition_owners().await.ok()?;
            (owners.len() == 256).then_some(())
        },
    )
    .await;
    let summaries_before = faulty.faults.due_summaries.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        faulty.faults.scans.load(Ordering::Relaxed),
        0,
        "nothing is due on any of the 256 partitions: no scan call"
    );
    let summaries = faulty.faults.due_summaries.load(Ordering::Relaxed) - summaries_before;
    assert!(
        (1..=20).contains(&summaries),
        "one shared summary per refresh, not one call per partition and scanner: {summaries} in 2 s"
    );

    let lane = Lane::new("idle").expect("valid lane");
    let spec = ExecutionSpec::new(lane, vec![]).with_delay(Duration::from_millis(200));
    let id = backend.create_execution(&spec).await.expect("create").id;
    eventually(
        "the delayed execution is promoted",
        Duration::from_secs(5),
        || async {
            let state = backend.describe_execution(&id).await.ok()?.state();
            (state == ExecutionState::Ready).then_some(())
        },
    )
    .await;
    let scans = faulty.faults.scans.load(Ordering::Relaxed);
    assert!(
        (1..=4).contains(&scans),
        "only the partition with due work is scanned: {scans} scan calls"
    );
    engine.shutdown().await.expect("clean shutdown");
}
