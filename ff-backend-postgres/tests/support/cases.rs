//! The tests.

use std::time::Duration;

use std::sync::Arc;
use std::sync::atomic::Ordering;

use ff_backend_postgres::{PostgresBackend, migrate};
use ff_core::{
    Capability, ClaimRequest, CompleteRequest, DependencyGroup, EdgeSpec, EngineBackend,
    EngineError, ExecutionId, ExecutionSpec, ExecutionState, FailDisposition, FailRequest, Failure,
    Fence, FlowId, FlowSpec, FlowState, IdempotencyKey, Lane, NodeKey, NodeSpec, OnSatisfied,
    PartitionConfig, RetryPolicy, WorkerId,
};
use libtest_mimic::Failed;
use tokio_postgres::NoTls;

use super::{TestFn, TestResult, config, fail, fresh, settle};

/// Every test, by name.
pub(super) fn all() -> Vec<(&'static str, TestFn)> {
    vec![
        ("smoke::flat_and_chain", |url| Box::pin(smoke(url))),
        (
            "claim_next::a_single_downstream_is_leased_by_its_edge",
            |url| Box::pin(single_downstream_lease(url)),
        ),
        (
            "hot_path::members_that_look_standalone_complete_in_full",
            |url| Box::pin(members_that_look_standalone(url)),
        ),
        ("migrations::idempotent_and_concurrent", |url| {
            Box::pin(migrations_concurrent(url))
        }),
        ("migrations::newer_schema_is_refused", |url| {
            Box::pin(newer_schema(url))
        }),
        ("migrations::partition_mismatch_is_refused", |url| {
            Box::pin(partition_mismatch(url))
        }),
        ("recovery::terminated_connections_lose_nothing", |url| {
            Box::pin(terminated_connections(url))
        }),
        ("recovery::lost_reply_does_not_duplicate_a_create", |url| {
            Box::pin(lost_create_reply(url))
        }),
        ("recovery::killed_drainer_mid_cascade", |url| {
            Box::pin(killed_drainer(url))
        }),
        ("recovery::two_drainers_apply_each_edge_once", |url| {
            Box::pin(two_drainers(url))
        }),
        ("cancel::large_flow_goes_through_the_backlog", |url| {
            Box::pin(cancel_backlog(url))
        }),
    ]
}

fn key(k: &str) -> NodeKey {
    NodeKey::new(k).expect("valid key")
}

