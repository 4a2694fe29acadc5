//! `cargo xtask demo`: FlowFabric's main job, end to end, in one process.
//!
//! An engine, a pool of workers and a workload of many flows run on a backend (the embedded
//! in-memory one by default). Each flow is a small pipeline:
//!
//! ```text
//!            ┌─ map-0 ─┐
//!   split ──┼─ map-1 ─┼── reduce ── publish ── notify
//!            └─ map-… ─┘
//! ```
//!
//! Every edge passes the upstream's result on. A share of the map attempts fail once with a
//! retryable error (they are retried by the retry policy), and a share of the flows contain a
//! map that fails for good (its downstream is skipped and the flow fails). A live progress bar
//! shows flows finished; at the end a summary gives throughput, outcomes, retries and the hop
//! latency (upstream done → downstream started).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::{Context as _, bail};
use ff_core::{
    EdgeSpec, EngineBackend, ExecutionId, ExecutionSpec, ExecutionState, FlowId, FlowSpec,
    FlowState, Hint, Lane, NodeKey, NodeSpec, RetryPolicy,
};
use ff_engine::{Engine, EngineConfig, EngineHandle, HandlerError, Job, Worker, WorkerStats};
use indicatif::{ProgressBar, ProgressStyle};
use tokio::sync::{Semaphore, oneshot};
use tokio::time::Instant;

use crate::{interrupt, paths, services};

/// Arguments of `cargo xtask demo`.
#[derive(clap::Args, Debug, Clone)]
pub struct DemoArgs {
    /// Flows to run (the default takes about 10 s on two cores).
    #[arg(long, default_value_t = 15_000)]
    pub flows: usize,
    /// Map nodes per flow (the fan-out width).
    #[arg(long, default_value_t = 8)]
    pub fan_out: usize,
    /// Every n-th flow is wide: its split fans out to `--wide-fan-out` maps, more than a
    /// backend cascades inline, so its completion goes through the engine's dispatch loop
    /// (0: none).
    #[arg(long, default_value_t = 50)]
    pub wide_every: usize,
    /// Map nodes of a wide flow.
    #[arg(long, default_value_t = 200)]
    pub wide_fan_out: usize,
    /// Flows in flight at once.
    #[arg(long, default_value_t = 256)]
    pub in_flight: usize,
    /// Worker instances.
    #[arg(long, default_value_t = 4)]
    pub workers: usize,
    /// Executions each worker runs at once.
    #[arg(long, default_value_t = 16)]
    pub slots: usize,
    /// Engine instances sharing the partitions.
    #[arg(long, default_value_t = 1)]
    pub engines: usize,
    /// Share of map nodes whose first attempt fails with a retryable error.
    #[arg(long, default_value_t = 0.02)]
    pub flaky: f64,
    /// Share of flows with a map node that fails for good.
    #[arg(long, default_value_t = 0.01)]
    pub doomed: f64,
    /// Simulated work per execution, in microseconds (0: none).
    #[arg(long, default_value_t = 0)]
    pub work_us: u64,
    /// `memory` (the embedded default), `valkey` or `postgres` (a throwaway local server is
    /// started for the demo and stopped after it), or a backend URL (`memory://?partitions=64`,
    /// `valkey://127.0.0.1:6379`, `postgres://postgres@127.0.0.1:5432/postgres`).
    #[arg(long, default_value = "memory")]
    pub backend: String,
}

/// Runs the demo.
pub fn run(args: DemoArgs) -> anyhow::Result<()> {
    validate(&args)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    runtime.block_on(run_async(args))
}

fn validate(args: &DemoArgs) -> anyhow::Result<()> {
    if args.flows == 0 || args.fan_out == 0 || args.in_flight == 0 || args.wide_fan_out == 0 {
        bail!("--flows, --fan-out, --wide-fan-out and --in-flight must be at least 1");
    }
    if args.workers == 0 || args.slots == 0 || args.engines == 0 {
        bail!("--workers, --slots and --engines must be at least 1");
    }
    if !(0.0..=1.0).contains(&args.flaky) || !(0.0..=1.0).contains(&args.doomed) {
        bail!("--flaky and --doomed are shares between 0 and 1");
    }
    Ok(())
}

