//! Decoding the library's replies: arrays whose first element is a status (`ok`, or an error
//! kind mapped to an [`EngineError`]).

use std::str::FromStr;

use ff_core::{
    Conflict, EndReason, EngineError, EntityKind, ExecutionId, ExecutionState, ExecutionStatus,
    FenceReason, FlowId, FlowState,
};
use redis::Value;
use uuid::Uuid;

/// A cursor over the elements of one array reply.
pub(crate) struct Fields {
    items: std::vec::IntoIter<Value>,
    what: &'static str,
}

impl Fields {
    /// The elements of `value`, which must be an array.
    pub(crate) fn new(value: Value, what: &'static str) -> Result<Fields, EngineError> {
        match value {
            Value::Array(items) | Value::Set(items) => Ok(Fields {
                items: items.into_iter(),
                what,
            }),
            Value::Nil => Ok(Fields {
                items: Vec::new().into_iter(),
                what,
            }),
            other => Err(EngineError::Corrupt(format!(
                "{what}: expected an array, got {other:?}"
            ))),
        }
    }

    fn corrupt(&self, why: impl std::fmt::Display) -> EngineError {
        EngineError::Corrupt(format!("{}: {why}", self.what))
    }

    /// Elements left.
    pub(crate) fn remaining(&self) -> usize {
        self.items.len()
    }

    pub(crate) fn value(&mut self) -> Result<Value, EngineError> {
        self.items
            .next()
            .ok_or_else(|| self.corrupt("reply ended early"))
    }

    pub(crate) fn bytes(&mut self) -> Result<Vec<u8>, EngineError> {
        match self.value()? {
            Value::BulkString(b) => Ok(b),
            Value::SimpleString(s) => Ok(s.into_bytes()),
            Value::Int(i) => Ok(i.to_string().into_bytes()),
            Value::Nil => Ok(Vec::new()),
            other => Err(self.corrupt(format!("expected a string, got {other:?}"))),
        }
    }

    pub(crate) fn string(&mut self) -> Result<String, EngineError> {
        let bytes = self.bytes()?;
        String::from_utf8(bytes).map_err(|_| self.corrupt("a string is not UTF-8"))
    }

    /// The next value as a stored UUID.
    pub(crate) fn uuid(&mut self) -> Result<Uuid, EngineError> {
        parse_uuid(&self.string()?)
    }

