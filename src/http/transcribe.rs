//! `GET /api/realtime/transcribe`: the WebSocket upgrade (docs/PROTOCOL.md#websocket-connection).

use ::actors::client::{ClientActor, InitialSubscription};
use ::actors::registry::validate_slug;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;

use ::actors::wire::check_last_seq;

use super::error::ApiError;
use super::state::AppState;
use crate::auth::{Principal, CLOCK_SKEW_LEEWAY_SECS};

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TranscribeQuery {
    session_slug: Option<String>,
    /// Resume: finals with `seq > lastSeq` are replayed first; 0 or more
    /// (docs/PROTOCOL.md#resume-and-delivery-guarantees).
    last_seq: Option<i64>,
}

pub async fn upgrade(
    req: HttpRequest,
    body: web::Payload,
    state: web::Data<AppState>,
    query: web::Query<TranscribeQuery>,
    // Set by `http::RequireToken` from `?token=` or the bearer header; already checked against
    // `sessionSlug` there, checked again below so this handler is safe on its own.
    principal: Principal,
) -> Result<HttpResponse, ApiError> {
    let TranscribeQuery {
        session_slug,
        last_seq,
    } = query.into_inner();
    let Some(slug) = session_slug.filter(|s| !s.is_empty()) else {
        return Err(ApiError::bad_request(
            "missing_session_slug",
            "the sessionSlug query parameter is required",
        ));
    };
    validate_slug(&slug)?;
    // Checked before the upgrade: a refused `lastSeq` is an HTTP 400, not a socket that opens
    // and then errors.
    let last_seq = check_last_seq(last_seq)
        .map_err(|message| ApiError::bad_request("bad_request", message))?;
    principal.require_session(&slug)?;
    let (response, socket, incoming) = actix_ws::handle(&req, body)
        .map_err(|error| ApiError::bad_request("not_a_websocket", error.to_string()))?;
    // The ClientActor enforces the same sessions and role on every later subscribe/start/stop, and closes
    // the socket when the token runs out (with the clock-skew leeway it was accepted with).
    let grant = principal.grant();
    // `exp` is from a token we signed, but still a number: an absurd one means no timer.
    let token_valid_until = principal.expires_at.and_then(|exp| {
        std::time::UNIX_EPOCH.checked_add(std::time::Duration::from_secs(
            exp.saturating_add(CLOCK_SKEW_LEEWAY_SECS),
        ))
    });
    ClientActor::open(
        socket,
        incoming,
        state.registry.clone(),
        grant,
        Some(InitialSubscription {
            session_slug: slug,
            last_seq,
        }),
        state.client_settings,
        token_valid_until,
    );
    Ok(response)
}
