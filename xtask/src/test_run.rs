//! `cargo xtask test`: the workspace tests against fresh servers.
//!
//! Starts its own standalone Valkey, 3-master Valkey Cluster and PostgreSQL under
//! `target/services-test/run-<pid>/` (never the servers of `services up`), exports their
//! URLs plus `FF_REQUIRE_SERVERS=1` (a suite that cannot reach a server fails instead of
//! skipping), runs `cargo test --workspace --all-features`, and stops every server whatever
//! happened: test failure, error, panic (the handles stop on drop) or Ctrl-C (the interrupt
//! flag unwinds the wait). A run killed outright (SIGKILL) leaves its `state.json`; the next
//! run stops what it lists. The exit code is the one of `cargo test`.

use std::path::Path;
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use nix::sys::signal::Signal;

use crate::interrupt::{self, Interrupted};
use crate::paths;
use crate::process;
use crate::services::{
    self, ALL_ENV_VARS, Durability, ENV_REQUIRE_SERVERS, Selection, State, remove_dir,
};

/// Arguments of `cargo xtask test` (and of the test step of `cargo xtask ci`).
#[derive(Args, Debug, Default, Clone)]
pub struct TestArgs {
    /// Start no server and run only what needs none: the FF_* server variables are removed
    /// from the test environment and FF_REQUIRE_SERVERS is not set.
    #[arg(long)]
    pub no_services: bool,
    /// Passed on to `cargo test` after `--workspace --all-features`: a test-name filter,
    /// `-p CRATE` (replaces `--workspace`), `-- --nocapture`, ...
    #[arg(last = true, value_name = "CARGO_TEST_ARGS")]
    pub cargo_args: Vec<String>,
}

/// Runs the tests as described in the module docs; returns `cargo test`'s exit code.
pub fn run(args: &TestArgs) -> anyhow::Result<ExitCode> {
    let mut cmd = cargo_test_command(&args.cargo_args);
    if args.no_services {
        for var in ALL_ENV_VARS {
            cmd.env_remove(var);
        }
        return run_to_end(cmd);
    }

    stop_leftovers(&paths::test_services_dir())?;
    let root = paths::test_services_dir().join(format!("run-{}", std::process::id()));
    if root.exists() {
        std::fs::remove_dir_all(&root).with_context(|| format!("wiping {}", root.display()))?;
    }
    eprintln!("xtask: starting Valkey, a 3-master Valkey Cluster and PostgreSQL for the tests");
    let started = Instant::now();
    let services = services::start(&Selection::all(), &root, Durability::Throwaway)?;
    eprintln!(
        "xtask: servers ready in {:.1}s:",
        started.elapsed().as_secs_f64()
    );
    for (name, value) in services.urls().env_vars() {
        eprintln!("xtask:   {name}={value}");
        cmd.env(name, value);
    }
    cmd.env(ENV_REQUIRE_SERVERS, "1");

    let outcome = run_to_end(cmd);
    eprintln!("xtask: stopping the test servers");
    let stopped = services.stop_and_remove();
    match (outcome, stopped) {
        (Ok(code), Ok(())) => Ok(code),
        (Ok(_), Err(err)) => Err(err.context("the tests ran, but stopping their servers failed")),
        (Err(err), Ok(())) => Err(err),
        (Err(err), Err(stop_err)) => {
            eprintln!("xtask: also, stopping the servers failed: {stop_err:#}");
            Err(err)
        }
    }
}

/// `cargo test --workspace --all-features EXTRA...`, without `--workspace` when the extra
/// arguments pick packages themselves (cargo rejects the combination otherwise).
fn cargo_test_command(extra: &[String]) -> Command {
    let mut cmd = Command::new(paths::cargo());
    cmd.current_dir(paths::workspace_root()).arg("test");
    let cargo_part = extra.iter().take_while(|arg| arg.as_str() != "--");
    let picks_packages = cargo_part.clone().any(|arg| {
        arg == "-p" || arg == "--package" || arg.starts_with("--package=") || arg.starts_with("-p")
    });
    if !picks_packages {
        cmd.arg("--workspace");
    }
    cmd.arg("--all-features").args(extra);
    cmd
}

