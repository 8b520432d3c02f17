//! `DbExecutor`: the only place that runs diesel. It lives on a `SyncArbiter` (diesel is
//! blocking; async arbiters must never wait on it) and answers the storage messages.

use std::collections::HashSet;
use std::sync::Arc;

use ::actors::persistence::{
    FinalRecord, LoadFinalsAfter, LoadLastSeq, SaveSessionState, StorageError,
};
use actix::prelude::*;
use diesel::dsl::max;
use diesel::prelude::*;
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel::sql_types::Text;
use diesel::upsert::excluded;
use tracing::{error, info, warn};

use super::connection::{establish, DbConnection};
use super::metrics::StorageMetrics;
use super::models::{NewTranscript, TranscriptRow};
use super::redact::{redact_url, scrub};
use super::schema::transcripts;

/// Rows per `INSERT` statement. Bind-parameter limits are 65 535 (PostgreSQL) and 32 766
/// (SQLite ≥ 3.32); at 9 parameters a row, 1000 rows stay far below both.
const ROWS_PER_STATEMENT: usize = 1000;

/// Upsert a batch of finals in one transaction. Answers how many distinct finals were
/// stored. `Err` only for failures worth retrying (connection, lock, disk, read-only file):
/// rows the database refuses for good are logged, counted and skipped, so that one bad row
/// cannot hold every later final hostage behind an endless retry.
#[derive(Message, Debug, Clone)]
#[rtype(result = "Result<usize, StorageError>")]
pub struct WriteFinals(pub Vec<FinalRecord>);

/// Is the database reachable? Runs `SELECT 1` (for `/readyz`).
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "Result<(), StorageError>")]
pub struct Ping;

/// Runs `$body` with `$c` bound to the concrete connection of either backend. The queries are
/// written once and compiled for each backend: diesel's upsert and batch-insert support is
/// per backend, which the `MultiConnection` wrapper backend does not expose.
macro_rules! with_backend {
    ($conn:expr, $c:ident => $body:expr) => {
        match $conn {
            DbConnection::Pg($c) => $body,
            DbConnection::Sqlite($c) => $body,
        }
    };
}
pub(super) use with_backend;

/// A synchronous actor owning one database connection.
///
/// The connection is opened lazily and dropped after any failure other than a constraint
/// violation, so the next message reconnects: a PostgreSQL restart or a replaced SQLite file
/// costs one failed attempt, not a process restart.
pub struct DbExecutor {
    /// May hold a password: never log it, only `redact_url(&self.database_url)`.
    database_url: String,
    conn: Option<DbConnection>,
    metrics: Arc<StorageMetrics>,
}

impl Actor for DbExecutor {
    type Context = SyncContext<Self>;
}

impl DbExecutor {
    /// `conn` may be an already open (and migrated) connection, or `None` to connect on the
    /// first message.
    pub fn new(
        database_url: String,
        conn: Option<DbConnection>,
        metrics: Arc<StorageMetrics>,
    ) -> Self {
        Self {
            database_url,
            conn,
            metrics,
        }
    }

    fn connection(&mut self) -> Result<&mut DbConnection, StorageError> {
        if self.conn.is_none() {
            let conn = establish(&self.database_url)?;
            info!(database = %redact_url(&self.database_url), "database connection (re)established");
            self.conn = Some(conn);
        }
        self.conn
            .as_mut()
            .ok_or_else(|| StorageError("no database connection".to_owned()))
    }

    /// Runs `op` on the connection. A connection found closed (PostgreSQL restarted while we
    /// were idle) is replaced and `op` tried once more, so readers do not see a spurious error;
    /// every operation here is a read or an idempotent upsert, so a second try is safe.
    pub(super) fn run<T>(
        &mut self,
        context: &str,
        mut op: impl FnMut(&mut DbConnection) -> QueryResult<T>,
    ) -> Result<T, StorageError> {
        let was_open = self.conn.is_some();
        let first = op(self.connection()?);
        let result = match first {
            Err(e) if was_open && is_closed_connection(&e) => {
                warn!(error = %self.scrub(&e), "{context}: database connection lost; reconnecting");
                self.conn = None;
                op(self.connection()?)
            }
            other => other,
        };
        result.map_err(|e| {
            if !is_constraint_violation(&e) {
                self.conn = None;
            }
            StorageError(format!("{context}: {}", self.scrub(&e)))
        })
    }

    fn scrub(&self, error: &DieselError) -> String {
        scrub(&error.to_string(), &self.database_url)
    }

