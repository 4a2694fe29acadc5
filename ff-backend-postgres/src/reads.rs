//! `describe_execution`, `describe_flow` and `list_executions`.

use std::collections::BTreeSet;
use std::str::FromStr;

use ff_core::{
    AttemptOutcome, AttemptRecord, Capability, DependencyGroup, EdgeKind, EngineError, ExecutionId,
    ExecutionSnapshot, ExecutionState, ExecutionStatus, ExecutionSummary, Failure, FlowCounts,
    FlowEdge, FlowId, FlowMember, FlowSnapshot, FlowState, GroupPolicy, GroupSnapshot,
    GroupVerdict, Lane, LeaseId, LeaseInfo, ListCursor, ListQuery, NodeKey, OnSatisfied, Page,
    WorkerId,
};
use serde::Deserialize;
use uuid::Uuid;

use crate::backend::{PostgresBackend, part};
use crate::reply::{self, corrupt, get, opt_ts, ts};

/// One finished attempt as stored in `history` (see `ff_attempt_ended`).
#[derive(Deserialize)]
struct StoredAttempt {
    n: u32,
    w: String,
    l: Uuid,
    e: u64,
    s: i64,
    t: i64,
    o: String,
    m: Option<String>,
    r: Option<bool>,
}

impl StoredAttempt {
    fn record(self) -> Result<AttemptRecord, EngineError> {
        Ok(AttemptRecord {
            number: self.n,
            worker: WorkerId::new(self.w).map_err(corrupt)?,
            lease_id: LeaseId::from_uuid(self.l),
            epoch: self.e,
            started_at: ts(self.s),
            ended_at: Some(ts(self.t)),
            outcome: Some(AttemptOutcome::from_str(&self.o).map_err(corrupt)?),
            failure: self.m.map(|message| Failure {
                message,
                retryable: self.r.unwrap_or(false),
            }),
        })
    }
}

/// `describe_execution`.
pub(crate) async fn describe_execution(
    backend: &PostgresBackend,
    id: &ExecutionId,
) -> Result<ExecutionSnapshot, EngineError> {
    backend.check_id(id)?;
    let rows = backend
        .db()
        .query(
            "SELECT flow_id, node_key, state, epoch, attempt, end_reason, lane, priority, caps,
                    payload, retry, created_at, available_at, deadline_at, lease_id, worker,
                    lease_expires_at, progress, result, finished_at, history::text,
                    attempt_started_at
             FROM ff_execution WHERE id = $1 AND part = $2",
            &[&id.uuid(), &part(id.partition())],
        )
        .await?;
    let row = rows
        .first()
        .ok_or_else(|| EngineError::execution_not_found(id))?;
    let flow_id: Option<Uuid> = get(row, 0)?;
    let node_key: Option<String> = get(row, 1)?;
    let state = reply::state(get(row, 2)?)?;
    let epoch: i64 = get(row, 3)?;
    let attempt: i32 = get(row, 4)?;
    let lane: String = get(row, 6)?;
    let caps: Vec<String> = get(row, 8)?;
    let retry: Option<&str> = get(row, 10)?;
    let history: Option<&str> = get(row, 20)?;
    let flow = match (flow_id, node_key) {
        (Some(flow), Some(key)) => {
            Some((FlowId::from_uuid(flow), NodeKey::new(key).map_err(corrupt)?))
        }
        _ => None,
    };
    let status = ExecutionStatus {
        state,
        epoch: u64::try_from(epoch).map_err(corrupt)?,
        attempt: u32::try_from(attempt).map_err(corrupt)?,
        end_reason: reply::end_reason(get(row, 5)?)?,
    };
    let lease_id: Option<Uuid> = get(row, 14)?;
    let worker: Option<String> = get(row, 15)?;
    let lease_expires: Option<i64> = get(row, 16)?;
    let lease = match (state, lease_id, worker.clone(), lease_expires) {
        (ExecutionState::Running, Some(lease), Some(worker), Some(expires)) => Some(LeaseInfo {
            lease_id: LeaseId::from_uuid(lease),
            worker: WorkerId::new(worker).map_err(corrupt)?,
            expires_at: ts(expires),
        }),
        _ => None,
    };
    let mut attempts = match history {
        Some(text) => serde_json::from_str::<Vec<StoredAttempt>>(text)
            .map_err(corrupt)?
            .into_iter()
            .map(StoredAttempt::record)
            .collect::<Result<Vec<_>, _>>()?,
        None => Vec::new(),
    };
    // The current attempt lives in the row: in progress while running; a successful one is
    // never appended to `history` (nothing overwrites the row's attempt once it succeeded).
    let current = match state {
        ExecutionState::Running => Some((None, None)),
        ExecutionState::Succeeded => Some((opt_ts(get(row, 19)?), Some(AttemptOutcome::Succeeded))),
        _ => None,
    };
    if let (Some((ended_at, outcome)), Some(lease), Some(worker)) = (current, lease_id, worker)
        && attempts.last().is_none_or(|a| a.number < status.attempt)
        && status.attempt > 0
    {
        let started: Option<i64> = get(row, 21)?;
        attempts.push(AttemptRecord {
            number: status.attempt,
            worker: WorkerId::new(worker).map_err(corrupt)?,
            lease_id: LeaseId::from_uuid(lease),
            epoch: status.epoch,
            started_at: ts(started.unwrap_or(0)),
            ended_at,
            outcome,
            failure: None,
        });
    }
    Ok(ExecutionSnapshot {
        id: *id,
        flow,
        status,
        lane: Lane::new(lane).map_err(corrupt)?,
        priority: get(row, 7)?,
        required_capabilities: caps
            .into_iter()
            .map(Capability::new)
            .collect::<Result<BTreeSet<_>, _>>()
            .map_err(corrupt)?,
        payload: get(row, 9)?,
        retry: crate::backend::read_retry(retry)?,
        created_at: ts(get(row, 11)?),
        available_at: if state == ExecutionState::Delayed {
            opt_ts(get(row, 12)?)
        } else {
            None
        },
        deadline: opt_ts(get(row, 13)?),
        lease,
        progress: get(row, 17)?,
        result: get(row, 18)?,
        finished_at: opt_ts(get(row, 19)?),
        attempts,
    })
}

