//! `cargo xtask bench`: every backend and the bare ceilings it is judged against, measured
//! in one run on one machine, written up as JSON, markdown and an SVG chart.
//!
//! # Two processes
//!
//! `cargo xtask` runs a debug build, and a benchmark of unoptimized code measures the wrong
//! thing. So `bench` (this process) only orchestrates: it builds the task runner in release
//! mode (`cargo build --release -p xtask`), starts a standalone Valkey and a PostgreSQL under
//! `target/bench/services/` with their durable settings (AOF on; fsync and synchronous commit
//! on) through [`crate::services::start`], runs the release binary's hidden `bench-run`
//! command with the servers' URLs in `FF_VALKEY_URL` / `FF_POSTGRES_URL`, and stops the
//! servers afterwards whatever happened — error, panic of the child, or Ctrl-C (the child and
//! this process both see the interrupt; the child unwinds its measurement, this process stops
//! the servers). `--no-release` measures in this process instead, only to work on the bench
//! itself. `bench-run` can also be pointed at running servers (`cargo xtask services up`) by
//! setting the two variables by hand.
//!
//! # What `bench-run` does
//!
//! For each of `--runs` runs, for each backend: the bare ceilings of its server right before
//! the flat workload (so a ratio compares measurements taken back to back), then every
//! workload of [`workload`], each on a fresh deployment ([`target`]) that is removed
//! afterwards. Ratios (flat ÷ ceiling, chain ÷ flat) are computed within each run, then every
//! figure is summarized over the runs ([`stats`]) into a [`report::Report`], written to
//! `target/bench/report.json`, `report.md` and `chart.svg`. A measurement that fails is
//! recorded in the report and the run goes on; the exit code is then non-zero. The DESIGN §9
//! bars are reported, never asserted.

pub mod ceiling;
pub mod chart;
pub mod counting;
pub mod machine;
pub mod report;
pub mod resources;
pub mod stats;
pub mod target;
pub mod workload;

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};

use crate::interrupt::{self, Interrupted};
use crate::paths;
use crate::process;
use crate::services::{
    self, Durability, ENV_POSTGRES_URL, ENV_VALKEY_URL, Selection, State, remove_dir,
};
use crate::test_run::run_to_end;

use self::ceiling::Ceiling;
use self::machine::Machine;
use self::report::{
    Failure, POSTGRES_BARE, POSTGRES_BARE_SINGLE, Report, Settings, Sizes, VALKEY_BARE,
    VALKEY_BARE_SINGLE, VALKEY_LUA_FLOOR,
};
use self::stats::Summary;
use self::target::{BackendKind, Servers, Target};
use self::workload::{Figures, Shape};

/// A workload of the bench.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub enum Workload {
    /// Standalone executions, and the bare ceilings.
    Flat,
    /// 10-node chains.
    Chain,
    /// 1 → 100 → 1 flows with an engine.
    Fanout,
    /// One cascade at a time on an idle system.
    Probe,
    /// Storage per finished execution (server backends).
    Footprint,
    /// Backend calls of an idle engine.
    Idle,
}

impl Workload {
    /// Every workload, in run order.
    pub const ALL: [Workload; 6] = [
        Workload::Flat,
        Workload::Chain,
        Workload::Fanout,
        Workload::Probe,
        Workload::Footprint,
        Workload::Idle,
    ];

    /// The stable lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            Workload::Flat => "flat",
            Workload::Chain => "chain",
            Workload::Fanout => "fanout",
            Workload::Probe => "probe",
            Workload::Footprint => "footprint",
            Workload::Idle => "idle",
        }
    }

    /// Whether it runs on `kind`.
    fn applies_to(self, kind: BackendKind) -> bool {
        !(self == Workload::Footprint && kind == BackendKind::Memory)
    }
}

/// Arguments of `cargo xtask bench` (and of the internal `bench-run`).
#[derive(Args, Debug, Clone)]
pub struct BenchArgs {
    /// Small sizes: the whole run in under two minutes, for CI-like checks.
    #[arg(long)]
    pub quick: bool,
    /// Backends to measure, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "memory,valkey,postgres")]
    pub backends: Vec<BackendKind>,
    /// Runs of every measurement; every figure is the median of the runs [default: 5, 3
    /// with --quick].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=50))]
    pub runs: Option<u32>,
    /// Workloads to measure, comma-separated (default: all). The bare ceilings run with
    /// `flat`.
    #[arg(long, value_delimiter = ',')]
    pub workloads: Vec<Workload>,
    /// Where to write report.json, report.md and chart.svg [default: target/bench].
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Measure in this (debug) process instead of a release build: only for working on the
    /// bench itself, the numbers mean nothing.
    #[arg(long)]
    pub no_release: bool,
}

