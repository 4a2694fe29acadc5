//! Valkey-specific behaviour on real servers: the function library's versioning and reload,
//! flows spread over a cluster's masters, killed connections, and an engine killed between
//! two cascade chunks.

mod common;

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ff_backend_valkey::{ValkeyBackend, ValkeyConfig, library};
use ff_core::partition::cluster_slot;
use ff_core::{
    ClaimRequest, CompleteRequest, EdgeSpec, EngineBackend, EngineError, ExecutionId,
    ExecutionSpec, ExecutionState, FlowSpec, FlowState, GroupVerdict, Lane, NodeKey, NodeSpec,
    PartitionConfig, RetryPolicy, ScanKind, ScanRequest, WorkerId,
};
use redis::Value;

/// Some tests disturb the servers (flush or replace the library, kill connections): the tests
/// of this file run one at a time.
static LIBRARY_LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn key(k: &str) -> NodeKey {
    NodeKey::new(k).expect("valid node key")
}

async fn stored_version(backend: &ValkeyBackend) -> String {
    let mut cmd = redis::cmd("FCALL");
    cmd.arg("ff_version").arg(0);
    match backend.raw_command(&cmd).await.expect("ff_version") {
        Value::BulkString(b) => String::from_utf8_lossy(&b).into_owned(),
        other => panic!("unexpected ff_version answer {other:?}"),
    }
}

/// A library named like ours whose only function reports `version`.
fn fake_library(version: &str) -> String {
    format!(
        "#!lua name=flowfabric\nredis.register_function{{function_name='ff_version', \
         callback=function() return '{version}' end, flags={{'no-writes'}}}}\n"
    )
}

async fn load(backend: &ValkeyBackend, source: &str) {
    let mut cmd = redis::cmd("FUNCTION");
    cmd.arg("LOAD").arg("REPLACE").arg(source);
    backend.raw_command(&cmd).await.expect("FUNCTION LOAD");
}

#[tokio::test]
async fn library_is_versioned_and_reloaded() {
    if common::none_configured("library_is_versioned_and_reloaded") {
        return;
    }
    let _guard = LIBRARY_LOCK.lock().await;
    for (label, config) in common::configs("library", 4) {
        let backend = common::connect(config.clone()).await.expect("connect");
        assert_eq!(
            stored_version(&backend).await,
            library::version(),
            "{label}"
        );
        let lane = Lane::new("lib").expect("lane");

        // After FUNCTION FLUSH (as after a failover to a node without the library) the next
        // call reloads it and succeeds.
        let mut flush = redis::cmd("FUNCTION");
        flush.arg("FLUSH");
        backend.raw_command(&flush).await.expect("FUNCTION FLUSH");
        backend
            .create_execution(&ExecutionSpec::new(lane.clone(), b"x".to_vec()))
            .await
            .expect("a call after FUNCTION FLUSH reloads the library");
        assert_eq!(
            stored_version(&backend).await,
            library::version(),
            "{label}"
        );

        // An older library is replaced at connect.
        load(&backend, &fake_library("0.old")).await;
        let upgraded = common::connect(config.clone()).await.expect("connect");
        assert_eq!(
            stored_version(&upgraded).await,
            library::version(),
            "{label}"
        );

        // A newer one is refused.
        load(
            &backend,
            &fake_library(&format!("{}.future", library::LIBRARY_MAJOR + 1)),
        )
        .await;
        match ValkeyBackend::connect(config.clone()).await {
            Err(EngineError::Config(message)) => assert!(message.contains("newer"), "{message}"),
            other => panic!("{label}: a newer library must be refused, got {other:?}"),
        }
        backend.reload_library().await.expect("reload");
        assert_eq!(
            stored_version(&backend).await,
            library::version(),
            "{label}"
        );
    }
}

#[tokio::test]
async fn partition_count_is_checked() {
    if common::none_configured("partition_count_is_checked") {
        return;
    }
    let _guard = LIBRARY_LOCK.lock().await;
    for (label, config) in common::configs("partitions", 4) {
        common::connect(config.clone()).await.expect("connect");
        let other = config
            .clone()
            .with_partitions(PartitionConfig::new(5).expect("5 partitions"));
        match ValkeyBackend::connect(other).await {
            Err(EngineError::Config(message)) => {
                assert!(message.contains("4 partitions"), "{label}: {message}")
            }
            other => panic!("{label}: a partition mismatch must be refused, got {other:?}"),
        }
    }
}

