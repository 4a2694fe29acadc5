//! Scanner steps (DESIGN §6; `ff_core::scan`): per partition, up to `limit` due items in due
//! order after the cursor, each processed atomically (one function call, one transaction) by
//! the database clock. Items in the skip list are passed over; an item whose step fails is
//! reported in `failures` and stays due, without blocking the items behind it.

use ff_core::{
    EngineError, ExecutionId, FlowId, ScanCursor, ScanFailure, ScanKind, ScanReport, ScanRequest,
};
use tokio_postgres::Row;
use uuid::Uuid;

use crate::backend::{PostgresBackend, ms, part, retry_delay};
use crate::reply::{self, get};

/// One due item.
struct Item {
    /// 0 = execution, 1 = flow (retention orders executions first on ties).
    kind: i32,
    uuid: Uuid,
    name: String,
    row: Row,
}

/// Where a kind's due items live.
struct Source {
    /// `SELECT due, kind, id, ...` of every due item of partition $1 at $2 (no order).
    due: &'static str,
    /// The item is a flow (its name is the flow id) rather than an execution.
    flows: bool,
}

fn source(kind: &ScanKind) -> Source {
    match kind {
        ScanKind::LeaseExpiry => Source {
            due: "SELECT lease_expires_at AS due, 0 AS kind, id, epoch, attempt, max_attempts,
                         retry
                  FROM ff_execution
                  WHERE part = $1 AND state = 'running' AND lease_expires_at <= $2",
            flows: false,
        },
        ScanKind::AttemptTimeout => Source {
            due: "SELECT attempt_deadline_at AS due, 0 AS kind, id, epoch, attempt,
                         max_attempts, retry
                  FROM ff_execution
                  WHERE part = $1 AND state = 'running' AND attempt_deadline_at IS NOT NULL
                    AND attempt_deadline_at <= $2",
            flows: false,
        },
        ScanKind::DelayedPromotion => Source {
            due: "SELECT available_at AS due, 0 AS kind, id
                  FROM ff_execution
                  WHERE part = $1 AND state = 'delayed' AND available_at <= $2",
            flows: false,
        },
        ScanKind::ExecutionDeadline => Source {
            due: "SELECT deadline_at AS due, 0 AS kind, id
                  FROM ff_execution
                  WHERE part = $1 AND deadline_at IS NOT NULL AND deadline_at <= $2
                    AND state IN ('blocked', 'delayed', 'ready', 'running')",
            flows: false,
        },
        ScanKind::CancelBacklog => Source {
            due: "SELECT requested_at AS due, 1 AS kind, flow_id AS id, mode
                  FROM ff_cancel_backlog
                  WHERE part = $1 AND requested_at <= $2",
            flows: true,
        },
        ScanKind::Retention { .. } => Source {
            due: "SELECT finished_at AS due, 0 AS kind, id
                  FROM ff_execution
                  WHERE part = $1 AND flow_id IS NULL AND finished_at IS NOT NULL
                    AND finished_at <= $2
                  UNION ALL
                  SELECT finished_at, 1, id FROM ff_flow
                  WHERE part = $1 AND state <> 'running' AND finished_at <= $2",
            flows: false,
        },
    }
}

fn bad_cursor(cursor: &ScanCursor) -> EngineError {
    EngineError::validation("after", format!("malformed scan cursor {:?}", cursor.0))
}

/// A cursor `"<due ms>:<item>"` as (due, kind, uuid).
fn decode_cursor(cursor: &ScanCursor, flows: bool) -> Result<(i64, i32, Uuid), EngineError> {
    let (at, item) = cursor.0.split_once(':').ok_or_else(|| bad_cursor(cursor))?;
    let at: i64 = at.parse().map_err(|_| bad_cursor(cursor))?;
    if !flows && let Ok(id) = item.parse::<ExecutionId>() {
        return Ok((at, 0, id.uuid()));
    }
    match item.parse::<FlowId>() {
        Ok(flow) => Ok((at, 1, flow.uuid())),
        Err(_) => Err(bad_cursor(cursor)),
    }
}

