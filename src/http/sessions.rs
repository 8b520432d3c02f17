//! Session lifecycle and saved transcripts over HTTP (SPEC §4.2, §4.6).

use ::actors::messages::SessionState;
use ::actors::persistence::LoadFinalsAfter;
use ::actors::registry::{
    validate_slug, FindSession, GetOrCreateSession, GetProvider, ListSessions, SessionRefused,
};
use ::actors::stt::SttBackend;
use ::actors::supervisor::{GetSnapshot, StartTranscription, StopTranscription};
use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use serde::Deserialize;

use super::{json_error, AppState};

fn refused(error: SessionRefused) -> HttpResponse {
    match error {
        SessionRefused::BadSlug => json_error(
            StatusCode::BAD_REQUEST,
            "bad_session_slug",
            error.to_string(),
        ),
        SessionRefused::TooManySessions(_) => json_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "too_many_sessions",
            error.to_string(),
        ),
        SessionRefused::ShuttingDown => json_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting_down",
            error.to_string(),
        ),
    }
}

fn unavailable() -> HttpResponse {
    json_error(
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
        "the session is shutting down",
    )
}

fn not_found(slug: &str) -> HttpResponse {
    json_error(
        StatusCode::NOT_FOUND,
        "session_not_found",
        format!("no live session {slug:?} on this instance"),
    )
}

/// What the list shows about the provider: its name, and for whisper the capacity this
/// machine has (SPEC §6), its use and the measurement behind it.
fn provider_json(provider: Option<SttBackend>) -> serde_json::Value {
    match provider {
        None => serde_json::Value::Null,
        Some(SttBackend::Gladia(_)) => serde_json::json!({ "name": "gladia" }),
        Some(SttBackend::Whisper(whisper)) => {
            let mut status = serde_json::to_value(whisper.status()).unwrap_or_default();
            status["name"] = "whisper".into();
            status
        }
    }
}

/// A whisper provider at its capacity refuses new sessions here already, before egress
/// starts; a session already transcribing may be started again.
fn capacity_refusal(provider: Option<&SttBackend>, state: SessionState) -> Option<HttpResponse> {
    let Some(SttBackend::Whisper(whisper)) = provider else {
        return None;
    };
    if whisper.has_room() || state == SessionState::Live {
        return None;
    }
    let refused = ::actors::whisper::CapacityReached {
        capacity: whisper.capacity(),
    };
    Some(json_error(
        StatusCode::SERVICE_UNAVAILABLE,
        "stt_capacity_reached",
        refused.to_string(),
    ))
}

pub async fn start(state: web::Data<AppState>, slug: web::Path<String>) -> HttpResponse {
    let provider = state.registry.send(GetProvider).await.ok().flatten();
    let supervisor = match state
        .registry
        .send(GetOrCreateSession {
            session_slug: slug.into_inner(),
        })
        .await
    {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return refused(e),
        Err(_) => return unavailable(),
    };
    if let Ok(snapshot) = supervisor.send(GetSnapshot).await {
        if let Some(refusal) = capacity_refusal(provider.as_ref(), snapshot.state) {
            return refusal;
        }
    }
    match supervisor.send(StartTranscription).await {
        Ok(s) => HttpResponse::Ok().json(serde_json::json!({
            "sessionSlug": s.session_slug, "rtmpUrl": s.rtmp_url, "state": s.state,
        })),
        Err(_) => unavailable(),
    }
}

pub async fn stop(state: web::Data<AppState>, slug: web::Path<String>) -> HttpResponse {
    let slug = slug.into_inner();
    if let Err(e) = validate_slug(&slug) {
        return refused(e);
    }
    match state
        .registry
        .send(FindSession {
            session_slug: slug.clone(),
        })
        .await
    {
        Ok(Some(supervisor)) => match supervisor.send(StopTranscription).await {
            Ok(snapshot) => HttpResponse::Ok().json(snapshot),
            Err(_) => unavailable(),
        },
        Ok(None) => not_found(&slug),
        Err(_) => unavailable(),
    }
}

pub async fn show(state: web::Data<AppState>, slug: web::Path<String>) -> HttpResponse {
    let slug = slug.into_inner();
    if let Err(e) = validate_slug(&slug) {
        return refused(e);
    }
    match state
        .registry
        .send(FindSession {
            session_slug: slug.clone(),
        })
        .await
    {
        Ok(Some(supervisor)) => match supervisor.send(GetSnapshot).await {
            Ok(snapshot) => HttpResponse::Ok().json(snapshot),
            Err(_) => not_found(&slug),
        },
        Ok(None) => not_found(&slug),
        Err(_) => unavailable(),
    }
}

/// Only the sessions the caller's token lists (all of them for `"*"` or anonymous calls).
pub async fn list(state: web::Data<AppState>, principal: crate::auth::Principal) -> HttpResponse {
    let Ok(supervisors) = state.registry.send(ListSessions).await else {
        return unavailable();
    };
    let mut sessions = Vec::with_capacity(supervisors.len());
    for supervisor in supervisors {
        // A session that retires meanwhile is simply not listed.
        if let Ok(snapshot) = supervisor.send(GetSnapshot).await {
            if principal.access.allows(&snapshot.session_slug) {
                sessions.push(snapshot);
            }
        }
    }
    sessions.sort_by(|a, b| a.session_slug.cmp(&b.session_slug));
    let provider = state.registry.send(GetProvider).await.ok().flatten();
    HttpResponse::Ok().json(serde_json::json!({
        "sessions": sessions,
        "provider": provider_json(provider),
    }))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TranscriptsQuery {
    after_seq: Option<i64>,
    limit: Option<i64>,
}

/// Most finals one call returns; page with `afterSeq`.
const MAX_TRANSCRIPTS_PER_CALL: i64 = 5000;

pub async fn transcripts(
    state: web::Data<AppState>,
    slug: web::Path<String>,
    query: web::Query<TranscriptsQuery>,
) -> HttpResponse {
    let slug = slug.into_inner();
    if let Err(e) = validate_slug(&slug) {
        return refused(e);
    }
    let after_seq = query.after_seq.unwrap_or(0).max(0);
    let limit = query
        .limit
        .unwrap_or(1000)
        .clamp(1, MAX_TRANSCRIPTS_PER_CALL);
    let request = LoadFinalsAfter {
        session_slug: slug.clone(),
        after_seq,
        limit,
    };
    match state.storage.load_finals_after.send(request).await {
        Ok(Ok(records)) => {
            let transcripts: Vec<_> = records
                .into_iter()
                .map(|r| {
                    serde_json::json!({
                        "seq": r.seq, "utteranceId": r.utterance_id, "text": r.text, "speaker": r.speaker,
                        "speakerId": r.speaker_id, "startedAt": r.started_at_ms, "endedAt": r.ended_at_ms,
                        "language": r.language,
                    })
                })
                .collect();
            HttpResponse::Ok()
                .json(serde_json::json!({ "sessionSlug": slug, "transcripts": transcripts }))
        }
        Ok(Err(error)) => json_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "database_unavailable",
            error.to_string(),
        ),
        Err(_) => unavailable(),
    }
}