impl BenchArgs {
    fn backends(&self) -> Vec<BackendKind> {
        BackendKind::ALL
            .into_iter()
            .filter(|b| self.backends.contains(b))
            .collect()
    }

    fn workloads(&self) -> Vec<Workload> {
        if self.workloads.is_empty() {
            return Workload::ALL.to_vec();
        }
        Workload::ALL
            .into_iter()
            .filter(|w| self.workloads.contains(w))
            .collect()
    }

    /// Runs of every measurement: five by default, so that one disturbed run cannot move a
    /// median; three for a quick check.
    fn runs(&self) -> u32 {
        self.runs.unwrap_or(if self.quick { 3 } else { 5 })
    }

    fn sizes(&self) -> Sizes {
        if self.quick {
            Sizes::QUICK
        } else {
            Sizes::DEFAULT
        }
    }

    fn out_dir(&self) -> PathBuf {
        self.out
            .clone()
            .unwrap_or_else(|| paths::target_dir().join("bench"))
    }

    /// The arguments of the `bench-run` child that does the measuring.
    fn child_args(&self, out: &Path) -> Vec<String> {
        let join = |names: Vec<&str>| names.join(",");
        let mut args = vec![
            "bench-run".to_owned(),
            "--runs".to_owned(),
            self.runs().to_string(),
            "--backends".to_owned(),
            join(self.backends().into_iter().map(BackendKind::name).collect()),
            "--workloads".to_owned(),
            join(self.workloads().into_iter().map(Workload::name).collect()),
            "--out".to_owned(),
            out.display().to_string(),
        ];
        if self.quick {
            args.push("--quick".to_owned());
        }
        args
    }
}

/// `cargo xtask bench`: builds the release binary, starts the servers, runs `bench-run`,
/// stops the servers. See the module docs.
pub fn run(args: BenchArgs) -> anyhow::Result<ExitCode> {
    let out = std::path::absolute(args.out_dir()).context("resolving the output directory")?;
    let binary = if args.no_release {
        None
    } else {
        Some(build_release()?)
    };

    let backends = args.backends();
    let selection = Selection {
        valkey: backends.contains(&BackendKind::Valkey),
        valkey_cluster: false,
        postgres: backends.contains(&BackendKind::Postgres),
    };
    let root = out.join("services");
    let services = if selection.is_empty() {
        None
    } else {
        stop_leftovers(&root)?;
        eprintln!(
            "xtask: starting the benchmark's servers under {}",
            root.display()
        );
        let started = Instant::now();
        let services = services::start(&selection, &root, Durability::Durable)?;
        eprintln!(
            "xtask: servers ready in {:.1}s",
            started.elapsed().as_secs_f64()
        );
        Some(services)
    };
    let urls = services
        .as_ref()
        .map(|s| s.urls().clone())
        .unwrap_or_default();

    let outcome = match binary {
        Some(binary) => {
            let mut cmd = Command::new(binary);
            cmd.current_dir(paths::workspace_root())
                .args(args.child_args(&out));
            for (name, value) in urls.env_vars() {
                cmd.env(name, value);
            }
            run_to_end(cmd)
        }
        None => measure(
            &args,
            &out,
            Servers {
                valkey_url: urls.valkey.clone(),
                postgres_url: urls.postgres.clone(),
            },
        ),
    };

    let stopped = match services {
        Some(services) => {
            eprintln!("xtask: stopping the benchmark's servers");
            services.stop_and_remove()
        }
        None => Ok(()),
    };
    match (outcome, stopped) {
        (Ok(code), Ok(())) => Ok(code),
        (Ok(_), Err(err)) => Err(err.context("the bench ran, but stopping its servers failed")),
        (Err(err), Ok(())) => Err(err),
        (Err(err), Err(stop_err)) => {
            eprintln!("xtask: also, stopping the servers failed: {stop_err:#}");
            Err(err)
        }
    }
}

