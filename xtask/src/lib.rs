//! `cargo xtask`: FlowFabric's task runner.
//!
//! The whole command line is declared once, in [`Cli`], with clap's derive API, so `--help`
//! is generated from the same types that the commands receive and cannot go stale.
//!
//! - `services up|down|status`: local Valkey (standalone and a 3-master cluster) and
//!   PostgreSQL servers for development, under `target/services/`, on loopback ports chosen
//!   by binding port 0.
//! - `test`: fresh servers of every kind, then `cargo test --workspace --all-features` against
//!   them; every server it started is stopped afterwards, whatever the outcome.
//! - `lint`: formatting check and clippy. `ci`: `lint`, then exactly what `test` does — the
//!   steps `.ci/run` runs (`cargo xtask lint`, then `cargo xtask test`), so "if
//!   `cargo xtask ci` passes locally, CI is green".
//! - `demo`: the engine demo ([`demo`]).
//! - `bench`: every backend and the bare queues it is judged against, measured in one run
//!   ([`bench`]).
//!
//! The crate is a library plus a thin binary so that later commands (`bench`) can reuse
//! [`services::start`], which starts a chosen set of servers and returns their handles and
//! URLs.

pub mod bench;
pub mod ci;
pub mod demo;
pub mod interrupt;
pub mod paths;
pub mod process;
pub mod services;
pub mod test_run;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// The `cargo xtask` command line.
#[derive(Parser, Debug)]
#[command(
    name = "cargo xtask",
    bin_name = "cargo xtask",
    about = "FlowFabric's task runner: local servers, tests, CI, demo",
    arg_required_else_help = true
)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands of `cargo xtask`.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Start, stop or inspect local Valkey / PostgreSQL servers for development.
    Services(services::command::ServicesArgs),
    /// Run the workspace tests against fresh servers that are stopped afterwards.
    Test(test_run::TestArgs),
    /// Everything CI checks: `lint`, then `test`.
    Ci,
    /// `cargo fmt --check` and clippy with `-D warnings`.
    Lint,
    /// Run the demo.
    Demo(demo::DemoArgs),
    /// Measure every backend and the bare Valkey / Postgres queues they are judged against,
    /// in release mode on servers it starts; writes target/bench/report.{md,json}, chart.svg.
    Bench(bench::BenchArgs),
    /// The measuring half of `bench` (run by it in a release build).
    #[command(hide = true)]
    BenchRun(bench::BenchArgs),
}

/// Runs one parsed command and returns the process exit code.
///
/// Installs the interrupt handler first: from then on Ctrl-C (or SIGTERM/SIGHUP) no longer
/// kills the task runner outright; every wait notices it and unwinds, so the servers it
/// started are stopped on the way out.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    interrupt::install()?;
    match cli.command {
        Command::Services(args) => services::command::run(args),
        Command::Test(args) => test_run::run(&args),
        Command::Ci => ci::run(),
        Command::Lint => ci::lint(),
        Command::Demo(args) => demo::run(args).map(|()| ExitCode::SUCCESS),
        Command::Bench(args) => bench::run(args),
        Command::BenchRun(args) => bench::run_measurements(args),
    }
}