fn group_of(policy: Option<&str>, need: Option<i32>, cancel: Option<bool>) -> DependencyGroup {
    let on_satisfied = if cancel.unwrap_or(false) {
        OnSatisfied::CancelRemaining
    } else {
        OnSatisfied::LetRun
    };
    let policy = match policy {
        Some("any_of") => GroupPolicy::AnyOf,
        Some("quorum") => GroupPolicy::Quorum(u32::try_from(need.unwrap_or(0)).unwrap_or(0)),
        _ => GroupPolicy::AllOf,
    };
    DependencyGroup {
        policy,
        on_satisfied,
    }
}

fn verdict(s: Option<&str>) -> GroupVerdict {
    match s {
        Some("satisfied") => GroupVerdict::Satisfied,
        Some("impossible") => GroupVerdict::Impossible,
        _ => GroupVerdict::Pending,
    }
}

fn count(v: i32) -> u32 {
    u32::try_from(v).unwrap_or(0)
}

/// `describe_flow`.
pub(crate) async fn describe_flow(
    backend: &PostgresBackend,
    id: &FlowId,
) -> Result<FlowSnapshot, EngineError> {
    let db = backend.db();
    let flow_rows = db
        .query(
            "SELECT state, cancel_requested, total, terminal, failing, created_at, finished_at
             FROM ff_flow WHERE id = $1",
            &[&id.uuid()],
        )
        .await?;
    let flow = flow_rows
        .first()
        .ok_or_else(|| EngineError::flow_not_found(id))?;
    let members = db
        .query(
            "SELECT m.node_key, x.id, x.part, x.state, x.end_reason, x.grp_policy, x.grp_need,
                    x.grp_cancel_remaining, x.grp_incoming, x.grp_sat, x.grp_unsat,
                    x.grp_verdict
             FROM ff_member m JOIN ff_execution x ON x.id = m.id
             WHERE m.flow_id = $1 ORDER BY m.member_no",
            &[&id.uuid()],
        )
        .await?;
    let edges = db
        .query(
            // Inline cascades leave no mark (see `0003_hot_path.sql`): an edge is applied
            // when marked, or when its upstream ended and has no completion pending.
            "SELECT f.node_key, t.node_key, e.kind, e.pass_result,
                    e.applied OR (f.state IN ('succeeded', 'failed', 'cancelled', 'expired',
                                              'skipped')
                                  AND NOT EXISTS (SELECT 1 FROM ff_completion c
                                                  WHERE c.exec_id = e.from_id))
             FROM ff_edge e
             JOIN ff_execution f ON f.id = e.from_id
             JOIN ff_execution t ON t.id = e.to_id
             WHERE e.flow_id = $1 ORDER BY e.edge_no",
            &[&id.uuid()],
        )
        .await?;
    let state: &str = get(flow, 0)?;
    let mut snapshot = FlowSnapshot {
        id: *id,
        state: FlowState::from_str(state).map_err(corrupt)?,
        cancel_requested: get(flow, 1)?,
        counts: FlowCounts {
            total: count(get(flow, 2)?),
            terminal: count(get(flow, 3)?),
            failing: count(get(flow, 4)?),
        },
        created_at: ts(get(flow, 5)?),
        finished_at: opt_ts(get(flow, 6)?),
        members: Vec::with_capacity(members.len()),
        edges: Vec::with_capacity(edges.len()),
        groups: Vec::new(),
    };
    for row in &members {
        let key = NodeKey::new(get::<String>(row, 0)?).map_err(corrupt)?;
        snapshot.members.push(FlowMember {
            key: key.clone(),
            execution_id: reply::exec_id(get(row, 2)?, get(row, 1)?)?,
            state: reply::state(get(row, 3)?)?,
            end_reason: reply::end_reason(get(row, 4)?)?,
        });
        let incoming: i32 = get(row, 8)?;
        if incoming > 0 {
            snapshot.groups.push(GroupSnapshot {
                node: key,
                group: group_of(get(row, 5)?, get(row, 6)?, get(row, 7)?),
                incoming: count(incoming),
                satisfied: count(get(row, 9)?),
                unsatisfied: count(get(row, 10)?),
                verdict: verdict(get(row, 11)?),
            });
        }
    }
    for row in &edges {
        let kind: &str = get(row, 2)?;
        snapshot.edges.push(FlowEdge {
            from: NodeKey::new(get::<String>(row, 0)?).map_err(corrupt)?,
            to: NodeKey::new(get::<String>(row, 1)?).map_err(corrupt)?,
            kind: if kind == "always" {
                EdgeKind::Always
            } else {
                EdgeKind::Success
            },
            pass_result: get(row, 3)?,
            applied: get(row, 4)?,
        });
    }
    Ok(snapshot)
}

