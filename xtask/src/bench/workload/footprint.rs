//! Footprint: what a finished execution keeps on the server.
//!
//! `n` standalone executions with a 100 B payload are submitted and drained to `succeeded`
//! (16 producers, 16 workers), and the server is measured before and after:
//!
//! - Valkey: `used_memory` of `INFO memory` (after any background freeing has finished), so
//!   every key, index entry and dictionary slot an execution leaves counts; plus `MEMORY
//!   USAGE` of the keys of a few executions (hash, payload, result, attempts, progress) for
//!   the share of the execution's own keys.
//! - Postgres: `pg_total_relation_size` of every table of the deployment's schema (heap,
//!   TOAST and indexes, dead tuples of the claim and complete updates included, as on disk
//!   before a vacuum reuses them), the row count of every table, and the average live size of
//!   an `ff_execution` row (`pg_column_size`).
//!
//! Not measured for the in-memory backend.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use super::drain::{DrainSpec, drain};
use super::{Figures, SMALL_PAYLOAD_BYTES, Shape, lane, payload, submit_executions};
use crate::bench::resources::info_field;
use crate::bench::target::{Store, Target};

/// Executions whose keys are sampled with `MEMORY USAGE`.
const KEY_SAMPLES: usize = 20;

/// Measures the footprint of `n` finished executions.
pub async fn run(target: &Target, shape: Shape, n: u64) -> anyhow::Result<Figures> {
    let backend = target.backend();
    let lane = lane("footprint");
    let payload = Arc::new(payload(SMALL_PAYLOAD_BYTES));
    let spec = DrainSpec {
        workers: shape.workers,
        claim_batch: shape.claim_batch,
        claim_next: shape.claim_next,
        lane: lane.clone(),
        expected: n,
    };
    let mut figures = Figures::default();
    match &target.store {
        Store::Memory => bail!("the footprint is measured on server backends only"),
        Store::Valkey {
            backend: valkey,
            admin,
        } => {
            let mut admin = admin.clone();
            let before = used_memory(&mut admin).await?;
            submit_executions(&backend, &lane, &payload, n, shape.producers).await?;
            let drained = drain(&backend, &spec).await?;
            let after = used_memory(&mut admin).await?;
            figures.put(
                "footprint.bytes_per_exec",
                (after - before) / n.max(1) as f64,
            );
            let keys = valkey.key_space();
            let mut total = 0u64;
            let sampled = drained.done.iter().take(KEY_SAMPLES).collect::<Vec<_>>();
            for done in &sampled {
                let hash = keys.execution(&done.id);
                for key in [
                    hash.clone(),
                    format!("{hash}:p"),
                    format!("{hash}:r"),
                    format!("{hash}:g"),
                    format!("{hash}:att"),
                ] {
                    let bytes: Option<u64> = redis::cmd("MEMORY")
                        .arg("USAGE")
                        .arg(&key)
                        .arg("SAMPLES")
                        .arg(0)
                        .query_async(&mut admin)
                        .await
                        .with_context(|| format!("MEMORY USAGE {key}"))?;
                    total += bytes.unwrap_or(0);
                }
            }
            if !sampled.is_empty() {
                figures.put("footprint.keys_bytes", total as f64 / sampled.len() as f64);
            }
        }
        Store::Postgres { admin, schema, .. } => {
            let before = relations(admin, schema).await?;
            submit_executions(&backend, &lane, &payload, n, shape.producers).await?;
            drain(&backend, &spec).await?;
            let after = relations(admin, schema).await?;
            let per = |a: i64, b: i64| (a - b) as f64 / n.max(1) as f64;
            figures.put("footprint.bytes_per_exec", per(after.bytes, before.bytes));
            figures.put("footprint.rows_per_exec", per(after.rows, before.rows));
            let row = admin
                .query_one(
                    &format!(
                        "SELECT coalesce(avg(pg_column_size(e.*)), 0)::float8 \
                         FROM {schema}.ff_execution e"
                    ),
                    &[],
                )
                .await
                .context("measuring ff_execution rows")?;
            figures.put("footprint.live_row_bytes", row.get::<_, f64>(0));
        }
    }
    Ok(figures)
}

/// `used_memory`, once the server has no background frees pending (so the deletions of an
/// earlier measurement do not land in this one).
async fn used_memory(con: &mut redis::aio::MultiplexedConnection) -> anyhow::Result<f64> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let info: String = redis::cmd("INFO")
            .arg("memory")
            .query_async(con)
            .await
            .context("INFO memory")?;
        let pending = info_field(&info, "lazyfree_pending_objects").unwrap_or(0.0);
        if pending == 0.0 || Instant::now() > deadline {
            return info_field(&info, "used_memory").context("INFO memory has no used_memory");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Bytes and rows of every table of a schema.
struct Relations {
    bytes: i64,
    rows: i64,
}

async fn relations(admin: &tokio_postgres::Client, schema: &str) -> anyhow::Result<Relations> {
    let tables = admin
        .query(
            "SELECT c.relname::text, pg_total_relation_size(c.oid)::bigint \
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = $1 AND c.relkind = 'r'",
            &[&schema],
        )
        .await
        .context("listing the schema's tables")?;
    let mut relations = Relations { bytes: 0, rows: 0 };
    for table in tables {
        let name: String = table.get(0);
        relations.bytes += table.get::<_, i64>(1);
        let count = admin
            .query_one(&format!("SELECT count(*) FROM {schema}.\"{name}\""), &[])
            .await
            .with_context(|| format!("counting {schema}.{name}"))?;
        relations.rows += count.get::<_, i64>(0);
    }
    Ok(relations)
}