/// `bench-run`: the measuring half, run by `bench` in a release build, against the servers
/// named by `FF_VALKEY_URL` / `FF_POSTGRES_URL`.
pub fn run_measurements(args: BenchArgs) -> anyhow::Result<ExitCode> {
    let out = std::path::absolute(args.out_dir()).context("resolving the output directory")?;
    let servers = Servers {
        valkey_url: std::env::var(ENV_VALKEY_URL).ok().filter(|s| !s.is_empty()),
        postgres_url: std::env::var(ENV_POSTGRES_URL)
            .ok()
            .filter(|s| !s.is_empty()),
    };
    measure(&args, &out, servers)
}

/// `cargo build --release -p xtask`; returns the binary.
fn build_release() -> anyhow::Result<PathBuf> {
    eprintln!("xtask: building the task runner in release mode for the measurements");
    let mut cmd = Command::new(paths::cargo());
    cmd.current_dir(paths::workspace_root())
        .args(["build", "--release", "--package", "xtask"]);
    let line = process::describe(&cmd);
    let status = cmd
        .status()
        .with_context(|| format!("could not start `{line}`"))?;
    interrupt::check()?;
    anyhow::ensure!(status.success(), "`{line}` failed ({status})");
    let binary = paths::target_dir().join("release").join("xtask");
    anyhow::ensure!(
        binary.is_file(),
        "`{line}` succeeded but left no binary at {}",
        binary.display()
    );
    Ok(binary)
}

/// Stops the servers of an earlier bench whose task runner died without stopping them;
/// refuses to touch the servers of a bench that is still running.
fn stop_leftovers(root: &Path) -> anyhow::Result<()> {
    if let Some(state) = State::load(root)? {
        if let Some(owner) = state.owner_pid.filter(|pid| process::pid_exists(*pid)) {
            anyhow::bail!(
                "another bench (pid {owner}) is using {}; wait for it or stop it",
                root.display()
            );
        }
        eprintln!(
            "xtask: stopping servers left by an earlier bench in {}",
            root.display()
        );
        state.stop_all()?;
        for dir in state.dirs_outside(root) {
            remove_dir(&dir)?;
        }
    }
    remove_dir(root)
}

/// Runs every measurement and writes the report; the exit code is non-zero when a
/// measurement failed.
fn measure(args: &BenchArgs, out: &Path, servers: Servers) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("building the tokio runtime")?;
    let report = runtime.block_on(async {
        tokio::select! {
            report = measure_all(args, &servers) => report,
            () = wait_for_interrupt() => Err(Interrupted.into()),
        }
    })?;
    // Drop the runtime (and any task an interrupt left behind) before writing.
    runtime.shutdown_timeout(Duration::from_secs(5));

    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let json = out.join("report.json");
    std::fs::write(
        &json,
        serde_json::to_string_pretty(&report).context("serializing the report")? + "\n",
    )
    .with_context(|| format!("writing {}", json.display()))?;
    let md = out.join("report.md");
    std::fs::write(&md, report.markdown()).with_context(|| format!("writing {}", md.display()))?;
    let svg = out.join("chart.svg");
    chart::draw(&report, &svg)?;

    eprintln!("\nxtask: bars (DESIGN §9):");
    for bar in &report.bars {
        let held = match bar.held {
            Some(true) => "held",
            Some(false) => "MISSED",
            None => "not measured",
        };
        let median = bar.measured.as_ref().map_or_else(String::new, |s| {
            format!(" (median {})", report::number(s.median))
        });
        eprintln!("xtask:   {:<8} {:<60} {held}{median}", bar.backend, bar.bar);
    }
    eprintln!(
        "xtask: report written to {}, {} and {}",
        md.display(),
        json.display(),
        svg.display()
    );
    if report.failures.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!(
            "xtask: {} measurement(s) failed; see the report",
            report.failures.len()
        );
        Ok(ExitCode::FAILURE)
    }
}

