//! The bare Postgres `SKIP LOCKED` queue, with the server's durable defaults (fsync and
//! synchronous commit on):
//!
//! ```sql
//! CREATE TABLE q (id bigserial PRIMARY KEY, state text NOT NULL DEFAULT 'ready',
//!                 payload bytea NOT NULL);
//! CREATE INDEX q_ready ON q (id) WHERE state = 'ready';
//! -- submit: one row per statement (its own transaction)
//! INSERT INTO q (payload) VALUES ($1);
//! -- claim: up to n tasks
//! UPDATE q SET state = 'running' WHERE id IN
//!   (SELECT id FROM q WHERE state = 'ready' ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED)
//!   RETURNING id, payload;
//! -- ack: the task's row is marked done; the last ack of a batch carries the next claim in
//! -- the same statement
//! UPDATE q SET state = 'done' WHERE id = $1;
//! WITH done AS (UPDATE q SET state = 'done' WHERE id = $1) UPDATE q … RETURNING id, payload;
//! ```
//!
//! The ack is an UPDATE, as the issue that set the bar defines the ceiling ("claim-update +
//! complete-update"), and as the engine keeps a finished execution's row (until retention).
//! Not a `DELETE`, which writes no new row version and no index entry: that would measure a
//! queue that forgets its finished tasks against an engine that keeps them.
//!
//! A claim can deadlock with a concurrent ack + claim: a `FOR UPDATE` that finds a row
//! changed since its snapshot locks it before rechecking it, and keeps the lock until commit
//! even when the recheck fails. Like any Postgres client, the workers retry a statement that
//! failed with a deadlock or serialization error (it was rolled back whole); the notes count
//! the retries.
//!
//! Each producer and worker has its own connection with prepared statements (16 + 16, as
//! the backend's pool of 16). The table lives in a fresh schema, dropped afterwards. A
//! `CHECKPOINT` precedes each phase, as for the backend.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use tokio::task::JoinSet;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;

use crate::bench::resources::{Meter, usage};
use crate::bench::stats::Latency;
use crate::bench::target::{fresh_name, pg_connect};
use crate::bench::workload::{Figures, PAYLOAD_BYTES, Shape, payload, produce, rate};

/// How often a statement is retried after a deadlock or serialization failure.
const MAX_RETRIES: u32 = 20;

/// Runs the queue with `n` tasks on the PostgreSQL at `url`, claiming up to `batch` tasks
/// per statement.
pub async fn run(url: &str, shape: Shape, n: u64, batch: u32) -> anyhow::Result<Figures> {
    let schema = fresh_name('_');
    let admin = pg_connect(url).await?;
    admin
        .batch_execute(&format!(
            "CREATE SCHEMA {schema};
             CREATE TABLE {schema}.q (
                 id bigserial PRIMARY KEY,
                 state text NOT NULL DEFAULT 'ready' CHECK (state IN ('ready', 'running', 'done')),
                 payload bytea NOT NULL);
             CREATE INDEX q_ready ON {schema}.q (id) WHERE state = 'ready';"
        ))
        .await
        .context("creating the queue table")?;
    let outcome = measure(url, &schema, shape, n, batch, &admin).await;
    let dropped = admin
        .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
        .await
        .context("dropping the queue schema");
    let figures = outcome?;
    dropped?;
    Ok(figures)
}

async fn measure(
    url: &str,
    schema: &str,
    shape: Shape,
    n: u64,
    batch: u32,
    admin: &tokio_postgres::Client,
) -> anyhow::Result<Figures> {
    let payload = Arc::new(payload(PAYLOAD_BYTES));
    let mut meter = Meter::postgres(url).await?;
    let mut figures = Figures::default();

    // Submit.
    let mut producers = Vec::new();
    for _ in 0..shape.producers.max(1) {
        let client = pg_connect(url).await?;
        let insert = client
            .prepare(&format!("INSERT INTO {schema}.q (payload) VALUES ($1)"))
            .await
            .context("preparing the insert")?;
        producers.push((client, insert));
    }
    admin
        .batch_execute("CHECKPOINT")
        .await
        .context("CHECKPOINT")?;
    let before = meter.read().await?;
    let started = Instant::now();
    let count = producers.len();
    let mut producers = producers.into_iter();
    produce(n, count, |_, share| {
        let producer = producers.next();
        let payload = payload.clone();
        async move {
            let (client, insert) = producer.context("a producer without its connection")?;
            for _ in 0..share {
                client
                    .execute(&insert, &[&payload.as_slice()])
                    .await
                    .context("INSERT")?;
            }
            Ok(())
        }
    })
    .await?;
    figures.put("ceiling.submit_per_s", rate(n, started.elapsed()));
    let after = meter.read().await?;
    let submit_usage = usage(&before, &after, n);
    figures.put_opt("ceiling.submit_server_cpu_us", submit_usage.server_cpu_us);
    figures.put_opt("ceiling.submit_wal_bytes", submit_usage.wal_bytes);

    // Drain.
    let mut workers = Vec::new();
    for _ in 0..shape.workers {
        workers.push(Worker::connect(url, schema).await?);
    }
    admin
        .batch_execute("CHECKPOINT")
        .await
        .context("CHECKPOINT")?;
    let before = meter.read().await?;
    let started = Instant::now();
    let mut tasks = JoinSet::new();
    for worker in workers {
        tasks.spawn(worker.run(i64::from(batch)));
    }
    let mut latencies = Vec::with_capacity(usize::try_from(n).unwrap_or(0));
    let mut last = started;
    let mut retried = 0;
    while let Some(joined) = tasks.join_next().await {
        let (samples, finished, retries) = joined.context("a worker panicked")??;
        latencies.extend(samples);
        last = last.max(finished);
        retried += retries;
    }
    let after = meter.read().await?;
    let elapsed = last.saturating_duration_since(started);

    let left: i64 = admin
        .query_one(
            &format!("SELECT count(*) FROM {schema}.q WHERE state <> 'done'"),
            &[],
        )
        .await
        .context("counting what is left")?
        .get(0);
    ensure!(
        left == 0 && latencies.len() as u64 == n,
        "the queue acked {} of {n} tasks ({left} tasks not done)",
        latencies.len()
    );
    figures.put("ceiling.exec_per_s", rate(n, elapsed));
    if let Some(latency) = Latency::of(&mut latencies) {
        figures.put("ceiling.latency_p50_ms", latency.p50_ms);
        figures.put("ceiling.latency_p99_ms", latency.p99_ms);
    }
    let drain_usage = usage(&before, &after, n);
    figures.put_opt("ceiling.server_cpu_us", drain_usage.server_cpu_us);
    figures.put_opt("ceiling.client_cpu_us", drain_usage.client_cpu_us);
    figures.put_opt("ceiling.wal_bytes", drain_usage.wal_bytes);
    figures.notes.push(format!(
        "statements retried after a deadlock or serialization failure: {retried}"
    ));
    Ok(figures)
}

