//! The model-based case: random graphs and random operation sequences, applied to the backend
//! and to [`FlowModel`], compared after every step.
//!
//! Generation and shrinking use proptest's strategies and value trees, driven here by hand so
//! every generated scenario runs on the shared tokio runtime against a fresh backend. A failure
//! is shrunk to a minimal scenario, printed with its graph and its operations.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::Duration;

use proptest::collection::vec;
use proptest::prelude::{Just, Strategy, any, prop_oneof};
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, RngSeed, TestRunner};

use crate::error::{EngineError, FenceReason};
use crate::execution::{
    ClaimRequest, CompleteRequest, ExecutionSpec, FailDisposition, FailRequest, Failure, Fence,
};
use crate::flow::{
    CancelFlowMode, DependencyGroup, EdgeKind, EdgeSpec, FlowSpec, GroupPolicy, NodeSpec,
    OnSatisfied,
};
use crate::id::{ExecutionId, Lane, NodeKey};
use crate::policy::RetryPolicy;
use crate::scan::ScanKind;
use crate::state::ExecutionState;
use crate::time::Timestamp;

use super::check::{CaseError, CaseResult, ensure};
use super::context::{FlowHandle, TestContext};
use super::model::{
    CancelOutcomeModel, EdgeParams, FlowModel, Graph, LEASE_TTL_MS, NodeParams, WriteExpectation,
};

/// Scenarios per run unless `FF_PROPTEST_CASES` says otherwise.
const DEFAULT_CASES: u32 = 32;
/// Most scenarios tried while shrinking a failure.
const MAX_SHRINK_RUNS: u32 = 2_000;
/// Largest generated graph.
const MAX_NODES: usize = 30;
/// Longest generated operation sequence.
const MAX_OPS: usize = 40;

/// One step of a scenario. `pick` selects among the candidates at the time of the step
/// (running members for complete/fail, all members for cancel), modulo their number.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Op {
    ClaimAll,
    Complete {
        pick: usize,
        with_result: bool,
    },
    Fail {
        pick: usize,
        retryable: bool,
    },
    Cancel {
        pick: usize,
    },
    CancelFlow(CancelFlowMode),
    /// Advance the clock by this many ms, then run the delayed promoter.
    Advance(u64),
    /// Advance past every lease, run the lease-expiry scanner, then the delayed promoter.
    ExpireLeases,
}

#[derive(Clone, Debug)]
struct Scenario {
    graph: Graph,
    ops: Vec<Op>,
}

impl fmt::Display for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.graph)?;
        writeln!(f, "operations:")?;
        for (i, op) in self.ops.iter().enumerate() {
            writeln!(f, "  {i}: {op:?}")?;
        }
        Ok(())
    }
}

/// Raw node parameters before they are fitted to the node's incoming edges.
type RawNode = (u8, u32, bool, u32, u64, u64);
/// Raw edge parameters: always, pass_result.
type RawEdge = (bool, bool);

fn node_strategy() -> impl Strategy<Value = RawNode> {
    (
        0u8..3,
        0u32..8,
        any::<bool>(),
        1u32..=3,
        prop_oneof![Just(15u64), Just(35u64)],
        prop_oneof![3 => Just(0u64), 1 => Just(25u64)],
    )
}

fn edge_strategy() -> impl Strategy<Value = RawEdge> {
    (proptest::bool::weighted(0.2), any::<bool>())
}

fn chain(n: usize) -> Vec<(usize, usize)> {
    (1..n).map(|i| (i - 1, i)).collect()
}

fn fan_out_in(k: usize) -> Vec<(usize, usize)> {
    let sink = k + 1;
    (1..=k).flat_map(|i| [(0, i), (i, sink)]).collect()
}

/// Normalizes random pairs into a DAG: `from < to`, no self-edges, no duplicates.
fn random_dag(raw: Vec<(usize, usize)>) -> Vec<(usize, usize)> {
    let mut seen = BTreeSet::new();
    raw.into_iter()
        .filter(|(a, b)| a != b)
        .map(|(a, b)| (a.min(b), a.max(b)))
        .filter(|pair| seen.insert(*pair))
        .collect()
}