    /// The connection, if one is open (to hand it on after a synchronous start-up job).
    pub(super) fn into_connection(self) -> Option<DbConnection> {
        self.conn
    }

    pub(super) fn write_finals(&mut self, records: &[FinalRecord]) -> Result<usize, StorageError> {
        let rows = dedup_last_wins(records);
        if rows.is_empty() {
            return Ok(0);
        }
        let statements = rows.len().div_ceil(ROWS_PER_STATEMENT) as u64;
        let outcome = self.run("writing a batch of finals", |conn| {
            match upsert_batch(conn, &rows) {
                Ok(written) => Ok(WriteOutcome {
                    written,
                    statements,
                    rejected: Vec::new(),
                }),
                // Some row breaks a constraint other than the upsert target (typically a seq
                // already taken by another utterance). Find it row by row instead of failing
                // the whole batch forever.
                Err(e) if is_constraint_violation(&e) => upsert_rows_one_by_one(conn, &rows),
                Err(e) => Err(e),
            }
        })?;
        for (row, reason) in &outcome.rejected {
            error!(
                session = %row.session_slug,
                seq = row.seq,
                utterance_id = %row.utterance_id,
                reason = %scrub(reason, &self.database_url),
                "final refused by the database; skipped"
            );
        }
        StorageMetrics::add(&self.metrics.insert_statements, outcome.statements);
        StorageMetrics::add(&self.metrics.finals_rejected, outcome.rejected.len() as u64);
        ::metrics::counter!(::actors::metrics::names::DB_FINALS_REJECTED_TOTAL)
            .increment(outcome.rejected.len() as u64);
        Ok(outcome.written)
    }
}

struct WriteOutcome<'a> {
    written: usize,
    statements: u64,
    rejected: Vec<(&'a NewTranscript<'a>, String)>,
}

/// One row per (session, utterance), keeping the last version in queue order. PostgreSQL
/// refuses an `ON CONFLICT DO UPDATE` that touches the same row twice in one statement.
fn dedup_last_wins(records: &[FinalRecord]) -> Vec<NewTranscript<'_>> {
    let mut seen = HashSet::with_capacity(records.len());
    let mut rows: Vec<NewTranscript<'_>> = records
        .iter()
        .rev()
        .filter(|r| seen.insert((r.session_slug.as_str(), r.utterance_id.as_str())))
        .map(NewTranscript::from)
        .collect();
    rows.reverse();
    rows
}

/// A re-sent final of the same utterance replaces every field of the stored one.
macro_rules! upsert_statement {
    ($rows:expr) => {{
        use transcripts::dsl as t;
        diesel::insert_into(transcripts::table)
            .values($rows)
            .on_conflict((t::session_slug, t::utterance_id))
            .do_update()
            .set((
                t::seq.eq(excluded(t::seq)),
                t::text.eq(excluded(t::text)),
                t::speaker.eq(excluded(t::speaker)),
                t::speaker_id.eq(excluded(t::speaker_id)),
                t::started_at_ms.eq(excluded(t::started_at_ms)),
                t::ended_at_ms.eq(excluded(t::ended_at_ms)),
                t::language.eq(excluded(t::language)),
            ))
    }};
}

/// All rows in one transaction, `ROWS_PER_STATEMENT` rows per multi-row statement.
fn upsert_batch(conn: &mut DbConnection, rows: &[NewTranscript<'_>]) -> QueryResult<usize> {
    with_backend!(conn, c => c.transaction(|tx| {
        for chunk in rows.chunks(ROWS_PER_STATEMENT) {
            upsert_statement!(chunk).execute(tx)?;
        }
        Ok(rows.len())
    }))
}

/// The slow path after a constraint violation: still one transaction, but each row in its
/// own savepoint, so refused rows are skipped and the rest are stored.
fn upsert_rows_one_by_one<'a>(
    conn: &mut DbConnection,
    rows: &'a [NewTranscript<'a>],
) -> QueryResult<WriteOutcome<'a>> {
    with_backend!(conn, c => c.transaction(|tx| {
        let mut outcome = WriteOutcome { written: 0, statements: 0, rejected: Vec::new() };
        for row in rows {
            let single = std::slice::from_ref(row);
            match tx.transaction(|sp| upsert_statement!(single).execute(sp)) {
                Ok(_) => outcome.written += 1,
                Err(e) if is_constraint_violation(&e) => outcome.rejected.push((row, e.to_string())),
                Err(e) => return Err(e),
            }
            outcome.statements += 1;
        }
        Ok(outcome)
    }))
}

