//! Benchmarks of the postgres backend against a real server (`FF_POSTGRES_URL`; skipped with a
//! message without it).
//!
//! - `cargo bench -p ff-backend-postgres --bench postgres`: criterion timings of the hot
//!   single operations — claim + complete, complete with claim-next, create a 10-node chain
//!   flow, one cascade hop (complete the upstream, claim the downstream).
//! - `FF_PG_BENCH_REPORT=1 cargo bench -p ff-backend-postgres --bench postgres`: a one-shot
//!   report of the figures the design's bars are about, measured in one run on one server:
//!   flat throughput with 16 workers against a bare `SKIP LOCKED` queue table, 10-node chain
//!   throughput, both with hints off and on, cascade latency, round trips, statements and
//!   server CPU per executed node, rows and bytes per finished execution. The phases run in
//!   rounds (`FF_PG_BENCH_ROUNDS`, default 5), each round every phase once, so that load from
//!   elsewhere on the machine hits all of them alike; ratios are taken within a round.
//!   `FF_PG_BENCH_PHASES` picks phases (`bare,flat,chain,flat_hints,chain_hints`, plus
//!   `flat_var,chain_var`); `FF_PG_BENCH_VARIANT_SQL` is SQL run on a third schema after its
//!   migrations (e.g. an index dropped or a function replaced), which the `_var` phases
//!   measure against the unchanged schema in the same rounds: an A/B test of a schema change.
//!   Server CPU is read from `/proc/<pid>/schedstat` of the server's client backends, so
//!   only when the server runs on this machine.

use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use ff_backend_postgres::{PostgresBackend, PostgresConfig};
use ff_core::{
    ClaimRequest, CompleteRequest, EdgeSpec, EngineBackend, ExecutionSpec, FlowSpec, Lane, NodeKey,
    NodeSpec, WorkerId,
};