/// A shape: node count and edges. Random DAGs draw their pairs from the full index range and
/// fold them into the node count, so no strategy depends on another's value (shrinking works
/// on each part alone instead of regenerating).
fn shape_strategy() -> impl Strategy<Value = (usize, Vec<(usize, usize)>)> {
    prop_oneof![
        (1usize..=12).prop_map(|n| (n, chain(n))),
        Just((4usize, vec![(0, 1), (0, 2), (1, 3), (2, 3)])),
        (1usize..=12).prop_map(|k| (k + 2, fan_out_in(k))),
        (
            2usize..=MAX_NODES,
            vec((0..MAX_NODES, 0..MAX_NODES), 0..=2 * MAX_NODES)
        )
            .prop_map(|(n, raw)| (
                n,
                random_dag(raw.into_iter().map(|(a, b)| (a % n, b % n)).collect())
            )),
    ]
}

/// Fits raw parameters to the shape. `CancelRemaining` is kept only on nodes whose upstreams
/// are all roots: a root is never blocked, so who such a group cancels does not depend on
/// the order in which one call's completions cascade.
fn build_graph(
    n: usize,
    pairs: Vec<(usize, usize)>,
    nodes: Vec<RawNode>,
    edges: Vec<RawEdge>,
) -> Graph {
    let edges: Vec<EdgeParams> = pairs
        .iter()
        .zip(edges)
        .map(|(&(from, to), (always, pass_result))| EdgeParams {
            from,
            to,
            kind: if always {
                EdgeKind::Always
            } else {
                EdgeKind::Success
            },
            pass_result,
        })
        .collect();
    let is_root = |i: usize| !edges.iter().any(|e| e.to == i);
    let nodes = nodes
        .into_iter()
        .take(n)
        .enumerate()
        .map(
            |(i, (kind, k, cancel_remaining, max_attempts, backoff_ms, delay_ms))| {
                let upstreams: Vec<usize> =
                    edges.iter().filter(|e| e.to == i).map(|e| e.from).collect();
                let incoming = u32::try_from(upstreams.len()).unwrap_or(u32::MAX);
                let policy = match kind {
                    _ if incoming == 0 => GroupPolicy::AllOf,
                    0 => GroupPolicy::AllOf,
                    1 => GroupPolicy::AnyOf,
                    _ => GroupPolicy::Quorum(1 + k % incoming),
                };
                let on_satisfied = if cancel_remaining && upstreams.iter().all(|&u| is_root(u)) {
                    OnSatisfied::CancelRemaining
                } else {
                    OnSatisfied::LetRun
                };
                NodeParams {
                    group: DependencyGroup {
                        policy,
                        on_satisfied,
                    },
                    max_attempts,
                    backoff_ms,
                    delay_ms,
                }
            },
        )
        .collect();
    Graph { nodes, edges }
}

fn graph_strategy() -> impl Strategy<Value = Graph> {
    (
        shape_strategy(),
        vec(node_strategy(), MAX_NODES),
        vec(edge_strategy(), 2 * MAX_NODES),
    )
        .prop_map(|((n, pairs), nodes, edges)| build_graph(n, pairs, nodes, edges))
}

fn op_strategy() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => Just(Op::ClaimAll),
        5 => (0usize..64, any::<bool>()).prop_map(|(pick, with_result)| Op::Complete { pick, with_result }),
        2 => (0usize..64, any::<bool>()).prop_map(|(pick, retryable)| Op::Fail { pick, retryable }),
        1 => (0usize..64).prop_map(|pick| Op::Cancel { pick }),
        1 => prop_oneof![Just(CancelFlowMode::CancelAll), Just(CancelFlowMode::CancelPending)].prop_map(Op::CancelFlow),
        2 => prop_oneof![Just(10u64), Just(40u64), Just(100u64), Just(1_000u64)].prop_map(Op::Advance),
        1 => Just(Op::ExpireLeases),
    ]
}