async fn wait_for_interrupt() {
    while !interrupt::requested() {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Collects the figures of every run.
#[derive(Default)]
struct Collector {
    /// subject → metric → one value per run that measured it.
    values: BTreeMap<String, BTreeMap<String, Vec<f64>>>,
    /// The current run's figures, for the ratios.
    this_run: BTreeMap<(String, String), f64>,
    notes: BTreeMap<String, Vec<String>>,
    failures: Vec<Failure>,
}

impl Collector {
    fn record(&mut self, subject: &str, key: &str, value: f64) {
        self.values
            .entry(subject.to_owned())
            .or_default()
            .entry(key.to_owned())
            .or_default()
            .push(value);
        self.this_run
            .insert((subject.to_owned(), key.to_owned()), value);
    }

    fn current(&self, subject: &str, key: &str) -> Option<f64> {
        self.this_run
            .get(&(subject.to_owned(), key.to_owned()))
            .copied()
    }

    /// Records `numerator ÷ denominator` of this run as `key` of `subject`.
    fn ratio(
        &mut self,
        subject: &str,
        key: &str,
        numerator: (&str, &str),
        denominator: (&str, &str),
    ) {
        if let (Some(n), Some(d)) = (
            self.current(numerator.0, numerator.1),
            self.current(denominator.0, denominator.1),
        ) && d > 0.0
        {
            self.record(subject, key, n / d);
        }
    }
}

/// One measurement to make.
struct Step {
    subject: &'static str,
    workload: Workload,
    kind: BackendKind,
    /// For a ceiling: which queue, and the most tasks one pop takes.
    ceiling: Option<Ceiling>,
}

async fn measure_all(args: &BenchArgs, servers: &Servers) -> anyhow::Result<Report> {
    let backends = args.backends();
    let workloads = args.workloads();
    let sizes = args.sizes();
    let shape = Shape::default();
    let started_at = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let started = Instant::now();
    let mut machine = Machine::probe();
    machine.probe_servers(servers).await;

    let mut steps = Vec::new();
    for &kind in &backends {
        if workloads.contains(&Workload::Flat) {
            // The ceiling of the bars (pops of up to a claim batch), then one task per pop,
            // then (Valkey) the Lua floor.
            let ceilings = match kind {
                BackendKind::Valkey => vec![
                    (VALKEY_BARE, Ceiling::Bare(shape.claim_batch)),
                    (VALKEY_BARE_SINGLE, Ceiling::Bare(1)),
                    (VALKEY_LUA_FLOOR, Ceiling::LuaFloor(shape.claim_batch)),
                ],
                BackendKind::Postgres => vec![
                    (POSTGRES_BARE, Ceiling::Bare(shape.claim_batch)),
                    (POSTGRES_BARE_SINGLE, Ceiling::Bare(1)),
                ],
                BackendKind::Memory => vec![],
            };
            for (subject, ceiling) in ceilings {
                steps.push(Step {
                    subject,
                    workload: Workload::Flat,
                    kind,
                    ceiling: Some(ceiling),
                });
            }
        }
        for &workload in &workloads {
            if workload.applies_to(kind) {
                steps.push(Step {
                    subject: kind.name(),
                    workload,
                    kind,
                    ceiling: None,
                });
            }
        }
    }

    let progress = ProgressBar::new(u64::from(args.runs()) * steps.len() as u64);
    progress.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:32}] {pos}/{len} {msg}")
            .map_err(|e| anyhow::anyhow!("progress bar template: {e}"))?
            .progress_chars("=> "),
    );
    let mut collector = Collector::default();
    for run in 1..=args.runs() {
        collector.this_run.clear();
        for step in &steps {
            let what = if step.ceiling.is_some() {
                "ceiling"
            } else {
                step.workload.name()
            };
            progress.set_message(format!(
                "run {run}/{} · {} · {what}",
                args.runs(),
                step.subject
            ));
            let outcome = measure_step(step, servers, shape, sizes).await;
            progress.inc(1);
            match outcome {
                Ok(figures) => {
                    say(
                        &progress,
                        format!(
                            "run {run}/{} {} {what}: {}",
                            args.runs(),
                            step.subject,
                            headline(&figures)
                        ),
                    );
                    for (key, value) in &figures.values {
                        collector.record(step.subject, key, *value);
                    }
                    if !figures.notes.is_empty() {
                        collector
                            .notes
                            .insert(format!("{} {what}", step.subject), figures.notes);
                    }
                }
                Err(err) => {
                    say(
                        &progress,
                        format!(
                            "run {run}/{} {} {what} FAILED: {err:#}",
                            args.runs(),
                            step.subject
                        ),
                    );
                    collector.failures.push(Failure {
                        run,
                        subject: step.subject.to_owned(),
                        workload: what,
                        error: format!("{err:#}"),
                    });
                }
            }
        }
        for (kind, bare, single) in [
            (BackendKind::Valkey, VALKEY_BARE, VALKEY_BARE_SINGLE),
            (BackendKind::Postgres, POSTGRES_BARE, POSTGRES_BARE_SINGLE),
        ] {
            let name = kind.name();
            collector.ratio(
                name,
                "flat.vs_ceiling",
                (name, "flat.exec_per_s"),
                (bare, "ceiling.exec_per_s"),
            );
            collector.ratio(
                name,
                "flat.vs_ceiling_single",
                (name, "flat.exec_per_s"),
                (single, "ceiling.exec_per_s"),
            );
        }
        collector.ratio(
            "valkey",
            "flat.vs_lua_floor",
            ("valkey", "flat.exec_per_s"),
            (VALKEY_LUA_FLOOR, "ceiling.exec_per_s"),
        );
        collector.ratio(
            VALKEY_LUA_FLOOR,
            "ceiling.vs_list_queue",
            (VALKEY_LUA_FLOOR, "ceiling.exec_per_s"),
            (VALKEY_BARE, "ceiling.exec_per_s"),
        );
        for kind in &backends {
            let name = kind.name();
            collector.ratio(
                name,
                "chain.dag_efficiency",
                (name, "chain.node_exec_per_s"),
                (name, "flat.exec_per_s"),
            );
        }
    }
    progress.finish_and_clear();
    machine.load_at_end = machine::load_average();

    let figures = collector
        .values
        .into_iter()
        .map(|(subject, metrics)| {
            let metrics = metrics
                .into_iter()
                .filter_map(|(key, values)| Summary::of(&values).map(|s| (key, s)))
                .collect();
            (subject, metrics)
        })
        .collect();
    let mut report = Report {
        started_at,
        duration_s: started.elapsed().as_secs_f64(),
        machine,
        settings: Settings {
            quick: args.quick,
            runs: args.runs(),
            backends: backends.iter().map(|b| b.name()).collect(),
            workloads: workloads.iter().map(|w| w.name()).collect(),
            sizes,
            shape,
        },
        figures,
        bars: Vec::new(),
        notes: collector.notes,
        failures: collector.failures,
    };
    report.evaluate_bars(&backends);
    Ok(report)
}

