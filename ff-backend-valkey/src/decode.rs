//! Building ff-core's result types from the library's replies.
//!
//! The execution hash leaves fields at their default unwritten (epoch and attempt 0, priority
//! 0, the default retry policy, no attempt epoch distinct from the current one): absent fields
//! decode to those defaults.

use std::collections::{BTreeSet, HashMap};
use std::str::FromStr;

use ff_core::{
    AttemptOutcome, AttemptRecord, Capability, ClaimedExecution, DependencyGroup, EdgeKind,
    EngineError, ExecutionId, ExecutionSnapshot, ExecutionStatus, Failure, Fence, FlowCounts,
    FlowEdge, FlowId, FlowMember, FlowSnapshot, FlowState, GroupPolicy, GroupSnapshot,
    GroupVerdict, Lane, LeaseId, LeaseInfo, NodeKey, OnSatisfied, Partition, Timestamp,
    UpstreamInput, WorkerId,
};
use uuid::Uuid;

use crate::encode;
use crate::reply::{Fields, parse_reason, parse_state, parse_uuid as uuid};

fn corrupt(what: impl std::fmt::Display) -> EngineError {
    EngineError::Corrupt(what.to_string())
}

fn ts(i: i64) -> Option<Timestamp> {
    u64::try_from(i).ok().map(Timestamp::from_millis)
}

fn num<T: FromStr>(s: &str, what: &str) -> Result<T, EngineError> {
    s.parse()
        .map_err(|_| corrupt(format!("stored {what} {s:?} is malformed")))
}

/// The lease id of the `i`-th execution (from 0) one claim call leased: `base` (sent with the
/// call) with `i` added to its last 32 bits, as the library's `lease_id` derives it.
pub(crate) fn lease_id(base: Uuid, i: u32) -> LeaseId {
    let bits = base.as_u128();
    let low = (bits as u32).wrapping_add(i);
    LeaseId::from_uuid(Uuid::from_u128((bits & !0xffff_ffff) | u128::from(low)))
}

/// Flags of a claimed record: which optional values follow its fixed part.
const HAS_ATTEMPT_DEADLINE: i64 = 1;
const HAS_DEADLINE: i64 = 2;
const IS_MEMBER: i64 = 4;
const HAS_INPUTS: i64 = 8;
const HAS_PRIORITY: i64 = 16;

