//! Fan-out / fan-in: `flows` flows of `root → 100 leaves → join` (4 KiB payload per node), all
//! created first, drained by 16 workers with an `ff_engine` engine running alongside.
//!
//! The engine is needed: a root has 100 outgoing edges, more than any backend cascades inline
//! (`Capabilities::inline_cascade_limit`), so its completion stays pending until the engine's
//! dispatch loop applies it — exactly as in a deployment. The engine runs with its default
//! configuration: without backend hints (none of the backends sends them by default) its
//! dispatch loop is woken by the pending-completion poll, every 200 ms. The leaves' edges
//! into the join are single edges, cascaded inline by the leaves' own `complete`.
//!
//! Figures: flows/s and node executions/s; join latency per flow, from the return of the last
//! leaf's `complete` to the return of the call that leased the join (p50/p99); fan-out latency
//! per flow, from the return of the root's `complete` to the first leaf being leased
//! (p50/p99: the dispatch path).

use std::collections::HashMap;
use std::time::Instant;

use anyhow::Context;
use ff_core::{EdgeSpec, ExecutionSpec, FlowId, FlowSpec, NodeKey, NodeSpec};
use ff_engine::Engine;

use super::drain::{DrainSpec, drain};
use super::{Figures, PAYLOAD_BYTES, Shape, lane, payload, rate, settle, submit_flows};
use crate::bench::stats::Latency;
use crate::bench::target::Target;

/// Leaves per flow.
pub const WIDTH: usize = 100;

fn key(name: &str) -> NodeKey {
    NodeKey::new(name).expect("invariant: bench node keys are short words")
}

/// Per flow: when the root completed, the first leaf was leased, the last leaf completed,
/// the join was leased.
#[derive(Default)]
struct FlowTimes {
    root_done: Option<Instant>,
    first_leaf_claimed: Option<Instant>,
    last_leaf_done: Option<Instant>,
    join_claimed: Option<Instant>,
}

/// Runs the fan-out / fan-in workload with `flows` flows.
pub async fn run(target: &Target, shape: Shape, flows: u64) -> anyhow::Result<Figures> {
    let backend = target.backend();
    let lane = lane("fanout");
    let payload = payload(PAYLOAD_BYTES);
    let spec_of =
        |name: &str| NodeSpec::new(key(name), ExecutionSpec::new(lane.clone(), payload.clone()));
    let specs: Vec<FlowSpec> = (0..flows)
        .map(|_| {
            let mut spec = FlowSpec::new().node(spec_of("root")).node(spec_of("join"));
            for i in 0..WIDTH {
                let leaf = format!("leaf-{i}");
                spec = spec
                    .node(spec_of(&leaf))
                    .edge(EdgeSpec::new(key("root"), key(&leaf)))
                    .edge(EdgeSpec::new(key(&leaf), key("join")));
            }
            spec
        })
        .collect();
    let mut figures = Figures::default();
    submit_flows(&backend, specs, shape.producers).await?;

    settle(target).await?;
    let engine = Engine::builder(backend.clone())
        .start()
        .await
        .context("starting the engine")?;
    let nodes = flows * (WIDTH as u64 + 2);
    let drained = drain(
        &backend,
        &DrainSpec {
            workers: shape.workers,
            claim_batch: shape.claim_batch,
            claim_next: shape.flow_claim_next,
            lane,
            expected: nodes,
        },
    )
    .await;
    let stats = engine.stats();
    let shutdown = engine.shutdown().await;
    let drained = drained?;
    shutdown.context("stopping the engine")?;

    figures.put("fanout.flows_per_s", rate(flows, drained.elapsed));
    figures.put("fanout.node_exec_per_s", rate(nodes, drained.elapsed));
    let mut times: HashMap<FlowId, FlowTimes> = HashMap::new();
    for done in &drained.done {
        let (Some(flow), Some(node)) = (done.flow, done.node.as_ref()) else {
            continue;
        };
        let t = times.entry(flow).or_default();
        match node.as_str() {
            "root" => t.root_done = Some(done.completed_at),
            "join" => t.join_claimed = Some(done.claimed_at),
            _ => {
                t.first_leaf_claimed = Some(
                    t.first_leaf_claimed
                        .map_or(done.claimed_at, |c| c.min(done.claimed_at)),
                );
                t.last_leaf_done = Some(
                    t.last_leaf_done
                        .map_or(done.completed_at, |c| c.max(done.completed_at)),
                );
            }
        }
    }
    let mut joins = Vec::new();
    let mut spreads = Vec::new();
    for t in times.values() {
        if let (Some(last), Some(join)) = (t.last_leaf_done, t.join_claimed) {
            joins.push(join.saturating_duration_since(last));
        }
        if let (Some(root), Some(first)) = (t.root_done, t.first_leaf_claimed) {
            spreads.push(first.saturating_duration_since(root));
        }
    }
    if let Some(latency) = Latency::of(&mut joins) {
        figures.put("fanout.join_p50_ms", latency.p50_ms);
        figures.put("fanout.join_p99_ms", latency.p99_ms);
    }
    if let Some(latency) = Latency::of(&mut spreads) {
        figures.put("fanout.spread_p50_ms", latency.p50_ms);
        figures.put("fanout.spread_p99_ms", latency.p99_ms);
    }
    figures.notes.push(format!(
        "engine: {} completions dispatched, {} edges applied, {} dispatch errors; empty claims: {}",
        stats.completions_dispatched,
        stats.edges_applied,
        stats.dispatch_errors,
        drained.empty_claims
    ));
    Ok(figures)
}