/// Runs one step on a fresh deployment (or a ceiling on its server).
async fn measure_step(
    step: &Step,
    servers: &Servers,
    shape: Shape,
    sizes: Sizes,
) -> anyhow::Result<Figures> {
    if let Some(ceiling) = step.ceiling {
        let n = sizes.flat.of(step.kind);
        return match (step.kind, ceiling) {
            (BackendKind::Valkey, ceiling) => {
                ceiling::valkey_queue::run(servers.valkey()?, shape, n, ceiling).await
            }
            (BackendKind::Postgres, Ceiling::Bare(batch)) => {
                ceiling::pg_queue::run(servers.postgres()?, shape, n, batch).await
            }
            (kind, ceiling) => anyhow::bail!("the {} backend has no {ceiling:?}", kind.name()),
        };
    }
    let target = Target::fresh(step.kind, servers).await?;
    let outcome = on_target(step.workload, &target, servers, shape, sizes).await;
    let disposed = target.dispose().await;
    let figures = outcome?;
    disposed.context("removing the bench deployment")?;
    Ok(figures)
}

fn on_target<'a>(
    workload: Workload,
    target: &'a Target,
    servers: &'a Servers,
    shape: Shape,
    sizes: Sizes,
) -> std::pin::Pin<Box<dyn Future<Output = anyhow::Result<Figures>> + Send + 'a>> {
    let kind = target.kind;
    match workload {
        Workload::Flat => Box::pin(workload::flat::run(
            target,
            servers,
            shape,
            sizes.flat.of(kind),
        )),
        Workload::Chain => Box::pin(workload::chain::run(
            target,
            servers,
            shape,
            sizes.chain_flows,
            sizes.chain_rounds().of(kind),
        )),
        Workload::Fanout => Box::pin(workload::fanout::run(
            target,
            shape,
            sizes.fanout_flows.of(kind),
        )),
        Workload::Probe => Box::pin(workload::probe::run(target, sizes.probe_samples)),
        Workload::Footprint => Box::pin(workload::footprint::run(target, shape, sizes.footprint)),
        Workload::Idle => Box::pin(workload::idle::run(
            target,
            servers,
            Duration::from_secs(sizes.idle_warmup_s),
            Duration::from_secs(sizes.idle_s),
        )),
    }
}

