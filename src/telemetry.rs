//! Logging and traces (docs/PROTOCOL.md#traces).
//!
//! Logs go to stderr, filtered by `RUST_LOG`. Traces are exported over OTLP/HTTP only when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set; without
//! it no OpenTelemetry layer is installed at all, so spans cost what `tracing` costs.
//!
//! The span tree (created in the `actors` crate and in `db::batcher`): a root `session` span
//! per session with `ingest` (one publish), `decode` (one decoder pipeline), `stt` (one
//! provider stream) and `broadcast` (one delivered final) children; `database` spans are
//! roots per batch write carrying `session.slug` when the batch holds one session.
//!
//! The exporter uses the blocking reqwest client on the batch processor's own thread, so
//! [`init`] must run before the actix runtime starts and [`Telemetry::shutdown`] after it
//! stopped.

use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig as _};
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// The `service.name` resource attribute of every exported span.
pub const SERVICE_NAME: &str = "realtime-core";

/// How long shutdown waits for the last spans to leave.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

/// The installed exporter, if any; shut it down after the runtime stopped.
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

/// Why traces cannot be set up; a one-line message naming the variable.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("invalid OTEL_EXPORTER_OTLP_PROTOCOL {0:?}: this build exports traces over OTLP/HTTP only (use http/protobuf or http/json, port 4318)")]
    Protocol(String),
    #[error("OTEL_EXPORTER_OTLP_ENDPOINT must be an http:// URL (this build speaks OTLP without TLS: point it at a collector nearby, which can use TLS towards a backend)")]
    Scheme,
    #[error("cannot set up the OTLP trace exporter: {0}")]
    Exporter(String),
}

/// The exporter's HTTP client has no TLS: an https:// endpoint would fail on every export,
/// silently. The value itself is never echoed (it may carry credentials).
fn check_endpoint(endpoint: &str) -> Result<(), TelemetryError> {
    let endpoint = endpoint.trim();
    let scheme_ok = endpoint
        .get(..7)
        .is_some_and(|s| s.eq_ignore_ascii_case("http://"));
    if scheme_ok {
        Ok(())
    } else {
        Err(TelemetryError::Scheme)
    }
}

/// The OTLP endpoint when traces are to be exported: the standard variables, empty = unset.
fn configured_endpoint() -> Option<String> {
    [
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
    ]
    .into_iter()
    .filter_map(|var| std::env::var(var).ok())
    .find(|v| !v.trim().is_empty())
}

/// The protocol from `OTEL_EXPORTER_OTLP_[TRACES_]PROTOCOL`: `http/protobuf` (the default,
/// as the OTLP specification says) or `http/json`. `grpc` (port 4317) is refused rather than
/// silently sent nowhere.
fn protocol() -> Result<Protocol, TelemetryError> {
    parse_protocol(
        [
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
            "OTEL_EXPORTER_OTLP_PROTOCOL",
        ]
        .into_iter()
        .filter_map(|var| std::env::var(var).ok()),
    )
}

/// The first non-empty value wins (the signal-specific variable comes first).
fn parse_protocol(values: impl Iterator<Item = String>) -> Result<Protocol, TelemetryError> {
    let configured = values
        .map(|v| v.trim().to_ascii_lowercase())
        .find(|v| !v.is_empty());
    match configured.as_deref() {
        None | Some("http/protobuf") => Ok(Protocol::HttpBinary),
        Some("http/json") => Ok(Protocol::HttpJson),
        Some(other) => Err(TelemetryError::Protocol(other.to_owned())),
    }
}

/// Which spans are exported: this service's own, never the HTTP clients' (the exporter's
/// own requests would otherwise trace themselves).
fn exported_spans() -> Targets {
    Targets::new()
        .with_target("realtime_core", LevelFilter::INFO)
        .with_target("actors", LevelFilter::INFO)
        .with_target("pipelines", LevelFilter::INFO)
}

