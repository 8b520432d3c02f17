//! HTTP API and WebSocket routes (docs/openapi.yaml; the WebSocket protocol is docs/PROTOCOL.md).

mod active_speaker;
mod ai_lock;
mod broadcast_relay;
mod error;
mod health;
mod post_latency;
mod require_token;
mod sessions;
mod speaker_rate_limit;
mod state;
mod transcribe;

use actix_web::web;

pub use error::ApiError;
pub use post_latency::record_post_latency;
pub use require_token::{RequireToken, PUBLIC_API_PATHS, WEBSOCKET_PATH};
pub use state::{AiLocks, AppState};

/// Every JSON body this API takes is a few hundred bytes; 16 KiB leaves room and bounds abuse.
const MAX_JSON_BODY: usize = 16 * 1024;

/// Bad bodies and query strings get the same `{"error","message"}` shape as everything else.
fn json_extractor_errors() -> (web::JsonConfig, web::QueryConfig) {
    use actix_web::error::JsonPayloadError;
    use actix_web::http::StatusCode;
    let json = web::JsonConfig::default()
        .limit(MAX_JSON_BODY)
        .error_handler(|error, _| {
            match &error {
                JsonPayloadError::Overflow { .. }
                | JsonPayloadError::OverflowKnownLength { .. } => ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "body_too_large",
                    format!("bodies are limited to {MAX_JSON_BODY} bytes"),
                ),
                other => ApiError::bad_request("bad_request", other.to_string()),
            }
            .into()
        });
    let query = web::QueryConfig::default()
        .error_handler(|error, _| ApiError::bad_request("bad_request", error.to_string()).into());
    (json, query)
}

pub fn routes(cfg: &mut web::ServiceConfig) {
    let (json_config, query_config) = json_extractor_errors();
    cfg.app_data(json_config)
        .app_data(query_config)
        .route(
            "/api/active-speaker",
            web::post().to(active_speaker::report),
        )
        .route("/healthz", web::get().to(health::healthz))
        .route("/metrics", web::get().to(health::metrics))
        .route(
            "/metrics/prometheus",
            web::get().to(health::metrics_prometheus),
        )
        .route("/readyz", web::get().to(health::readyz))
        .route(
            "/api/realtime/transcribe",
            web::get().to(transcribe::upgrade),
        )
        // Outside token auth (PUBLIC_API_PATHS): it checks its shared secret itself.
        .route(
            ::actors::relay::BROADCAST_PATH,
            web::post().to(broadcast_relay::receive),
        )
        .route("/api/sessions", web::get().to(sessions::list))
        .route("/api/sessions/{slug}", web::get().to(sessions::show))
        .route(
            "/api/sessions/{slug}/transcription",
            web::post().to(sessions::start),
        )
        .route(
            "/api/sessions/{slug}/transcription",
            web::delete().to(sessions::stop),
        )
        .route(
            "/api/sessions/{slug}/ai-lock",
            web::post().to(ai_lock::acquire),
        )
        .route(
            "/api/sessions/{slug}/ai-lock",
            web::delete().to(ai_lock::release),
        )
        .route(
            "/api/sessions/{slug}/transcripts",
            web::get().to(sessions::transcripts),
        );
}
