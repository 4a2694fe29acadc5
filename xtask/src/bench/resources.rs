//! What a measurement cost besides time: CPU of the bench process and of the server, and
//! Postgres WAL volume — the figures that explain a throughput (a queue on a 2-core machine
//! is bounded by CPU per task; a durable Postgres queue by WAL and fsyncs per task).
//!
//! - Client CPU: `/proc/self/stat` (user + system time of every thread of this process).
//! - Valkey CPU: `INFO cpu` (`used_cpu_user` + `used_cpu_sys` of the server).
//! - PostgreSQL CPU: `/proc` of the postmaster — its own time, the time of the backends it
//!   already reaped (`cutime`/`cstime`) and of every live child — found from
//!   `pg_backend_pid()`'s parent, so only a server on this machine is measured.
//! - WAL bytes: `pg_current_wal_lsn()` before and after, exact.
//!
//! `/proc` times are in clock ticks, taken as the Linux `USER_HZ` of 100 per second.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;

use super::target::{pg_connect, valkey_admin};

/// Linux `USER_HZ`: the unit of the times in `/proc/PID/stat`.
const TICKS_PER_SECOND: f64 = 100.0;

/// Where the server's CPU time is read from.
enum Server {
    None,
    Valkey(redis::aio::MultiplexedConnection),
    Postgres {
        client: tokio_postgres::Client,
        postmaster: Option<u32>,
    },
}

/// Reads the resources a measurement used; see the module docs.
pub struct Meter {
    server: Server,
}

/// The counters at one moment.
#[derive(Clone, Copy, Debug, Default)]
pub struct Reading {
    client_cpu: Option<Duration>,
    server_cpu: Option<Duration>,
    wal_bytes: Option<f64>,
}

/// What `items` tasks cost between two readings.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Usage {
    /// CPU of the bench process per task, in µs.
    pub client_cpu_us: Option<f64>,
    /// CPU of the server per task, in µs.
    pub server_cpu_us: Option<f64>,
    /// WAL written per task, in bytes (Postgres).
    pub wal_bytes: Option<f64>,
}

impl Meter {
    /// Only the bench process (the in-memory backend has no server).
    pub fn client_only() -> Meter {
        Meter {
            server: Server::None,
        }
    }

    /// The bench process and the Valkey server at `url`.
    pub async fn valkey(url: &str) -> anyhow::Result<Meter> {
        Ok(Meter {
            server: Server::Valkey(valkey_admin(url).await?),
        })
    }

    /// The bench process and the PostgreSQL server at `url` (CPU only if it runs here).
    pub async fn postgres(url: &str) -> anyhow::Result<Meter> {
        let client = pg_connect(url).await?;
        let row = client
            .query_one("SELECT pg_backend_pid()", &[])
            .await
            .context("SELECT pg_backend_pid()")?;
        let backend_pid: i32 = row.get(0);
        let postmaster = u32::try_from(backend_pid)
            .ok()
            .and_then(|pid| proc_stat(pid).map(|stat| stat.ppid));
        Ok(Meter {
            server: Server::Postgres { client, postmaster },
        })
    }

    /// The counters now.
    pub async fn read(&mut self) -> anyhow::Result<Reading> {
        let client_cpu = proc_stat(std::process::id()).map(|s| ticks(s.utime + s.stime));
        let (server_cpu, wal_bytes) = match &mut self.server {
            Server::None => (None, None),
            Server::Valkey(con) => (Some(valkey_cpu(con).await?), None),
            Server::Postgres { client, postmaster } => {
                let row = client
                    .query_one("SELECT (pg_current_wal_lsn() - '0/0'::pg_lsn)::float8", &[])
                    .await
                    .context("reading the WAL position")?;
                let wal: f64 = row.get(0);
                (postmaster.map(postgres_cpu), Some(wal))
            }
        };
        Ok(Reading {
            client_cpu,
            server_cpu,
            wal_bytes,
        })
    }
}

impl Usage {
    /// Adds `other` figure by figure (a figure missing on either side stays as it is).
    pub fn accumulate(&mut self, other: Usage) {
        fn add(sum: &mut Option<f64>, value: Option<f64>) {
            if let Some(value) = value {
                *sum.get_or_insert(0.0) += value;
            }
        }
        add(&mut self.client_cpu_us, other.client_cpu_us);
        add(&mut self.server_cpu_us, other.server_cpu_us);
        add(&mut self.wal_bytes, other.wal_bytes);
    }

