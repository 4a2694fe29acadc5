//! `create_flow` and `add_nodes`: the graph is validated in Rust ([`FlowSpec::validate`],
//! [`FlowPatch::validate`]) and then written by one call to `ff_insert_graph`, which bulk
//! inserts every node and edge from arrays (`unnest`) in one transaction — no statement per
//! node, and no node claimable before its edges exist.

use std::collections::{BTreeMap, HashMap};

use ff_core::flow::GraphShape;
use ff_core::{
    Conflict, CreatedFlow, EdgeSpec, EngineError, EntityKind, ExecutionId, FlowId, FlowPatch,
    FlowSpec, FlowState, GroupPolicy, NodeKey, NodeSpec, OnSatisfied,
};
use tokio_postgres::types::ToSql;
use uuid::Uuid;

use crate::backend::{PostgresBackend, ms, part};
use crate::reply;

/// Column arrays of the nodes and edges of one call.
struct Arrays<'a> {
    ids: Vec<Uuid>,
    keys: Vec<&'a str>,
    lanes: Vec<&'a str>,
    priorities: Vec<i32>,
    caps: Vec<String>,
    payloads: Vec<&'a [u8]>,
    max_attempts: Vec<i32>,
    retry: Vec<Option<String>>,
    delay: Vec<i64>,
    timeout: Vec<Option<i64>>,
    deadline: Vec<Option<i64>>,
    policy: Vec<&'static str>,
    need: Vec<i32>,
    cancel_remaining: Vec<bool>,
    incoming: Vec<i32>,
    out_degree: Vec<i32>,
    has_inputs: Vec<bool>,
    e_from: Vec<&'a str>,
    e_to: Vec<&'a str>,
    e_kind: Vec<&'static str>,
    e_pass: Vec<bool>,
}

fn arrays<'a>(
    backend: &PostgresBackend,
    flow: &FlowId,
    nodes: &'a [NodeSpec],
    edges: &'a [EdgeSpec],
    shape: &GraphShape,
) -> Result<Arrays<'a>, EngineError> {
    let config = backend.partitions();
    let mut out_degree: HashMap<&NodeKey, i32> = HashMap::new();
    let mut has_inputs: HashMap<&NodeKey, bool> = HashMap::new();
    for edge in edges {
        *out_degree.entry(&edge.from).or_default() += 1;
        if edge.pass_result {
            has_inputs.insert(&edge.to, true);
        }
    }
    let mut a = Arrays {
        ids: Vec::with_capacity(nodes.len()),
        keys: Vec::with_capacity(nodes.len()),
        lanes: Vec::with_capacity(nodes.len()),
        priorities: Vec::with_capacity(nodes.len()),
        caps: Vec::with_capacity(nodes.len()),
        payloads: Vec::with_capacity(nodes.len()),
        max_attempts: Vec::with_capacity(nodes.len()),
        retry: Vec::with_capacity(nodes.len()),
        delay: Vec::with_capacity(nodes.len()),
        timeout: Vec::with_capacity(nodes.len()),
        deadline: Vec::with_capacity(nodes.len()),
        policy: Vec::with_capacity(nodes.len()),
        need: Vec::with_capacity(nodes.len()),
        cancel_remaining: Vec::with_capacity(nodes.len()),
        incoming: Vec::with_capacity(nodes.len()),
        out_degree: Vec::with_capacity(nodes.len()),
        has_inputs: Vec::with_capacity(nodes.len()),
        e_from: edges.iter().map(|e| e.from.as_str()).collect(),
        e_to: edges.iter().map(|e| e.to.as_str()).collect(),
        e_kind: edges.iter().map(|e| e.kind.as_str()).collect(),
        e_pass: edges.iter().map(|e| e.pass_result).collect(),
    };
    for (node, &incoming) in nodes.iter().zip(&shape.incoming) {
        let spec = &node.spec;
        // Time-ordered (v7) like standalone ids, on the flow's partition (see
        // `backend::new_standalone_id`).
        a.ids
            .push(ExecutionId::from_parts(flow.partition(&config), Uuid::now_v7()).uuid());
        a.keys.push(node.key.as_str());
        a.lanes.push(spec.lane.as_str());
        a.priorities.push(spec.priority);
        a.caps.push(
            spec.required_capabilities
                .iter()
                .map(|c| c.as_str())
                .collect::<Vec<_>>()
                .join(","),
        );
        a.payloads.push(&spec.payload);
        a.max_attempts
            .push(i32::try_from(spec.retry.max_attempts).unwrap_or(i32::MAX));
        a.retry.push(crate::backend::stored_retry(&spec.retry)?);
        a.delay.push(ms(spec.delay));
        a.timeout.push(spec.attempt_timeout.map(ms));
        a.deadline.push(spec.deadline.map(ms));
        a.policy.push(match node.group.policy {
            GroupPolicy::AllOf => "all_of",
            GroupPolicy::AnyOf => "any_of",
            GroupPolicy::Quorum(_) => "quorum",
        });
        a.need
            .push(i32::try_from(node.group.policy.required(incoming)).unwrap_or(i32::MAX));
        a.cancel_remaining
            .push(node.group.on_satisfied == OnSatisfied::CancelRemaining);
        a.incoming.push(i32::try_from(incoming).unwrap_or(i32::MAX));
        a.out_degree
            .push(out_degree.get(&node.key).copied().unwrap_or(0));
        a.has_inputs
            .push(has_inputs.get(&node.key).copied().unwrap_or(false));
    }
    Ok(a)
}

