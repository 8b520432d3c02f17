//! Opening a connection to whichever database `DATABASE_URL` names, and migrating it.

use std::path::Path;

use diesel::connection::SimpleConnection;
use diesel::pg::PgConnection;
use diesel::sqlite::SqliteConnection;
use diesel::Connection;
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};

use super::error::DbError;
use super::redact::{redact_url, scrub};

/// The two schemas are kept as separate migration sets because the SQL dialects differ
/// (`BIGSERIAL`/`TIMESTAMPTZ` vs SQLite's `INTEGER PRIMARY KEY`/text timestamps).
const PG_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/postgres");
const SQLITE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/sqlite");

/// How long a SQLite statement waits for another connection's write lock before failing
/// with "database is locked". WAL lets readers and the writer run side by side; this covers
/// writer-vs-writer and checkpoints. A failed batch is retried by the batcher anyway.
const SQLITE_BUSY_TIMEOUT_MS: u32 = 5_000;

/// libpq waits for the TCP connect without limit by default; during an outage with a host
/// that drops packets that would stall the executor thread for minutes.
const PG_CONNECT_TIMEOUT_S: u32 = 10;

/// A connection to either backend. PostgreSQL comes first, as diesel's `MultiConnection`
/// tries variants in order when establishing from a URL.
#[derive(diesel::MultiConnection)]
pub enum DbConnection {
    Pg(PgConnection),
    Sqlite(SqliteConnection),
}

impl DbConnection {
    /// "postgres" or "sqlite", for logs.
    pub fn backend_name(&self) -> &'static str {
        match self {
            DbConnection::Pg(_) => "postgres",
            DbConnection::Sqlite(_) => "sqlite",
        }
    }
}

/// What a `DATABASE_URL` points at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatabaseTarget {
    /// A libpq connection URL, as given.
    Postgres(String),
    /// A SQLite path (or `:memory:` / a `file:` URI), with any `sqlite:` prefix removed.
    Sqlite(String),
}

impl DatabaseTarget {
    /// Classifies `database_url`: `postgres://`, `postgresql://` → PostgreSQL;
    /// `sqlite://PATH`, `sqlite:PATH` or a plain path → SQLite.
    pub fn parse(database_url: &str) -> Result<Self, DbError> {
        let url = database_url.trim();
        let lower = url.to_ascii_lowercase();
        if lower.starts_with("postgres://") || lower.starts_with("postgresql://") {
            return Ok(Self::Postgres(url.to_owned()));
        }
        let path = if lower.starts_with("sqlite://") {
            &url["sqlite://".len()..]
        } else if lower.starts_with("sqlite:") {
            &url["sqlite:".len()..]
        } else if url.contains("://") {
            return Err(DbError::UnsupportedUrl {
                url: redact_url(url),
            });
        } else {
            url
        };
        // `sqlite://data/rt.db?mode=rwc` style options are not ours to interpret; drop them
        // rather than create a file whose name ends in "?mode=rwc". `file:` URIs keep theirs.
        let path = if path.starts_with("file:") {
            path
        } else {
            path.split_once('?').map_or(path, |(p, _)| p)
        };
        if path.is_empty() {
            return Err(DbError::UnsupportedUrl {
                url: redact_url(url),
            });
        }
        Ok(Self::Sqlite(path.to_owned()))
    }
}

/// Opens a connection for `database_url` (see [`DatabaseTarget::parse`]).
///
/// For SQLite the parent directory is created if missing, and the connection is put in WAL
/// mode with a busy timeout so the HTTP readers and the batch writer do not block each other.
/// Errors never contain the URL's password.
pub fn establish(database_url: &str) -> Result<DbConnection, DbError> {
    match DatabaseTarget::parse(database_url)? {
        DatabaseTarget::Postgres(url) => establish_pg(&url),
        DatabaseTarget::Sqlite(path) => establish_sqlite(&path),
    }
}

