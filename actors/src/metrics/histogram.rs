//! One histogram series: an HdrHistogram (3 significant digits) for the count and the
//! percentiles, plus the exact sum, minimum and maximum (HdrHistogram rounds those to its
//! buckets, which could show a mean above the maximum). Values are kept in thousandths of the
//! recorded unit (microseconds for a `_ms` metric).

use std::sync::Mutex;

use hdrhistogram::Histogram;
use metrics::HistogramFn;

/// Recorded values are multiplied by this before they go into the HdrHistogram (integers).
const SCALE: f64 = 1000.0;
const SIGNIFICANT_DIGITS: u8 = 3;

#[derive(Debug)]
pub struct HdrCell {
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    histogram: Histogram<u64>,
    sum: f64,
    min: f64,
    max: f64,
}

/// What `/metrics` shows for one histogram series, in the recorded unit.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Summary {
    pub count: u64,
    pub sum: f64,
    pub avg: f64,
    pub min: f64,
    pub max: f64,
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
}

impl HdrCell {
    pub fn new() -> HdrCell {
        let histogram = Histogram::new(SIGNIFICANT_DIGITS)
            .expect("3 significant digits is within HdrHistogram's range");
        HdrCell {
            inner: Mutex::new(Inner {
                histogram,
                sum: 0.0,
                min: f64::INFINITY,
                max: 0.0,
            }),
        }
    }

    /// Records one value; negative and non-finite values count as 0 (a clock stepping back).
    pub fn record_value(&self, value: f64) {
        let value = if value.is_finite() {
            value.max(0.0)
        } else {
            0.0
        };
        let scaled = (value * SCALE).round() as u64;
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        // Auto-resizing histograms grow to any u64; saturate rather than fail if it ever could not.
        if inner.histogram.record(scaled).is_err() {
            inner.histogram.saturating_record(scaled);
        }
        inner.sum += value;
        inner.min = inner.min.min(value);
        inner.max = inner.max.max(value);
    }

    pub fn summary(&self) -> Summary {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let h = &inner.histogram;
        let count = h.len();
        if count == 0 {
            return Summary::default();
        }
        // HdrHistogram answers with the top of a value's bucket; its bottom is exact below
        // 2.048 ms and at most 0.1 % under the recorded value above it. Clamped to the
        // exact extremes, so min <= p50 <= p95 <= p99 <= max always reads true.
        let (min, max) = (inner.min, inner.max);
        let quantile = |q: f64| {
            let v = h.lowest_equivalent(h.value_at_quantile(q)) as f64 / SCALE;
            v.clamp(min, max)
        };
        Summary {
            count,
            sum: inner.sum,
            // Clamped against float rounding of the sum (3 × 0.1 sums above 0.3).
            avg: (inner.sum / count as f64).clamp(min, max),
            min,
            max,
            p50: quantile(0.50),
            p95: quantile(0.95),
            p99: quantile(0.99),
        }
    }
}

impl Default for HdrCell {
    fn default() -> Self {
        HdrCell::new()
    }
}

impl HistogramFn for HdrCell {
    fn record(&self, value: f64) {
        self.record_value(value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// HdrHistogram with 3 significant digits answers within 0.1 % of the true value.
    fn close(actual: f64, expected: f64) -> bool {
        (actual - expected).abs() <= expected.abs() * 0.001 + 1e-9
    }

    #[test]
    fn one_to_a_hundred_milliseconds() {
        let cell = HdrCell::new();
        for ms in 1..=100 {
            cell.record_value(ms as f64);
        }
        let s = cell.summary();
        assert_eq!(s.count, 100);
        assert!(close(s.sum, 5050.0), "{s:?}");
        assert!(close(s.avg, 50.5), "{s:?}");
        assert!(close(s.min, 1.0), "{s:?}");
        assert!(close(s.max, 100.0), "{s:?}");
        assert!(close(s.p50, 50.0), "{s:?}");
        assert!(close(s.p95, 95.0), "{s:?}");
        assert!(close(s.p99, 99.0), "{s:?}");
    }

    #[test]
    fn skewed_samples_put_the_tail_in_p99_only() {
        let cell = HdrCell::new();
        // 990 fast requests at 2.5 ms and 10 slow ones at 800 ms.
        for _ in 0..990 {
            cell.record_value(2.5);
        }
        for _ in 0..10 {
            cell.record_value(800.0);
        }
        let s = cell.summary();
        assert_eq!(s.count, 1000);
        assert!(close(s.avg, (990.0 * 2.5 + 10.0 * 800.0) / 1000.0), "{s:?}");
        assert!(
            close(s.min, 2.5) && close(s.p50, 2.5) && close(s.p95, 2.5),
            "{s:?}"
        );
        assert!(close(s.p99, 2.5), "the 990th of 1000 is still fast: {s:?}");
        assert!(close(s.max, 800.0), "{s:?}");
        cell.record_value(800.0);
        cell.record_value(800.0);
        assert!(close(cell.summary().p99, 800.0), "now 12 of 1002 are slow");
    }

    #[test]
    fn fractions_of_a_millisecond_and_bad_values() {
        let cell = HdrCell::new();
        cell.record_value(0.25);
        cell.record_value(-3.0);
        cell.record_value(f64::NAN);
        let s = cell.summary();
        assert_eq!(s.count, 3);
        assert_eq!(s.min, 0.0);
        assert!(close(s.max, 0.25), "{s:?}");
        assert!(close(s.avg, 0.25 / 3.0), "{s:?}");
    }

    #[test]
    fn empty_is_all_zero() {
        assert_eq!(HdrCell::new().summary(), Summary::default());
    }
}
