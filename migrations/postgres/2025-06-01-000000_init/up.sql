-- realtime-core storage, PostgreSQL flavour. Keep the logical schema identical to
-- migrations/sqlite (same tables, columns, constraints); only the types differ.

-- One row per session slug, for operators (best-effort lifecycle state).
CREATE TABLE sessions (
    slug       TEXT PRIMARY KEY,
    state      TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Finals only. No foreign key to sessions: the session row is written best-effort and
-- may arrive after (or never before) the first final; a final must never be refused for it.
CREATE TABLE transcripts (
    id            BIGSERIAL PRIMARY KEY,
    session_slug  TEXT NOT NULL,
    seq           BIGINT NOT NULL,
    utterance_id  TEXT NOT NULL,
    text          TEXT NOT NULL,
    speaker       TEXT NOT NULL,
    speaker_id    TEXT NOT NULL,
    started_at_ms BIGINT NOT NULL,
    ended_at_ms   BIGINT NOT NULL,
    language      TEXT NULL,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- The upsert target: a re-sent final of the same utterance replaces the stored one.
    CONSTRAINT transcripts_session_utterance_key UNIQUE (session_slug, utterance_id),
    -- seq is gap-free and never reused per session. This constraint's index is also the
    -- (session_slug, seq) index that LoadLastSeq and replay (`seq > N ORDER BY seq`) use,
    -- so no separate index is created: it would only slow down writes.
    CONSTRAINT transcripts_session_seq_key UNIQUE (session_slug, seq)
);

-- One AI coordinator per meeting; the lock expires by itself at locked_until_ms (epoch ms).
CREATE TABLE ai_locks (
    session_slug    TEXT PRIMARY KEY,
    holder          TEXT NOT NULL,
    locked_until_ms BIGINT NOT NULL
);
