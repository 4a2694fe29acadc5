//! The backends under test: one fresh deployment per measurement, and the admin connections
//! the footprint and resource measurements need.
//!
//! Every measurement gets its own deployment — a new in-memory backend, a new Valkey
//! namespace (`ff:bench-<pid>-<n>:`), a new Postgres schema (`bench_<pid>_<n>`) — so no
//! measurement sees another's data, and [`Target::dispose`] removes it afterwards so the
//! servers do not fill up over a long run. Every backend is wrapped in a
//! [`CountingBackend`], through which the workloads make every call.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use anyhow::Context;
use ff_backend_postgres::{PostgresBackend, PostgresConfig};
use ff_backend_valkey::{ValkeyBackend, ValkeyConfig};
use ff_core::EngineBackend;
use ff_core::memory::MemoryBackend;
use serde::Serialize;

use super::counting::CountingBackend;

/// A backend the bench measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, clap::ValueEnum, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BackendKind {
    /// `ff_core::memory::MemoryBackend`: the in-process reference.
    Memory,
    /// `ff_backend_valkey::ValkeyBackend` on the standalone Valkey server.
    Valkey,
    /// `ff_backend_postgres::PostgresBackend` on the PostgreSQL server.
    Postgres,
}

impl BackendKind {
    /// Every backend, in report order.
    pub const ALL: [BackendKind; 3] = [
        BackendKind::Memory,
        BackendKind::Valkey,
        BackendKind::Postgres,
    ];

    /// The stable lower-case name used in the report and the JSON.
    pub fn name(self) -> &'static str {
        match self {
            BackendKind::Memory => "memory",
            BackendKind::Valkey => "valkey",
            BackendKind::Postgres => "postgres",
        }
    }
}

/// Where the servers are.
#[derive(Clone, Debug, Default)]
pub struct Servers {
    /// `redis://…` of the standalone Valkey.
    pub valkey_url: Option<String>,
    /// `postgres://…` of the PostgreSQL server.
    pub postgres_url: Option<String>,
}

impl Servers {
    /// The Valkey URL, or an error naming what is missing.
    pub fn valkey(&self) -> anyhow::Result<&str> {
        self.valkey_url
            .as_deref()
            .context("no Valkey server URL (FF_VALKEY_URL) for the valkey backend")
    }

    /// The PostgreSQL URL, or an error naming what is missing.
    pub fn postgres(&self) -> anyhow::Result<&str> {
        self.postgres_url
            .as_deref()
            .context("no PostgreSQL server URL (FF_POSTGRES_URL) for the postgres backend")
    }
}

/// A fresh deployment name, unique within this process and across concurrent processes.
pub fn fresh_name(separator: char) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("bench{separator}{}{separator}{n}", std::process::id())
}

/// What is behind a [`Target`], for the measurements that look past the trait.
#[derive(Debug)]
pub enum Store {
    /// The in-memory backend.
    Memory,
    /// A Valkey namespace.
    Valkey {
        /// The backend itself (memory and round-trip counters).
        backend: Arc<ValkeyBackend>,
        /// An admin connection (INFO, MEMORY USAGE, SCAN).
        admin: redis::aio::MultiplexedConnection,
    },
    /// A Postgres schema.
    Postgres {
        /// The backend itself.
        backend: PostgresBackend,
        /// An admin connection (relation sizes, row counts, WAL statistics).
        admin: tokio_postgres::Client,
        /// The deployment's schema.
        schema: String,
    },
}

/// One fresh deployment of one backend.
#[derive(Debug)]
pub struct Target {
    /// Which backend.
    pub kind: BackendKind,
    /// The counting wrapper every workload calls through.
    pub counting: Arc<CountingBackend>,
    /// What is behind it.
    pub store: Store,
}

impl Target {
    /// A new, empty deployment of `kind`.
    pub async fn fresh(kind: BackendKind, servers: &Servers) -> anyhow::Result<Target> {
        let (inner, store): (Arc<dyn EngineBackend>, Store) = match kind {
            BackendKind::Memory => (Arc::new(MemoryBackend::new()), Store::Memory),
            BackendKind::Valkey => {
                let url = servers.valkey()?;
                let namespace = fresh_name('-');
                let backend = Arc::new(
                    ValkeyBackend::connect(
                        ValkeyConfig::standalone(url).with_namespace(namespace.clone()),
                    )
                    .await
                    .with_context(|| format!("connecting the valkey backend to {url}"))?,
                );
                let admin = valkey_admin(url).await?;
                (backend.clone(), Store::Valkey { backend, admin })
            }
            BackendKind::Postgres => {
                let url = servers.postgres()?;
                let schema = fresh_name('_');
                let backend =
                    PostgresBackend::connect(PostgresConfig::new(url).with_schema(schema.clone()))
                        .await
                        .with_context(|| format!("connecting the postgres backend to {url}"))?;
                let admin = pg_connect(url).await?;
                (
                    Arc::new(backend.clone()),
                    Store::Postgres {
                        backend,
                        admin,
                        schema,
                    },
                )
            }
        };
        Ok(Target {
            kind,
            counting: Arc::new(CountingBackend::new(inner)),
            store,
        })
    }

    /// The backend, as every workload sees it.
    pub fn backend(&self) -> Arc<dyn EngineBackend> {
        self.counting.clone()
    }

    /// Removes the deployment's data from its server.
    pub async fn dispose(self) -> anyhow::Result<()> {
        match self.store {
            Store::Memory => Ok(()),
            Store::Valkey { backend, mut admin } => {
                let pattern = format!("{}*", backend.key_space().root());
                delete_matching(&mut admin, &pattern).await
            }
            Store::Postgres { backend, .. } => backend
                .drop_schema()
                .await
                .context("dropping the bench schema"),
        }
    }
}

/// How long an admin command (INFO, SCAN, DEL of a thousand keys) may take: the client's
/// default of 500 ms is too short on a loaded 2-core machine.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(30);

/// A multiplexed admin connection to the Valkey at `url`.
pub async fn valkey_admin(url: &str) -> anyhow::Result<redis::aio::MultiplexedConnection> {
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(ADMIN_TIMEOUT))
        .set_response_timeout(Some(ADMIN_TIMEOUT));
    redis::Client::open(url)
        .with_context(|| format!("invalid Valkey URL {url}"))?
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .with_context(|| format!("connecting to Valkey at {url}"))
}

/// Deletes every key matching `pattern` (SCAN + DEL, a thousand at a time). `DEL`, not
/// `UNLINK`: the memory is freed before the next measurement starts, not by a background
/// thread while it runs.
pub async fn delete_matching(
    con: &mut redis::aio::MultiplexedConnection,
    pattern: &str,
) -> anyhow::Result<()> {
    let mut cursor: u64 = 0;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(1000)
            .query_async(con)
            .await
            .with_context(|| format!("SCAN MATCH {pattern}"))?;
        if !keys.is_empty() {
            let _: u64 = redis::cmd("DEL")
                .arg(&keys)
                .query_async(con)
                .await
                .context("DEL")?;
        }
        if next == 0 {
            return Ok(());
        }
        cursor = next;
    }
}

/// A plain connection to PostgreSQL (its driver task spawned on the current runtime).
pub async fn pg_connect(url: &str) -> anyhow::Result<tokio_postgres::Client> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .with_context(|| format!("connecting to PostgreSQL at {url}"))?;
    tokio::spawn(async move {
        if let Err(err) = connection.await {
            tracing::debug!("bench admin connection closed: {err}");
        }
    });
    Ok(client)
}
