//! The workloads, written once against `Arc<dyn EngineBackend>` and run on every backend.
//!
//! - [`flat`]: standalone executions submitted, then drained by the worker pool;
//! - [`chain`]: flows of a 10-node chain, all in flight at once;
//! - [`fanout`]: flows of 1 → 100 → 1, with an `ff_engine` engine alongside;
//! - [`probe`]: one completion at a time on an idle system (pure cascade latency);
//! - [`footprint`]: storage per finished execution (server backends);
//! - [`idle`]: backend calls per second of an idle engine.
//!
//! Each returns [`Figures`]: named numbers (see `report::SECTIONS` for their meaning).

pub mod chain;
pub mod drain;
pub mod fanout;
pub mod flat;
pub mod footprint;
pub mod idle;
pub mod probe;

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use ff_core::{EngineBackend, ExecutionSpec, FlowSpec, Lane};
use serde::Serialize;
use tokio::task::JoinSet;

use super::resources::{Meter, valkey_quiesce};
use super::target::{BackendKind, Servers, Target};

/// Named numbers one measurement produced, plus free-text notes.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Figures {
    /// `(metric key, value)`, in the order measured.
    pub values: Vec<(&'static str, f64)>,
    /// Observations that are not numbers (e.g. which calls an idle engine makes).
    pub notes: Vec<String>,
}

impl Figures {
    /// Adds a figure.
    pub fn put(&mut self, key: &'static str, value: f64) {
        self.values.push((key, value));
    }

    /// Adds a figure if there is one.
    pub fn put_opt(&mut self, key: &'static str, value: Option<f64>) {
        if let Some(value) = value {
            self.put(key, value);
        }
    }

    /// The value of `key`, if measured.
    pub fn get(&self, key: &str) -> Option<f64> {
        self.values.iter().find(|(k, _)| *k == key).map(|(_, v)| *v)
    }
}

/// The concurrency every workload and ceiling uses, so their numbers compare.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Shape {
    /// Concurrent workers draining (16).
    pub workers: usize,
    /// Concurrent producers submitting (16).
    pub producers: usize,
    /// Most executions a claim by an empty-handed worker leases.
    pub claim_batch: u32,
    /// Most executions the `complete` that empties a worker's hands leases with `claim_next`
    /// when the work is independent (flat, footprint): the batch size, as the bare queues pop
    /// their next batch with the last ack, so the flat ÷ ceiling ratio compares like with like.
    pub claim_next: u32,
    /// The same for flow workloads (chain, fan-out): one. Ready work is scarce there (100
    /// chains in flight have at most 100 ready nodes), and a worker holding a batch would keep
    /// nodes from idle workers while it runs its hand one at a time.
    pub flow_claim_next: u32,
}

impl Default for Shape {
    fn default() -> Self {
        Shape {
            workers: 16,
            producers: 16,
            claim_batch: 8,
            claim_next: 8,
            flow_claim_next: 1,
        }
    }
}

/// Payload size of the throughput workloads.
pub const PAYLOAD_BYTES: usize = 4096;
/// Payload size of the footprint and probe workloads.
pub const SMALL_PAYLOAD_BYTES: usize = 100;

/// `len` bytes that do not compress (xorshift), so neither server gets a free ride from
/// compressing a repeated pattern (Postgres compresses large values by default).
pub fn payload(len: usize) -> Vec<u8> {
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state.to_le_bytes()[0]
        })
        .collect()
}

/// A lane name known to be valid.
pub fn lane(name: &str) -> Lane {
    Lane::new(name).expect("invariant: bench lane names are short lower-case words")
}

/// A meter for the server behind `kind`.
pub async fn meter_for(kind: BackendKind, servers: &Servers) -> anyhow::Result<Meter> {
    match kind {
        BackendKind::Memory => Ok(Meter::client_only()),
        BackendKind::Valkey => Meter::valkey(servers.valkey()?).await,
        BackendKind::Postgres => Meter::postgres(servers.postgres()?).await,
    }
}

