//! Client authentication (SPEC §5): HS256 JWTs on the WebSocket upgrade and on every `/api/*`
//! route.
//!
//! - [`token`]: verifying one token into a [`Principal`] (who, and which sessions).
//! - [`AuthError`]: why a call was refused.
//!
//! The HTTP side (the `RequireToken` middleware that guards every `/api/*` route, and the
//! 401/403 answers) is `http::require_token` and `http::error`: this module knows nothing of
//! routes, so `http` depends on it and not the other way round.
//!
//! Without `REALTIME_AUTH_SECRET` the [`Authenticator`] is anonymous: every call gets
//! `SessionAccess::Any`. `config.rs` only allows that on a loopback bind (or with
//! `REALTIME_INSECURE=true`). RTMP stream keys are a separate secret: `rtmp::stream_key`.
//!
//! Tokens are secrets: nothing here logs, echoes or stores one beyond the verification call.

mod error;
mod token;

use std::sync::Arc;

pub use ::actors::access::SessionAccess;
pub use error::AuthError;
pub use token::{Claims, SessionsClaim, TokenVerifier, CLOCK_SKEW_LEEWAY_SECS};

/// Who made a call and which sessions it may touch, decided once per request by
/// the `RequireToken` middleware and available to handlers as an extractor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The token's `sub`; `None` for anonymous calls (no secret configured).
    pub user_id: Option<String>,
    pub access: SessionAccess,
}

impl Principal {
    /// What every call gets when no secret is configured.
    pub fn anonymous() -> Principal {
        Principal {
            user_id: None,
            access: SessionAccess::Any,
        }
    }

    /// `Ok` when this principal may use `session_slug`.
    pub fn require_session(&self, session_slug: &str) -> Result<(), AuthError> {
        if self.access.allows(session_slug) {
            Ok(())
        } else {
            Err(AuthError::NotValidForSession(session_slug.to_owned()))
        }
    }
}

/// Turns the token a caller presented (if any) into a [`Principal`]. Cheap to clone: one per
/// HTTP worker shares the verifier.
#[derive(Clone)]
pub struct Authenticator {
    verifier: Option<Arc<TokenVerifier>>,
}

impl Authenticator {
    /// Tokens required when `secret` is `Some` (`REALTIME_AUTH_SECRET`), anonymous otherwise.
    pub fn new(secret: Option<&str>) -> Authenticator {
        Authenticator {
            verifier: secret.map(|s| Arc::new(TokenVerifier::new(s.as_bytes()))),
        }
    }

    /// Whether calls need a token.
    pub fn requires_token(&self) -> bool {
        self.verifier.is_some()
    }

    /// The principal for this call. Anonymous mode ignores any token sent.
    pub fn authenticate(&self, token: Option<&str>) -> Result<Principal, AuthError> {
        let Some(verifier) = &self.verifier else {
            return Ok(Principal::anonymous());
        };
        let token = token.ok_or(AuthError::MissingToken)?;
        verifier.verify(token)
    }
}

impl std::fmt::Debug for Authenticator {
    // Never print the key material.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("requires_token", &self.requires_token())
            .finish()
    }
}