fn scenario_strategy() -> impl Strategy<Value = Scenario> {
    // Operations first: a tuple shrinks its first element first, and a shorter sequence is
    // what makes a failure readable.
    (vec(op_strategy(), 1..=MAX_OPS), graph_strategy())
        .prop_map(|(ops, graph)| Scenario { graph, ops })
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

/// One scenario handed from the generator thread to the case.
struct Candidate {
    /// Index of the scenario being generated (or shrunk).
    case: u32,
    /// Whether it is a shrinking step of a failed scenario.
    shrinking: bool,
    scenario: Scenario,
}

/// Runs proptest's generation and shrinking on a thread of its own (its value trees are not
/// `Send`, so they cannot live in the async case): it sends each scenario to try and waits for
/// the verdict (`true` = it failed). It stops after shrinking the first failure, or when the
/// case hangs up.
fn spawn_generator(
    seed: u64,
    cases: u32,
) -> (
    tokio::sync::mpsc::Receiver<Result<Candidate, String>>,
    tokio::sync::mpsc::UnboundedSender<bool>,
) {
    let (candidates_tx, candidates_rx) = tokio::sync::mpsc::channel(1);
    let (verdicts_tx, mut verdicts_rx) = tokio::sync::mpsc::unbounded_channel::<bool>();
    std::thread::spawn(move || {
        let config = Config {
            cases,
            failure_persistence: None,
            rng_seed: RngSeed::Fixed(seed),
            ..Config::default()
        };
        let mut runner = TestRunner::new(config);
        let strategy = scenario_strategy();
        let mut ask = |case: u32, shrinking: bool, scenario: Scenario| -> Option<bool> {
            candidates_tx
                .blocking_send(Ok(Candidate {
                    case,
                    shrinking,
                    scenario,
                }))
                .ok()?;
            verdicts_rx.blocking_recv()
        };
        for case in 0..cases {
            let mut tree = match strategy.new_tree(&mut runner) {
                Ok(tree) => tree,
                Err(error) => {
                    let _ = candidates_tx.blocking_send(Err(error.to_string()));
                    return;
                }
            };
            match ask(case, false, tree.current()) {
                None => return,
                Some(false) => continue,
                Some(true) => {}
            }
            // Shrink: simplify while it still fails, complicate back when it passes.
            let mut runs = 0;
            if tree.simplify() {
                while runs < MAX_SHRINK_RUNS {
                    runs += 1;
                    let stepped = match ask(case, true, tree.current()) {
                        None => return,
                        Some(true) => tree.simplify(),
                        Some(false) => tree.complicate(),
                    };
                    if !stepped {
                        break;
                    }
                }
            }
            return;
        }
    });
    (candidates_rx, verdicts_tx)
}

/// The case: `FF_PROPTEST_CASES` scenarios (default 32), each on a fresh backend.
pub(crate) async fn random_flows(ctx: TestContext) -> CaseResult {
    let cases = env_u64("FF_PROPTEST_CASES")
        .and_then(|c| u32::try_from(c).ok())
        .unwrap_or(DEFAULT_CASES);
    let seed = env_u64("FF_PROPTEST_SEED").unwrap_or_else(rand::random);
    let (mut candidates, verdicts) = spawn_generator(seed, cases);
    let mut compared_steps = 0;
    let mut failure: Option<(u32, Scenario, CaseError)> = None;
    let mut shrink_runs = 0;
    while let Some(candidate) = candidates.recv().await {
        let candidate =
            candidate.map_err(|e| CaseError::new(format!("generating a scenario: {e}")))?;
        if candidate.shrinking {
            shrink_runs += 1;
        }
        let failed = match run_scenario(&ctx, &candidate.scenario).await {
            Ok(steps) => {
                if !candidate.shrinking {
                    compared_steps += steps;
                }
                false
            }
            Err((_, error)) if error.is_skip() => return Err(error),
            Err((ran, error)) => {
                // Operations after the failing one never ran: leave them out of the report.
                let mut scenario = candidate.scenario;
                scenario.ops.truncate(ran);
                failure = Some((candidate.case, scenario, error));
                true
            }
        };
        if verdicts.send(failed).is_err() {
            break;
        }
    }
    if let Some((case, scenario, error)) = failure {
        return Err(CaseError::new(format!(
            "the backend and the model disagree (FF_PROPTEST_SEED={seed}, scenario {case}, \
             shrunk in {shrink_runs} runs)\n{scenario}failure: {error}"
        )));
    }
    ensure!(
        compared_steps >= u64::from(cases),
        "only {compared_steps} steps were compared in {cases} scenarios: the model test checked \
         almost nothing"
    );
    Ok(())
}

/// What the backend knows of one generated flow.
struct Run<'a> {
    ctx: &'a TestContext,
    lane: Lane,
    flow: FlowHandle,
    ids: Vec<ExecutionId>,
    fences: BTreeMap<usize, Fence>,
}

fn node_key(i: usize) -> NodeKey {
    NodeKey::new(Graph::key(i)).expect("n<index> is a valid node key")
}

