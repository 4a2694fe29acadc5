//! Local servers for development, tests and benchmarks: Valkey standalone, a 3-master Valkey
//! Cluster, PostgreSQL.
//!
//! [`start`] is the one entry point: it starts a [`Selection`] of servers under a root
//! directory and returns [`Services`], the handles plus their URLs ([`Urls`]). `cargo xtask
//! test` starts its own set and stops it afterwards; `cargo xtask services up` starts one and
//! detaches it (its [`State`] in `state.json` is what `down` and `status` read back);
//! `cargo xtask bench` is meant to call [`start`] the same way.
//!
//! Every server listens on 127.0.0.1 only, on a port found by binding port 0, keeps its data
//! under the root directory, and runs in its own process group (a Ctrl-C typed in the
//! terminal does not hit it; the task runner stops it in order). Each running server is a
//! [`Service`] that stops its server when dropped, as a last resort on any early return.

pub mod cluster;
pub mod command;
pub mod handle;
pub mod postgres;
pub mod state;
pub mod valkey;

use std::net::TcpListener;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

pub use handle::{Service, ServiceKind, ServiceRecord};
pub use state::State;

/// Which servers to start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Selection {
    /// A standalone Valkey server.
    pub valkey: bool,
    /// A Valkey Cluster of 3 masters without replicas.
    pub valkey_cluster: bool,
    /// A PostgreSQL server.
    pub postgres: bool,
}

impl Selection {
    /// Every kind of server: what `cargo xtask test` needs.
    pub fn all() -> Self {
        Self {
            valkey: true,
            valkey_cluster: true,
            postgres: true,
        }
    }

    /// Whether nothing is selected.
    pub fn is_empty(&self) -> bool {
        !(self.valkey || self.valkey_cluster || self.postgres)
    }
}

/// How much the servers' data matters, which decides how carefully it is first written.
///
/// Only PostgreSQL's `initdb` differs (`--no-sync` for throwaway servers, about 3 s saved
/// per start here). The running servers are the same either way: fsync on, AOF on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Data kept across restarts (`services up`, benchmarks): everything is flushed.
    Durable,
    /// Data discarded after the run (`cargo xtask test`): the initial cluster files are not
    /// flushed, which only matters if the machine crashes, and the run is lost then anyway.
    Throwaway,
}

/// Connection URLs of a started set of servers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Urls {
    /// `redis://127.0.0.1:PORT` of the standalone Valkey.
    pub valkey: Option<String>,
    /// `redis://127.0.0.1:PORT` of each cluster master (empty without a cluster).
    pub valkey_cluster: Vec<String>,
    /// `postgres://postgres@127.0.0.1:PORT/postgres`.
    pub postgres: Option<String>,
}

/// Environment variable with the standalone Valkey URL.
pub const ENV_VALKEY_URL: &str = "FF_VALKEY_URL";
/// Environment variable with the comma-separated cluster node URLs.
pub const ENV_VALKEY_CLUSTER_URLS: &str = "FF_VALKEY_CLUSTER_URLS";
/// Environment variable with the PostgreSQL URL.
pub const ENV_POSTGRES_URL: &str = "FF_POSTGRES_URL";
/// Environment variable telling test suites that a missing server is a failure, not a skip.
pub const ENV_REQUIRE_SERVERS: &str = "FF_REQUIRE_SERVERS";
/// Every variable above: what `test --no-services` removes from the test environment.
pub const ALL_ENV_VARS: [&str; 4] = [
    ENV_VALKEY_URL,
    ENV_VALKEY_CLUSTER_URLS,
    ENV_POSTGRES_URL,
    ENV_REQUIRE_SERVERS,
];

impl Urls {
    /// The `FF_*` variables that point the test suites and benchmarks at these servers.
    pub fn env_vars(&self) -> Vec<(&'static str, String)> {
        let mut vars = Vec::new();
        if let Some(url) = &self.valkey {
            vars.push((ENV_VALKEY_URL, url.clone()));
        }
        if !self.valkey_cluster.is_empty() {
            vars.push((ENV_VALKEY_CLUSTER_URLS, self.valkey_cluster.join(",")));
        }
        if let Some(url) = &self.postgres {
            vars.push((ENV_POSTGRES_URL, url.clone()));
        }
        vars
    }

    /// The variables as `export NAME=value` lines, for `eval "$(cargo xtask services up)"`.
    pub fn exports(&self) -> String {
        self.env_vars()
            .iter()
            .map(|(name, value)| format!("export {name}={value}\n"))
            .collect()
    }
}

/// A started set of servers: their handles, URLs and root directory.
///
/// Dropping it stops every server (see [`Service`]); [`Services::stop`] does the same but
/// reports failures, and [`Services::detach`] leaves them running.
#[derive(Debug)]
pub struct Services {
    root: PathBuf,
    services: Vec<Service>,
    urls: Urls,
}

impl Services {
    /// The URLs of the servers.
    pub fn urls(&self) -> &Urls {
        &self.urls
    }

    /// The server handles, in start order.
    pub fn handles(&self) -> &[Service] {
        &self.services
    }

    /// Every directory the servers use outside [`Services::root`] (PostgreSQL's fallbacks
    /// under the system temporary directory), for callers that delete throwaway data.
    pub fn dirs_outside_root(&self) -> Vec<PathBuf> {
        self.state(None).dirs_outside(&self.root)
    }

    /// The directory holding the servers' data, logs and `state.json`.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The state as recorded in `state.json`.
    pub fn state(&self, owner_pid: Option<u32>) -> State {
        State {
            owner_pid,
            services: self.services.iter().map(|s| s.record().clone()).collect(),
            urls: self.urls.clone(),
        }
    }

