//! Hot-path benchmarks on a real Valkey server (`FF_VALKEY_URL`; skipped with a message when it
//! is unset).
//!
//! First a measurement report (printed, not asserted): round trips per executed node (flat and
//! a 10-node chain), memory per finished execution with a 100 B payload, flat throughput with
//! 16 workers against a bare RPUSH/BLMPOP list queue on the same server, and cascade latency.
//! `FF_BENCH_REPORT_ONLY=1` stops after the report. Then criterion benches of single
//! operations: claim + complete, create a 10-node flow, one inline cascade.

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::Criterion;
use ff_backend_valkey::{ValkeyBackend, ValkeyConfig};
use ff_core::{
    ClaimRequest, CompleteRequest, EdgeSpec, EngineBackend, ExecutionSpec, FlowSpec, Lane, NodeKey,
    NodeSpec, WorkerId,
};
use redis::Value;

fn key(k: &str) -> NodeKey {
    NodeKey::new(k).expect("node key")
}

fn lane(name: &str) -> Lane {
    Lane::new(name).expect("lane")
}

async fn backend(url: &str, tag: &str) -> Arc<ValkeyBackend> {
    let config = ValkeyConfig::standalone(url)
        .with_namespace(format!("bench-{tag}-{}", uuid::Uuid::new_v4().simple()));
    Arc::new(ValkeyBackend::connect(config).await.expect("connect"))
}

fn chain(lane: &Lane, n: usize, payload: &[u8]) -> FlowSpec {
    let mut spec = FlowSpec::new();
    for i in 0..n {
        spec = spec.node(NodeSpec::new(
            key(&format!("n{i}")),
            ExecutionSpec::new(lane.clone(), payload.to_vec()),
        ));
        if i > 0 {
            spec = spec.edge(EdgeSpec::new(
                key(&format!("n{}", i - 1)),
                key(&format!("n{i}")),
            ));
        }
    }
    spec
}

/// A worker loop: claim, then complete with claim_next until `stop` says so.
async fn work(
    backend: Arc<ValkeyBackend>,
    lane: Lane,
    done: Arc<std::sync::atomic::AtomicUsize>,
    target: usize,
) {
    use std::sync::atomic::Ordering;
    let claim = ClaimRequest::new(WorkerId::random(), lane);
    let mut current = Vec::new();
    while done.load(Ordering::Relaxed) < target {
        if current.is_empty() {
            current = backend.claim(&claim).await.expect("claim");
            if current.is_empty() {
                tokio::time::sleep(Duration::from_micros(200)).await;
                continue;
            }
        }
        let c: ff_core::ClaimedExecution = current.remove(0);
        let next = backend
            .complete(&CompleteRequest::new(c.fence).with_claim_next(claim.clone()))
            .await
            .expect("complete");
        done.fetch_add(1, Ordering::Relaxed);
        current.extend(next.next);
    }
}

/// Flat work in two phases: `total` submissions by 4 producers, then 16 workers drain them
/// (claim, then complete with claim_next). Returns (submissions/s, executions drained/s,
/// end-to-end executions/s, FCALLs per execution, round trips per execution).
async fn flat_run(
    b: Arc<ValkeyBackend>,
    total: usize,
    workers: usize,
    payload: usize,
) -> (f64, f64, f64, f64, f64) {
    use std::sync::atomic::AtomicUsize;
    let l = lane("flat");
    let spec = ExecutionSpec::new(l.clone(), vec![7; payload]);
    let done = Arc::new(AtomicUsize::new(0));
    let before = b.call_counts();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let b = b.clone();
        let spec = spec.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..total / 4 {
                b.create_execution(&spec).await.expect("create");
            }
        }));
    }
    for t in tasks {
        t.await.expect("producer");
    }
    let submitted = started.elapsed().as_secs_f64();
    let drain_started = Instant::now();
    let mut handles = Vec::new();
    for _ in 0..workers {
        handles.push(tokio::spawn(work(
            b.clone(),
            l.clone(),
            done.clone(),
            total,
        )));
    }
    for h in handles {
        h.await.expect("worker");
    }
    let drained = drain_started.elapsed().as_secs_f64();
    let after = b.call_counts();
    let n = total as f64;
    (
        n / submitted,
        n / drained,
        n / (submitted + drained),
        (after.fcalls - before.fcalls) as f64 / n,
        (after.round_trips - before.round_trips) as f64 / n,
    )
}

