//! Building ff-core's result types from the library's replies.
//!
//! `ClaimedExecution`, `ExecutionSnapshot` and `FlowSnapshot` are `#[non_exhaustive]`, so
//! another crate cannot build them with a struct literal; their fields are public, though, so
//! each is built by cloning a template (made once from its serde form) and assigning every
//! field.

use std::collections::{BTreeSet, HashMap};
use std::str::FromStr;
use std::sync::OnceLock;

use ff_core::{
    AttemptOutcome, AttemptRecord, Capability, ClaimedExecution, DependencyGroup, EdgeKind,
    EngineError, ExecutionId, ExecutionSnapshot, ExecutionStatus, Failure, Fence, FlowCounts,
    FlowEdge, FlowId, FlowMember, FlowSnapshot, FlowState, GroupPolicy, GroupSnapshot,
    GroupVerdict, Lane, LeaseId, LeaseInfo, NodeKey, OnSatisfied, Partition, Timestamp,
    UpstreamInput, WorkerId,
};
use serde_json::json;
use uuid::Uuid;

use crate::encode;
use crate::reply::{Fields, parse_reason, parse_state};

fn template<T: serde::de::DeserializeOwned>(value: serde_json::Value, what: &str) -> T {
    serde_json::from_value(value)
        .unwrap_or_else(|e| panic!("the {what} template must match ff-core's serde form: {e}"))
}

fn claimed_template() -> &'static ClaimedExecution {
    static T: OnceLock<ClaimedExecution> = OnceLock::new();
    T.get_or_init(|| {
        template(
            json!({
                "fence": {
                    "execution_id": "{fp:0}:00000000-0000-0000-0000-000000000000",
                    "lease_id": "00000000-0000-0000-0000-000000000000",
                    "epoch": 0
                },
                "attempt": 0, "lane": "l", "priority": 0, "payload": [], "inputs": [],
                "flow_id": null, "node_key": null, "lease_expires_at": 0,
                "attempt_deadline": null, "deadline": null
            }),
            "ClaimedExecution",
        )
    })
}

fn snapshot_template() -> &'static ExecutionSnapshot {
    static T: OnceLock<ExecutionSnapshot> = OnceLock::new();
    T.get_or_init(|| {
        template(
            json!({
                "id": "{fp:0}:00000000-0000-0000-0000-000000000000",
                "flow": null,
                "status": {"state": "ready", "epoch": 0, "attempt": 0, "end_reason": null},
                "lane": "l", "priority": 0, "required_capabilities": [], "payload": [],
                "retry": {"max_attempts": 1, "backoff": {"fixed": {"secs": 0, "nanos": 0}}},
                "created_at": 0, "available_at": null, "deadline": null, "lease": null,
                "progress": null, "result": null, "finished_at": null, "attempts": []
            }),
            "ExecutionSnapshot",
        )
    })
}

fn flow_template() -> &'static FlowSnapshot {
    static T: OnceLock<FlowSnapshot> = OnceLock::new();
    T.get_or_init(|| {
        template(
            json!({
                "id": "00000000-0000-0000-0000-000000000000",
                "state": "running", "cancel_requested": false,
                "counts": {"total": 0, "terminal": 0, "failing": 0},
                "created_at": 0, "finished_at": null,
                "members": [], "edges": [], "groups": []
            }),
            "FlowSnapshot",
        )
    })
}

fn corrupt(what: impl std::fmt::Display) -> EngineError {
    EngineError::Corrupt(what.to_string())
}

fn uuid(s: &str) -> Result<Uuid, EngineError> {
    Uuid::try_parse(s).map_err(|_| corrupt(format!("stored id {s:?} is not a UUID")))
}

fn ts(i: i64) -> Option<Timestamp> {
    u64::try_from(i).ok().map(Timestamp::from_millis)
}

fn num<T: FromStr>(s: &str, what: &str) -> Result<T, EngineError> {
    s.parse()
        .map_err(|_| corrupt(format!("stored {what} {s:?} is malformed")))
}