fn tracer_provider() -> Result<SdkTracerProvider, TelemetryError> {
    // Endpoint, headers and timeout come from the standard OTEL_EXPORTER_OTLP_* variables;
    // the batch processor reads OTEL_BSP_*.
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(protocol()?)
        .build()
        .map_err(|e| TelemetryError::Exporter(e.to_string()))?;
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(Resource::builder().with_service_name(SERVICE_NAME).build())
        .build())
}

/// Installs the global subscriber: stderr logs filtered by `rust_log` and, when an OTLP
/// endpoint is configured, the OpenTelemetry layer. Call before the actix runtime starts.
pub fn init(rust_log: &str) -> Result<Telemetry, TelemetryError> {
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let logs = tracing_subscriber::fmt::layer()
        // Values from the network are in the fields: no raw control character reaches a line.
        .with_writer(crate::escaped_log::EscapedStderr { ansi })
        .with_ansi(ansi)
        .with_filter(EnvFilter::new(rust_log));
    let provider = match configured_endpoint() {
        Some(endpoint) => {
            check_endpoint(&endpoint)?;
            Some(tracer_provider()?)
        }
        None => None,
    };
    let traces = provider.as_ref().map(|provider| {
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer(SERVICE_NAME))
            .with_filter(exported_spans())
    });
    tracing_subscriber::registry()
        .with(logs)
        .with(traces)
        .init();
    if provider.is_some() {
        // Neither the endpoint (it may carry credentials) nor the headers (tokens) are logged.
        tracing::info!(
            service.name = SERVICE_NAME,
            "exporting traces over OTLP/HTTP"
        );
    }
    Ok(Telemetry { provider })
}

impl Telemetry {
    /// Exports the spans still queued and stops the exporter. Call after the runtime stopped
    /// (the blocking HTTP client must not run inside it).
    pub fn shutdown(self) {
        if let Some(provider) = self.provider {
            if let Err(error) = provider.shutdown_with_timeout(SHUTDOWN_TIMEOUT) {
                eprintln!("realtime-core: traces not flushed at shutdown: {error}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(values: &[&str]) -> Result<Protocol, TelemetryError> {
        parse_protocol(values.iter().map(|v| (*v).to_owned()))
    }

    #[test]
    fn protobuf_is_the_default_and_json_is_honoured() {
        assert!(matches!(parse(&[]), Ok(Protocol::HttpBinary)));
        assert!(matches!(parse(&[""]), Ok(Protocol::HttpBinary)));
        assert!(matches!(
            parse(&["http/protobuf"]),
            Ok(Protocol::HttpBinary)
        ));
        assert!(matches!(parse(&[" HTTP/JSON "]), Ok(Protocol::HttpJson)));
        // The traces-specific variable comes first.
        assert!(matches!(
            parse(&["http/json", "http/protobuf"]),
            Ok(Protocol::HttpJson)
        ));
        assert!(matches!(parse(&["", "http/json"]), Ok(Protocol::HttpJson)));
    }

    #[test]
    fn only_plain_http_endpoints_are_accepted() {
        assert!(check_endpoint("http://otel-collector:4318").is_ok());
        assert!(check_endpoint(" HTTP://127.0.0.1:4318/ ").is_ok());
        for bad in [
            "https://otlp.example.com",
            "otel-collector:4318",
            "http:/x",
            "",
        ] {
            assert!(
                matches!(check_endpoint(bad), Err(TelemetryError::Scheme)),
                "{bad}"
            );
        }
        let message = TelemetryError::Scheme.to_string();
        assert!(message.contains("OTEL_EXPORTER_OTLP_ENDPOINT"), "{message}");
    }

    #[test]
    fn grpc_is_refused_with_the_variable_named() {
        let error = parse(&["grpc"]).err().map(|e| e.to_string());
        assert!(
            error
                .as_deref()
                .is_some_and(|e| e.contains("OTEL_EXPORTER_OTLP_PROTOCOL") && e.contains("grpc")),
            "{error:?}"
        );
    }
}
