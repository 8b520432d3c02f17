//! Stream keys: from the key in `rtmp://host/live/{key}` to a session slug, and how a refusal is
//! told to the publisher.
//!
//! Two schemes (docs/PROTOCOL.md#stream-keys): without `RTMP_STREAM_KEY_SECRET` the key is the slug
//! ([`identity_stream_key`]); with it, a key is
//! `{slug}.{nonce}.{expiry_unix_seconds}.{base64url(HMAC-SHA256(secret, "{slug}.{nonce}.{expiry}"))}`
//! ([`SignedStreamKeys`]), so a key binds one session, stops working at its expiry
//! (`RTMP_STREAM_KEY_TTL_SECS` after it was minted) and can be revoked by its nonce: every start
//! mints a new one and a stop revokes it (`actors/src/stream_keys.rs`, the supervisor).

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ::actors::messages::{PublishKey, PublishRefused};
use ::actors::stream_keys::{IssuedKey, StreamKeyIssuer};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// What a valid key names: the session, and for signed keys the nonce and expiry the session
/// checks against its revocations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidKey {
    pub slug: String,
    pub signed: Option<PublishKey>,
}

impl ValidKey {
    fn unsigned(slug: String) -> ValidKey {
        ValidKey { slug, signed: None }
    }
}

/// Turns a stream key into a session slug, or refuses it. Shared by all connections, so it must
/// be cheap and must not block (it runs on the connection task).
pub type StreamKeyValidator =
    Arc<dyn Fn(&str) -> Result<ValidKey, StreamKeyRejection> + Send + Sync>;

/// Why a stream key was refused; each maps to the `onStatus` code the publisher receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum StreamKeyRejection {
    /// Not a key we could ever accept (malformed, unknown session): `NetStream.Publish.BadName`.
    #[error("bad stream name")]
    BadName,
    /// A well-formed key that may not publish (bad signature): `NetStream.Publish.Denied`.
    #[error("publish denied: stream key not valid")]
    Denied,
    /// A genuine key past its expiry: `NetStream.Publish.Denied`, saying so.
    #[error("publish denied: stream key expired")]
    Expired,
}

impl StreamKeyRejection {
    /// The `onStatus` code sent to the publisher.
    pub fn status_code(self) -> &'static str {
        match self {
            StreamKeyRejection::BadName => "NetStream.Publish.BadName",
            StreamKeyRejection::Denied | StreamKeyRejection::Expired => "NetStream.Publish.Denied",
        }
    }
}