    /// Stops every server, in reverse start order, and removes `state.json`.
    ///
    /// Tries every server even when one fails, then reports all failures together.
    pub fn stop(mut self) -> anyhow::Result<()> {
        let mut failures = Vec::new();
        while let Some(mut service) = self.services.pop() {
            if let Err(err) = service.stop() {
                failures.push(format!("{}: {err:#}", service.record().name));
            }
        }
        if !failures.is_empty() {
            anyhow::bail!("could not stop every server:\n  {}", failures.join("\n  "));
        }
        State::remove(&self.root)
    }

    /// Stops every server, then removes their data: the root directory and any directory a
    /// server had to keep elsewhere (PostgreSQL's fallback under the system temporary
    /// directory). For throwaway servers (tests, benchmarks).
    pub fn stop_and_remove(self) -> anyhow::Result<()> {
        let root = self.root.clone();
        let outside = self.dirs_outside_root();
        self.stop()?;
        for dir in std::iter::once(&root).chain(&outside) {
            remove_dir(dir)?;
        }
        Ok(())
    }

    /// Leaves every server running and returns the state that records them, already written
    /// to `state.json` with no owner (so nothing treats them as leftovers of a dead run).
    pub fn detach(mut self) -> anyhow::Result<State> {
        let state = self.state(None);
        state.save(&self.root)?;
        for service in std::mem::take(&mut self.services) {
            service.detach();
        }
        Ok(state)
    }
}

/// Starts the selected servers under `root` and waits until each one answers.
///
/// `durability` only changes how PostgreSQL's data directory is first created
/// ([`Durability`]).
///
/// Writes `root/state.json` (owned by this process) after each server, so a run killed
/// outright (SIGKILL) still leaves a record of what to stop. On any error, the servers
/// already started are stopped before the error is returned.
///
/// Data: the standalone Valkey (`root/valkey`, AOF on) and PostgreSQL (`root/postgres`)
/// keep their data across restarts; the cluster (`root/valkey-cluster`) is recreated on
/// every start, because its `nodes.conf` files pin ports that change from run to run.
pub fn start(
    selection: &Selection,
    root: &Path,
    durability: Durability,
) -> anyhow::Result<Services> {
    anyhow::ensure!(!selection.is_empty(), "no server selected");
    std::fs::create_dir_all(root).with_context(|| format!("creating {}", root.display()))?;
    let root = root
        .canonicalize()
        .with_context(|| format!("resolving {}", root.display()))?;

    // Find every binary before starting anything, so a missing one fails fast and clean.
    let valkey_bin = if selection.valkey || selection.valkey_cluster {
        Some(valkey::ensure_binary(&crate::paths::services_dir())?)
    } else {
        None
    };
    let pg_bindir = if selection.postgres {
        Some(postgres::find_bindir()?)
    } else {
        None
    };

    let mut services = Services {
        root: root.clone(),
        services: Vec::new(),
        urls: Urls::default(),
    };
    let owner = Some(std::process::id());

    if let (true, Some(bin)) = (selection.valkey, &valkey_bin) {
        let service = valkey::start_standalone(bin, &root.join("valkey"))?;
        services.urls.valkey = Some(service.record().url.clone());
        services.services.push(service);
        services.state(owner).save(&root)?;
    }
    if let (true, Some(bin)) = (selection.valkey_cluster, &valkey_bin) {
        let dir = root.join("valkey-cluster");
        // Recorded one by one as they start, so an error half-way still stops them.
        let node_urls = cluster::start(bin, &dir, |service| {
            services.services.push(service);
            services.state(owner).save(&root)
        })?;
        services.urls.valkey_cluster = node_urls;
        services.state(owner).save(&root)?;
    }
    if let (true, Some(bindir)) = (selection.postgres, &pg_bindir) {
        let service = postgres::start(bindir, &root.join("postgres"), durability)?;
        services.urls.postgres = Some(service.record().url.clone());
        services.services.push(service);
        services.state(owner).save(&root)?;
    }
    Ok(services)
}

/// `N` distinct free loopback ports, found by binding port 0 (all listeners are held until
/// every port is found, so they are distinct; they are released just before use).
pub fn free_ports<const N: usize>() -> anyhow::Result<[u16; N]> {
    let mut listeners = Vec::with_capacity(N);
    let mut ports = [0u16; N];
    for port in &mut ports {
        let listener =
            TcpListener::bind("127.0.0.1:0").context("binding a free port on 127.0.0.1")?;
        *port = listener
            .local_addr()
            .context("reading a bound port")?
            .port();
        listeners.push(listener);
    }
    Ok(ports)
}

/// Runs `start` on `N` fresh free ports, and again on new ones (3 tries in all) when the
/// server reports that a port was taken in the short window between finding it and binding
/// it (another process's outgoing connection can land on it).
///
/// `start` must clean up after itself on error (a dropped [`Service`] does).
pub(crate) fn with_free_ports<const N: usize, T>(
    mut start: impl FnMut([u16; N]) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    const TRIES: usize = 3;
    let mut tries = 0;
    loop {
        let ports = free_ports::<N>()?;
        tries += 1;
        match start(ports) {
            Err(err) if tries < TRIES && format!("{err:#}").contains("Address already in use") => {
                eprintln!("xtask: port {ports:?} was taken before the server bound it; retrying");
            }
            other => return other,
        }
    }
}

/// Removes a directory and everything in it; one that does not exist is already removed.
pub fn remove_dir(dir: &Path) -> anyhow::Result<()> {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(err) => Err(err).with_context(|| format!("removing {}", dir.display())),
    }
}
