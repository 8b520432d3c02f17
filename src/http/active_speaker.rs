//! `POST /api/active-speaker` (docs/PROTOCOL.md#active-speaker): clients report who is speaking about every 500 ms;
//! transcripts are attributed to the report nearest before each utterance's end.

use ::actors::broadcast::ReportSpeaker;
use ::actors::messages::now_ms;
use ::actors::registry::{validate_slug, FindSession};
use ::actors::speaker::SpeakerReport;
use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use serde::Deserialize;

use super::error::ApiError;
use super::state::AppState;
use crate::auth::Principal;
use ::actors::access::Action;

/// Identities and names are display strings; longer ones are refused.
const MAX_FIELD_LEN: usize = 256;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ActiveSpeakerBody {
    session_slug: String,
    identity: String,
    #[serde(default)]
    name: Option<String>,
    /// When the client saw the speaker, ms since the epoch; the server's clock if absent.
    #[serde(default)]
    timestamp: Option<i64>,
}

/// How far a report's `timestamp` may be from the server's clock. Reports are sent as speech
/// happens; one far in the future would win attribution for everything until then.
const MAX_TIMESTAMP_SKEW_MS: u64 = 10_000;

/// `timestamp` if it is within [`MAX_TIMESTAMP_SKEW_MS`] of `now_ms` (no arithmetic overflow
/// whatever the number), else the 400 to answer.
fn check_timestamp(timestamp: Option<i64>, now_ms: i64) -> Result<i64, ApiError> {
    let Some(timestamp) = timestamp else {
        return Ok(now_ms);
    };
    match timestamp.checked_sub(now_ms) {
        Some(skew) if skew.unsigned_abs() <= MAX_TIMESTAMP_SKEW_MS => Ok(timestamp),
        _ => Err(ApiError::bad_request(
            "bad_timestamp",
            format!(
                "timestamp must be within {} s of the server's clock (ms since the epoch)",
                MAX_TIMESTAMP_SKEW_MS / 1000
            ),
        )),
    }
}

pub async fn report(
    state: web::Data<AppState>,
    principal: Principal,
    body: web::Json<ActiveSpeakerBody>,
) -> Result<HttpResponse, ApiError> {
    // Reports decide whom everyone's transcript is attributed to: a backend's job, not a
    // browser's (docs/PROTOCOL.md#roles).
    principal.require(Action::Report)?;
    let body = body.into_inner();
    // The slug is in the body, where the auth middleware cannot see it: check it here.
    principal.require_session(&body.session_slug)?;
    validate_slug(&body.session_slug)?;
    let name = body.name.unwrap_or_else(|| body.identity.clone());
    if body.identity.is_empty() || body.identity.len() > MAX_FIELD_LEN || name.len() > MAX_FIELD_LEN
    {
        return Err(ApiError::bad_request(
            "bad_request",
            "identity and name must be 1-256 characters",
        ));
    }
    let timestamp_ms = check_timestamp(body.timestamp, now_ms())?;
    // Limited per caller (the token's `sub`), not per identity it claims: one token cannot
    // flood a session by reporting many identities. Anonymous callers have only the identity.
    let reporter = principal.user_id.as_deref().unwrap_or(&body.identity);
    if !state.speaker_limits.allow(&body.session_slug, reporter) {
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            "too many active-speaker reports",
        ));
    }
    let session = state
        .registry
        .send(FindSession {
            session_slug: body.session_slug.clone(),
        })
        .await;
    let Ok(Some(supervisor)) = session else {
        return Err(ApiError::session_not_found(&body.session_slug));
    };
    supervisor.do_send(ReportSpeaker(SpeakerReport {
        identity: body.identity.into(),
        name: name.into(),
        timestamp_ms,
    }));
    Ok(HttpResponse::NoContent().finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_far_from_now_are_refused_without_overflow() {
        let now = 1_800_000_000_000;
        assert_eq!(check_timestamp(None, now), Ok(now));
        assert_eq!(check_timestamp(Some(now - 10_000), now), Ok(now - 10_000));
        assert_eq!(check_timestamp(Some(now + 10_000), now), Ok(now + 10_000));
        for bad in [now + 10_001, now - 10_001, i64::MAX, i64::MIN, 0, -1] {
            let refused = check_timestamp(Some(bad), now).unwrap_err();
            assert_eq!(refused.code(), "bad_timestamp", "{bad}");
        }
        // The extreme clock readings do not overflow either.
        assert!(check_timestamp(Some(i64::MAX), i64::MIN).is_err());
        assert!(check_timestamp(Some(i64::MIN), i64::MAX).is_err());
    }
}