async fn smoke(url: String) -> TestResult {
    let backend = fresh(config(&url, "smoke")).await?;
    let lane = Lane::new("smoke").map_err(fail("lane"))?;
    let worker = WorkerId::random();
    let created = backend
        .create_execution(&ExecutionSpec::new(lane.clone(), b"hi".to_vec()))
        .await
        .map_err(fail("create"))?;
    let claimed = backend
        .claim(&ClaimRequest::new(worker.clone(), lane.clone()))
        .await
        .map_err(fail("claim"))?;
    ensure!(claimed.len() == 1, "claimed {}", claimed.len());
    ensure!(claimed[0].id() == created.id, "wrong id");
    ensure!(claimed[0].payload == b"hi", "payload");
    let expires = backend
        .renew(&claimed[0].fence, Duration::from_secs(60))
        .await
        .map_err(fail("renew"))?;
    ensure!(expires > claimed[0].lease_expires_at, "renew moved expiry");
    backend
        .complete(&CompleteRequest::new(claimed[0].fence).with_result(b"ok".to_vec()))
        .await
        .map_err(fail("complete"))?;
    // Repeat: idempotent.
    backend
        .complete(&CompleteRequest::new(claimed[0].fence))
        .await
        .map_err(fail("complete repeat"))?;
    let failed = backend
        .fail(&FailRequest::new(claimed[0].fence, Failure::permanent("x")))
        .await;
    ensure!(
        matches!(failed, Err(ff_core::EngineError::NotActive { .. })),
        "fail after complete: {failed:?}"
    );
    let snapshot = backend
        .describe_execution(&created.id)
        .await
        .map_err(fail("describe"))?;
    ensure!(
        snapshot.state() == ExecutionState::Succeeded,
        "state {:?}",
        snapshot.state()
    );
    ensure!(
        snapshot.attempts.len() == 1,
        "attempts {:?}",
        snapshot.attempts
    );
    ensure!(snapshot.result.as_deref() == Some(&b"ok"[..]), "result");

    // Retry with backoff.
    let retrying = backend
        .create_execution(
            &ExecutionSpec::new(lane.clone(), b"r".to_vec())
                .with_retry(RetryPolicy::fixed(2, Duration::from_millis(1))),
        )
        .await
        .map_err(fail("create retrying"))?;
    let c = backend
        .claim(&ClaimRequest::new(worker.clone(), lane.clone()))
        .await
        .map_err(fail("claim retrying"))?;
    let outcome = backend
        .fail(&FailRequest::new(c[0].fence, Failure::retryable("boom")))
        .await
        .map_err(fail("fail"))?;
    ensure!(
        matches!(outcome.disposition, FailDisposition::RetryScheduled { .. }),
        "{outcome:?}"
    );
    let again = backend
        .fail(&FailRequest::new(c[0].fence, Failure::retryable("boom")))
        .await
        .map_err(fail("fail repeat"))?;
    ensure!(again.disposition == outcome.disposition, "repeat {again:?}");
    let s = backend
        .describe_execution(&retrying.id)
        .await
        .map_err(fail("describe"))?;
    ensure!(
        s.state() == ExecutionState::Delayed,
        "delayed: {:?}",
        s.state()
    );

    // A chain a → b → c, with data passing, completing with claim_next.
    let spec = FlowSpec::new()
        .node(NodeSpec::new(
            key("a"),
            ExecutionSpec::new(lane.clone(), b"a".to_vec()),
        ))
        .node(NodeSpec::new(
            key("b"),
            ExecutionSpec::new(lane.clone(), b"b".to_vec()),
        ))
        .node(
            NodeSpec::new(key("c"), ExecutionSpec::new(lane.clone(), b"c".to_vec()))
                .with_group(DependencyGroup::any_of(OnSatisfied::LetRun)),
        )
        .edge(EdgeSpec::new(key("a"), key("b")).passing_result())
        .edge(EdgeSpec::new(key("b"), key("c")));
    let flow = backend
        .create_flow(&spec)
        .await
        .map_err(fail("create flow"))?;
    ensure!(flow.created && flow.nodes.len() == 3, "{flow:?}");
    let repeat = backend
        .create_flow(&spec)
        .await
        .map_err(fail("create flow again"))?;
    ensure!(!repeat.created && repeat.nodes == flow.nodes, "{repeat:?}");
    let request = ClaimRequest::new(worker.clone(), lane.clone());
    let mut current = backend.claim(&request).await.map_err(fail("claim a"))?;
    // Skip the standalone retrying one if it was promoted meanwhile.
    let mut seen = Vec::new();
    while let Some(c) = current.pop() {
        seen.push(c.node_key.clone());
        let next = backend
            .complete(
                &CompleteRequest::new(c.fence)
                    .with_result(b"res".to_vec())
                    .with_claim_next(request.clone()),
            )
            .await
            .map_err(fail("complete chain"))?;
        if let Some(n) = next.next.first()
            && n.node_key.as_ref() == Some(&key("b"))
        {
            ensure!(n.inputs.len() == 1, "inputs {:?}", n.inputs);
            ensure!(
                n.inputs[0].result.as_deref() == Some(&b"res"[..]),
                "input result"
            );
        }
        current = next.next;
    }
    settle(&backend).await.map_err(fail("settle"))?;
    let snapshot = backend
        .describe_flow(&flow.flow_id)
        .await
        .map_err(fail("describe flow"))?;
    ensure!(
        snapshot.state == FlowState::Succeeded,
        "flow {snapshot:?} seen {seen:?}"
    );
    ensure!(
        snapshot.counts.terminal == 3,
        "counts {:?}",
        snapshot.counts
    );
    ensure!(
        snapshot.edges.iter().all(|e| e.applied),
        "edges {:?}",
        snapshot.edges
    );
    backend.drop_schema().await.map_err(fail("drop"))?;
    Ok(())
}

