//! `cargo xtask ci`: everything CI checks, in order, stopping at the first failure.
//!
//! 1. `cargo fmt --all -- --check`
//! 2. `cargo clippy --workspace --all-targets --all-features -- -D warnings`
//! 3. exactly `cargo xtask test` (the same function, default arguments)
//!
//! `cargo xtask lint` is steps 1 and 2. `.ci/run` runs `cargo xtask lint`, then the README's
//! test command `cargo xtask test` itself, so a green `cargo xtask ci` means a green CI.

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

/// The steps that check the code without running it (fmt, clippy).
const LINT_STEPS: usize = 2;

/// `cargo xtask ci`: every step.
pub fn run() -> anyhow::Result<ExitCode> {
    run_steps(&STEPS)
}

/// `cargo xtask lint`: the fmt and clippy steps.
pub fn lint() -> anyhow::Result<ExitCode> {
    run_steps(&STEPS[..LINT_STEPS])
}

/// Runs `steps` in order; returns the exit code of the first failing step, or success.
fn run_steps(steps: &[Step]) -> anyhow::Result<ExitCode> {
    let total = Instant::now();
    let mut timings: Vec<(&str, Duration, &str)> = Vec::new();
    let mut result = Ok(ExitCode::SUCCESS);
    for (index, step) in steps.iter().enumerate() {
        eprintln!();
        eprintln!("==================================================================");
        eprintln!("==> ci step {}/{}: {}", index + 1, steps.len(), step.title);
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
    for step in steps.iter().skip(timings.len()) {
        eprintln!("    {:<6} {:>8}  {}", "skip", "-", step.title);
    }
    result
}