/// One worker's connection and prepared statements.
struct Worker {
    client: tokio_postgres::Client,
    claim: tokio_postgres::Statement,
    ack: tokio_postgres::Statement,
    ack_and_claim: tokio_postgres::Statement,
}

impl Worker {
    async fn connect(url: &str, schema: &str) -> anyhow::Result<Worker> {
        let client = pg_connect(url).await?;
        let claim_sql = format!(
            "UPDATE {schema}.q SET state = 'running' WHERE id IN \
             (SELECT id FROM {schema}.q WHERE state = 'ready' ORDER BY id LIMIT $1 \
              FOR UPDATE SKIP LOCKED) RETURNING id, payload"
        );
        let claim = client
            .prepare(&claim_sql)
            .await
            .context("preparing the claim")?;
        let ack = client
            .prepare(&format!(
                "UPDATE {schema}.q SET state = 'done' WHERE id = $1"
            ))
            .await
            .context("preparing the ack")?;
        let ack_and_claim = client
            .prepare(&format!(
                "WITH done AS (UPDATE {schema}.q SET state = 'done' WHERE id = $2) {claim_sql}"
            ))
            .await
            .context("preparing the ack + claim")?;
        Ok(Worker {
            client,
            claim,
            ack,
            ack_and_claim,
        })
    }

    /// Claims batches and acks each task until a claim finds nothing; returns the claim →
    /// ack latencies, when the last ack returned, and how many statements were retried.
    async fn run(self, batch: i64) -> anyhow::Result<(Vec<Duration>, Instant, u64)> {
        let mut hands: VecDeque<(i64, Instant)> = VecDeque::new();
        let mut latencies = Vec::new();
        let mut last = Instant::now();
        let mut retried = 0;
        let rows = self
            .query(&self.claim, &[&batch], &mut retried)
            .await
            .context("claim")?;
        let now = Instant::now();
        hands.extend(rows.iter().map(|r| (r.get::<_, i64>(0), now)));
        while let Some((id, claimed_at)) = hands.pop_front() {
            let (statement, params): (_, &[&(dyn ToSql + Sync)]) = if hands.is_empty() {
                (&self.ack_and_claim, &[&batch, &id])
            } else {
                (&self.ack, &[&id])
            };
            let rows = self
                .query(statement, params, &mut retried)
                .await
                .context("ack")?;
            let now = Instant::now();
            latencies.push(now.saturating_duration_since(claimed_at));
            last = now;
            hands.extend(rows.iter().map(|r| (r.get::<_, i64>(0), now)));
        }
        Ok((latencies, last, retried))
    }

    /// Runs a statement, retrying it after a deadlock or serialization failure (it was rolled
    /// back whole, so running it again is correct), as any Postgres client must.
    async fn query(
        &self,
        statement: &tokio_postgres::Statement,
        params: &[&(dyn ToSql + Sync)],
        retried: &mut u64,
    ) -> Result<Vec<tokio_postgres::Row>, tokio_postgres::Error> {
        let mut tries = 0;
        loop {
            match self.client.query(statement, params).await {
                Err(err)
                    if tries < MAX_RETRIES
                        && matches!(
                            err.code(),
                            Some(&SqlState::T_R_DEADLOCK_DETECTED)
                                | Some(&SqlState::T_R_SERIALIZATION_FAILURE)
                        ) =>
                {
                    tries += 1;
                    *retried += 1;
                }
                other => return other,
            }
        }
    }
}
