//! HTTP API and WebSocket routes (SPEC §4).

mod health;
mod sessions;
mod transcribe;

use ::actors::persistence::Storage;
use ::actors::registry::SessionRegistry;
use actix::prelude::*;
use actix_web::{web, HttpResponse};

use crate::db::Ping;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub registry: Addr<SessionRegistry>,
    pub storage: Storage,
    pub db_ping: Recipient<Ping>,
    pub client_max_queued_finals: usize,
}

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/healthz", web::get().to(health::healthz))
        .route("/readyz", web::get().to(health::readyz))
        .route(
            "/api/realtime/transcribe",
            web::get().to(transcribe::upgrade),
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
            "/api/sessions/{slug}/transcripts",
            web::get().to(sessions::transcripts),
        );
}

/// `{"error": code, "message": …}`, the error shape of every route (SPEC §4.1).
pub fn json_error(
    status: actix_web::http::StatusCode,
    code: &str,
    message: impl Into<String>,
) -> HttpResponse {
    HttpResponse::build(status)
        .json(serde_json::json!({ "error": code, "message": message.into() }))
}
