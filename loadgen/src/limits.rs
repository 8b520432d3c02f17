//! `--max-missing-finals` and `--max-threads`: the load generator as a check (the test
//! command runs a short one), failing the run when the report breaks a bound.

use serde_json::Value;

/// The bounds a run was given; `None` checks nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct Limits {
    pub max_missing_finals: Option<u64>,
    pub max_threads: Option<u64>,
}

/// Every bound the report breaks, as lines for people; empty when the run passes.
pub fn broken(limits: Limits, report: &Value) -> Vec<String> {
    let mut broken = Vec::new();
    if let Some(max) = limits.max_missing_finals {
        let fanout = &report["fanout"];
        let missing = fanout["finals_missing_at_clients"].as_u64();
        // A final delivered twice is as wrong as one not delivered: both count against the bound.
        let duplicated = fanout["finals_duplicated_at_clients"].as_u64().unwrap_or(0);
        let sent = fanout["finals_sent_by_provider"].as_u64().unwrap_or(0);
        match missing {
            Some(n) if n + duplicated <= max && sent > 0 => {}
            Some(n) if sent == 0 => broken.push(format!(
                "the provider sent no final ({n} missing): the run proves nothing"
            )),
            Some(n) => broken.push(format!(
                "{n} finals missing and {duplicated} duplicated at clients (at most {max} together)"
            )),
            None => broken.push("the report has no finals_missing_at_clients".to_owned()),
        }
    }
    if let Some(max) = limits.max_threads {
        match report["service"]["threads_steady"].as_u64() {
            Some(n) if n <= max => {}
            Some(n) => broken.push(format!(
                "{n} service threads in steady state (at most {max})"
            )),
            None => broken.push("the report has no threads_steady".to_owned()),
        }
    }
    broken
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn report(missing: u64, sent: u64, threads: u64) -> Value {
        json!({
            "fanout": {
                "finals_missing_at_clients": missing,
                "finals_duplicated_at_clients": 0,
                "finals_sent_by_provider": sent,
            },
            "service": { "threads_steady": threads },
        })
    }

    #[test]
    fn a_run_within_its_bounds_passes_and_each_broken_bound_is_named() {
        let limits = Limits {
            max_missing_finals: Some(0),
            max_threads: Some(100),
        };
        assert!(broken(limits, &report(0, 40, 90)).is_empty());
        assert_eq!(broken(limits, &report(2, 40, 90)).len(), 1);
        assert_eq!(broken(limits, &report(0, 40, 101)).len(), 1);
        assert_eq!(broken(limits, &report(3, 40, 500)).len(), 2);
        assert_eq!(
            broken(limits, &report(0, 0, 10)).len(),
            1,
            "no final at all is a failure"
        );
        let mut doubled = report(0, 40, 90);
        doubled["fanout"]["finals_duplicated_at_clients"] = json!(1);
        assert_eq!(
            broken(limits, &doubled).len(),
            1,
            "a duplicate breaks the bound"
        );
        assert_eq!(broken(limits, &json!({})).len(), 2);
        assert!(broken(Limits::default(), &json!({})).is_empty());
    }
}
