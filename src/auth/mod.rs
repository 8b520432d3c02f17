//! Client authentication (docs/PROTOCOL.md#security): HS256 JWTs on the WebSocket upgrade and on every `/api/*`
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

mod authenticator;
mod error;
mod principal;
mod token;

pub use ::actors::access::SessionAccess;
pub use authenticator::Authenticator;
pub use error::AuthError;
pub use principal::Principal;
pub use token::{Claims, SessionsClaim, TokenVerifier, CLOCK_SKEW_LEEWAY_SECS};
