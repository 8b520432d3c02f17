//! Wiring: connect, migrate, start the executor threads and the batcher.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use ::actors::metrics::names;
use ::actors::persistence::Storage;
use actix::prelude::*;
use tracing::{info, warn};

use super::batcher::{BatcherConfig, TranscriptBatcher};
use super::connection::{establish, run_migrations, DbConnection};
use super::error::DbError;
use super::executor::DbExecutor;
use super::instance_lock::{self, InstanceLock};
use super::metrics::StorageMetrics;
use super::redact::redact_url;
use super::spill::{default_spill_dir, SpillFile};

/// Finals per transaction when a previous run's spill file is replayed at start-up.
const STARTUP_REPLAY_CHUNK: usize = 1000;

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
    /// PostgreSQL: this instance's hold on the database (`super::instance_lock`).
    pub instance_lock: Option<InstanceLock>,
}

/// [`start_storage_with`] with the default in-memory bound and spill file.
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
/// actix `System`. Fails only if the database cannot be reached or migrated at start-up, or a
/// spill file left by a previous run cannot be read or written to it; later outages are
/// absorbed (reads fail, writes are retried, finals beyond `max_queued` are spilled to disk).
///
/// A previous run's spill file is written to the database here, before anything else starts:
/// a session started afterwards numbers its finals from the highest stored `seq`, which must
/// already include the spilled finals.
pub fn start_storage_with(
    database_url: &str,
    config: BatcherConfig,
) -> Result<StorageHandles, DbError> {
    // First: a second instance on this database must not touch it (not even its spill file).
    let instance_lock = instance_lock::take(database_url, config.sharing)?;
    let mut conn = establish(database_url)?;
    let applied = instance_lock::migrating(&mut conn, run_migrations)?;
    let backend = conn.backend_name();
    let is_pg = matches!(conn, DbConnection::Pg(_));

    let metrics = Arc::new(StorageMetrics::default());
    let spill_dir = config
        .spill_dir
        .clone()
        .unwrap_or_else(|| default_spill_dir(database_url));
    let spill_error = |message: String| DbError::Spill {
        path: spill_dir.clone(),
        message,
    };
    let (mut spill, report) = SpillFile::open(&spill_dir, config.spill_max_bytes)
        .map_err(|e| spill_error(format!("cannot open: {e}")))?;
    if report.damaged > 0 {
        StorageMetrics::add(&metrics.finals_lost, report.damaged as u64);
        ::metrics::counter!(names::DB_FINALS_LOST_TOTAL).increment(report.damaged as u64);
    }
    let conn = if spill.pending() > 0 {
        replay_leftover_spill(database_url, conn, &mut spill, &metrics).map_err(spill_error)?
    } else {
        Some(conn)
    };
    info!(
        database = %redact_url(database_url),
        backend,
        migrations_applied = applied,
        batch_size = config.batch_size,
        batch_delay_ms = config.batch_delay.as_millis() as u64,
        max_queued = config.max_queued,
        spill_file = %spill.path().display(),
        "storage ready"
    );

    // The writer is one thread on either backend: it serialises every write in mailbox order,
    // so a session's `live` then `ended` cannot be committed the other way round by two
    // threads racing. With PostgreSQL, reads get their own thread so that replay and
    // `/readyz` are not queued behind a batch stuck in a retry. SQLite keeps one thread and
    // one connection for everything: it has a single writer anyway, and `:memory:` databases
    // are per connection.
    let writer = start_executor(database_url, conn, &metrics);
    let executor = if is_pg {
        start_executor(database_url, None, &metrics)
    } else {
        writer.clone()
    };

    // Numbering after a restart or while the database is down: see `super::high_water`.
    let high_water_dir = spill_dir.join("seq-high-water");
    let batcher = TranscriptBatcher::new(config, writer.clone().recipient(), Arc::clone(&metrics))
        .with_spill(spill)
        .with_numbering(Some(high_water_dir), executor.clone().recipient())
        .start();

    let storage = Storage {
        save_final: batcher.clone().recipient(),
        // Through the batcher: it knows the finals not stored yet (`super::high_water`).
        load_last_seq: batcher.clone().recipient(),
        load_finals_after: executor.clone().recipient(),
        save_session_state: writer.clone().recipient(),
        revoke_stream_keys: writer.clone().recipient(),
        is_stream_key_revoked: executor.clone().recipient(),
    };
    Ok(StorageHandles {
        storage,
        executor,
        writer,
        batcher,
        metrics,
        instance_lock,
    })
}

/// Writes every final of a previous run's spill file (a crash or shutdown during an outage),
/// in file order, then removes the file. On error the file is left as it is, for the next
/// start. Returns the connection for the writer thread (`None`: it reconnects lazily).
fn replay_leftover_spill(
    database_url: &str,
    conn: DbConnection,
    spill: &mut SpillFile,
    metrics: &Arc<StorageMetrics>,
) -> Result<Option<DbConnection>, String> {
    let pending = spill.pending();
    warn!(
        file = %spill.path().display(),
        finals = pending,
        "a previous run left spilled finals; writing them to the database"
    );
    let mut executor = DbExecutor::new(database_url.to_owned(), Some(conn), Arc::clone(metrics));
    let mut replayed = 0usize;
    loop {
        let chunk = spill
            .read(STARTUP_REPLAY_CHUNK)
            .map_err(|e| format!("cannot read: {e}"))?;
        if chunk.is_empty() {
            break;
        }
        executor.write_finals(&chunk).map_err(|e| {
            format!("replaying {pending} spilled finals failed after {replayed} (the file is kept for the next start): {e}")
        })?;
        replayed += chunk.len();
        StorageMetrics::add(&metrics.finals_replayed, chunk.len() as u64);
        StorageMetrics::add(&metrics.finals_written, chunk.len() as u64);
        ::metrics::counter!(names::DB_FINALS_REPLAYED_TOTAL).increment(chunk.len() as u64);
        ::metrics::counter!(names::DB_FINALS_WRITTEN_TOTAL).increment(chunk.len() as u64);
    }
    spill
        .remove()
        .map_err(|e| format!("written to the database but cannot be removed: {e}"))?;
    info!(
        finals = replayed,
        "spilled finals of the previous run written; spill file removed"
    );
    Ok(executor.into_connection())
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