/// One claimed execution: `{u, epoch, lease, attempt, lane, priority, payload, inputs, flow,
/// node_key, lease_expires_at, attempt_deadline, deadline}`.
pub(crate) fn claimed(
    partition: Partition,
    mut f: Fields,
) -> Result<ClaimedExecution, EngineError> {
    let id = ExecutionId::from_parts(partition, uuid(&f.string()?)?);
    let epoch = f.u64()?;
    let lease_id = LeaseId::from_uuid(uuid(&f.string()?)?);
    let attempt = u32::try_from(f.u64()?).map_err(|_| corrupt("attempt overflow"))?;
    let lane = Lane::new(f.string()?)?;
    let priority = i32::try_from(f.int()?).map_err(|_| corrupt("priority overflow"))?;
    let payload = f.bytes()?;
    let mut inputs = Vec::new();
    let mut raw_inputs = f.array()?;
    while raw_inputs.remaining() > 0 {
        let mut input = raw_inputs.array()?;
        let node_key = NodeKey::new(input.string()?)?;
        let execution_id = ExecutionId::from_parts(partition, uuid(&input.string()?)?);
        let has = input.int()? == 1;
        let value = input.bytes()?;
        inputs.push(UpstreamInput {
            node_key,
            execution_id,
            result: has.then_some(value),
        });
    }
    let flow = f.string()?;
    let node_key = f.string()?;
    let lease_expires_at = ts(f.int()?).ok_or_else(|| corrupt("negative lease expiry"))?;
    let attempt_deadline = ts(f.int()?);
    let deadline = ts(f.int()?);
    let mut c = claimed_template().clone();
    c.fence = Fence {
        execution_id: id,
        lease_id,
        epoch,
    };
    c.attempt = attempt;
    c.lane = lane;
    c.priority = priority;
    c.payload = payload;
    c.inputs = inputs;
    c.flow_id = if flow.is_empty() {
        None
    } else {
        Some(FlowId::from_uuid(uuid(&flow)?))
    };
    c.node_key = if node_key.is_empty() {
        None
    } else {
        Some(NodeKey::new(node_key)?)
    };
    c.lease_expires_at = lease_expires_at;
    c.attempt_deadline = attempt_deadline;
    c.deadline = deadline;
    Ok(c)
}

/// A list of claimed executions.
pub(crate) fn claimed_list(
    partition: Partition,
    mut f: Fields,
) -> Result<Vec<ClaimedExecution>, EngineError> {
    let mut out = Vec::with_capacity(f.remaining());
    while f.remaining() > 0 {
        out.push(claimed(partition, f.array()?)?);
    }
    Ok(out)
}