/// Reads the executions of a claim block from `f` (what follows its header, which on a
/// standalone server is `stay` and on a cluster `ready_left, next_delayed`): `count,
/// lease_expires_at` and `count` records `partition, uuid, epoch, attempt, payload, flags`, each
/// followed by what its flags announce, in this order: priority, attempt deadline, deadline,
/// flow and node key, inputs (their count, then node key, execution, has-result and result
/// each). Every execution was leased for `lane` with a lease id derived from `base`;
/// `partition` maps a partition number to a partition (checked against the deployment's).
pub(crate) fn claimed(
    f: &mut Fields,
    base: Uuid,
    lane: &Lane,
    partition: impl Fn(&str) -> Result<Partition, EngineError>,
) -> Result<Vec<ClaimedExecution>, EngineError> {
    let count = u32::try_from(f.u64()?).map_err(|_| corrupt("claimed count overflow"))?;
    let lease_expires_at = ts(f.int()?).ok_or_else(|| corrupt("negative lease expiry"))?;
    let mut claimed = Vec::with_capacity(count as usize);
    for i in 0..count {
        let p = partition(&f.string()?)?;
        let id = ExecutionId::from_parts(p, f.uuid()?);
        let epoch = f.u64()?;
        let attempt = u32::try_from(f.u64()?).map_err(|_| corrupt("attempt overflow"))?;
        let payload = f.bytes()?;
        let flags = f.int()?;
        let priority = if flags & HAS_PRIORITY != 0 {
            i32::try_from(f.int()?).map_err(|_| corrupt("priority overflow"))?
        } else {
            0
        };
        let attempt_deadline = if flags & HAS_ATTEMPT_DEADLINE != 0 {
            ts(f.int()?)
        } else {
            None
        };
        let deadline = if flags & HAS_DEADLINE != 0 {
            ts(f.int()?)
        } else {
            None
        };
        let (flow_id, node_key) = if flags & IS_MEMBER != 0 {
            let flow = FlowId::from_uuid(f.uuid()?);
            let key = f.string()?;
            (
                Some(flow),
                (!key.is_empty()).then(|| NodeKey::new(key)).transpose()?,
            )
        } else {
            (None, None)
        };
        let mut inputs = Vec::new();
        if flags & HAS_INPUTS != 0 {
            for _ in 0..f.u64()? {
                let node_key = NodeKey::new(f.string()?)?;
                let execution_id = ExecutionId::from_parts(p, f.uuid()?);
                let has = f.int()? == 1;
                let value = f.bytes()?;
                inputs.push(UpstreamInput {
                    node_key,
                    execution_id,
                    result: has.then_some(value),
                });
            }
        }
        claimed.push(ClaimedExecution {
            fence: Fence {
                execution_id: id,
                lease_id: lease_id(base, i),
                epoch,
            },
            attempt,
            lane: lane.clone(),
            priority,
            payload,
            inputs,
            flow_id,
            node_key,
            lease_expires_at,
            attempt_deadline,
            deadline,
        });
    }
    Ok(claimed)
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
    // Epoch, attempt count and priority are not written while 0.
    let or_zero = |k: &str| get(k).unwrap_or("0");
    let state = parse_state(need("st")?)?;
    let status = ExecutionStatus {
        state,
        epoch: num(or_zero("ep"), "epoch")?,
        attempt: num(or_zero("at"), "attempt")?,
        end_reason: match get("er") {
            Some(er) => Some(parse_reason(er)?),
            None => implied_end_reason(state),
        },
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
        // An attempt that ended with its execution has no `an` (the finish time is its end),
        // and no `ao` when it succeeded (the state says so).
        let outcome = match get("ao") {
            Some(o) => Some(
                AttemptOutcome::from_str(o)
                    .map_err(|_| corrupt(format!("unknown attempt outcome {o:?}")))?,
            ),
            None if state == ff_core::ExecutionState::Succeeded => Some(AttemptOutcome::Succeeded),
            None => None,
        };
        let ended_at = match opt_ts("an")? {
            Some(at) => Some(at),
            None if outcome.is_some() => opt_ts("fa")?,
            None => None,
        };
        let failure = get("fm").map(|m| Failure {
            message: m.to_string(),
            retryable: get("fr") == Some("1"),
        });
        attempts.push(AttemptRecord {
            number: attempt_count,
            worker: WorkerId::new(need("wk")?)?,
            lease_id: LeaseId::from_uuid(uuid(need("li")?)?),
            // `ax` is written only once the epoch moved past the attempt's.
            epoch: match get("ax") {
                Some(ax) => num(ax, "attempt epoch")?,
                None => status.epoch,
            },
            started_at: Timestamp::from_millis(num(need("as")?, "attempt start")?),
            ended_at,
            outcome,
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
    Ok(ExecutionSnapshot {
        id,
        flow,
        status,
        lane: Lane::new(need("ln")?)?,
        priority: num(or_zero("pr"), "priority")?,
        required_capabilities: caps,
        payload,
        retry: encode::parse_retry_policy(get("rp"))?,
        created_at: Timestamp::from_millis(num(need("ca")?, "created_at")?),
        available_at: if state == ff_core::ExecutionState::Delayed {
            opt_ts("aa")?
        } else {
            None
        },
        deadline: opt_ts("dl")?,
        lease,
        progress,
        result,
        finished_at: opt_ts("fa")?,
        attempts,
    })
}

/// The end reason a final state implies (the library stores `er` only for failed and cancelled
/// executions).
fn implied_end_reason(state: ff_core::ExecutionState) -> Option<ff_core::EndReason> {
    match state {
        ff_core::ExecutionState::Succeeded => Some(ff_core::EndReason::Completed),
        ff_core::ExecutionState::Expired => Some(ff_core::EndReason::DeadlineExceeded),
        ff_core::ExecutionState::Skipped => Some(ff_core::EndReason::DependencyImpossible),
        _ => None,
    }
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
        members.push(FlowMember {
            key: key.clone(),
            execution_id: ExecutionId::from_parts(partition, uuid(&u)?),
            state,
            end_reason: if er.is_empty() {
                None
            } else {
                Some(parse_reason(&er)?)
            },
        });
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
                .map(|m| m.key.clone())
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
    Ok(FlowSnapshot {
        id,
        state: FlowState::from_str(&st).map_err(|_| corrupt(format!("flow state {st:?}")))?,
        cancel_requested: cr == "1",
        counts: FlowCounts {
            total: num(&tt, "total")?,
            terminal: num(&tm, "terminal")?,
            failing: num(&fg, "failing")?,
        },
        created_at: Timestamp::from_millis(num(&ca, "created_at")?),
        finished_at: if fa.is_empty() {
            None
        } else {
            Some(Timestamp::from_millis(num(&fa, "finished_at")?))
        },
        members,
        edges,
        groups,
    })
}