/// Connects to the backend `--backend` names; for `valkey` and `postgres`, first starts a
/// throwaway local server, returned so the caller stops it when the demo ends.
async fn connect(
    backend: &str,
) -> anyhow::Result<(Arc<dyn EngineBackend>, Option<services::Services>)> {
    let (url, server) = match backend {
        "memory" => ("memory://".to_string(), None),
        "valkey" | "postgres" => {
            let selection = services::Selection {
                valkey: backend == "valkey",
                valkey_cluster: false,
                postgres: backend == "postgres",
            };
            let root = paths::target_dir()
                .join("services-demo")
                .join(format!("run-{}", std::process::id()));
            eprintln!("starting a throwaway {backend} server for the demo ...");
            let server = tokio::task::spawn_blocking(move || {
                services::start(&selection, &root, services::Durability::Throwaway)
            })
            .await
            .context("starting the demo's server")??;
            let urls = server.urls();
            let url = urls
                .valkey
                .clone()
                .or_else(|| urls.postgres.clone())
                .context("the started server has no URL")?;
            (url, Some(server))
        }
        url if url.contains("://") => (url.to_string(), None),
        other => bail!(
            "unknown backend {other:?}: use memory, valkey, postgres or a URL such as memory://?partitions=64"
        ),
    };
    let connected = ff_engine::connect(&url)
        .await
        .with_context(|| format!("connecting to {url}"));
    match connected {
        Ok(backend) => Ok((backend, server)),
        Err(error) => {
            if let Some(server) = server {
                stop_server(server);
            }
            Err(error)
        }
    }
}

/// Stops the demo's throwaway server and removes its data.
fn stop_server(server: services::Services) {
    let root = server.root().to_path_buf();
    if let Err(error) = server.stop() {
        eprintln!("warning: stopping the demo's server: {error:#}");
    }
    let _ = std::fs::remove_dir_all(root);
}

