//! FlowFabric engine: everything that runs beside the backend (DESIGN §6).
//!
//! - [`PartitionRouter`]: which partition and keys an id lives on.
//! - [`Engine`]: one engine instance — the completion dispatch loop, the scanners for
//!   everything time-driven, partition ownership shared with other instances, all under a
//!   supervisor that restarts what fails. Start one (or several, anywhere) per deployment.
//! - [`Worker`]: the claim loop that runs your code for each execution of a lane.
//! - [`connect`]: a backend by URL (`memory://` in this build; `valkey://` and `postgres://`
//!   with their features).
//!
//! ```
//! # #[cfg(feature = "memory")]
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), ff_core::EngineError> {
//! use ff_core::{ExecutionSpec, Lane};
//! use ff_engine::{Engine, Job, Worker};
//!
//! let backend = ff_engine::connect("memory://").await?;
//! let engine = Engine::builder(backend.clone()).start().await?;
//!
//! let lane = Lane::new("greetings")?;
//! backend.create_execution(&ExecutionSpec::new(lane.clone(), b"world".to_vec())).await?;
//!
//! let worker = Worker::builder(backend.clone())
//!     .lane(lane)
//!     .concurrency(4)
//!     .handler(|job: Job| async move {
//!         Ok(Some([b"hello ", job.payload()].concat()))
//!     })
//!     .build()?;
//! let stats = worker.stats();
//! let report = worker
//!     .run(async move {
//!         while stats.snapshot().succeeded < 1 {
//!             tokio::time::sleep(std::time::Duration::from_millis(1)).await;
//!         }
//!     })
//!     .await?;
//! assert_eq!(report.succeeded, 1);
//! engine.shutdown().await?;
//! # Ok(())
//! # }
//! # #[cfg(not(feature = "memory"))]
//! # fn main() {}
//! ```
//!
//! Observability: every backend call runs in a `backend_call` span (field `op`), every
//! scanner cycle in a `scanner_cycle` span; counters and histograms go through the
//! [`metrics`] facade under the names in [`telemetry`].

pub mod backoff;
mod call;
pub mod config;
mod connect;
mod dispatch;
mod due;
mod engine;
pub mod ownership;
pub mod router;
mod scanner;
mod shutdown;
mod supervisor;
pub mod telemetry;
pub mod worker;

pub use backoff::Backoff;
pub use config::{EngineConfig, ScannerConfig, ScannerSchedule};
pub use connect::connect;
pub use engine::{Engine, EngineBuilder, EngineHandle, EngineStats, ShutdownReport};
pub use router::{PartitionRouter, Route};
pub use scanner::ScannerStats;
pub use supervisor::TaskStatus;
pub use worker::{
    Handler, HandlerError, HandlerResult, Job, Worker, WorkerBuilder, WorkerReport, WorkerStats,
};
