//! Session lifecycle and saved transcripts over HTTP (docs/PROTOCOL.md#session-lifecycle, #persistence).

use ::actors::messages::SessionState;
use ::actors::persistence::LoadFinalsAfter;
use ::actors::registry::{
    validate_slug, FindSession, GetOrCreateSession, GetProvider, ListSessions,
};
use ::actors::stt::SttBackend;
use ::actors::supervisor::{GetSnapshot, StartTranscription, StopTranscription};
use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use serde::Deserialize;

use super::error::ApiError;
use super::state::AppState;
use crate::auth::Principal;
use ::actors::access::Action;
use ::actors::supervisor::SessionSnapshot;

/// The publish URL is for whoever runs the meeting (docs/PROTOCOL.md#roles): a viewer could
/// publish their own audio in its place.
fn as_seen_by(principal: &Principal, mut snapshot: SessionSnapshot) -> SessionSnapshot {
    if !principal.sees_publish_url() {
        snapshot.rtmp_url = None;
    }
    snapshot
}

/// What the list shows about the provider: its name, and for whisper the capacity this
/// machine has (docs/PROTOCOL.md#speech-to-text-providers), its use and the measurement behind it.
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
fn check_capacity(provider: Option<&SttBackend>, state: SessionState) -> Result<(), ApiError> {
    let Some(SttBackend::Whisper(whisper)) = provider else {
        return Ok(());
    };
    if whisper.has_room() || state == SessionState::Live {
        return Ok(());
    }
    let refused = ::actors::whisper::CapacityReached {
        capacity: whisper.capacity(),
    };
    Err(ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "stt_capacity_reached",
        refused.to_string(),
    ))
}

/// Cluster mode: what the owners of sessions on other instances last announced, by slug
/// (empty when alone, or while Redis is away: then each instance lists what it has).
async fn cluster_directory(
    state: &AppState,
) -> std::collections::BTreeMap<String, serde_json::Value> {
    let Some(cluster) = &state.cluster else {
        return Default::default();
    };
    match cluster.send(crate::cluster::ListDirectory).await {
        Ok(Ok(entries)) => entries
            .into_iter()
            .map(|entry| (entry.slug, entry.snapshot))
            .collect(),
        _ => Default::default(),
    }
}

/// The session's supervisor if it runs on this instance.
async fn find(
    state: &AppState,
    slug: &str,
) -> Result<actix::Addr<::actors::supervisor::SessionSupervisor>, ApiError> {
    validate_slug(slug)?;
    state
        .registry
        .send(FindSession {
            session_slug: slug.to_owned(),
        })
        .await?
        .ok_or_else(|| ApiError::session_not_found(slug))
}

pub async fn start(
    state: web::Data<AppState>,
    slug: web::Path<String>,
    principal: Principal,
) -> Result<HttpResponse, ApiError> {
    principal.require(Action::Control)?;
    let provider = state.registry.send(GetProvider).await.ok().flatten();
    let supervisor = state
        .registry
        .send(GetOrCreateSession {
            session_slug: slug.into_inner(),
        })
        .await??;
    if let Ok(snapshot) = supervisor.send(GetSnapshot).await {
        check_capacity(provider.as_ref(), snapshot.state)?;
    }
    let s = supervisor.send(StartTranscription).await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "sessionSlug": s.session_slug, "rtmpUrl": s.rtmp_url, "state": s.state,
    })))
}

pub async fn stop(
    state: web::Data<AppState>,
    slug: web::Path<String>,
    principal: Principal,
) -> Result<HttpResponse, ApiError> {
    principal.require(Action::Control)?;
    let supervisor = match (&state.cluster, find(&state, &slug).await) {
        // Cluster mode: a session ingested elsewhere is stopped from here too (the local
        // session asks its owner, wherever it runs).
        (Some(_), Err(_)) => {
            state
                .registry
                .send(GetOrCreateSession {
                    session_slug: slug.into_inner(),
                })
                .await??
        }
        (_, found) => found?,
    };
    Ok(HttpResponse::Ok().json(supervisor.send(StopTranscription).await?))
}

pub async fn show(
    state: web::Data<AppState>,
    slug: web::Path<String>,
    principal: Principal,
) -> Result<HttpResponse, ApiError> {
    validate_slug(&slug)?;
    // Another instance ingests it: its owner's view (never with the publish URL).
    if let Some(owned_elsewhere) = cluster_directory(&state).await.remove(slug.as_str()) {
        return Ok(HttpResponse::Ok().json(owned_elsewhere));
    }
    let supervisor = find(&state, &slug).await?;
    // A session that retires between the two calls is gone: not found.
    let snapshot = supervisor
        .send(GetSnapshot)
        .await
        .map_err(|_| ApiError::session_not_found(&slug))?;
    Ok(HttpResponse::Ok().json(as_seen_by(&principal, snapshot)))
}

/// Only the sessions the caller's token lists (all of them for `"*"` or anonymous calls).
pub async fn list(
    state: web::Data<AppState>,
    principal: Principal,
) -> Result<HttpResponse, ApiError> {
    let supervisors = state.registry.send(ListSessions).await?;
    // Sessions other instances ingest, as their owners see them; a local follower of one is
    // shown by its owner's view.
    let mut listed = cluster_directory(&state).await;
    listed.retain(|slug, _| principal.access.allows(slug));
    for supervisor in supervisors {
        // A session that retires meanwhile is simply not listed.
        if let Ok(snapshot) = supervisor.send(GetSnapshot).await {
            if principal.access.allows(&snapshot.session_slug)
                && !listed.contains_key(&snapshot.session_slug)
            {
                let slug = snapshot.session_slug.clone();
                let shown =
                    serde_json::to_value(as_seen_by(&principal, snapshot)).unwrap_or_default();
                listed.insert(slug, shown);
            }
        }
    }
    // Sorted by slug (the map's order).
    let sessions: Vec<serde_json::Value> = listed.into_values().collect();
    let provider = state.registry.send(GetProvider).await.ok().flatten();
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "sessions": sessions,
        "provider": provider_json(provider),
    })))
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
) -> Result<HttpResponse, ApiError> {
    let slug = slug.into_inner();
    validate_slug(&slug)?;
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
    let records = state
        .storage
        .load_finals_after
        .send(request)
        .await?
        .map_err(ApiError::database_unavailable)?;
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
    Ok(HttpResponse::Ok()
        .json(serde_json::json!({ "sessionSlug": slug, "transcripts": transcripts })))
}
