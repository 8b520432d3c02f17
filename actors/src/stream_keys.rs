//! Stream keys as the sessions see them (docs/PROTOCOL.md#stream-keys): one is minted per start,
//! each carries a nonce, and a stop or the session's end revokes every key the session handed
//! out or accepted. The signing itself lives in the service crate (`src/rtmp/stream_key.rs`);
//! the actors only see nonces and expiries.

use std::collections::HashMap;

/// A key handed out in `rtmpUrl`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedKey {
    /// The whole key, the last path segment of `rtmpUrl`. A secret: never logged.
    pub key: String,
    /// What a revocation names. `None` for the development scheme (the key is the slug), which
    /// cannot be revoked.
    pub nonce: Option<String>,
    /// Seconds since the Unix epoch; `None` when the key does not expire.
    pub expires_at: Option<u64>,
}

impl IssuedKey {
    /// Whether the key can still be used for a publish at `now_unix`.
    pub fn usable_at(&self, now_unix: u64) -> bool {
        self.expires_at.is_none_or(|at| at > now_unix)
    }
}

/// Mints the key for a session's next start (a signed key with a fresh nonce when
/// `RTMP_STREAM_KEY_SECRET` is set; the slug itself otherwise).
pub type StreamKeyIssuer = std::sync::Arc<dyn Fn(&str) -> IssuedKey + Send + Sync>;

/// The development issuer (no secret): the key is the slug; it neither expires nor can be
/// revoked.
pub fn slug_as_key() -> StreamKeyIssuer {
    std::sync::Arc::new(|slug: &str| IssuedKey {
        key: slug.to_owned(),
        nonce: None,
        expires_at: None,
    })
}

/// A key that may no longer publish, as stored (it survives restarts) and as kept in memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevokedKey {
    pub nonce: String,
    pub session_slug: String,
    /// Past this (seconds since the Unix epoch) the key is refused as expired anyway, so the
    /// revocation can be forgotten.
    pub expires_at: u64,
}

/// Revoked nonces this process knows of, until their keys expire. Bounded: beyond
/// [`RevokedKeys::MAX`] the ones expiring first are forgotten here (the database still has
/// them), so a flood of starts and stops cannot grow memory.
#[derive(Debug, Default)]
pub struct RevokedKeys {
    by_nonce: HashMap<String, u64>,
}

impl RevokedKeys {
    pub const MAX: usize = 100_000;

    pub fn insert(&mut self, key: &RevokedKey, now_unix: u64) {
        if key.expires_at <= now_unix {
            return;
        }
        if self.by_nonce.len() >= Self::MAX {
            self.by_nonce.retain(|_, expires_at| *expires_at > now_unix);
        }
        if self.by_nonce.len() >= Self::MAX {
            if let Some(first) = self
                .by_nonce
                .iter()
                .min_by_key(|(_, expires_at)| **expires_at)
                .map(|(nonce, _)| nonce.clone())
            {
                self.by_nonce.remove(&first);
            }
        }
        self.by_nonce.insert(key.nonce.clone(), key.expires_at);
    }

    pub fn contains(&self, nonce: &str) -> bool {
        self.by_nonce.contains_key(nonce)
    }

    pub fn len(&self) -> usize {
        self.by_nonce.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_nonce.is_empty()
    }
}

/// Where a publish's key stands with its session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyStanding {
    /// Minted or accepted by this session and not revoked: publish.
    Known,
    /// Revoked by this session: refuse.
    Revoked,
    /// Not seen by this session (minted before a restart, or by another instance): ask the
    /// store whether it was revoked.
    Unknown,
}

/// One session's keys: the one `rtmpUrl` shows, every one in use, and those it revoked.
#[derive(Debug, Default)]
pub struct SessionKeys {
    issued: Option<IssuedKey>,
    /// Nonce → expiry of every key minted or accepted since the last revocation.
    in_use: HashMap<String, u64>,
    revoked: Vec<RevokedKey>,
}

impl SessionKeys {
    /// Revocations a session remembers itself; older ones are still in the store.
    const MAX_REMEMBERED: usize = 64;

    /// The key to hand out: the current one while it can still publish, else a new one from
    /// `mint` (every start after a stop, or once the key has expired).
    pub fn current_or_mint(
        &mut self,
        now_unix: u64,
        mint: impl FnOnce() -> IssuedKey,
    ) -> &IssuedKey {
        let usable = self.issued.as_ref().is_some_and(|k| k.usable_at(now_unix));
        if !usable {
            let key = mint();
            if let (Some(nonce), Some(expires_at)) = (&key.nonce, key.expires_at) {
                self.in_use.insert(nonce.clone(), expires_at);
            }
            self.issued = Some(key);
        }
        self.issued.get_or_insert_with(|| unreachable!("set above"))
    }

    /// The key `rtmpUrl` shows, if one was minted and not revoked.
    pub fn issued(&self) -> Option<&IssuedKey> {
        self.issued.as_ref()
    }