/// `complete` with `claim_next` of a flow member with one downstream leases that downstream in
/// the edge's own UPDATE when the claim would take it — with its inputs, a live lease, its
/// first attempt — and leaves it ready (or delayed) for others when the claim would not: another
/// lane, a capability the worker lacks, a delay, or higher-priority ready work in the lane
/// (which the call leases instead).
async fn single_downstream_lease(url: String) -> TestResult {
    let backend = fresh(config(&url, "direct")).await?;
    let lane = Lane::new("direct").map_err(fail("lane"))?;
    let other = Lane::new("elsewhere").map_err(fail("lane"))?;
    let claim = ClaimRequest::new(WorkerId::random(), lane.clone());
    let spec = |lane: &Lane| ExecutionSpec::new(lane.clone(), b"p".to_vec());
    // a → b, b shaped by `downstream`; with `urgent`, a priority-5 execution of the lane is
    // created after a is claimed. Returns (b's id, what completing a leased, the urgent one).
    let run = |downstream: ExecutionSpec, urgent: bool| {
        let (backend, claim, lane) = (&backend, &claim, &lane);
        async move {
            let flow = backend
                .create_flow(
                    &FlowSpec::new()
                        .node(NodeSpec::new(key("a"), spec(lane)))
                        .node(NodeSpec::new(key("b"), downstream))
                        .edge(EdgeSpec::new(key("a"), key("b")).passing_result()),
                )
                .await
                .map_err(fail("create flow"))?;
            let a = backend.claim(claim).await.map_err(fail("claim a"))?;
            ensure!(
                a.len() == 1 && a[0].node_key == Some(key("a")),
                "claimed {a:?}"
            );
            let urgent = if urgent {
                let created = backend
                    .create_execution(&spec(lane).with_priority(5))
                    .await
                    .map_err(fail("create urgent"))?;
                Some(created.id)
            } else {
                None
            };
            let done = backend
                .complete(
                    &CompleteRequest::new(a[0].fence)
                        .with_result(b"res".to_vec())
                        .with_claim_next(claim.clone()),
                )
                .await
                .map_err(fail("complete a"))?;
            let b = flow.nodes[&key("b")];
            Ok::<_, Failed>((b, done.next, urgent))
        }
    };
    let state_of = |id: ExecutionId| {
        let backend = &backend;
        async move {
            backend
                .describe_execution(&id)
                .await
                .map(|s| s.state())
                .map_err(fail("describe"))
        }
    };

    // Taken: leased with its input, first attempt, a lease that renews and completes.
    let (b, next, _) = run(spec(&lane), false).await?;
    ensure!(next.len() == 1 && next[0].id() == b, "leased {next:?}");
    let leased = &next[0];
    ensure!(leased.attempt == 1, "attempt {}", leased.attempt);
    ensure!(
        leased.inputs.len() == 1 && leased.inputs[0].result.as_deref() == Some(&b"res"[..]),
        "inputs {:?}",
        leased.inputs
    );
    let snapshot = backend
        .describe_execution(&b)
        .await
        .map_err(fail("describe b"))?;
    ensure!(snapshot.state() == ExecutionState::Running, "{snapshot:?}");
    ensure!(
        snapshot.lease.as_ref().map(|l| l.lease_id) == Some(leased.fence.lease_id),
        "lease {:?}",
        snapshot.lease
    );
    backend
        .renew(&leased.fence, Duration::from_secs(30))
        .await
        .map_err(fail("renew b"))?;
    backend
        .complete(&CompleteRequest::new(leased.fence))
        .await
        .map_err(fail("complete b"))?;
    ensure!(
        state_of(b).await? == ExecutionState::Succeeded,
        "b succeeded"
    );

    // Not taken: another lane, a capability the worker lacks, a delay.
    let gpu = Capability::new("gpu").map_err(fail("capability"))?;
    for (what, downstream, left) in [
        ("another lane", spec(&other), ExecutionState::Ready),
        (
            "a missing capability",
            spec(&lane).with_capability(gpu),
            ExecutionState::Ready,
        ),
        (
            "a delay",
            spec(&lane).with_delay(Duration::from_secs(3600)),
            ExecutionState::Delayed,
        ),
    ] {
        let (b, next, _) = run(downstream, false).await?;
        ensure!(next.is_empty(), "{what}: leased {next:?}");
        let state = state_of(b).await?;
        ensure!(state == left, "{what}: {state:?}");
    }
    let on_other = backend
        .claim(&ClaimRequest::new(WorkerId::random(), other.clone()))
        .await
        .map_err(fail("claim other lane"))?;
    ensure!(
        on_other.len() == 1,
        "the other lane's downstream is claimable"
    );

    // Higher-priority ready work in the lane goes first; the downstream stays ready.
    let (b, next, urgent) = run(spec(&lane), true).await?;
    ensure!(
        next.len() == 1 && Some(next[0].id()) == urgent,
        "the urgent one first: {next:?}"
    );
    ensure!(state_of(b).await? == ExecutionState::Ready, "b left ready");
    backend.drop_schema().await.map_err(fail("drop"))?;
    Ok(())
}