fn establish_pg(url: &str) -> Result<DbConnection, DbError> {
    let with_timeout = if url.contains("connect_timeout=") {
        url.to_owned()
    } else {
        let sep = if url.contains('?') { '&' } else { '?' };
        format!("{url}{sep}connect_timeout={PG_CONNECT_TIMEOUT_S}")
    };
    PgConnection::establish(&with_timeout)
        .map(DbConnection::Pg)
        .map_err(|e| DbError::Connect {
            backend: "postgres",
            target: redact_url(url),
            message: scrub(&scrub(&e.to_string(), &with_timeout), url),
        })
}

fn establish_sqlite(path: &str) -> Result<DbConnection, DbError> {
    let is_file = path != ":memory:" && !path.starts_with("file:");
    if is_file {
        if let Some(dir) = Path::new(path).parent() {
            if !dir.as_os_str().is_empty() && !dir.exists() {
                std::fs::create_dir_all(dir).map_err(|error| DbError::CreateDir {
                    path: dir.to_owned(),
                    error,
                })?;
            }
        }
    }
    let mut conn = SqliteConnection::establish(path).map_err(|e| DbError::Connect {
        backend: "sqlite",
        target: path.to_owned(),
        message: e.to_string(),
    })?;
    // busy_timeout first, so switching to WAL itself waits for a concurrent opener.
    // `synchronous` stays at its default (FULL): batches are small and infrequent, and a
    // committed final must survive a power cut, which WAL + NORMAL does not promise.
    let pragmas = format!(
        "PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}; PRAGMA journal_mode = WAL; \
         PRAGMA foreign_keys = ON;"
    );
    conn.batch_execute(&pragmas)
        .map_err(|e| DbError::Configure {
            target: path.to_owned(),
            message: e.to_string(),
        })?;
    Ok(DbConnection::Sqlite(conn))
}

/// Applies every pending migration of the connection's backend; returns how many ran
/// (0 when the schema is already current, so it is safe on every start).
pub fn run_migrations(conn: &mut DbConnection) -> Result<usize, DbError> {
    let backend = conn.backend_name();
    let applied = match conn {
        DbConnection::Pg(c) => c.run_pending_migrations(PG_MIGRATIONS).map(|v| v.len()),
        DbConnection::Sqlite(c) => c.run_pending_migrations(SQLITE_MIGRATIONS).map(|v| v.len()),
    };
    applied.map_err(|e| DbError::Migration {
        target: backend.to_owned(),
        message: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_classified() {
        let pg = |u: &str| DatabaseTarget::Postgres(u.to_owned());
        let lite = |p: &str| DatabaseTarget::Sqlite(p.to_owned());
        let parse = |u: &str| DatabaseTarget::parse(u).ok();
        assert_eq!(parse("postgres://u@h/db"), Some(pg("postgres://u@h/db")));
        assert_eq!(
            parse("postgresql://u@h/db"),
            Some(pg("postgresql://u@h/db"))
        );
        assert_eq!(parse("sqlite://data/rt.db"), Some(lite("data/rt.db")));
        assert_eq!(
            parse("sqlite:///var/lib/rt.db"),
            Some(lite("/var/lib/rt.db"))
        );
        assert_eq!(parse("sqlite:rt.db?mode=rwc"), Some(lite("rt.db")));
        assert_eq!(parse("./data/rt.db"), Some(lite("./data/rt.db")));
        assert_eq!(parse("sqlite::memory:"), Some(lite(":memory:")));
        assert_eq!(parse("sqlite://"), None);
    }

    #[test]
    fn unsupported_url_error_hides_the_password() {
        let err = DatabaseTarget::parse("mysql://root:hunter22@db/rt")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("mysql://root:***@db/rt"), "{err}");
        assert!(!err.contains("hunter22"), "{err}");
    }

    #[test]
    fn pg_connect_error_hides_the_password() {
        // Nothing listens on port 1: the connection fails fast with a libpq message.
        let url = "postgres://app:hunter22@127.0.0.1:1/rt";
        let err = establish(url)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.starts_with("cannot connect to postgres"), "{err}");
        assert!(!err.contains("hunter22"), "{err}");
    }
}