    pub(crate) fn int(&mut self) -> Result<i64, EngineError> {
        match self.value()? {
            Value::Int(i) => Ok(i),
            Value::BulkString(b) => std::str::from_utf8(&b)
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| self.corrupt("expected an integer")),
            other => Err(self.corrupt(format!("expected an integer, got {other:?}"))),
        }
    }

    pub(crate) fn u64(&mut self) -> Result<u64, EngineError> {
        let i = self.int()?;
        u64::try_from(i).map_err(|_| self.corrupt(format!("{i} is negative")))
    }

    pub(crate) fn array(&mut self) -> Result<Fields, EngineError> {
        let what = self.what;
        Fields::new(self.value()?, what)
    }

    /// The leading status: Ok(()) for `ok`, otherwise the error it describes.
    pub(crate) fn status(&mut self, partition_tag: &str) -> Result<(), EngineError> {
        let status = self.string()?;
        match status.as_str() {
            "ok" => Ok(()),
            "notfound" => {
                let kind = self.string()?;
                let id = self.string()?;
                let (kind, id) = match kind.as_str() {
                    "execution" => (EntityKind::Execution, format!("{partition_tag}:{id}")),
                    "flow" => (EntityKind::Flow, id),
                    _ => (EntityKind::Node, id),
                };
                Err(EngineError::NotFound { kind, id })
            }
            "fenced" | "notactive" => Err(EngineError::Corrupt(format!(
                "{}: {status} needs the execution id; use fence_error",
                self.what
            ))),
            "validation" => {
                let field = self.string()?;
                let reason = self.string()?;
                Err(EngineError::validation(field, reason))
            }
            other => Err(self.corrupt(format!("unknown status {other:?}"))),
        }
    }

    /// Like [`Fields::status`], for calls about one execution: also maps `fenced`,
    /// `notactive` and `conflict`.
    pub(crate) fn status_for(&mut self, id: &ExecutionId) -> Result<(), EngineError> {
        let status = match self.items.as_slice().first() {
            Some(Value::BulkString(b)) => b.clone(),
            _ => return self.status(&id.partition().hash_tag()),
        };
        match status.as_slice() {
            b"fenced" => {
                self.value()?;
                let reason = match self.string()?.as_str() {
                    "stale_epoch" => FenceReason::StaleEpoch,
                    "lease_mismatch" => FenceReason::LeaseMismatch,
                    _ => FenceReason::LeaseExpired,
                };
                let current = self.array()?.execution_status()?;
                Err(EngineError::Fenced {
                    execution_id: *id,
                    reason,
                    current,
                })
            }
            b"notactive" => {
                self.value()?;
                let current = self.array()?.execution_status()?;
                Err(EngineError::NotActive {
                    execution_id: *id,
                    current,
                })
            }
            _ => self.status(&id.partition().hash_tag()),
        }
    }

    /// `{state, epoch, attempt, end_reason}`.
    pub(crate) fn execution_status(&mut self) -> Result<ExecutionStatus, EngineError> {
        let state = parse_state(&self.string()?)?;
        let epoch = self.u64()?;
        let attempt = u32::try_from(self.u64()?).map_err(|_| self.corrupt("attempt overflow"))?;
        let reason = self.string()?;
        let end_reason = if reason.is_empty() {
            None
        } else {
            Some(parse_reason(&reason)?)
        };
        Ok(ExecutionStatus {
            state,
            epoch,
            attempt,
            end_reason,
        })
    }

    /// Maps a `conflict` status of a flow call.
    pub(crate) fn flow_status(&mut self, flow: &FlowId) -> Result<(), EngineError> {
        let status = match self.items.as_slice().first() {
            Some(Value::BulkString(b)) => b.clone(),
            _ => return self.status(""),
        };
        if status.as_slice() != b"conflict" {
            return self.status("");
        }
        self.value()?;
        match self.string()?.as_str() {
            "duplicate_node" => {
                let key = ff_core::NodeKey::new(self.string()?)?;
                Err(EngineError::Conflict(Conflict::DuplicateNode { key }))
            }
            _ => {
                let state = FlowState::from_str(&self.string()?)?;
                let cancel_requested = self.string()? == "1";
                Err(EngineError::Conflict(Conflict::FlowNotOpen {
                    flow_id: *flow,
                    state,
                    cancel_requested,
                }))
            }
        }
    }
}

/// A stored id: a UUID, or the data is corrupt.
pub(crate) fn parse_uuid(s: &str) -> Result<Uuid, EngineError> {
    Uuid::try_parse(s).map_err(|_| EngineError::Corrupt(format!("stored id {s:?} is not a UUID")))
}

pub(crate) fn parse_state(s: &str) -> Result<ExecutionState, EngineError> {
    ExecutionState::from_str(s)
        .map_err(|_| EngineError::Corrupt(format!("unknown execution state {s:?}")))
}

pub(crate) fn parse_reason(s: &str) -> Result<EndReason, EngineError> {
    EndReason::from_str(s).map_err(|_| EngineError::Corrupt(format!("unknown end reason {s:?}")))
}

/// Lane-index updates every mutating call returns as the tail of its reply: on a cluster,
/// where a partition's function cannot write the lane index (another slot), the transitions it
/// saw (a lane's ready set becoming non-empty, a delayed execution arriving). Empty on a
/// standalone server, where the function wrote the index itself.
#[derive(Debug, Default)]
pub(crate) struct Effects {
    /// `(lane, score)`: the lane has work on this partition claimable from `score` (0 = now).
    pub(crate) lanes: Vec<(String, i64)>,
}

impl Effects {
    /// `lane, score, lane, score, ...`: what is left of the reply.
    pub(crate) fn parse(fields: &mut Fields) -> Result<Effects, EngineError> {
        let mut effects = Effects::default();
        while fields.remaining() > 0 {
            let lane = fields.string()?;
            let score = fields.int()?;
            effects.lanes.push((lane, score));
        }
        Ok(effects)
    }
}