fn item_name(partition: i16, kind: i32, uuid: Uuid) -> Result<String, EngineError> {
    Ok(if kind == 0 {
        reply::exec_id(partition, uuid)?.to_string()
    } else {
        FlowId::from_uuid(uuid).to_string()
    })
}

/// One scanner step.
pub(crate) async fn scan(
    backend: &PostgresBackend,
    request: &ScanRequest,
) -> Result<ScanReport, EngineError> {
    request.validate()?;
    backend.partitions().check(request.partition)?;
    let partition = part(request.partition);
    let now = backend.clock().await?;
    let horizon = match request.kind {
        ScanKind::Retention { older_than } => now.saturating_sub(ms(older_than)),
        _ => now,
    };
    let source = source(&request.kind);
    let after = request
        .after
        .as_ref()
        .map(|c| decode_cursor(c, source.flows))
        .transpose()?;
    let (after_due, after_kind, after_id) = match after {
        Some((due, kind, id)) => (Some(due), Some(kind), Some(id)),
        None => (None, None, None),
    };
    let fetch = i64::from(request.limit) + i64::try_from(request.skip.len()).unwrap_or(0) + 1;
    let rows = backend
        .db()
        .query(
            &format!(
                "SELECT * FROM ({}) c
                 WHERE $3::bigint IS NULL OR (c.due, c.kind, c.id) > ($3, $4::integer, $5::uuid)
                 ORDER BY c.due, c.kind, c.id LIMIT $6",
                source.due
            ),
            &[
                &partition,
                &horizon,
                &after_due,
                &after_kind,
                &after_id,
                &fetch,
            ],
        )
        .await?;
    let mut picked = Vec::new();
    let mut last_visited: Option<(i64, String)> = None;
    let mut more = false;
    for row in rows {
        if picked.len() >= request.limit as usize {
            more = true;
            break;
        }
        let due: i64 = get(&row, 0)?;
        let kind: i32 = get(&row, 1)?;
        let uuid: Uuid = get(&row, 2)?;
        let name = item_name(partition, kind, uuid)?;
        last_visited = Some((due, name.clone()));
        if request.skip.contains(&name) {
            continue;
        }
        picked.push(Item {
            kind,
            uuid,
            name,
            row,
        });
    }
    let next = match (more, last_visited) {
        (true, Some((due, name))) => Some(ScanCursor(format!("{due}:{name}"))),
        _ => None,
    };

    let mut processed = 0u32;
    let mut failures = Vec::new();
    match request.kind {
        _ if picked.is_empty() => {}
        ScanKind::DelayedPromotion => {
            let ids: Vec<Uuid> = picked.iter().map(|i| i.uuid).collect();
            backend
                .db()
                .query_one("SELECT ff_promote($1)", &[&ids])
                .await?;
            processed = u32::try_from(picked.len()).unwrap_or(u32::MAX);
        }
        ScanKind::LeaseExpiry | ScanKind::AttemptTimeout | ScanKind::ExecutionDeadline => {
            let failed = batch(backend, &request.kind, &picked).await?;
            for item in &picked {
                match failed.iter().find(|(uuid, _)| *uuid == item.uuid) {
                    Some((_, error)) => failures.push(ScanFailure {
                        item: item.name.clone(),
                        error: error.clone(),
                    }),
                    None => processed += 1,
                }
            }
        }
        _ => {
            for item in &picked {
                match process(backend, &request.kind, item).await {
                    Ok(()) => processed += 1,
                    Err(err) => failures.push(ScanFailure {
                        item: item.name.clone(),
                        error: err.to_string(),
                    }),
                }
            }
        }
    }

    let backlog_row = backend
        .db()
        .query_one(
            &format!("SELECT count(*) FROM ({}) c", source.due),
            &[&partition, &horizon],
        )
        .await?;
    let backlog: i64 = get(&backlog_row, 0)?;
    Ok(ScanReport {
        processed,
        failures,
        next,
        backlog: u64::try_from(backlog).unwrap_or(0),
    })
}