/// `complete` tries the plain statement of a standalone execution when the id lies on its
/// own UUID's partition, which with one partition every member's does too: members must then
/// still be counted in their flow and cascade (the statement matches nothing and `ff_complete`
/// decides), and a standalone completion with `claim_next` leases the next executions.
async fn members_that_look_standalone(url: String) -> TestResult {
    let backend = fresh(
        config(&url, "onepart").with_partitions(PartitionConfig::new(1).expect("1 partition")),
    )
    .await?;
    let lane = Lane::new("onepart").map_err(fail("lane"))?;
    let claim = ClaimRequest::new(WorkerId::random(), lane.clone()).with_max(2);
    let spec = || ExecutionSpec::new(lane.clone(), b"p".to_vec());
    let flow = backend
        .create_flow(
            &FlowSpec::new()
                .node(NodeSpec::new(key("a"), spec()))
                .node(NodeSpec::new(key("b"), spec()))
                .edge(EdgeSpec::new(key("a"), key("b"))),
        )
        .await
        .map_err(fail("create flow"))?;
    let complete_claiming = |fence: Fence, what: &'static str| {
        let (backend, claim) = (&backend, &claim);
        async move {
            backend
                .complete(&CompleteRequest::new(fence).with_claim_next(claim.clone()))
                .await
                .map(|completed| completed.next)
                .map_err(fail(what))
        }
    };
    let a = backend.claim(&claim).await.map_err(fail("claim a"))?;
    ensure!(
        a.len() == 1 && a[0].node_key == Some(key("a")),
        "claimed {a:?}"
    );
    let next = complete_claiming(a[0].fence, "complete a").await?;
    ensure!(
        next.len() == 1 && next[0].node_key == Some(key("b")),
        "a's completion leased {next:?}"
    );
    let mut standalone = Vec::new();
    for _ in 0..3 {
        let created = backend
            .create_execution(&spec())
            .await
            .map_err(fail("create standalone"))?;
        standalone.push(created.id);
    }
    let next = complete_claiming(next[0].fence, "complete b").await?;
    let snapshot = backend
        .describe_flow(&flow.flow_id)
        .await
        .map_err(fail("describe flow"))?;
    ensure!(
        snapshot.state == FlowState::Succeeded && snapshot.counts.terminal == 2,
        "flow {:?}, counts {:?}",
        snapshot.state,
        snapshot.counts
    );
    ensure!(
        next.len() == 2 && next.iter().all(|c| c.flow_id.is_none()),
        "b's completion leased {next:?}"
    );
    // Standalone: the plain statement completes and leases the last one.
    let last = complete_claiming(next[0].fence, "complete standalone").await?;
    ensure!(
        last.len() == 1 && last[0].id() == standalone[2],
        "the standalone completion leased {last:?}"
    );
    for fence in [next[1].fence, last[0].fence] {
        backend
            .complete(&CompleteRequest::new(fence).with_result(b"r".to_vec()))
            .await
            .map_err(fail("complete standalone"))?;
    }
    for id in &standalone {
        let snapshot = backend
            .describe_execution(id)
            .await
            .map_err(fail("describe standalone"))?;
        ensure!(
            snapshot.state() == ExecutionState::Succeeded,
            "{id}: {:?}",
            snapshot.state()
        );
    }
    // A repeated completion of a standalone execution is answered by `ff_complete`.
    backend
        .complete(&CompleteRequest::new(last[0].fence))
        .await
        .map_err(fail("complete repeat"))?;
    backend.drop_schema().await.map_err(fail("drop"))?;
    Ok(())
}

