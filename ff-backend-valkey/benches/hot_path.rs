//! Hot-path benchmarks on a real Valkey server (`FF_VALKEY_URL`; skipped with a message when it
//! is unset).
//!
//! First a measurement report (printed, not asserted):
//!
//! - the anatomy of each hot operation, run alone: server time per FCALL (`INFO
//!   commandstats`), server CPU per operation (`INFO cpu`, network included), and the commands
//!   the function ran; with the server under `valgrind --tool=callgrind`
//!   (`FF_BENCH_CALLGRIND_PID`, `FF_BENCH_CALLGRIND_OUT` = its `--callgrind-out-file`) also the
//!   server instructions per operation, which unlike times do not depend on the machine's load;
//! - in each of `FF_BENCH_ROUNDS` rounds (default 3; the machine may be shared, so only ratios
//!   measured side by side mean something): flat throughput with 16 workers
//!   (`FF_BENCH_FLAT_N` executions, default 8000), then a bare RPUSH/BLMPOP list queue on the
//!   same server (with server and bench-process CPU per execution, and under callgrind the
//!   server instructions per execution of the submit and the drain phase), then 10-node
//!   chains compared with that round's flat claim + complete (under callgrind: server
//!   instructions per node of the drain);
//! - round trips per executed node, the same on a cluster when `FF_VALKEY_CLUSTER_URLS` is set,
//!   memory per finished execution with a 100 B payload, and cascade latency.
//!
//! `FF_BENCH_REPORT_ONLY=1` stops after the report, `FF_BENCH_ANATOMY_ONLY=1` after the anatomy,
//! `FF_BENCH_SKIP_ANATOMY=1` skips it, `FF_BENCH_ANATOMY_N` sets its operations per step (default
//! 2000). Then criterion benches of single operations: claim + complete, create a 10-node flow,
//! one inline cascade.

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

/// Server instructions of the two phases of a run (with callgrind; see [`callgrind_zero`]).
#[derive(Clone, Copy, Default)]
struct Phases {
    submit: Option<f64>,
    drain: Option<f64>,
}

impl Phases {
    /// ", <submit>k + <drain>k server instructions" per item, or nothing without callgrind.
    fn per(&self, n: f64) -> String {
        match (self.submit, self.drain) {
            (Some(s), Some(d)) => format!(
                ", {:.0}k + {:.0}k server instructions",
                s / n / 1000.0,
                d / n / 1000.0
            ),
            _ => String::new(),
        }
    }
}

/// Flat work in two phases: `total` submissions by 4 producers, then 16 workers drain them
/// (claim, then complete with claim_next). Returns (submissions/s, executions drained/s,
/// end-to-end executions/s, FCALLs per execution, round trips per execution) and the server
/// instructions of each phase.
async fn flat_run(
    b: Arc<ValkeyBackend>,
    total: usize,
    workers: usize,
    payload: usize,
) -> (f64, f64, f64, f64, f64, Phases) {
    use std::sync::atomic::AtomicUsize;
    let l = lane("flat");
    let spec = ExecutionSpec::new(l.clone(), vec![7; payload]);
    let done = Arc::new(AtomicUsize::new(0));
    let before = b.call_counts();
    let mut phases = Phases::default();
    callgrind_zero();
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
    phases.submit = callgrind_instructions();
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
    phases.drain = callgrind_instructions();
    let after = b.call_counts();
    let n = total as f64;
    (
        n / submitted,
        n / drained,
        n / (submitted + drained),
        (after.fcalls - before.fcalls) as f64 / n,
        (after.round_trips - before.round_trips) as f64 / n,
        phases,
    )
}

/// The same two phases on a bare list queue: RPUSH by 4 producers, BLMPOP by 16 workers.
async fn bare_list_queue(
    url: &str,
    total: usize,
    workers: usize,
    payload: usize,
) -> (f64, f64, f64, Phases) {
    let client = redis::Client::open(url).expect("url");
    let queue = format!("bench-bare-{}", uuid::Uuid::new_v4().simple());
    let mut phases = Phases::default();
    callgrind_zero();
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
    phases.submit = callgrind_instructions();
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
    phases.drain = callgrind_instructions();
    let n = total as f64;
    (
        n / submitted,
        n / drained,
        n / (submitted + drained),
        phases,
    )
}

