//! Retry policy (DESIGN §3).
//!
//! A failed attempt — reported by the worker, or by lease expiry or attempt timeout — with
//! attempts left puts the execution in `delayed` until its backoff has passed; without attempts
//! left it becomes `failed`. The backoff is a pure function of the policy, the attempt number
//! and one random number, so every backend computes the same delays (Lua and SQL backends are
//! handed the random number, or the computed delay, by the client).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::EngineError;
use crate::limits;

/// How many attempts an execution gets, and how long to wait between them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RetryPolicy {
    /// Total attempts allowed, including the first (1 = no retries).
    pub max_attempts: u32,
    /// The wait before each retry.
    pub backoff: Backoff,
}

/// The wait before a retry.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Backoff {
    /// The same delay before every retry.
    Fixed(Duration),
    /// `initial × factor^(retry − 1)`, capped at `max`, then reduced by up to `jitter` of
    /// itself at random ("jitter 0.2" waits between 80 % and 100 % of the computed delay).
    Exponential {
        /// Delay before the first retry.
        initial: Duration,
        /// Growth per retry, at least 1.
        factor: f64,
        /// Largest delay.
        max: Duration,
        /// Fraction of the delay removed at random, in `0.0..=1.0`.
        jitter: f64,
    },
}

impl RetryPolicy {
    /// One attempt, no retries: the default.
    pub const fn none() -> Self {
        RetryPolicy {
            max_attempts: 1,
            backoff: Backoff::Fixed(Duration::ZERO),
        }
    }

    /// `max_attempts` attempts with a fixed delay between them.
    pub const fn fixed(max_attempts: u32, delay: Duration) -> Self {
        RetryPolicy {
            max_attempts,
            backoff: Backoff::Fixed(delay),
        }
    }

    /// `max_attempts` attempts with exponential backoff (factor 2, 20 % jitter, capped at
    /// `max`).
    pub const fn exponential(max_attempts: u32, initial: Duration, max: Duration) -> Self {
        RetryPolicy {
            max_attempts,
            backoff: Backoff::Exponential {
                initial,
                factor: 2.0,
                max,
                jitter: 0.2,
            },
        }
    }

    /// Whether another attempt is allowed after `attempts_started` attempts.
    pub const fn has_attempts_left(&self, attempts_started: u32) -> bool {
        attempts_started < self.max_attempts
    }

    /// The wait before the retry that follows failed attempt number `failed_attempt` (1-based).
    /// `random` is a uniform number in `[0, 1)` used for jitter.
    pub fn delay_after(&self, failed_attempt: u32, random: f64) -> Duration {
        match &self.backoff {
            Backoff::Fixed(delay) => *delay,
            Backoff::Exponential {
                initial,
                factor,
                max,
                jitter,
            } => {
                let exponent = i32::try_from(failed_attempt.saturating_sub(1)).unwrap_or(i32::MAX);
                let grown = initial.as_secs_f64() * factor.powi(exponent);
                let capped = if grown.is_finite() {
                    grown.min(max.as_secs_f64())
                } else {
                    max.as_secs_f64()
                };
                let random = if random.is_finite() {
                    random.clamp(0.0, 1.0)
                } else {
                    0.0
                };
                let jittered = capped * (1.0 - jitter.clamp(0.0, 1.0) * random);
                Duration::from_secs_f64(jittered.max(0.0))
            }
        }
    }

    /// Checks the policy against the documented limits.
    pub fn validate(&self, field: &str) -> Result<(), EngineError> {
        limits::check_count(
            &format!("{field}.max_attempts"),
            self.max_attempts,
            limits::MAX_ATTEMPTS,
        )?;
        match &self.backoff {
            Backoff::Fixed(delay) => check_duration(&format!("{field}.backoff"), *delay),
            Backoff::Exponential {
                initial,
                factor,
                max,
                jitter,
            } => {
                check_duration(&format!("{field}.backoff.initial"), *initial)?;
                check_duration(&format!("{field}.backoff.max"), *max)?;
                if !(factor.is_finite() && *factor >= 1.0 && *factor <= 1000.0) {
                    return Err(EngineError::validation(
                        format!("{field}.backoff.factor"),
                        format!("{factor} is outside 1.0..=1000.0"),
                    ));
                }
                if !(jitter.is_finite() && (0.0..=1.0).contains(jitter)) {
                    return Err(EngineError::validation(
                        format!("{field}.backoff.jitter"),
                        format!("{jitter} is outside 0.0..=1.0"),
                    ));
                }
                if initial > max {
                    return Err(EngineError::validation(
                        format!("{field}.backoff.initial"),
                        "is larger than backoff.max",
                    ));
                }
                Ok(())
            }
        }
    }
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy::none()
    }
}

/// Checks that a delay, timeout or TTL is not absurd (at most [`limits::MAX_DURATION`]).
pub fn check_duration(field: &str, d: Duration) -> Result<(), EngineError> {
    if d > limits::MAX_DURATION {
        return Err(EngineError::validation(
            field,
            format!(
                "{d:?} is longer than the limit of {:?}",
                limits::MAX_DURATION
            ),
        ));
    }
    Ok(())
}

/// Checks a lease TTL: at least [`limits::MIN_LEASE_TTL`], at most [`limits::MAX_DURATION`].
pub fn check_lease_ttl(field: &str, ttl: Duration) -> Result<(), EngineError> {
    if ttl < limits::MIN_LEASE_TTL {
        return Err(EngineError::validation(
            field,
            format!(
                "{ttl:?} is shorter than the minimum of {:?}",
                limits::MIN_LEASE_TTL
            ),
        ));
    }
    check_duration(field, ttl)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_backoff_is_constant() {
        let p = RetryPolicy::fixed(3, Duration::from_millis(100));
        assert_eq!(p.delay_after(1, 0.5), Duration::from_millis(100));
        assert_eq!(p.delay_after(2, 0.9), Duration::from_millis(100));
        assert!(p.has_attempts_left(2));
        assert!(!p.has_attempts_left(3));
    }

    #[test]
    fn exponential_backoff_grows_caps_and_jitters() {
        let p = RetryPolicy {
            max_attempts: 10,
            backoff: Backoff::Exponential {
                initial: Duration::from_millis(100),
                factor: 2.0,
                max: Duration::from_millis(1000),
                jitter: 0.5,
            },
        };
        assert_eq!(p.delay_after(1, 0.0), Duration::from_millis(100));
        assert_eq!(p.delay_after(3, 0.0), Duration::from_millis(400));
        assert_eq!(p.delay_after(9, 0.0), Duration::from_millis(1000));
        assert_eq!(p.delay_after(1000, 0.0), Duration::from_millis(1000));
        assert_eq!(p.delay_after(1, 1.0), Duration::from_millis(50));
    }

    #[test]
    fn invalid_policies_name_their_field() {
        let zero = RetryPolicy::fixed(0, Duration::ZERO);
        assert_eq!(
            zero.validate("retry").unwrap_err().validation_field(),
            Some("retry.max_attempts")
        );
        let absurd = RetryPolicy::fixed(2, Duration::from_secs(10 * 366 * 24 * 3600));
        assert_eq!(
            absurd.validate("retry").unwrap_err().validation_field(),
            Some("retry.backoff")
        );
        let bad_factor = RetryPolicy {
            max_attempts: 2,
            backoff: Backoff::Exponential {
                initial: Duration::from_millis(1),
                factor: f64::NAN,
                max: Duration::from_secs(1),
                jitter: 0.0,
            },
        };
        assert_eq!(
            bad_factor.validate("retry").unwrap_err().validation_field(),
            Some("retry.backoff.factor")
        );
    }
}