    /// Every figure divided by `items` (totals → per item).
    pub fn per(self, items: u64) -> Usage {
        let n = items.max(1) as f64;
        Usage {
            client_cpu_us: self.client_cpu_us.map(|v| v / n),
            server_cpu_us: self.server_cpu_us.map(|v| v / n),
            wal_bytes: self.wal_bytes.map(|v| v / n),
        }
    }
}

impl Reading {
    /// Server CPU used since `before`, when both readings have it.
    pub fn server_cpu_since(&self, before: &Reading) -> Option<Duration> {
        Some(self.server_cpu?.saturating_sub(before.server_cpu?))
    }
}

/// What each of `items` tasks cost between `before` and `after`.
pub fn usage(before: &Reading, after: &Reading, items: u64) -> Usage {
    let per_item = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) if items > 0 => Some((a - b).max(0.0) / items as f64),
        _ => None,
    };
    let us = |d: Option<Duration>| d.map(|d| d.as_secs_f64() * 1e6);
    Usage {
        client_cpu_us: per_item(us(after.client_cpu), us(before.client_cpu)),
        server_cpu_us: per_item(us(after.server_cpu), us(before.server_cpu)),
        wal_bytes: per_item(after.wal_bytes, before.wal_bytes),
    }
}

fn ticks(n: u64) -> Duration {
    Duration::from_secs_f64(n as f64 / TICKS_PER_SECOND)
}

/// The fields of `/proc/PID/stat` used here.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct ProcStat {
    ppid: u32,
    utime: u64,
    stime: u64,
    cutime: u64,
    cstime: u64,
}

fn proc_stat(pid: u32) -> Option<ProcStat> {
    let text =
        std::fs::read_to_string(Path::new("/proc").join(pid.to_string()).join("stat")).ok()?;
    parse_proc_stat(&text)
}

/// Parses `pid (comm) state ppid …`: comm may hold spaces and parentheses, so the fields
/// are counted from the last `)`. After it: state (field 3), ppid (4), …, utime (14),
/// stime (15), cutime (16), cstime (17).
fn parse_proc_stat(text: &str) -> Option<ProcStat> {
    let (_, rest) = text.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<u64>().ok());
    Some(ProcStat {
        ppid: u32::try_from(field(4)?).ok()?,
        utime: field(14)?,
        stime: field(15)?,
        cutime: field(16)?,
        cstime: field(17)?,
    })
}

/// The postmaster's own time, plus its reaped children's, plus every live child's.
fn postgres_cpu(postmaster: u32) -> Duration {
    let Some(own) = proc_stat(postmaster) else {
        return Duration::ZERO;
    };
    let mut total = own.utime + own.stime + own.cutime + own.cstime;
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            if let Some(stat) = proc_stat(pid)
                && stat.ppid == postmaster
            {
                total += stat.utime + stat.stime;
            }
        }
    }
    ticks(total)
}

async fn valkey_cpu(con: &mut redis::aio::MultiplexedConnection) -> anyhow::Result<Duration> {
    let info: String = redis::cmd("INFO")
        .arg("cpu")
        .query_async(con)
        .await
        .context("INFO cpu")?;
    let user = info_field(&info, "used_cpu_user").unwrap_or(0.0);
    let sys = info_field(&info, "used_cpu_sys").unwrap_or(0.0);
    Ok(Duration::from_secs_f64(user + sys))
}

/// Resets the Valkey server's command statistics (`CONFIG RESETSTAT`), so that
/// [`command_stats`] afterwards covers one measurement.
pub async fn reset_command_stats(
    con: &mut redis::aio::MultiplexedConnection,
) -> anyhow::Result<()> {
    let () = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query_async(con)
        .await
        .context("CONFIG RESETSTAT")?;
    Ok(())
}

