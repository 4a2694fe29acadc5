//! The FlowFabric conformance suite against a real PostgreSQL server.
//!
//! `FF_POSTGRES_URL` names the server (e.g. `postgres://postgres@127.0.0.1:5432/postgres`);
//! without it every case is reported ignored (or failed with `FF_REQUIRE_SERVERS=1`). Two
//! configurations run: `postgres` (hints, inline cascade) and `postgres-deferred` (no hints, every
//! completion through the outbox). Each case gets its own fresh schema (`ffc_<case>_<hash>`),
//! dropped again when the run ends.

use std::process::ExitCode;
use std::sync::Arc;

use ff_backend_postgres::{PostgresBackend, PostgresConfig};
use ff_core::conformance::{self, BackendFactory};
use ff_core::{EngineBackend, EngineError};
use tokio_postgres::NoTls;

const SCHEMA_PREFIX: &str = "ffc_";

/// One configuration of the backend under test.
struct Postgres {
    url: String,
    /// `postgres`: hints on, inline cascade up to 16 edges. `postgres-deferred`: no hints, no
    /// inline cascade (every completion goes through the outbox and `cascade_completion`).
    deferred: bool,
}

/// A schema name for a case: the case name, sanitized and kept short, plus a hash of the
/// full name so two cases never share one.
fn schema_for(case: &str) -> String {
    let mut hash: u32 = 0x811c_9dc5;
    for byte in case.bytes() {
        hash ^= u32::from(byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    let readable: String = case
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .take(30)
        .collect();
    format!("{SCHEMA_PREFIX}{readable}_{hash:08x}")
}

#[async_trait::async_trait]
impl BackendFactory for Postgres {
    fn label(&self) -> String {
        if self.deferred {
            "postgres-deferred".into()
        } else {
            "postgres".into()
        }
    }

    async fn create(&self, case: &str) -> Result<Arc<dyn EngineBackend>, EngineError> {
        let schema = schema_for(&format!("{}:{case}", self.label()));
        let config = PostgresConfig::new(self.url.clone())
            .with_schema(schema)
            .with_pool_size(4)
            .with_hints(!self.deferred)
            .with_inline_cascade_limit(if self.deferred { 0 } else { 16 })
            .with_frozen_clock(true);
        // A fresh schema per case: drop what an earlier run may have left.
        let backend = PostgresBackend::connect(config.clone()).await?;
        backend.drop_schema().await?;
        drop(backend);
        Ok(Arc::new(PostgresBackend::connect(config).await?))
    }
}

/// Drops every case schema this suite created.
fn drop_case_schemas(url: &str) {
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return;
    };
    runtime.block_on(async {
        let Ok((client, connection)) = tokio_postgres::connect(url, NoTls).await else {
            return;
        };
        let driver = tokio::spawn(connection);
        let schemas = client
            .query(
                "SELECT nspname FROM pg_namespace WHERE nspname LIKE $1",
                &[&format!("{SCHEMA_PREFIX}%")],
            )
            .await
            .unwrap_or_default();
        for row in schemas {
            let name: String = row.get(0);
            let _ = client
                .batch_execute(&format!("DROP SCHEMA IF EXISTS {name} CASCADE"))
                .await;
        }
        drop(client);
        let _ = driver.await;
    });
}

fn main() -> ExitCode {
    match std::env::var("FF_POSTGRES_URL") {
        Ok(url) if !url.trim().is_empty() => {
            let code = conformance::main(vec![
                Arc::new(Postgres {
                    url: url.clone(),
                    deferred: false,
                }),
                Arc::new(Postgres {
                    url: url.clone(),
                    deferred: true,
                }),
            ]);
            if std::env::var("FF_KEEP_SCHEMAS").is_err() {
                drop_case_schemas(&url);
            }
            code
        }
        _ => conformance::main_unconfigured("postgres", "FF_POSTGRES_URL is not set"),
    }
}