async fn insert(
    backend: &PostgresBackend,
    flow: &FlowId,
    patch: bool,
    a: &Arrays<'_>,
) -> Result<Vec<tokio_postgres::Row>, EngineError> {
    let partition = flow.partition(&backend.partitions());
    let params: [&(dyn ToSql + Sync); 26] = [
        &flow.uuid(),
        &part(partition),
        &patch,
        &backend.offset(),
        &backend.inline_limit(),
        &a.ids,
        &a.keys,
        &a.lanes,
        &a.priorities,
        &a.caps,
        &a.payloads,
        &a.max_attempts,
        &a.retry,
        &a.delay,
        &a.timeout,
        &a.deadline,
        &a.policy,
        &a.need,
        &a.cancel_remaining,
        &a.incoming,
        &a.out_degree,
        &a.has_inputs,
        &a.e_from,
        &a.e_to,
        &a.e_kind,
        &a.e_pass,
    ];
    backend
        .db()
        .query(
            "SELECT * FROM ff_insert_graph($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13,
                 $14, $15, $16, $17, $18, $19, $20, $21, $22, $23, $24, $25, $26)",
            &params,
        )
        .await
}

/// Reads the `(code, key, id)` rows of `ff_insert_graph`.
fn created(
    backend: &PostgresBackend,
    flow: &FlowId,
    rows: &[tokio_postgres::Row],
) -> Result<CreatedFlow, EngineError> {
    let partition = part(flow.partition(&backend.partitions()));
    let mut nodes = BTreeMap::new();
    let mut created = true;
    for row in rows {
        let code: &str = reply::get(row, 0)?;
        let key: Option<String> = reply::get(row, 1)?;
        let key = key.unwrap_or_default();
        match code {
            "created" | "exists" => {
                created = code == "created";
                let id: Uuid = reply::get(row, 2)?;
                nodes.insert(
                    NodeKey::new(key).map_err(reply::corrupt)?,
                    reply::exec_id(partition, id)?,
                );
            }
            "flow_not_found" => return Err(EngineError::flow_not_found(flow)),
            "duplicate_node" => {
                return Err(EngineError::Conflict(Conflict::DuplicateNode {
                    key: NodeKey::new(key).map_err(reply::corrupt)?,
                }));
            }
            "node_not_found" => {
                return Err(EngineError::NotFound {
                    kind: EntityKind::Node,
                    id: key,
                });
            }
            "flow_not_open" => {
                let (state, cancel) = key.split_once(':').unwrap_or((&key, "false"));
                return Err(EngineError::Conflict(Conflict::FlowNotOpen {
                    flow_id: *flow,
                    state: state.parse::<FlowState>().map_err(reply::corrupt)?,
                    cancel_requested: cancel == "true",
                }));
            }
            other => return Err(reply::corrupt(format!("unexpected graph reply {other:?}"))),
        }
    }
    Ok(CreatedFlow {
        flow_id: *flow,
        created,
        nodes,
    })
}

/// `create_flow`.
pub(crate) async fn create_flow(
    backend: &PostgresBackend,
    spec: &FlowSpec,
) -> Result<CreatedFlow, EngineError> {
    let shape = spec.validate()?;
    let a = arrays(backend, &spec.id, &spec.nodes, &spec.edges, &shape)?;
    let rows = insert(backend, &spec.id, false, &a).await?;
    created(backend, &spec.id, &rows)
}

/// `add_nodes`.
pub(crate) async fn add_nodes(
    backend: &PostgresBackend,
    flow: &FlowId,
    patch: &FlowPatch,
) -> Result<CreatedFlow, EngineError> {
    let shape = patch.validate()?;
    let a = arrays(backend, flow, &patch.nodes, &patch.edges, &shape)?;
    let rows = insert(backend, flow, true, &a).await?;
    created(backend, flow, &rows)
}