/// Two connects at once on a fresh schema both succeed and migrate it once; a third finds it
/// up to date.
async fn migrations_concurrent(url: String) -> TestResult {
    let cfg = config(&url, "migrate");
    fresh(cfg.clone())
        .await?
        .drop_schema()
        .await
        .map_err(fail("drop"))?;
    let (a, b) = tokio::join!(
        PostgresBackend::connect(cfg.clone()),
        PostgresBackend::connect(cfg.clone())
    );
    let a = a.map_err(fail("first concurrent connect"))?;
    b.map_err(fail("second concurrent connect"))?;
    let c = PostgresBackend::connect(cfg)
        .await
        .map_err(fail("third connect"))?;
    let versions = raw(
        &url,
        "SELECT count(*)::int, max(version) FROM fft_migrate.ff_schema_version",
    )
    .await?;
    ensure!(
        versions == (migrate::SCHEMA_VERSION, migrate::SCHEMA_VERSION),
        "version rows (count, max) = {versions:?}"
    );
    c.health().await.map_err(fail("health"))?;
    a.drop_schema().await.map_err(fail("drop"))?;
    Ok(())
}

/// A schema recorded at a version newer than the code is refused with a Config error.
async fn newer_schema(url: String) -> TestResult {
    let backend = fresh(config(&url, "newer")).await?;
    raw(
        &url,
        "INSERT INTO fft_newer.ff_schema_version (version, name) VALUES (999, 'future')",
    )
    .await?;
    let err = PostgresBackend::connect(config(&url, "newer")).await;
    ensure!(
        matches!(&err, Err(EngineError::Config(m)) if m.contains("newer")),
        "expected a Config error, got {err:?}"
    );
    backend.drop_schema().await.map_err(fail("drop"))?;
    Ok(())
}

/// A different partition count than the stored one is refused with a Config error.
async fn partition_mismatch(url: String) -> TestResult {
    let backend = fresh(config(&url, "parts")).await?;
    let other = config(&url, "parts").with_partitions(PartitionConfig::new(16).expect("16"));
    let err = PostgresBackend::connect(other).await;
    ensure!(
        matches!(&err, Err(EngineError::Config(m)) if m.contains("partitions")),
        "expected a Config error, got {err:?}"
    );
    backend.drop_schema().await.map_err(fail("drop"))?;
    Ok(())
}

/// Runs one statement on its own connection; answers the first row's first two int columns.
async fn raw(url: &str, sql: &str) -> Result<(i32, i32), Failed> {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .map_err(fail("raw connect"))?;
    let driver = tokio::spawn(connection);
    let rows = client.query(sql, &[]).await.map_err(fail("raw query"))?;
    let answer = rows
        .first()
        .filter(|row| row.len() >= 2)
        .map(|row| (row.get::<_, i32>(0), row.get::<_, i32>(1)))
        .unwrap_or((0, 0));
    drop(client);
    let _ = driver.await;
    Ok(answer)
}

/// Kills every connection of this test's backend (by application name) a few times while 8
/// workers run 400 executions to completion: calls fail with retryable errors or are retried
/// inside the backend, the pool reconnects, and every execution succeeds exactly once.
async fn terminated_connections(url: String) -> TestResult {
    let app = "fft_terminate";
    let url_app = if url.contains('?') {
        format!("{url}&application_name={app}")
    } else {
        format!("{url}?application_name={app}")
    };
    let backend = Arc::new(fresh(config(&url_app, "terminate")).await?);
    let lane = Lane::new("kill").map_err(fail("lane"))?;
    let total = 400;
    let mut ids = Vec::new();
    for i in 0..total {
        let spec = ExecutionSpec::new(lane.clone(), vec![0; 100])
            .with_idempotency_key(IdempotencyKey::new(format!("k{i}")).map_err(fail("key"))?);
        ids.push(retrying(|| backend.create_execution(&spec)).await?.id);
    }
    let done = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut workers = Vec::new();
    for _ in 0..8 {
        let backend = backend.clone();
        let lane = lane.clone();
        let done = done.clone();
        workers.push(tokio::spawn(async move {
            let request = ClaimRequest::new(WorkerId::random(), lane).with_max(4);
            let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
            let mut errors = 0u32;
            while done.load(Ordering::Relaxed) < total && tokio::time::Instant::now() < deadline {
                let claimed = match backend.claim(&request).await {
                    Ok(c) => c,
                    Err(e) if e.is_retryable() => {
                        errors += 1;
                        continue;
                    }
                    Err(e) => return Err(format!("claim: {e}")),
                };
                if claimed.is_empty() {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                for c in claimed {
                    loop {
                        match backend.complete(&CompleteRequest::new(c.fence)).await {
                            Ok(_) => {
                                done.fetch_add(1, Ordering::Relaxed);
                                break;
                            }
                            Err(e) if e.is_retryable() => errors += 1,
                            Err(e) => return Err(format!("complete: {e}")),
                        }
                    }
                }
            }
            Ok(errors)
        }));
    }
    let mut kills = 0;
    while done.load(Ordering::Relaxed) < total && kills < 5 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        raw(
            &url,
            &format!(
                "SELECT count(pg_terminate_backend(pid))::int, 0 FROM pg_stat_activity
                 WHERE application_name = '{app}' AND pid <> pg_backend_pid()"
            ),
        )
        .await?;
        kills += 1;
    }
    let mut retried = 0;
    for worker in workers {
        retried += worker
            .await
            .map_err(fail("worker panicked"))?
            .map_err(Failed::from)?;
    }
    for id in &ids {
        let s = retrying(|| backend.describe_execution(id)).await?;
        ensure!(
            s.state() == ExecutionState::Succeeded && s.attempts.len() == 1,
            "{id}: {:?} after {} attempts (retried errors: {retried})",
            s.state(),
            s.attempts.len()
        );
    }
    ensure!(
        kills > 0,
        "the load finished before any connection was killed"
    );
    backend.drop_schema().await.map_err(fail("drop"))?;
    Ok(())
}

