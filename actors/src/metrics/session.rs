//! One session's labelled series (`sessionSlug`): handles built once when the session
//! starts, so updates allocate nothing, and removed from the registry when it retires, so the
//! number of series stays bounded by the live sessions.

use metrics::Gauge;

use super::names::{SESSION_SLUG, WS_SESSION_BROADCAST_LAG_MS, WS_SESSION_CLIENTS};

pub struct SessionMetrics {
    /// `ws.session_clients{sessionSlug}`.
    pub clients: Gauge,
    /// `ws.session_broadcast_lag_ms{sessionSlug}`.
    pub broadcast_lag_ms: Gauge,
}

impl SessionMetrics {
    pub fn new(session_slug: &str) -> SessionMetrics {
        SessionMetrics {
            clients: metrics::gauge!(WS_SESSION_CLIENTS, SESSION_SLUG => session_slug.to_owned()),
            broadcast_lag_ms: metrics::gauge!(
                WS_SESSION_BROADCAST_LAG_MS,
                SESSION_SLUG => session_slug.to_owned()
            ),
        }
    }

    /// Removes every series of the session. Handles still held (a broadcaster finishing its
    /// mailbox) keep working but no longer show; a session restarted under the same slug
    /// registers fresh series.
    pub fn forget(session_slug: &str) {
        super::global::registry().forget_label(SESSION_SLUG, session_slug);
    }
}
