//! `GET /metrics`: the registry as JSON (docs/PROTOCOL.md#metrics).
//!
//! ```text
//! {"latencies":  {"gladia.stt_latency_ms": {"count","avgMs","minMs","maxMs","p50Ms","p95Ms","p99Ms"}, …},
//!  "histograms": {"db.batch_size": {"count","avg","min","max","p50","p95","p99"}},
//!  "counters":   {"ws.queue_drops_total": 0, …},
//!  "gauges":     {"db.queue_len": 0, "ws.session_clients{sessionSlug=demo}": 2, …}}
//! ```
//! A labelled series is keyed `name{label=value,…}`.

use std::sync::atomic::Ordering;

use metrics::Key;
use serde_json::{json, Map, Value};

use super::histogram::Summary;
use super::names::is_latency;
use super::recorder::MetricsRegistry;

/// `name` or `name{k=v,…}`.
pub fn series_name(key: &Key) -> String {
    let mut labels = key.labels().peekable();
    if labels.peek().is_none() {
        return key.name().to_owned();
    }
    let labels: Vec<String> = labels
        .map(|l| format!("{}={}", l.key(), l.value()))
        .collect();
    format!("{}{{{}}}", key.name(), labels.join(","))
}

/// Three decimals: HdrHistogram keeps three significant digits anyway.
fn round(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

fn latency_json(s: &Summary) -> Value {
    json!({
        "count": s.count,
        "avgMs": round(s.avg),
        "minMs": round(s.min),
        "maxMs": round(s.max),
        "p50Ms": round(s.p50),
        "p95Ms": round(s.p95),
        "p99Ms": round(s.p99),
    })
}

fn histogram_json(s: &Summary) -> Value {
    json!({
        "count": s.count,
        "avg": round(s.avg),
        "min": round(s.min),
        "max": round(s.max),
        "p50": round(s.p50),
        "p95": round(s.p95),
        "p99": round(s.p99),
    })
}

pub fn to_json(metrics: &MetricsRegistry) -> Value {
    let mut latencies = Map::new();
    let mut histograms = Map::new();
    let mut counters = Map::new();
    let mut gauges = Map::new();
    metrics.registry.visit_histograms(|key, cell| {
        let summary = cell.summary();
        if is_latency(key.name()) {
            latencies.insert(series_name(key), latency_json(&summary));
        } else {
            histograms.insert(series_name(key), histogram_json(&summary));
        }
    });
    metrics.registry.visit_counters(|key, counter| {
        counters.insert(series_name(key), json!(counter.load(Ordering::Relaxed)));
    });
    metrics.registry.visit_gauges(|key, gauge| {
        let value = f64::from_bits(gauge.load(Ordering::Relaxed));
        gauges.insert(series_name(key), json!(value));
    });
    json!({
        "latencies": latencies,
        "histograms": histograms,
        "counters": counters,
        "gauges": gauges,
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::metrics::recorder::RegistryRecorder;

    #[test]
    fn known_samples_become_the_documented_shape() {
        let registry = Arc::new(MetricsRegistry::new());
        let recorder = RegistryRecorder(registry.clone());
        metrics::with_local_recorder(&recorder, || {
            for ms in [10.0, 20.0, 30.0, 40.0] {
                metrics::histogram!("gladia.stt_latency_ms").record(ms);
            }
            metrics::histogram!("db.batch_size").record(7.0);
            metrics::counter!("ws.queue_drops_total").increment(3);
            metrics::counter!("ws.queue_drops_total").increment(2);
            metrics::gauge!("ws.session_clients", "sessionSlug" => "demo").set(2.0);
            metrics::gauge!("ws.session_clients", "sessionSlug" => "other").increment(1.0);
        });
        let json = to_json(&registry);
        assert_eq!(
            json["latencies"]["gladia.stt_latency_ms"],
            json!({"count": 4, "avgMs": 25.0, "minMs": 10.0, "maxMs": 40.0,
                   "p50Ms": 20.0, "p95Ms": 40.0, "p99Ms": 40.0}),
            "{json}"
        );
        assert_eq!(json["histograms"]["db.batch_size"]["count"], 1);
        assert_eq!(json["histograms"]["db.batch_size"]["p99"], 7.0);
        assert_eq!(json["counters"]["ws.queue_drops_total"], 5);
        assert_eq!(json["gauges"]["ws.session_clients{sessionSlug=demo}"], 2.0);
        assert_eq!(json["gauges"]["ws.session_clients{sessionSlug=other}"], 1.0);

        registry.forget_label("sessionSlug", "demo");
        let json = to_json(&registry);
        assert!(json["gauges"]
            .get("ws.session_clients{sessionSlug=demo}")
            .is_none());
        assert_eq!(json["gauges"]["ws.session_clients{sessionSlug=other}"], 1.0);
        assert_eq!(json["counters"]["ws.queue_drops_total"], 5);
    }
}