/// `list_executions`: one partition, one state, optionally one lane, by id, a page at a time.
pub(crate) async fn list_executions(
    backend: &PostgresBackend,
    query: &ListQuery,
) -> Result<Page<ExecutionSummary>, EngineError> {
    query.validate()?;
    backend.partitions().check(query.partition)?;
    let after: Option<Uuid> = match &query.after {
        Some(cursor) => Some(
            cursor
                .0
                .parse::<ExecutionId>()
                .map_err(|_| {
                    EngineError::validation(
                        "after",
                        format!("malformed list cursor {:?}", cursor.0),
                    )
                })?
                .uuid(),
        ),
        None => None,
    };
    let lane = query.lane.as_ref().map(|l| l.as_str());
    // Running executions are not in the listing index (a claim would write one more index
    // entry); every one of them is in the lease-expiry index, by partition. Each statement
    // names its state condition literally, so the planner can prove the partial index usable.
    let sql = if query.state == ExecutionState::Running {
        "SELECT id, state, lane, priority, flow_id, created_at FROM ff_execution
         WHERE part = $1 AND state = 'running' AND $2::text = 'running'
           AND ($3::text IS NULL OR lane = $3) AND ($4::uuid IS NULL OR id > $4)
         ORDER BY id LIMIT $5"
    } else {
        "SELECT id, state, lane, priority, flow_id, created_at FROM ff_execution
         WHERE part = $1 AND state = $2::text AND state <> 'running'
           AND ($3::text IS NULL OR lane = $3) AND ($4::uuid IS NULL OR id > $4)
         ORDER BY id LIMIT $5"
    };
    let rows = backend
        .db()
        .query(
            sql,
            &[
                &part(query.partition),
                &query.state.as_str(),
                &lane,
                &after,
                &(i64::from(query.limit) + 1),
            ],
        )
        .await?;
    let mut items = rows
        .iter()
        .map(|row| {
            Ok(ExecutionSummary {
                id: reply::exec_id(part(query.partition), get(row, 0)?)?,
                state: reply::state(get(row, 1)?)?,
                lane: Lane::new(get::<String>(row, 2)?).map_err(corrupt)?,
                priority: get(row, 3)?,
                flow_id: get::<Option<Uuid>>(row, 4)?.map(FlowId::from_uuid),
                created_at: ts(get(row, 5)?),
            })
        })
        .collect::<Result<Vec<_>, EngineError>>()?;
    let limit = query.limit as usize;
    let next = if items.len() > limit {
        items.truncate(limit);
        items.last().map(|last| ListCursor(last.id.to_string()))
    } else {
        None
    };
    Ok(Page { items, next })
}
