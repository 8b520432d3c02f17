//! Liveness and readiness.

use actix_web::{web, HttpResponse};

use super::error::ApiError;
use super::state::AppState;
use crate::db::Ping;

/// The process is up.
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({ "status": "ok" }))
}

/// The database answers (the listeners are bound before the server starts serving).
pub async fn readyz(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    match state.db_ping.send(Ping).await {
        Ok(Ok(())) => Ok(HttpResponse::Ok().json(serde_json::json!({ "status": "ready" }))),
        Ok(Err(error)) => Err(ApiError::database_unavailable(error)),
        Err(_) => Err(ApiError::database_unavailable("database worker stopped")),
    }
}

/// `GET /metrics`: latencies with percentiles, counters and gauges (docs/PROTOCOL.md#metrics).
pub async fn metrics() -> HttpResponse {
    HttpResponse::Ok().json(::actors::metrics::json())
}

/// `GET /metrics/prometheus`: the same in the Prometheus text format 0.0.4.
pub async fn metrics_prometheus() -> HttpResponse {
    HttpResponse::Ok()
        .content_type(::actors::metrics::prometheus::CONTENT_TYPE)
        .body(::actors::metrics::prometheus_text())
}
