//! Cascade probe: pure cascade latency on an idle system, one completion at a time.
//!
//! For each sample: a two-node flow `a → b` is created, `a` is claimed and completed (without
//! `claim_next`), and `b` is polled for with back-to-back `claim` calls (max 1). The sample is
//! the time from the return of `a`'s `complete` to the return of the first claim that leases
//! `b` — an upper bound of "upstream complete returns → downstream claimable" that includes
//! one claim round trip. Then `b` is completed and the next sample starts.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use ff_core::{
    ClaimRequest, ClaimedExecution, CompleteRequest, EdgeSpec, EngineBackend, ExecutionSpec,
    FlowSpec, NodeKey, NodeSpec, WorkerId,
};

use super::{Figures, SMALL_PAYLOAD_BYTES, lane, payload};
use crate::bench::stats::Latency;
use crate::bench::target::Target;

/// How long one sample may wait for `b` before the probe fails.
const SAMPLE_TIMEOUT: Duration = Duration::from_secs(10);

/// Takes `samples` samples.
pub async fn run(target: &Target, samples: u64) -> anyhow::Result<Figures> {
    let backend = target.backend();
    let lane = lane("probe");
    let payload = payload(SMALL_PAYLOAD_BYTES);
    let claim = ClaimRequest::new(WorkerId::random(), lane.clone());
    let a = NodeKey::new("a").expect("invariant: valid node key");
    let b = NodeKey::new("b").expect("invariant: valid node key");
    let mut latencies = Vec::with_capacity(usize::try_from(samples).unwrap_or(0));
    let mut polls = 0u64;
    for _ in 0..samples {
        let spec = FlowSpec::new()
            .node(NodeSpec::new(
                a.clone(),
                ExecutionSpec::new(lane.clone(), payload.clone()),
            ))
            .node(NodeSpec::new(
                b.clone(),
                ExecutionSpec::new(lane.clone(), payload.clone()),
            ))
            .edge(EdgeSpec::new(a.clone(), b.clone()));
        backend.create_flow(&spec).await.context("create_flow")?;
        let (upstream, _) = claim_one(backend.as_ref(), &claim).await?;
        backend
            .complete(&CompleteRequest::new(upstream.fence))
            .await
            .context("complete a")?;
        let completed_at = Instant::now();
        let (downstream, tries) = claim_one(backend.as_ref(), &claim).await?;
        latencies.push(Instant::now().saturating_duration_since(completed_at));
        polls += tries;
        if downstream.node_key.as_ref() != Some(&b) {
            bail!(
                "the probe lane leased {:?} where it expected node b",
                downstream.node_key
            );
        }
        backend
            .complete(&CompleteRequest::new(downstream.fence))
            .await
            .context("complete b")?;
    }
    let mut figures = Figures::default();
    if let Some(latency) = Latency::of(&mut latencies) {
        figures.put("probe.p50_ms", latency.p50_ms);
        figures.put("probe.p99_ms", latency.p99_ms);
    }
    figures.put(
        "probe.claims_per_sample",
        polls as f64 / samples.max(1) as f64,
    );
    Ok(figures)
}

/// Claims until one execution is leased; returns it and how many claims it took.
async fn claim_one(
    backend: &dyn EngineBackend,
    claim: &ClaimRequest,
) -> anyhow::Result<(ClaimedExecution, u64)> {
    let deadline = Instant::now() + SAMPLE_TIMEOUT;
    let mut tries = 0;
    loop {
        tries += 1;
        if let Some(claimed) = backend.claim(claim).await.context("claim")?.pop() {
            return Ok((claimed, tries));
        }
        if Instant::now() > deadline {
            bail!("nothing became claimable on the probe lane within {SAMPLE_TIMEOUT:?}");
        }
        tokio::task::yield_now().await;
    }
}