/// Lease expiries, attempt timeouts and deadlines: one `ff_scan_batch` call, each item in its
/// own subtransaction, the cascade of everything they ended applied after the batch (the
/// reference backend's order). The backoff of each retry is computed here.
async fn batch(
    backend: &PostgresBackend,
    kind: &ScanKind,
    picked: &[Item],
) -> Result<Vec<(Uuid, String)>, EngineError> {
    let name = match kind {
        ScanKind::LeaseExpiry => "lease_expired",
        ScanKind::AttemptTimeout => "attempt_timeout",
        _ => "deadline",
    };
    let ids: Vec<Uuid> = picked.iter().map(|i| i.uuid).collect();
    let mut epochs = Vec::with_capacity(picked.len());
    let mut delays = Vec::with_capacity(picked.len());
    for item in picked {
        if name == "deadline" {
            epochs.push(None);
            delays.push(None);
            continue;
        }
        let epoch: i64 = get(&item.row, 3)?;
        let attempt: i32 = get(&item.row, 4)?;
        let max_attempts: i32 = get(&item.row, 5)?;
        let retry: Option<&str> = get(&item.row, 6)?;
        epochs.push(Some(epoch));
        delays.push(if attempt < max_attempts {
            Some(retry_delay(retry, u32::try_from(attempt).unwrap_or(0))?)
        } else {
            None
        });
    }
    let rows = backend
        .db()
        .query(
            "SELECT * FROM ff_scan_batch($1, $2, $3, $4, $5, $6)",
            &[
                &name,
                &ids,
                &epochs,
                &delays,
                &backend.offset(),
                &backend.inline_limit(),
            ],
        )
        .await?;
    rows.iter()
        .map(|row| Ok((get(row, 0)?, get(row, 1)?)))
        .collect()
}

/// Processes one due item (cancel backlog, retention) in its own transaction.
async fn process(
    backend: &PostgresBackend,
    kind: &ScanKind,
    item: &Item,
) -> Result<(), EngineError> {
    let db = backend.db();
    let offset = backend.offset();
    let inline = backend.inline_limit();
    match kind {
        ScanKind::CancelBacklog => {
            let mode: &str = get(&item.row, 3)?;
            let chunk = i32::try_from(backend.config().cancel_chunk).unwrap_or(i32::MAX);
            db.query(
                "SELECT * FROM ff_cancel_flow_step($1, $2, $3, $4, $5)",
                &[&item.uuid, &mode, &chunk, &offset, &inline],
            )
            .await?;
        }
        ScanKind::Retention { older_than } => {
            let horizon = backend.clock().await?.saturating_sub(ms(*older_than));
            if item.kind == 0 {
                db.query(
                    "DELETE FROM ff_execution
                     WHERE id = $1 AND flow_id IS NULL AND finished_at <= $2",
                    &[&item.uuid, &horizon],
                )
                .await?;
            } else {
                db.query(
                    // Every sub-statement reads the same snapshot: `x` finds the members
                    // through the ff_member rows `m` deletes.
                    "WITH f AS (
                         DELETE FROM ff_flow
                         WHERE id = $1 AND state <> 'running' AND finished_at <= $2
                         RETURNING id
                     ), m AS (
                         DELETE FROM ff_member WHERE flow_id IN (SELECT id FROM f)
                         RETURNING id
                     ), e AS (
                         DELETE FROM ff_edge WHERE flow_id IN (SELECT id FROM f)
                     ), c AS (
                         DELETE FROM ff_completion WHERE flow_id IN (SELECT id FROM f)
                     ), b AS (
                         DELETE FROM ff_cancel_backlog WHERE flow_id IN (SELECT id FROM f)
                     )
                     DELETE FROM ff_execution x USING m WHERE x.id = m.id",
                    &[&item.uuid, &horizon],
                )
                .await?;
            }
        }
        _ => {}
    }
    Ok(())
}