/// `describe`: `{hash pairs, {payload, result, progress}, archived attempts}`.
pub(crate) fn snapshot(id: ExecutionId, mut f: Fields) -> Result<ExecutionSnapshot, EngineError> {
    let mut pairs = f.array()?;
    let mut h: HashMap<String, String> = HashMap::new();
    while pairs.remaining() > 0 {
        let k = pairs.string()?;
        // Inline blobs may hold any bytes; the blobs come decoded below.
        let v = String::from_utf8_lossy(&pairs.bytes()?).into_owned();
        h.insert(k, v);
    }
    let mut blobs = f.array()?;
    let mut blob = || -> Result<Option<Vec<u8>>, EngineError> {
        let mut b = blobs.array()?;
        let has = b.int()? == 1;
        let v = b.bytes()?;
        Ok(has.then_some(v))
    };
    let payload = blob()?.unwrap_or_default();
    let result = blob()?;
    let progress = blob()?;
    let get = |k: &str| h.get(k).map(String::as_str);
    let need =
        |k: &str| get(k).ok_or_else(|| corrupt(format!("execution {id} has no field {k:?}")));
    let state = parse_state(need("st")?)?;
    let status = ExecutionStatus {
        state,
        epoch: num(need("ep")?, "epoch")?,
        attempt: num(need("at")?, "attempt")?,
        end_reason: get("er").map(parse_reason).transpose()?,
    };
    let opt_ts = |k: &str| -> Result<Option<Timestamp>, EngineError> {
        get(k)
            .map(|v| num::<u64>(v, k).map(Timestamp::from_millis))
            .transpose()
    };
    let mut attempts = Vec::new();
    let mut archived = f.array()?;
    while archived.remaining() > 0 {
        let text = archived.string()?;
        attempts.push(archived_attempt(&text)?);
    }
    let attempt_count: u32 = status.attempt;
    if attempt_count > 0 {
        let failure = get("fm").map(|m| Failure {
            message: m.to_string(),
            retryable: get("fr") == Some("1"),
        });
        attempts.push(AttemptRecord {
            number: attempt_count,
            worker: WorkerId::new(need("wk")?)?,
            lease_id: LeaseId::from_uuid(uuid(need("li")?)?),
            epoch: num(need("ax")?, "attempt epoch")?,
            started_at: Timestamp::from_millis(num(need("as")?, "attempt start")?),
            ended_at: opt_ts("an")?,
            outcome: get("ao")
                .map(|o| {
                    AttemptOutcome::from_str(o)
                        .map_err(|_| corrupt(format!("unknown attempt outcome {o:?}")))
                })
                .transpose()?,
            failure,
        });
    }
    let lease = if state == ff_core::ExecutionState::Running {
        Some(LeaseInfo {
            lease_id: LeaseId::from_uuid(uuid(need("li")?)?),
            worker: WorkerId::new(need("wk")?)?,
            expires_at: Timestamp::from_millis(num(need("le")?, "lease expiry")?),
        })
    } else {
        None
    };
    let flow = match (get("fl"), get("nk")) {
        (Some(fl), Some(nk)) => Some((FlowId::from_uuid(uuid(fl)?), NodeKey::new(nk)?)),
        _ => None,
    };
    let mut caps = BTreeSet::new();
    if let Some(cp) = get("cp") {
        for cap in cp.split(',').filter(|c| !c.is_empty()) {
            caps.insert(Capability::new(cap)?);
        }
    }
    let mut s = snapshot_template().clone();
    s.id = id;
    s.flow = flow;
    s.status = status;
    s.lane = Lane::new(need("ln")?)?;
    s.priority = num(need("pr")?, "priority")?;
    s.required_capabilities = caps;
    s.payload = payload;
    s.retry = encode::retry_policy(need("ma")?, need("bk")?)?;
    s.created_at = Timestamp::from_millis(num(need("ca")?, "created_at")?);
    s.available_at = if state == ff_core::ExecutionState::Delayed {
        opt_ts("aa")?
    } else {
        None
    };
    s.deadline = opt_ts("dl")?;
    s.lease = lease;
    s.progress = progress;
    s.result = result;
    s.finished_at = opt_ts("fa")?;
    s.attempts = attempts;
    Ok(s)
}

fn archived_attempt(text: &str) -> Result<AttemptRecord, EngineError> {
    let v: serde_json::Value = serde_json::from_str(text)
        .map_err(|e| corrupt(format!("archived attempt {text:?}: {e}")))?;
    let s = |k: &str| v.get(k).and_then(|x| x.as_str()).unwrap_or_default();
    let i = |k: &str| v.get(k).and_then(serde_json::Value::as_f64).unwrap_or(-1.0);
    let to_u64 = |x: f64| -> Option<u64> { (x >= 0.0).then_some(x as u64) };
    let outcome = s("o");
    let failure = v.get("m").and_then(|m| m.as_str()).map(|m| Failure {
        message: m.to_string(),
        retryable: v.get("r").and_then(|r| r.as_str()) == Some("1"),
    });
    Ok(AttemptRecord {
        number: to_u64(i("n"))
            .and_then(|n| u32::try_from(n).ok())
            .unwrap_or(0),
        worker: WorkerId::new(s("w"))?,
        lease_id: LeaseId::from_uuid(uuid(s("l"))?),
        epoch: to_u64(i("e")).unwrap_or(0),
        started_at: Timestamp::from_millis(to_u64(i("s")).unwrap_or(0)),
        ended_at: to_u64(i("t")).map(Timestamp::from_millis),
        outcome: if outcome.is_empty() {
            None
        } else {
            Some(
                AttemptOutcome::from_str(outcome)
                    .map_err(|_| corrupt(format!("unknown attempt outcome {outcome:?}")))?,
            )
        },
        failure,
    })
}

