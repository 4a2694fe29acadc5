//! Decoding the `ff_reply` rows the server-side functions answer with (see
//! `migrations/0002_functions.sql`): status rows, fencing errors and claimed executions.

use std::str::FromStr;

use ff_core::{
    ClaimedExecution, EndReason, EngineError, ExecutionId, ExecutionState, ExecutionStatus, Fence,
    FenceReason, FlowId, Lane, LeaseId, NodeKey, Partition, Timestamp, UpstreamInput,
};
use tokio_postgres::Row;
use uuid::Uuid;

/// Column positions of `ff_reply`.
mod col {
    pub(super) const CODE: usize = 0;
    pub(super) const ID: usize = 1;
    pub(super) const STATE: usize = 2;
    pub(super) const EPOCH: usize = 3;
    pub(super) const ATTEMPT: usize = 4;
    pub(super) const END_REASON: usize = 5;
    pub(super) const LEASE_ID: usize = 6;
    pub(super) const LANE: usize = 7;
    pub(super) const PRIORITY: usize = 8;
    pub(super) const PAYLOAD: usize = 9;
    pub(super) const FLOW_ID: usize = 10;
    pub(super) const NODE_KEY: usize = 11;
    pub(super) const LEASE_EXPIRES_AT: usize = 12;
    pub(super) const ATTEMPT_DEADLINE_AT: usize = 13;
    pub(super) const DEADLINE_AT: usize = 14;
    pub(super) const IN_KEYS: usize = 15;
    pub(super) const IN_IDS: usize = 16;
    pub(super) const IN_RESULTS: usize = 17;
    pub(super) const RETRY: usize = 19;
    pub(super) const AVAILABLE_AT: usize = 20;
    pub(super) const PART: usize = 21;
}

/// A value read from storage that does not decode: a bug or outside interference.
pub(crate) fn corrupt(what: impl std::fmt::Display) -> EngineError {
    EngineError::Corrupt(what.to_string())
}

/// Reads column `idx`, mapping a type mismatch to `Corrupt`.
pub(crate) fn get<'a, T: tokio_postgres::types::FromSql<'a>>(
    row: &'a Row,
    idx: usize,
) -> Result<T, EngineError> {
    row.try_get(idx)
        .map_err(|e| corrupt(format!("column {idx}: {e}")))
}

/// Milliseconds from storage as a timestamp.
pub(crate) fn ts(ms: i64) -> Timestamp {
    Timestamp::from_millis(u64::try_from(ms).unwrap_or(0))
}

/// An optional millisecond column as a timestamp.
pub(crate) fn opt_ts(ms: Option<i64>) -> Option<Timestamp> {
    ms.map(ts)
}

/// A stored execution state.
pub(crate) fn state(s: &str) -> Result<ExecutionState, EngineError> {
    ExecutionState::from_str(s).map_err(|_| corrupt(format!("unknown stored state {s:?}")))
}

/// A stored end reason.
pub(crate) fn end_reason(s: Option<&str>) -> Result<Option<EndReason>, EngineError> {
    s.map(|s| EndReason::from_str(s).map_err(|_| corrupt(format!("unknown end reason {s:?}"))))
        .transpose()
}

/// An id of an execution stored on partition `part`.
pub(crate) fn exec_id(part: i16, uuid: Uuid) -> Result<ExecutionId, EngineError> {
    let part = u16::try_from(part).map_err(|_| corrupt(format!("negative partition {part}")))?;
    Ok(ExecutionId::from_parts(Partition(part), uuid))
}

/// The reply's code.
pub(crate) fn code(row: &Row) -> Result<&str, EngineError> {
    get(row, col::CODE)
}

/// The execution status carried by a status row.
pub(crate) fn status(row: &Row) -> Result<ExecutionStatus, EngineError> {
    let state_name: Option<&str> = get(row, col::STATE)?;
    let epoch: Option<i64> = get(row, col::EPOCH)?;
    let attempt: Option<i32> = get(row, col::ATTEMPT)?;
    Ok(ExecutionStatus {
        state: state(state_name.unwrap_or("ready"))?,
        epoch: u64::try_from(epoch.unwrap_or(0)).unwrap_or(0),
        attempt: u32::try_from(attempt.unwrap_or(0)).unwrap_or(0),
        end_reason: end_reason(get(row, col::END_REASON)?)?,
    })
}

