//! The connection pool and the one way statements are run: prepared once per connection
//! (deadpool's statement cache), retried with jittered backoff after contention or a lost
//! connection, a bounded number of times.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use ff_core::EngineError;
use tokio_postgres::types::ToSql;
use tokio_postgres::{NoTls, Row};

use crate::config::PostgresConfig;
use crate::pg_error::{from_pg, from_pool};

/// Parameters of one statement.
pub(crate) type Params<'a> = &'a [&'a (dyn ToSql + Sync)];

/// The pool, plus the retry budget.
#[derive(Clone)]
pub(crate) struct Db {
    pool: Pool,
    retries: u32,
    /// Statements sent (each one round trip), for benchmarks.
    sent: Arc<AtomicU64>,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let status = self.pool.status();
        f.debug_struct("Db")
            .field("size", &status.size)
            .field("available", &status.available)
            .finish()
    }
}

/// The driver config of every connection: the URL plus `search_path`, the plan cache mode
/// (and the hint switch) as startup options, so no connection ever runs a statement in the
/// wrong schema.
pub(crate) fn pg_config(config: &PostgresConfig) -> Result<tokio_postgres::Config, EngineError> {
    let mut pg: tokio_postgres::Config = config
        .url
        .parse()
        .map_err(|e| EngineError::Config(format!("invalid postgres url: {e}")))?;
    // Generic plans: every statement here is a small OLTP statement whose best plan does not
    // depend on its parameters, and the default (custom plans for the first executions, kept
    // when the generic plan's estimate looks worse, as it does for `LIMIT $n`) re-plans the
    // claim statement inside the plpgsql functions on every call, which measured about 40 %
    // of a claim's server time.
    let mut options = format!(
        "-c search_path={} -c plan_cache_mode=force_generic_plan",
        config.schema_name()
    );
    if config.hints {
        options.push_str(" -c flowfabric.hints=on");
    }
    if let Some(existing) = pg.get_options() {
        options = format!("{existing} {options}");
    }
    pg.options(&options);
    if pg.get_application_name().is_none() {
        pg.application_name("flowfabric");
    }
    Ok(pg)
}

impl Db {
    /// Builds the pool (connections are opened lazily, on first use).
    pub(crate) fn new(config: &PostgresConfig) -> Result<Self, EngineError> {
        let manager = Manager::from_config(
            pg_config(config)?,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(config.pool_size)
            .wait_timeout(Some(config.pool_wait_timeout))
            .create_timeout(Some(config.pool_wait_timeout))
            .runtime(Runtime::Tokio1)
            .build()
            .map_err(|e| EngineError::Config(format!("postgres pool: {e}")))?;
        Ok(Db {
            pool,
            retries: config.retries,
            sent: Arc::new(AtomicU64::new(0)),
        })
    }

    /// The pool (for transactions that are not a single statement: migrations).
    pub(crate) fn pool(&self) -> &Pool {
        &self.pool
    }

    /// Runs one statement and returns its rows, retrying retryable failures.
    pub(crate) async fn query(
        &self,
        sql: &str,
        params: Params<'_>,
    ) -> Result<Vec<Row>, EngineError> {
        let mut attempt = 0u32;
        loop {
            match self.query_once(sql, params).await {
                Ok(rows) => return Ok(rows),
                Err(err) if err.is_retryable() && attempt < self.retries => {
                    attempt += 1;
                    tracing::debug!(error = %err, attempt, "retrying postgres statement");
                    tokio::time::sleep(backoff(attempt)).await;
                }
                Err(err) => return Err(err),
            }
        }
    }

    /// Runs one statement that returns exactly one row.
    pub(crate) async fn query_one(
        &self,
        sql: &str,
        params: Params<'_>,
    ) -> Result<Row, EngineError> {
        self.query(sql, params)
            .await?
            .into_iter()
            .next()
            .ok_or_else(|| EngineError::Corrupt(format!("no row from {}", first_line(sql))))
    }

    /// Statements sent so far (each one round trip; a first use on a connection also
    /// prepares the statement, one more round trip, not counted).
    pub(crate) fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    async fn query_once(&self, sql: &str, params: Params<'_>) -> Result<Vec<Row>, EngineError> {
        let client = self.pool.get().await.map_err(from_pool)?;
        self.sent.fetch_add(1, Ordering::Relaxed);
        let statement = client.prepare_cached(sql).await.map_err(from_pg)?;
        client.query(&statement, params).await.map_err(from_pg)
    }
}

/// Jittered exponential backoff: about 2 ms, 4 ms, ... capped at 200 ms, each cut by up to
/// half at random so retrying callers spread out.
fn backoff(attempt: u32) -> Duration {
    let base = 2u64.saturating_mul(1 << attempt.min(7)).min(200);
    let jitter: f64 = rand::random::<f64>() * 0.5;
    Duration::from_micros((base as f64 * 1000.0 * (1.0 - jitter)) as u64)
}

fn first_line(sql: &str) -> &str {
    sql.trim().lines().next().unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_bounded() {
        for attempt in 0..20 {
            assert!(backoff(attempt) <= Duration::from_millis(200));
        }
    }
}
