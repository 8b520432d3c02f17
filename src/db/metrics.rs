//! Counters of the storage layer, shared by the batcher and the executor threads, read by
//! the storage tests. The same events are recorded under the `db.*` names of
//! `actors::metrics::names` for the metrics endpoints (docs/PROTOCOL.md#metrics: "database batch sizes and
//! errors").

use std::sync::atomic::{AtomicU64, Ordering};

/// Live counters. Relaxed atomics: each value is an independent tally, read for display.
#[derive(Debug, Default)]
pub struct StorageMetrics {
    /// Batches committed by the batcher.
    pub batches_written: AtomicU64,
    /// Finals committed (counted per queued final, duplicates included).
    pub finals_written: AtomicU64,
    /// Multi-row `INSERT … ON CONFLICT` statements executed for committed batches.
    pub insert_statements: AtomicU64,
    /// Failed batch writes (each retry that fails counts once).
    pub write_errors: AtomicU64,
    /// Finals waiting in memory, including the batch being written.
    pub queue_len: AtomicU64,
    /// Finals appended to the spill file (the memory queue was full, or shutdown came during
    /// an outage).
    pub finals_spilled: AtomicU64,
    /// Finals read back from the spill file into the queue (including a previous run's).
    pub finals_replayed: AtomicU64,
    /// Finals lost: the queue was full and the spill file could not take them (its bound, a
    /// disk error), or a damaged line in a previous run's spill file.
    pub finals_lost: AtomicU64,
    /// Finals in the spill file not yet read back.
    pub spill_pending: AtomicU64,
    /// Finals the database refused for good (a constraint violation, e.g. a `seq` already
    /// used by another utterance), logged and skipped so they cannot block the queue.
    pub finals_rejected: AtomicU64,
}

/// A point-in-time copy of [`StorageMetrics`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StorageMetricsSnapshot {
    pub batches_written: u64,
    pub finals_written: u64,
    pub insert_statements: u64,
    pub write_errors: u64,
    pub queue_len: u64,
    pub finals_spilled: u64,
    pub finals_replayed: u64,
    pub finals_lost: u64,
    pub spill_pending: u64,
    pub finals_rejected: u64,
}

impl StorageMetrics {
    pub fn snapshot(&self) -> StorageMetricsSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        StorageMetricsSnapshot {
            batches_written: get(&self.batches_written),
            finals_written: get(&self.finals_written),
            insert_statements: get(&self.insert_statements),
            write_errors: get(&self.write_errors),
            queue_len: get(&self.queue_len),
            finals_spilled: get(&self.finals_spilled),
            finals_replayed: get(&self.finals_replayed),
            finals_lost: get(&self.finals_lost),
            spill_pending: get(&self.spill_pending),
            finals_rejected: get(&self.finals_rejected),
        }
    }

    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn set(counter: &AtomicU64, n: u64) {
        counter.store(n, Ordering::Relaxed);
    }
}