/// The reply to a `create_execution` without an idempotency key is lost after its commit
/// landed (a proxy closes the connection between the server's commit and the client reading
/// the answer): the backend's own retry finds the row its first attempt inserted — the
/// server answers the retry `INSERT 0 0` — and the call reports that one execution as created.
/// Exactly one execution exists afterwards.
async fn lost_create_reply(url: String) -> TestResult {
    let server: tokio_postgres::Config = url.parse().map_err(fail("parse FF_POSTGRES_URL"))?;
    let (Some(tokio_postgres::config::Host::Tcp(host)), Some(port)) =
        (server.get_hosts().first(), server.get_ports().first())
    else {
        return Err(Failed::from(
            "FF_POSTGRES_URL must name a TCP host and port",
        ));
    };
    let proxy = super::proxy::Proxy::start(format!("{host}:{port}"))
        .await
        .map_err(fail("start proxy"))?;
    let mut proxied = format!(
        "host=127.0.0.1 port={} user={} dbname={}",
        proxy.addr().port(),
        server.get_user().unwrap_or("postgres"),
        server.get_dbname().unwrap_or("postgres")
    );
    if let Some(password) = server.get_password() {
        proxied.push_str(&format!(" password={}", String::from_utf8_lossy(password)));
    }
    // Hints off: the create is then a bare INSERT whose command tag the proxy can pick out
    // (with hints the same INSERT is wrapped in a SELECT); the retry path is the same.
    let backend = fresh(
        config(&proxied, "lostreply")
            .with_pool_size(1)
            .with_hints(false),
    )
    .await?;
    let lane = Lane::new("lost").map_err(fail("lane"))?;
    let spec = ExecutionSpec::new(lane.clone(), b"once".to_vec());
    // Warm the pool and the statement cache, so the lost reply is the insert's.
    backend.now().await.map_err(fail("now"))?;
    proxy.arm("INSERT");
    let created = backend
        .create_execution(&spec)
        .await
        .map_err(fail("create_execution through a lost reply"))?;
    let (tags, dropped) = proxy.seen();
    let inserts: Vec<&String> = tags.iter().filter(|t| t.starts_with("INSERT")).collect();
    ensure!(
        dropped == 1,
        "the proxy lost {dropped} replies (tags {tags:?})"
    );
    ensure!(
        inserts == ["INSERT 0 1", "INSERT 0 0"],
        "expected the first insert to land and its retry to find it: {inserts:?}"
    );
    ensure!(
        created.created,
        "the call's own execution is reported as created"
    );
    let page = backend
        .list_executions(&ff_core::ListQuery::new(
            created.id.partition(),
            ExecutionState::Ready,
        ))
        .await
        .map_err(fail("list"))?;
    ensure!(
        page.items.iter().map(|i| i.id).collect::<Vec<_>>() == [created.id],
        "exactly one execution: {:?}",
        page.items
    );
    let total = raw(
        &url,
        "SELECT count(*)::int, 0 FROM fft_lostreply.ff_execution",
    )
    .await?;
    ensure!(total.0 == 1, "{} executions in the schema", total.0);
    backend.drop_schema().await.map_err(fail("drop"))?;
    Ok(())
}

