//! Connections: one multiplexed connection for every command (a `ConnectionManager` on a
//! standalone server, the cluster client's async connection on a cluster), error mapping, and
//! the function library's load / version check / reload.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use ff_core::EngineError;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{MultipleNodeRoutingInfo, ResponsePolicy, RoutingInfo};
use redis::{Cmd, ErrorKind, RedisError, ServerErrorKind, Value};

use crate::config::ValkeyConfig;
use crate::library;

/// The multiplexed command connection. Cloning is cheap (both variants share one socket per
/// node and reconnect on their own).
#[derive(Clone)]
pub(crate) enum Conn {
    Standalone(ConnectionManager),
    Cluster(ClusterConnection),
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Conn::Standalone(_) => f.write_str("Conn::Standalone"),
            Conn::Cluster(_) => f.write_str("Conn::Cluster"),
        }
    }
}

/// Whether a call may be repeated after a transport error without changing its effect.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Idempotent {
    Yes,
    No,
}

/// Commands and round trips sent, for the measurements of the hot path.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) fcalls: AtomicU64,
    pub(crate) round_trips: AtomicU64,
}

/// The shared connection plus what it needs to recover from a missing library.
#[derive(Debug)]
pub(crate) struct Connection {
    conn: Conn,
    pub(crate) counters: Counters,
    reload_lock: tokio::sync::Mutex<()>,
}

impl Connection {
    /// Connects to a standalone server or a cluster.
    pub(crate) async fn open(config: &ValkeyConfig) -> Result<Arc<Connection>, EngineError> {
        let urls = config.validated_urls()?;
        let conn = if config.cluster {
            let client = ClusterClient::builder(urls)
                .connection_timeout(config.connection_timeout)
                .response_timeout(config.response_timeout)
                .retries(6)
                .build()
                .map_err(|e| EngineError::Config(format!("invalid cluster configuration: {e}")))?;
            let conn = client
                .get_async_connection()
                .await
                .map_err(|e| map_error("connecting to the cluster", e, Idempotent::Yes))?;
            Conn::Cluster(conn)
        } else {
            let client = redis::Client::open(urls[0].as_str())
                .map_err(|e| EngineError::Config(format!("invalid Valkey URL: {e}")))?;
            let manager_config = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(config.connection_timeout))
                .set_response_timeout(Some(config.response_timeout))
                .set_number_of_retries(6)
                .set_max_delay(Duration::from_secs(2));
            let conn = client
                .get_connection_manager_with_config(manager_config)
                .await
                .map_err(|e| map_error("connecting to Valkey", e, Idempotent::Yes))?;
            Conn::Standalone(conn)
        };
        Ok(Arc::new(Connection {
            conn,
            counters: Counters::default(),
            reload_lock: tokio::sync::Mutex::new(()),
        }))
    }

    /// Whether this is a cluster connection.
    pub(crate) fn is_cluster(&self) -> bool {
        matches!(self.conn, Conn::Cluster(_))
    }

    /// Sends one command (routed by its first key on a cluster).
    pub(crate) async fn raw(&self, cmd: &Cmd) -> Result<Value, RedisError> {
        self.counters.round_trips.fetch_add(1, Ordering::Relaxed);
        match &self.conn {
            Conn::Standalone(c) => c.clone().send_packed_command(cmd).await,
            Conn::Cluster(c) => {
                let mut c = c.clone();
                redis::aio::ConnectionLike::req_packed_command(&mut c, cmd).await
            }
        }
    }

    /// Sends one command to every master and returns each node's answer (errors included).
    pub(crate) async fn on_every_master(&self, cmd: Cmd) -> Result<Vec<Value>, RedisError> {
        match &self.conn {
            Conn::Standalone(c) => {
                self.counters.round_trips.fetch_add(1, Ordering::Relaxed);
                let answer = match c.clone().send_packed_command(&cmd).await {
                    Ok(v) => v,
                    Err(e) => match e.try_into() {
                        Ok(server_error) => Value::ServerError(server_error),
                        Err(e) => return Err(e),
                    },
                };
                Ok(vec![answer])
            }
            Conn::Cluster(c) => {
                self.counters.round_trips.fetch_add(1, Ordering::Relaxed);
                let routing = RoutingInfo::MultiNode((MultipleNodeRoutingInfo::AllMasters, None));
                match c.clone().route_command(cmd, routing).await? {
                    Value::Map(pairs) => Ok(pairs.into_iter().map(|(_, v)| v).collect()),
                    other => Ok(vec![other]),
                }
            }
        }
    }

    /// Loads the library on every master, replacing an older version.
    pub(crate) async fn load_library(&self) -> Result<(), EngineError> {
        let mut cmd = redis::cmd("FUNCTION");
        cmd.arg("LOAD").arg("REPLACE").arg(library::source());
        match &self.conn {
            Conn::Standalone(_) => {
                self.raw(&cmd)
                    .await
                    .map_err(|e| map_error("loading the function library", e, Idempotent::Yes))?;
            }
            Conn::Cluster(c) => {
                self.counters.round_trips.fetch_add(1, Ordering::Relaxed);
                let routing = RoutingInfo::MultiNode((
                    MultipleNodeRoutingInfo::AllMasters,
                    Some(ResponsePolicy::AllSucceeded),
                ));
                c.clone()
                    .route_command(cmd, routing)
                    .await
                    .map_err(|e| map_error("loading the function library", e, Idempotent::Yes))?;
            }
        }
        Ok(())
    }

    /// Makes sure every master runs this code's library: loads it where it is missing or
    /// older, refuses to start where it is newer.
    pub(crate) async fn ensure_library(&self) -> Result<(), EngineError> {
        let mut cmd = redis::cmd("FCALL");
        cmd.arg("ff_version").arg(0);
        let answers = self
            .on_every_master(cmd)
            .await
            .map_err(|e| map_error("checking the function library", e, Idempotent::Yes))?;
        let mut load = false;
        for answer in answers {
            match answer {
                Value::BulkString(bytes) => {
                    let stored = String::from_utf8_lossy(&bytes).into_owned();
                    match library::compare(&stored) {
                        library::Stored::Same => {}
                        library::Stored::Older => load = true,
                        library::Stored::Newer => {
                            return Err(EngineError::Config(format!(
                                "the server runs FlowFabric function library {stored}, newer than \
                                 this code's {}; upgrade the code or flush the library",
                                library::version()
                            )));
                        }
                    }
                }
                Value::SimpleString(s) => match library::compare(&s) {
                    library::Stored::Newer => {
                        return Err(EngineError::Config(format!(
                            "the server runs FlowFabric function library {s}, newer than this \
                             code's {}",
                            library::version()
                        )));
                    }
                    library::Stored::Same => {}
                    library::Stored::Older => load = true,
                },
                Value::ServerError(err) => {
                    if is_missing_function(err.details().unwrap_or_default()) {
                        load = true;
                    } else {
                        return Err(EngineError::Transport {
                            message: format!("checking the function library: {err:?}"),
                            retryable: true,
                            source: None,
                        });
                    }
                }
                other => {
                    return Err(EngineError::Corrupt(format!(
                        "unexpected answer to ff_version: {other:?}"
                    )));
                }
            }
        }
        if load {
            self.load_library().await?;
        }
        Ok(())
    }

    /// Calls library function `name` with `keys` and `args`: one round trip. Reloads the
    /// library once when a node answers that the function is missing (after a failover or a
    /// FUNCTION FLUSH), and repeats idempotent calls after transient errors.
    pub(crate) async fn fcall(
        &self,
        name: &str,
        keys: &[&str],
        args: &[Vec<u8>],
        idempotent: Idempotent,
    ) -> Result<Value, EngineError> {
        let mut cmd = redis::cmd("FCALL");
        cmd.arg(name).arg(keys.len());
        for key in keys {
            cmd.arg(*key);
        }
        for arg in args {
            cmd.arg(arg.as_slice());
        }
        let mut reloaded = false;
        let mut attempt = 0u32;
        loop {
            self.counters.fcalls.fetch_add(1, Ordering::Relaxed);
            let reply = match self.raw(&cmd).await {
                Ok(Value::ServerError(err)) => Err(RedisError::from(err)),
                other => other,
            };
            match reply {
                Ok(value) => return Ok(value),
                Err(err) if !reloaded && is_missing_function(&err.to_string()) => {
                    reloaded = true;
                    let _guard = self.reload_lock.lock().await;
                    tracing::warn!(function = name, "function library missing; reloading it");
                    self.load_library().await?;
                }
                Err(err) => {
                    let mapped = map_error(name, err, idempotent);
                    if idempotent == Idempotent::Yes && mapped.is_retryable() && attempt < 3 {
                        attempt += 1;
                        tokio::time::sleep(Duration::from_millis(
                            20 * u64::from(attempt * attempt),
                        ))
                        .await;
                        continue;
                    }
                    return Err(mapped);
                }
            }
        }
    }
}

