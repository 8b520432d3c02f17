//! The long view of a run (`--sample-every`): the service's RSS, threads and open file
//! descriptors every N seconds from the first publish to the last, and what they say about
//! growth: a one-hour soak should show RSS flat after its first minute, and threads and file
//! descriptors flat throughout (docs/PERFORMANCE.md).

use serde_json::{json, Value};

/// One sample of the series.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    /// Seconds since the first publish.
    pub at_s: f64,
    pub rss_kb: u64,
    pub threads: u64,
    pub fds: u64,
}

/// Open file descriptors of `pid` (entries of `/proc/{pid}/fd`); `None` if unreadable.
pub fn open_fds(pid: u32) -> Option<u64> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .ok()
        .map(|entries| entries.count() as u64)
}

/// How much RSS grew from the first sample at or after `settled_s` to the last one, in % of
/// the former; `None` when the series does not reach past `settled_s`.
pub fn rss_growth_percent(points: &[Point], settled_s: f64) -> Option<f64> {
    let from = points.iter().find(|p| p.at_s >= settled_s)?;
    let to = points.last()?;
    if to.at_s <= from.at_s || from.rss_kb == 0 {
        return None;
    }
    Some((to.rss_kb as f64 - from.rss_kb as f64) / from.rss_kb as f64 * 100.0)
}

/// The `soak` section of the report.
pub fn summary(points: &[Point], sample_every_s: u64) -> Value {
    let range = |f: fn(&Point) -> u64| {
        let values = points.iter().map(f);
        json!([values.clone().min(), values.max()])
    };
    json!({
        "sample_every_s": sample_every_s,
        "rss_growth_after_first_minute_percent":
            rss_growth_percent(points, 60.0).map(|g| (g * 10.0).round() / 10.0),
        "threads_min_max": range(|p| p.threads),
        "fds_min_max": range(|p| p.fds),
        "points": points
            .iter()
            .map(|p| json!([(p.at_s * 10.0).round() / 10.0, p.rss_kb, p.threads, p.fds]))
            .collect::<Vec<_>>(),
        "points_are": ["seconds", "rss_kb", "threads", "fds"],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(at_s: f64, rss_kb: u64) -> Point {
        Point {
            at_s,
            rss_kb,
            threads: 12,
            fds: 40,
        }
    }

    #[test]
    fn growth_is_measured_from_the_first_sample_after_the_first_minute() {
        let points = [
            point(0.0, 50),
            point(30.0, 90),
            point(60.0, 100),
            point(3600.0, 104),
        ];
        assert_eq!(rss_growth_percent(&points, 60.0), Some(4.0));
        assert_eq!(rss_growth_percent(&points[..2], 60.0), None, "too short");
        let summary = summary(&points, 10);
        assert_eq!(summary["rss_growth_after_first_minute_percent"], 4.0);
        assert_eq!(summary["threads_min_max"], json!([12, 12]));
        assert_eq!(summary["points"].as_array().map(Vec::len), Some(4));
    }

    #[test]
    fn this_process_has_open_file_descriptors() {
        assert!(open_fds(std::process::id()).is_some_and(|n| n >= 3));
    }
}
