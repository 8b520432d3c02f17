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
