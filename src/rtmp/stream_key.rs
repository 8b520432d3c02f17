//! Stream keys: from the key in `rtmp://host/live/{key}` to a session slug, and how a refusal is
//! told to the publisher.

use std::sync::Arc;

use ::actors::ingest_messages::PublishRefused;

/// Turns a stream key into a session slug, or refuses it. Shared by all connections, so it must
/// be cheap and must not block (it runs on the connection task).
pub type StreamKeyValidator = Arc<dyn Fn(&str) -> Result<String, StreamKeyRejection> + Send + Sync>;

/// Why a stream key was refused; each maps to the `onStatus` code the publisher receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum StreamKeyRejection {
    /// Not a key we could ever accept (malformed, unknown session): `NetStream.Publish.BadName`.
    #[error("bad stream name")]
    BadName,
    /// A well-formed key that may not publish (bad signature, expired): `NetStream.Publish.Denied`.
    #[error("publish denied")]
    Denied,
}

impl StreamKeyRejection {
    /// The `onStatus` code sent to the publisher.
    pub fn status_code(self) -> &'static str {
        match self {
            StreamKeyRejection::BadName => "NetStream.Publish.BadName",
            StreamKeyRejection::Denied => "NetStream.Publish.Denied",
        }
    }
}

/// How the registry's refusal is told to the publisher. An unknown session is a bad name;
/// everything else is a denial (rtmp2sink reports BadName as "stream already exists").
pub fn rejection_for_refusal(refused: &PublishRefused) -> StreamKeyRejection {
    match refused {
        PublishRefused::UnknownSession => StreamKeyRejection::BadName,
        PublishRefused::SessionLimit | PublishRefused::Other(_) => StreamKeyRejection::Denied,
    }
}

/// Longest slug the development scheme accepts; slugs end up in URLs, logs and the database.
const MAX_SLUG_LEN: usize = 128;

/// Development key scheme (no `RTMP_STREAM_KEY_SECRET`): the key *is* the session slug.
/// Still refuses keys that cannot be a slug, so junk never reaches the registry.
pub fn identity_stream_key(key: &str) -> Result<String, StreamKeyRejection> {
    let plausible = !key.is_empty()
        && key.len() <= MAX_SLUG_LEN
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if plausible {
        Ok(key.to_string())
    } else {
        Err(StreamKeyRejection::BadName)
    }
}

#[cfg(test)]
mod unit_tests {
    use super::*;

    #[test]
    fn identity_accepts_slugs_and_refuses_junk() {
        assert_eq!(
            identity_stream_key("session-abc_1.x"),
            Ok("session-abc_1.x".into())
        );
        assert_eq!(identity_stream_key(""), Err(StreamKeyRejection::BadName));
        assert_eq!(identity_stream_key("a/b"), Err(StreamKeyRejection::BadName));
        assert_eq!(
            identity_stream_key("k?x=1"),
            Err(StreamKeyRejection::BadName)
        );
        assert_eq!(
            identity_stream_key(&"a".repeat(MAX_SLUG_LEN + 1)),
            Err(StreamKeyRejection::BadName)
        );
    }

    #[test]
    fn refusals_map_to_status_codes() {
        assert_eq!(
            rejection_for_refusal(&PublishRefused::UnknownSession).status_code(),
            "NetStream.Publish.BadName"
        );
        assert_eq!(
            rejection_for_refusal(&PublishRefused::SessionLimit).status_code(),
            "NetStream.Publish.Denied"
        );
    }
}
