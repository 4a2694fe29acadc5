//! [`Service`]: the handle of one running server, and [`ServiceRecord`], what is known
//! about it (persisted in `state.json`).

use std::path::PathBuf;
use std::process::Child;

use serde::{Deserialize, Serialize};

use super::{postgres, valkey};

/// What kind of server a record describes, with what stopping it needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServiceKind {
    /// A `valkey-server` process (standalone or cluster node).
    Valkey,
    /// A PostgreSQL postmaster started with `pg_ctl`.
    Postgres {
        /// Directory of `pg_ctl`, `pg_isready`, ...
        bindir: PathBuf,
        /// The cluster's data directory (`PGDATA`).
        data_dir: PathBuf,
        /// Directory of the Unix socket (inside `dir`, unless that path was too long).
        socket_dir: PathBuf,
        /// Whether `pg_ctl` must run as the `postgres` system user (we are root, which
        /// PostgreSQL refuses to run as).
        as_postgres_user: bool,
    },
}

/// One running server: enough to reach it, check it and stop it, from this process or from
/// a later one (`cargo xtask services down`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceRecord {
    /// Human name, unique within a set: `valkey`, `valkey-cluster-1`, `postgres`.
    pub name: String,
    /// Kind-specific details.
    pub kind: ServiceKind,
    /// Pid of the server process (the postmaster for PostgreSQL).
    pub pid: u32,
    /// Client port on 127.0.0.1.
    pub port: u16,
    /// Directory holding the server's data and log.
    pub dir: PathBuf,
    /// Log file, quoted in errors.
    pub log: PathBuf,
    /// Connection URL.
    pub url: String,
}

impl ServiceRecord {
    /// Whether the recorded process is still running (and is still the server we started:
    /// the process name is checked, so a recycled pid does not count).
    pub fn is_alive(&self) -> bool {
        match &self.kind {
            ServiceKind::Valkey => valkey::is_alive(self),
            ServiceKind::Postgres { .. } => postgres::is_alive(self),
        }
    }

    /// Asks the server itself whether it is serving; returns its short answer.
    pub fn probe(&self) -> anyhow::Result<String> {
        match &self.kind {
            ServiceKind::Valkey => valkey::probe(self),
            ServiceKind::Postgres { .. } => postgres::probe(self),
        }
    }

    /// Stops the server (gracefully, escalating to SIGKILL with bounded waits). Stopping a
    /// server that is already gone succeeds, so this is idempotent.
    pub fn stop(&self) -> anyhow::Result<()> {
        match &self.kind {
            ServiceKind::Valkey => valkey::stop(self),
            ServiceKind::Postgres { .. } => postgres::stop(self),
        }
    }
}

/// A server this process started. Dropping a running one stops it (last resort for early
/// returns and panics); call [`Service::stop`] to see errors, or [`Service::detach`] to leave
/// it running.
#[derive(Debug)]
pub struct Service {
    record: ServiceRecord,
    /// Set when the server is our direct child (Valkey), so it is reaped after stopping.
    child: Option<Child>,
    running: bool,
}

impl Service {
    /// A handle for a server just started; `child` when it is our direct child process.
    pub(crate) fn new(record: ServiceRecord, child: Option<Child>) -> Self {
        Self {
            record,
            child,
            running: true,
        }
    }

    /// What is known about the server.
    pub fn record(&self) -> &ServiceRecord {
        &self.record
    }

    /// The child process, when the server is our direct child (used to notice early exits).
    pub(crate) fn child_mut(&mut self) -> Option<&mut Child> {
        self.child.as_mut()
    }

    /// Stops the server and reaps it; a second call does nothing.
    pub fn stop(&mut self) -> anyhow::Result<()> {
        if !self.running {
            return Ok(());
        }
        self.running = false;
        let result = self.record.stop();
        if let Some(mut child) = self.child.take() {
            if result.is_ok() {
                // Already exited: this only collects the exit status.
                let _ = child.wait();
            } else {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        result
    }

    /// Leaves the server running and returns its record.
    pub fn detach(mut self) -> ServiceRecord {
        self.running = false;
        // Dropping a `Child` neither kills nor waits; once we exit, init adopts the server.
        self.child = None;
        self.record.clone()
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if self.running
            && let Err(err) = self.stop()
        {
            eprintln!("xtask: could not stop {}: {err:#}", self.record.name);
        }
    }
}
