//! `/api/sessions/{slug}/ai-lock` (SPEC §4.6): one AI coordinator per meeting. The lock lives
//! in the database so every instance sees the same holder, and it expires by itself.

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use serde::Deserialize;

use super::{json_error, AppState};
use crate::db::{AcquireAiLock, ReleaseAiLock};
use ::actors::registry::validate_slug;

/// Longest lock a holder may take in one request: a crashed coordinator frees it within this.
const MAX_TTL_MS: i64 = 10 * 60 * 1000;
const MAX_HOLDER_LEN: usize = 256;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AcquireBody {
    holder: String,
    ttl_ms: i64,
}

#[derive(Deserialize)]
pub struct ReleaseBody {
    holder: String,
}

/// `None` when the slug and holder are acceptable, else the 400 to answer.
fn refuse_bad_input(slug: &str, holder: &str) -> Option<HttpResponse> {
    if let Err(e) = validate_slug(slug) {
        return Some(json_error(
            StatusCode::BAD_REQUEST,
            "bad_session_slug",
            e.to_string(),
        ));
    }
    if holder.is_empty() || holder.len() > MAX_HOLDER_LEN {
        return Some(json_error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "holder must be 1-256 characters",
        ));
    }
    None
}

fn storage_down(error: impl std::fmt::Display) -> HttpResponse {
    json_error(
        StatusCode::SERVICE_UNAVAILABLE,
        "database_unavailable",
        error.to_string(),
    )
}

/// Takes the lock, or renews it when the caller already holds it.
pub async fn acquire(
    state: web::Data<AppState>,
    slug: web::Path<String>,
    body: web::Json<AcquireBody>,
) -> HttpResponse {
    let (slug, body) = (slug.into_inner(), body.into_inner());
    if let Some(response) = refuse_bad_input(&slug, &body.holder) {
        return response;
    }
    if !(1..=MAX_TTL_MS).contains(&body.ttl_ms) {
        return json_error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("ttlMs must be 1-{MAX_TTL_MS}"),
        );
    }
    let request = AcquireAiLock {
        session_slug: slug.clone(),
        holder: body.holder,
        ttl_ms: body.ttl_ms,
    };
    match state.ai_locks.acquire.send(request).await {
        Ok(Ok(lock)) => {
            let status = if lock.acquired {
                StatusCode::OK
            } else {
                StatusCode::CONFLICT
            };
            HttpResponse::build(status).json(serde_json::json!({
                "sessionSlug": slug,
                "acquired": lock.acquired,
                "holder": lock.holder,
                "lockedUntil": lock.locked_until_ms,
            }))
        }
        Ok(Err(error)) => storage_down(error),
        Err(error) => storage_down(error),
    }
}

/// Releases the lock; only its holder may.
pub async fn release(
    state: web::Data<AppState>,
    slug: web::Path<String>,
    body: web::Json<ReleaseBody>,
) -> HttpResponse {
    let (slug, body) = (slug.into_inner(), body.into_inner());
    if let Some(response) = refuse_bad_input(&slug, &body.holder) {
        return response;
    }
    match state
        .ai_locks
        .release
        .send(ReleaseAiLock {
            session_slug: slug,
            holder: body.holder,
        })
        .await
    {
        Ok(Ok(true)) => HttpResponse::NoContent().finish(),
        Ok(Ok(false)) => json_error(
            StatusCode::CONFLICT,
            "not_holder",
            "the lock is not held by this holder",
        ),
        Ok(Err(error)) => storage_down(error),
        Err(error) => storage_down(error),
    }
}
