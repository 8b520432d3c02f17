//! Metrics with the docs/PROTOCOL.md#metrics names, recorded through the `metrics` facade.
//!
//! - `names`: every metric name and the `sessionSlug` label.
//! - `histogram`: one histogram series (HdrHistogram percentiles + exact sum).
//! - `recorder`: the process-wide recorder over a `metrics-util` registry.
//! - `snapshot`: `GET /metrics` JSON; `prometheus`: `GET /metrics/prometheus` text.
//! - `session`: a session's labelled series, removed when the session retires.
//! - `global`: the process's one registry and its installation as the recorder.
//!
//! Code records with `::metrics::counter!(names::X).increment(1)` and friends; a static
//! name builds its key without allocating. Without [`install`] (unit tests) the macros do
//! nothing and the readers show the pre-registered series at zero.

pub mod global;
pub mod histogram;
pub mod names;
pub mod prometheus;
pub mod recorder;
pub mod session;
pub mod snapshot;

pub use global::{counter_value, install, registry};
pub use recorder::{MetricsRegistry, RegistryRecorder};
pub use session::SessionMetrics;

/// `GET /metrics`.
pub fn json() -> serde_json::Value {
    snapshot::to_json(registry())
}

/// `GET /metrics/prometheus`.
pub fn prometheus_text() -> String {
    prometheus::render(registry())
}
