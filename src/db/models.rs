//! Row types: how a [`FinalRecord`] goes into and comes out of the `transcripts` table.

use ::actors::persistence::FinalRecord;
use diesel::prelude::*;

use super::schema::transcripts;

/// A final as inserted. Borrows from the record so a batch insert copies no strings.
///
/// `treat_none_as_default_value = false` binds a missing language as `NULL` instead of `DEFAULT`: SQLite has
/// no `DEFAULT` keyword in `VALUES`, and diesel falls back to one statement per row when a
/// row might need it. With this, a whole batch is one multi-row `INSERT` on both backends.
#[derive(Insertable, Debug)]
#[diesel(table_name = transcripts, treat_none_as_default_value = false)]
pub struct NewTranscript<'a> {
    pub session_slug: &'a str,
    pub seq: i64,
    pub utterance_id: &'a str,
    pub text: &'a str,
    pub speaker: &'a str,
    pub speaker_id: &'a str,
    pub started_at_ms: i64,
    pub ended_at_ms: i64,
    pub language: Option<&'a str>,
}

impl<'a> From<&'a FinalRecord> for NewTranscript<'a> {
    fn from(record: &'a FinalRecord) -> Self {
        Self {
            session_slug: &record.session_slug,
            seq: record.seq,
            utterance_id: &record.utterance_id,
            text: &record.text,
            speaker: &record.speaker,
            speaker_id: &record.speaker_id,
            started_at_ms: record.started_at_ms,
            ended_at_ms: record.ended_at_ms,
            language: record.language.as_deref(),
        }
    }
}

/// A stored final as read back for replay and the transcripts endpoint.
#[derive(Queryable, Selectable, Debug)]
#[diesel(table_name = transcripts)]
#[diesel(check_for_backend(diesel::pg::Pg, diesel::sqlite::Sqlite))]
pub struct TranscriptRow {
    pub session_slug: String,
    pub seq: i64,
    pub utterance_id: String,
    pub text: String,
    pub speaker: String,
    pub speaker_id: String,
    pub started_at_ms: i64,
    pub ended_at_ms: i64,
    pub language: Option<String>,
}

impl From<TranscriptRow> for FinalRecord {
    fn from(row: TranscriptRow) -> Self {
        Self {
            session_slug: row.session_slug,
            seq: row.seq,
            utterance_id: row.utterance_id,
            text: row.text,
            speaker: row.speaker,
            speaker_id: row.speaker_id,
            started_at_ms: row.started_at_ms,
            ended_at_ms: row.ended_at_ms,
            language: row.language,
        }
    }
}