/// The flow a successful `complete` finished (its status row's `flow_id`), if any.
pub(crate) fn finished_flow(row: &Row) -> Result<Option<FlowId>, EngineError> {
    if code(row)? != "ok" {
        return Ok(None);
    }
    Ok(get::<Option<Uuid>>(row, col::FLOW_ID)?.map(FlowId::from_uuid))
}

/// The raw `available_at` column (the fail disposition of a repeat: -1 = failed).
pub(crate) fn raw_available_at(row: &Row) -> Result<Option<i64>, EngineError> {
    get(row, col::AVAILABLE_AT)
}

/// The attempt and the stored retry policy (NULL: the default) of a `need_delay` row.
pub(crate) fn need_delay(row: &Row) -> Result<(u32, Option<String>), EngineError> {
    let attempt: i32 = get(row, col::ATTEMPT)?;
    Ok((u32::try_from(attempt).unwrap_or(0), get(row, col::RETRY)?))
}

/// The error a fencing or lookup code stands for; `None` for codes that are not errors.
pub(crate) fn error(row: &Row, id: &ExecutionId) -> Result<Option<EngineError>, EngineError> {
    let fenced = |reason| -> Result<Option<EngineError>, EngineError> {
        Ok(Some(EngineError::Fenced {
            execution_id: *id,
            reason,
            current: status(row)?,
        }))
    };
    match code(row)? {
        "not_found" => Ok(Some(EngineError::execution_not_found(id))),
        "stale_epoch" => fenced(FenceReason::StaleEpoch),
        "lease_mismatch" => fenced(FenceReason::LeaseMismatch),
        "lease_expired" => fenced(FenceReason::LeaseExpired),
        "inactive" => Ok(Some(EngineError::NotActive {
            execution_id: *id,
            current: status(row)?,
        })),
        _ => Ok(None),
    }
}

/// A `claimed` row as the worker's lease.
pub(crate) fn claimed(row: &Row) -> Result<ClaimedExecution, EngineError> {
    let part: i16 = get(row, col::PART)?;
    let id = exec_id(part, get(row, col::ID)?)?;
    let epoch: i64 = get(row, col::EPOCH)?;
    let attempt: i32 = get(row, col::ATTEMPT)?;
    let lane: String = get(row, col::LANE)?;
    let node_key: Option<String> = get(row, col::NODE_KEY)?;
    let keys: Option<Vec<String>> = get(row, col::IN_KEYS)?;
    let inputs = match keys {
        Some(keys) => {
            let ids: Vec<Uuid> = get(row, col::IN_IDS)?;
            let results: Vec<Option<Vec<u8>>> = get(row, col::IN_RESULTS)?;
            keys.into_iter()
                .zip(ids)
                .zip(results)
                .map(|((key, uuid), result)| {
                    Ok(UpstreamInput {
                        node_key: NodeKey::new(key).map_err(corrupt)?,
                        execution_id: exec_id(part, uuid)?,
                        result,
                    })
                })
                .collect::<Result<_, EngineError>>()?
        }
        None => Vec::new(),
    };
    Ok(ClaimedExecution {
        fence: Fence {
            execution_id: id,
            lease_id: LeaseId::from_uuid(get(row, col::LEASE_ID)?),
            epoch: u64::try_from(epoch).map_err(corrupt)?,
        },
        attempt: u32::try_from(attempt).map_err(corrupt)?,
        lane: Lane::new(lane).map_err(corrupt)?,
        priority: get(row, col::PRIORITY)?,
        payload: get(row, col::PAYLOAD)?,
        inputs,
        flow_id: get::<Option<Uuid>>(row, col::FLOW_ID)?.map(FlowId::from_uuid),
        node_key: node_key.map(NodeKey::new).transpose().map_err(corrupt)?,
        lease_expires_at: ts(get(row, col::LEASE_EXPIRES_AT)?),
        attempt_deadline: opt_ts(get(row, col::ATTEMPT_DEADLINE_AT)?),
        deadline: opt_ts(get(row, col::DEADLINE_AT)?),
    })
}

/// Every `claimed` row of a reply.
pub(crate) fn claimed_rows<'a>(
    rows: impl IntoIterator<Item = &'a Row>,
) -> Result<Vec<ClaimedExecution>, EngineError> {
    rows.into_iter()
        .filter(|row| matches!(code(row), Ok("claimed")))
        .map(claimed)
        .collect()
}
