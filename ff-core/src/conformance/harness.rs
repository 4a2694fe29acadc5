//! The libtest-mimic harness: every case for every backend, on one shared runtime.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use libtest_mimic::{Arguments, Completion, Failed, Trial};

use crate::backend::{Capabilities, EngineBackend};
use crate::error::EngineError;

use super::case::{Case, CaseOutcome};
use super::cases::cases;

/// Set to `1` (as `cargo xtask test` and CI do) to turn "backend not configured" from ignored
/// cases into failed ones, so a missing server cannot pass silently.
pub const REQUIRE_SERVERS_ENV: &str = "FF_REQUIRE_SERVERS";

/// Overrides the per-case time limit, in seconds (default 120).
const CASE_TIMEOUT_ENV: &str = "FF_CASE_TIMEOUT_SECS";
const DEFAULT_CASE_TIMEOUT: Duration = Duration::from_secs(120);

/// Cases mostly wait on the backend (or, on server backends, on the clock), so they run
/// many at a time unless `--test-threads` or `RUST_TEST_THREADS` says otherwise.
const DEFAULT_TEST_THREADS: usize = 16;

/// Makes backends for the suite: one fresh, isolated backend per case.
#[async_trait]
pub trait BackendFactory: Send + Sync + 'static {
    /// Label used as the first segment of test names, e.g. "memory-inline", "valkey-cluster".
    fn label(&self) -> String;

    /// A fresh backend in its own namespace (key prefix / schema) so cases run in parallel.
    ///
    /// `case` is a short `[a-z0-9_]` name, unique within one run of the suite for this
    /// factory; a server factory should add something unique per process (e.g. a random
    /// suffix) so two runs sharing a server do not meet, and must hand out an *empty*
    /// namespace: cases count what they find.
    async fn create(&self, case: &str) -> Result<Arc<dyn EngineBackend>, EngineError>;
}