/// How the registry's refusal is told to the publisher. An unknown session is a bad name;
/// everything else is a denial (rtmp2sink reports BadName as "stream already exists").
pub fn rejection_for_refusal(refused: &PublishRefused) -> StreamKeyRejection {
    match refused {
        PublishRefused::UnknownSession => StreamKeyRejection::BadName,
        PublishRefused::SessionLimit | PublishRefused::KeyRevoked | PublishRefused::Other(_) => {
            StreamKeyRejection::Denied
        }
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

/// The development validator: the key is the slug, nothing to revoke.
pub fn identity_stream_key_validator() -> StreamKeyValidator {
    Arc::new(|key: &str| identity_stream_key(key).map(ValidKey::unsigned))
}

/// Default `RTMP_STREAM_KEY_TTL_SECS`: a long meeting plus egress retries. Egress reconnects
/// reuse the key, so it must outlive the meeting; a stop revokes it earlier.
pub const DEFAULT_KEY_TTL: Duration = Duration::from_secs(6 * 60 * 60);

/// A nonce is 32 lowercase hex digits (a v4 UUID's 122 random bits).
const NONCE_LEN: usize = 32;

/// Longest signed key considered at all: slug, nonce, a 20-digit expiry, a 43-character
/// signature and three dots. Anything longer is junk, refused before any hashing.
const MAX_SIGNED_KEY_LEN: usize = MAX_SLUG_LEN + 1 + NONCE_LEN + 1 + 20 + 1 + 43;

/// Signed stream keys (`RTMP_STREAM_KEY_SECRET`): mints them for `rtmpUrl` and verifies them at
/// publish. Keys are secrets: nothing here logs one.
#[derive(Clone)]
pub struct SignedStreamKeys {
    /// Keyed once; cloned per use (cheaper than re-keying HMAC from the secret every time).
    mac: Hmac<Sha256>,
    ttl: Duration,
}

impl SignedStreamKeys {
    pub fn new(secret: &[u8], ttl: Duration) -> SignedStreamKeys {
        SignedStreamKeys {
            // HMAC takes keys of any length, so this cannot fail.
            mac: <Hmac<Sha256> as Mac>::new_from_slice(secret)
                .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length")),
            ttl,
        }
    }

    fn signature(&self, signed_part: &str) -> Hmac<Sha256> {
        let mut mac = self.mac.clone();
        mac.update(signed_part.as_bytes());
        mac
    }

    /// The key for `slug` with `nonce`, valid until `expires_at` (seconds since the Unix epoch).
    pub fn sign(&self, slug: &str, nonce: &str, expires_at: u64) -> String {
        let signed_part = format!("{slug}.{nonce}.{expires_at}");
        let tag = self.signature(&signed_part).finalize().into_bytes();
        format!("{signed_part}.{}", URL_SAFE_NO_PAD.encode(tag))
    }

    /// A new key for `slug`, with a fresh nonce, valid for the TTL from `now_unix`.
    pub fn mint(&self, slug: &str, now_unix: u64) -> IssuedKey {
        let nonce = uuid::Uuid::new_v4().simple().to_string();
        let expires_at = now_unix.saturating_add(self.ttl.as_secs());
        IssuedKey {
            key: self.sign(slug, &nonce, expires_at),
            nonce: Some(nonce),
            expires_at: Some(expires_at),
        }
    }

    /// The session slug, nonce and expiry of a valid key. A key that is not of the signed shape
    /// is `BadName`; a well-formed key with a wrong signature is `Denied`, past its expiry
    /// `Expired`. Whether the nonce was revoked is the session's to say.
    pub fn verify(&self, key: &str, now_unix: u64) -> Result<ValidKey, StreamKeyRejection> {
        if key.len() > MAX_SIGNED_KEY_LEN {
            return Err(StreamKeyRejection::BadName);
        }
        // From the right: the slug itself may contain '.'.
        let (signed_part, signature) = key.rsplit_once('.').ok_or(StreamKeyRejection::BadName)?;
        let (slug_and_nonce, expiry) = signed_part
            .rsplit_once('.')
            .ok_or(StreamKeyRejection::BadName)?;
        let (slug, nonce) = slug_and_nonce
            .rsplit_once('.')
            .ok_or(StreamKeyRejection::BadName)?;
        identity_stream_key(slug)?;
        let nonce_ok = nonce.len() == NONCE_LEN
            && nonce
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !nonce_ok {
            return Err(StreamKeyRejection::BadName);
        }
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
            return Err(StreamKeyRejection::Expired);
        }
        Ok(ValidKey {
            slug: slug.to_owned(),
            signed: Some(PublishKey {
                nonce: nonce.to_owned(),
                expires_at,
            }),
        })
    }

    /// The validator the RTMP listener uses (`RtmpConfig::stream_key_validator`).
    pub fn validator(&self) -> StreamKeyValidator {
        let keys = self.clone();
        Arc::new(move |key: &str| keys.verify(key, unix_now()))
    }

    /// The issuer the sessions use for `rtmpUrl` (`SessionSettings::stream_key_issuer`).
    pub fn issuer(&self) -> StreamKeyIssuer {
        let keys = self.clone();
        Arc::new(move |slug: &str| keys.mint(slug, unix_now()))
    }
}

impl std::fmt::Debug for SignedStreamKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SignedStreamKeys(..)")
    }
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
    const NONCE: &str = "0123456789abcdef0123456789abcdef";

    fn keys() -> SignedStreamKeys {
        SignedStreamKeys::new(b"stream-key-secret", DEFAULT_KEY_TTL)
    }

    fn valid(slug: &str, nonce: &str, expires_at: u64) -> Result<ValidKey, StreamKeyRejection> {
        Ok(ValidKey {
            slug: slug.into(),
            signed: Some(PublishKey {
                nonce: nonce.into(),
                expires_at,
            }),
        })
    }

    #[test]
    fn signed_key_round_trips_and_keeps_dots_in_the_slug() {
        let key = keys().sign("team.weekly-sync", NONCE, NOW + 60);
        assert!(
            key.starts_with(&format!("team.weekly-sync.{NONCE}.1763800060.")),
            "{key}"
        );
        assert_eq!(
            keys().verify(&key, NOW),
            valid("team.weekly-sync", NONCE, NOW + 60)
        );
    }

    #[test]
    fn expired_key_is_refused_as_expired() {
        let key = keys().sign("weekly", NONCE, NOW - 1);
        assert_eq!(keys().verify(&key, NOW), Err(StreamKeyRejection::Expired));
        let key = keys().sign("weekly", NONCE, NOW);
        assert_eq!(keys().verify(&key, NOW), Err(StreamKeyRejection::Expired));
        assert_eq!(
            StreamKeyRejection::Expired.status_code(),
            "NetStream.Publish.Denied"
        );
    }

    #[test]
    fn forged_keys_are_denied() {
        let key = keys().sign("weekly", NONCE, NOW + 60);
        let (_, signature) = key.rsplit_once('.').unwrap();
        let other_nonce = "f".repeat(NONCE_LEN);
        // Another slug, another nonce or a later expiry under the same signature.
        for forged in [
            format!("other.{NONCE}.{}.{signature}", NOW + 60),
            format!("weekly.{other_nonce}.{}.{signature}", NOW + 60),
            format!("weekly.{NONCE}.{}.{signature}", NOW + 6000),
        ] {
            assert_eq!(
                keys().verify(&forged, NOW),
                Err(StreamKeyRejection::Denied),
                "{forged}"
            );
        }
        // Signed with another secret.
        let other = SignedStreamKeys::new(b"another-secret", DEFAULT_KEY_TTL).sign(
            "weekly",
            NONCE,
            NOW + 60,
        );
        assert_eq!(keys().verify(&other, NOW), Err(StreamKeyRejection::Denied));
        // Well-formed base64url of the wrong value or the wrong length: denied.
        let zeros = format!("weekly.{NONCE}.{}.{}", NOW + 60, "A".repeat(43));
        let short = format!("weekly.{NONCE}.{}.{}", NOW + 60, &signature[..40]);
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
        let upper = NONCE.to_uppercase();
        let keys_without_nonce = format!("weekly.{}.c2ln", NOW + 60);
        let bad_nonces = [
            format!("weekly.{upper}.{}.c2ln", NOW + 60),
            format!("weekly.{}.{}.c2ln", &NONCE[..31], NOW + 60),
            format!("weekly.{NONCE}0.{}.c2ln", NOW + 60),
        ];
        let mut junk = vec![
            "weekly".to_owned(),
            "weekly.123".to_owned(),
            String::new(),
            "...".to_owned(),
            format!("weekly.{NONCE}.soon.c2ln"),
            format!("weekly.{NONCE}.-5.c2ln"),
            format!("we/ekly.{NONCE}.123.c2ln"),
            format!("weekly.{NONCE}.123.not*base64"),
            format!(".{NONCE}.123.c2ln"),
            keys_without_nonce,
            long,
        ];
        junk.extend(bad_nonces);
        for junk in junk {
            assert_eq!(
                keys().verify(&junk, NOW),
                Err(StreamKeyRejection::BadName),
                "{junk:?}"
            );
        }
    }

    #[test]
    fn minted_keys_carry_a_fresh_nonce_and_last_the_ttl() {
        let ttl = Duration::from_secs(90);
        let keys = SignedStreamKeys::new(b"s", ttl);
        let first = keys.mint("weekly", NOW);
        let second = keys.mint("weekly", NOW);
        assert_ne!(first.nonce, second.nonce, "every start gets its own key");
        assert_eq!(first.expires_at, Some(NOW + 90));
        let nonce = first.nonce.clone().unwrap();
        assert_eq!(
            keys.verify(&first.key, NOW),
            valid("weekly", &nonce, NOW + 90)
        );
        assert_eq!(
            keys.verify(&first.key, NOW + 90),
            Err(StreamKeyRejection::Expired)
        );
        let issued = (keys.issuer())("weekly");
        assert_eq!(
            (keys.validator())(&issued.key).map(|v| v.slug),
            Ok("weekly".into())
        );
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
        assert_eq!(
            (identity_stream_key_validator())("weekly"),
            Ok(ValidKey::unsigned("weekly".into()))
        );
    }

    #[test]
    fn refusals_map_to_status_codes() {
        assert_eq!(
            rejection_for_refusal(&PublishRefused::UnknownSession).status_code(),
            "NetStream.Publish.BadName"
        );
        for refused in [PublishRefused::SessionLimit, PublishRefused::KeyRevoked] {
            assert_eq!(
                rejection_for_refusal(&refused).status_code(),
                "NetStream.Publish.Denied"
            );
        }
    }
}
