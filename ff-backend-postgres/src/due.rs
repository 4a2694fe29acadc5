//! `due_summary`: when each time-driven index of each partition next has work, in one
//! statement (one round trip, one snapshot), whatever the number of partitions.
//!
//! Every index a scanner reads is ordered by `(part, due time, id)`, so the earliest due time
//! of one partition is the first entry of its range. The statement walks each index as a
//! *skip scan*: a recursive query probes the first entry, then the first entry of the next
//! non-empty partition after it, and so on — one index probe per non-empty partition plus
//! one, per index. An idle deployment costs one probe of each (empty) index; a busy one at
//! most `partitions + 1` probes per index, however many rows each partition holds (a
//! `GROUP BY part` would read every row of the index instead). The answer is exact: each time
//! is the true earliest of its index at the statement's snapshot.
//!
//! Partitions not requested are probed too (the walk does not jump over them) and dropped
//! from the answer; the cost stays bounded by the partition count.

use std::collections::HashMap;

use ff_core::{DueSummary, EngineError, Partition, PartitionDue, Timestamp};

use crate::backend::PostgresBackend;
use crate::reply::{self, get};

/// The indexes, in the order of the statement's `idx` column.
const LEASE: i32 = 0;
const DELAYED: i32 = 1;
const TIMEOUT: i32 = 2;
const DEADLINE: i32 = 3;
const CANCEL: i32 = 4;
const FINISHED: i32 = 5;
const COMPLETIONS: i32 = 6;
/// The row carrying the backend clock.
const CLOCK: i32 = -1;

/// One skip scan: `(part, at)` of the first entry of every non-empty partition of an index.
/// `{cond}` is the index's predicate, `{col}` its due column.
macro_rules! skip_scan {
    ($name:literal, $table:literal, $col:literal, $cond:literal) => {
        concat!(
            $name,
            " AS (
                (SELECT part, ",
            $col,
            " AS at FROM ",
            $table,
            " WHERE ",
            $cond,
            " ORDER BY part, ",
            $col,
            " LIMIT 1)
                UNION ALL
                SELECT n.part, n.at FROM ",
            $name,
            " s CROSS JOIN LATERAL (SELECT part, ",
            $col,
            " AS at FROM ",
            $table,
            " WHERE ",
            $cond,
            " AND part > s.part ORDER BY part, ",
            $col,
            " LIMIT 1) n
            )"
        )
    };
}

/// The statement: the clock, then `(idx, part, at)` for every non-empty partition of every
/// index. The conditions repeat each partial index's predicate (see `0001_schema.sql`) so the
/// planner probes that index; `scanner::source` selects due items with the same conditions.
const SQL: &str = concat!(
    "WITH RECURSIVE ",
    skip_scan!(
        "lease",
        "ff_execution",
        "lease_expires_at",
        "state = 'running'"
    ),
    ", ",
    skip_scan!(
        "delayed",
        "ff_execution",
        "available_at",
        "state = 'delayed'"
    ),
    ", ",
    skip_scan!(
        "timeout",
        "ff_execution",
        "attempt_deadline_at",
        "state = 'running' AND attempt_deadline_at IS NOT NULL"
    ),
    ", ",
    skip_scan!(
        "deadline",
        "ff_execution",
        "deadline_at",
        "deadline_at IS NOT NULL AND state IN ('blocked', 'delayed', 'ready', 'running')"
    ),
    ", ",
    skip_scan!("backlog", "ff_cancel_backlog", "requested_at", "true"),
    ", ",
    skip_scan!(
        "finished_exec",
        "ff_execution",
        "finished_at",
        "flow_id IS NULL AND finished_at IS NOT NULL"
    ),
    ", ",
    skip_scan!(
        "finished_flow",
        "ff_flow",
        "finished_at",
        "state <> 'running'"
    ),
    ", ",
    skip_scan!("outbox", "ff_completion", "recorded_at", "true"),
    "
    SELECT -1, NULL::smallint, ff_now($1)
    UNION ALL SELECT 0, part, at FROM lease
    UNION ALL SELECT 1, part, at FROM delayed
    UNION ALL SELECT 2, part, at FROM timeout
    UNION ALL SELECT 3, part, at FROM deadline
    UNION ALL SELECT 4, part, at FROM backlog
    UNION ALL SELECT 5, part, at FROM finished_exec
    UNION ALL SELECT 5, part, at FROM finished_flow
    UNION ALL SELECT 6, part, at FROM outbox"
);

/// `due_summary`.
pub(crate) async fn due_summary(
    backend: &PostgresBackend,
    partitions: &[Partition],
) -> Result<DueSummary, EngineError> {
    let config = backend.partitions();
    for partition in partitions {
        config.check(*partition)?;
    }
    let rows = backend.db().query(SQL, &[&backend.offset()]).await?;
    let mut now = None;
    let mut due: HashMap<u16, PartitionDue> = HashMap::new();
    for row in &rows {
        let idx: i32 = get(row, 0)?;
        let at: Option<i64> = get(row, 2)?;
        if idx == CLOCK {
            now = at.map(reply::ts);
            continue;
        }
        let part: i16 = get(row, 1)?;
        let partition = Partition(
            u16::try_from(part)
                .map_err(|_| reply::corrupt(format!("negative partition {part}")))?,
        );
        // A stored NULL due time (no index predicate forbids it for every index) never makes
        // the entry due in the scanner; report it as due since forever, never as absent.
        let at = Some(reply::ts(at.unwrap_or(0)));
        let entry = due
            .entry(partition.0)
            .or_insert_with(|| PartitionDue::nothing(partition));
        let slot = match idx {
            LEASE => &mut entry.lease_expiry,
            DELAYED => &mut entry.delayed,
            TIMEOUT => &mut entry.attempt_timeout,
            DEADLINE => &mut entry.deadline,
            CANCEL => &mut entry.cancel_backlog,
            FINISHED => &mut entry.finished,
            COMPLETIONS => &mut entry.completions,
            other => return Err(reply::corrupt(format!("due_summary index {other}"))),
        };
        *slot = earliest(*slot, at);
    }
    let now = now.ok_or_else(|| reply::corrupt("due_summary without the clock row"))?;
    Ok(DueSummary {
        now,
        partitions: partitions
            .iter()
            .map(|p| {
                due.get(&p.0)
                    .map(|d| PartitionDue {
                        partition: *p,
                        ..*d
                    })
                    .unwrap_or_else(|| PartitionDue::nothing(*p))
            })
            .collect(),
    })
}

fn earliest(a: Option<Timestamp>, b: Option<Timestamp>) -> Option<Timestamp> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, None) => a,
        (None, b) => b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn earliest_of_two_indexes() {
        let t = Timestamp::from_millis;
        assert_eq!(earliest(Some(t(5)), Some(t(3))), Some(t(3)));
        assert_eq!(earliest(None, Some(t(3))), Some(t(3)));
        assert_eq!(earliest(Some(t(5)), None), Some(t(5)));
        assert_eq!(earliest(None, None), None);
        assert!(SQL.contains("CROSS JOIN LATERAL"));
    }
}