/// 10-node chains: `flows` created, then drained by `workers`. Returns (node executions/s,
/// FCALLs per node, round trips per node, server instructions of the drain).
async fn chain_run(
    b: Arc<ValkeyBackend>,
    flows: usize,
    workers: usize,
) -> (f64, f64, f64, Option<f64>) {
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
    callgrind_zero();
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
    let instructions = callgrind_instructions();
    let after = b.call_counts();
    let n = total as f64;
    (
        n / elapsed,
        (after.fcalls - before.fcalls) as f64 / n,
        (after.round_trips - before.round_trips) as f64 / n,
        instructions,
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

/// `INFO commandstats` as command → (calls, usec).
async fn commandstats(b: &ValkeyBackend) -> std::collections::HashMap<String, (u64, u64)> {
    let mut info = redis::cmd("INFO");
    info.arg("commandstats");
    let text = match b.raw_command(&info).await.expect("INFO commandstats") {
        Value::BulkString(b) => String::from_utf8_lossy(&b).into_owned(),
        Value::VerbatimString { text, .. } => text,
        other => panic!("INFO answer {other:?}"),
    };
    let mut out = std::collections::HashMap::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("cmdstat_") else {
            continue;
        };
        let Some((name, fields)) = rest.split_once(':') else {
            continue;
        };
        let field = |f: &str| -> u64 {
            fields
                .split(',')
                .find_map(|kv| kv.strip_prefix(f)?.strip_prefix('='))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        out.insert(name.to_string(), (field("calls"), field("usec")));
    }
    out
}

/// The server's CPU time so far (user + system, all threads), in microseconds.
async fn server_cpu_us(b: &ValkeyBackend) -> f64 {
    let mut info = redis::cmd("INFO");
    info.arg("cpu");
    let text = match b.raw_command(&info).await.expect("INFO cpu") {
        Value::BulkString(b) => String::from_utf8_lossy(&b).into_owned(),
        Value::VerbatimString { text, .. } => text,
        other => panic!("INFO answer {other:?}"),
    };
    let field = |name: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0.0)
    };
    (field("used_cpu_user:") + field("used_cpu_sys:")) * 1e6
}

/// This process's CPU time so far (user + system, all threads), in microseconds (10 ms
/// resolution: `/proc/self/stat`).
fn client_cpu_us() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which is in parentheses): utime is the 12th, stime the 13th.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) * 1e4
}

/// With `FF_BENCH_CALLGRIND_PID` naming a server run under `valgrind --tool=callgrind`
/// (`--callgrind-out-file=<file>` with `FF_BENCH_CALLGRIND_OUT=<file>`): zeroes its counters.
/// Instruction counts do not depend on the machine's load, unlike times.
fn callgrind_zero() {
    if let Ok(pid) = std::env::var("FF_BENCH_CALLGRIND_PID") {
        let _ = std::process::Command::new("callgrind_control")
            .args(["-z", &pid])
            .output();
    }
}

/// Dumps the callgrind counters since [`callgrind_zero`] and returns the instructions the
/// server executed, or `None` without callgrind.
fn callgrind_instructions() -> Option<f64> {
    let pid = std::env::var("FF_BENCH_CALLGRIND_PID").ok()?;
    let out = std::env::var("FF_BENCH_CALLGRIND_OUT").ok()?;
    let _ = std::fs::remove_file(&out);
    std::process::Command::new("callgrind_control")
        .args(["-d", &pid])
        .output()
        .ok()?;
    // The dump is written as `<out>.<n>` (or `<out>` for the first): take the newest.
    let dir = std::path::Path::new(&out).parent()?;
    let stem = std::path::Path::new(&out)
        .file_name()?
        .to_str()?
        .to_string();
    let newest = std::fs::read_dir(dir)
        .ok()?
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_str().is_some_and(|n| n.starts_with(&stem)))
        .max_by_key(|e| e.metadata().and_then(|m| m.modified()).ok())?;
    let text = std::fs::read_to_string(newest.path()).ok()?;
    text.lines()
        .find_map(|l| {
            l.strip_prefix("totals:")
                .or_else(|| l.strip_prefix("summary:"))
        })
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// Runs `op` (which sends `n` FCALLs of one function) and prints the server time per FCALL and
/// the commands the function ran per call (from the `INFO commandstats` delta; the server must
/// be otherwise idle).
async fn anatomy_of<F: std::future::Future<Output = ()>>(
    b: &ValkeyBackend,
    what: &str,
    n: u64,
    op: F,
) {
    let before = commandstats(b).await;
    let cpu_before = server_cpu_us(b).await;
    callgrind_zero();
    op.await;
    let instructions = callgrind_instructions();
    let cpu = server_cpu_us(b).await - cpu_before;
    let after = commandstats(b).await;
    let mut inner: Vec<(String, u64)> = Vec::new();
    let mut fcall = (0u64, 0u64);
    for (name, (calls, usec)) in &after {
        let (c0, u0) = before.get(name).copied().unwrap_or((0, 0));
        let dc = calls - c0;
        if name == "fcall" {
            fcall = (dc, usec - u0);
        } else if name != "info" && dc > 0 {
            inner.push((name.clone(), dc));
        }
    }
    inner.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let total: u64 = inner.iter().map(|(_, c)| c).sum();
    let per = |c: u64| c as f64 / n as f64;
    let detail: Vec<String> = inner
        .iter()
        .map(|(name, c)| format!("{name} {:.2}", per(*c)))
        .collect();
    let instructions = instructions
        .map(|i| format!(", {:.0}k server instructions/op", i / n as f64 / 1000.0))
        .unwrap_or_default();
    println!(
        "  {what:<34} {:>6.1} us/FCALL, server CPU {:>5.1} us/op{instructions} ({:.2} FCALLs/op), \
         {:>5.2} commands/op: {}",
        fcall.1 as f64 / fcall.0.max(1) as f64,
        cpu / n as f64,
        per(fcall.0),
        per(total),
        detail.join(", ")
    );
}

