//! The bare Valkey list queue: `RPUSH` to submit, `LMPOP … COUNT n` to take a batch,
//! `INCR` of a done counter to ack, on one multiplexed connection (a `ConnectionManager`
//! with the timeouts of `ValkeyBackend`: its connection model) shared by every producer and
//! worker.
//!
//! `LMPOP`, not the blocking `BLMPOP`: a blocking pop would stall every other request on the
//! shared multiplexed connection, and the queue is filled before the drain starts, so an
//! empty pop means the worker is done. Concurrent requests on the connection are pipelined by
//! the client; a worker's last ack and next pop go in one explicit pipeline.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use ff_backend_valkey::ValkeyConfig;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::task::JoinSet;

use crate::bench::resources::{Meter, command_stats, reset_command_stats, usage, valkey_forks};
use crate::bench::stats::Latency;
use crate::bench::target::{delete_matching, fresh_name, valkey_admin};
use crate::bench::workload::{Figures, PAYLOAD_BYTES, Shape, payload, rate};

type Popped = Option<(String, Vec<Vec<u8>>)>;

/// Runs the list queue with `n` tasks on the Valkey at `url`, popping up to `batch` tasks
/// per call.
pub async fn run(url: &str, shape: Shape, n: u64, batch: u32) -> anyhow::Result<Figures> {
    let client = redis::Client::open(url).with_context(|| format!("invalid Valkey URL {url}"))?;
    // The connection settings of `ValkeyBackend` (ValkeyConfig's defaults).
    let defaults = ValkeyConfig::standalone(url);
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(defaults.connection_timeout))
        .set_response_timeout(Some(defaults.response_timeout));
    let con = ConnectionManager::new_with_config(client, config)
        .await
        .with_context(|| format!("connecting to Valkey at {url}"))?;
    let prefix = format!("{}:", fresh_name('-'));
    let queue = Arc::new(format!("{prefix}queue"));
    let done_key = Arc::new(format!("{prefix}done"));
    let payload = Arc::new(payload(PAYLOAD_BYTES));
    let mut meter = Meter::valkey(url).await?;
    let mut figures = Figures::default();

    // Submit: producers RPUSH one task per call.
    let before = meter.read().await?;
    let started = Instant::now();
    let mut tasks = JoinSet::new();
    let producers = shape.producers.max(1) as u64;
    for p in 0..producers {
        let share = n / producers + u64::from(p < n % producers);
        let (mut con, queue, payload) = (con.clone(), queue.clone(), payload.clone());
        tasks.spawn(async move {
            for _ in 0..share {
                let _: u64 = redis::cmd("RPUSH")
                    .arg(queue.as_str())
                    .arg(payload.as_slice())
                    .query_async(&mut con)
                    .await
                    .context("RPUSH")?;
            }
            anyhow::Ok(())
        });
    }
    while let Some(joined) = tasks.join_next().await {
        joined.context("a producer panicked")??;
    }
    figures.put("ceiling.submit_per_s", rate(n, started.elapsed()));
    let after = meter.read().await?;
    figures.put_opt(
        "ceiling.submit_server_cpu_us",
        usage(&before, &after, n).server_cpu_us,
    );

    // Drain.
    let mut admin = valkey_admin(url).await?;
    reset_command_stats(&mut admin).await?;
    let forks_before = valkey_forks(&mut admin).await?;
    let before = meter.read().await?;
    let started = Instant::now();
    let mut workers = JoinSet::new();
    for _ in 0..shape.workers {
        workers.spawn(worker(con.clone(), queue.clone(), done_key.clone(), batch));
    }
    let mut latencies = Vec::with_capacity(usize::try_from(n).unwrap_or(0));
    let mut last = started;
    while let Some(joined) = workers.join_next().await {
        let (samples, finished) = joined.context("a worker panicked")??;
        latencies.extend(samples);
        last = last.max(finished);
    }
    let after = meter.read().await?;
    let elapsed = last.saturating_duration_since(started);

    let mut check = con.clone();
    let done: u64 = redis::cmd("GET")
        .arg(done_key.as_str())
        .query_async::<Option<u64>>(&mut check)
        .await
        .context("GET the done counter")?
        .unwrap_or(0);
    ensure!(done == n, "the list queue acked {done} of {n} tasks");
    figures.put("ceiling.exec_per_s", rate(n, elapsed));
    if let Some(latency) = Latency::of(&mut latencies) {
        figures.put("ceiling.latency_p50_ms", latency.p50_ms);
        figures.put("ceiling.latency_p99_ms", latency.p99_ms);
    }
    let drain_usage = usage(&before, &after, n);
    figures.put_opt("ceiling.server_cpu_us", drain_usage.server_cpu_us);
    figures.put_opt("ceiling.client_cpu_us", drain_usage.client_cpu_us);

    figures.notes.push(format!(
        "Valkey server time per task (drain): {}; forks (AOF rewrites) during the drain: {}",
        command_stats(&mut admin, n).await?,
        valkey_forks(&mut admin).await? - forks_before
    ));
    delete_matching(&mut admin, &format!("{prefix}*")).await?;
    Ok(figures)
}

/// Pops batches and acks each task; returns the pop → ack latencies and when the last ack
/// returned.
async fn worker(
    mut con: ConnectionManager,
    queue: Arc<String>,
    done_key: Arc<String>,
    batch: u32,
) -> anyhow::Result<(Vec<Duration>, Instant)> {
    let pop = || {
        let mut cmd = redis::cmd("LMPOP");
        cmd.arg(1)
            .arg(queue.as_str())
            .arg("LEFT")
            .arg("COUNT")
            .arg(batch);
        cmd
    };
    let mut hands: VecDeque<(Vec<u8>, Instant)> = VecDeque::new();
    let mut latencies = Vec::new();
    let mut last = Instant::now();
    let popped: Popped = pop().query_async(&mut con).await.context("LMPOP")?;
    let now = Instant::now();
    hands.extend(
        popped
            .into_iter()
            .flat_map(|(_, items)| items)
            .map(|i| (i, now)),
    );
    while let Some((task, popped_at)) = hands.pop_front() {
        drop(task);
        if hands.is_empty() {
            let (_, popped): (u64, Popped) = redis::pipe()
                .cmd("INCR")
                .arg(done_key.as_str())
                .add_command(pop())
                .query_async(&mut con)
                .await
                .context("INCR + LMPOP")?;
            let now = Instant::now();
            latencies.push(now.saturating_duration_since(popped_at));
            last = now;
            hands.extend(
                popped
                    .into_iter()
                    .flat_map(|(_, items)| items)
                    .map(|i| (i, now)),
            );
        } else {
            let _: u64 = redis::cmd("INCR")
                .arg(done_key.as_str())
                .query_async(&mut con)
                .await
                .context("INCR")?;
            let now = Instant::now();
            latencies.push(now.saturating_duration_since(popped_at));
            last = now;
        }
    }
    Ok((latencies, last))
}
