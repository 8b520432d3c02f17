//! Liveness and readiness.

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};

use super::{json_error, AppState};
use crate::db::Ping;

/// The process is up.
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({ "status": "ok" }))
}

/// The database answers (the listeners are bound before the server starts serving).
pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    match state.db_ping.send(Ping).await {
        Ok(Ok(())) => HttpResponse::Ok().json(serde_json::json!({ "status": "ready" })),
        Ok(Err(error)) => json_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "database_unavailable",
            error.to_string(),
        ),
        Err(_) => json_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "database_unavailable",
            "database worker stopped",
        ),
    }
}

/// Counter snapshot (SPEC §7 names). Issue #5 replaces this with the full metrics endpoint.
pub async fn metrics() -> HttpResponse {
    use ::actors::counters::*;
    HttpResponse::Ok().json(serde_json::json!({
        "counters": {
            "ws.heartbeat_timeouts_total": WS_HEARTBEAT_TIMEOUTS.get(),
            "ws.broadcast_errors_total": WS_BROADCAST_ERRORS.get(),
            "ws.queue_drops_total": WS_QUEUE_DROPS.get(),
            "ws.slow_consumer_closes_total": WS_SLOW_CONSUMERS.get(),
            "relay.posted_total": RELAY_POSTED.get(),
            "relay.retries_total": RELAY_RETRIES.get(),
            "relay.dropped_partials_total": RELAY_DROPPED_PARTIALS.get(),
            "relay.dropped_finals_total": RELAY_DROPPED_FINALS.get(),
        }
    }))
}
