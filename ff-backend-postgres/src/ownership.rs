//! Engine instances and partition ownership leases (DESIGN §6), by the database clock.

use std::collections::BTreeSet;
use std::time::Duration;

use ff_core::policy::check_lease_ttl;
use ff_core::{EngineError, InstanceId, InstanceInfo, Partition, PartitionGrant, PartitionOwner};

use crate::backend::{PostgresBackend, ms, part};
use crate::reply;

fn instance(s: String) -> Result<InstanceId, EngineError> {
    InstanceId::new(s).map_err(reply::corrupt)
}

fn partition(p: i16) -> Result<Partition, EngineError> {
    u16::try_from(p)
        .map(Partition)
        .map_err(|_| reply::corrupt(format!("negative partition {p}")))
}

/// `heartbeat_instance`: upsert, forget expired instances, list the live ones sorted by id.
pub(crate) async fn heartbeat_instance(
    backend: &PostgresBackend,
    id: &InstanceId,
    ttl: Duration,
) -> Result<Vec<InstanceInfo>, EngineError> {
    check_lease_ttl("ttl", ttl)?;
    let rows = backend
        .db()
        .query(
            "WITH now AS (SELECT ff_now($3) AS t),
             gone AS (
                 DELETE FROM ff_instance WHERE expires_at <= (SELECT t FROM now) AND id <> $1
             ),
             me AS (
                 INSERT INTO ff_instance (id, expires_at) SELECT $1, t + $2 FROM now
                 ON CONFLICT (id) DO UPDATE SET expires_at = EXCLUDED.expires_at
                 RETURNING id, expires_at
             )
             SELECT id, expires_at FROM me
             UNION ALL
             SELECT id, expires_at FROM ff_instance
             WHERE id <> $1 AND expires_at > (SELECT t FROM now)",
            &[&id.as_str(), &ms(ttl), &backend.offset()],
        )
        .await?;
    let mut live = rows
        .iter()
        .map(|row| {
            Ok(InstanceInfo {
                id: instance(reply::get(row, 0)?)?,
                expires_at: reply::ts(reply::get(row, 1)?),
            })
        })
        .collect::<Result<Vec<_>, EngineError>>()?;
    live.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(live)
}

/// `remove_instance`.
pub(crate) async fn remove_instance(
    backend: &PostgresBackend,
    id: &InstanceId,
) -> Result<(), EngineError> {
    backend
        .db()
        .query(
            "WITH owned AS (DELETE FROM ff_partition_owner WHERE owner = $1)
             DELETE FROM ff_instance WHERE id = $1",
            &[&id.as_str()],
        )
        .await
        .map(|_| ())
}

fn check_all(backend: &PostgresBackend, partitions: &[Partition]) -> Result<(), EngineError> {
    let config = backend.partitions();
    partitions.iter().try_for_each(|p| config.check(*p))
}

/// `acquire_partitions`: one statement; each partition is granted when free, expired or
/// already the caller's, and otherwise answered with its holder.
pub(crate) async fn acquire_partitions(
    backend: &PostgresBackend,
    id: &InstanceId,
    partitions: &[Partition],
    ttl: Duration,
) -> Result<Vec<PartitionGrant>, EngineError> {
    check_lease_ttl("ttl", ttl)?;
    check_all(backend, partitions)?;
    let unique: Vec<i16> = partitions
        .iter()
        .map(|p| part(*p))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let rows = backend
        .db()
        .query(
            "WITH now AS (SELECT ff_now($4) AS t),
             won AS (
                 INSERT INTO ff_partition_owner (part, owner, expires_at)
                 SELECT p, $1, (SELECT t FROM now) + $3 FROM unnest($2::smallint[]) p
                 ON CONFLICT (part) DO UPDATE
                 SET owner = EXCLUDED.owner, expires_at = EXCLUDED.expires_at
                 WHERE ff_partition_owner.owner = EXCLUDED.owner
                    OR ff_partition_owner.expires_at <= (SELECT t FROM now)
                 RETURNING part, owner, expires_at
             )
             SELECT p.p, w.part IS NOT NULL, coalesce(w.owner, o.owner),
                    coalesce(w.expires_at, o.expires_at)
             FROM unnest($2::smallint[]) p
             LEFT JOIN won w ON w.part = p.p
             LEFT JOIN ff_partition_owner o ON o.part = p.p",
            &[&id.as_str(), &unique, &ms(ttl), &backend.offset()],
        )
        .await?;
    let mut answers = std::collections::HashMap::with_capacity(rows.len());
    for row in &rows {
        let p = partition(reply::get(row, 0)?)?;
        let granted: bool = reply::get(row, 1)?;
        let owner: String = reply::get(row, 2)?;
        let expires_at = reply::ts(reply::get(row, 3)?);
        let grant = if granted {
            PartitionGrant::Granted {
                partition: p,
                expires_at,
            }
        } else {
            PartitionGrant::Held {
                partition: p,
                owner: instance(owner)?,
                expires_at,
            }
        };
        answers.insert(p, grant);
    }
    partitions
        .iter()
        .map(|p| {
            answers
                .get(p)
                .cloned()
                .ok_or_else(|| reply::corrupt(format!("no ownership answer for {p}")))
        })
        .collect()
}

/// `release_partitions`.
pub(crate) async fn release_partitions(
    backend: &PostgresBackend,
    id: &InstanceId,
    partitions: &[Partition],
) -> Result<(), EngineError> {
    check_all(backend, partitions)?;
    let parts: Vec<i16> = partitions.iter().map(|p| part(*p)).collect();
    backend
        .db()
        .query(
            "DELETE FROM ff_partition_owner WHERE owner = $1 AND part = ANY($2)",
            &[&id.as_str(), &parts],
        )
        .await
        .map(|_| ())
}

/// `partition_owners`.
pub(crate) async fn partition_owners(
    backend: &PostgresBackend,
) -> Result<Vec<PartitionOwner>, EngineError> {
    let rows = backend
        .db()
        .query(
            "SELECT part, owner, expires_at FROM ff_partition_owner
             WHERE expires_at > ff_now($1) ORDER BY part",
            &[&backend.offset()],
        )
        .await?;
    rows.iter()
        .map(|row| {
            Ok(PartitionOwner {
                partition: partition(reply::get(row, 0)?)?,
                owner: instance(reply::get(row, 1)?)?,
                expires_at: reply::ts(reply::get(row, 2)?),
            })
        })
        .collect()
}