/// Lets the server finish the background work of the untimed phase before a measured one:
/// `CHECKPOINT` on Postgres (a checkpoint triggered by the previous phase's WAL does not land
/// in this one), and on Valkey the end of an AOF rewrite the previous phase's writes
/// triggered (its forked child would compete for the CPU). Work the measured phase itself
/// triggers stays in its measurement.
pub async fn settle(target: &Target) -> anyhow::Result<()> {
    match &target.store {
        super::target::Store::Postgres { admin, .. } => admin
            .batch_execute("CHECKPOINT")
            .await
            .context("CHECKPOINT")?,
        super::target::Store::Valkey { admin, .. } => {
            valkey_quiesce(&mut admin.clone(), SETTLE_LIMIT).await?;
        }
        super::target::Store::Memory => {}
    }
    Ok(())
}

/// The longest [`settle`] waits for a server's background work.
pub const SETTLE_LIMIT: Duration = Duration::from_secs(120);

/// Creates `count` standalone executions of `lane` with `payload`, from `producers`
/// concurrent producers, one call each; returns how long it took.
pub async fn submit_executions(
    backend: &Arc<dyn EngineBackend>,
    lane: &Lane,
    payload: &Arc<Vec<u8>>,
    count: u64,
    producers: usize,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    produce(count, producers, |_, share| {
        let backend = backend.clone();
        let spec = ExecutionSpec::new(lane.clone(), payload.as_ref().clone());
        async move {
            for _ in 0..share {
                backend
                    .create_execution(&spec)
                    .await
                    .context("create_execution")?;
            }
            Ok(())
        }
    })
    .await?;
    Ok(started.elapsed())
}

/// Runs `producers` concurrent tasks (at least one) that together handle `count` items, and
/// waits for all of them: `task(p, share)` builds producer `p`'s task, whose share of the items
/// is as even as possible (the first `count % producers` take one more). Fails with the first
/// task that fails or panics.
pub async fn produce<Fut>(
    count: u64,
    producers: usize,
    mut task: impl FnMut(u64, u64) -> Fut,
) -> anyhow::Result<()>
where
    Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let producers = producers.max(1) as u64;
    let mut tasks = JoinSet::new();
    for p in 0..producers {
        tasks.spawn(task(
            p,
            count / producers + u64::from(p < count % producers),
        ));
    }
    while let Some(joined) = tasks.join_next().await {
        joined.context("a producer panicked")??;
    }
    Ok(())
}

/// Creates every flow of `specs` from `producers` concurrent producers, one call per flow;
/// returns how long it took.
pub async fn submit_flows(
    backend: &Arc<dyn EngineBackend>,
    specs: Vec<FlowSpec>,
    producers: usize,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let mut specs = specs.into_iter();
    produce(specs.len() as u64, producers, |_, share| {
        let backend = backend.clone();
        let share: Vec<FlowSpec> = specs.by_ref().take(share as usize).collect();
        async move {
            for spec in share {
                backend.create_flow(&spec).await.context("create_flow")?;
            }
            Ok(())
        }
    })
    .await?;
    Ok(started.elapsed())
}

/// `count / elapsed`, 0 for an empty interval.
pub fn rate(count: u64, elapsed: Duration) -> f64 {
    let secs = elapsed.as_secs_f64();
    if secs > 0.0 { count as f64 / secs } else { 0.0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_is_sized_and_not_a_repeated_pattern() {
        let p = payload(PAYLOAD_BYTES);
        assert_eq!(p.len(), PAYLOAD_BYTES);
        let distinct: std::collections::BTreeSet<u8> = p.iter().copied().collect();
        assert!(distinct.len() > 200, "{} distinct bytes", distinct.len());
        assert_ne!(p[..64], p[64..128]);
    }

    #[test]
    fn rates() {
        assert_eq!(rate(100, Duration::from_secs(2)), 50.0);
        assert_eq!(rate(100, Duration::ZERO), 0.0);
    }
}
