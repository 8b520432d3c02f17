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

pub async fn report(
    state: web::Data<AppState>,
    principal: Principal,
    body: web::Json<ActiveSpeakerBody>,
) -> Result<HttpResponse, ApiError> {
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
    if !state
        .speaker_limits
        .allow(&body.session_slug, &body.identity)
    {
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
        timestamp_ms: body.timestamp.unwrap_or_else(now_ms),
    }));
    Ok(HttpResponse::NoContent().finish())
}