/// What the handlers record while the workload runs.
#[derive(Default)]
struct Recorder {
    /// When each execution's handler returned successfully, to time the hop to its
    /// downstream.
    done_at: Mutex<HashMap<ExecutionId, Instant>>,
    /// Hop latencies in microseconds.
    hops: Mutex<Vec<u64>>,
    injected_transient: AtomicU64,
    injected_permanent: AtomicU64,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Recorder {
    fn started(&self, job: &Job) {
        let now = Instant::now();
        let done = lock(&self.done_at);
        let upstream_done = job
            .inputs()
            .iter()
            .filter_map(|input| done.get(&input.execution_id).copied())
            .max();
        drop(done);
        if let Some(at) = upstream_done {
            let micros = u64::try_from(now.duration_since(at).as_micros()).unwrap_or(u64::MAX);
            lock(&self.hops).push(micros);
        }
    }

    fn finished(&self, id: ExecutionId) {
        lock(&self.done_at).insert(id, Instant::now());
    }

    /// Forgets the members of a finished flow.
    fn forget(&self, members: impl IntoIterator<Item = ExecutionId>) {
        let mut done = lock(&self.done_at);
        for id in members {
            done.remove(&id);
        }
    }
}

async fn handle(
    job: Job,
    recorder: Arc<Recorder>,
    work: Duration,
) -> Result<Option<Vec<u8>>, HandlerError> {
    recorder.started(&job);
    if !work.is_zero() {
        tokio::time::sleep(work).await;
    }
    let payload = std::str::from_utf8(job.payload()).map_err(HandlerError::permanent)?;
    let result = match payload {
        "map:flaky" if job.attempt() == 1 => {
            recorder.injected_transient.fetch_add(1, Ordering::Relaxed);
            return Err(HandlerError::retryable("injected transient failure"));
        }
        "map:doomed" => {
            recorder.injected_permanent.fetch_add(1, Ordering::Relaxed);
            return Err(HandlerError::permanent("injected permanent failure"));
        }
        "split" => 1u64,
        p if p.starts_with("map") => 2,
        // reduce, publish, notify: the sum of what came in.
        _ => job
            .inputs()
            .iter()
            .filter_map(|i| i.result.as_deref())
            .filter_map(|r| r.try_into().ok().map(u64::from_le_bytes))
            .sum(),
    };
    recorder.finished(job.id());
    Ok(Some(result.to_le_bytes().to_vec()))
}

fn probe_spec(lane: &Lane) -> anyhow::Result<FlowSpec> {
    let node = |key: &str, payload: &str| -> anyhow::Result<NodeSpec> {
        Ok(NodeSpec::new(
            NodeKey::new(key)?,
            ExecutionSpec::new(lane.clone(), payload.as_bytes().to_vec()),
        ))
    };
    Ok(FlowSpec::new()
        .node(node("up", "split")?)
        .node(node("down", "notify")?)
        .edge(EdgeSpec::new(NodeKey::new("up")?, NodeKey::new("down")?).passing_result()))
}

fn flow_spec(lane: &Lane, fan_out: usize, flaky: f64, doomed: bool) -> anyhow::Result<FlowSpec> {
    let retry = RetryPolicy::fixed(3, Duration::from_millis(20));
    let node = |key: &str, payload: &str| -> anyhow::Result<NodeSpec> {
        Ok(NodeSpec::new(
            NodeKey::new(key)?,
            ExecutionSpec::new(lane.clone(), payload.as_bytes().to_vec()).with_retry(retry.clone()),
        ))
    };
    let edge = |from: &str, to: &str| -> anyhow::Result<EdgeSpec> {
        Ok(EdgeSpec::new(NodeKey::new(from)?, NodeKey::new(to)?).passing_result())
    };
    let mut spec = FlowSpec::new()
        .node(node("split", "split")?)
        .node(node("reduce", "reduce")?)
        .node(node("publish", "publish")?)
        .node(node("notify", "notify")?)
        .edge(edge("reduce", "publish")?)
        .edge(edge("publish", "notify")?);
    let doomed_index = doomed.then(|| rand::random_range(0..fan_out));
    for i in 0..fan_out {
        let key = format!("map-{i}");
        let payload = if doomed_index == Some(i) {
            "map:doomed"
        } else if rand::random_bool(flaky) {
            "map:flaky"
        } else {
            "map"
        };
        spec = spec
            .node(node(&key, payload)?)
            .edge(edge("split", &key)?)
            .edge(edge(&key, "reduce")?);
    }
    Ok(spec)
}

/// Tallies of finished flows.
#[derive(Default)]
struct Tally {
    flows: HashMap<FlowState, u64>,
    executions: HashMap<ExecutionState, u64>,
    attempts: u64,
}

async fn run_async(args: DemoArgs) -> anyhow::Result<()> {
    let (backend, server) = connect(&args.backend).await?;
    let outcome = run_with(args, backend).await;
    if let Some(server) = server {
        tokio::task::spawn_blocking(move || stop_server(server))
            .await
            .context("stopping the demo's server")?;
    }
    outcome
}

async fn run_with(args: DemoArgs, backend: Arc<dyn EngineBackend>) -> anyhow::Result<()> {
    let partitions = backend.partition_config().partitions;
    let mut engines = Vec::new();
    for _ in 0..args.engines {
        engines.push(
            Engine::builder(Arc::clone(&backend))
                .config(EngineConfig::default())
                .start()
                .await
                .context("starting the engine")?,
        );
    }
    let lane = Lane::new("demo")?;
    let recorder = Arc::new(Recorder::default());
    let work = Duration::from_micros(args.work_us);

    let mut stops = Vec::new();
    let mut worker_tasks = Vec::new();
    let mut worker_stats: Vec<WorkerStats> = Vec::new();
    for _ in 0..args.workers {
        let recorder = Arc::clone(&recorder);
        let worker = Worker::builder(Arc::clone(&backend))
            .lane(lane.clone())
            .concurrency(args.slots)
            .handler(move |job: Job| handle(job, Arc::clone(&recorder), work))
            .build()?;
        worker_stats.push(worker.stats());
        let (stop, stopped) = oneshot::channel::<()>();
        stops.push(stop);
        worker_tasks.push(tokio::spawn(worker.run(async move {
            let _ = stopped.await;
        })));
    }

    let nodes_per_flow = args.fan_out + 4;
    let wide = if args.wide_every == 0 {
        String::new()
    } else {
        format!(
            "; every {}th flow fans out to {} maps",
            args.wide_every, args.wide_fan_out
        )
    };
    println!(
        "FlowFabric demo: {} backend ({partitions} partitions), {} engine{}, {} workers × {} slots",
        backend.name(),
        args.engines,
        if args.engines == 1 { "" } else { "s" },
        args.workers,
        args.slots
    );
    println!(
        "workload: {} flows of {nodes_per_flow} nodes (split → {} × map → reduce → publish → notify){wide}, {} in flight",
        args.flows, args.fan_out, args.in_flight
    );
    println!(
        "faults: {:.1} % of map nodes fail their first attempt (retryable), {:.1} % of flows hit a permanent failure",
        args.flaky * 100.0,
        args.doomed * 100.0
    );

    let progress = ProgressBar::new(args.flows as u64);
    progress.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:40.cyan/blue} {pos}/{len} flows  {msg}",
        )?
        .progress_chars("█▉▊▋▌▍▎▏ "),
    );

    // The probe: a two-node flow on its own lane, with its own idle worker, every 10 ms while
    // the workload runs. Its hop is the cascade latency under load without the queueing
    // behind the workload's ready executions.
    let probe_recorder = Arc::new(Recorder::default());
    let probe_lane = Lane::new("demo-probe")?;
    let probe_worker = {
        let recorder = Arc::clone(&probe_recorder);
        Worker::builder(Arc::clone(&backend))
            .lane(probe_lane.clone())
            .concurrency(2)
            .handler(move |job: Job| handle(job, Arc::clone(&recorder), Duration::ZERO))
            .build()?
    };
    let (probe_stop, probe_stopped) = oneshot::channel::<()>();
    let probe_worker_task = tokio::spawn(probe_worker.run(async move {
        let _ = probe_stopped.await;
    }));
    let (submit_stop, mut submit_stopped) = oneshot::channel::<()>();
    let probe_backend = Arc::clone(&backend);
    let probe_task = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(10));
        loop {
            tokio::select! {
                _ = &mut submit_stopped => return anyhow::Ok(()),
                _ = tick.tick() => {
                    probe_backend.create_flow(&probe_spec(&probe_lane)?).await?;
                }
            }
        }
    });

    let started = Instant::now();
    let outcome = drive(&args, &backend, &lane, &progress, &worker_stats, &recorder).await;
    let elapsed = started.elapsed();
    progress.finish_and_clear();
    let _ = submit_stop.send(());
    probe_task.await.context("probe task")??;
    let _ = probe_stop.send(());
    probe_worker_task.await.context("probe worker")??;

    for stop in stops {
        let _ = stop.send(());
    }
    let mut reports = Vec::new();
    for task in worker_tasks {
        reports.push(task.await.context("worker task")??);
    }
    let engine_stats: Vec<_> = engines.iter().map(EngineHandle::stats).collect();
    for engine in engines {
        engine.shutdown().await?;
    }
    let tally = outcome?;
    summarize(
        &args,
        &tally,
        elapsed,
        &recorder,
        &probe_recorder,
        &reports,
        &engine_stats,
    );
    Ok(())
}

