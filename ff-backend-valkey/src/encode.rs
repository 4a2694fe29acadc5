//! Encoding requests into function arguments, and the stored forms of specs that the Rust side
//! reads back (retry policies).

use std::time::Duration;

use ff_core::time::duration_millis;
use ff_core::{Backoff, EngineError, ExecutionSpec, RetryPolicy};

/// Function arguments under construction.
#[derive(Debug, Default)]
pub(crate) struct Args(pub(crate) Vec<Vec<u8>>);

impl Args {
    pub(crate) fn new() -> Self {
        Args(Vec::new())
    }

    pub(crate) fn with_capacity(n: usize) -> Self {
        Args(Vec::with_capacity(n))
    }

    pub(crate) fn str(&mut self, s: &str) -> &mut Self {
        self.0.push(s.as_bytes().to_vec());
        self
    }

    pub(crate) fn bytes(&mut self, b: &[u8]) -> &mut Self {
        self.0.push(b.to_vec());
        self
    }

    pub(crate) fn num(&mut self, n: impl std::fmt::Display) -> &mut Self {
        self.0.push(n.to_string().into_bytes());
        self
    }

    pub(crate) fn flag(&mut self, on: bool) -> &mut Self {
        self.0.push(if on { b"1".to_vec() } else { b"0".to_vec() });
        self
    }
}

/// `secs:nanos` of a duration, exact.
fn exact(d: Duration) -> String {
    format!("{}:{}", d.as_secs(), d.subsec_nanos())
}

fn parse_exact(secs: &str, nanos: &str) -> Option<Duration> {
    Some(Duration::new(secs.parse().ok()?, nanos.parse().ok()?))
}

/// The stored form of a backoff: `f:<secs>:<nanos>` or
/// `e:<isecs>:<inanos>:<factor>:<msecs>:<mnanos>:<jitter>`; floats in Rust's shortest
/// round-trip form, which Lua's `tonumber` reads back to the same double.
fn backoff(b: &Backoff) -> String {
    match b {
        Backoff::Fixed(d) => format!("f:{}", exact(*d)),
        Backoff::Exponential {
            initial,
            factor,
            max,
            jitter,
        } => format!(
            "e:{}:{factor:?}:{}:{jitter:?}",
            exact(*initial),
            exact(*max)
        ),
    }
}

/// The stored retry policy: `<max_attempts>;<backoff>`, or the empty string for
/// [`RetryPolicy::none`] (the library then writes no field: one attempt, no backoff).
pub(crate) fn retry_policy(policy: &RetryPolicy) -> String {
    if *policy == RetryPolicy::none() {
        return String::new();
    }
    format!("{};{}", policy.max_attempts, backoff(&policy.backoff))
}

/// Reads a stored retry policy back (`None`: the field is absent, the default policy).
pub(crate) fn parse_retry_policy(stored: Option<&str>) -> Result<RetryPolicy, EngineError> {
    let Some(stored) = stored else {
        return Ok(RetryPolicy::none());
    };
    let corrupt = || EngineError::Corrupt(format!("stored retry policy {stored:?} is malformed"));
    let (max_attempts, backoff) = stored.split_once(';').ok_or_else(corrupt)?;
    let max_attempts = max_attempts.parse().map_err(|_| corrupt())?;
    let parts: Vec<&str> = backoff.split(':').collect();
    let backoff = match parts.as_slice() {
        ["f", s, n] => Backoff::Fixed(parse_exact(s, n).ok_or_else(corrupt)?),
        ["e", is, inn, factor, ms, mn, jitter] => Backoff::Exponential {
            initial: parse_exact(is, inn).ok_or_else(corrupt)?,
            factor: factor.parse().map_err(|_| corrupt())?,
            max: parse_exact(ms, mn).ok_or_else(corrupt)?,
            jitter: jitter.parse().map_err(|_| corrupt())?,
        },
        _ => return Err(corrupt()),
    };
    Ok(RetryPolicy {
        max_attempts,
        backoff,
    })
}

/// Capabilities as stored: sorted, comma-separated (a `BTreeSet` is already sorted; commas
/// cannot occur in a capability).
pub(crate) fn capabilities<'a>(caps: impl IntoIterator<Item = &'a ff_core::Capability>) -> String {
    let mut out = String::new();
    for cap in caps {
        if !out.is_empty() {
            out.push(',');
        }
        out.push_str(cap.as_str());
    }
    out
}

/// The 10 spec values every creating function reads (see `L.read_spec` in the library).
pub(crate) fn spec(args: &mut Args, uuid: &str, spec: &ExecutionSpec, node_key: &str) {
    args.str(uuid)
        .str(spec.lane.as_str())
        .num(spec.priority)
        .str(&capabilities(&spec.required_capabilities))
        .bytes(&spec.payload)
        .num(duration_millis(spec.delay))
        .str(&retry_policy(&spec.retry));
    match spec.attempt_timeout {
        Some(t) => args.num(duration_millis(t)),
        None => args.str(""),
    };
    match spec.deadline {
        Some(d) => args.num(duration_millis(d)),
        None => args.str(""),
    };
    args.str(node_key);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_policies_round_trip() {
        for policy in [
            RetryPolicy::none(),
            RetryPolicy::fixed(3, Duration::from_micros(1500)),
            RetryPolicy::exponential(5, Duration::from_millis(100), Duration::from_secs(60)),
            RetryPolicy {
                max_attempts: 7,
                backoff: Backoff::Exponential {
                    initial: Duration::new(1, 1),
                    factor: 1.1,
                    max: Duration::from_secs(3600),
                    jitter: 0.123_456_789,
                },
            },
        ] {
            let stored = retry_policy(&policy);
            let back = parse_retry_policy(Some(stored.as_str()).filter(|s| !s.is_empty())).unwrap();
            assert_eq!(back, policy, "{stored}");
        }
        assert_eq!(retry_policy(&RetryPolicy::none()), "");
        assert_eq!(parse_retry_policy(None).unwrap(), RetryPolicy::none());
        assert!(parse_retry_policy(Some("1;x:1")).is_err());
        assert!(parse_retry_policy(Some("f:0:0")).is_err());
    }
}
