//! PostgreSQL for a run: a fresh database (cluster mode needs one shared by every instance),
//! and counting the service's SQL statements on it: the database's sessions log every
//! statement (`ALTER DATABASE … SET log_statement = 'all'`, which touches no other database),
//! then the server log's lines for that database, by kind.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{ensure, Context as _};

/// A database created for this run on the server of `--pg-admin`; dropped with this value, so
/// a run that stops early leaves no database behind on a shared server.
pub struct FreshDatabase {
    admin_url: String,
    pub name: String,
    pub url: String,
}

impl FreshDatabase {
    pub fn create(admin_url: &str) -> anyhow::Result<Self> {
        let name = format!("loadgen_{}", uuid::Uuid::new_v4().simple());
        psql(admin_url, &format!("CREATE DATABASE {name}"))?;
        let base = admin_url
            .rsplit_once('/')
            .map(|(b, _)| b.to_owned())
            .unwrap_or_else(|| admin_url.to_owned());
        Ok(FreshDatabase {
            admin_url: admin_url.to_owned(),
            url: format!("{base}/{name}"),
            name,
        })
    }
}

impl Drop for FreshDatabase {
    fn drop(&mut self) {
        // FORCE: an instance that is still connected (a run that failed) does not keep it.
        let _ = psql(
            &self.admin_url,
            &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
        );
    }
}

pub struct StatementCounter {
    pub db: FreshDatabase,
    log: PathBuf,
    log_start: u64,
}

impl StatementCounter {
    pub fn create(admin_url: &str, log: &Path) -> anyhow::Result<Self> {
        let db = FreshDatabase::create(admin_url)?;
        psql(
            admin_url,
            &format!("ALTER DATABASE {} SET log_statement = 'all'", db.name),
        )?;
        let log_start = std::fs::metadata(log)
            .with_context(|| {
                format!(
                    "cannot read the PostgreSQL log {} (--pg-log)",
                    log.display()
                )
            })?
            .len();
        Ok(StatementCounter {
            db,
            log: log.to_owned(),
            log_start,
        })
    }

    /// Counts the statements logged for this database since it was created.
    pub fn count(&self) -> anyhow::Result<StatementCounts> {
        use std::io::{Read as _, Seek as _};
        let mut file = std::fs::File::open(&self.log)?;
        file.seek(std::io::SeekFrom::Start(self.log_start))?;
        let mut text = String::new();
        file.read_to_string(&mut text)?;
        let marker = format!("@{} ", self.db.name);
        let mut counts = StatementCounts::default();
        for line in text.lines().filter(|l| l.contains(&marker)) {
            // `statement: …` (simple protocol) or `execute <name>: …` (prepared statements).
            let Some(sql) = line
                .split_once("LOG:  statement: ")
                .or_else(|| line.split_once("LOG:  execute "))
                .map(|(_, sql)| sql.to_ascii_lowercase())
            else {
                continue;
            };
            counts.total += 1;
            if sql.contains("into transcripts") || sql.contains("into \"transcripts\"") {
                counts.transcript_writes += 1;
            } else if sql.contains("begin") || sql.contains("commit") {
                counts.transaction_control += 1;
            }
        }
        let finals = psql(&self.db.url, "SELECT count(*) FROM transcripts")?;
        counts.finals_stored = finals.trim().parse().unwrap_or(0);
        Ok(counts)
    }
}

#[derive(Debug, Default, Clone, Copy, serde::Serialize)]
pub struct StatementCounts {
    /// Every statement the service ran on its database (migrations and reads included).
    pub total: u64,
    /// `INSERT INTO transcripts …` (each a multi-row upsert of one batch).
    pub transcript_writes: u64,
    /// BEGIN / COMMIT.
    pub transaction_control: u64,
    pub finals_stored: u64,
}

fn psql(url: &str, sql: &str) -> anyhow::Result<String> {
    let output = Command::new("psql")
        .args([
            "-X",
            "-A",
            "-t",
            "-v",
            "ON_ERROR_STOP=1",
            "-d",
            url,
            "-c",
            sql,
        ])
        .output()
        .context("cannot run psql")?;
    ensure!(
        output.status.success(),
        "psql {sql:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}