/// Submits the flows (at most `in_flight` unfinished at once) and waits for every one of
/// them, tallying outcomes as they finish.
async fn drive(
    args: &DemoArgs,
    backend: &Arc<dyn EngineBackend>,
    lane: &Lane,
    progress: &ProgressBar,
    workers: &[WorkerStats],
    recorder: &Recorder,
) -> anyhow::Result<Tally> {
    let mut hints = backend.subscribe_hints().await.ok();
    let window = Arc::new(Semaphore::new(args.in_flight));
    let mut open: HashMap<FlowId, tokio::sync::OwnedSemaphorePermit> = HashMap::new();
    let mut submitted = 0usize;
    let mut finished = 0usize;
    let mut tally = Tally::default();
    let mut last_sweep = Instant::now();
    let mut last_message = Instant::now();
    let started = Instant::now();

    while finished < args.flows {
        if interrupt::requested() {
            bail!("interrupted");
        }
        // Top the window up.
        while submitted < args.flows {
            let Ok(permit) = Arc::clone(&window).try_acquire_owned() else {
                break;
            };
            let doomed = rand::random_bool(args.doomed);
            let wide = args.wide_every > 0 && submitted.is_multiple_of(args.wide_every);
            let fan_out = if wide {
                args.wide_fan_out
            } else {
                args.fan_out
            };
            let spec = flow_spec(lane, fan_out, args.flaky, doomed)?;
            let created = backend
                .create_flow(&spec)
                .await
                .context("creating a flow")?;
            open.insert(created.flow_id, permit);
            submitted += 1;
        }

        // Wait for flows to finish: hints first, a sweep of every open flow now and then
        // (hints are lossy).
        let mut candidates: Vec<FlowId> = Vec::new();
        let sweep = hints.is_none() || last_sweep.elapsed() >= Duration::from_secs(1);
        if sweep {
            candidates.extend(open.keys().copied());
            last_sweep = Instant::now();
        } else if let Some(rx) = hints.as_mut() {
            match tokio::time::timeout(Duration::from_millis(100), rx.recv()).await {
                Ok(Some(Hint::FlowFinished { flow_id })) => candidates.push(flow_id),
                Ok(Some(Hint::Lagged)) => last_sweep = started,
                Ok(Some(_)) | Err(_) => {}
                Ok(None) => hints = None,
            }
        }
        for flow_id in candidates {
            if !open.contains_key(&flow_id) {
                continue;
            }
            let snapshot = backend.describe_flow(&flow_id).await?;
            if !snapshot.state.is_terminal() {
                continue;
            }
            open.remove(&flow_id);
            finished += 1;
            *tally.flows.entry(snapshot.state).or_default() += 1;
            for member in &snapshot.members {
                *tally.executions.entry(member.state).or_default() += 1;
            }
            recorder.forget(snapshot.members.iter().map(|m| m.execution_id));
            progress.inc(1);
        }
        if sweep && hints.is_none() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if last_message.elapsed() >= Duration::from_millis(200) {
            let done: u64 = workers.iter().map(|w| w.snapshot().finished()).sum();
            let rate = done as f64 / started.elapsed().as_secs_f64().max(1e-3);
            progress.set_message(format!("{done} attempts · {rate:.0} attempts/s"));
            last_message = Instant::now();
        }
    }
    tally.attempts = workers.iter().map(|w| w.snapshot().finished()).sum();
    Ok(tally)
}

