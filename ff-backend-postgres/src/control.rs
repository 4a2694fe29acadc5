//! `cancel_flow`: marks the flow cancel-requested and cancels its unfinished members
//! set-based, up to `cancel_chunk` per transaction; any rest is left to the cancel backlog
//! (members of a flow in the backlog are never claimed).

use ff_core::{CancelFlowMode, EngineError, FlowId, FlowState};

use crate::backend::PostgresBackend;
use crate::reply;

/// The stored name of a cancel mode.
pub(crate) fn mode_name(mode: CancelFlowMode) -> &'static str {
    match mode {
        CancelFlowMode::CancelAll => "cancel_all",
        CancelFlowMode::CancelPending => "cancel_pending",
    }
}

/// One cancel step of a flow: `(cancelled, still to cancel, flow state)`, `None` when the
/// flow does not exist.
pub(crate) async fn cancel_flow_step(
    backend: &PostgresBackend,
    flow: &FlowId,
    mode: CancelFlowMode,
) -> Result<Option<(u32, u32, FlowState)>, EngineError> {
    let chunk = i32::try_from(backend.config().cancel_chunk).unwrap_or(i32::MAX);
    let rows = backend
        .db()
        .query(
            "SELECT * FROM ff_cancel_flow_step($1, $2, $3, $4, $5)",
            &[
                &flow.uuid(),
                &mode_name(mode),
                &chunk,
                &backend.offset(),
                &backend.inline_limit(),
            ],
        )
        .await?;
    let Some(row) = rows.first() else {
        return Ok(None);
    };
    let cancelled: i32 = reply::get(row, 0)?;
    let left: i32 = reply::get(row, 1)?;
    let state: String = reply::get(row, 2)?;
    Ok(Some((
        u32::try_from(cancelled).unwrap_or(0),
        u32::try_from(left).unwrap_or(0),
        state.parse::<FlowState>().map_err(reply::corrupt)?,
    )))
}