/// Calls `f` until it succeeds or fails with a non-retryable error (at most 50 times).
async fn retrying<T, F, Fut>(f: F) -> Result<T, Failed>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<T, EngineError>>,
{
    let mut last = None;
    for _ in 0..50 {
        match f().await {
            Ok(v) => return Ok(v),
            Err(e) if e.is_retryable() => {
                last = Some(e);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => return Err(Failed::from(e.to_string())),
        }
    }
    Err(Failed::from(format!("still failing: {last:?}")))
}

/// A flow `root → 600 children`, every completion deferred (inline limit 0). A child process
/// drains the outbox in chunks of 20 edges and is killed with SIGKILL in the middle; this
/// process then finishes the cascade: every child becomes ready exactly once and every edge is
/// applied once.
async fn killed_drainer(url: String) -> TestResult {
    let cfg = config(&url, "sigkill")
        .with_inline_cascade_limit(0)
        .with_cascade_chunk(20);
    let backend = fresh(cfg).await?;
    let (flow, root) = wide_flow(&backend, "sigkill", 600).await?;
    let exe = std::env::current_exe().map_err(fail("current exe"))?;
    let mut child = tokio::process::Command::new(exe)
        .env(super::DRAIN_CHILD_ENV, "fft_sigkill")
        .env("FF_POSTGRES_URL", &url)
        .kill_on_drop(true)
        .spawn()
        .map_err(fail("spawn drainer"))?;
    let _ = root;
    // Wait until the child is in the middle of the cascade.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let applied_mid = loop {
        let applied = applied_edges(&backend, &flow).await?;
        if applied >= 100 {
            break applied;
        }
        ensure!(
            tokio::time::Instant::now() < deadline,
            "the drainer applied only {applied} edges"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    child.start_kill().map_err(fail("SIGKILL"))?;
    child.wait().await.map_err(fail("wait child"))?;
    let after_kill = applied_edges(&backend, &flow).await?;
    ensure!(
        after_kill < 600,
        "the drainer finished ({after_kill}) before it was killed"
    );
    settle(&backend).await.map_err(fail("settle"))?;
    let snapshot = backend
        .describe_flow(&flow)
        .await
        .map_err(fail("describe"))?;
    ensure!(
        snapshot.edges.iter().all(|e| e.applied),
        "unapplied edges left"
    );
    for group in &snapshot.groups {
        ensure!(
            group.satisfied == 1 && group.unsatisfied == 0,
            "{}: satisfied {} unsatisfied {} (applied twice or never)",
            group.node,
            group.satisfied,
            group.unsatisfied
        );
    }
    let ready = snapshot
        .members
        .iter()
        .filter(|m| m.state == ExecutionState::Ready)
        .count();
    ensure!(
        ready == 600,
        "{ready} children ready (killed at {applied_mid}..{after_kill})"
    );
    let pending = backend
        .pending_completions(flow.partition(&backend.partition_config()), 10)
        .await
        .map_err(fail("pending"))?;
    ensure!(pending.is_empty(), "outbox not empty: {pending:?}");
    backend.drop_schema().await.map_err(fail("drop"))?;
    Ok(())
}

/// Two backend instances drain one outbox at once (each event of a 400-wide fan-out, in
/// chunks of 16): each edge is applied exactly once.
async fn two_drainers(url: String) -> TestResult {
    let cfg = config(&url, "drainers")
        .with_inline_cascade_limit(0)
        .with_cascade_chunk(16);
    let backend = fresh(cfg.clone()).await?;
    let other = PostgresBackend::connect(cfg)
        .await
        .map_err(fail("second instance"))?;
    let mut flows = Vec::new();
    for i in 0..3 {
        let (flow, _) = wide_flow(&backend, &format!("drain{i}"), 400).await?;
        flows.push(flow);
    }
    let (a, b) = tokio::join!(settle_counting(&backend), settle_counting(&other));
    let total = a.map_err(fail("drainer a"))? + b.map_err(fail("drainer b"))?;
    ensure!(total == 1200, "edges applied {total}, expected 1200 (a+b)");
    for flow in &flows {
        let snapshot = backend
            .describe_flow(flow)
            .await
            .map_err(fail("describe"))?;
        for group in &snapshot.groups {
            ensure!(
                group.satisfied == 1,
                "{}: satisfied {}",
                group.node,
                group.satisfied
            );
        }
    }
    backend.drop_schema().await.map_err(fail("drop"))?;
    Ok(())
}

/// A flow larger than `cancel_chunk`: `cancel_flow` cancels one chunk and defers the rest;
/// none of the deferred members can be claimed; the cancel-backlog scanner finishes the job.
async fn cancel_backlog(url: String) -> TestResult {
    let backend = fresh(config(&url, "backlog").with_cancel_chunk(5)).await?;
    let lane = Lane::new("backlog").map_err(fail("lane"))?;
    let mut spec = FlowSpec::new();
    for i in 0..20 {
        spec = spec.node(NodeSpec::new(
            key(&format!("n{i}")),
            ExecutionSpec::new(lane.clone(), vec![]),
        ));
    }
    let flow = backend.create_flow(&spec).await.map_err(fail("create"))?;
    let outcome = backend
        .cancel_flow(&flow.flow_id, ff_core::CancelFlowMode::CancelAll)
        .await
        .map_err(fail("cancel"))?;
    ensure!(
        outcome.cancelled == 5 && outcome.deferred == 15,
        "cancel outcome {outcome:?}"
    );
    let claimed = backend
        .claim(&ClaimRequest::new(WorkerId::random(), lane.clone()).with_max(20))
        .await
        .map_err(fail("claim"))?;
    ensure!(
        claimed.is_empty(),
        "claimed {} deferred members",
        claimed.len()
    );
    let partition = flow.flow_id.partition(&backend.partition_config());
    let mut rounds = 0;
    loop {
        let report = backend
            .scan(&ff_core::ScanRequest::new(
                partition,
                ff_core::ScanKind::CancelBacklog,
                10,
            ))
            .await
            .map_err(fail("scan"))?;
        rounds += 1;
        if report.backlog == 0 || rounds > 10 {
            break;
        }
    }
    let snapshot = backend
        .describe_flow(&flow.flow_id)
        .await
        .map_err(fail("describe"))?;
    ensure!(
        snapshot.state == FlowState::Cancelled && snapshot.counts.terminal == 20,
        "after {rounds} backlog rounds: {:?} {:?}",
        snapshot.state,
        snapshot.counts
    );
    backend.drop_schema().await.map_err(fail("drop"))?;
    Ok(())
}

async fn settle_counting(backend: &PostgresBackend) -> Result<u64, EngineError> {
    settle(backend).await
}

/// Creates `root → n children` on lane `lane`, claims and completes the root; returns the flow.
async fn wide_flow(
    backend: &PostgresBackend,
    lane: &str,
    n: usize,
) -> Result<(FlowId, ExecutionId), Failed> {
    let lane = Lane::new(lane).map_err(fail("lane"))?;
    let mut spec = FlowSpec::new().node(NodeSpec::new(
        key("root"),
        ExecutionSpec::new(lane.clone(), vec![]),
    ));
    for i in 0..n {
        let child = key(&format!("c{i}"));
        spec = spec
            .node(NodeSpec::new(
                child.clone(),
                ExecutionSpec::new(lane.clone(), vec![]),
            ))
            .edge(EdgeSpec::new(key("root"), child));
    }
    let created = backend
        .create_flow(&spec)
        .await
        .map_err(fail("create wide flow"))?;
    let claimed = backend
        .claim(&ClaimRequest::new(WorkerId::random(), lane))
        .await
        .map_err(fail("claim root"))?;
    let root = claimed
        .first()
        .ok_or_else(|| Failed::from("root not claimable"))?;
    backend
        .complete(&CompleteRequest::new(root.fence))
        .await
        .map_err(fail("complete root"))?;
    Ok((created.flow_id, root.id()))
}

async fn applied_edges(backend: &PostgresBackend, flow: &FlowId) -> Result<usize, Failed> {
    let snapshot = backend
        .describe_flow(flow)
        .await
        .map_err(fail("describe"))?;
    Ok(snapshot.edges.iter().filter(|e| e.applied).count())
}
