//! The process's one metrics registry, and its installation as the `metrics` recorder.

use std::sync::{Arc, OnceLock};

use super::names;
use super::recorder::{MetricsRegistry, RegistryRecorder};

static REGISTRY: OnceLock<Arc<MetricsRegistry>> = OnceLock::new();

/// The process's registry (created on first use, with every static series at zero).
pub fn registry() -> &'static Arc<MetricsRegistry> {
    REGISTRY.get_or_init(|| {
        let registry = Arc::new(MetricsRegistry::new());
        let recorder = RegistryRecorder(registry.clone());
        metrics::with_local_recorder(&recorder, || {
            for name in names::LATENCIES.iter().chain(names::HISTOGRAMS) {
                let _ = metrics::histogram!(*name);
            }
            for name in names::COUNTERS {
                metrics::counter!(*name).increment(0);
            }
            for name in names::GAUGES {
                metrics::gauge!(*name).increment(0.0);
            }
        });
        registry
    })
}

/// Makes the registry the process's `metrics` recorder. Call once at start-up; a second call,
/// or another recorder installed first, is reported and otherwise harmless.
pub fn install() -> bool {
    let recorder = RegistryRecorder(registry().clone());
    match metrics::set_global_recorder(recorder) {
        Ok(()) => true,
        Err(_) => {
            tracing::warn!("a metrics recorder was installed already; /metrics may miss series");
            false
        }
    }
}

/// The value of an unlabelled counter (0 if it never counted), for in-process tests.
pub fn counter_value(name: &'static str) -> u64 {
    let key = metrics::Key::from_static_name(name);
    registry()
        .registry
        .get_counter(&key)
        .map_or(0, |c| c.load(std::sync::atomic::Ordering::Relaxed))
}
