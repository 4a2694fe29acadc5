//! Engine configuration.
//!
//! Every knob has a default chosen for a production deployment of a few engine instances on
//! 256 partitions: background work costs a bounded number of backend calls per second when
//! idle, and time-driven transitions (lease expiry, delayed promotion, ...) happen within
//! about a second of being due. Tests shorten the intervals; nothing in the engine depends on
//! them for correctness.

use std::time::Duration;

use ff_core::EngineError;
use ff_core::limits::{MAX_DURATION, MAX_SCAN_BATCH, check_count};

use crate::backoff::Backoff;

/// How often one scanner runs and how much it does per partition.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ScannerConfig {
    /// Whether the scanner runs at all.
    pub enabled: bool,
    /// Time between the end of one cycle and the start of the next (jittered by
    /// [`EngineConfig::jitter`]). A cycle never overlaps the previous one.
    pub interval: Duration,
}

impl ScannerConfig {
    /// An enabled scanner running every `interval`.
    pub const fn every(interval: Duration) -> Self {
        ScannerConfig {
            enabled: true,
            interval,
        }
    }

    /// A scanner that does not run.
    pub const fn disabled() -> Self {
        ScannerConfig {
            enabled: false,
            interval: Duration::from_secs(60),
        }
    }
}

/// The scanners and their schedules.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ScannerSchedule {
    /// Running executions whose lease expired (default every 1 s).
    pub lease_expiry: ScannerConfig,
    /// Delayed executions whose time has come (default every 500 ms; claims may promote due
    /// executions too).
    pub delayed_promotion: ScannerConfig,
    /// Attempts past their timeout (default every 1 s).
    pub attempt_timeout: ScannerConfig,
    /// Executions past their absolute deadline (default every 2 s).
    pub execution_deadline: ScannerConfig,
    /// Flows whose cancel was deferred (default every 1 s).
    pub cancel_backlog: ScannerConfig,
    /// Finished executions and flows past the retention horizon (default every 60 s).
    pub retention: ScannerConfig,
    /// The pending-completion sweep, when the backend sends hints: the safety net for lost
    /// hints (default every 5 s).
    pub completion_sweep: ScannerConfig,
    /// The pending-completion sweep when the backend sends no hints: the only thing that
    /// wakes the dispatch loop, so it is short (default every 200 ms).
    pub completion_poll: ScannerConfig,
}

impl Default for ScannerSchedule {
    fn default() -> Self {
        ScannerSchedule {
            lease_expiry: ScannerConfig::every(Duration::from_secs(1)),
            delayed_promotion: ScannerConfig::every(Duration::from_millis(500)),
            attempt_timeout: ScannerConfig::every(Duration::from_secs(1)),
            execution_deadline: ScannerConfig::every(Duration::from_secs(2)),
            cancel_backlog: ScannerConfig::every(Duration::from_secs(1)),
            retention: ScannerConfig::every(Duration::from_secs(60)),
            completion_sweep: ScannerConfig::every(Duration::from_secs(5)),
            completion_poll: ScannerConfig::every(Duration::from_millis(200)),
        }
    }
}

impl ScannerSchedule {
    /// Every scanner every `interval` (tests and demos that want time-driven transitions
    /// to happen quickly).
    pub fn all_every(interval: Duration) -> Self {
        let every = ScannerConfig::every(interval);
        ScannerSchedule {
            lease_expiry: every,
            delayed_promotion: every,
            attempt_timeout: every,
            execution_deadline: every,
            cancel_backlog: every,
            retention: every,
            completion_sweep: every,
            completion_poll: every,
        }
    }
}

/// Everything an engine instance can be tuned with. Build with `EngineConfig::default()` and
/// change fields; [`EngineConfig::validate`] runs when the engine starts.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct EngineConfig {
    /// Partitions whose pending completions are drained at the same time (default 8). The
    /// partition is the unit of dispatch concurrency: a partition is drained by one task at
    /// a time, its events in order, so dispatch never contends with itself on one partition.
    pub dispatch_concurrency: usize,
    /// Completion events fetched per `pending_completions` call (default 256).
    pub dispatch_batch: u32,
    /// Batches one drain of a partition takes before yielding to other partitions (default
    /// 16); a partition with more waiting is drained again right after.
    pub dispatch_max_batches: u32,
    /// Items per scanner call (default 256).
    pub scan_batch: u32,
    /// Scanner calls per partition per cycle, following the cursor, before moving on to the
    /// next partition (default 8): bounds one cycle while letting a backlog drain quickly.
    pub scan_max_batches: u32,
    /// The scanners and their intervals.
    pub scanners: ScannerSchedule,
    /// How long one `due_summary` answer is reused by the scanners before they ask again
    /// (default 250 ms; never longer than the shortest scanner interval). Scanners visit only
    /// partitions the summary says have something due, so this bounds how late a due item is
    /// noticed beyond its scanner's interval.
    pub due_refresh: Duration,
    /// Finished standalone executions and finished flows are removed this long after they
    /// ended (default 24 h). `None` keeps everything (the retention scanner does not run).
    pub retention: Option<Duration>,
    /// Random spread of every interval, as a fraction (default 0.1 = ±10 %), so that
    /// instances do not hit the backend in step.
    pub jitter: f64,
    /// TTL of this instance's registration and of its partition-ownership leases (default
    /// 10 s). An instance that dies loses its partitions within about this long; shorter
    /// means faster takeover and more coordination calls.
    pub ownership_ttl: Duration,
    /// Renew registration and ownership at this fraction of the TTL (default 1/3), so that a
    /// renewal can fail twice before ownership lapses.
    pub ownership_renew_fraction: f64,
    /// Backoff of an item (completion event, scanned item, partition) after it failed
    /// (default 500 ms doubling to 5 min): a poisoned item is passed over, not retried hot.
    pub item_backoff: Backoff,
    /// Backoff before restarting a task that panicked or failed (default 100 ms doubling to
    /// 30 s).
    pub restart_backoff: Backoff,
    /// How long `shutdown` waits for in-flight work before aborting it (default 10 s).
    pub shutdown_timeout: Duration,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            dispatch_concurrency: 8,
            dispatch_batch: 256,
            dispatch_max_batches: 16,
            scan_batch: 256,
            scan_max_batches: 8,
            scanners: ScannerSchedule::default(),
            due_refresh: Duration::from_millis(250),
            retention: Some(Duration::from_secs(24 * 3600)),
            jitter: 0.1,
            ownership_ttl: Duration::from_secs(10),
            ownership_renew_fraction: 1.0 / 3.0,
            item_backoff: Backoff::new(Duration::from_millis(500), Duration::from_secs(300)),
            restart_backoff: Backoff::new(Duration::from_millis(100), Duration::from_secs(30)),
            shutdown_timeout: Duration::from_secs(10),
        }
    }
}

