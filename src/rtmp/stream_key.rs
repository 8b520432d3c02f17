//! Stream keys: from the key in `rtmp://host/live/{key}` to a session slug, and how a refusal is
//! told to the publisher.
//!
//! Two schemes (docs/PROTOCOL.md#rtmp-ingest): without `RTMP_STREAM_KEY_SECRET` the key is the slug
//! ([`identity_stream_key`]); with it, a key is
//! `{slug}.{expiry_unix_seconds}.{base64url(HMAC-SHA256(secret, "{slug}.{expiry}"))}`
//! ([`SignedStreamKeys`]), so a key binds one session and stops working at its expiry.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ::actors::access::StreamKeyIssuer;
use ::actors::messages::PublishRefused;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

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

/// How long a key handed out in `rtmpUrl` stays valid. A day covers the longest meeting (the
/// provider caps a session at hours) plus egress retries; egress reconnects reuse the same key.
pub const SIGNED_KEY_VALIDITY: Duration = Duration::from_secs(24 * 60 * 60);

/// Longest signed key considered at all: slug, a 20-digit expiry, a 43-character signature and
/// two dots. Anything longer is junk, refused before any hashing.
const MAX_SIGNED_KEY_LEN: usize = MAX_SLUG_LEN + 1 + 20 + 1 + 43;

/// Signed stream keys (`RTMP_STREAM_KEY_SECRET`): issues them for `rtmpUrl` and verifies them at
/// publish. Keys are secrets: nothing here logs one.
#[derive(Clone)]
pub struct SignedStreamKeys {
    /// Keyed once; cloned per use (cheaper than re-keying HMAC from the secret every time).
    mac: Hmac<Sha256>,
}

impl SignedStreamKeys {
    pub fn new(secret: &[u8]) -> SignedStreamKeys {
        SignedStreamKeys {
            // HMAC takes keys of any length, so this cannot fail.
            mac: <Hmac<Sha256> as Mac>::new_from_slice(secret)
                .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length")),
        }
    }

    fn signature(&self, signed_part: &str) -> Hmac<Sha256> {
        let mut mac = self.mac.clone();
        mac.update(signed_part.as_bytes());
        mac
    }

    /// The key for `slug`, valid until `expires_at` (seconds since the Unix epoch).
    pub fn sign(&self, slug: &str, expires_at: u64) -> String {
        let signed_part = format!("{slug}.{expires_at}");
        let tag = self.signature(&signed_part).finalize().into_bytes();
        format!("{signed_part}.{}", URL_SAFE_NO_PAD.encode(tag))
    }

    /// A key for `slug` valid for [`SIGNED_KEY_VALIDITY`] from now.
    pub fn issue(&self, slug: &str) -> String {
        self.sign(slug, unix_now() + SIGNED_KEY_VALIDITY.as_secs())
    }

    /// The session slug of a valid key. A key that is not of the signed shape is `BadName`; a
    /// well-formed key with a wrong signature or past its expiry is `Denied`.
    pub fn verify(&self, key: &str, now_unix: u64) -> Result<String, StreamKeyRejection> {
        if key.len() > MAX_SIGNED_KEY_LEN {
            return Err(StreamKeyRejection::BadName);
        }
        // From the right: the slug itself may contain '.'.
        let (signed_part, signature) = key.rsplit_once('.').ok_or(StreamKeyRejection::BadName)?;
        let (slug, expiry) = signed_part
            .rsplit_once('.')
            .ok_or(StreamKeyRejection::BadName)?;
        identity_stream_key(slug)?;
        if expiry.is_empty() || !expiry.bytes().all(|b| b.is_ascii_digit()) {
            return Err(StreamKeyRejection::BadName);
        }
        let expires_at: u64 = expiry.parse().map_err(|_| StreamKeyRejection::BadName)?;
        let signature = URL_SAFE_NO_PAD
            .decode(signature)
            .map_err(|_| StreamKeyRejection::BadName)?;
        // Signature first, in constant time (`verify_slice`), so a forged key learns nothing
        // about which part was wrong.
        self.signature(signed_part)
            .verify_slice(&signature)
            .map_err(|_| StreamKeyRejection::Denied)?;
        if expires_at <= now_unix {
            return Err(StreamKeyRejection::Denied);
        }
        Ok(slug.to_owned())
    }

