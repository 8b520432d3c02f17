//! `GET /api/realtime/transcribe`: the WebSocket upgrade (SPEC §4.1).

use ::actors::client::{ClientActor, InitialSubscription};
use ::actors::registry::validate_slug;
use actix::Actor as _;
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse, ResponseError as _};
use serde::Deserialize;

use super::{json_error, AppState};
use crate::auth::Principal;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TranscribeQuery {
    session_slug: Option<String>,
    /// Resume: finals with `seq > lastSeq` are replayed first (SPEC §4.4).
    last_seq: Option<i64>,
}

pub async fn upgrade(
    req: HttpRequest,
    body: web::Payload,
    state: web::Data<AppState>,
    query: web::Query<TranscribeQuery>,
    // Set by `auth::RequireToken` from `?token=` or the bearer header; already checked against
    // `sessionSlug` there, checked again below so this handler is safe on its own.
    principal: Principal,
) -> HttpResponse {
    let TranscribeQuery {
        session_slug,
        last_seq,
    } = query.into_inner();
    let Some(slug) = session_slug.filter(|s| !s.is_empty()) else {
        return json_error(
            StatusCode::BAD_REQUEST,
            "missing_session_slug",
            "the sessionSlug query parameter is required",
        );
    };
    if let Err(e) = validate_slug(&slug) {
        return json_error(StatusCode::BAD_REQUEST, "bad_session_slug", e.to_string());
    }
    if let Err(refused) = principal.require_session(&slug) {
        return refused.error_response();
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
    // The ClientActor enforces the same access on every later subscribe/start/stop.
    let access = principal.access;
    ClientActor::new(
        socket,
        incoming,
        state.registry.clone(),
        access,
        Some(InitialSubscription {
            session_slug: slug,
            last_seq,
        }),
        state.client_settings,
    )
    .start();
    response
}