/// Runs `cmd` in our process group (a terminal Ctrl-C reaches it directly) and waits for it.
///
/// On an interrupt request the child gets SIGINT (it may already have it), then SIGKILL if
/// it has not exited within 15 s, and the run ends with [`Interrupted`].
pub fn run_to_end(mut cmd: Command) -> anyhow::Result<ExitCode> {
    let line = process::describe(&cmd);
    eprintln!("xtask: running `{line}`");
    let mut child = cmd
        .spawn()
        .with_context(|| format!("could not start `{line}`"))?;
    loop {
        if let Some(status) = child
            .try_wait()
            .with_context(|| format!("waiting for `{line}`"))?
        {
            if interrupt::requested() {
                return Err(Interrupted.into());
            }
            return Ok(ExitCode::from(process::exit_code(status)));
        }
        if interrupt::requested() {
            process::send_signal(child.id(), Signal::SIGINT)?;
            let deadline = Instant::now() + Duration::from_secs(15);
            while child
                .try_wait()
                .context("waiting for the interrupted child")?
                .is_none()
            {
                if Instant::now() >= deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            return Err(Interrupted.into());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Stops the servers of earlier test runs whose task runner died without stopping them
/// (their `state.json` names an owner pid that no longer exists), and removes their
/// directories. Runs of a live xtask (another terminal) are left alone.
fn stop_leftovers(test_dir: &Path) -> anyhow::Result<()> {
    let Ok(entries) = std::fs::read_dir(test_dir) else {
        return Ok(());
    };
    for entry in entries.flatten() {
        let run_dir = entry.path();
        if !entry.file_name().to_string_lossy().starts_with("run-") {
            continue;
        }
        let state = match State::load(&run_dir) {
            Ok(state) => state,
            Err(err) => {
                eprintln!("xtask: ignoring {}: {err:#}", run_dir.display());
                continue;
            }
        };
        // Any live process with that pid counts: better to leave a leftover for later than
        // to stop the servers of a run that is still going.
        let owner_alive = state
            .as_ref()
            .and_then(|s| s.owner_pid)
            .is_some_and(process::pid_exists);
        if owner_alive {
            continue;
        }
        if let Some(state) = &state {
            eprintln!(
                "xtask: stopping servers left by an earlier test run in {}",
                run_dir.display()
            );
            state.stop_all()?;
            for dir in state.dirs_outside(&run_dir) {
                remove_dir(&dir)?;
            }
        }
        remove_dir(&run_dir)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args_of(extra: &[&str]) -> Vec<String> {
        let extra: Vec<String> = extra.iter().map(|s| (*s).to_owned()).collect();
        cargo_test_command(&extra)
            .get_args()
            .map(|arg| arg.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn extra_arguments_follow_the_workspace_flags() {
        assert_eq!(args_of(&[]), ["test", "--workspace", "--all-features"]);
        assert_eq!(
            args_of(&["cascade", "--", "--nocapture"]),
            [
                "test",
                "--workspace",
                "--all-features",
                "cascade",
                "--",
                "--nocapture"
            ]
        );
    }

    #[test]
    fn picking_a_package_drops_workspace() {
        assert_eq!(
            args_of(&["-p", "ff-core"]),
            ["test", "--all-features", "-p", "ff-core"]
        );
        assert_eq!(
            args_of(&["--package=ff-core"]),
            ["test", "--all-features", "--package=ff-core"]
        );
        // After `--` the arguments belong to the test binary, not to cargo.
        assert_eq!(
            args_of(&["--", "-p"]),
            ["test", "--workspace", "--all-features", "--", "-p"]
        );
    }
}
