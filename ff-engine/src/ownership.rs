//! Splitting the partitions between engine instances (DESIGN §6).
//!
//! Correctness never depends on this: every backend step is atomic and idempotent, so two
//! instances draining one partition only waste effort, and a partition nobody owns for a
//! moment only waits. Efficiency does: each instance
//!
//! 1. heartbeats its registration (`heartbeat_instance`) and learns the live instances;
//! 2. computes its *targets* by rendezvous hashing over the live instances
//!    ([`rendezvous_targets`]): every instance computes the same split, each partition goes to
//!    the instance with the highest score for it, and when an instance joins or leaves only
//!    the partitions it gains or loses move;
//! 3. releases the partitions it owns that are no longer its targets, so their new owner can
//!    take them at once, and acquires (or renews) its targets with `acquire_partitions` —
//!    granted only when free, expired or already its own;
//! 4. repeats at a fraction of the TTL, sooner while some targets are still held by others.
//!
//! An instance that dies stops heartbeating: the others drop it from their membership after
//! one TTL and take its partitions once its ownership leases lapse, within about two TTLs.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use ff_core::{EngineError, InstanceId, Partition};
use tokio::time::Instant;

use crate::backoff::jittered;
use crate::call::call;
use crate::engine::Shared;
use crate::telemetry;

/// The partitions `me` should own when `instances` are alive: each partition goes to the
/// instance with the highest rendezvous score for it. Every instance computes the same answer
/// from the same membership. `me` counts as alive even if missing from `instances`.
pub fn rendezvous_targets(
    partitions: impl IntoIterator<Item = Partition>,
    instances: &[InstanceId],
    me: &InstanceId,
) -> BTreeSet<Partition> {
    partitions
        .into_iter()
        .filter(|&p| {
            let mine = score(me, p);
            instances
                .iter()
                .filter(|other| *other != me)
                .all(|other| (score(other, p), other.as_str()) < (mine, me.as_str()))
        })
        .collect()
}

