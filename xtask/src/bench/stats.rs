//! Percentiles of one run's samples, and the median and spread of a figure over runs.

use std::time::Duration;

use serde::Serialize;

/// The `q`-quantile (`0.0..=1.0`) of `samples` by the nearest-rank method: the smallest
/// sample with at least `q` of the samples at or below it. `None` for no samples.
///
/// Sorts `samples` in place (callers pass a run's samples once, then take several
/// quantiles).
pub fn quantile(samples: &mut [Duration], q: f64) -> Option<Duration> {
    if samples.is_empty() {
        return None;
    }
    samples.sort_unstable();
    let n = samples.len();
    // Nearest rank: ceil(q * n), 1-based, clamped to 1..=n.
    let rank = (q.clamp(0.0, 1.0) * n as f64).ceil() as usize;
    Some(samples[rank.clamp(1, n) - 1])
}

/// p50 and p99 of a run's latency samples, in milliseconds.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Latency {
    /// Median.
    pub p50_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// How many samples they were taken over.
    pub samples: usize,
}

impl Latency {
    /// The percentiles of `samples`; `None` for no samples.
    pub fn of(samples: &mut [Duration]) -> Option<Latency> {
        let p50 = quantile(samples, 0.50)?;
        let p99 = quantile(samples, 0.99)?;
        Some(Latency {
            p50_ms: millis(p50),
            p99_ms: millis(p99),
            samples: samples.len(),
        })
    }
}

/// A duration in (fractional) milliseconds.
pub fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// One figure over several runs: the median and the range.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Summary {
    /// Median of the runs (mean of the two middle values for an even count).
    pub median: f64,
    /// Smallest run.
    pub min: f64,
    /// Largest run.
    pub max: f64,
    /// Every run's value, in run order.
    pub values: Vec<f64>,
}

impl Summary {
    /// Summarizes `values` (in run order); `None` when there are none.
    pub fn of(values: &[f64]) -> Option<Summary> {
        if values.is_empty() {
            return None;
        }
        let mut sorted = values.to_vec();
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len();
        let median = if n % 2 == 1 {
            sorted[n / 2]
        } else {
            (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
        };
        Some(Summary {
            median,
            min: sorted[0],
            max: sorted[n - 1],
            values: values.to_vec(),
        })
    }

    /// The spread as a fraction of the median ((max − min) / median), 0 for a zero median.
    pub fn relative_spread(&self) -> f64 {
        if self.median == 0.0 {
            0.0
        } else {
            (self.max - self.min) / self.median.abs()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    #[test]
    fn nearest_rank_quantiles() {
        let mut samples: Vec<Duration> = (1..=100).rev().map(ms).collect();
        assert_eq!(quantile(&mut samples, 0.5), Some(ms(50)));
        assert_eq!(quantile(&mut samples, 0.99), Some(ms(99)));
        assert_eq!(quantile(&mut samples, 1.0), Some(ms(100)));
        assert_eq!(quantile(&mut samples, 0.0), Some(ms(1)));
        let mut one = vec![ms(7)];
        assert_eq!(quantile(&mut one, 0.99), Some(ms(7)));
        assert_eq!(quantile(&mut [], 0.5), None);
    }

    #[test]
    fn latency_in_milliseconds() {
        let mut samples: Vec<Duration> = (1..=10).map(|v| Duration::from_micros(v * 100)).collect();
        let latency = Latency::of(&mut samples).expect("invariant: ten samples");
        assert!((latency.p50_ms - 0.5).abs() < 1e-9);
        assert!((latency.p99_ms - 1.0).abs() < 1e-9);
        assert_eq!(latency.samples, 10);
    }

    #[test]
    fn median_and_spread() {
        let odd = Summary::of(&[3.0, 1.0, 2.0]).expect("invariant: three values");
        assert_eq!((odd.median, odd.min, odd.max), (2.0, 1.0, 3.0));
        assert_eq!(odd.values, vec![3.0, 1.0, 2.0]);
        assert!((odd.relative_spread() - 1.0).abs() < 1e-9);
        let even = Summary::of(&[4.0, 1.0, 2.0, 3.0]).expect("invariant: four values");
        assert_eq!(even.median, 2.5);
        assert!(Summary::of(&[]).is_none());
    }
}
