//! The completion outbox, drained by the engine's dispatch loop.
//!
//! `pending_completions` lists a partition's outbox oldest first, skipping rows another
//! drainer holds (`FOR UPDATE SKIP LOCKED`). `cascade_completion` applies up to
//! `cascade_chunk` edges of one event and retires it after the last, each chunk one
//! transaction (`ff_cascade`): edges carry an `applied` mark set in the transaction that
//! applies them, the event row is locked while a chunk runs and deleted only with the last
//! chunk, so a crash between chunks leaves the event pending with its remaining edges, and
//! two drainers of one event apply each edge once.

use ff_core::{CascadeProgress, CompletionEvent, EngineError, FlowId, Partition, limits};
use uuid::Uuid;

use crate::backend::{PostgresBackend, part};
use crate::reply;

/// `pending_completions`.
pub(crate) async fn pending_completions(
    backend: &PostgresBackend,
    partition: Partition,
    limit: u32,
) -> Result<Vec<CompletionEvent>, EngineError> {
    if limit == 0 || limit > limits::MAX_SCAN_BATCH {
        return Err(EngineError::validation(
            "limit",
            format!("{limit} is outside 1..={}", limits::MAX_SCAN_BATCH),
        ));
    }
    backend.partitions().check(partition)?;
    let rows = backend
        .db()
        .query(
            "SELECT exec_id, flow_id, outcome, recorded_at FROM ff_completion
             WHERE part = $1
             ORDER BY recorded_at, exec_id
             LIMIT $2
             FOR UPDATE SKIP LOCKED",
            &[&part(partition), &i64::from(limit)],
        )
        .await?;
    rows.iter()
        .map(|row| {
            let outcome: &str = reply::get(row, 2)?;
            Ok(CompletionEvent {
                execution_id: reply::exec_id(part(partition), reply::get::<Uuid>(row, 0)?)?,
                flow_id: FlowId::from_uuid(reply::get(row, 1)?),
                outcome: reply::state(outcome)?,
                recorded_at: reply::ts(reply::get(row, 3)?),
            })
        })
        .collect()
}

/// `cascade_completion`.
pub(crate) async fn cascade_completion(
    backend: &PostgresBackend,
    event: &CompletionEvent,
) -> Result<CascadeProgress, EngineError> {
    backend.check_id(&event.execution_id)?;
    let chunk = i32::try_from(backend.config().cascade_chunk).unwrap_or(i32::MAX);
    let row = backend
        .db()
        .query_one(
            "SELECT * FROM ff_cascade($1, $2, $3, $4)",
            &[
                &event.execution_id.uuid(),
                &chunk,
                &backend.offset(),
                &backend.inline_limit(),
            ],
        )
        .await?;
    let applied: i32 = reply::get(&row, 0)?;
    Ok(CascadeProgress {
        edges_applied: u32::try_from(applied).unwrap_or(0),
        finished: reply::get(&row, 1)?,
    })
}
