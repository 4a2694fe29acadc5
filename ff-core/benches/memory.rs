//! Throughput of the in-memory reference backend: it must comfortably carry the demo (tens of
//! thousands of executions per second).
//!
//! Run with `cargo bench -p ff-core --bench memory`.

#![allow(missing_docs)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ff_core::memory::MemoryBackend;
use ff_core::{
    ClaimRequest, CompleteRequest, EdgeSpec, EngineBackend, ExecutionSpec, FlowSpec, Lane, NodeKey,
    NodeSpec, WorkerId,
};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime for the benchmark")
}

fn lane() -> Lane {
    Lane::new("bench").expect("valid lane")
}

/// submit → claim → complete, one execution at a time.
fn flat_single(c: &mut Criterion) {
    let rt = runtime();
    let backend: Arc<dyn EngineBackend> = Arc::new(MemoryBackend::new());
    let spec = ExecutionSpec::new(lane(), vec![7u8; 100]);
    let claim = ClaimRequest::new(WorkerId::random(), lane());
    let mut group = c.benchmark_group("memory");
    group.throughput(Throughput::Elements(1));
    group.bench_function("submit_claim_complete", |b| {
        b.to_async(&rt).iter(|| async {
            backend.create_execution(&spec).await.expect("create");
            let claimed = backend.claim(&claim).await.expect("claim");
            for c in claimed {
                backend
                    .complete(&CompleteRequest::new(c.fence))
                    .await
                    .expect("complete");
            }
        });
    });
    group.finish();
}

/// 16 concurrent workers draining a pre-filled lane, claiming the next execution in the
/// complete call.
fn flat_concurrent(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("memory");
    const BATCH: u64 = 10_000;
    group.throughput(Throughput::Elements(BATCH));
    group.sample_size(10);
    group.bench_function("16_workers_10k_executions", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let backend: Arc<dyn EngineBackend> = Arc::new(MemoryBackend::new());
                    let spec = ExecutionSpec::new(lane(), vec![7u8; 4096]);
                    for _ in 0..BATCH {
                        backend.create_execution(&spec).await.expect("create");
                    }
                    let started = Instant::now();
                    let workers: Vec<_> = (0..16)
                        .map(|_| {
                            let backend = backend.clone();
                            tokio::spawn(async move {
                                let claim = ClaimRequest::new(WorkerId::random(), lane());
                                let mut held = backend.claim(&claim).await.expect("claim");
                                while let Some(c) = held.pop() {
                                    let request = CompleteRequest::new(c.fence)
                                        .with_claim_next(claim.clone());
                                    held = backend.complete(&request).await.expect("complete").next;
                                }
                            })
                        })
                        .collect();
                    for worker in workers {
                        worker.await.expect("worker task");
                    }
                    total += started.elapsed();
                }
                total
            })
        });
    });
    group.finish();
}

/// Creating and running a 10-node chain: every hop cascades inline and the next node comes
/// back from the complete call.
fn chain(c: &mut Criterion) {
    let rt = runtime();
    let backend: Arc<dyn EngineBackend> = Arc::new(MemoryBackend::new());
    let keys: Vec<NodeKey> = (0..10)
        .map(|i| NodeKey::new(format!("n{i}")).expect("valid key"))
        .collect();
    let claim = ClaimRequest::new(WorkerId::random(), lane());
    let mut group = c.benchmark_group("memory");
    group.throughput(Throughput::Elements(10));
    group.bench_function("chain_10_nodes", |b| {
        b.to_async(&rt).iter(|| async {
            let mut spec = FlowSpec::new();
            for key in &keys {
                spec = spec.node(NodeSpec::new(
                    key.clone(),
                    ExecutionSpec::new(lane(), vec![1; 100]),
                ));
            }
            for pair in keys.windows(2) {
                spec = spec.edge(EdgeSpec::new(pair[0].clone(), pair[1].clone()));
            }
            backend.create_flow(&spec).await.expect("create flow");
            let mut held = backend.claim(&claim).await.expect("claim");
            while let Some(c) = held.pop() {
                let request = CompleteRequest::new(c.fence).with_claim_next(claim.clone());
                held = backend.complete(&request).await.expect("complete").next;
            }
        });
    });
    group.finish();
}

criterion_group!(benches, flat_single, flat_concurrent, chain);
criterion_main!(benches);