/// Slot → master address, from `CLUSTER SLOTS`.
async fn slot_owners(backend: &ValkeyBackend) -> Vec<(i64, i64, String)> {
    let reply = backend
        .raw_command(&redis::cmd("CLUSTER").arg("SLOTS").to_owned())
        .await
        .expect("CLUSTER SLOTS");
    let mut out = Vec::new();
    let Value::Array(ranges) = reply else {
        panic!("unexpected CLUSTER SLOTS answer {reply:?}")
    };
    for range in ranges {
        let Value::Array(parts) = range else { continue };
        let (Some(Value::Int(start)), Some(Value::Int(end)), Some(Value::Array(master))) =
            (parts.first(), parts.get(1), parts.get(2))
        else {
            continue;
        };
        let host = match master.first() {
            Some(Value::BulkString(b)) => String::from_utf8_lossy(b).into_owned(),
            _ => String::new(),
        };
        let port = match master.get(1) {
            Some(Value::Int(p)) => *p,
            _ => 0,
        };
        out.push((*start, *end, format!("{host}:{port}")));
    }
    out
}

#[tokio::test]
async fn cluster_flows_land_on_different_masters_and_cascade() {
    let Some(urls) = common::cluster_urls() else {
        if std::env::var("FF_REQUIRE_SERVERS").is_ok() {
            panic!("FF_REQUIRE_SERVERS is set but FF_VALKEY_CLUSTER_URLS is not");
        }
        eprintln!("skipped: FF_VALKEY_CLUSTER_URLS is not set");
        return;
    };
    let _guard = LIBRARY_LOCK.lock().await;
    let config = ValkeyConfig::cluster(urls)
        .with_namespace(common::namespace("spread"))
        .with_partitions(PartitionConfig::new(64).expect("64 partitions"));
    let backend = common::connect(config).await.expect("connect");
    let owners = slot_owners(&backend).await;
    let lane = Lane::new("spread").expect("lane");
    let mut masters = BTreeSet::new();
    let mut flows = Vec::new();
    for _ in 0..24 {
        let spec = FlowSpec::new()
            .node(NodeSpec::new(
                key("a"),
                ExecutionSpec::new(lane.clone(), vec![1]),
            ))
            .node(NodeSpec::new(
                key("b"),
                ExecutionSpec::new(lane.clone(), vec![2]),
            ))
            .node(NodeSpec::new(
                key("c"),
                ExecutionSpec::new(lane.clone(), vec![3]),
            ))
            .edge(EdgeSpec::new(key("a"), key("b")).passing_result())
            .edge(EdgeSpec::new(key("b"), key("c")).passing_result());
        let partition = spec.id.partition(&backend.partition_config());
        let prefix = backend
            .key_space()
            .partition(partition)
            .prefix()
            .to_string();
        let slot = i64::from(cluster_slot(prefix.as_bytes()));
        let master = owners
            .iter()
            .find(|(start, end, _)| (*start..=*end).contains(&slot))
            .map(|(_, _, m)| m.clone())
            .expect("every slot has a master");
        masters.insert(master);
        flows.push(
            backend
                .create_flow(&spec)
                .await
                .expect("create flow")
                .flow_id,
        );
    }
    assert!(
        masters.len() >= 2,
        "24 flows on 64 partitions should use several masters: {masters:?}"
    );
    let worker = WorkerId::random();
    let claim = ClaimRequest::new(worker, lane.clone()).with_max(8);
    let mut executed = 0;
    let deadline = Instant::now() + Duration::from_secs(30);
    while executed < flows.len() * 3 {
        assert!(
            Instant::now() < deadline,
            "flows did not finish: {executed} nodes ran"
        );
        for c in backend.claim(&claim).await.expect("claim") {
            backend
                .complete(&CompleteRequest::new(c.fence).with_result(vec![9]))
                .await
                .expect("complete");
            executed += 1;
        }
    }
    for flow in flows {
        let snap = backend.describe_flow(&flow).await.expect("describe flow");
        assert_eq!(snap.state, FlowState::Succeeded);
    }
    eprintln!("24 flows cascaded on {} masters", masters.len());
}

/// Kills every normal client connection of the servers behind `urls` (not the killer's own).
async fn kill_clients(urls: &[String]) -> usize {
    let mut killed = 0;
    for url in urls {
        let client = redis::Client::open(url.as_str()).expect("url");
        let mut conn = client
            .get_multiplexed_async_connection()
            .await
            .expect("connect");
        let n: i64 = redis::cmd("CLIENT")
            .arg("KILL")
            .arg("TYPE")
            .arg("normal")
            .arg("SKIPME")
            .arg("yes")
            .query_async(&mut conn)
            .await
            .expect("CLIENT KILL");
        killed += usize::try_from(n).unwrap_or(0);
    }
    killed
}

