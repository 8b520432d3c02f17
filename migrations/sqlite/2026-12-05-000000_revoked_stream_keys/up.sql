-- Stream keys revoked by a stop or a session's end (docs/PROTOCOL.md#stream-keys), so that a
-- restarted instance refuses them too. A row can go once its key has expired (expires_at, epoch
-- seconds): such a key is refused anyway. Keep identical to migrations/postgres.
CREATE TABLE revoked_stream_keys (
    nonce        TEXT PRIMARY KEY,
    session_slug TEXT NOT NULL,
    expires_at   BIGINT NOT NULL,
    revoked_at   TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP
);
