//! Wiring: connect, migrate, start the executor threads and the batcher.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use ::actors::persistence::Storage;
use actix::prelude::*;
use tracing::info;

use super::batcher::{BatcherConfig, TranscriptBatcher};
use super::connection::{establish, run_migrations, DbConnection};
use super::error::DbError;
use super::executor::DbExecutor;
use super::metrics::StorageMetrics;
use super::redact::redact_url;

/// Everything the rest of the service needs from storage.
pub struct StorageHandles {
    /// The recipients handed to the actor tree.
    pub storage: Storage,
    /// For reads: `/readyz` (`Ping`) and the transcripts endpoint (`LoadFinalsAfter`).
    pub executor: Addr<DbExecutor>,
    /// The single thread that performs every write (batches, session states). The same
    /// actor as `executor` with SQLite.
    pub writer: Addr<DbExecutor>,
    /// For graceful shutdown (`Flush`).
    pub batcher: Addr<TranscriptBatcher>,
    /// Counters for the metrics endpoint.
    pub metrics: Arc<StorageMetrics>,
}

/// [`start_storage_with`] with the default in-memory bound.
pub fn start_storage(
    database_url: &str,
    batch_size: usize,
    batch_delay: Duration,
) -> Result<StorageHandles, DbError> {
    start_storage_with(
        database_url,
        BatcherConfig {
            batch_size,
            batch_delay,
            ..BatcherConfig::default()
        },
    )
}

/// Connects to `database_url`, runs pending migrations, starts the [`DbExecutor`] threads
/// (SQLite: one for everything; PostgreSQL: one writer and one reader) and the [`TranscriptBatcher`] (on the current arbiter). Must be called inside a running
/// actix `System`. Fails only if the database cannot be reached or migrated at start-up;
/// later outages are absorbed (reads fail, writes are retried).
pub fn start_storage_with(
    database_url: &str,
    config: BatcherConfig,
) -> Result<StorageHandles, DbError> {
    let mut conn = establish(database_url)?;
    let applied = run_migrations(&mut conn)?;
    let backend = conn.backend_name();
    info!(
        database = %redact_url(database_url),
        backend,
        migrations_applied = applied,
        batch_size = config.batch_size,
        batch_delay_ms = config.batch_delay.as_millis() as u64,
        "storage ready"
    );

    let metrics = Arc::new(StorageMetrics::default());
    // The writer is one thread on either backend: it serialises every write in mailbox order,
    // so a session's `live` then `ended` cannot be committed the other way round by two
    // threads racing. With PostgreSQL, reads get their own thread so that replay and
    // `/readyz` are not queued behind a batch stuck in a retry. SQLite keeps one thread and
    // one connection for everything: it has a single writer anyway, and `:memory:` databases
    // are per connection.
    let is_pg = matches!(conn, DbConnection::Pg(_));
    let writer = start_executor(database_url, Some(conn), &metrics);
    let executor = if is_pg {
        start_executor(database_url, None, &metrics)
    } else {
        writer.clone()
    };

    let batcher =
        TranscriptBatcher::new(config, writer.clone().recipient(), Arc::clone(&metrics)).start();

    let storage = Storage {
        save_final: batcher.clone().recipient(),
        load_last_seq: executor.clone().recipient(),
        load_finals_after: executor.clone().recipient(),
        save_session_state: writer.clone().recipient(),
    };
    Ok(StorageHandles {
        storage,
        executor,
        writer,
        batcher,
        metrics,
    })
}

/// One `DbExecutor` thread; `conn` (if any) is reused instead of opening a new connection.
fn start_executor(
    database_url: &str,
    conn: Option<DbConnection>,
    metrics: &Arc<StorageMetrics>,
) -> Addr<DbExecutor> {
    // The factory is `Fn`, so the connection is handed over through a take-once slot.
    let conn = Mutex::new(conn);
    let url = database_url.to_owned();
    let metrics = Arc::clone(metrics);
    SyncArbiter::start(1, move || {
        let conn = conn.lock().ok().and_then(|mut c| c.take());
        DbExecutor::new(url.clone(), conn, Arc::clone(&metrics))
    })
}