/// libtest-mimic main: registers every case for every factory as `<label>::<case>`, one shared
/// multi-thread tokio runtime, parses the usual test args (filters, --ignored, --list,
/// --test-threads).
///
/// A case the backend cannot run (a capability it lacks) is registered *ignored*, with the
/// reason as its kind (`[needs clock_control]`) and in a banner; it is never left out.
pub fn main(factories: Vec<Arc<dyn BackendFactory>>) -> ExitCode {
    let args = arguments();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("conformance")
        .build()
    {
        Ok(runtime) => Arc::new(runtime),
        Err(error) => {
            eprintln!("conformance: cannot start the tokio runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let timeout = case_timeout();
    let mut trials = Vec::new();
    for factory in factories {
        let label = factory.label();
        let probe = runtime.block_on(probe(&factory));
        if !args.list {
            print_banner(&label, &probe);
        }
        let capabilities = probe.as_ref().ok().map(|(_, c)| *c);
        for case in cases() {
            trials.push(trial(
                &runtime,
                &factory,
                &label,
                case,
                capabilities,
                timeout,
            ));
        }
    }
    libtest_mimic::run(&args, trials).exit_code()
}

/// For a backend whose server is not configured: every case is registered but ignored, with a
/// banner naming what is missing; if env FF_REQUIRE_SERVERS=1 is set, they FAIL instead.
pub fn main_unconfigured(label: &str, missing: &str) -> ExitCode {
    let args = arguments();
    let require = servers_required();
    if !args.list {
        if require {
            println!(
                "conformance: {label} is not configured ({missing}) and {REQUIRE_SERVERS_ENV}=1: \
                 every {label} case fails."
            );
        } else {
            println!(
                "conformance: {label} is not configured ({missing}): its cases are reported \
                 ignored. Set {REQUIRE_SERVERS_ENV}=1 to make that a failure."
            );
        }
    }
    let trials = cases()
        .into_iter()
        .map(|case| {
            let name = format!("{label}::{}", case.name);
            let message = format!("{label} is not configured: {missing}");
            if require {
                Trial::test(name, move || {
                    Err(Failed::from(format!(
                        "{message} ({REQUIRE_SERVERS_ENV}=1 requires every backend)"
                    )))
                })
                .with_kind("not configured")
            } else {
                Trial::ignorable_test(name, move || Ok(Completion::ignored_with(message)))
                    .with_ignored_flag(true)
                    .with_kind("not configured")
            }
        })
        .collect();
    libtest_mimic::run(&args, trials).exit_code()
}

/// Whether `FF_REQUIRE_SERVERS` asks for every backend to be configured.
fn servers_required() -> bool {
    std::env::var(REQUIRE_SERVERS_ENV)
        .map(|v| matches!(v.trim(), "1" | "true" | "yes"))
        .unwrap_or(false)
}

fn arguments() -> Arguments {
    let mut args = Arguments::from_args();
    if args.test_threads.is_none() {
        args.test_threads = std::env::var("RUST_TEST_THREADS")
            .ok()
            .and_then(|v| v.parse().ok())
            .or(Some(DEFAULT_TEST_THREADS));
    }
    args
}

fn case_timeout() -> Duration {
    std::env::var(CASE_TIMEOUT_ENV)
        .ok()
        .and_then(|v| v.parse().ok())
        .map(Duration::from_secs)
        .unwrap_or(DEFAULT_CASE_TIMEOUT)
}

/// Creates one backend to learn its name and capabilities.
async fn probe(
    factory: &Arc<dyn BackendFactory>,
) -> Result<(&'static str, Capabilities), EngineError> {
    let backend = factory.create("probe").await?;
    Ok((backend.name(), backend.capabilities()))
}

fn print_banner(label: &str, probe: &Result<(&'static str, Capabilities), EngineError>) {
    match probe {
        Ok((name, capabilities)) => {
            println!(
                "conformance: {label}: backend `{name}`, clock_control={}, hints={}, claim_next={}, \
                 inline_cascade_limit={}",
                capabilities.clock_control,
                capabilities.hints,
                capabilities.claim_next,
                capabilities.inline_cascade_limit
            );
            let ignored: Vec<String> = cases()
                .iter()
                .filter_map(|case| {
                    case.requirement
                        .unmet(capabilities)
                        .map(|reason| format!("{} ({reason})", case.name))
                })
                .collect();
            if !ignored.is_empty() {
                println!(
                    "conformance: {label}: {} case(s) ignored: {}",
                    ignored.len(),
                    ignored.join(", ")
                );
            }
        }
        Err(error) => println!(
            "conformance: {label}: the factory could not create a backend ({error}); every case \
             will fail"
        ),
    }
}

fn trial(
    runtime: &Arc<tokio::runtime::Runtime>,
    factory: &Arc<dyn BackendFactory>,
    label: &str,
    case: Case,
    capabilities: Option<Capabilities>,
    timeout: Duration,
) -> Trial {
    let name = format!("{label}::{}", case.name);
    let unmet = capabilities.and_then(|c| case.requirement.unmet(&c));
    let kind = unmet.clone();
    let runtime = runtime.clone();
    let factory = factory.clone();
    let label = label.to_string();
    let trial = Trial::ignorable_test(name, move || {
        if let Some(reason) = unmet {
            // Only reached with --ignored / --include-ignored.
            return Ok(Completion::ignored_with(reason));
        }
        let outcome =
            runtime.block_on(async { tokio::time::timeout(timeout, case.run_with(factory)).await });
        match outcome {
            Ok(Ok(CaseOutcome::Passed)) => Ok(Completion::Completed),
            Ok(Ok(CaseOutcome::Ignored(reason))) => Ok(Completion::ignored_with(reason)),
            Ok(Err(error)) => Err(Failed::from(format!("{label}::{}: {error}", case.name))),
            Err(_) => Err(Failed::from(format!(
                "{label}::{}: did not finish within {timeout:?} (set {CASE_TIMEOUT_ENV} to change)",
                case.name
            ))),
        }
    });
    match kind {
        Some(reason) => trial.with_ignored_flag(true).with_kind(reason),
        None => trial,
    }
}
