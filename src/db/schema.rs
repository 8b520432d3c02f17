//! The diesel schema, written by hand to match both `migrations/postgres` and
//! `migrations/sqlite` (they share one logical schema, so one `table!` set serves both).
//!
//! The `created_at` / `updated_at` audit columns are left out on purpose: the database fills
//! them (column defaults, and the session upsert's SQL), the code never reads them, and their
//! types differ per backend (`TIMESTAMPTZ` vs SQLite text), which one `table!` cannot express.

diesel::table! {
    sessions (slug) {
        slug -> Text,
        state -> Text,
    }
}

diesel::table! {
    transcripts (id) {
        id -> BigInt,
        session_slug -> Text,
        seq -> BigInt,
        utterance_id -> Text,
        text -> Text,
        speaker -> Text,
        speaker_id -> Text,
        started_at_ms -> BigInt,
        ended_at_ms -> BigInt,
        language -> Nullable<Text>,
    }
}

diesel::table! {
    ai_locks (session_slug) {
        session_slug -> Text,
        holder -> Text,
        locked_until_ms -> BigInt,
    }
}

// `revoked_at` has a database default and is only for operators: not mapped.
diesel::table! {
    revoked_stream_keys (nonce) {
        nonce -> Text,
        session_slug -> Text,
        expires_at -> BigInt,
    }
}

diesel::allow_tables_to_appear_in_same_query!(sessions, transcripts, ai_locks, revoked_stream_keys);