/// Server time and commands per hot-path operation, each measured alone (one client task, so
/// the numbers are the function's own cost, not queueing).
async fn anatomy(url: &str, n: usize) {
    use ff_core::{FailRequest, Failure, RetryPolicy};
    let b = backend(url, "anatomy").await;
    let l = lane("anat");
    let worker = WorkerId::random();
    let claim = ClaimRequest::new(worker.clone(), l.clone());
    let spec = ExecutionSpec::new(l.clone(), vec![7; 4096]);
    let retry_spec = spec
        .clone()
        .with_retry(RetryPolicy::fixed(3, Duration::ZERO));
    let count = n as u64;
    println!(
        "anatomy ({n} of each, one client): server time per FCALL (commandstats), server CPU per \
         operation (INFO cpu, includes the network round trip), commands per operation"
    );
    // Warm up: the lane exists, sets are non-empty.
    b.create_execution(&spec).await.expect("create");
    anatomy_of(&b, "create (4 KiB)", count, async {
        for _ in 0..n {
            b.create_execution(&spec).await.expect("create");
        }
    })
    .await;
    let mut claimed = Vec::new();
    anatomy_of(&b, "claim (max 1)", count, async {
        for _ in 0..n {
            claimed.extend(b.claim(&claim).await.expect("claim"));
        }
    })
    .await;
    anatomy_of(&b, "complete", count, async {
        for c in claimed.drain(..) {
            b.complete(&CompleteRequest::new(c.fence))
                .await
                .expect("complete");
        }
    })
    .await;
    for _ in 0..n + 1 {
        b.create_execution(&spec).await.expect("create");
    }
    let mut current = b.claim(&claim).await.expect("claim");
    anatomy_of(&b, "complete + claim_next", count, async {
        for _ in 0..n {
            // claim_next may look only where it is cheap: claim when it found nothing.
            let c = match current.pop() {
                Some(c) => c,
                None => b
                    .claim(&claim)
                    .await
                    .expect("claim")
                    .pop()
                    .expect("work left"),
            };
            current = b
                .complete(&CompleteRequest::new(c.fence).with_claim_next(claim.clone()))
                .await
                .expect("complete")
                .next;
        }
    })
    .await;
    for c in current.drain(..) {
        b.complete(&CompleteRequest::new(c.fence))
            .await
            .expect("complete");
    }
    for _ in 0..n {
        b.create_execution(&retry_spec).await.expect("create");
    }
    for _ in 0..n {
        claimed.extend(b.claim(&claim).await.expect("claim"));
    }
    anatomy_of(&b, "fail (retry at once)", count, async {
        for c in claimed.drain(..) {
            b.fail(&FailRequest::new(c.fence, Failure::retryable("boom")))
                .await
                .expect("fail");
        }
    })
    .await;
    anatomy_of(&b, "claim (a retry: 2nd attempt)", count, async {
        for _ in 0..n {
            claimed.extend(b.claim(&claim).await.expect("claim"));
        }
    })
    .await;
    for c in claimed.drain(..) {
        b.complete(&CompleteRequest::new(c.fence))
            .await
            .expect("complete");
    }
    let chain_lane = lane("anat-chain");
    let chain_claim = ClaimRequest::new(worker.clone(), chain_lane.clone());
    let flows = n / 10;
    anatomy_of(&b, "create_flow (10-node chain)", flows as u64, async {
        for _ in 0..flows {
            b.create_flow(&chain(&chain_lane, 10, &[7; 100]))
                .await
                .expect("flow");
        }
    })
    .await;
    let mut current = b.claim(&chain_claim).await.expect("claim");
    anatomy_of(
        &b,
        "chain node: complete + claim_next",
        (flows * 10 - 1) as u64,
        async {
            for _ in 0..flows * 10 - 1 {
                let c = match current.pop() {
                    Some(c) => c,
                    None => b
                        .claim(&chain_claim)
                        .await
                        .expect("claim")
                        .pop()
                        .expect("work left"),
                };
                current = b
                    .complete(&CompleteRequest::new(c.fence).with_claim_next(chain_claim.clone()))
                    .await
                    .expect("complete")
                    .next;
            }
        },
    )
    .await;
}