fn flow_spec(graph: &Graph, lane: &Lane) -> FlowSpec {
    let mut spec = FlowSpec::new();
    for (i, node) in graph.nodes.iter().enumerate() {
        let execution = ExecutionSpec::new(lane.clone(), Graph::key(i).into_bytes())
            .with_retry(RetryPolicy::fixed(
                node.max_attempts,
                Duration::from_millis(node.backoff_ms),
            ))
            .with_delay(Duration::from_millis(node.delay_ms));
        spec = spec.node(NodeSpec::new(node_key(i), execution).with_group(node.group));
    }
    for edge in &graph.edges {
        let mut e = EdgeSpec::new(node_key(edge.from), node_key(edge.to));
        if edge.kind == EdgeKind::Always {
            e = e.always();
        }
        if edge.pass_result {
            e = e.passing_result();
        }
        spec = spec.edge(e);
    }
    spec
}

/// Runs one scenario; returns the number of steps compared, or how many operations ran
/// (the failing one included) and what went wrong.
async fn run_scenario(ctx: &TestContext, scenario: &Scenario) -> Result<u64, (usize, CaseError)> {
    let mut ran = 0;
    run_steps(ctx, scenario, &mut ran)
        .await
        .map_err(|e| (ran, e))
}

async fn run_steps(
    ctx: &TestContext,
    scenario: &Scenario,
    ran: &mut usize,
) -> Result<u64, CaseError> {
    let fresh = ctx.fresh().await?;
    let backend = fresh.backend();
    let start = backend.now().await?;
    if backend.now().await? != start {
        return Err(CaseError::skip(
            "the model test needs a clock that moves only through advance_clock",
        ));
    }
    let lane = fresh.lane("model");
    let flow = fresh
        .create_flow(&flow_spec(&scenario.graph, &lane))
        .await?;
    let ids = (0..scenario.graph.nodes.len())
        .map(|i| flow.id(&Graph::key(i)))
        .collect::<Result<Vec<_>, _>>()?;
    let mut run = Run {
        ctx: &fresh,
        lane,
        flow,
        ids,
        fences: BTreeMap::new(),
    };
    let mut model = FlowModel::new(scenario.graph.clone(), start.as_millis());
    fresh.settle(&run.flow.id).await?;
    compare(&run, &model)
        .await
        .map_err(|e| e.context("after create_flow"))?;
    let mut compared = 1;
    for (step, op) in scenario.ops.iter().enumerate() {
        *ran = step + 1;
        apply(&mut run, &mut model, op)
            .await
            .map_err(|e| e.context(format!("step {step} ({op:?})")))?;
        if model.ambiguity().is_some() {
            break;
        }
        fresh.settle(&run.flow.id).await?;
        compare(&run, &model)
            .await
            .map_err(|e| e.context(format!("after step {step} ({op:?})")))?;
        compared += 1;
        run.fences
            .retain(|&i, _| model.members()[i].state == ExecutionState::Running);
    }
    Ok(compared)
}

