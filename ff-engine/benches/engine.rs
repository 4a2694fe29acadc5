//! Engine and worker overhead on the in-memory backend.
//!
//! - `dispatch/drain`: completions retired per second by one engine's dispatch loop, from
//!   start until a backlog of pending completions (one per flow, two edges each) is gone.
//! - `worker/*`: executions per second from `ready` to `succeeded` with a no-op handler,
//!   through [`Worker`] (with and without `claim_next`-sized slots) versus a hand-written
//!   sequential claim/complete loop on the same backend: the price of the runtime.
//!
//! Each measured iteration gets a fresh backend; building it is not timed.

#![allow(missing_docs)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ff_core::memory::MemoryBackend;
use ff_core::{
    ClaimRequest, CompleteRequest, EdgeSpec, EngineBackend, ExecutionSpec, FlowSpec, Lane, NodeKey,
    NodeSpec, PartitionConfig, WorkerId,
};
use ff_engine::{Engine, Job, Worker};
use tokio::runtime::Runtime;

const FLOWS: u64 = 2_000;
const EXECUTIONS: u64 = 5_000;

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

fn key(k: &str) -> NodeKey {
    NodeKey::new(k).expect("valid key")
}

/// A backend holding `FLOWS` pending completions (inline cascades off).
async fn backlog() -> Arc<dyn EngineBackend> {
    let backend: Arc<dyn EngineBackend> = Arc::new(
        MemoryBackend::builder()
            .partitions(PartitionConfig::new(64).expect("64 partitions"))
            .inline_cascade_limit(0)
            .build(),
    );
    let lane = Lane::new("bench").expect("lane");
    for _ in 0..FLOWS {
        let spec = FlowSpec::new()
            .node(NodeSpec::new(
                key("root"),
                ExecutionSpec::new(lane.clone(), "r"),
            ))
            .node(NodeSpec::new(
                key("a"),
                ExecutionSpec::new(lane.clone(), "a"),
            ))
            .node(NodeSpec::new(
                key("b"),
                ExecutionSpec::new(lane.clone(), "b"),
            ))
            .edge(EdgeSpec::new(key("root"), key("a")))
            .edge(EdgeSpec::new(key("root"), key("b")));
        backend.create_flow(&spec).await.expect("flow");
    }
    let worker = WorkerId::random();
    loop {
        let claimed = backend
            .claim(&ClaimRequest::new(worker.clone(), lane.clone()).with_max(1000))
            .await
            .expect("claim");
        if claimed.is_empty() {
            return backend;
        }
        for c in claimed {
            backend
                .complete(&CompleteRequest::new(c.fence))
                .await
                .expect("complete");
        }
    }
}

fn dispatch(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("dispatch");
    group.throughput(Throughput::Elements(FLOWS));
    group.sample_size(10);
    group.bench_function("drain", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let backend = backlog().await;
                    let started = Instant::now();
                    let engine = Engine::builder(backend).start().await.expect("engine");
                    while engine.stats().completions_dispatched < FLOWS {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                    total += started.elapsed();
                    engine.shutdown().await.expect("shutdown");
                }
                total
            })
        });
    });
    group.finish();
}

async fn ready(n: u64) -> (Arc<dyn EngineBackend>, Lane) {
    let backend: Arc<dyn EngineBackend> = Arc::new(MemoryBackend::new());
    let lane = Lane::new("bench").expect("lane");
    for i in 0..n {
        backend
            .create_execution(&ExecutionSpec::new(lane.clone(), i.to_le_bytes().to_vec()))
            .await
            .expect("created");
    }
    (backend, lane)
}

async fn through_worker(concurrency: usize) -> Duration {
    let (backend, lane) = ready(EXECUTIONS).await;
    let worker = Worker::builder(backend)
        .lane(lane)
        .concurrency(concurrency)
        .handler(|_job: Job| async { Ok(None) })
        .build()
        .expect("worker");
    let stats = worker.stats();
    let started = Instant::now();
    let report = worker
        .run(async move {
            while stats.snapshot().succeeded < EXECUTIONS {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
        .await
        .expect("worker ran");
    assert_eq!(report.succeeded, EXECUTIONS);
    started.elapsed()
}

async fn direct_loop(batch: u32) -> Duration {
    let (backend, lane) = ready(EXECUTIONS).await;
    let request = ClaimRequest::new(WorkerId::random(), lane).with_max(batch);
    let started = Instant::now();
    let mut done = 0;
    while done < EXECUTIONS {
        let claimed = backend.claim(&request).await.expect("claim");
        for c in claimed {
            backend
                .complete(&CompleteRequest::new(c.fence))
                .await
                .expect("complete");
            done += 1;
        }
    }
    started.elapsed()
}

fn worker(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("worker");
    group.throughput(Throughput::Elements(EXECUTIONS));
    group.sample_size(10);
    group.bench_function("direct_claim_complete_loop", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    total += direct_loop(16).await;
                }
                total
            })
        });
    });
    for concurrency in [1, 16] {
        group.bench_function(format!("worker_concurrency_{concurrency}"), |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        total += through_worker(concurrency).await;
                    }
                    total
                })
            });
        });
    }
    group.finish();
}

criterion_group!(benches, dispatch, worker);
criterion_main!(benches);