/// The server time spent per command since the last reset (`INFO commandstats`), as one
/// line: the commands with the most time first, each with its calls and µs per call.
/// `items` turns the total into µs per executed item. Commands run inside functions are
/// counted on their own lines as well as in `fcall`.
pub async fn command_stats(
    con: &mut redis::aio::MultiplexedConnection,
    items: u64,
) -> anyhow::Result<String> {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(con)
        .await
        .context("INFO commandstats")?;
    let mut stats: Vec<(String, f64, f64)> = info
        .lines()
        .filter_map(|line| {
            let (name, fields) = line.trim_end().strip_prefix("cmdstat_")?.split_once(':')?;
            let field = |key: &str| {
                fields
                    .split(',')
                    .find_map(|f| f.strip_prefix(key)?.strip_prefix('='))
                    .and_then(|v| v.parse::<f64>().ok())
            };
            Some((name.to_owned(), field("calls")?, field("usec")?))
        })
        // The bench's own INFO and CONFIG RESETSTAT are not part of the measurement.
        .filter(|(name, ..)| !(name.starts_with("info") || name.starts_with("config")))
        .collect();
    stats.sort_by(|a, b| b.2.total_cmp(&a.2));
    let n = items.max(1) as f64;
    Ok(stats
        .iter()
        .take(8)
        .map(|(name, calls, usec)| {
            format!(
                "{name} {:.2}/item × {:.1} µs = {:.1} µs/item",
                calls / n,
                usec / calls.max(1.0),
                usec / n
            )
        })
        .collect::<Vec<_>>()
        .join("; "))
}

/// How many times the Valkey server has forked (`total_forks`: AOF rewrites, snapshots).
/// A fork copies the page tables of the whole dataset and makes the next writes
/// copy-on-write, so a measurement that spans one pays for it.
pub async fn valkey_forks(con: &mut redis::aio::MultiplexedConnection) -> anyhow::Result<f64> {
    let info: String = redis::cmd("INFO")
        .arg("stats")
        .query_async(con)
        .await
        .context("INFO stats")?;
    Ok(info_field(&info, "total_forks").unwrap_or(0.0))
}

/// Waits until the Valkey server runs no AOF rewrite or snapshot (a forked child writing the
/// whole dataset, which competes for the CPU), or fails after `limit`.
pub async fn valkey_quiesce(
    con: &mut redis::aio::MultiplexedConnection,
    limit: Duration,
) -> anyhow::Result<()> {
    let started = Instant::now();
    loop {
        let info: String = redis::cmd("INFO")
            .arg("persistence")
            .query_async(con)
            .await
            .context("INFO persistence")?;
        let busy = [
            "aof_rewrite_in_progress",
            "aof_rewrite_scheduled",
            "rdb_bgsave_in_progress",
        ]
        .iter()
        .any(|field| info_field(&info, field).unwrap_or(0.0) > 0.0);
        if !busy {
            return Ok(());
        }
        anyhow::ensure!(
            started.elapsed() < limit,
            "Valkey still rewrites its AOF after {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A numeric field of an `INFO` reply (`name:value` lines).
pub fn info_field(info: &str, name: &str) -> Option<f64> {
    info.lines().find_map(|line| {
        let (key, value) = line.trim_end().split_once(':')?;
        (key == name).then(|| value.parse().ok()).flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_stat_fields_after_the_command_name() {
        let line = "4242 (postgres: a (b) c) S 17 4242 4242 0 -1 4194560 100 0 0 0 \
                    250 120 30 40 20 0 1 0 100 1000 10";
        let stat = parse_proc_stat(line).expect("invariant: a well-formed stat line");
        assert_eq!(
            stat,
            ProcStat {
                ppid: 17,
                utime: 250,
                stime: 120,
                cutime: 30,
                cstime: 40,
            }
        );
        assert_eq!(parse_proc_stat("garbage"), None);
    }

    #[test]
    fn info_fields() {
        let info = "# CPU\r\nused_cpu_sys:1.50\r\nused_cpu_user:2.25\r\n";
        assert_eq!(info_field(info, "used_cpu_user"), Some(2.25));
        assert_eq!(info_field(info, "used_cpu_sys"), Some(1.5));
        assert_eq!(info_field(info, "missing"), None);
    }

    #[test]
    fn usage_per_item() {
        let before = Reading {
            client_cpu: Some(Duration::from_millis(10)),
            server_cpu: None,
            wal_bytes: Some(1000.0),
        };
        let after = Reading {
            client_cpu: Some(Duration::from_millis(30)),
            server_cpu: None,
            wal_bytes: Some(5000.0),
        };
        let u = usage(&before, &after, 4);
        assert_eq!(u.client_cpu_us, Some(5000.0));
        assert_eq!(u.server_cpu_us, None);
        assert_eq!(u.wal_bytes, Some(1000.0));
    }
}