    /// The validator the RTMP listener uses (`RtmpConfig::stream_key_validator`).
    pub fn validator(&self) -> StreamKeyValidator {
        let keys = self.clone();
        Arc::new(move |key: &str| keys.verify(key, unix_now()))
    }

    /// The issuer the sessions use for `rtmpUrl` (`SessionSettings::stream_key_issuer`).
    pub fn issuer(&self) -> StreamKeyIssuer {
        let keys = self.clone();
        Arc::new(move |slug: &str| keys.issue(slug))
    }
}

impl std::fmt::Debug for SignedStreamKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SignedStreamKeys(..)")
    }
}

/// The development issuer (no secret): the key is the slug.
pub fn identity_stream_key_issuer() -> StreamKeyIssuer {
    Arc::new(|slug: &str| slug.to_owned())
}

fn unix_now() -> u64 {
    // A clock before 1970 makes every key look expired: refused, which is the safe side.
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod unit_tests {
    use super::*;

    const NOW: u64 = 1_763_800_000;

    fn keys() -> SignedStreamKeys {
        SignedStreamKeys::new(b"stream-key-secret")
    }

    #[test]
    fn signed_key_round_trips_and_keeps_dots_in_the_slug() {
        let key = keys().sign("team.weekly-sync", NOW + 60);
        assert!(key.starts_with("team.weekly-sync.1763800060."), "{key}");
        assert_eq!(keys().verify(&key, NOW), Ok("team.weekly-sync".into()));
    }

    #[test]
    fn expired_key_is_denied() {
        let key = keys().sign("weekly", NOW - 1);
        assert_eq!(keys().verify(&key, NOW), Err(StreamKeyRejection::Denied));
        let key = keys().sign("weekly", NOW);
        assert_eq!(keys().verify(&key, NOW), Err(StreamKeyRejection::Denied));
    }

    #[test]
    fn forged_keys_are_denied() {
        let key = keys().sign("weekly", NOW + 60);
        let (_, signature) = key.rsplit_once('.').unwrap();
        // Another slug or a later expiry under the same signature.
        for forged in [
            format!("other.{}.{signature}", NOW + 60),
            format!("weekly.{}.{signature}", NOW + 6000),
        ] {
            assert_eq!(
                keys().verify(&forged, NOW),
                Err(StreamKeyRejection::Denied),
                "{forged}"
            );
        }
        // Signed with another secret.
        let other = SignedStreamKeys::new(b"another-secret").sign("weekly", NOW + 60);
        assert_eq!(keys().verify(&other, NOW), Err(StreamKeyRejection::Denied));
        // Well-formed base64url of the wrong value or the wrong length: denied.
        let zeros = format!("weekly.{}.{}", NOW + 60, "A".repeat(43));
        let short = format!("weekly.{}.{}", NOW + 60, &signature[..40]);
        for forged in [zeros, short] {
            assert_eq!(
                keys().verify(&forged, NOW),
                Err(StreamKeyRejection::Denied),
                "{forged}"
            );
        }
    }

    #[test]
    fn malformed_keys_are_bad_names() {
        let long = "a".repeat(400);
        for junk in [
            "weekly",
            "weekly.123",
            "",
            "..",
            "weekly.soon.c2ln",
            "weekly.-5.c2ln",
            "we/ekly.123.c2ln",
            "weekly.123.not*base64",
            ".123.c2ln",
            long.as_str(),
        ] {
            assert_eq!(
                keys().verify(junk, NOW),
                Err(StreamKeyRejection::BadName),
                "{junk:?}"
            );
        }
    }

    #[test]
    fn issued_keys_are_valid_for_a_day() {
        let key = keys().issue("weekly");
        let now = unix_now();
        assert_eq!(keys().verify(&key, now), Ok("weekly".into()));
        assert_eq!(
            keys().verify(&key, now + SIGNED_KEY_VALIDITY.as_secs() + 1),
            Err(StreamKeyRejection::Denied)
        );
        assert_eq!((keys().validator())(&key), Ok("weekly".into()));
        let issued = (keys().issuer())("weekly");
        assert_eq!(keys().verify(&issued, now), Ok("weekly".into()));
    }

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