/// The same two phases on a bare list queue: RPUSH by 4 producers, BLMPOP by 16 workers.
async fn bare_list_queue(
    url: &str,
    total: usize,
    workers: usize,
    payload: usize,
) -> (f64, f64, f64) {
    let client = redis::Client::open(url).expect("url");
    let queue = format!("bench-bare-{}", uuid::Uuid::new_v4().simple());
    let started = Instant::now();
    let mut handles = Vec::new();
    for _ in 0..4 {
        let mut conn = client
            .get_multiplexed_async_connection()
            .await
            .expect("connect");
        let queue = queue.clone();
        handles.push(tokio::spawn(async move {
            for _ in 0..total / 4 {
                let _: i64 = redis::cmd("RPUSH")
                    .arg(&queue)
                    .arg(vec![7u8; payload])
                    .query_async(&mut conn)
                    .await
                    .expect("RPUSH");
            }
        }));
    }
    for h in handles.drain(..) {
        h.await.expect("bare producer");
    }
    let submitted = started.elapsed().as_secs_f64();
    let drain_started = Instant::now();
    let taken = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    for _ in 0..workers {
        // BLMPOP blocks: one dedicated connection per worker.
        let mut conn = client
            .get_multiplexed_async_connection()
            .await
            .expect("connect");
        let queue = queue.clone();
        let taken = taken.clone();
        handles.push(tokio::spawn(async move {
            use std::sync::atomic::Ordering;
            while taken.load(Ordering::Relaxed) < total {
                let v: Value = redis::cmd("BLMPOP")
                    .arg(0.05)
                    .arg(1)
                    .arg(&queue)
                    .arg("LEFT")
                    .query_async(&mut conn)
                    .await
                    .expect("BLMPOP");
                if v != Value::Nil {
                    taken.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for h in handles {
        h.await.expect("bare");
    }
    let drained = drain_started.elapsed().as_secs_f64();
    let n = total as f64;
    (n / submitted, n / drained, n / (submitted + drained))
}

async fn chain_run(b: Arc<ValkeyBackend>, flows: usize, workers: usize) -> (f64, f64, f64) {
    use std::sync::atomic::AtomicUsize;
    let l = lane("chain");
    let total = flows * 10;
    let done = Arc::new(AtomicUsize::new(0));
    for _ in 0..flows {
        b.create_flow(&chain(&l, 10, &[7; 100]))
            .await
            .expect("flow");
    }
    let before = b.call_counts();
    let started = Instant::now();
    let mut handles = Vec::new();
    for _ in 0..workers {
        handles.push(tokio::spawn(work(
            b.clone(),
            l.clone(),
            done.clone(),
            total,
        )));
    }
    for h in handles {
        h.await.expect("worker");
    }
    let elapsed = started.elapsed().as_secs_f64();
    let after = b.call_counts();
    let n = total as f64;
    (
        n / elapsed,
        (after.fcalls - before.fcalls) as f64 / n,
        (after.round_trips - before.round_trips) as f64 / n,
    )
}

fn used_memory(info: &Value) -> i64 {
    let text = match info {
        Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        Value::VerbatimString { text, .. } => text.clone(),
        other => panic!("INFO answer {other:?}"),
    };
    text.lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("used_memory")
}

async fn memory_per_execution(url: &str, n: usize) -> (f64, i64) {
    let b = backend(url, "mem").await;
    let l = lane("mem");
    // Warm the partition structures (sets, sequence) so the delta counts executions.
    let spec = ExecutionSpec::new(l.clone(), vec![7; 100]);
    let claim = ClaimRequest::new(WorkerId::random(), l.clone()).with_max(100);
    let mut info = redis::cmd("INFO");
    info.arg("memory");
    let run = |count: usize| {
        let b = b.clone();
        let spec = spec.clone();
        let claim = claim.clone();
        async move {
            for _ in 0..count {
                b.create_execution(&spec).await.expect("create");
            }
            let mut finished = 0;
            while finished < count {
                for c in b.claim(&claim).await.expect("claim") {
                    b.complete(&CompleteRequest::new(c.fence))
                        .await
                        .expect("complete");
                    finished += 1;
                }
            }
        }
    };
    run(n / 10).await;
    let before = used_memory(&b.raw_command(&info).await.expect("INFO"));
    run(n).await;
    let after = used_memory(&b.raw_command(&info).await.expect("INFO"));
    // One finished execution's own keys.
    let one = b.create_execution(&spec).await.expect("create").id;
    let c = b.claim(&claim).await.expect("claim");
    for c in c {
        b.complete(&CompleteRequest::new(c.fence))
            .await
            .expect("complete");
    }
    let hash_key = b.key_space().execution(&one);
    let mut usage = redis::cmd("MEMORY");
    usage.arg("USAGE").arg(&hash_key).arg("SAMPLES").arg(0);
    let hash = match b.raw_command(&usage).await.expect("MEMORY USAGE") {
        Value::Int(i) => i,
        _ => -1,
    };
    ((after - before) as f64 / n as f64, hash)
}

async fn cascade_latency(url: &str, samples: usize) -> (Duration, Duration, Duration, Duration) {
    let b = backend(url, "lat").await;
    let l = lane("lat");
    let other = lane("lat-down");
    let worker = WorkerId::random();
    let mut complete_times = Vec::new();
    let mut claimable_times = Vec::new();
    for _ in 0..samples {
        let spec = FlowSpec::new()
            .node(NodeSpec::new(
                key("up"),
                ExecutionSpec::new(l.clone(), vec![1]),
            ))
            .node(NodeSpec::new(
                key("down"),
                ExecutionSpec::new(other.clone(), vec![2]),
            ))
            .edge(EdgeSpec::new(key("up"), key("down")));
        b.create_flow(&spec).await.expect("flow");
        let up = b
            .claim(&ClaimRequest::new(worker.clone(), l.clone()))
            .await
            .expect("claim");
        let started = Instant::now();
        b.complete(&CompleteRequest::new(up[0].fence))
            .await
            .expect("complete");
        let completed = Instant::now();
        // Another worker (of the downstream lane) claims it: how long after `complete`
        // returned is it claimable? Poll until the claim succeeds.
        let down_claim = ClaimRequest::new(WorkerId::random(), other.clone());
        loop {
            let got = b.claim(&down_claim).await.expect("claim down");
            if let Some(d) = got.first() {
                claimable_times.push(completed.elapsed());
                b.complete(&CompleteRequest::new(d.fence))
                    .await
                    .expect("done");
                break;
            }
        }
        complete_times.push(completed - started);
    }
    complete_times.sort();
    claimable_times.sort();
    let pct = |v: &Vec<Duration>, p: f64| v[((v.len() as f64 - 1.0) * p) as usize];
    (
        pct(&complete_times, 0.5),
        pct(&complete_times, 0.99),
        pct(&claimable_times, 0.5),
        pct(&claimable_times, 0.99),
    )
}

fn report(rt: &tokio::runtime::Runtime, url: &str) {
    rt.block_on(async {
        let (sub, drain, e2e, fcalls, rts) =
            flat_run(backend(url, "flat").await, 8000, 16, 4096).await;
        let (bsub, bdrain, be2e) = bare_list_queue(url, 8000, 16, 4096).await;
        println!(
            "flat, 8000 x 4 KiB: submit {sub:.0}/s (bare RPUSH {bsub:.0}/s), claim+complete \
             {drain:.0}/s with 16 workers (bare BLMPOP {bdrain:.0}/s), end to end {e2e:.0}/s \
             vs bare {be2e:.0}/s = {:.0} %",
            100.0 * e2e / be2e
        );
        println!("flat: {fcalls:.2} FCALLs and {rts:.2} round trips per execution (create + claim + complete)");
        let (chain_ops, fcalls, rts) = chain_run(backend(url, "chain").await, 100, 16).await;
        println!(
            "10-node chains (100 flows in flight, 16 workers): {chain_ops:.0} node executions/s \
             ({:.0} % of flat claim+complete); {fcalls:.2} FCALLs and {rts:.2} round trips per node",
            100.0 * chain_ops / drain
        );
        if let Some(seeds) = std::env::var("FF_VALKEY_CLUSTER_URLS").ok().filter(|s| !s.is_empty()) {
            let cluster = |tag: &str| {
                let config = ValkeyConfig::cluster(seeds.split(',').map(str::to_string))
                    .with_namespace(format!("bench-{tag}-{}", uuid::Uuid::new_v4().simple()));
                async move { Arc::new(ValkeyBackend::connect(config).await.expect("connect")) }
            };
            let (_, drain, _, fcalls, rts) = flat_run(cluster("cflat").await, 4000, 16, 4096).await;
            println!(
                "cluster flat: claim+complete {drain:.0}/s; {fcalls:.2} FCALLs and {rts:.2} round \
                 trips per execution"
            );
            let (ops, fcalls, rts) = chain_run(cluster("cchain").await, 100, 16).await;
            println!(
                "cluster chains: {ops:.0} node executions/s; {fcalls:.2} FCALLs and {rts:.2} round \
                 trips per node"
            );
        }
        let (per_exec, hash) = memory_per_execution(url, 20_000).await;
        println!(
            "memory: {per_exec:.0} bytes of used_memory per finished execution with a 100 B \
             payload (INFO delta over 20000); MEMORY USAGE of one execution hash: {hash} bytes"
        );
        let (c50, c99, l50, l99) = cascade_latency(url, 500).await;
        println!(
            "cascade: complete() of an upstream p50 {c50:?} p99 {c99:?}; downstream claimed by \
             another worker after complete() returned: p50 {l50:?} p99 {l99:?}"
        );
    });
}

fn benches(c: &mut Criterion, rt: &tokio::runtime::Runtime, url: &str) {
    let b = rt.block_on(backend(url, "criterion"));
    let l = lane("crit");
    let spec = ExecutionSpec::new(l.clone(), vec![7; 100]);
    let claim = ClaimRequest::new(WorkerId::random(), l.clone());
    c.bench_function("create_execution", |bench| {
        bench.to_async(rt).iter(|| async {
            b.create_execution(&spec).await.expect("create");
        })
    });
    c.bench_function("claim + complete", |bench| {
        bench.to_async(rt).iter(|| async {
            let got = b.claim(&claim).await.expect("claim");
            for c in got {
                b.complete(&CompleteRequest::new(c.fence))
                    .await
                    .expect("complete");
            }
        })
    });
    let flow_lane = lane("crit-flow");
    c.bench_function("create_flow (10-node chain)", |bench| {
        bench.to_async(rt).iter(|| async {
            b.create_flow(&chain(&flow_lane, 10, &[7; 100]))
                .await
                .expect("flow");
        })
    });
    let up_lane = lane("crit-up");
    let worker = WorkerId::random();
    c.bench_function(
        "one cascade (complete upstream, downstream ready)",
        |bench| {
            bench.to_async(rt).iter_custom(|iters| {
                let b = b.clone();
                let up_lane = up_lane.clone();
                let worker = worker.clone();
                async move {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        let spec = FlowSpec::new()
                            .node(NodeSpec::new(
                                key("up"),
                                ExecutionSpec::new(up_lane.clone(), vec![]),
                            ))
                            .node(NodeSpec::new(
                                key("down"),
                                ExecutionSpec::new(lane("crit-down"), vec![]),
                            ))
                            .edge(EdgeSpec::new(key("up"), key("down")));
                        b.create_flow(&spec).await.expect("flow");
                        let up = b
                            .claim(&ClaimRequest::new(worker.clone(), up_lane.clone()))
                            .await
                            .expect("claim");
                        let started = Instant::now();
                        b.complete(&CompleteRequest::new(up[0].fence))
                            .await
                            .expect("complete");
                        total += started.elapsed();
                    }
                    total
                }
            })
        },
    );
}

fn main() {
    let Some(url) = std::env::var("FF_VALKEY_URL")
        .ok()
        .filter(|u| !u.is_empty())
    else {
        println!("hot_path: skipped: set FF_VALKEY_URL to a Valkey server to run these benchmarks");
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    report(&rt, &url);
    if std::env::var("FF_BENCH_REPORT_ONLY").is_ok() {
        return;
    }
    let mut c = Criterion::default()
        .configure_from_args()
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1));
    benches(&mut c, &rt, &url);
    c.final_summary();
}
