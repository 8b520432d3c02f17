//! Which sessions a client may touch, decided once at the WebSocket upgrade from its token
//! (docs/PROTOCOL.md#security) and enforced by the `ClientActor` on every later `subscribe`/`start`/`stop`.

use std::collections::HashSet;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionAccess {
    /// No auth configured (loopback only) or a service token with `"sessions": "*"`.
    Any,
    /// The slugs listed in the token's `sessions` claim.
    Only(HashSet<String>),
}

impl SessionAccess {
    pub fn allows(&self, session_slug: &str) -> bool {
        match self {
            SessionAccess::Any => true,
            SessionAccess::Only(slugs) => slugs.contains(session_slug),
        }
    }
}

/// Turns a session slug into the stream key put in `rtmpUrl` (a signed key when
/// `RTMP_STREAM_KEY_SECRET` is set; the slug itself otherwise).
pub type StreamKeyIssuer = std::sync::Arc<dyn Fn(&str) -> String + Send + Sync>;