fn group(gp: &str, gk: &str, gs: &str) -> Result<DependencyGroup, EngineError> {
    let policy = match gp {
        "a" => GroupPolicy::AllOf,
        "y" => GroupPolicy::AnyOf,
        "q" => GroupPolicy::Quorum(num(gk, "quorum")?),
        other => return Err(corrupt(format!("unknown group policy {other:?}"))),
    };
    let on_satisfied = if gs == "c" {
        OnSatisfied::CancelRemaining
    } else {
        OnSatisfied::LetRun
    };
    Ok(DependencyGroup {
        policy,
        on_satisfied,
    })
}

/// `describe_flow`: `{flow fields, members, edges}`.
pub(crate) fn flow_snapshot(
    id: FlowId,
    partition: Partition,
    mut f: Fields,
) -> Result<FlowSnapshot, EngineError> {
    let mut fv = f.array()?;
    let st = fv.string()?;
    let cr = fv.string()?;
    let tt = fv.string()?;
    let tm = fv.string()?;
    let fg = fv.string()?;
    let ca = fv.string()?;
    let fa = fv.string()?;
    let mut members = Vec::new();
    let mut groups = Vec::new();
    let mut raw = f.array()?;
    while raw.remaining() > 0 {
        let mut m = raw.array()?;
        let u = m.string()?;
        let key = NodeKey::new(m.string()?)?;
        let state = parse_state(&m.string()?)?;
        let er = m.string()?;
        let gp = m.string()?;
        let gk = m.string()?;
        let gs = m.string()?;
        let gi = m.string()?;
        let gn = m.string()?;
        let gu = m.string()?;
        let gv = m.string()?;
        members.push((
            u,
            FlowMember {
                key: key.clone(),
                execution_id: ExecutionId::from_parts(partition, Uuid::nil()),
                state,
                end_reason: if er.is_empty() {
                    None
                } else {
                    Some(parse_reason(&er)?)
                },
            },
        ));
        if !gp.is_empty() {
            groups.push(GroupSnapshot {
                node: key,
                group: group(&gp, &gk, &gs)?,
                incoming: num(&gi, "incoming")?,
                satisfied: num(&gn, "satisfied")?,
                unsatisfied: num(&gu, "unsatisfied")?,
                verdict: match gv.as_str() {
                    "s" => GroupVerdict::Satisfied,
                    "i" => GroupVerdict::Impossible,
                    _ => GroupVerdict::Pending,
                },
            });
        }
    }
    let mut edges = Vec::new();
    let mut raw = f.array()?;
    while raw.remaining() > 0 {
        let mut e = raw.array()?;
        let rec = e.string()?;
        let applied = e.string()? == "1";
        let parts: Vec<&str> = rec.split('|').collect();
        let [from, to, kind, pass] = parts.as_slice() else {
            return Err(corrupt(format!("stored edge {rec:?} is malformed")));
        };
        let key_of = |i: &str| -> Result<NodeKey, EngineError> {
            let i: usize = num(i, "edge end")?;
            members
                .get(i)
                .map(|(_, m)| m.key.clone())
                .ok_or_else(|| corrupt(format!("edge {rec:?} names member {i}")))
        };
        edges.push(FlowEdge {
            from: key_of(from)?,
            to: key_of(to)?,
            kind: if *kind == "a" {
                EdgeKind::Always
            } else {
                EdgeKind::Success
            },
            pass_result: *pass == "1",
            applied,
        });
    }
    let mut s = flow_template().clone();
    s.id = id;
    s.state = FlowState::from_str(&st).map_err(|_| corrupt(format!("flow state {st:?}")))?;
    s.cancel_requested = cr == "1";
    s.counts = FlowCounts {
        total: num(&tt, "total")?,
        terminal: num(&tm, "terminal")?,
        failing: num(&fg, "failing")?,
    };
    s.created_at = Timestamp::from_millis(num(&ca, "created_at")?);
    s.finished_at = if fa.is_empty() {
        None
    } else {
        Some(Timestamp::from_millis(num(&fa, "finished_at")?))
    };
    s.edges = edges;
    s.groups = groups;
    s.members = members
        .into_iter()
        .map(|(u, mut m)| {
            m.execution_id = ExecutionId::from_parts(partition, uuid(&u)?);
            Ok(m)
        })
        .collect::<Result<_, EngineError>>()?;
    Ok(s)
}