fn report(rt: &tokio::runtime::Runtime, url: &str) {
    rt.block_on(async {
        if std::env::var("FF_BENCH_SKIP_ANATOMY").is_err() {
            let n = std::env::var("FF_BENCH_ANATOMY_N")
                .ok()
                .and_then(|n| n.parse().ok())
                .unwrap_or(2000);
            anatomy(url, n).await;
        }
        if std::env::var("FF_BENCH_ANATOMY_ONLY").is_ok() {
            return;
        }
        // Flat and bare alternate, several rounds: the machine is shared, so only ratios
        // measured side by side mean something.
        let rounds: usize = std::env::var("FF_BENCH_ROUNDS")
            .ok()
            .and_then(|r| r.parse().ok())
            .unwrap_or(3);
        let mut ratios = Vec::new();
        let mut chain_ratios = Vec::new();
        let flat_n: usize = std::env::var("FF_BENCH_FLAT_N")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(8000);
        let per = flat_n as f64;
        for round in 0..rounds {
            let b = backend(url, "flat").await;
            let (cpu0, client0) = (server_cpu_us(&b).await, client_cpu_us());
            let (sub, drain, e2e, fcalls, rts, flat_instr) =
                flat_run(b.clone(), flat_n, 16, 4096).await;
            let (cpu1, client1) = (server_cpu_us(&b).await, client_cpu_us());
            let (bsub, bdrain, be2e, bare_instr) = bare_list_queue(url, flat_n, 16, 4096).await;
            let (cpu2, client2) = (server_cpu_us(&b).await, client_cpu_us());
            println!(
                "flat round {round}, {flat_n} x 4 KiB: submit {sub:.0}/s (bare RPUSH {bsub:.0}/s), \
                 claim+complete {drain:.0}/s with 16 workers (bare BLMPOP {bdrain:.0}/s), end to \
                 end {e2e:.0}/s vs bare {be2e:.0}/s = {:.0} %",
                100.0 * e2e / be2e
            );
            println!(
                "  per execution: server CPU {:.1} us{} (bare {:.1} us{}), bench-process CPU {:.1} \
                 us (bare {:.1} us); {fcalls:.2} FCALLs and {rts:.2} round trips",
                (cpu1 - cpu0) / per,
                flat_instr.per(per),
                (cpu2 - cpu1) / per,
                bare_instr.per(per),
                (client1 - client0) / per,
                (client2 - client1) / per,
            );
            ratios.push(100.0 * e2e / be2e);
            // The chain right after the flat run it is compared with.
            let (chain_ops, fcalls, rts, chain_instr) =
                chain_run(backend(url, "chain").await, 100, 16).await;
            println!(
                "  10-node chains (100 flows in flight, 16 workers): {chain_ops:.0} node \
                 executions/s ({:.0} % of this round's flat claim+complete); {fcalls:.2} FCALLs \
                 and {rts:.2} round trips per node{}",
                100.0 * chain_ops / drain,
                chain_instr
                    .map(|i| format!(", {:.0}k server instructions", i / 1000.0 / 1000.0))
                    .unwrap_or_default()
            );
            chain_ratios.push(100.0 * chain_ops / drain);
        }
        ratios.sort_by(f64::total_cmp);
        chain_ratios.sort_by(f64::total_cmp);
        println!(
            "median over {rounds} rounds: flat vs bare list queue, end to end {:.0} %; chain node \
             executions vs flat claim+complete {:.0} %",
            ratios[ratios.len() / 2],
            chain_ratios[chain_ratios.len() / 2]
        );
        if let Some(seeds) = std::env::var("FF_VALKEY_CLUSTER_URLS")
            .ok()
            .filter(|s| !s.is_empty())
        {
            let cluster = |tag: &str| {
                let config = ValkeyConfig::cluster(seeds.split(',').map(str::to_string))
                    .with_namespace(format!("bench-{tag}-{}", uuid::Uuid::new_v4().simple()));
                async move { Arc::new(ValkeyBackend::connect(config).await.expect("connect")) }
            };
            let (_, drain, _, fcalls, rts, _) =
                flat_run(cluster("cflat").await, 4000, 16, 4096).await;
            println!(
                "cluster flat: claim+complete {drain:.0}/s; {fcalls:.2} FCALLs and {rts:.2} round \
                 trips per execution"
            );
            let (ops, fcalls, rts, _) = chain_run(cluster("cchain").await, 100, 16).await;
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
