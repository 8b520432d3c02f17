//! Test databases: a fresh PostgreSQL database per test, and the finals the service stored,
//! read straight from the database it writes.

use std::path::Path;
use std::time::Duration;

use crate::tools::unavailable;

/// `sqlite://` URL of the database file `file` in `dir` (created by the service).
pub fn sqlite_url(dir: &Path, file: &str) -> String {
    format!("sqlite://{}/{file}", dir.display())
}

/// A fresh PostgreSQL database for one test; `None` (skip) outside CI when no server answers.
pub fn fresh_postgres_database(prefix: &str) -> Option<String> {
    use diesel::{Connection, RunQueryDsl};
    let admin = std::env::var("DATABASE_URL_PG_ADMIN")
        .unwrap_or_else(|_| "postgres://postgres:postgres@127.0.0.1:5432/postgres".to_owned());
    let mut conn = match diesel::PgConnection::establish(&admin) {
        Ok(c) => c,
        Err(e) => {
            unavailable(&format!(
                "PostgreSQL is not reachable at DATABASE_URL_PG_ADMIN: {e}"
            ));
            return None;
        }
    };
    let name = format!("{prefix}_{}", uuid::Uuid::new_v4().simple());
    diesel::sql_query(format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .expect("create database");
    let base = admin
        .rsplit_once('/')
        .map(|(b, _)| b.to_owned())
        .unwrap_or(admin);
    Some(format!("{base}/{name}"))
}

#[derive(diesel::QueryableByName, Debug, Clone, PartialEq)]
pub struct StoredFinal {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    pub seq: i64,
    #[diesel(sql_type = diesel::sql_types::Text)]
    pub utterance_id: String,
    #[diesel(sql_type = diesel::sql_types::Text)]
    pub text: String,
}

/// The finals stored for a session, read straight from the database the service writes.
pub fn stored_finals(database_url: &str, slug: &str) -> Vec<StoredFinal> {
    use diesel::{Connection, RunQueryDsl};
    let sql = format!("SELECT seq, utterance_id, text FROM transcripts WHERE session_slug = '{slug}' ORDER BY seq");
    if let Some(path) = database_url.strip_prefix("sqlite://") {
        let mut conn = diesel::SqliteConnection::establish(path).expect("open sqlite");
        diesel::sql_query(sql)
            .load(&mut conn)
            .expect("query sqlite")
    } else {
        let mut conn = diesel::PgConnection::establish(database_url).expect("open postgres");
        diesel::sql_query(sql)
            .load(&mut conn)
            .expect("query postgres")
    }
}

/// Polls the database (finals are written in batches, off the hot path) until `slug` has at
/// least `count` finals or `timeout` passes; returns what is there.
pub async fn wait_for_stored_finals(
    database_url: &str,
    slug: &str,
    count: usize,
    timeout: Duration,
) -> Vec<StoredFinal> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let stored = stored_finals(database_url, slug);
        if stored.len() >= count || tokio::time::Instant::now() > deadline {
            return stored;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
