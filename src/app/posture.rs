//! The start-up lines that say how this instance is configured: its provider, whether clients
//! and publishers need secrets, whether it listens beyond loopback without them, and whether
//! it relays or receives transcripts.
//!
//! An operator reads them to know what is exposed before the first session; what is unsafe is
//! a warning. Secrets and credentials in URLs are never written, only whether they are set.

use crate::config::Config;

/// Logs the configuration's posture; `provider_line` is the provider's own start-up line.
pub(super) fn log(config: &Config, provider_line: &str) {
    tracing::info!("{provider_line}");
    if config.realtime_auth_secret.is_some() {
        tracing::info!("client tokens required: HS256 JWT on the WebSocket and every /api route");
    } else {
        tracing::warn!(
            "REALTIME_AUTH_SECRET is not set: anonymous clients are accepted (loopback only)"
        );
    }
    if config.rtmp_stream_key_secret.is_some() {
        tracing::info!("RTMP publishes need a signed stream key (RTMP_STREAM_KEY_SECRET)");
    } else {
        tracing::warn!("RTMP_STREAM_KEY_SECRET is not set: the stream key is the session slug");
    }
    let exposed_without_secrets = (!config.http_host.is_loopback()
        && config.realtime_auth_secret.is_none())
        || (!config.rtmp_bind.is_loopback() && config.rtmp_stream_key_secret.is_none());
    if config.insecure && exposed_without_secrets {
        tracing::warn!(
            "REALTIME_INSECURE=true: listening beyond loopback without secrets; anyone who can reach this network can read and publish sessions"
        );
    }
    if let Some(url) = config
        .realtime_broadcast_url
        .as_deref()
        .filter(|_| config.broadcast_http())
    {
        let url = ::actors::relay::loggable_url(url);
        tracing::info!(%url, "HTTP broadcast mode: every transcript is also posted to another instance");
    }
    if config.realtime_broadcast_secret.is_some() {
        tracing::info!("accepting relayed transcripts on POST /api/realtime/transcribe/broadcast (shared secret)");
    }
}
