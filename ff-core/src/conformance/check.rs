//! How a case reports failure: [`CaseError`] and the `ensure!` family of macros.
//!
//! Cases return `Result<(), CaseError>` instead of panicking, so a failure names what was
//! expected, what the backend did and where in the case it happened (`?` on an
//! [`EngineError`] records the line of the `?`).

use std::fmt;
use std::panic::Location;

use crate::error::EngineError;

/// Why a case did not pass: it failed, or it could not run on this backend (reported as
/// ignored, with the reason).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaseError {
    message: String,
    skipped: bool,
}

impl CaseError {
    /// A failure with `message`, located at the caller.
    #[track_caller]
    pub fn new(message: impl Into<String>) -> Self {
        let location = Location::caller();
        CaseError {
            message: format!(
                "{} (at {}:{})",
                message.into(),
                location.file(),
                location.line()
            ),
            skipped: false,
        }
    }

    /// The case cannot run on this backend (e.g. a capability it lacks, discovered at run
    /// time); the harness reports it as ignored with `reason`.
    pub fn skip(reason: impl Into<String>) -> Self {
        CaseError {
            message: reason.into(),
            skipped: true,
        }
    }

    /// Whether this is a [`CaseError::skip`].
    pub fn is_skip(&self) -> bool {
        self.skipped
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Prefixes the message with `context` (e.g. the model-test case being shrunk).
    pub fn context(mut self, context: impl fmt::Display) -> Self {
        self.message = format!("{context}: {}", self.message);
        self
    }
}

impl fmt::Display for CaseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for CaseError {}

impl From<EngineError> for CaseError {
    /// An unexpected backend error, located at the `?` that propagated it.
    #[track_caller]
    fn from(error: EngineError) -> Self {
        CaseError::new(format!("unexpected backend error: {error} ({error:?})"))
    }
}

/// What every case returns.
pub type CaseResult<T = ()> = Result<T, CaseError>;

/// Fails the case with a formatted message unless `cond` holds.
macro_rules! ensure {
    ($cond:expr, $($arg:tt)+) => {
        if !$cond {
            return Err($crate::conformance::check::CaseError::new(format!($($arg)+)));
        }
    };
}

/// Fails the case unless `actual == expected`, printing both.
macro_rules! ensure_eq {
    ($actual:expr, $expected:expr, $($arg:tt)+) => {
        match (&$actual, &$expected) {
            (actual, expected) => {
                if actual != expected {
                    return Err($crate::conformance::check::CaseError::new(format!(
                        "{}: expected {:?}, got {:?}",
                        format!($($arg)+),
                        expected,
                        actual
                    )));
                }
            }
        }
    };
}

/// Evaluates a `Result<_, EngineError>` and fails the case unless it is an error matching
/// `pattern` (optionally with a guard); yields the error.
macro_rules! expect_err {
    ($result:expr, $pattern:pat $(if $guard:expr)?, $($arg:tt)+) => {
        match $result {
            Err(error) => {
                #[allow(unused_variables)]
                let matched = matches!(&error, $pattern $(if $guard)?);
                if !matched {
                    return Err($crate::conformance::check::CaseError::new(format!(
                        "{}: expected an error matching `{}`, got {:?}",
                        format!($($arg)+),
                        stringify!($pattern),
                        error
                    )));
                }
                error
            }
            Ok(value) => {
                return Err($crate::conformance::check::CaseError::new(format!(
                    "{}: expected an error matching `{}`, got Ok({:?})",
                    format!($($arg)+),
                    stringify!($pattern),
                    value
                )));
            }
        }
    };
}

pub(crate) use {ensure, ensure_eq, expect_err};