impl EngineConfig {
    /// How often registration and ownership are renewed.
    pub fn ownership_renew_interval(&self) -> Duration {
        self.ownership_ttl.mul_f64(self.ownership_renew_fraction)
    }

    /// How long one `due_summary` answer is reused: [`EngineConfig::due_refresh`], capped at
    /// the shortest enabled scanner interval.
    pub fn due_refresh_interval(&self) -> Duration {
        let s = &self.scanners;
        [
            s.lease_expiry,
            s.delayed_promotion,
            s.attempt_timeout,
            s.execution_deadline,
            s.cancel_backlog,
            s.retention,
            s.completion_sweep,
            s.completion_poll,
        ]
        .into_iter()
        .filter(|scanner| scanner.enabled)
        .map(|scanner| scanner.interval)
        .fold(self.due_refresh, Duration::min)
    }

    /// Checks every field; errors name the field.
    pub fn validate(&self) -> Result<(), EngineError> {
        if self.dispatch_concurrency == 0 {
            return Err(EngineError::validation(
                "dispatch_concurrency",
                "must be at least 1",
            ));
        }
        for (field, value) in [
            ("dispatch_batch", self.dispatch_batch),
            ("scan_batch", self.scan_batch),
        ] {
            check_count(field, value, MAX_SCAN_BATCH)?;
        }
        for (field, value) in [
            ("dispatch_max_batches", self.dispatch_max_batches),
            ("scan_max_batches", self.scan_max_batches),
        ] {
            if value == 0 {
                return Err(EngineError::validation(field, "must be at least 1"));
            }
        }
        let schedule = &self.scanners;
        for (field, scanner) in [
            ("scanners.lease_expiry", schedule.lease_expiry),
            ("scanners.delayed_promotion", schedule.delayed_promotion),
            ("scanners.attempt_timeout", schedule.attempt_timeout),
            ("scanners.execution_deadline", schedule.execution_deadline),
            ("scanners.cancel_backlog", schedule.cancel_backlog),
            ("scanners.retention", schedule.retention),
            ("scanners.completion_sweep", schedule.completion_sweep),
            ("scanners.completion_poll", schedule.completion_poll),
        ] {
            check_interval(field, scanner.interval)?;
        }
        check_interval("due_refresh", self.due_refresh)?;
        if let Some(horizon) = self.retention {
            check_interval("retention", horizon)?;
        }
        if !(0.0..=0.9).contains(&self.jitter) {
            return Err(EngineError::validation(
                "jitter",
                "must be within 0.0..=0.9",
            ));
        }
        check_interval("ownership_ttl", self.ownership_ttl)?;
        if !(0.05..=0.5).contains(&self.ownership_renew_fraction) {
            return Err(EngineError::validation(
                "ownership_renew_fraction",
                "must be within 0.05..=0.5, so that a renewal lands before the lease lapses",
            ));
        }
        for (field, backoff) in [
            ("item_backoff", self.item_backoff),
            ("restart_backoff", self.restart_backoff),
        ] {
            check_interval(&format!("{field}.initial"), backoff.initial)?;
            if backoff.max < backoff.initial {
                return Err(EngineError::validation(
                    format!("{field}.max"),
                    "must not be shorter than the initial backoff",
                ));
            }
        }
        check_interval("shutdown_timeout", self.shutdown_timeout)
    }
}

fn check_interval(field: &str, d: Duration) -> Result<(), EngineError> {
    if d.is_zero() || d > MAX_DURATION {
        return Err(EngineError::validation(
            field,
            format!("{d:?} must be longer than zero and at most {MAX_DURATION:?}"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        EngineConfig::default().validate().expect("defaults valid");
        let renew = EngineConfig::default().ownership_renew_interval();
        assert!(renew > Duration::from_secs(3) && renew < Duration::from_secs(4));
    }

    #[test]
    fn errors_name_the_field() {
        let config = EngineConfig {
            dispatch_batch: 0,
            ..EngineConfig::default()
        };
        assert_eq!(
            config
                .validate()
                .expect_err("zero batch")
                .validation_field(),
            Some("dispatch_batch")
        );
        let mut config = EngineConfig::default();
        config.scanners.lease_expiry.interval = Duration::ZERO;
        assert_eq!(
            config
                .validate()
                .expect_err("zero interval")
                .validation_field(),
            Some("scanners.lease_expiry")
        );
        let config = EngineConfig {
            ownership_renew_fraction: 0.9,
            ..EngineConfig::default()
        };
        assert_eq!(
            config
                .validate()
                .expect_err("late renewal")
                .validation_field(),
            Some("ownership_renew_fraction")
        );
    }
}