fn is_missing_function(message: &str) -> bool {
    message.contains("Function not found") || message.contains("function not found")
}

/// Maps a client error to an [`EngineError`]. Transport errors are retryable when the call
/// is idempotent or the error proves the command never ran (refused connection, cluster
/// redirections and outages, a server still loading).
pub(crate) fn map_error(what: &str, err: RedisError, idempotent: Idempotent) -> EngineError {
    let never_ran = err.is_connection_refusal()
        || matches!(
            err.kind(),
            ErrorKind::Server(
                ServerErrorKind::TryAgain
                    | ServerErrorKind::ClusterDown
                    | ServerErrorKind::MasterDown
                    | ServerErrorKind::BusyLoading
                    | ServerErrorKind::ReadOnly
                    | ServerErrorKind::Moved
                    | ServerErrorKind::Ask
            ) | ErrorKind::ClusterConnectionNotFound
        );
    let transient = never_ran
        || err.is_io_error()
        || err.is_timeout()
        || err.is_connection_dropped()
        || err.is_cluster_error();
    if transient {
        return EngineError::transport(
            format!("{what}: {err}"),
            never_ran || idempotent == Idempotent::Yes,
            err,
        );
    }
    match err.kind() {
        ErrorKind::Parse | ErrorKind::UnexpectedReturnType => {
            EngineError::Corrupt(format!("{what}: {err}"))
        }
        ErrorKind::AuthenticationFailed | ErrorKind::InvalidClientConfig => {
            EngineError::Config(format!("{what}: {err}"))
        }
        _ => EngineError::transport(format!("{what}: {err}"), false, err),
    }
}