/// Errors that retrying the same data can never fix.
fn is_constraint_violation(error: &DieselError) -> bool {
    matches!(
        error,
        DieselError::DatabaseError(
            DatabaseErrorKind::UniqueViolation
                | DatabaseErrorKind::ForeignKeyViolation
                | DatabaseErrorKind::NotNullViolation
                | DatabaseErrorKind::CheckViolation
                | DatabaseErrorKind::RestrictViolation
                | DatabaseErrorKind::ExclusionViolation,
            _
        )
    )
}

/// The connection itself is gone (as opposed to the statement failing on a live one).
fn is_closed_connection(error: &DieselError) -> bool {
    match error {
        DieselError::DatabaseError(
            DatabaseErrorKind::ClosedConnection | DatabaseErrorKind::UnableToSendCommand,
            _,
        )
        | DieselError::BrokenTransactionManager => true,
        // libpq reports a server-side termination (restart, pg_terminate_backend) as a
        // plain error whose message says so; the connection is unusable afterwards.
        DieselError::DatabaseError(_, info) => {
            let msg = info.message();
            msg.contains("terminating connection")
                || msg.contains("server closed the connection")
                || msg.contains("no connection to the server")
        }
        _ => false,
    }
}

impl Handler<WriteFinals> for DbExecutor {
    type Result = Result<usize, StorageError>;

    fn handle(&mut self, msg: WriteFinals, _: &mut Self::Context) -> Self::Result {
        self.write_finals(&msg.0)
    }
}

impl Handler<LoadLastSeq> for DbExecutor {
    type Result = Result<i64, StorageError>;

    fn handle(&mut self, msg: LoadLastSeq, _: &mut Self::Context) -> Self::Result {
        use transcripts::dsl as t;
        let last = self.run("loading the last seq", |conn| {
            with_backend!(conn, c => t::transcripts
                .filter(t::session_slug.eq(&msg.session_slug))
                .select(max(t::seq))
                .get_result::<Option<i64>>(c))
        })?;
        Ok(last.unwrap_or(0))
    }
}

impl Handler<LoadFinalsAfter> for DbExecutor {
    type Result = Result<Vec<FinalRecord>, StorageError>;

    fn handle(&mut self, msg: LoadFinalsAfter, _: &mut Self::Context) -> Self::Result {
        use transcripts::dsl as t;
        // A negative LIMIT is an error on PostgreSQL and "no limit" on SQLite: treat it as 0.
        let limit = msg.limit.max(0);
        let rows = self.run("loading finals", |conn| {
            with_backend!(conn, c => t::transcripts
                .filter(t::session_slug.eq(&msg.session_slug))
                .filter(t::seq.gt(msg.after_seq))
                .order(t::seq.asc())
                .limit(limit)
                .select(TranscriptRow::as_select())
                .load(c))
        })?;
        Ok(rows.into_iter().map(FinalRecord::from).collect())
    }
}

impl Handler<SaveSessionState> for DbExecutor {
    type Result = ();

    /// Best effort (the row is for operators): a failure is logged, not returned.
    fn handle(&mut self, msg: SaveSessionState, _: &mut Self::Context) -> Self::Result {
        // Raw SQL because `updated_at` is typed per backend (see schema.rs) and each backend
        // spells "now" its own way.
        let result = self.run("saving the session state", |conn| match conn {
            DbConnection::Pg(c) => diesel::sql_query(
                "INSERT INTO sessions (slug, state) VALUES ($1, $2) \
                 ON CONFLICT (slug) DO UPDATE SET state = excluded.state, updated_at = now()",
            )
            .bind::<Text, _>(&msg.session_slug)
            .bind::<Text, _>(msg.state.as_str())
            .execute(c),
            DbConnection::Sqlite(c) => diesel::sql_query(
                "INSERT INTO sessions (slug, state) VALUES (?, ?) \
                 ON CONFLICT (slug) DO UPDATE SET state = excluded.state, \
                 updated_at = CURRENT_TIMESTAMP",
            )
            .bind::<Text, _>(&msg.session_slug)
            .bind::<Text, _>(msg.state.as_str())
            .execute(c),
        });
        if let Err(e) = result {
            warn!(session = %msg.session_slug, state = %msg.state, error = %e, "session state not saved");
        }
    }
}

impl Handler<Ping> for DbExecutor {
    type Result = Result<(), StorageError>;

    fn handle(&mut self, _: Ping, _: &mut Self::Context) -> Self::Result {
        self.run(
            "ping",
            |conn| with_backend!(conn, c => diesel::sql_query("SELECT 1").execute(c)),
        )
        .map(drop)
    }
}
