//! What the numbers were measured on: the machine, the servers, the code, and how busy the
//! machine was (the bench shares it with whatever else runs; the load average says how much).

use std::process::Command;

use serde::Serialize;

use super::target::{Servers, pg_connect, valkey_admin};

/// The machine and software a report was measured on.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Machine {
    /// CPU model name (`/proc/cpuinfo`).
    pub cpu: String,
    /// Logical CPUs available to the bench.
    pub cores: usize,
    /// Physical memory, GiB.
    pub memory_gib: f64,
    /// Kernel release.
    pub kernel: String,
    /// Valkey server version, when Valkey was measured.
    pub valkey: Option<String>,
    /// PostgreSQL server version, when Postgres was measured.
    pub postgres: Option<String>,
    /// 1/5/15-minute load averages when the measurements started.
    pub load_at_start: String,
    /// The same when they ended.
    pub load_at_end: String,
    /// `git` commit of the tree measured (`+dirty` with uncommitted changes).
    pub commit: Option<String>,
    /// `release` (optimized, as `cargo xtask bench` measures) or `debug`.
    pub build: &'static str,
}

impl Machine {
    /// Reads everything but the server versions and the end load.
    pub fn probe() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name").and_then(|r| r.split_once(':')))
            .map(|(_, v)| v.trim().to_owned())
            .unwrap_or_else(|| "unknown".into());
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let memory_kib = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0);
        Machine {
            cpu,
            cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
            memory_gib: memory_kib / (1024.0 * 1024.0),
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .map(|s| s.trim().to_owned())
                .unwrap_or_default(),
            valkey: None,
            postgres: None,
            load_at_start: load_average(),
            load_at_end: String::new(),
            commit: commit(),
            build: if cfg!(debug_assertions) {
                "debug"
            } else {
                "release"
            },
        }
    }

    /// Asks the servers for their versions (best effort: an unreachable server is `None`).
    pub async fn probe_servers(&mut self, servers: &Servers) {
        if let Some(url) = &servers.valkey_url
            && let Ok(mut con) = valkey_admin(url).await
            && let Ok(info) = redis::cmd("INFO")
                .arg("server")
                .query_async::<String>(&mut con)
                .await
        {
            // Valkey reports `redis_version:7.2.4` for compatibility, and its own version in
            // `valkey_version`.
            let field = |name: &str| {
                info.lines()
                    .find_map(|l| l.trim_end().strip_prefix(name).map(str::to_owned))
            };
            let version = field("valkey_version:").or_else(|| field("redis_version:"));
            self.valkey = version.map(|v| format!("Valkey {v}"));
        }
        if let Some(url) = &servers.postgres_url
            && let Ok(client) = pg_connect(url).await
            && let Ok(row) = client.query_one("SELECT version()", &[]).await
        {
            let version: String = row.get(0);
            // "PostgreSQL 15.14 (Debian …) on x86_64…": keep the first two words.
            self.postgres = Some(
                version
                    .split_whitespace()
                    .take(2)
                    .collect::<Vec<_>>()
                    .join(" "),
            );
        }
    }
}

/// `/proc/loadavg`'s three averages.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn commit() -> Option<String> {
    let root = crate::paths::workspace_root();
    let head = Command::new("git")
        .current_dir(&root)
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())?;
    let head = String::from_utf8_lossy(&head.stdout).trim().to_owned();
    let dirty = Command::new("git")
        .current_dir(&root)
        .args(["status", "--porcelain"])
        .output()
        .ok()
        .is_some_and(|o| !o.stdout.is_empty());
    Some(if dirty { format!("{head}+dirty") } else { head })
}
