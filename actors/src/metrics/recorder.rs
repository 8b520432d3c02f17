//! The process's `metrics` recorder: a `metrics-util` registry of atomics (counters, gauges)
//! and [`HdrCell`]s (histograms), read by the JSON and Prometheus renderers.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};
use metrics_util::registry::{Registry, Storage};

use super::histogram::HdrCell;

/// Storage of one series per kind.
#[derive(Debug, Default)]
pub struct CellStorage;

impl Storage<Key> for CellStorage {
    type Counter = Arc<AtomicU64>;
    type Gauge = Arc<AtomicU64>;
    type Histogram = Arc<HdrCell>;

    fn counter(&self, _: &Key) -> Self::Counter {
        Arc::new(AtomicU64::new(0))
    }

    fn gauge(&self, _: &Key) -> Self::Gauge {
        // A gauge holds the bits of an f64; all-zero bits are 0.0.
        Arc::new(AtomicU64::new(0))
    }

    fn histogram(&self, _: &Key) -> Self::Histogram {
        Arc::new(HdrCell::new())
    }
}

/// Shared by the installed recorder and the readers.
pub struct MetricsRegistry {
    pub(crate) registry: Registry<Key, CellStorage>,
}

impl MetricsRegistry {
    pub fn new() -> MetricsRegistry {
        MetricsRegistry {
            registry: Registry::new(CellStorage),
        }
    }

    /// Drops every series labelled `sessionSlug=slug`. Handles still held elsewhere keep
    /// working but no longer show.
    pub fn forget_label(&self, label: &str, value: &str) {
        let keep = |key: &Key| !key.labels().any(|l| l.key() == label && l.value() == value);
        self.registry.retain_counters(|key, _| keep(key));
        self.registry.retain_gauges(|key, _| keep(key));
        self.registry.retain_histograms(|key, _| keep(key));
    }
}

impl Default for MetricsRegistry {
    fn default() -> Self {
        MetricsRegistry::new()
    }
}

/// The `metrics::Recorder` over a [`MetricsRegistry`].
#[derive(Clone)]
pub struct RegistryRecorder(pub Arc<MetricsRegistry>);

impl Recorder for RegistryRecorder {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        self.0
            .registry
            .get_or_create_counter(key, |c| Counter::from_arc(c.clone()))
    }

    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        self.0
            .registry
            .get_or_create_gauge(key, |g| Gauge::from_arc(g.clone()))
    }

    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        self.0
            .registry
            .get_or_create_histogram(key, |h| Histogram::from_arc(h.clone()))
    }
}