#[tokio::test]
async fn killed_connections_reconnect_and_lose_nothing() {
    if common::none_configured("killed_connections_reconnect_and_lose_nothing") {
        return;
    }
    let _guard = LIBRARY_LOCK.lock().await;
    for (label, config) in common::configs("kill", 8) {
        let urls = config.urls.clone();
        let backend = common::connect(config).await.expect("connect");
        let lane = Lane::new("kill").expect("lane");
        let total = 400usize;
        let spec = ExecutionSpec::new(lane.clone(), vec![5; 100])
            .with_retry(RetryPolicy::fixed(10, Duration::ZERO));

        // Producer and 8 workers run while the connections are killed twice.
        let producer = {
            let backend = backend.clone();
            let spec = spec.clone();
            tokio::spawn(async move {
                let mut ids = Vec::new();
                while ids.len() < total {
                    match backend.create_execution(&spec).await {
                        Ok(c) => ids.push(c.id),
                        Err(e) if e.is_retryable() => tokio::task::yield_now().await,
                        Err(e) => panic!("create: {e}"),
                    }
                }
                ids
            })
        };
        let done = Arc::new(std::sync::Mutex::new(HashSet::<ExecutionId>::new()));
        let mut workers = Vec::new();
        for _ in 0..8 {
            let backend = backend.clone();
            let lane = lane.clone();
            let done = done.clone();
            workers.push(tokio::spawn(async move {
                let claim = ClaimRequest::new(WorkerId::random(), lane).with_max(4);
                let stop = Instant::now() + Duration::from_secs(60);
                while Instant::now() < stop && done.lock().map(|d| d.len()).unwrap_or(0) < total {
                    let claimed = match backend.claim(&claim).await {
                        Ok(c) => c,
                        Err(_) => continue,
                    };
                    if claimed.is_empty() {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    for c in claimed {
                        loop {
                            match backend.complete(&CompleteRequest::new(c.fence)).await {
                                Ok(_) => {
                                    if let Ok(mut d) = done.lock() {
                                        d.insert(c.id());
                                    }
                                    break;
                                }
                                Err(e) if e.is_retryable() => continue,
                                // Fenced: the lease expired meanwhile; the retry runs it again.
                                Err(_) => break,
                            }
                        }
                    }
                }
            }));
        }
        let mut killed = 0;
        for _ in 0..2 {
            tokio::time::sleep(Duration::from_millis(60)).await;
            killed += kill_clients(&urls).await;
        }
        let ids = producer.await.expect("producer");
        // Claims whose replies were lost hold leases until they expire: let time pass on the
        // backend clock and run the lease-expiry scanner, as the engine would.
        let stop = Instant::now() + Duration::from_secs(60);
        loop {
            let finished = done.lock().map(|d| d.len()).unwrap_or(0);
            if finished >= total {
                break;
            }
            assert!(
                Instant::now() < stop,
                "{label}: only {finished}/{total} finished"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
            backend
                .advance_clock(Duration::from_secs(31))
                .await
                .expect("advance");
            for p in backend.partition_config().all() {
                for kind in [ScanKind::LeaseExpiry, ScanKind::DelayedPromotion] {
                    backend
                        .scan(&ScanRequest::new(p, kind, 1000))
                        .await
                        .expect("scan");
                }
            }
        }
        for w in workers {
            w.await.expect("worker");
        }
        let unique: HashSet<ExecutionId> = ids.iter().copied().collect();
        assert_eq!(unique.len(), total, "{label}");
        for id in &ids {
            let snap = backend.describe_execution(id).await.expect("describe");
            assert_eq!(snap.state(), ExecutionState::Succeeded, "{label}: {id}");
        }
        eprintln!("{label}: {total} executions succeeded across {killed} killed connections");
        assert!(killed > 0, "{label}: the test must kill connections");
    }
}

const CHILD_ENV: &str = "FF_TEST_DRAIN_CHILD";

/// The "engine" of the SIGKILL test, run in a child process: cascades one pending completion
/// a chunk at a time, slowly, printing each chunk, until it is killed.
async fn drain_child(spec: &str) {
    let (kind, rest) = spec.split_once('|').expect("child spec");
    let (url, rest) = rest.split_once('|').expect("child spec");
    let (namespace, flow) = rest.split_once('|').expect("child spec");
    let config = if kind == "cluster" {
        ValkeyConfig::cluster(url.split(',').map(str::to_string))
    } else {
        ValkeyConfig::standalone(url)
    }
    .with_namespace(namespace)
    .with_partitions(PartitionConfig::new(4).expect("4 partitions"));
    let backend = ValkeyBackend::connect(config).await.expect("child connect");
    let flow: ff_core::FlowId = flow.parse().expect("flow id");
    let partition = flow.partition(&backend.partition_config());
    let events = backend
        .pending_completions(partition, 10)
        .await
        .expect("pending");
    let event = events.first().expect("a pending completion");
    for chunk in 1.. {
        let progress = backend.cascade_completion(event).await.expect("cascade");
        println!("chunk {chunk} applied {}", progress.edges_applied);
        if progress.finished {
            println!("finished");
            return;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test]
async fn engine_killed_between_cascade_chunks_loses_nothing() {
    if let Ok(spec) = std::env::var(CHILD_ENV) {
        drain_child(&spec).await;
        return;
    }
    if common::none_configured("engine_killed_between_cascade_chunks_loses_nothing") {
        return;
    }
    let _guard = LIBRARY_LOCK.lock().await;
    for (label, config) in common::configs("sigkill", 4) {
        let namespace = config.namespace.clone().expect("namespace");
        let kind = if config.cluster {
            "cluster"
        } else {
            "standalone"
        };
        let url = config.urls.join(",");
        let backend = common::connect(config).await.expect("connect");
        let lane = Lane::new("fan").expect("lane");
        let width = 1000;
        let mut spec = FlowSpec::new().node(NodeSpec::new(
            key("root"),
            ExecutionSpec::new(lane.clone(), vec![]),
        ));
        for i in 0..width {
            let child = key(&format!("c{i}"));
            spec = spec
                .node(NodeSpec::new(
                    child.clone(),
                    ExecutionSpec::new(Lane::new("leaf").expect("lane"), vec![]),
                ))
                .edge(EdgeSpec::new(key("root"), child));
        }
        let flow = backend.create_flow(&spec).await.expect("create flow");
        let root = backend
            .claim(&ClaimRequest::new(WorkerId::random(), lane.clone()))
            .await
            .expect("claim root");
        assert_eq!(root.len(), 1, "{label}");
        backend
            .complete(&CompleteRequest::new(root[0].fence))
            .await
            .expect("complete root");
        let partition = flow.flow_id.partition(&backend.partition_config());
        assert_eq!(
            backend
                .pending_completions(partition, 10)
                .await
                .expect("pending")
                .len(),
            1,
            "{label}: a fan-out of {width} stays pending"
        );

        // The child engine applies chunks until it is killed after the second one.
        let exe = std::env::current_exe().expect("test binary");
        let mut child = tokio::process::Command::new(exe)
            .args([
                "engine_killed_between_cascade_chunks_loses_nothing",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(
                CHILD_ENV,
                format!("{kind}|{url}|{namespace}|{}", flow.flow_id),
            )
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("spawn the child engine");
        let stdout = child.stdout.take().expect("child stdout");
        let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(stdout));
        let mut chunks = 0;
        while let Some(line) = lines.next_line().await.expect("child output") {
            if line.starts_with("chunk ") {
                chunks += 1;
                if chunks == 2 {
                    child.start_kill().expect("SIGKILL the child engine");
                    break;
                }
            }
        }
        let status = child.wait().await.expect("child exit");
        assert!(
            !status.success(),
            "{label}: the child must have been killed"
        );
        assert_eq!(chunks, 2, "{label}");

        // Half-applied: some edges applied, the completion still pending.
        let snap = backend
            .describe_flow(&flow.flow_id)
            .await
            .expect("describe");
        let applied = snap.edges.iter().filter(|e| e.applied).count();
        assert!(applied > 0 && applied < width, "{label}: {applied} applied");

        // A new engine finishes it.
        let mut rounds = 0;
        loop {
            let events = backend
                .pending_completions(partition, 10)
                .await
                .expect("pending");
            let Some(event) = events.first() else { break };
            let progress = backend.cascade_completion(event).await.expect("cascade");
            rounds += 1;
            assert!(rounds < 100, "{label}: the cascade does not finish");
            let _ = progress;
        }
        let snap = backend
            .describe_flow(&flow.flow_id)
            .await
            .expect("describe");
        assert!(snap.edges.iter().all(|e| e.applied), "{label}");
        for g in &snap.groups {
            assert_eq!(g.satisfied, 1, "{label}: each edge applied exactly once");
            assert_eq!(g.verdict, GroupVerdict::Satisfied, "{label}");
        }
        assert_eq!(snap.groups.len(), width, "{label}");
        let ready = snap
            .members
            .iter()
            .filter(|m| m.state == ExecutionState::Ready)
            .count();
        assert_eq!(ready, width, "{label}: every child is ready once");
        eprintln!(
            "{label}: killed after {applied} of {width} edges; a new engine applied the rest"
        );
    }
}