/// The first few figures, for the progress log.
fn headline(figures: &Figures) -> String {
    figures
        .values
        .iter()
        .take(4)
        .map(|(k, v)| format!("{k}={}", report::number(*v)))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Prints a line above the progress bar (or plainly when the bar is hidden, e.g. when
/// stderr is not a terminal).
fn say(progress: &ProgressBar, line: String) {
    if progress.is_hidden() {
        eprintln!("xtask: {line}");
    } else {
        progress.println(line);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        bench: BenchArgs,
    }

    #[test]
    fn defaults_and_child_arguments() {
        let cli = Cli::parse_from(["bench"]);
        assert_eq!(cli.bench.backends(), BackendKind::ALL.to_vec());
        assert_eq!(cli.bench.workloads(), Workload::ALL.to_vec());
        assert_eq!(cli.bench.runs(), 5);
        assert_eq!(Cli::parse_from(["bench", "--quick"]).bench.runs(), 3);
        let cli = Cli::parse_from([
            "bench",
            "--quick",
            "--backends",
            "postgres,memory",
            "--runs",
            "2",
        ]);
        assert_eq!(
            cli.bench.backends(),
            vec![BackendKind::Memory, BackendKind::Postgres]
        );
        let args = cli.bench.child_args(Path::new("/tmp/out"));
        assert_eq!(
            args,
            [
                "bench-run",
                "--runs",
                "2",
                "--backends",
                "memory,postgres",
                "--workloads",
                "flat,chain,fanout,probe,footprint,idle",
                "--out",
                "/tmp/out",
                "--quick"
            ]
        );
        assert!(Cli::try_parse_from(["bench", "--runs", "0"]).is_err());
    }

    /// Every workload runs end to end on the in-memory backend (no server needed) and
    /// reports its headline figures.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_workload_runs_on_the_memory_backend() -> anyhow::Result<()> {
        let servers = Servers::default();
        let sizes = Sizes {
            flat: report::PerBackend {
                memory: 300,
                valkey: 0,
                postgres: 0,
            },
            chain_flows: 5,
            fanout_flows: report::PerBackend {
                memory: 1,
                valkey: 0,
                postgres: 0,
            },
            probe_samples: 5,
            footprint: 10,
            idle_warmup_s: 0,
            idle_s: 1,
        };
        let expected = [
            (Workload::Flat, "flat.exec_per_s"),
            (Workload::Chain, "chain.node_exec_per_s"),
            (Workload::Fanout, "fanout.node_exec_per_s"),
            (Workload::Probe, "probe.p99_ms"),
            (Workload::Idle, "idle.calls_per_s"),
        ];
        for (workload, key) in expected {
            let step = Step {
                subject: "memory",
                workload,
                kind: BackendKind::Memory,
                ceiling: None,
            };
            let figures = measure_step(&step, &servers, Shape::default(), sizes).await?;
            let value = figures.get(key);
            assert!(
                value.is_some_and(|v| v > 0.0),
                "{key} of {}: {value:?} in {figures:?}",
                workload.name()
            );
        }
        let footprint = Step {
            subject: "memory",
            workload: Workload::Footprint,
            kind: BackendKind::Memory,
            ceiling: None,
        };
        assert!(
            measure_step(&footprint, &servers, Shape::default(), sizes)
                .await
                .is_err()
        );
        Ok(())
    }

    #[test]
    fn ratios_use_the_same_run() {
        let mut c = Collector::default();
        c.record("valkey", "flat.exec_per_s", 800.0);
        c.record(VALKEY_BARE, "ceiling.exec_per_s", 1000.0);
        c.ratio(
            "valkey",
            "flat.vs_ceiling",
            ("valkey", "flat.exec_per_s"),
            (VALKEY_BARE, "ceiling.exec_per_s"),
        );
        c.this_run.clear();
        c.record("valkey", "flat.exec_per_s", 900.0);
        c.ratio(
            "valkey",
            "flat.vs_ceiling",
            ("valkey", "flat.exec_per_s"),
            (VALKEY_BARE, "ceiling.exec_per_s"),
        );
        assert_eq!(c.values["valkey"]["flat.vs_ceiling"], vec![0.8]);
    }
}
