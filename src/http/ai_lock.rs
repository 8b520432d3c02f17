//! `/api/sessions/{slug}/ai-lock` (docs/PROTOCOL.md#ai-coordinator-lock): one AI coordinator per meeting. The lock lives
//! in the database so every instance sees the same holder, and it expires by itself.
//!
//! Host and service tokens only (docs/PROTOCOL.md#roles). The holder is the token's `sub`, so
//! one caller cannot take or release the lock in another's name; only anonymous (development)
//! calls name the holder in the body.

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use serde::Deserialize;

use super::error::ApiError;
use super::state::AppState;
use crate::auth::Principal;
use crate::db::{AcquireAiLock, ReleaseAiLock};
use ::actors::access::Action;
use ::actors::registry::validate_slug;

/// Longest lock a holder may take in one request: a crashed coordinator frees it within this.
const MAX_TTL_MS: i64 = 10 * 60 * 1000;
const MAX_HOLDER_LEN: usize = 256;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AcquireBody {
    #[serde(default)]
    holder: Option<String>,
    ttl_ms: i64,
}

#[derive(Deserialize)]
pub struct ReleaseBody {
    #[serde(default)]
    holder: Option<String>,
}

/// Who holds the lock for this call: the token's `sub`; a body `holder` must then be absent or
/// the same. Without auth (development) the body names it. Checked before the database is asked.
fn holder_for(
    principal: &Principal,
    slug: &str,
    claimed: Option<String>,
) -> Result<String, ApiError> {
    principal.require(Action::Control)?;
    validate_slug(slug)?;
    let holder = match (&principal.user_id, claimed) {
        (Some(sub), None) => sub.clone(),
        (Some(sub), Some(claimed)) if claimed == *sub => claimed,
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_request(
                "holder_mismatch",
                "the holder is the token's `sub`; leave `holder` out or send the same value",
            ))
        }
        (None, Some(claimed)) => claimed,
        (None, None) => {
            return Err(ApiError::bad_request(
                "bad_request",
                "holder is required without a token",
            ))
        }
    };
    if holder.is_empty() || holder.len() > MAX_HOLDER_LEN {
        return Err(ApiError::bad_request(
            "bad_request",
            "holder must be 1-256 characters",
        ));
    }
    Ok(holder)
}

/// Takes the lock, or renews it when the caller already holds it.
pub async fn acquire(
    state: web::Data<AppState>,
    slug: web::Path<String>,
    principal: Principal,
    body: web::Json<AcquireBody>,
) -> Result<HttpResponse, ApiError> {
    let (slug, body) = (slug.into_inner(), body.into_inner());
    let holder = holder_for(&principal, &slug, body.holder)?;
    if !(1..=MAX_TTL_MS).contains(&body.ttl_ms) {
        return Err(ApiError::bad_request(
            "bad_request",
            format!("ttlMs must be 1-{MAX_TTL_MS}"),
        ));
    }
    let request = AcquireAiLock {
        session_slug: slug.clone(),
        holder,
        ttl_ms: body.ttl_ms,
    };
    let lock = match state.ai_locks.acquire.send(request).await {
        Ok(Ok(lock)) => lock,
        Ok(Err(error)) => return Err(ApiError::database_unavailable(error)),
        Err(error) => return Err(ApiError::database_unavailable(error)),
    };
    let status = if lock.acquired {
        StatusCode::OK
    } else {
        StatusCode::CONFLICT
    };
    Ok(HttpResponse::build(status).json(serde_json::json!({
        "sessionSlug": slug,
        "acquired": lock.acquired,
        "holder": lock.holder,
        "lockedUntil": lock.locked_until_ms,
    })))
}

/// Releases the lock; only its holder may.
pub async fn release(
    state: web::Data<AppState>,
    slug: web::Path<String>,
    principal: Principal,
    body: web::Json<ReleaseBody>,
) -> Result<HttpResponse, ApiError> {
    let (slug, body) = (slug.into_inner(), body.into_inner());
    let holder = holder_for(&principal, &slug, body.holder)?;
    match state
        .ai_locks
        .release
        .send(ReleaseAiLock {
            session_slug: slug,
            holder,
        })
        .await
    {
        Ok(Ok(true)) => Ok(HttpResponse::NoContent().finish()),
        Ok(Ok(false)) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "not_holder",
            "the lock is not held by this holder",
        )),
        Ok(Err(error)) => Err(ApiError::database_unavailable(error)),
        Err(error) => Err(ApiError::database_unavailable(error)),
    }
}