async fn apply(run: &mut Run<'_>, model: &mut FlowModel, op: &Op) -> CaseResult {
    let backend = run.ctx.backend();
    match op {
        Op::ClaimAll => {
            let request = ClaimRequest::new(run.ctx.worker(), run.lane.clone())
                .with_max(1_000)
                .with_lease_ttl(Duration::from_millis(LEASE_TTL_MS));
            let claimed = backend.claim(&request).await?;
            let expected: BTreeSet<usize> = model.claim_all().into_iter().collect();
            let mut got = BTreeSet::new();
            for c in &claimed {
                let Some(i) = run.ids.iter().position(|id| *id == c.id()) else {
                    return Err(CaseError::new(format!("claimed a stranger: {}", c.id())));
                };
                got.insert(i);
                run.fences.insert(i, c.fence);
                let member = &model.members()[i];
                ensure!(
                    c.attempt == member.attempts,
                    "{}: claimed as attempt {}, the model says {}",
                    Graph::key(i),
                    c.attempt,
                    member.attempts
                );
                if let Some(inputs) = model.expected_inputs(i) {
                    let actual: Vec<(usize, Option<Vec<u8>>)> = c
                        .inputs
                        .iter()
                        .map(|input| {
                            let from = run
                                .ids
                                .iter()
                                .position(|id| *id == input.execution_id)
                                .unwrap_or(usize::MAX);
                            (from, input.result.clone())
                        })
                        .collect();
                    ensure!(
                        actual == inputs,
                        "{}: inputs {actual:?}, the model says {inputs:?} (upstream index, result)",
                        Graph::key(i)
                    );
                }
            }
            ensure!(
                got == expected,
                "claimed {:?}, the model says the ready members are {:?}",
                keys(&got),
                keys(&expected)
            );
        }
        Op::Complete { pick, with_result } => {
            let running = model.in_state(ExecutionState::Running);
            if running.is_empty() {
                return Ok(());
            }
            let node = running[pick % running.len()];
            let fence = fence_of(run, node)?;
            let result = with_result.then(|| Graph::key(node).into_bytes());
            let mut request = CompleteRequest::new(fence);
            request.result = result.clone();
            let actual = backend.complete(&request).await;
            let expected = model.complete(node, result);
            if model.ambiguity().is_some() {
                return Ok(());
            }
            match expected {
                WriteExpectation::Accepted(_) => {
                    ensure!(
                        actual.is_ok(),
                        "complete {}: {actual:?}, the model accepts it",
                        Graph::key(node)
                    );
                }
                WriteExpectation::LeaseExpired => expect_lease_expired(&actual, node)?,
            }
        }
        Op::Fail { pick, retryable } => {
            let running = model.in_state(ExecutionState::Running);
            if running.is_empty() {
                return Ok(());
            }
            let node = running[pick % running.len()];
            let fence = fence_of(run, node)?;
            let failure = if *retryable {
                Failure::retryable("model")
            } else {
                Failure::permanent("model")
            };
            let actual = backend.fail(&FailRequest::new(fence, failure)).await;
            let expected = model.fail(node, *retryable);
            if model.ambiguity().is_some() {
                return Ok(());
            }
            match expected {
                WriteExpectation::Accepted(retry_at) => {
                    let expected = match retry_at {
                        Some(at) => FailDisposition::RetryScheduled {
                            available_at: Timestamp::from_millis(at),
                        },
                        None => FailDisposition::Failed,
                    };
                    let disposition = actual.as_ref().map(|o| o.disposition);
                    ensure!(
                        disposition.as_ref().ok() == Some(&expected),
                        "fail {} (retryable {retryable}): {actual:?}, the model says {expected:?}",
                        Graph::key(node)
                    );
                }
                WriteExpectation::LeaseExpired => expect_lease_expired(&actual, node)?,
            }
        }
        Op::Cancel { pick } => {
            let node = pick % run.ids.len();
            let actual = backend.cancel_execution(&run.ids[node]).await?;
            let expected = model.cancel(node);
            if model.ambiguity().is_some() {
                return Ok(());
            }
            ensure!(
                expected.matches(&actual),
                "cancel {}: {actual:?}, the model says {expected:?}",
                Graph::key(node)
            );
            if let CancelOutcomeModel::Cancelled(_) = expected {
                run.fences.remove(&node);
            }
        }
        Op::CancelFlow(mode) => {
            if model.flow_state().is_terminal() {
                // What cancelling a finished flow does to its state is not pinned down.
                return Ok(());
            }
            let outcome = backend.cancel_flow(&run.flow.id, *mode).await?;
            let cancelled = model.cancel_flow(*mode);
            if model.ambiguity().is_none() {
                ensure!(
                    outcome.cancelled + outcome.deferred == cancelled,
                    "cancel_flow({mode:?}): {outcome:?}, the model cancels {cancelled}"
                );
            }
        }
        Op::Advance(ms) => {
            backend.advance_clock(Duration::from_millis(*ms)).await?;
            model.advance(*ms);
            run.ctx.promote(run.flow.partition).await?;
            model.promote();
        }
        Op::ExpireLeases => {
            let by = LEASE_TTL_MS + 1;
            backend.advance_clock(Duration::from_millis(by)).await?;
            model.advance(by);
            run.ctx
                .scan(run.flow.partition, ScanKind::LeaseExpiry)
                .await?;
            model.expire_leases();
            run.ctx.promote(run.flow.partition).await?;
            model.promote();
        }
    }
    let now = backend.now().await?.as_millis();
    ensure!(
        now == model.now(),
        "the backend clock reads {now} ms, the model's {} ms: the model test needs a clock that \
         moves only through advance_clock",
        model.now()
    );
    Ok(())
}

fn keys(nodes: &BTreeSet<usize>) -> Vec<String> {
    nodes.iter().map(|&i| Graph::key(i)).collect()
}

fn fence_of(run: &Run<'_>, node: usize) -> CaseResult<Fence> {
    run.fences.get(&node).copied().ok_or_else(|| {
        CaseError::new(format!(
            "{} is running in the model but the test holds no lease for it",
            Graph::key(node)
        ))
    })
}

