//! The token a caller presented (if any) → a [`Principal`].

use std::sync::Arc;

use super::error::AuthError;
use super::principal::Principal;
use super::token::TokenVerifier;

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
