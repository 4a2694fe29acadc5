//! Idle engine: what an `ff_engine` engine with its default configuration costs the backend
//! when there is no work at all.
//!
//! The engine is started on an empty deployment through the counting decorator, left to
//! settle, then its backend calls are counted over `duration`. The figures are calls per
//! second in all and the server CPU it costs (percent of one core); the notes list the calls
//! by method.

use std::time::{Duration, Instant};

use anyhow::Context;
use ff_engine::Engine;

use super::{Figures, meter_for};
use crate::bench::counting::difference;
use crate::bench::target::{Servers, Target};

/// Measures an idle engine for `duration` after `warmup`.
pub async fn run(
    target: &Target,
    servers: &Servers,
    warmup: Duration,
    duration: Duration,
) -> anyhow::Result<Figures> {
    let mut meter = meter_for(target.kind, servers).await?;
    let engine = Engine::builder(target.backend())
        .start()
        .await
        .context("starting the engine")?;
    tokio::time::sleep(warmup).await;
    let calls_before = target.counting.snapshot();
    let before = meter.read().await?;
    let started = Instant::now();
    tokio::time::sleep(duration).await;
    let calls = difference(&target.counting.snapshot(), &calls_before);
    let elapsed = started.elapsed().as_secs_f64();
    let after = meter.read().await?;
    let partitions = engine.owned_partitions().len();
    engine.shutdown().await.context("stopping the engine")?;

    let mut figures = Figures::default();
    let total: u64 = calls.values().sum();
    figures.put("idle.calls_per_s", total as f64 / elapsed);
    figures.put_opt(
        "idle.server_cpu_pct",
        after
            .server_cpu_since(&before)
            .map(|cpu| cpu.as_secs_f64() / elapsed * 100.0),
    );
    let mut by_method: Vec<_> = calls.into_iter().collect();
    by_method.sort_by_key(|(_, count)| std::cmp::Reverse(*count));
    figures.notes.push(format!(
        "idle engine owning {partitions} partitions, calls/s by method: {}",
        by_method
            .iter()
            .map(|(m, c)| format!("{m} {:.0}", *c as f64 / elapsed))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    Ok(figures)
}
