//! Who made a call and which sessions it may touch.

use ::actors::access::{Action, Grant, Role, SessionAccess};

use super::error::AuthError;

/// Who made a call and which sessions it may touch, decided once per request by
/// the `RequireToken` middleware and available to handlers as an extractor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The token's `sub`; `None` for anonymous calls (no secret configured).
    pub user_id: Option<String>,
    pub access: SessionAccess,
    /// The token's `role` (viewer when it has none); service for anonymous calls.
    pub role: Role,
    /// The token's `exp` (seconds since the Unix epoch); `None` for anonymous calls. A
    /// WebSocket opened with the token is closed when it expires.
    pub expires_at: Option<u64>,
}

impl Principal {
    /// What every call gets when no secret is configured.
    pub fn anonymous() -> Principal {
        Principal {
            user_id: None,
            access: SessionAccess::Any,
            role: Role::Service,
            expires_at: None,
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

    /// `Ok` when this principal's role may do `action` (docs/PROTOCOL.md#roles).
    pub fn require(&self, action: Action) -> Result<(), AuthError> {
        if self.role.may(action) {
            Ok(())
        } else {
            Err(AuthError::RoleForbidden {
                role: self.role,
                action,
            })
        }
    }

    /// Whether answers to this principal may include a session's publish URL.
    pub fn sees_publish_url(&self) -> bool {
        self.role.may(Action::Control)
    }

    /// What a WebSocket opened by this principal keeps.
    pub fn grant(&self) -> Grant {
        Grant {
            sessions: self.access.clone(),
            role: self.role,
        }
    }
}
