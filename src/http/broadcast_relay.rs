//! `POST /api/realtime/transcribe/broadcast` (SPEC §4.6): the receiving side of HTTP broadcast
//! mode. An ingest-only instance (`REALTIME_BROADCAST_MODE=http`) posts every SPEC §4.3
//! message here; this instance fans it out to its own clients of that session as if it were
//! local, keeping the sender's `seq` (so `lastSeq` resume and de-duplication work), and saves
//! the finals to its own database.
//!
//! It takes the shared secret (`x-broadcast-secret`, `REALTIME_BROADCAST_SECRET`) instead of a
//! client token: the auth middleware lets it through (`auth::PUBLIC_API_PATHS`).
//! - no secret configured here → 404 `broadcast_disabled`
//! - missing or wrong header → 401 `bad_broadcast_secret` (compared in constant time)
//! - body over [`MAX_RELAYED_BODY`] → 413 `body_too_large`; not a valid message → 400
//! - otherwise 200 `{"outcome": "delivered" | "duplicate" | "stale"}`

use ::actors::broadcast::RelayedTranscript;
use ::actors::registry::{validate_slug, GetOrCreateSession, SessionRefused};
use ::actors::relay::SECRET_HEADER;
use ::actors::supervisor::GetBroadcast;
use ::actors::wire::IncomingTranscript;
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use futures_util::StreamExt as _;
use sha2::{Digest, Sha256};

use super::{json_error, AppState};

/// A transcript message is a few hundred bytes; a long utterance a few KiB. Same bound as a
/// WebSocket frame (SPEC §4.1).
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
) -> HttpResponse {
    let Some(secret) = state.broadcast_secret.as_deref() else {
        return json_error(
            StatusCode::NOT_FOUND,
            "broadcast_disabled",
            "this instance does not accept relayed transcripts (REALTIME_BROADCAST_SECRET is not set)",
        );
    };
    let given = req
        .headers()
        .get(SECRET_HEADER)
        .map(|v| v.as_bytes())
        .unwrap_or_default();
    if !secrets_match(given, secret.as_bytes()) {
        tracing::info!(peer = ?req.peer_addr(), "broadcast post refused: bad or missing x-broadcast-secret");
        return json_error(
            StatusCode::UNAUTHORIZED,
            "bad_broadcast_secret",
            "the x-broadcast-secret header is missing or wrong",
        );
    }
    let too_large = || {
        json_error(
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
        return too_large();
    }
    let mut bytes = web::BytesMut::new();
    while let Some(chunk) = body.next().await {
        let Ok(chunk) = chunk else {
            return json_error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                "the body could not be read",
            );
        };
        if bytes.len() + chunk.len() > MAX_RELAYED_BODY {
            return too_large();
        }
        bytes.extend_from_slice(&chunk);
    }
    let message: IncomingTranscript = match serde_json::from_slice(&bytes) {
        Ok(m) => m,
        Err(error) => {
            return json_error(
                StatusCode::BAD_REQUEST,
                "bad_message",
                format!("not a SPEC §4.3 transcript message: {error}"),
            )
        }
    };
    if let Err(why) = message.validate() {
        return json_error(StatusCode::BAD_REQUEST, "bad_message", why);
    }
    if let Err(e) = validate_slug(&message.session_slug) {
        return json_error(StatusCode::BAD_REQUEST, "bad_session_slug", e.to_string());
    }
    let unavailable = || {
        json_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the session is shutting down; retry",
        )
    };
    let supervisor = match state
        .registry
        .send(GetOrCreateSession {
            session_slug: message.session_slug.clone(),
        })
        .await
    {
        Ok(Ok(supervisor)) => supervisor,
        Ok(Err(SessionRefused::BadSlug)) => {
            return json_error(
                StatusCode::BAD_REQUEST,
                "bad_session_slug",
                SessionRefused::BadSlug.to_string(),
            )
        }
        Ok(Err(refused @ SessionRefused::TooManySessions(_))) => {
            return json_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "too_many_sessions",
                refused.to_string(),
            )
        }
        Ok(Err(SessionRefused::ShuttingDown)) | Err(_) => return unavailable(),
    };
    let Ok(Some(broadcast)) = supervisor.send(GetBroadcast).await else {
        return unavailable();
    };
    match broadcast.send(RelayedTranscript(message)).await {
        Ok(Some(outcome)) => HttpResponse::Ok().json(serde_json::json!({ "outcome": outcome })),
        _ => unavailable(),
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
