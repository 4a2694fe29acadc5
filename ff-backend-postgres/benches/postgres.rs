//! Benchmarks of the postgres backend against a real server (`FF_POSTGRES_URL`; skipped with a
//! message without it).
//!
//! - `cargo bench -p ff-backend-postgres --bench postgres`: criterion timings of the hot
//!   single operations — claim + complete, complete with claim-next, create a 10-node chain
//!   flow, one cascade hop (complete the upstream, claim the downstream).
//! - `FF_PG_BENCH_REPORT=1 cargo bench -p ff-backend-postgres --bench postgres`: a one-shot
//!   report of the figures the design's bars are about, measured in one run on one server:
//!   flat throughput with 16 workers against a bare `SKIP LOCKED` queue table, 10-node chain
//!   throughput, cascade latency, round trips and statements per executed node, rows and
//!   bytes per finished execution.

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
    let config = PostgresConfig::new(url)
        .with_schema(schema)
        .with_pool_size(pool);
    let backend = PostgresBackend::connect(config.clone())
        .await
        .map_err(|e| e.to_string())?;
    backend.drop_schema().await.map_err(|e| e.to_string())?;
    PostgresBackend::connect(config)
        .await
        .map_err(|e| e.to_string())
}

/// A chain `n0 → n1 → … → n(len-1)` on `lane`.
fn chain(lane: &Lane, len: usize, payload: usize) -> FlowSpec {
    let mut spec = FlowSpec::new();
    for i in 0..len {
        spec = spec.node(NodeSpec::new(
            key(&format!("n{i}")),
            ExecutionSpec::new(lane.clone(), vec![7u8; payload]),
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
                let spec = ExecutionSpec::new(lane.clone(), vec![7u8; 100]);
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
                let spec = ExecutionSpec::new(lane.clone(), vec![7u8; 100]);
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

    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::{Duration, Instant};

    use ff_backend_postgres::PostgresBackend;
    use ff_core::{
        ClaimRequest, ClaimedExecution, CompleteRequest, EngineBackend, ExecutionSpec, Lane,
        WorkerId,
    };

    use tokio_postgres::{Client, NoTls};

    use super::{chain, connect, lane};

    const WORKERS: usize = 16;
    const FLAT: usize = 4_000;
    const PAYLOAD: usize = 4 * 1024;
    const CHAINS: usize = 100;
    const CHAIN_LEN: usize = 10;
    const ROUNDS: usize = 3;

    type Res<T> = Result<T, String>;

    async fn client(url: &str) -> Res<Client> {
        let (client, connection) = tokio_postgres::connect(url, NoTls)
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(connection);
        Ok(client)
    }

    /// Statements executed by the server, nested ones included (pg_stat_statements with
    /// `track = all`, when loaded).
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

    /// WAL written so far: (bytes, full-page images).
    async fn wal(admin: &Client) -> (i64, i64) {
        admin
            .query_one("SELECT wal_bytes::bigint, wal_fpi FROM pg_stat_wal", &[])
            .await
            .map(|row| (row.get::<_, i64>(0), row.get::<_, i64>(1)))
            .unwrap_or((0, 0))
    }

    fn per_node(before: Option<i64>, after: Option<i64>, nodes: usize) -> String {
        match (before, after) {
            (Some(a), Some(b)) => format!("{:.2} (nested included)", (b - a) as f64 / nodes as f64),
            _ => "n/a (pg_stat_statements not loaded)".into(),
        }
    }

    async fn settle_stats() {
        // Let statistics settle between phases.
        tokio::time::sleep(Duration::from_millis(1200)).await;
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
            let spec = ExecutionSpec::new(lane.clone(), vec![7u8; PAYLOAD]);
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

    /// The bare queue: insert / claim-update / complete-update, same payloads, 16 workers.
    async fn bare_queue(url: &str, n: usize) -> Res<(Duration, Duration)> {
        let admin = client(url).await?;
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
                let payload = vec![7u8; PAYLOAD];
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
        let drain = started.elapsed();
        admin
            .batch_execute("DROP SCHEMA ffbare CASCADE")
            .await
            .map_err(|e| e.to_string())?;
        Ok((submit, drain))
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

    pub(super) async fn run(url: &str) -> Res<()> {
        let admin = client(url).await?;
        let pss = admin
            .batch_execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            .await
            .is_ok();
        println!("# ff-backend-postgres report");
        let version: String = admin
            .query_one("SHOW server_version", &[])
            .await
            .map_err(|e| e.to_string())?
            .get(0);
        println!("server {version}, {WORKERS} workers, pg_stat_statements: {pss}");

        // Flat, alternating with the bare queue (same server, same run) so that load from
        // elsewhere on the machine hits both alike.
        let backend = connect(url, "ffreport", WORKERS + 4).await?;
        let mut flat_rates = Vec::new();
        let mut bare_rates = Vec::new();
        for round in 1..=ROUNDS {
            let bare_wal0 = wal(&admin).await;
            let (bare_submit, bare_drain) = bare_queue(url, FLAT).await?;
            let bare_wal1 = wal(&admin).await;
            let bare_rate = FLAT as f64 / bare_drain.as_secs_f64();
            let bare_e2e = FLAT as f64 / (bare_submit + bare_drain).as_secs_f64();
            let flat_lane = lane(&format!("flat{round}"));
            let wal0 = wal(&admin).await;
            let submit = submit_flat(&backend, &flat_lane, FLAT).await?;
            settle_stats().await;
            let stmts0 = server_statements(&admin).await;
            let trips0 = backend.round_trips();
            let flat_drain = drain(&backend, &flat_lane, FLAT).await?;
            let trips = backend.round_trips() - trips0;
            settle_stats().await;
            let stmts1 = server_statements(&admin).await;
            let wal1 = wal(&admin).await;
            let flat_rate = FLAT as f64 / flat_drain.as_secs_f64();
            let flat_e2e = FLAT as f64 / (submit + flat_drain).as_secs_f64();
            println!(
                "round {round}: bare SKIP LOCKED queue: submit {:.0}/s, claim+complete {:.0}/s, \
                 end to end {:.0}/s",
                FLAT as f64 / bare_submit.as_secs_f64(),
                bare_rate,
                bare_e2e
            );
            println!(
                "round {round}: flowfabric flat: submit {:.0}/s, claim+complete {:.0}/s \
                 ({:.0} % of bare), end to end {:.0}/s ({:.0} % of bare)",
                FLAT as f64 / submit.as_secs_f64(),
                flat_rate,
                100.0 * flat_rate / bare_rate,
                flat_e2e,
                100.0 * flat_e2e / bare_e2e
            );
            println!(
                "  per executed node (claim+complete phase): {:.2} round trips, statements {}",
                trips as f64 / FLAT as f64,
                per_node(stmts0, stmts1, FLAT)
            );
            println!(
                "  WAL per task, submit to complete: flowfabric {:.0} bytes / {:.2} full-page \
                 images, bare {:.0} bytes / {:.2}",
                (wal1.0 - wal0.0) as f64 / FLAT as f64,
                (wal1.1 - wal0.1) as f64 / FLAT as f64,
                (bare_wal1.0 - bare_wal0.0) as f64 / FLAT as f64,
                (bare_wal1.1 - bare_wal0.1) as f64 / FLAT as f64
            );
            flat_rates.push(flat_rate);
            bare_rates.push(bare_rate);
        }
        let flat_rate = flat_rates.iter().sum::<f64>() / flat_rates.len() as f64;
        let bare_rate = bare_rates.iter().sum::<f64>() / bare_rates.len() as f64;
        println!(
            "flat claim+complete, mean of {ROUNDS} rounds: flowfabric {flat_rate:.0}/s, bare \
             {bare_rate:.0}/s: {:.0} %",
            100.0 * flat_rate / bare_rate
        );

        // Chains: 100 flows of 10 nodes in flight.
        let chain_lane = lane("chain");
        let started = Instant::now();
        for _ in 0..CHAINS {
            backend
                .create_flow(&chain(&chain_lane, CHAIN_LEN, PAYLOAD))
                .await
                .map_err(|e| e.to_string())?;
        }
        let create = started.elapsed();
        settle_stats().await;
        let stmts0 = server_statements(&admin).await;
        let trips0 = backend.round_trips();
        let nodes = CHAINS * CHAIN_LEN;
        let chain_drain = drain(&backend, &chain_lane, nodes).await?;
        let trips = backend.round_trips() - trips0;
        settle_stats().await;
        let stmts1 = server_statements(&admin).await;
        let chain_rate = nodes as f64 / chain_drain.as_secs_f64();
        println!(
            "flowfabric chains ({CHAINS} x {CHAIN_LEN} nodes in flight): create {:.0} flows/s, \
             {:.0} node executions/s ({:.0} % of flat)",
            CHAINS as f64 / create.as_secs_f64(),
            chain_rate,
            100.0 * chain_rate / flat_rate
        );
        println!(
            "  per executed node: {:.2} round trips, statements {}",
            trips as f64 / nodes as f64,
            per_node(stmts0, stmts1, nodes)
        );

        // Cascade latency, idle and under chain load.
        let probe_lane = lane("probe");
        let idle = cascade_latency(&backend, &probe_lane, 300).await?;
        println!(
            "cascade latency (complete returns → downstream claimed), idle: p50 {:?}, p99 {:?}",
            percentile(&idle, 0.5),
            percentile(&idle, 0.99)
        );
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

        // Footprint of finished executions with 100 B payloads.
        let backend = connect(url, "fffootprint", 4).await?;
        let (bytes0, _) = footprint(&admin, "fffootprint").await?;
        let foot_lane = lane("foot");
        let n = 2_000;
        let spec = ExecutionSpec::new(foot_lane.clone(), vec![7u8; 100]);
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
