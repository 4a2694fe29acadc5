//! Chain: flows of a 10-node chain (`n0 → n1 → … → n9`, 4 KiB payload per node), `flows` of
//! them created first and all in flight at once, drained by 16 workers; repeated for
//! `rounds` rounds so a fast backend is measured for long enough (only the drains are timed).
//!
//! Figures: flows/s and node executions/s of the drains; the per-hop latency from the return
//! of the upstream's `complete` to the return of the call that leased the downstream (p50/p99;
//! zero when the worker's own `complete` leased it through `claim_next`); backend calls per
//! node; CPU and WAL per node. DAG efficiency (node executions/s ÷ the flat executions/s of
//! the same run) is computed by the orchestration, which has both.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use ff_core::{EdgeSpec, ExecutionSpec, FlowId, FlowSpec, NodeKey, NodeSpec};

use super::drain::{DrainSpec, drain};
use super::flat::valkey_calls;
use super::{Figures, PAYLOAD_BYTES, Shape, lane, meter_for, payload, rate, settle, submit_flows};
use crate::bench::counting::difference;
use crate::bench::resources::{Usage, usage};
use crate::bench::stats::Latency;
use crate::bench::target::{Servers, Target};

/// Nodes per chain.
pub const LENGTH: usize = 10;

/// The key of node `i`.
fn node(i: usize) -> NodeKey {
    NodeKey::new(format!("n{i}")).expect("invariant: n<digits> is a valid node key")
}

/// Runs the chain workload: `rounds` rounds of `flows` flows.
pub async fn run(
    target: &Target,
    servers: &Servers,
    shape: Shape,
    flows: u64,
    rounds: u64,
) -> anyhow::Result<Figures> {
    let backend = target.backend();
    let lane = lane("chain");
    let payload = payload(PAYLOAD_BYTES);
    let spec = || {
        let mut spec = FlowSpec::new();
        for i in 0..LENGTH {
            spec = spec.node(NodeSpec::new(
                node(i),
                ExecutionSpec::new(lane.clone(), payload.clone()),
            ));
        }
        for i in 1..LENGTH {
            spec = spec.edge(EdgeSpec::new(node(i - 1), node(i)));
        }
        spec
    };
    let mut meter = meter_for(target.kind, servers).await?;
    let nodes_per_round = flows * LENGTH as u64;
    let nodes = nodes_per_round * rounds;

    let mut creating = Duration::ZERO;
    let mut draining = Duration::ZERO;
    let mut hops = Vec::with_capacity(usize::try_from(nodes).unwrap_or(0));
    let mut empty_claims = 0;
    let mut calls = 0u64;
    let mut round_trips: Option<u64> = None;
    let mut cost = Usage::default();
    for _ in 0..rounds {
        let specs: Vec<FlowSpec> = (0..flows).map(|_| spec()).collect();
        creating += submit_flows(&backend, specs, shape.producers).await?;
        settle(target).await?;
        let calls_before = target.counting.snapshot();
        let trips_before = valkey_calls(target);
        let before = meter.read().await?;
        let drained = drain(
            &backend,
            &DrainSpec {
                workers: shape.workers,
                claim_batch: shape.claim_batch,
                claim_next: shape.flow_claim_next,
                lane: lane.clone(),
                expected: nodes_per_round,
            },
        )
        .await?;
        let after = meter.read().await?;
        calls += difference(&target.counting.snapshot(), &calls_before)
            .values()
            .sum::<u64>();
        if let (Some(b), Some(a)) = (trips_before, valkey_calls(target)) {
            *round_trips.get_or_insert(0) += a.round_trips.saturating_sub(b.round_trips);
        }
        cost.accumulate(usage(&before, &after, 1));
        draining += drained.elapsed;
        empty_claims += drained.empty_claims;
        hops.extend(hop_latencies(&drained.done));
    }

    let mut figures = Figures::default();
    figures.put("chain.create_flows_per_s", rate(flows * rounds, creating));
    figures.put("chain.flows_per_s", rate(flows * rounds, draining));
    figures.put("chain.node_exec_per_s", rate(nodes, draining));
    let same_call = hops.iter().filter(|h| h.is_zero()).count();
    let hop_count = hops.len();
    if let Some(latency) = Latency::of(&mut hops) {
        figures.put("chain.hop_p50_ms", latency.p50_ms);
        figures.put("chain.hop_p99_ms", latency.p99_ms);
    }
    let per_node = |total: f64| total / nodes.max(1) as f64;
    figures.put("chain.calls_per_node", per_node(calls as f64));
    if let Some(trips) = round_trips {
        figures.put("chain.round_trips_per_node", per_node(trips as f64));
    }
    let cost = cost.per(nodes);
    figures.put_opt("chain.server_cpu_us", cost.server_cpu_us);
    figures.put_opt("chain.client_cpu_us", cost.client_cpu_us);
    figures.put_opt("chain.wal_bytes", cost.wal_bytes);
    figures.notes.push(format!(
        "{same_call} of {hop_count} hops leased by the upstream's own complete (claim_next); \
         empty claims: {empty_claims}"
    ));
    Ok(figures)
}

/// For every node but the first of each chain: from its upstream's completion to its lease.
fn hop_latencies(done: &[super::drain::Done]) -> Vec<Duration> {
    // (flow, node index) → (claimed, completed).
    let mut at: HashMap<(FlowId, usize), (Instant, Instant)> = HashMap::new();
    for d in done {
        let index = d
            .node
            .as_ref()
            .and_then(|k| k.as_str().strip_prefix('n'))
            .and_then(|i| i.parse::<usize>().ok());
        if let (Some(flow), Some(index)) = (d.flow, index) {
            at.insert((flow, index), (d.claimed_at, d.completed_at));
        }
    }
    at.iter()
        .filter_map(|(&(flow, index), &(claimed, _))| {
            let &(_, upstream_done) = at.get(&(flow, index.checked_sub(1)?))?;
            Some(claimed.saturating_duration_since(upstream_done))
        })
        .collect()
}
