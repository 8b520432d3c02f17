//! `POST /api/realtime/transcribe/broadcast` (docs/PROTOCOL.md#http-broadcast-mode): the receiving side of HTTP broadcast
//! mode. An ingest-only instance (`REALTIME_BROADCAST_MODE=http`) posts every docs/PROTOCOL.md#transcript-messages
//! message here; this instance fans it out to its own clients of that session as if it were
//! local, keeping the sender's `seq` (so `lastSeq` resume and de-duplication work), and saves
//! the finals to its own database.
//!
//! It takes the shared secret (`x-broadcast-secret`, `REALTIME_BROADCAST_SECRET`) or a `service`
//! token (docs/PROTOCOL.md#roles) instead of a client token check by the middleware, which lets it
//! through (`http::PUBLIC_API_PATHS`).
//! - no secret configured here → 404 `broadcast_disabled`
//! - neither header → 401 `bad_broadcast_secret`; a wrong secret → 401 `bad_broadcast_secret`
//!   (compared in constant time)
//! - a bearer token (no secret header) is verified as on every route: a viewer's or host's →
//!   403 `role_forbidden`, one not valid for the message's session → 403 `session_forbidden`
//! - body over [`MAX_RELAYED_BODY`] → 413 `body_too_large`; not a valid message → 400
//! - otherwise 200 `{"outcome": "delivered" | "duplicate" | "stale"}`

use ::actors::broadcast::RelayedTranscript;
use ::actors::registry::{validate_slug, GetOrCreateSession};
use ::actors::relay::SECRET_HEADER;
use ::actors::supervisor::GetBroadcast;
use ::actors::wire::IncomingTranscript;
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use futures_util::StreamExt as _;
use sha2::{Digest, Sha256};

use super::error::ApiError;
use super::require_token::bearer_token;
use super::state::AppState;
use crate::log_budget::{Budget, LogBudget};
use ::actors::access::Action;

/// A transcript message is a few hundred bytes; a long utterance a few KiB. Same bound as a
/// WebSocket frame (docs/PROTOCOL.md#websocket-connection).
pub const MAX_RELAYED_BODY: usize = 64 * 1024;

/// Equal secrets, in time independent of where they differ (and of their lengths: both sides
/// are hashed to 32 bytes first).
fn secrets_match(given: &[u8], expected: &[u8]) -> bool {
    let (a, b) = (Sha256::digest(given), Sha256::digest(expected));
    a.iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

pub async fn receive(
    req: HttpRequest,
    mut body: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let Some(secret) = state.broadcast_secret.as_deref() else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "broadcast_disabled",
            "this instance does not accept relayed transcripts (REALTIME_BROADCAST_SECRET is not set)",
        ));
    };
    let given = req.headers().get(SECRET_HEADER).map(|v| v.as_bytes());
    // A service token instead of the secret (only when tokens are configured at all): checked
    // now for its role, and below against the message's session.
    let token_principal = match (given, bearer_token(&req)?) {
        (None, Some(token)) if state.auth.requires_token() => {
            let principal = state.auth.authenticate(Some(&token))?;
            principal.require(Action::Report)?;
            Some(principal)
        }
        _ => None,
    };
    if token_principal.is_none() && !secrets_match(given.unwrap_or_default(), secret.as_bytes()) {
        static REFUSALS: LogBudget = LogBudget::new(10);
        if let Budget::Log { suppressed } = REFUSALS.take(std::time::Instant::now()) {
            tracing::info!(peer = ?req.peer_addr(), suppressed, "broadcast post refused: bad or missing x-broadcast-secret");
        }
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "bad_broadcast_secret",
            "the x-broadcast-secret header is missing or wrong",
        ));
    }
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("a relayed message is limited to {MAX_RELAYED_BODY} bytes"),
        )
    };
    let declared = req
        .headers()
        .get(actix_web::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > MAX_RELAYED_BODY) {
        return Err(too_large());
    }
    let mut bytes = web::BytesMut::new();
    while let Some(chunk) = body.next().await {
        let chunk = chunk
            .map_err(|_| ApiError::bad_request("bad_request", "the body could not be read"))?;
        if bytes.len() + chunk.len() > MAX_RELAYED_BODY {
            return Err(too_large());
        }
        bytes.extend_from_slice(&chunk);
    }
    let message: IncomingTranscript = serde_json::from_slice(&bytes).map_err(|error| {
        ApiError::bad_request("bad_message", format!("not a transcript message: {error}"))
    })?;
    message
        .validate()
        .map_err(|why| ApiError::bad_request("bad_message", why))?;
    validate_slug(&message.session_slug)?;
    if let Some(principal) = &token_principal {
        principal.require_session(&message.session_slug)?;
    }
    let supervisor = state
        .registry
        .send(GetOrCreateSession {
            session_slug: message.session_slug.clone(),
        })
        .await??;
    let broadcast = supervisor
        .send(GetBroadcast)
        .await?
        .ok_or_else(|| ApiError::unavailable("the session is shutting down; retry"))?;
    match broadcast.send(RelayedTranscript(message)).await? {
        Some(outcome) => Ok(HttpResponse::Ok().json(serde_json::json!({ "outcome": outcome }))),
        None => Err(ApiError::unavailable("the session is shutting down; retry")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ::actors::broadcast::RelayOutcome;

    #[test]
    fn secrets_compare_by_value() {
        assert!(secrets_match(b"s3cret", b"s3cret"));
        assert!(!secrets_match(b"s3cret", b"s3creT"));
        assert!(!secrets_match(b"", b"s3cret"));
        assert!(!secrets_match(b"s3cret-and-more", b"s3cret"));
    }

    #[test]
    fn outcomes_serialise_as_the_contract_says() {
        let v = serde_json::json!({ "outcome": RelayOutcome::Duplicate });
        assert_eq!(v["outcome"], "duplicate");
        assert_eq!(
            serde_json::to_value(RelayOutcome::Delivered).unwrap(),
            "delivered"
        );
        assert_eq!(serde_json::to_value(RelayOutcome::Stale).unwrap(), "stale");
    }
}