/// A stable 64-bit score of `(instance, partition)`: FNV-1a over the instance id and the
/// partition index, then the SplitMix64 finalizer to spread the bits. Stable across
/// processes, platforms and Rust versions, unlike `std`'s hasher, because every instance must
/// compute the same scores.
fn score(instance: &InstanceId, partition: Partition) -> u64 {
    const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut hash = FNV_OFFSET;
    for byte in instance
        .as_str()
        .bytes()
        .chain(partition.index().to_be_bytes())
    {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(FNV_PRIME);
    }
    hash = (hash ^ (hash >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    hash = (hash ^ (hash >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    hash ^ (hash >> 31)
}

/// What one ownership round learned.
#[derive(Debug)]
pub(crate) struct Round {
    /// Whether every target was granted (no need to retry early).
    pub(crate) settled: bool,
}

/// One round: heartbeat, compute targets, release what is no longer ours, acquire targets,
/// publish the owned set. Errors leave the previous owned set in place until `valid_until`.
pub(crate) async fn round(
    shared: &Shared,
    valid_until: &mut Instant,
) -> Result<Round, EngineError> {
    let backend = &shared.backend;
    let ttl = shared.config.ownership_ttl;
    let started = Instant::now();
    let instances = call(
        "heartbeat_instance",
        backend.heartbeat_instance(&shared.instance, ttl),
    )
    .await
    .map_err(|e| e.into_engine_error("heartbeat_instance"))?;
    let ids: Vec<InstanceId> = instances.into_iter().map(|i| i.id).collect();
    let targets = rendezvous_targets(shared.router.partitions(), &ids, &shared.instance);

    let current = shared.owned();
    let to_release: Vec<Partition> = current.difference(&targets).copied().collect();
    if !to_release.is_empty() {
        // Stop working on them first, then hand them over.
        let keep: BTreeSet<Partition> = current.intersection(&targets).copied().collect();
        shared.publish_owned(keep);
        tracing::info!(
            instance = %shared.instance,
            released = to_release.len(),
            "releasing partitions to their new owners"
        );
        if let Err(error) = call(
            "release_partitions",
            backend.release_partitions(&shared.instance, &to_release),
        )
        .await
        {
            // They lapse on their own within one TTL.
            tracing::warn!(%error, "could not release partitions");
        }
    }

    let wanted: Vec<Partition> = targets.iter().copied().collect();
    let grants = if wanted.is_empty() {
        Vec::new()
    } else {
        call(
            "acquire_partitions",
            backend.acquire_partitions(&shared.instance, &wanted, ttl),
        )
        .await
        .map_err(|e| e.into_engine_error("acquire_partitions"))?
    };
    let owned: BTreeSet<Partition> = grants
        .iter()
        .filter(|g| g.is_granted())
        .map(|g| g.partition())
        .collect();
    let settled = owned.len() == targets.len();
    let before = shared.owned();
    let gained: Vec<Partition> = owned.difference(&before).copied().collect();
    if !gained.is_empty() {
        tracing::info!(
            instance = %shared.instance,
            gained = gained.len(),
            owned = owned.len(),
            "acquired partitions"
        );
    }
    shared.publish_owned(owned);
    // A partition gained may hold completions its previous owner left pending.
    shared.dispatch.wake_all(gained);
    *valid_until = started + ttl;
    Ok(Round { settled })
}

/// The ownership task: a round every renew interval (sooner while targets are held by
/// others), until shutdown. Shutdown itself deregisters in [`crate::EngineHandle::shutdown`].
pub(crate) async fn run(shared: Arc<Shared>) -> Result<(), EngineError> {
    let renew = shared.config.ownership_renew_interval();
    let retry = (renew / 4).max(Duration::from_millis(1));
    let mut valid_until = Instant::now() + shared.config.ownership_ttl;
    loop {
        let wait = if shared.shutdown.is_set() {
            return Ok(());
        } else {
            match round(&shared, &mut valid_until).await {
                Ok(Round { settled: true }) => renew,
                Ok(Round { settled: false }) => retry,
                Err(error) => {
                    tracing::warn!(%error, "ownership round failed");
                    if Instant::now() >= valid_until && !shared.owned().is_empty() {
                        tracing::warn!("ownership leases lapsed; dropping every partition");
                        shared.publish_owned(BTreeSet::new());
                    }
                    retry
                }
            }
        };
        metrics::gauge!(telemetry::OWNED_PARTITIONS).set(shared.owned().len() as f64);
        tokio::select! {
            () = shared.shutdown.wait() => return Ok(()),
            () = tokio::time::sleep(jittered(wait, shared.config.jitter)) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(n: usize) -> Vec<InstanceId> {
        (0..n)
            .map(|i| InstanceId::new(format!("engine-{i}")).expect("valid id"))
            .collect()
    }

    fn partitions() -> impl Iterator<Item = Partition> + Clone {
        (0..256).map(Partition)
    }

    #[test]
    fn every_partition_has_exactly_one_target_owner() {
        for n in 1..=5 {
            let instances = ids(n);
            let mut seen = BTreeSet::new();
            for me in &instances {
                let mine = rendezvous_targets(partitions(), &instances, me);
                // Roughly even: no instance gets less than half or more than twice its share.
                let share = 256 / n;
                assert!(
                    mine.len() >= share / 2 && mine.len() <= share * 2,
                    "{n}: {}",
                    mine.len()
                );
                for p in mine {
                    assert!(seen.insert(p), "partition {p} targeted twice");
                }
            }
            assert_eq!(seen.len(), 256);
        }
    }

    #[test]
    fn a_joining_instance_only_takes_partitions() {
        let two = ids(2);
        let three = ids(3);
        for me in &two {
            let before = rendezvous_targets(partitions(), &two, me);
            let after = rendezvous_targets(partitions(), &three, me);
            assert!(after.is_subset(&before), "only the newcomer gains");
        }
        let lonely = rendezvous_targets(partitions(), &[], &two[0]);
        assert_eq!(lonely.len(), 256);
    }

    #[test]
    fn scores_are_stable() {
        // Pinned so that instances built by different compilers keep agreeing.
        let id = InstanceId::new("engine-a").expect("valid id");
        assert_eq!(score(&id, Partition(0)), score(&id, Partition(0)));
        assert_ne!(score(&id, Partition(0)), score(&id, Partition(1)));
        // FNV-1a + SplitMix64 of b"engine-a" ++ [0, 7], computed independently.
        assert_eq!(score(&id, Partition(7)), 2_788_640_185_788_365_597);
    }
}
