//! Partition ownership and instance registration between engine instances.

use std::time::Duration;

use crate::conformance::check::{CaseResult, ensure, ensure_eq};
use crate::conformance::context::TestContext;
use crate::id::InstanceId;
use crate::ownership::PartitionGrant;
use crate::partition::Partition;

fn instance(name: &str) -> InstanceId {
    InstanceId::new(format!("{name}-{}", uuid::Uuid::new_v4()))
        .expect("instance ids built from a name and a UUID are valid")
}

async fn owners(ctx: &TestContext) -> CaseResult<Vec<(Partition, InstanceId)>> {
    Ok(ctx
        .backend()
        .partition_owners()
        .await?
        .into_iter()
        .map(|o| (o.partition, o.owner))
        .collect())
}

/// Ownership is exclusive, renewable by its holder, released on request, and taken over
/// once it expires.
pub(crate) async fn partition_ownership(ctx: TestContext) -> CaseResult {
    let p0 = Partition(0);
    let ttl = Duration::from_secs(30);
    let (i1, i2, i3) = (instance("one"), instance("two"), instance("three"));
    let before = ctx.now().await?;
    let grants = ctx.backend().acquire_partitions(&i1, &[p0], ttl).await?;
    ensure!(
        matches!(grants.as_slice(), [PartitionGrant::Granted { partition, expires_at }] if *partition == p0 && *expires_at >= before.saturating_add(ttl)),
        "a free partition is granted for the ttl: {grants:?}"
    );
    let grants = ctx.backend().acquire_partitions(&i2, &[p0], ttl).await?;
    ensure!(
        matches!(grants.as_slice(), [PartitionGrant::Held { partition, owner, .. }] if *partition == p0 && *owner == i1),
        "a held partition names its holder: {grants:?}"
    );
    ensure_eq!(owners(&ctx).await?, vec![(p0, i1.clone())], "owners");
    let first_expiry = ctx
        .backend()
        .partition_owners()
        .await?
        .first()
        .map(|o| o.expires_at);
    ctx.advance(Duration::from_millis(5)).await?;
    let grants = ctx
        .backend()
        .acquire_partitions(&i1, &[p0], ttl * 2)
        .await?;
    ensure!(
        matches!(grants.as_slice(), [PartitionGrant::Granted { expires_at, .. }] if Some(*expires_at) > first_expiry),
        "the holder renews: {grants:?}"
    );

    ctx.backend().release_partitions(&i2, &[p0]).await?;
    ensure_eq!(
        owners(&ctx).await?,
        vec![(p0, i1.clone())],
        "a non-holder's release does nothing"
    );
    ctx.backend().release_partitions(&i1, &[p0]).await?;
    ensure_eq!(owners(&ctx).await?, vec![], "released");
    let grants = ctx.backend().acquire_partitions(&i2, &[p0], ttl).await?;
    ensure!(
        grants.iter().all(PartitionGrant::is_granted),
        "free again: {grants:?}"
    );
    ctx.backend().release_partitions(&i2, &[p0]).await?;

    let grants = ctx
        .backend()
        .acquire_partitions(&i3, &[p0], Duration::from_millis(100))
        .await?;
    ensure!(
        grants.iter().all(PartitionGrant::is_granted),
        "short lease: {grants:?}"
    );
    ctx.advance(Duration::from_millis(150)).await?;
    ensure_eq!(
        owners(&ctx).await?,
        vec![],
        "an expired owner is not listed"
    );
    let grants = ctx.backend().acquire_partitions(&i1, &[p0], ttl).await?;
    ensure!(
        grants.iter().all(PartitionGrant::is_granted),
        "an expired lease is taken over: {grants:?}"
    );
    ensure_eq!(owners(&ctx).await?, vec![(p0, i1.clone())], "the new owner");

    if ctx.config().partitions >= 3 {
        let (p1, p2) = (Partition(1), Partition(2));
        ctx.backend().acquire_partitions(&i2, &[p2], ttl).await?;
        let grants = ctx
            .backend()
            .acquire_partitions(&i1, &[p1, p2], ttl)
            .await?;
        ensure_eq!(
            grants
                .iter()
                .map(|g| (g.partition(), g.is_granted()))
                .collect::<Vec<_>>(),
            vec![(p1, true), (p2, false)],
            "one answer per partition, each on its own"
        );
        ensure_eq!(
            owners(&ctx).await?,
            vec![(p0, i1.clone()), (p1, i1.clone()), (p2, i2.clone())],
            "owners by partition"
        );
    }
    Ok(())
}

/// Heartbeats list the live instances sorted by id; an instance that stops heartbeating
/// drops out; `remove_instance` deregisters at once and releases its partitions.
pub(crate) async fn instance_heartbeats(ctx: TestContext) -> CaseResult {
    let ttl = Duration::from_secs(30);
    let (i1, i2, i3) = (instance("a"), instance("b"), instance("c"));
    let ids = |list: &[crate::ownership::InstanceInfo]| {
        list.iter().map(|i| i.id.clone()).collect::<Vec<_>>()
    };
    let list = ctx.backend().heartbeat_instance(&i1, ttl).await?;
    ensure_eq!(ids(&list), vec![i1.clone()], "the caller is listed");
    let list = ctx.backend().heartbeat_instance(&i2, ttl).await?;
    let mut both = vec![i1.clone(), i2.clone()];
    both.sort();
    ensure_eq!(ids(&list), both, "live instances, sorted by id");
    ctx.backend()
        .heartbeat_instance(&i3, Duration::from_millis(100))
        .await?;
    ctx.advance(Duration::from_millis(150)).await?;
    let list = ctx.backend().heartbeat_instance(&i1, ttl).await?;
    ensure_eq!(
        ids(&list),
        both,
        "an instance whose heartbeat lapsed is gone"
    );

    ctx.backend()
        .acquire_partitions(&i2, &[Partition(0)], ttl)
        .await?;
    ctx.backend().remove_instance(&i2).await?;
    let list = ctx.backend().heartbeat_instance(&i1, ttl).await?;
    ensure_eq!(ids(&list), vec![i1.clone()], "a removed instance is gone");
    ensure_eq!(owners(&ctx).await?, vec![], "its partitions are released");
    let grants = ctx
        .backend()
        .acquire_partitions(&i1, &[Partition(0)], ttl)
        .await?;
    ensure!(
        grants.iter().all(PartitionGrant::is_granted),
        "and free to take: {grants:?}"
    );
    Ok(())
}
