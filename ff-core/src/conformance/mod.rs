//! The backend conformance suite (feature `conformance`, DESIGN §8).
//!
//! One suite of behaviour tests, written once against `Arc<dyn EngineBackend>`, that every
//! backend crate runs in its own tests against a real server. A contributor adding a backend
//! is done when it passes.
//!
//! # Running it for a backend
//!
//! A backend crate adds a test target with `harness = false` and hands the suite a
//! [`BackendFactory`] per configuration it supports:
//!
//! ```no_run
//! use std::sync::Arc;
//! use ff_core::conformance::{self, BackendFactory};
//! use ff_core::{EngineBackend, EngineError};
//!
//! struct Memory;
//!
//! #[async_trait::async_trait]
//! impl BackendFactory for Memory {
//!     fn label(&self) -> String {
//!         "memory".into()
//!     }
//!     async fn create(&self, _case: &str) -> Result<Arc<dyn EngineBackend>, EngineError> {
//!         Ok(Arc::new(ff_core::memory::MemoryBackend::new()))
//!     }
//! }
//!
//! fn main() -> std::process::ExitCode {
//!     // A server backend without its URL calls `conformance::main_unconfigured(label, what)`.
//!     conformance::main(vec![Arc::new(Memory)])
//! }
//! ```
//!
//! Every case is registered for every backend as `<label>::<area>::<case>` (filter with the
//! usual `cargo test --test conformance -- fencing::`). A case needing a capability the
//! backend lacks is reported *ignored* with the reason (shown as its kind and in a banner);
//! each optional capability also has a case proving the backend answers
//! [`crate::EngineError::Unavailable`] when it lacks it. A backend whose server is not
//! configured registers every case ignored ([`main_unconfigured`]), or failed when
//! [`REQUIRE_SERVERS_ENV`] is set.
//!
//! # What the cases may rely on
//!
//! - Each case gets its own fresh, empty backend ([`BackendFactory::create`]), so cases run
//!   in parallel (16 at a time by default) on one shared tokio runtime.
//! - Time: [`TestContext::advance`] moves a controllable clock or sleeps, and cases only rely
//!   on a lower bound of elapsed time, so they also hold on server backends with real clocks.
//! - The cascade may be applied inline or left pending: cases assert observable flow state
//!   after [`TestContext::settle`] (which drains pending completions and the cancel backlog
//!   like the engine's dispatch loop), except the cases about pending completions
//!   themselves, which use [`crate::Capabilities::inline_cascade_limit`] to force the
//!   deferred path.
//! - Strict claim order only holds within a partition: ordering cases use members of one flow,
//!   or idempotency keys chosen to land on one partition.
//!
//! The model-based test (`model::random_flows`) applies random graphs and random operation
//! sequences to the backend and to a small pure model of DESIGN §3–4 ([`model`]), comparing
//! every member and the flow after every step. `FF_PROPTEST_CASES` raises its case count
//! (default 32) and `FF_PROPTEST_SEED` replays a seed printed by a failure.
//! It needs a clock that moves only through `advance_clock` (a frozen test clock); it is
//! ignored on backends without clock control and skips itself when the clock moves on its
//! own. A server backend therefore offers a frozen-clock test mode (its config's
//! `with_frozen_clock`, the backend clock being "server time at connect + offset") and
//! registers a factory with it, next to the factory with its production clock.
//!
//! Each case has a time limit (120 s, `FF_CASE_TIMEOUT_SECS`), so a hung backend fails the
//! case instead of the run.

mod case;
mod cases;
mod check;
mod context;
mod fixtures;
mod harness;
pub mod model;
mod model_test;
mod worker;

pub use case::{Case, CaseFn, CaseFuture, CaseOutcome, Feature, Requirement};
pub use cases::cases;
pub use check::{CaseError, CaseResult};
pub use context::{FlowHandle, TestContext};
pub use harness::{BackendFactory, REQUIRE_SERVERS_ENV, main, main_unconfigured};
