//! Flat: `n` standalone executions with 4 KiB payloads are submitted (16 producers, one call
//! each), then 16 workers claim and complete them until none is left.
//!
//! Figures: submissions/s; executions/s of the drain (the DESIGN §9 "flat throughput", set
//! against the bare queue of the same server); claim → complete latency per execution
//! (p50/p99: from the return of the call that leased it to the return of its `complete`,
//! which includes the time it waited in the worker's hands); backend calls per execution
//! (and, on Valkey, server round trips per execution); CPU per execution of the bench process
//! and of the server; WAL bytes per execution on Postgres.

use std::sync::Arc;

use ff_backend_valkey::CallCounts;

use super::drain::{DrainSpec, drain};
use super::{
    Figures, PAYLOAD_BYTES, Shape, lane, meter_for, payload, rate, settle, submit_executions,
};
use crate::bench::counting::difference;
use crate::bench::resources::{command_stats, reset_command_stats, usage, valkey_forks};
use crate::bench::stats::Latency;
use crate::bench::target::{Servers, Store, Target};

/// Runs the flat workload with `n` executions.
pub async fn run(
    target: &Target,
    servers: &Servers,
    shape: Shape,
    n: u64,
) -> anyhow::Result<Figures> {
    let backend = target.backend();
    let lane = lane("flat");
    let payload = Arc::new(payload(PAYLOAD_BYTES));
    let mut meter = meter_for(target.kind, servers).await?;
    let mut figures = Figures::default();

    settle(target).await?;
    let before = meter.read().await?;
    let submitted = submit_executions(&backend, &lane, &payload, n, shape.producers).await?;
    let after = meter.read().await?;
    figures.put("flat.submit_per_s", rate(n, submitted));
    let submit_usage = usage(&before, &after, n);
    figures.put_opt("flat.submit_server_cpu_us", submit_usage.server_cpu_us);

    settle(target).await?;
    let mut valkey_admin = match &target.store {
        Store::Valkey { admin, .. } => Some(admin.clone()),
        _ => None,
    };
    let mut forks_before = 0.0;
    if let Some(admin) = valkey_admin.as_mut() {
        reset_command_stats(admin).await?;
        forks_before = valkey_forks(admin).await?;
    }
    let calls_before = target.counting.snapshot();
    let trips_before = valkey_calls(target);
    let before = meter.read().await?;
    let drained = drain(
        &backend,
        &DrainSpec {
            workers: shape.workers,
            claim_batch: shape.claim_batch,
            claim_next: shape.claim_next,
            lane,
            expected: n,
        },
    )
    .await?;
    let after = meter.read().await?;
    let calls = difference(&target.counting.snapshot(), &calls_before);
    let trips_after = valkey_calls(target);
    if let Some(admin) = valkey_admin.as_mut() {
        figures.notes.push(format!(
            "Valkey server time per execution (drain): {}; forks (AOF rewrites) during the \
             drain: {}",
            command_stats(admin, n).await?,
            valkey_forks(admin).await? - forks_before
        ));
    }

    figures.put("flat.exec_per_s", rate(n, drained.elapsed));
    let mut latencies: Vec<_> = drained
        .done
        .iter()
        .map(|d| d.completed_at.saturating_duration_since(d.claimed_at))
        .collect();
    if let Some(latency) = Latency::of(&mut latencies) {
        figures.put("flat.latency_p50_ms", latency.p50_ms);
        figures.put("flat.latency_p99_ms", latency.p99_ms);
    }
    figures.put(
        "flat.calls_per_exec",
        calls.values().sum::<u64>() as f64 / n.max(1) as f64,
    );
    if let (Some(b), Some(a)) = (trips_before, trips_after) {
        figures.put(
            "flat.round_trips_per_exec",
            a.round_trips.saturating_sub(b.round_trips) as f64 / n.max(1) as f64,
        );
    }
    let drain_usage = usage(&before, &after, n);
    figures.put_opt("flat.client_cpu_us", drain_usage.client_cpu_us);
    figures.put_opt("flat.server_cpu_us", drain_usage.server_cpu_us);
    figures.put_opt("flat.wal_bytes", drain_usage.wal_bytes);
    figures.notes.push(format!(
        "drain calls: {}; empty claims: {}",
        calls
            .iter()
            .map(|(m, c)| format!("{m} {c}"))
            .collect::<Vec<_>>()
            .join(", "),
        drained.empty_claims
    ));
    Ok(figures)
}

/// The Valkey backend's own counters (server round trips), when it is one.
pub fn valkey_calls(target: &Target) -> Option<CallCounts> {
    match &target.store {
        Store::Valkey { backend, .. } => Some(backend.call_counts()),
        _ => None,
    }
}
