//! A conformance case: a name, what it needs from the backend, and the async behaviour test.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::backend::Capabilities;

use super::check::{CaseError, CaseResult};
use super::context::TestContext;
use super::harness::BackendFactory;

/// An optional backend feature a case may depend on (see [`Capabilities`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Feature {
    /// [`Capabilities::clock_control`]: `advance_clock` works.
    ClockControl,
    /// [`Capabilities::hints`]: `subscribe_hints` works.
    Hints,
    /// [`Capabilities::claim_next`]: `complete`/`fail` claim next work.
    ClaimNext,
}

impl Feature {
    /// The capability's field name.
    pub const fn name(self) -> &'static str {
        match self {
            Feature::ClockControl => "clock_control",
            Feature::Hints => "hints",
            Feature::ClaimNext => "claim_next",
        }
    }

    /// Whether `capabilities` include it.
    pub const fn is_in(self, capabilities: &Capabilities) -> bool {
        match self {
            Feature::ClockControl => capabilities.clock_control,
            Feature::Hints => capabilities.hints,
            Feature::ClaimNext => capabilities.claim_next,
        }
    }
}

impl fmt::Display for Feature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What a case needs from the backend to be meaningful.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Requirement {
    /// Runs on every backend.
    Always,
    /// Runs only on backends with the feature (ignored elsewhere, with the reason).
    Needs(Feature),
    /// Runs only on backends *without* the feature: it proves the backend answers cleanly
    /// when it lacks it (ignored on backends that have it).
    Lacks(Feature),
}

impl Requirement {
    /// Why a backend with `capabilities` cannot run the case, or `None` if it can. The reason
    /// is short enough to be a libtest "kind" (`needs clock_control`).
    pub fn unmet(self, capabilities: &Capabilities) -> Option<String> {
        match self {
            Requirement::Always => None,
            Requirement::Needs(feature) if !feature.is_in(capabilities) => {
                Some(format!("needs {feature}"))
            }
            Requirement::Lacks(feature) if feature.is_in(capabilities) => {
                Some(format!("has {feature}"))
            }
            Requirement::Needs(_) | Requirement::Lacks(_) => None,
        }
    }
}

/// The future a case body returns.
pub type CaseFuture = Pin<Box<dyn Future<Output = CaseResult> + Send>>;

/// A case body: takes the context (its own fresh backend) by value.
pub type CaseFn = fn(TestContext) -> CaseFuture;

/// One behaviour test, written once against `Arc<dyn EngineBackend>`.
#[derive(Clone, Copy)]
pub struct Case {
    /// `area::behaviour`, e.g. `fencing::stale_epoch_is_rejected`; the harness registers it as
    /// `<label>::<name>`.
    pub name: &'static str,
    /// What the backend must (or must not) support.
    pub requirement: Requirement,
    /// The body.
    pub run: CaseFn,
}

impl fmt::Debug for Case {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Case")
            .field("name", &self.name)
            .field("requirement", &self.requirement)
            .finish_non_exhaustive()
    }
}

/// How a case ended when it did not fail.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CaseOutcome {
    /// It ran and every check held.
    Passed,
    /// It could not run on this backend; the reason says why.
    Ignored(String),
}

impl Case {
    /// Runs the case on a fresh backend from `factory`: checks the requirement against the
    /// backend's capabilities (an unmet one is [`CaseOutcome::Ignored`]), then runs the body.
    ///
    /// A backend crate's own test may call this to run one case on its own, e.g. while
    /// debugging: `cases().iter().find(|c| c.name == "...")`.
    pub async fn run_with(
        &self,
        factory: Arc<dyn BackendFactory>,
    ) -> Result<CaseOutcome, CaseError> {
        let ctx = TestContext::new(factory, self.name).await?;
        if let Some(reason) = self.requirement.unmet(&ctx.capabilities()) {
            return Ok(CaseOutcome::Ignored(reason));
        }
        match (self.run)(ctx).await {
            Ok(()) => Ok(CaseOutcome::Passed),
            Err(error) if error.is_skip() => Ok(CaseOutcome::Ignored(error.message().to_string())),
            Err(error) => Err(error),
        }
    }
}
