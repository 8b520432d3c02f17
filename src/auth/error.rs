//! Why a call was refused. The HTTP answer for each (status, `WWW-Authenticate`) is
//! `http::ApiError`'s `From<AuthError>`; the WebSocket and the middleware use the same codes.

use ::actors::access::{Action, Role};

/// A refused call. Messages say what is wrong with the token, never what the token was.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No token at all (401 `missing_token`).
    #[error("a token is required: send `Authorization: Bearer <token>` (or `?token=` on the WebSocket upgrade)")]
    MissingToken,
    /// Not a JWT we can read: bad shape, wrong algorithm, a required claim missing or of the
    /// wrong type (401 `malformed_token`).
    #[error("the token is malformed: {0}")]
    Malformed(&'static str),
    /// Well-formed, but not signed with `REALTIME_AUTH_SECRET` (401 `bad_signature`).
    #[error("the token's signature is not valid")]
    BadSignature,
    /// `exp` is in the past (401 `token_expired`).
    #[error("the token has expired")]
    Expired,
    /// A valid token whose `sessions` claim does not list this session (403 `session_forbidden`).
    #[error("the token does not grant access to session {0:?}")]
    NotValidForSession(String),
    /// A valid token whose `role` may not do this (403 `role_forbidden`).
    #[error("a {} token may not do this ({}); it needs role {} or above", role.name(), action.describe(), Role::least_for(*action).name())]
    RoleForbidden { role: Role, action: Action },
}

impl AuthError {
    /// The machine-readable `error` field.
    pub fn code(&self) -> &'static str {
        match self {
            AuthError::MissingToken => "missing_token",
            AuthError::Malformed(_) => "malformed_token",
            AuthError::BadSignature => "bad_signature",
            AuthError::Expired => "token_expired",
            AuthError::NotValidForSession(_) => "session_forbidden",
            AuthError::RoleForbidden { .. } => "role_forbidden",
        }
    }
}
