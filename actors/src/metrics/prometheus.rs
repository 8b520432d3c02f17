//! `GET /metrics/prometheus`: the registry in the Prometheus text format 0.0.4, written with
//! `metrics-exporter-prometheus`'s formatting helpers (name and label sanitising, escaping).
//! Dots in our names become underscores; histograms are summaries (quantiles 0.5, 0.95,
//! 0.99 plus `_sum` and `_count`).

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use indexmap::IndexMap;
use metrics::Key;
use metrics_exporter_prometheus::formatting::{
    sanitize_metric_name, write_metric_line, write_type_line,
};
use metrics_exporter_prometheus::LabelSet;

use super::histogram::Summary;
use super::recorder::MetricsRegistry;

pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

const NO_LABEL: Option<(&str, f64)> = None;

pub fn render(metrics: &MetricsRegistry) -> String {
    let no_globals = IndexMap::new();
    let labels = |key: &Key| LabelSet::from_key_and_global(key, &no_globals);
    let mut counters: BTreeMap<String, Vec<(LabelSet, u64)>> = BTreeMap::new();
    let mut gauges: BTreeMap<String, Vec<(LabelSet, f64)>> = BTreeMap::new();
    let mut summaries: BTreeMap<String, Vec<(LabelSet, Summary)>> = BTreeMap::new();
    metrics.registry.visit_counters(|key, c| {
        let name = sanitize_metric_name(key.name());
        counters
            .entry(name)
            .or_default()
            .push((labels(key), c.load(Ordering::Relaxed)));
    });
    metrics.registry.visit_gauges(|key, g| {
        let name = sanitize_metric_name(key.name());
        gauges
            .entry(name)
            .or_default()
            .push((labels(key), f64::from_bits(g.load(Ordering::Relaxed))));
    });
    metrics.registry.visit_histograms(|key, h| {
        let name = sanitize_metric_name(key.name());
        summaries
            .entry(name)
            .or_default()
            .push((labels(key), h.summary()));
    });

    let mut out = String::new();
    for (name, series) in &counters {
        write_type_line(&mut out, name, None, None, "counter");
        for (labels, value) in series {
            write_metric_line(&mut out, name, None, labels, NO_LABEL, value, None);
        }
    }
    for (name, series) in &gauges {
        write_type_line(&mut out, name, None, None, "gauge");
        for (labels, value) in series {
            write_metric_line(&mut out, name, None, labels, NO_LABEL, value, None);
        }
    }
    for (name, series) in &summaries {
        write_type_line(&mut out, name, None, None, "summary");
        for (labels, s) in series {
            for (q, v) in [("0.5", s.p50), ("0.95", s.p95), ("0.99", s.p99)] {
                write_metric_line(&mut out, name, None, labels, Some(("quantile", q)), v, None);
            }
            write_metric_line(&mut out, name, Some("sum"), labels, NO_LABEL, s.sum, None);
            write_metric_line(
                &mut out,
                name,
                Some("count"),
                labels,
                NO_LABEL,
                s.count,
                None,
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::metrics::recorder::RegistryRecorder;

    #[test]
    fn text_format_with_underscored_names_labels_and_summaries() {
        let registry = Arc::new(MetricsRegistry::new());
        let recorder = RegistryRecorder(registry.clone());
        metrics::with_local_recorder(&recorder, || {
            metrics::counter!("ws.queue_drops_total").increment(4);
            metrics::gauge!("ws.session_clients", "sessionSlug" => "a\"b").set(3.0);
            metrics::histogram!("http.post_latency_ms").record(2.0);
            metrics::histogram!("http.post_latency_ms").record(4.0);
        });
        let text = render(&registry);
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines.contains(&"# TYPE ws_queue_drops_total counter"),
            "{text}"
        );
        assert!(lines.contains(&"ws_queue_drops_total 4"), "{text}");
        assert!(lines.contains(&"# TYPE ws_session_clients gauge"), "{text}");
        assert!(
            lines.contains(&r#"ws_session_clients{sessionSlug="a\"b"} 3"#),
            "{text}"
        );
        assert!(
            lines.contains(&"# TYPE http_post_latency_ms summary"),
            "{text}"
        );
        assert!(
            lines.contains(&r#"http_post_latency_ms{quantile="0.5"} 2"#),
            "{text}"
        );
        assert!(
            lines.contains(&r#"http_post_latency_ms{quantile="0.99"} 4"#),
            "{text}"
        );
        assert!(lines.contains(&"http_post_latency_ms_sum 6"), "{text}");
        assert!(lines.contains(&"http_post_latency_ms_count 2"), "{text}");
    }
}
