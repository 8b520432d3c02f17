//! `GET /api/realtime/transcribe`: the WebSocket upgrade (SPEC §4.1).

use ::actors::client::ClientActor;
use ::actors::registry::validate_slug;
use actix::Actor as _;
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;

use super::{json_error, AppState};

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TranscribeQuery {
    session_slug: Option<String>,
}

pub async fn upgrade(
    req: HttpRequest,
    body: web::Payload,
    state: web::Data<AppState>,
    query: web::Query<TranscribeQuery>,
) -> HttpResponse {
    let Some(slug) = query.into_inner().session_slug.filter(|s| !s.is_empty()) else {
        return json_error(
            StatusCode::BAD_REQUEST,
            "missing_session_slug",
            "the sessionSlug query parameter is required",
        );
    };
    if let Err(e) = validate_slug(&slug) {
        return json_error(StatusCode::BAD_REQUEST, "bad_session_slug", e.to_string());
    }
    let (response, socket, incoming) = match actix_ws::handle(&req, body) {
        Ok(parts) => parts,
        Err(error) => {
            return json_error(
                StatusCode::BAD_REQUEST,
                "not_a_websocket",
                error.to_string(),
            )
        }
    };
    ClientActor::new(
        socket,
        incoming,
        state.registry.clone(),
        Some(slug),
        state.client_max_queued_finals,
    )
    .start();
    response
}