    pub fn standing(&self, nonce: &str) -> KeyStanding {
        if self.in_use.contains_key(nonce) {
            KeyStanding::Known
        } else if self.revoked.iter().any(|k| k.nonce == nonce) {
            KeyStanding::Revoked
        } else {
            KeyStanding::Unknown
        }
    }

    /// A publish's key the store says is not revoked: it is this session's now, and is
    /// revoked with the others at the next stop.
    pub fn accept(&mut self, nonce: &str, expires_at: u64) {
        self.in_use.insert(nonce.to_owned(), expires_at);
    }

    /// The stop: every key in use is revoked (returned, for the store) and none is shown until
    /// the next start mints one.
    pub fn revoke_all(&mut self, session_slug: &str) -> Vec<RevokedKey> {
        self.issued = None;
        let revoked: Vec<RevokedKey> = self
            .in_use
            .drain()
            .map(|(nonce, expires_at)| RevokedKey {
                nonce,
                session_slug: session_slug.to_owned(),
                expires_at,
            })
            .collect();
        self.revoked.extend(revoked.iter().cloned());
        let excess = self.revoked.len().saturating_sub(Self::MAX_REMEMBERED);
        self.revoked.drain(..excess);
        revoked
    }

    /// What this session revoked, for the registry when it retires.
    pub fn revoked(&self) -> &[RevokedKey] {
        &self.revoked
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn revoked(nonce: &str, expires_at: u64) -> RevokedKey {
        RevokedKey {
            nonce: nonce.into(),
            session_slug: "weekly".into(),
            expires_at,
        }
    }

    #[test]
    fn expired_keys_are_not_kept_and_the_set_is_bounded() {
        let mut keys = RevokedKeys::default();
        keys.insert(&revoked("old", 100), 100);
        assert!(
            !keys.contains("old"),
            "already expired: nothing to remember"
        );
        for i in 0..RevokedKeys::MAX as u64 + 10 {
            keys.insert(&revoked(&format!("n{i}"), 1_000 + i), 200);
        }
        assert_eq!(keys.len(), RevokedKeys::MAX);
        assert!(!keys.contains("n0"), "the one expiring first goes");
        assert!(keys.contains(&format!("n{}", RevokedKeys::MAX as u64 + 9)));
    }

    fn signed(nonce: &str, expires_at: u64) -> IssuedKey {
        IssuedKey {
            key: format!("k-{nonce}"),
            nonce: Some(nonce.into()),
            expires_at: Some(expires_at),
        }
    }

    #[test]
    fn a_start_reuses_the_live_key_and_a_stop_revokes_every_key_in_use() {
        let mut keys = SessionKeys::default();
        assert_eq!(keys.current_or_mint(10, || signed("a", 100)).key, "k-a");
        // A second start while the key is good: the same key (egress may be using it).
        assert_eq!(keys.current_or_mint(20, || signed("b", 100)).key, "k-a");
        // A key minted before a restart, presented by a publish.
        assert_eq!(keys.standing("old"), KeyStanding::Unknown);
        keys.accept("old", 90);
        assert_eq!(keys.standing("old"), KeyStanding::Known);

        let mut revoked: Vec<_> = keys
            .revoke_all("weekly")
            .into_iter()
            .map(|k| (k.nonce, k.expires_at))
            .collect();
        revoked.sort();
        assert_eq!(revoked, [("a".into(), 100), ("old".into(), 90)]);
        assert_eq!(keys.standing("a"), KeyStanding::Revoked);
        assert_eq!(keys.standing("old"), KeyStanding::Revoked);
        assert!(
            keys.issued().is_none(),
            "no publish URL until the next start"
        );
        // The next start: a new key.
        assert_eq!(keys.current_or_mint(30, || signed("c", 200)).key, "k-c");
        assert_eq!(keys.standing("c"), KeyStanding::Known);
    }

    #[test]
    fn an_expired_key_is_replaced_at_the_next_start() {
        let mut keys = SessionKeys::default();
        keys.current_or_mint(10, || signed("a", 100));
        assert_eq!(keys.current_or_mint(100, || signed("b", 300)).key, "k-b");
    }

    #[test]
    fn a_session_remembers_a_bounded_number_of_revocations() {
        let mut keys = SessionKeys::default();
        for i in 0..100 {
            keys.current_or_mint(0, || signed(&format!("n{i}"), 1_000));
            keys.revoke_all("weekly");
        }
        assert_eq!(keys.revoked().len(), SessionKeys::MAX_REMEMBERED);
        assert_eq!(keys.standing("n99"), KeyStanding::Revoked);
    }

    #[test]
    fn a_key_is_usable_until_its_expiry() {
        let key = IssuedKey {
            key: "k".into(),
            nonce: Some("n".into()),
            expires_at: Some(50),
        };
        assert!(key.usable_at(49));
        assert!(!key.usable_at(50));
        let forever = IssuedKey {
            expires_at: None,
            ..key
        };
        assert!(forever.usable_at(u64::MAX));
    }
}