fn percentile(sorted: &[u64], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    Duration::from_micros(sorted[rank.min(sorted.len() - 1)])
}

fn summarize(
    args: &DemoArgs,
    tally: &Tally,
    elapsed: Duration,
    recorder: &Recorder,
    probe: &Recorder,
    reports: &[ff_engine::WorkerReport],
    engines: &[ff_engine::EngineStats],
) {
    let secs = elapsed.as_secs_f64().max(1e-9);
    let flows_ok = tally.flows.get(&FlowState::Succeeded).copied().unwrap_or(0);
    let flows_failed = tally.flows.get(&FlowState::Failed).copied().unwrap_or(0);
    let executions: u64 = tally.executions.values().sum();
    let ran: u64 = reports.iter().map(|r| r.succeeded + r.failed).sum();
    let retries: u64 = reports.iter().map(|r| r.retry_scheduled).sum();
    let round_trips: u64 = reports
        .iter()
        .map(|r| r.claim_calls + r.terminal_calls)
        .sum();
    let attempts: u64 = reports.iter().map(ff_engine::WorkerReport::finished).sum();
    let mut hops = lock(&recorder.hops).clone();
    hops.sort_unstable();
    let mut probe_hops = lock(&probe.hops).clone();
    probe_hops.sort_unstable();

    println!();
    println!("done in {:.2} s", secs);
    println!(
        "  flows        {} ({flows_ok} succeeded, {flows_failed} failed) · {:.0} flows/s",
        args.flows,
        args.flows as f64 / secs
    );
    println!(
        "  executions   {executions} in flows, {ran} run to an end by workers · {:.0} executions/s",
        ran as f64 / secs
    );
    let mut states: Vec<(ExecutionState, u64)> =
        tally.executions.iter().map(|(s, n)| (*s, *n)).collect();
    states.sort_by_key(|(s, _)| s.as_str());
    let outcomes: Vec<String> = states.iter().map(|(s, n)| format!("{s} {n}")).collect();
    println!("  outcomes     {}", outcomes.join(" · "));
    println!(
        "  retries      {retries} failed attempts retried ({} injected transient failures, {} injected permanent)",
        recorder.injected_transient.load(Ordering::Relaxed),
        recorder.injected_permanent.load(Ordering::Relaxed)
    );
    println!(
        "  cascade      upstream handler done → downstream handler started (complete, cascade, claim):"
    );
    println!(
        "                probe flows on an idle lane: p50 {:.2} ms · p99 {:.2} ms · max {:.2} ms (n = {})",
        ms(percentile(&probe_hops, 0.50)),
        ms(percentile(&probe_hops, 0.99)),
        ms(percentile(&probe_hops, 1.0)),
        probe_hops.len()
    );
    println!(
        "                inside the workload, incl. queueing behind {} flows in flight: p50 {:.2} ms · p99 {:.2} ms (n = {})",
        args.in_flight,
        ms(percentile(&hops, 0.50)),
        ms(percentile(&hops, 0.99)),
        hops.len()
    );
    let claims: u64 = reports.iter().map(|r| r.claim_calls).sum();
    let empty: u64 = reports.iter().map(|r| r.empty_claims).sum();
    println!(
        "  workers      {attempts} attempts · {:.2} round trips per attempt ({claims} claims of which {empty} empty, {} complete/fail)",
        round_trips as f64 / attempts.max(1) as f64,
        round_trips - claims
    );
    let dispatched: u64 = engines.iter().map(|e| e.completions_dispatched).sum();
    let lag_count: u64 = engines.iter().map(|e| e.cascade_lag_count).sum();
    let lag_max = engines
        .iter()
        .map(|e| e.cascade_lag_max)
        .max()
        .unwrap_or_default();
    let lag_mean = if lag_count == 0 {
        Duration::ZERO
    } else {
        let total: f64 = engines
            .iter()
            .map(|e| e.cascade_lag_mean.as_secs_f64() * e.cascade_lag_count as f64)
            .sum();
        Duration::from_secs_f64(total / lag_count as f64)
    };
    println!(
        "  engine       {dispatched} completions cascaded by the dispatch loop (the rest inline) · lag mean {:.2} ms · max {:.2} ms",
        ms(lag_mean),
        ms(lag_max)
    );
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
