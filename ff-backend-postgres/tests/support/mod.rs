//! The harness of `tests/postgres.rs`.

use std::future::Future;
use std::pin::Pin;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use ff_backend_postgres::{PostgresBackend, PostgresConfig};
use ff_core::{CompletionEvent, EngineBackend, EngineError, PartitionConfig};
use libtest_mimic::{Arguments, Failed, Trial};

/// Set in the environment of the SIGKILL test's child: the schema whose outbox it drains.
pub(crate) const DRAIN_CHILD_ENV: &str = "FF_PG_DRAIN_CHILD";

/// The result of one test.
pub(crate) type TestResult = Result<(), Failed>;
pub(crate) type TestFn = fn(String) -> Pin<Box<dyn Future<Output = TestResult> + Send>>;

/// Fails the test with a message unless `cond`.
macro_rules! ensure {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err(libtest_mimic::Failed::from(format!($($msg)+)));
        }
    };
}

mod cases;
mod proxy;

/// Maps any error into a test failure with context.
pub(crate) fn fail<E: std::fmt::Display>(what: &'static str) -> impl Fn(E) -> Failed {
    move |e| Failed::from(format!("{what}: {e}"))
}

/// The server URL, if configured.
pub(crate) fn url() -> Option<String> {
    std::env::var("FF_POSTGRES_URL")
        .ok()
        .filter(|u| !u.trim().is_empty())
}

/// A config on a fresh schema named after the test.
pub(crate) fn config(url: &str, test: &str) -> PostgresConfig {
    PostgresConfig::new(url)
        .with_schema(format!("fft_{test}"))
        .with_partitions(PartitionConfig::new(8).expect("8 partitions"))
        .with_pool_size(8)
}

/// Connects to a fresh (dropped and re-created) schema.
pub(crate) async fn fresh(config: PostgresConfig) -> Result<PostgresBackend, Failed> {
    let backend = PostgresBackend::connect(config.clone())
        .await
        .map_err(fail("connect"))?;
    backend.drop_schema().await.map_err(fail("drop schema"))?;
    drop(backend);
    PostgresBackend::connect(config)
        .await
        .map_err(fail("reconnect"))
}

/// Drains every pending completion of every partition until none is left.
pub(crate) async fn settle(backend: &dyn EngineBackend) -> Result<u64, EngineError> {
    let mut applied = 0u64;
    loop {
        let mut any = false;
        for partition in backend.partition_config().all() {
            for event in backend.pending_completions(partition, 1000).await? {
                any = true;
                loop {
                    let progress = backend.cascade_completion(&event).await?;
                    applied += u64::from(progress.edges_applied);
                    if progress.finished {
                        break;
                    }
                }
            }
        }
        if !any {
            return Ok(applied);
        }
    }
}

/// The child process of the SIGKILL test: drains the outbox of `schema` slowly, forever.
pub(crate) fn drain_child(schema: &str) -> ExitCode {
    let Some(url) = url() else {
        return ExitCode::FAILURE;
    };
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return ExitCode::FAILURE;
    };
    runtime.block_on(async {
        let config = PostgresConfig::new(url)
            .with_schema(schema)
            .with_partitions(PartitionConfig::new(8).expect("8 partitions"))
            .with_inline_cascade_limit(0)
            .with_cascade_chunk(20)
            .with_pool_size(1);
        let Ok(backend) = PostgresBackend::connect(config).await else {
            return ExitCode::FAILURE;
        };
        loop {
            for partition in backend.partition_config().all() {
                let events: Vec<CompletionEvent> = backend
                    .pending_completions(partition, 10)
                    .await
                    .unwrap_or_default();
                for event in events {
                    while let Ok(progress) = backend.cascade_completion(&event).await {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        if progress.finished {
                            break;
                        }
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
}

/// Runs every test of [`cases::all`].
pub(crate) fn run() -> ExitCode {
    let args = Arguments::from_args();
    let url = url();
    let runtime = Arc::new(
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("invariant: a tokio runtime can be built in tests"),
    );
    let require = std::env::var("FF_REQUIRE_SERVERS").is_ok_and(|v| v == "1");
    let trials = cases::all()
        .into_iter()
        .map(|(name, test): (&'static str, TestFn)| match &url {
            Some(url) => {
                let url = url.clone();
                let runtime = runtime.clone();
                Trial::test(name, move || runtime.block_on(test(url)))
            }
            None if require => Trial::test(name, || {
                Err(Failed::from(
                    "FF_POSTGRES_URL is not set and FF_REQUIRE_SERVERS=1",
                ))
            }),
            None => Trial::test(name, || Ok(())).with_ignored_flag(true),
        })
        .collect();
    if url.is_none() && !args.list {
        println!("postgres tests: FF_POSTGRES_URL is not set; every test is ignored");
    }
    libtest_mimic::run(&args, trials).exit_code()
}