fn main() {
    let Some(url) = std::env::var("FF_POSTGRES_URL")
        .ok()
        .filter(|u| !u.trim().is_empty())
    else {
        println!("ff-backend-postgres benches skipped: FF_POSTGRES_URL is not set");
        return;
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("invariant: a tokio runtime can be built for the benchmark");
    if std::env::var("FF_PG_BENCH_REPORT").is_ok() {
        if let Err(err) = runtime.block_on(report::run(&url)) {
            eprintln!("report failed: {err}");
            std::process::exit(1);
        }
        return;
    }
    let mut c = Criterion::default().configure_from_args();
    let backend = runtime
        .block_on(connect(&url, "ffbench", 16))
        .expect("connect to FF_POSTGRES_URL");
    hot_paths(&mut c, &runtime, &backend);
    c.final_summary();
}

fn lane(name: &str) -> Lane {
    Lane::new(name).expect("valid lane")
}

fn key(k: &str) -> NodeKey {
    NodeKey::new(k).expect("valid node key")
}

/// Connects to a fresh schema.
async fn connect(url: &str, schema: &str, pool: usize) -> Result<PostgresBackend, String> {
    connect_with(
        PostgresConfig::new(url)
            .with_schema(schema)
            .with_pool_size(pool),
    )
    .await
}

/// Connects to a fresh schema with `config`.
async fn connect_with(config: PostgresConfig) -> Result<PostgresBackend, String> {
    let backend = PostgresBackend::connect(config.clone())
        .await
        .map_err(|e| e.to_string())?;
    backend.drop_schema().await.map_err(|e| e.to_string())?;
    PostgresBackend::connect(config)
        .await
        .map_err(|e| e.to_string())
}

/// `len` random (incompressible) bytes, as `cargo xtask bench` uses: PostgreSQL compresses a
/// compressible payload into the row, and the 4 KiB payloads of the report would then never
/// reach TOAST, where real payloads of that size live.
fn payload(len: usize) -> Vec<u8> {
    (0..len).map(|_| rand::random::<u8>()).collect()
}

/// A chain `n0 → n1 → … → n(len-1)` on `lane`.
fn chain(lane: &Lane, len: usize, len_bytes: usize) -> FlowSpec {
    let mut spec = FlowSpec::new();
    for i in 0..len {
        spec = spec.node(NodeSpec::new(
            key(&format!("n{i}")),
            ExecutionSpec::new(lane.clone(), payload(len_bytes)),
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

fn hot_paths(c: &mut Criterion, rt: &tokio::runtime::Runtime, backend: &PostgresBackend) {
    let mut group = c.benchmark_group("postgres");
    group.throughput(Throughput::Elements(1));
    group.sample_size(20);
    group.measurement_time(Duration::from_secs(5));

    group.bench_function("claim_complete", |b| {
        let lane = lane("bench-flat");
        b.to_async(rt).iter_custom(|iters| {
            let backend = backend.clone();
            let lane = lane.clone();
            async move {
                let spec = ExecutionSpec::new(lane.clone(), payload(100));
                for _ in 0..iters {
                    backend.create_execution(&spec).await.expect("create");
                }
                let claim = ClaimRequest::new(WorkerId::random(), lane);
                let started = Instant::now();
                for _ in 0..iters {
                    for c in backend.claim(&claim).await.expect("claim") {
                        backend
                            .complete(&CompleteRequest::new(c.fence))
                            .await
                            .expect("complete");
                    }
                }
                started.elapsed()
            }
        });
    });

    group.bench_function("complete_with_claim_next", |b| {
        let lane = lane("bench-next");
        b.to_async(rt).iter_custom(|iters| {
            let backend = backend.clone();
            let lane = lane.clone();
            async move {
                let spec = ExecutionSpec::new(lane.clone(), payload(100));
                for _ in 0..=iters {
                    backend.create_execution(&spec).await.expect("create");
                }
                let claim = ClaimRequest::new(WorkerId::random(), lane);
                let mut current = backend.claim(&claim).await.expect("claim");
                let started = Instant::now();
                for _ in 0..iters {
                    let Some(c) = current.pop() else { break };
                    current = backend
                        .complete(&CompleteRequest::new(c.fence).with_claim_next(claim.clone()))
                        .await
                        .expect("complete")
                        .next;
                }
                let elapsed = started.elapsed();
                for c in current {
                    backend
                        .complete(&CompleteRequest::new(c.fence))
                        .await
                        .expect("complete");
                }
                elapsed
            }
        });
    });

    group.bench_function("create_flow_chain10", |b| {
        let lane = lane("bench-create");
        b.to_async(rt).iter(|| {
            let backend = backend.clone();
            let spec = chain(&lane, 10, 100);
            async move {
                backend.create_flow(&spec).await.expect("create flow");
            }
        });
    });

    group.bench_function("cascade_one_hop", |b| {
        let lane = lane("bench-hop");
        b.to_async(rt).iter_custom(|iters| {
            let backend = backend.clone();
            let lane = lane.clone();
            async move {
                let claim = ClaimRequest::new(WorkerId::random(), lane.clone());
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    backend
                        .create_flow(&chain(&lane, 2, 100))
                        .await
                        .expect("create flow");
                    let root = backend.claim(&claim).await.expect("claim root");
                    let started = Instant::now();
                    for c in root {
                        backend
                            .complete(&CompleteRequest::new(c.fence))
                            .await
                            .expect("complete root");
                    }
                    let child = backend.claim(&claim).await.expect("claim child");
                    total += started.elapsed();
                    for c in child {
                        backend
                            .complete(&CompleteRequest::new(c.fence))
                            .await
                            .expect("complete child");
                    }
                }
                total
            }
        });
    });
    group.finish();
}

mod report {
    //! The one-shot measurement report.

    use std::collections::HashMap;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::{Duration, Instant};

    use ff_backend_postgres::{PostgresBackend, PostgresConfig};
    use ff_core::{
        ClaimRequest, ClaimedExecution, CompleteRequest, EngineBackend, ExecutionSpec, Lane,
        WorkerId,
    };

    use tokio_postgres::{Client, NoTls};

    use super::{chain, connect, connect_with, lane};

    const WORKERS: usize = 16;
    const FLAT: usize = 4_000;
    const PAYLOAD: usize = 4 * 1024;
    const CHAINS: usize = 100;
    const CHAIN_LEN: usize = 10;
    /// Batches of `CHAINS` flows per chain phase (as many nodes as the flat phase).
    const CHAIN_BATCHES: usize = FLAT / (CHAINS * CHAIN_LEN);

    type Res<T> = Result<T, String>;

    /// The phases of each round (`FF_PG_BENCH_PHASES`, comma-separated; default all):
    /// `bare`, `flat`, `chain`, `flat_hints`, `chain_hints`.
    fn phases() -> Vec<String> {
        std::env::var("FF_PG_BENCH_PHASES")
            .unwrap_or_else(|_| "bare,flat,chain,flat_hints,chain_hints".into())
            .split(',')
            .map(|p| p.trim().to_string())
            .collect()
    }

    fn rounds() -> usize {
        std::env::var("FF_PG_BENCH_ROUNDS")
            .ok()
            .and_then(|r| r.parse().ok())
            .filter(|r| *r > 0)
            .unwrap_or(5)
    }

    async fn client(url: &str) -> Res<Client> {
        let (client, connection) = tokio_postgres::connect(url, NoTls)
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(connection);
        Ok(client)
    }

    /// Statements executed by the server, nested ones included (pg_stat_statements with
    /// `track = all`, when loaded). Counted when each statement ends: no settling needed.
    async fn server_statements(admin: &Client) -> Option<i64> {
        admin
            .query_one(
                "SELECT sum(calls)::bigint FROM pg_stat_statements
                 WHERE query NOT ILIKE '%pg_stat%'",
                &[],
            )
            .await
            .ok()
            .and_then(|row| row.get::<_, Option<i64>>(0))
    }

    /// WAL inserted so far, in bytes (exact, unlike the cumulative statistics).
    async fn wal_lsn(admin: &Client) -> Option<i64> {
        admin
            .query_one(
                "SELECT pg_wal_lsn_diff(pg_current_wal_insert_lsn(), '0/0')::bigint",
                &[],
            )
            .await
            .ok()
            .map(|row| row.get::<_, i64>(0))
    }

    /// CPU time of the server's client backends, when it runs on this machine: nanoseconds on
    /// CPU per process (`/proc/<pid>/schedstat`). Less sensitive to load from elsewhere than
    /// throughput; background work (WAL writer, checkpoints, autovacuum) is left out, as it
    /// comes in bursts that would make the figure noisy.
    struct ServerCpu {
        start: HashMap<i32, u64>,
    }

    async fn server_pids(admin: &Client) -> Vec<i32> {
        admin
            .query(
                "SELECT pid FROM pg_stat_activity WHERE backend_type = 'client backend'",
                &[],
            )
            .await
            .map(|rows| rows.iter().map(|r| r.get::<_, i32>(0)).collect())
            .unwrap_or_default()
    }

    fn on_cpu_ns(pid: i32) -> Option<u64> {
        let text = std::fs::read_to_string(format!("/proc/{pid}/schedstat")).ok()?;
        text.split_whitespace().next()?.parse().ok()
    }

    impl ServerCpu {
        async fn start(admin: &Client) -> ServerCpu {
            let start = server_pids(admin)
                .await
                .into_iter()
                .filter_map(|pid| Some((pid, on_cpu_ns(pid)?)))
                .collect();
            ServerCpu { start }
        }

        /// CPU time since `start` of the processes alive now (`None` if the server is not
        /// local).
        async fn elapsed(&self, admin: &Client) -> Option<Duration> {
            let mut total = 0u64;
            let mut seen = false;
            for pid in server_pids(admin).await {
                if let Some(now) = on_cpu_ns(pid) {
                    seen = true;
                    total += now.saturating_sub(self.start.get(&pid).copied().unwrap_or(0));
                }
            }
            seen.then(|| Duration::from_nanos(total))
        }
    }

    /// What one phase measured.
    #[derive(Clone, Copy, Default)]
    struct Phase {
        /// Executed nodes per second.
        rate: f64,
        /// Server CPU per node, µs.
        cpu_us: Option<f64>,
        /// Statements per node, nested included.
        statements: Option<f64>,
        /// Round trips per node (backend phases only).
        trips: Option<f64>,
        /// WAL bytes per node (everything the server wrote meanwhile).
        wal: Option<f64>,
    }

    /// Measures `nodes` executed by `run`: rate, server CPU, statements, round trips.
    async fn measure<F, Fut>(
        admin: &Client,
        backend: Option<&PostgresBackend>,
        nodes: usize,
        run: F,
    ) -> Res<Phase>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Res<Duration>>,
    {
        let stmts0 = server_statements(admin).await;
        let trips0 = backend.map(|b| b.round_trips());
        let wal0 = wal_lsn(admin).await;
        let cpu = ServerCpu::start(admin).await;
        let elapsed = run().await?;
        let cpu = cpu.elapsed(admin).await;
        let wal1 = wal_lsn(admin).await;
        let stmts1 = server_statements(admin).await;
        let trips1 = backend.map(|b| b.round_trips());
        let n = nodes as f64;
        Ok(Phase {
            rate: n / elapsed.as_secs_f64(),
            cpu_us: cpu.map(|c| c.as_secs_f64() * 1e6 / n),
            statements: match (stmts0, stmts1) {
                // The statements reading the statistics are not counted (`pg_stat` filter).
                (Some(a), Some(b)) => Some((b - a) as f64 / n),
                _ => None,
            },
            trips: match (trips0, trips1) {
                (Some(a), Some(b)) => Some((b - a) as f64 / n),
                _ => None,
            },
            wal: match (wal0, wal1) {
                (Some(a), Some(b)) => Some((b - a) as f64 / n),
                _ => None,
            },
        })
    }

    /// 16 workers drain `lane` with claim-next: one round trip per node.
    async fn drain(backend: &PostgresBackend, lane: &Lane, total: usize) -> Res<Duration> {
        let done = Arc::new(AtomicUsize::new(0));
        let started = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..WORKERS {
            let backend = backend.clone();
            let done = done.clone();
            let claim = ClaimRequest::new(WorkerId::random(), lane.clone());
            tasks.push(tokio::spawn(async move {
                let mut current: Vec<ClaimedExecution> = Vec::new();
                let deadline = Instant::now() + Duration::from_secs(600);
                while done.load(Ordering::Relaxed) < total && Instant::now() < deadline {
                    let Some(c) = current.pop() else {
                        current = backend.claim(&claim).await.map_err(|e| e.to_string())?;
                        if current.is_empty() {
                            tokio::time::sleep(Duration::from_millis(1)).await;
                        }
                        continue;
                    };
                    current = backend
                        .complete(
                            &CompleteRequest::new(c.fence)
                                .with_result(b"done".to_vec())
                                .with_claim_next(claim.clone()),
                        )
                        .await
                        .map_err(|e| e.to_string())?
                        .next;
                    done.fetch_add(1, Ordering::Relaxed);
                }
                Ok::<(), String>(())
            }));
        }
        for task in tasks {
            task.await.map_err(|e| e.to_string())??;
        }
        Ok(started.elapsed())
    }

    async fn submit_flat(backend: &PostgresBackend, lane: &Lane, n: usize) -> Res<Duration> {
        let started = Instant::now();
        let mut tasks = Vec::new();
        for w in 0..WORKERS {
            let backend = backend.clone();
            let spec = ExecutionSpec::new(lane.clone(), super::payload(PAYLOAD));
            let share = n / WORKERS + usize::from(w < n % WORKERS);
            tasks.push(tokio::spawn(async move {
                for _ in 0..share {
                    backend
                        .create_execution(&spec)
                        .await
                        .map_err(|e| e.to_string())?;
                }
                Ok::<(), String>(())
            }));
        }
        for task in tasks {
            task.await.map_err(|e| e.to_string())??;
        }
        Ok(started.elapsed())
    }

    /// Flat: submit `FLAT` executions (16 producers), then measure their claim + complete.
    async fn flat(admin: &Client, backend: &PostgresBackend, lane: &Lane) -> Res<(Phase, f64)> {
        let submit = submit_flat(backend, lane, FLAT).await?;
        let phase = measure(admin, Some(backend), FLAT, || drain(backend, lane, FLAT)).await?;
        Ok((phase, FLAT as f64 / submit.as_secs_f64()))
    }

    /// Chains: `CHAIN_BATCHES` times, create `CHAINS` 10-node chains (not timed) and measure
    /// their execution with 16 workers; rates over the summed drain times.
    async fn chains(admin: &Client, backend: &PostgresBackend, lane: &Lane) -> Res<Phase> {
        let nodes = CHAINS * CHAIN_LEN;
        let mut total = Phase::default();
        let mut elapsed = 0.0;
        for _ in 0..CHAIN_BATCHES {
            for _ in 0..CHAINS {
                backend
                    .create_flow(&chain(lane, CHAIN_LEN, PAYLOAD))
                    .await
                    .map_err(|e| e.to_string())?;
            }
            let phase =
                measure(admin, Some(backend), nodes, || drain(backend, lane, nodes)).await?;
            elapsed += nodes as f64 / phase.rate;
            let add = |a: Option<f64>, b: Option<f64>| Some(a.unwrap_or(0.0) + b?);
            total.cpu_us = add(total.cpu_us, phase.cpu_us);
            total.statements = add(total.statements, phase.statements);
            total.trips = add(total.trips, phase.trips);
            total.wal = add(total.wal, phase.wal);
        }
        let batches = CHAIN_BATCHES as f64;
        Ok(Phase {
            rate: (nodes * CHAIN_BATCHES) as f64 / elapsed,
            cpu_us: total.cpu_us.map(|v| v / batches),
            statements: total.statements.map(|v| v / batches),
            trips: total.trips.map(|v| v / batches),
            wal: total.wal.map(|v| v / batches),
        })
    }

    /// The bare queue: insert / claim-update / complete-update, same payloads, 16 workers;
    /// the claim + complete part is measured.
    async fn bare_queue(url: &str, admin: &Client, n: usize) -> Res<(Phase, f64)> {
        admin
            .batch_execute(
                "DROP SCHEMA IF EXISTS ffbare CASCADE; CREATE SCHEMA ffbare;
                 CREATE TABLE ffbare.queue (
                     id bigserial PRIMARY KEY, state smallint NOT NULL DEFAULT 0,
                     payload bytea NOT NULL, worker text, result bytea);
                 CREATE INDEX ON ffbare.queue (id) WHERE state = 0;",
            )
            .await
            .map_err(|e| e.to_string())?;
        let mut clients = Vec::new();
        for _ in 0..WORKERS {
            clients.push(Arc::new(client(url).await?));
        }
        let started = Instant::now();
        let mut tasks = Vec::new();
        for (w, c) in clients.iter().enumerate() {
            let c = c.clone();
            let share = n / WORKERS + usize::from(w < n % WORKERS);
            tasks.push(tokio::spawn(async move {
                let insert = c
                    .prepare("INSERT INTO ffbare.queue (payload) VALUES ($1)")
                    .await
                    .map_err(|e| e.to_string())?;
                let payload = super::payload(PAYLOAD);
                for _ in 0..share {
                    c.execute(&insert, &[&payload])
                        .await
                        .map_err(|e| e.to_string())?;
                }
                Ok::<(), String>(())
            }));
        }
        for task in tasks {
            task.await.map_err(|e| e.to_string())??;
        }
        let submit = started.elapsed();
        let drain = || async {
            let done = Arc::new(AtomicUsize::new(0));
            let started = Instant::now();
            let mut tasks = Vec::new();
            for (w, c) in clients.iter().enumerate() {
                let c = c.clone();
                let done = done.clone();
                tasks.push(tokio::spawn(async move {
                    let claim = c
                        .prepare(
                            "UPDATE ffbare.queue SET state = 1, worker = $1
                             WHERE id = (SELECT id FROM ffbare.queue WHERE state = 0
                                         ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED)
                             RETURNING id, payload",
                        )
                        .await
                        .map_err(|e| e.to_string())?;
                    let complete = c
                        .prepare("UPDATE ffbare.queue SET state = 2, result = $2 WHERE id = $1")
                        .await
                        .map_err(|e| e.to_string())?;
                    let worker = format!("w{w}");
                    while done.load(Ordering::Relaxed) < n {
                        let rows = c
                            .query(&claim, &[&worker])
                            .await
                            .map_err(|e| e.to_string())?;
                        let Some(row) = rows.first() else {
                            tokio::time::sleep(Duration::from_millis(1)).await;
                            continue;
                        };
                        let id: i64 = row.get(0);
                        c.execute(&complete, &[&id, &b"done".to_vec()])
                            .await
                            .map_err(|e| e.to_string())?;
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok::<(), String>(())
                }));
            }
            for task in tasks {
                task.await.map_err(|e| e.to_string())??;
            }
            Ok(started.elapsed())
        };
        let phase = measure(admin, None, n, drain).await?;
        drop(clients);
        admin
            .batch_execute("DROP SCHEMA ffbare CASCADE")
            .await
            .map_err(|e| e.to_string())?;
        Ok((phase, n as f64 / submit.as_secs_f64()))
    }

    fn percentile(sorted: &[Duration], p: f64) -> Duration {
        if sorted.is_empty() {
            return Duration::ZERO;
        }
        let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
        sorted[idx.min(sorted.len() - 1)]
    }

    /// Sequential one-hop probes: complete the upstream (no claim-next), then claim until the
    /// downstream is handed out.
    async fn cascade_latency(
        backend: &PostgresBackend,
        lane: &Lane,
        n: usize,
    ) -> Res<Vec<Duration>> {
        let claim = ClaimRequest::new(WorkerId::random(), lane.clone());
        let mut samples = Vec::with_capacity(n);
        for _ in 0..n {
            backend
                .create_flow(&chain(lane, 2, 100))
                .await
                .map_err(|e| e.to_string())?;
            let root = backend.claim(&claim).await.map_err(|e| e.to_string())?;
            let root = root.first().ok_or("root not claimable")?;
            backend
                .complete(&CompleteRequest::new(root.fence))
                .await
                .map_err(|e| e.to_string())?;
            let returned = Instant::now();
            let child = loop {
                let got = backend.claim(&claim).await.map_err(|e| e.to_string())?;
                if let Some(c) = got.into_iter().next() {
                    break c;
                }
            };
            samples.push(returned.elapsed());
            backend
                .complete(&CompleteRequest::new(child.fence))
                .await
                .map_err(|e| e.to_string())?;
        }
        samples.sort();
        Ok(samples)
    }

    /// Sizes and live rows of every table of a schema.
    async fn footprint(admin: &Client, schema: &str) -> Res<(i64, i64)> {
        let row = admin
            .query_one(
                "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0)::bigint
                 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                 WHERE n.nspname = $1 AND c.relkind IN ('r', 'm')",
                &[&schema],
            )
            .await
            .map_err(|e| e.to_string())?;
        let bytes: i64 = row.get(0);
        let mut rows = 0i64;
        for table in ["ff_execution", "ff_flow", "ff_edge", "ff_completion"] {
            let r = admin
                .query_one(&format!("SELECT count(*) FROM {schema}.{table}"), &[])
                .await
                .map_err(|e| e.to_string())?;
            rows += r.get::<_, i64>(0);
        }
        Ok((bytes, rows))
    }

    fn mean(values: &[f64]) -> f64 {
        values.iter().sum::<f64>() / values.len().max(1) as f64
    }

    fn opt(v: Option<f64>, digits: usize) -> String {
        v.map_or_else(|| "n/a".to_string(), |v| format!("{v:.digits$}"))
    }

    /// Mean of an optional per-phase figure over the rounds.
    fn mean_of(phases: &[Phase], f: impl Fn(&Phase) -> Option<f64>) -> Option<f64> {
        let values: Option<Vec<f64>> = phases.iter().map(f).collect();
        values.map(|v| mean(&v))
    }

    fn describe(name: &str, phases: &[Phase]) {
        println!(
            "  {name:<22} {:>6.0}/s  server CPU {:>5} µs/node  statements {:>5}/node  \
             WAL {:>5} B/node  round trips {}/node",
            mean(&phases.iter().map(|p| p.rate).collect::<Vec<_>>()),
            opt(mean_of(phases, |p| p.cpu_us), 0),
            opt(mean_of(phases, |p| p.statements), 2),
            opt(mean_of(phases, |p| p.wal), 0),
            opt(mean_of(phases, |p| p.trips), 2),
        );
    }

    pub(super) async fn run(url: &str) -> Res<()> {
        let admin = client(url).await?;
        let pss = admin
            .batch_execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            .await
            .is_ok()
            && server_statements(&admin).await.is_some();
        println!("# ff-backend-postgres report");
        let version: String = admin
            .query_one("SHOW server_version", &[])
            .await
            .map_err(|e| e.to_string())?
            .get(0);
        let rounds = rounds();
        println!(
            "server {version}, {WORKERS} workers, {PAYLOAD} B payloads, {rounds} rounds; \
             pg_stat_statements (track = all): {pss}"
        );

        let off = connect_with(
            PostgresConfig::new(url)
                .with_schema("ffreport")
                .with_pool_size(WORKERS + 4)
                .with_hints(false),
        )
        .await?;
        let on = connect_with(
            PostgresConfig::new(url)
                .with_schema("ffreport_hints")
                .with_pool_size(WORKERS + 4)
                .with_hints(true),
        )
        .await?;
        // A listener, as an engine and workers would have, drained so it never lags.
        let mut hints = on.subscribe_hints().await.map_err(|e| e.to_string())?;
        let listener = tokio::spawn(async move {
            let mut received = 0u64;
            while hints.recv().await.is_some() {
                received += 1;
            }
            received
        });

        let (mut bare, mut flat_off, mut chain_off, mut flat_on, mut chain_on) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let (mut bare_submit, mut flat_submit) = (Vec::new(), Vec::new());
        // Experiments: FF_PG_BENCH_VARIANT_SQL runs on a third schema (search_path set to it)
        // after its migrations; phases `flat_var` and `chain_var` measure it.
        let var = match std::env::var("FF_PG_BENCH_VARIANT_SQL") {
            Ok(sql) => {
                let var = connect(url, "ffreport_var", WORKERS + 4).await?;
                admin
                    .batch_execute(&format!(
                        "SET search_path TO ffreport_var; {sql}; RESET search_path"
                    ))
                    .await
                    .map_err(|e| e.to_string())?;
                Some(var)
            }
            Err(_) => None,
        };
        let (mut flat_var, mut chain_var) = (Vec::new(), Vec::new());
        let phases = phases();
        let wanted = |name: &str| phases.iter().any(|p| p == name);
        for round in 1..=rounds {
            let skip = Phase {
                rate: f64::NAN,
                ..Phase::default()
            };
            let (b, b_submit) = if wanted("bare") {
                bare_queue(url, &admin, FLAT).await?
            } else {
                (skip, f64::NAN)
            };
            let (f, f_submit) = if wanted("flat") {
                flat(&admin, &off, &lane(&format!("flat{round}"))).await?
            } else {
                (skip, f64::NAN)
            };
            let c = if wanted("chain") {
                chains(&admin, &off, &lane(&format!("chain{round}"))).await?
            } else {
                skip
            };
            let fh = if wanted("flat_hints") {
                flat(&admin, &on, &lane(&format!("flat{round}"))).await?.0
            } else {
                skip
            };
            let ch = if wanted("chain_hints") {
                chains(&admin, &on, &lane(&format!("chain{round}"))).await?
            } else {
                skip
            };
            if let Some(var) = &var {
                if wanted("flat_var") {
                    let fv = flat(&admin, var, &lane(&format!("flat{round}"))).await?.0;
                    println!(
                        "round {round}: variant flat {:.0}/s = {:.0} % of flat",
                        fv.rate,
                        100.0 * fv.rate / f.rate
                    );
                    flat_var.push(fv);
                }
                if wanted("chain_var") {
                    let cv = chains(&admin, var, &lane(&format!("chain{round}"))).await?;
                    println!(
                        "round {round}: variant chain {:.0}/s = {:.0} % of chain",
                        cv.rate,
                        100.0 * cv.rate / c.rate
                    );
                    chain_var.push(cv);
                }
            }
            println!(
                "round {round}: bare {:.0}/s | flat {:.0}/s = {:.0} % of bare | chain {:.0}/s = \
                 {:.0} % of flat | hints on: flat {:.0}/s = {:.0} % of bare ({:.0} % of off), \
                 chain {:.0}/s = {:.0} % of flat ({:.0} % of off)",
                b.rate,
                f.rate,
                100.0 * f.rate / b.rate,
                c.rate,
                100.0 * c.rate / f.rate,
                fh.rate,
                100.0 * fh.rate / b.rate,
                100.0 * fh.rate / f.rate,
                ch.rate,
                100.0 * ch.rate / fh.rate,
                100.0 * ch.rate / c.rate,
            );
            bare.push(b);
            flat_off.push(f);
            chain_off.push(c);
            flat_on.push(fh);
            chain_on.push(ch);
            bare_submit.push(b_submit);
            flat_submit.push(f_submit);
        }
        let ratio = |a: &[Phase], b: &[Phase]| {
            let per_round: Vec<f64> = a
                .iter()
                .zip(b)
                .map(|(a, b)| 100.0 * a.rate / b.rate)
                .collect();
            let mut sorted = per_round.clone();
            sorted.sort_by(f64::total_cmp);
            format!(
                "mean {:.0} %, median {:.0} % (rounds: {})",
                mean(&per_round),
                sorted[sorted.len() / 2],
                per_round
                    .iter()
                    .map(|r| format!("{r:.0}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        println!("means over {rounds} rounds (claim + complete phases):");
        describe("bare SKIP LOCKED queue", &bare);
        describe("flat, hints off", &flat_off);
        describe("chain, hints off", &chain_off);
        describe("flat, hints on", &flat_on);
        describe("chain, hints on", &chain_on);
        if !flat_var.is_empty() {
            describe("variant flat", &flat_var);
            println!("variant / flat: {}", ratio(&flat_var, &flat_off));
        }
        if !chain_var.is_empty() {
            describe("variant chain", &chain_var);
            println!("variant / chain: {}", ratio(&chain_var, &chain_off));
        }
        println!("flat / bare (bar ≥ 70 %): {}", ratio(&flat_off, &bare));
        println!(
            "chain / flat (bar ≥ 70 %): {}",
            ratio(&chain_off, &flat_off)
        );
        println!("hints on: flat / bare: {}", ratio(&flat_on, &bare));
        println!("hints on: chain / flat: {}", ratio(&chain_on, &flat_on));
        println!("hints on / off, flat: {}", ratio(&flat_on, &flat_off));
        println!("hints on / off, chain: {}", ratio(&chain_on, &chain_off));
        println!(
            "submit: bare {:.0}/s, flowfabric {:.0}/s",
            mean(&bare_submit),
            mean(&flat_submit)
        );
        drop(on);
        listener.abort();

        // Cascade latency, idle and under chain load.
        let backend = off;
        let probe_lane = lane("probe");
        let idle = cascade_latency(&backend, &probe_lane, 300).await?;
        println!(
            "cascade latency (complete returns → downstream claimed), idle: p50 {:?}, p99 {:?}",
            percentile(&idle, 0.5),
            percentile(&idle, 0.99)
        );
        let chain_lane = lane("chain-load");
        for _ in 0..CHAINS {
            backend
                .create_flow(&chain(&chain_lane, CHAIN_LEN, PAYLOAD))
                .await
                .map_err(|e| e.to_string())?;
        }
        let load = {
            let backend = backend.clone();
            let chain_lane = chain_lane.clone();
            tokio::spawn(async move { drain(&backend, &chain_lane, CHAINS * CHAIN_LEN).await })
        };
        let loaded = cascade_latency(&backend, &probe_lane, 200).await?;
        load.await.map_err(|e| e.to_string())??;
        println!(
            "cascade latency under 16-worker chain load: p50 {:?}, p99 {:?}",
            percentile(&loaded, 0.5),
            percentile(&loaded, 0.99)
        );
        backend.drop_schema().await.map_err(|e| e.to_string())?;
        if let Ok(on) = connect(url, "ffreport_hints", 1).await {
            let _ = on.drop_schema().await;
        }

        // Footprint of finished executions with 100 B payloads.
        let backend = connect(url, "fffootprint", 4).await?;
        let (bytes0, _) = footprint(&admin, "fffootprint").await?;
        let foot_lane = lane("foot");
        let n = 2_000;
        let spec = ExecutionSpec::new(foot_lane.clone(), super::payload(100));
        for _ in 0..n {
            backend
                .create_execution(&spec)
                .await
                .map_err(|e| e.to_string())?;
        }
        drain(&backend, &foot_lane, n).await?;
        let (bytes1, rows1) = footprint(&admin, "fffootprint").await?;
        admin
            .batch_execute("VACUUM FULL fffootprint.ff_execution")
            .await
            .map_err(|e| e.to_string())?;
        let (bytes2, _) = footprint(&admin, "fffootprint").await?;
        println!(
            "footprint, standalone execution (100 B payload, finished): {:.2} rows, {:.0} bytes \
             as written ({:.0} bytes after VACUUM FULL)",
            rows1 as f64 / n as f64,
            (bytes1 - bytes0) as f64 / n as f64,
            (bytes2 - bytes0) as f64 / n as f64
        );
        let flows = 200;
        let chain_foot = lane("foot-chain");
        let (bytes0, rows0) = footprint(&admin, "fffootprint").await?;
        for _ in 0..flows {
            backend
                .create_flow(&chain(&chain_foot, CHAIN_LEN, 100))
                .await
                .map_err(|e| e.to_string())?;
        }
        drain(&backend, &chain_foot, flows * CHAIN_LEN).await?;
        let (bytes1, rows1) = footprint(&admin, "fffootprint").await?;
        println!(
            "footprint, 10-node chain member (100 B payload, finished): {:.2} rows, {:.0} bytes \
             as written (flow and edge rows included)",
            (rows1 - rows0) as f64 / (flows * CHAIN_LEN) as f64,
            (bytes1 - bytes0) as f64 / (flows * CHAIN_LEN) as f64
        );
        backend.drop_schema().await.map_err(|e| e.to_string())?;
        Ok(())
    }
}
