//! `cargo xtask ci`: everything CI checks, in order, stopping at the first failure.
//!
//! 1. `cargo fmt --all -- --check`
//! 2. `cargo clippy --workspace --all-targets --all-features -- -D warnings`
//! 3. exactly `cargo xtask test` (the same function, default arguments)
//!
//! `.ci/run` runs this and nothing else, so a green `cargo xtask ci` means a green CI.

use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use crate::paths;
use crate::test_run::{self, TestArgs};

/// One step: its title and how to run it.
struct Step {
    title: &'static str,
    run: fn() -> anyhow::Result<ExitCode>,
}

const STEPS: [Step; 3] = [
    Step {
        title: "cargo fmt --all -- --check",
        run: fmt,
    },
    Step {
        title: "cargo clippy --workspace --all-targets --all-features -- -D warnings",
        run: clippy,
    },
    Step {
        title: "cargo xtask test",
        run: test,
    },
];

fn cargo(args: &[&str]) -> Command {
    let mut cmd = Command::new(paths::cargo());
    cmd.current_dir(paths::workspace_root()).args(args);
    cmd
}

fn fmt() -> anyhow::Result<ExitCode> {
    test_run::run_to_end(cargo(&["fmt", "--all", "--", "--check"]))
}

fn clippy() -> anyhow::Result<ExitCode> {
    test_run::run_to_end(cargo(&[
        "clippy",
        "--workspace",
        "--all-targets",
        "--all-features",
        "--",
        "-D",
        "warnings",
    ]))
}

fn test() -> anyhow::Result<ExitCode> {
    test_run::run(&TestArgs::default())
}

/// Runs the steps in order; returns the exit code of the first failing step, or success.
pub fn run() -> anyhow::Result<ExitCode> {
    let total = Instant::now();
    let mut timings: Vec<(&str, Duration, &str)> = Vec::new();
    let mut result = Ok(ExitCode::SUCCESS);
    for (index, step) in STEPS.iter().enumerate() {
        eprintln!();
        eprintln!("==================================================================");
        eprintln!("==> ci step {}/{}: {}", index + 1, STEPS.len(), step.title);
        eprintln!("==================================================================");
        let started = Instant::now();
        let outcome = (step.run)();
        let elapsed = started.elapsed();
        let verdict = match &outcome {
            Ok(code) if *code == ExitCode::SUCCESS => "ok",
            Ok(_) => "FAILED",
            Err(_) => "ERROR",
        };
        eprintln!(
            "==> {} {verdict} in {:.1}s",
            step.title,
            elapsed.as_secs_f64()
        );
        timings.push((step.title, elapsed, verdict));
        if verdict != "ok" {
            result = outcome.map(|code| {
                if code == ExitCode::SUCCESS {
                    ExitCode::FAILURE
                } else {
                    code
                }
            });
            break;
        }
    }
    eprintln!();
    eprintln!(
        "==> ci summary ({:.1}s total)",
        total.elapsed().as_secs_f64()
    );
    for (title, elapsed, verdict) in &timings {
        eprintln!("    {verdict:<6} {:>7.1}s  {title}", elapsed.as_secs_f64());
    }
    for step in STEPS.iter().skip(timings.len()) {
        eprintln!("    {:<6} {:>8}  {}", "skip", "-", step.title);
    }
    result
}