fn expect_lease_expired<T: fmt::Debug>(actual: &Result<T, EngineError>, node: usize) -> CaseResult {
    ensure!(
        matches!(
            actual,
            Err(EngineError::Fenced {
                reason: FenceReason::LeaseExpired,
                ..
            })
        ),
        "{}: the lease expired by the backend clock, expected Fenced(LeaseExpired), got {actual:?}",
        Graph::key(node)
    );
    Ok(())
}

/// Compares every member, edge, group and the flow with the model; reports every difference.
async fn compare(run: &Run<'_>, model: &FlowModel) -> CaseResult {
    let snapshot = run.ctx.flow(&run.flow).await?;
    let mut diffs = Vec::new();
    for (i, expected) in model.members().iter().enumerate() {
        let key = node_key(i);
        let Some(member) = snapshot.member(&key) else {
            diffs.push(format!("{key}: missing from describe_flow"));
            continue;
        };
        if member.state != expected.state || member.end_reason != expected.end_reason {
            diffs.push(format!(
                "{key}: {} ({:?}), model {} ({:?})",
                member.state, member.end_reason, expected.state, expected.end_reason
            ));
        }
        let execution = run.ctx.describe(&run.ids[i]).await?;
        if execution.state() != member.state {
            diffs.push(format!(
                "{key}: describe_execution says {}, describe_flow {}",
                execution.state(),
                member.state
            ));
        }
        if execution.status.attempt != expected.attempts {
            diffs.push(format!(
                "{key}: {} attempts, model {}",
                execution.status.attempt, expected.attempts
            ));
        }
        if expected.state == ExecutionState::Delayed {
            let want = expected.available_at.map(Timestamp::from_millis);
            if execution.available_at != want {
                diffs.push(format!(
                    "{key}: available_at {:?}, model {want:?}",
                    execution.available_at
                ));
            }
        }
    }
    for (e, edge) in model.graph().edges.iter().enumerate() {
        let found = snapshot
            .edges
            .iter()
            .find(|x| x.from == node_key(edge.from) && x.to == node_key(edge.to));
        match found {
            Some(x) if x.applied == model.applied(e) => {}
            Some(x) => diffs.push(format!(
                "edge {} -> {}: applied {}, model {}",
                x.from,
                x.to,
                x.applied,
                model.applied(e)
            )),
            None => diffs.push(format!(
                "edge {} -> {}: missing from describe_flow",
                Graph::key(edge.from),
                Graph::key(edge.to)
            )),
        }
    }
    for (i, expected) in model.groups().iter().enumerate() {
        if expected.incoming == 0 {
            continue;
        }
        let key = node_key(i);
        match snapshot.groups.iter().find(|g| g.node == key) {
            Some(g)
                if (g.incoming, g.satisfied, g.unsatisfied, g.verdict)
                    == (
                        expected.incoming,
                        expected.satisfied,
                        expected.unsatisfied,
                        expected.verdict,
                    ) => {}
            Some(g) => diffs.push(format!(
                "group of {key}: incoming {} satisfied {} unsatisfied {} {}, model {} {} {} {}",
                g.incoming,
                g.satisfied,
                g.unsatisfied,
                g.verdict.as_str(),
                expected.incoming,
                expected.satisfied,
                expected.unsatisfied,
                expected.verdict.as_str()
            )),
            None => diffs.push(format!("group of {key}: missing from describe_flow")),
        }
    }
    let counts = (
        snapshot.counts.total,
        snapshot.counts.terminal,
        snapshot.counts.failing,
    );
    if counts != model.counts() {
        diffs.push(format!(
            "flow counts (total, terminal, failing) {counts:?}, model {:?}",
            model.counts()
        ));
    }
    if snapshot.state != model.flow_state() {
        diffs.push(format!(
            "flow state {}, model {}",
            snapshot.state,
            model.flow_state()
        ));
    }
    if snapshot.finished_at.is_some() != snapshot.state.is_terminal() {
        diffs.push(format!(
            "flow finished_at {:?} with state {}",
            snapshot.finished_at, snapshot.state
        ));
    }
    if snapshot.cancel_requested != model.cancel_requested() {
        diffs.push(format!(
            "cancel_requested {}, model {}",
            snapshot.cancel_requested,
            model.cancel_requested()
        ));
    }
    ensure!(diffs.is_empty(), "{}", diffs.join("\n  "));
    Ok(())
}
