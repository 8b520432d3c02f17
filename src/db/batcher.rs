//! `TranscriptBatcher`: takes finals off the hot path, writes them in batches, and keeps
//! them through database outages (docs/PROTOCOL.md#persistence, `TRANSCRIPT_BATCH_*`).
//!
//! The queue is the single source of truth: a batch is the first `n` queued finals, and it
//! leaves the queue only once the database has committed it. A failed write therefore leaves
//! the same finals, in the same order, at the front, and the next attempt retries them (the
//! upsert makes a retry of a batch that did commit after all harmless).
//!
//! Beyond `max_queued` finals (a long outage), newer finals go to the [`SpillFile`]. While the
//! file holds finals not yet handed back, every new final goes there too, behind them, and the
//! queue is refilled from the file as writes free room: the database sees the finals in the
//! order they arrived, and each final is in exactly one of queue and file at a time. The file
//! is removed once everything read from it has been written. Only a final that the file cannot
//! take either (`TRANSCRIPT_SPILL_MAX_BYTES`, disk error) is lost, and counted.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ::actors::persistence::{FinalRecord, LoadLastSeq, SaveFinal, StorageError};
use actix::prelude::*;
use tokio::sync::oneshot;
use tracing::{error, info, warn};

use super::executor::WriteFinals;
use super::high_water::SeqHighWater;
use super::metrics::StorageMetrics;
use super::spill::{SpillFile, DEFAULT_SPILL_MAX_BYTES};
use ::actors::metrics::names;

/// First retry delay after a failed write; doubles per failure up to [`RETRY_MAX`].
const RETRY_INITIAL: Duration = Duration::from_millis(100);
/// Retry ceiling: a recovered database is picked up within 5 s without hammering a down one.
const RETRY_MAX: Duration = Duration::from_secs(5);
/// During a long outage, log one line per this many spilled or lost finals, not one each.
const LOG_EVERY: u64 = 1000;
/// Spilled finals are synced to disk at most this often (see [`SpillFile`]).
const SPILL_SYNC_EVERY: Duration = Duration::from_secs(1);

/// When a batch is written, how much may wait in memory, and where the rest goes.
#[derive(Debug, Clone)]
pub struct BatcherConfig {
    /// Write as soon as this many finals are queued (`TRANSCRIPT_BATCH_SIZE`).
    pub batch_size: usize,
    /// Write at the latest this long after the oldest queued final arrived
    /// (`TRANSCRIPT_BATCH_DELAY_MS`).
    pub batch_delay: Duration,
    /// Finals kept in memory while the database is away. At roughly 300 bytes each the default
    /// is ~30 MB: hours of speech for dozens of meetings, yet bounded.
    pub max_queued: usize,
    /// Directory of the spill file (`TRANSCRIPT_SPILL_DIR`); `None`: next to the SQLite file,
    /// or `./data/spill` (see [`super::spill::default_spill_dir`]). Used by
    /// [`super::start_storage_with`]; a bare [`TranscriptBatcher`] gets its file from
    /// [`TranscriptBatcher::with_spill`].
    pub spill_dir: Option<PathBuf>,
    /// Bound of the spill file in bytes (`TRANSCRIPT_SPILL_MAX_BYTES`).
    pub spill_max_bytes: u64,
    /// Whether other instances (of one cluster) use the database too
    /// ([`super::sharing::Sharing`]).
    pub sharing: super::sharing::Sharing,
}

impl Default for BatcherConfig {
    fn default() -> Self {
        Self {
            batch_size: 50,
            batch_delay: Duration::from_millis(2000),
            max_queued: 100_000,
            spill_dir: None,
            spill_max_bytes: DEFAULT_SPILL_MAX_BYTES,
            sharing: super::sharing::Sharing::Alone,
        }
    }
}

/// Completes once every final queued before it has been written. Used by graceful shutdown
/// and tests. It waits through an outage (the finals are still retried), so callers that
/// must not hang wrap it in a timeout. `Err` only if the batcher stops first.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "Result<(), StorageError>")]
pub struct Flush;

/// Shutdown with the database still away: moves every queued final to the spill file (in
/// front of what it holds already), so the next start replays it. Answers how many finals the
/// file holds. Afterwards the batcher writes nothing more and spills whatever still arrives.
/// `Err` if there is no spill file or it cannot be written (the finals stay in memory).
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "Result<usize, StorageError>")]
pub struct SpillAll;

struct Queued {
    record: FinalRecord,
    queued_at: Instant,
    /// Read back from the spill file (which keeps it until it is written).
    from_spill: bool,
}

/// The async actor that batches finals for a [`super::DbExecutor`].
pub struct TranscriptBatcher {
    config: BatcherConfig,
    writer: Recipient<WriteFinals>,
    metrics: Arc<StorageMetrics>,
    queue: VecDeque<Queued>,
    /// A `WriteFinals` is in flight; it covers the first `n` queued finals.
    writing: bool,
    /// Armed after a failed write; no write starts until it fires.
    retry_timer: Option<SpawnHandle>,
    retry_delay: Duration,
    /// Armed while finals wait for `batch_delay`.
    delay_timer: Option<SpawnHandle>,
    /// Finals ever accepted (queued or spilled) / written out of the queue / lost: `Flush`
    /// waits for `written + lost >= accepted-at-the-time-of-the-flush`.
    accepted: u64,
    written: u64,
    lost: u64,
    flush_waiters: Vec<(u64, oneshot::Sender<Result<(), StorageError>>)>,
    /// When the current run of failed writes began, to log the outage's end.
    failing_since: Option<Instant>,
    /// Where finals go when the queue is full; `None`: they are lost (tests, or no directory).
    spill: Option<SpillFile>,
    /// Queued finals read back from the spill file: it is removed only when this is 0.
    queued_from_spill: usize,
    /// Finals spilled since the batcher started, to rate-limit the log line.
    spilled: u64,
    /// Armed after an append to the spill file.
    sync_timer: Option<SpawnHandle>,
    /// After [`SpillAll`]: no more writes, every final goes to the file.
    spilled_all: bool,
    /// Each session's highest numbered `seq`, moved before a final is queued or spilled.
    high_water: SeqHighWater,
    /// Where `LoadLastSeq` asks for the stored `max(seq)` (a database reader).
    last_seq_source: Option<Recipient<LoadLastSeq>>,
}

impl TranscriptBatcher {
    pub fn new(
        config: BatcherConfig,
        writer: Recipient<WriteFinals>,
        metrics: Arc<StorageMetrics>,
    ) -> Self {
        let config = BatcherConfig {
            // A zero would never fill a batch nor bound anything; clamp instead of failing.
            batch_size: config.batch_size.max(1),
            max_queued: config.max_queued.max(1),
            ..config
        };
        Self {
            config,
            writer,
            metrics,
            queue: VecDeque::new(),
            writing: false,
            retry_timer: None,
            retry_delay: RETRY_INITIAL,
            delay_timer: None,
            accepted: 0,
            written: 0,
            lost: 0,
            flush_waiters: Vec::new(),
            failing_since: None,
            spill: None,
            queued_from_spill: 0,
            spilled: 0,
            sync_timer: None,
            spilled_all: false,
            high_water: SeqHighWater::new(None),
            last_seq_source: None,
        }
    }

    /// Numbering (`LoadLastSeq`) is answered here, from `source`'s stored `max(seq)` and the
    /// high-water marks kept under `dir` (see `super::high_water`).
    pub fn with_numbering(mut self, dir: Option<PathBuf>, source: Recipient<LoadLastSeq>) -> Self {
        self.high_water = SeqHighWater::new(dir);
        self.last_seq_source = Some(source);
        self
    }

    /// Gives the batcher its spill file. Finals the file already holds (a previous run's) are
    /// replayed before any new final.
    pub fn with_spill(mut self, spill: SpillFile) -> Self {
        StorageMetrics::set(&self.metrics.spill_pending, spill.pending() as u64);
        ::metrics::gauge!(names::DB_SPILL_PENDING).set(spill.pending() as f64);
        self.spill = Some(spill);
        self
    }

    fn enqueue(&mut self, record: FinalRecord, ctx: &mut Context<Self>) {
        self.accepted += 1;
        let spill_pending = self.spill.as_ref().map_or(0, SpillFile::pending);
        if self.spilled_all || spill_pending > 0 || self.queue.len() >= self.config.max_queued {
            // Behind older spilled finals, or no room: to the file (order is kept either way).
            self.spill_one(record, ctx);
            self.refill();
        } else {
            self.queue.push_back(Queued {
                record,
                queued_at: Instant::now(),
                from_spill: false,
            });
        }
        self.publish_queue_len();
        self.maybe_write(ctx);
    }

    fn spill_one(&mut self, record: FinalRecord, ctx: &mut Context<Self>) {
        let Some(spill) = self.spill.as_mut() else {
            self.lose(&record, "no spill file configured");
            return;
        };
        match spill.append(&record) {
            Ok(()) => {
                self.spilled += 1;
                StorageMetrics::add(&self.metrics.finals_spilled, 1);
                ::metrics::counter!(names::DB_FINALS_SPILLED_TOTAL).increment(1);
                StorageMetrics::set(&self.metrics.spill_pending, spill.pending() as u64);
                ::metrics::gauge!(names::DB_SPILL_PENDING).set(spill.pending() as f64);
                // The first final of a spell of spilling, then one line per LOG_EVERY.
                if spill.pending() == 1 || self.spilled.is_multiple_of(LOG_EVERY) {
                    warn!(
                        file = %spill.path().display(),
                        max_queued = self.config.max_queued,
                        spilled_so_far = self.spilled,
                        pending_in_file = spill.pending(),
                        "transcript queue full while the database is unavailable; spilling finals to disk"
                    );
                }
                if self.sync_timer.is_none() {
                    self.sync_timer = Some(ctx.run_later(SPILL_SYNC_EVERY, |act, _| {
                        act.sync_timer = None;
                        act.sync_spill();
                    }));
                }
            }
            Err(e) => self.lose(&record, &e.to_string()),
        }
    }

    fn sync_spill(&mut self) {
        if let Some(spill) = self.spill.as_mut() {
            if let Err(e) = spill.sync() {
                error!(file = %spill.path().display(), error = %e, "cannot sync the spill file");
            }
        }
    }

    /// A final neither memory nor the spill file could take.
    fn lose(&mut self, record: &FinalRecord, why: &str) {
        self.lost += 1;
        StorageMetrics::add(&self.metrics.finals_lost, 1);
        ::metrics::counter!(names::DB_FINALS_LOST_TOTAL).increment(1);
        if (self.lost - 1).is_multiple_of(LOG_EVERY) {
            error!(
                session = %record.session_slug,
                seq = record.seq,
                max_queued = self.config.max_queued,
                lost_so_far = self.lost,
                reason = why,
                "transcript queue full while the database is unavailable and the final cannot be spilled; FINAL LOST"
            );
        }
        self.answer_flushes();
    }

    /// Moves finals from the spill file into the queue while there is room.
    fn refill(&mut self) {
        if self.spilled_all {
            return;
        }
        let room = self.config.max_queued.saturating_sub(self.queue.len());
        let Some(spill) = self.spill.as_mut() else {
            return;
        };
        if room == 0 || spill.pending() == 0 {
            return;
        }
        match spill.read(room) {
            Ok(records) => {
                let n = records.len();
                let now = Instant::now();
                self.queue.extend(records.into_iter().map(|record| Queued {
                    record,
                    queued_at: now,
                    from_spill: true,
                }));
                self.queued_from_spill += n;
                StorageMetrics::add(&self.metrics.finals_replayed, n as u64);
                ::metrics::counter!(names::DB_FINALS_REPLAYED_TOTAL).increment(n as u64);
                StorageMetrics::set(&self.metrics.spill_pending, spill.pending() as u64);
                ::metrics::gauge!(names::DB_SPILL_PENDING).set(spill.pending() as f64);
                if spill.pending() == 0 && n > 0 {
                    info!(
                        file = %spill.path().display(),
                        "every spilled final is back in the queue"
                    );
                }
            }
            // Retried on the next write or final; the file is not touched.
            Err(e) => error!(
                file = %spill.path().display(),
                error = %e,
                "cannot read the spill file; will retry"
            ),
        }
    }

    /// Deletes the spill file once everything in it is in the database.
    fn maybe_remove_spill(&mut self) {
        if self.queued_from_spill > 0 || self.spilled_all {
            return;
        }
        let Some(spill) = self.spill.as_mut() else {
            return;
        };
        if spill.pending() > 0 || spill.size() == 0 {
            return;
        }
        match spill.remove() {
            Ok(()) => info!(
                file = %spill.path().display(),
                "spilled finals all written; spill file removed"
            ),
            Err(e) => {
                error!(file = %spill.path().display(), error = %e, "cannot remove the spill file")
            }
        }
    }

    /// Starts a write if one is due and none is in flight or backing off.
    fn maybe_write(&mut self, ctx: &mut Context<Self>) {
        if self.writing || self.retry_timer.is_some() || self.spilled_all {
            return;
        }
        let Some(oldest) = self.queue.front().map(|q| q.queued_at) else {
            return;
        };
        let waited = oldest.elapsed();
        let due = self.queue.len() >= self.config.batch_size
            || !self.flush_waiters.is_empty()
            || waited >= self.config.batch_delay;
        if !due {
            // An armed timer belongs to this or an older front final, so it fires no later
            // than needed; when it fires we re-evaluate and re-arm if necessary.
            if self.delay_timer.is_none() {
                let wait = self.config.batch_delay.saturating_sub(waited);
                self.delay_timer = Some(ctx.run_later(wait, |act, ctx| {
                    act.delay_timer = None;
                    act.maybe_write(ctx);
                }));
            }
            return;
        }
        if let Some(timer) = self.delay_timer.take() {
            ctx.cancel_future(timer);
        }

        let n = self.queue.len().min(self.config.batch_size);
        let batch: Vec<FinalRecord> = self
            .queue
            .iter()
            .take(n)
            .map(|q| q.record.clone())
            .collect();
        self.writing = true;
        let span = batch_span(&batch);
        let write =
            self.writer
                .send(WriteFinals(batch))
                .into_actor(self)
                .map(move |result, act, ctx| {
                    let result = result
                        .map_err(|e| StorageError(format!("database executor unavailable: {e}")))
                        .and_then(|r| r);
                    // Ends the span: the write is committed or failed.
                    span.record("db.outcome", if result.is_ok() { "ok" } else { "error" });
                    act.write_finished(n, result, ctx);
                });
        ctx.spawn(write);
    }

    fn write_finished(
        &mut self,
        n: usize,
        result: Result<usize, StorageError>,
        ctx: &mut Context<Self>,
    ) {
        self.writing = false;
        if self.spilled_all {
            // The queue went to the spill file; a batch that committed after all is replayed
            // next start, which the upsert makes harmless.
            return;
        }
        match result {
            Ok(_) => {
                let from_spill = self.queue.drain(..n).filter(|q| q.from_spill).count();
                self.queued_from_spill -= from_spill;
                self.written += n as u64;
                self.retry_delay = RETRY_INITIAL;
                if let Some(since) = self.failing_since.take() {
                    info!(
                        outage_ms = since.elapsed().as_millis() as u64,
                        queued = self.queue.len(),
                        "transcript writes recovered"
                    );
                }
                StorageMetrics::add(&self.metrics.batches_written, 1);
                StorageMetrics::add(&self.metrics.finals_written, n as u64);
                ::metrics::counter!(names::DB_BATCHES_WRITTEN_TOTAL).increment(1);
                ::metrics::counter!(names::DB_FINALS_WRITTEN_TOTAL).increment(n as u64);
                ::metrics::histogram!(names::DB_BATCH_SIZE).record(n as f64);
                self.refill();
                self.maybe_remove_spill();
                self.publish_queue_len();
                self.answer_flushes();
            }
            Err(e) => {
                StorageMetrics::add(&self.metrics.write_errors, 1);
                ::metrics::counter!(names::DB_WRITE_ERRORS_TOTAL).increment(1);
                self.failing_since.get_or_insert_with(Instant::now);
                warn!(
                    error = %e,
                    batch = n,
                    queued = self.queue.len(),
                    retry_in_ms = self.retry_delay.as_millis() as u64,
                    "transcript batch not written; keeping it and retrying"
                );
                self.retry_timer = Some(ctx.run_later(self.retry_delay, |act, ctx| {
                    act.retry_timer = None;
                    act.maybe_write(ctx);
                }));
                self.retry_delay = (self.retry_delay * 2).min(RETRY_MAX);
            }
        }
        self.maybe_write(ctx);
    }

    /// Completes every `Flush` whose finals are now all written.
    fn answer_flushes(&mut self) {
        let written = self.written + self.lost;
        let (done, pending): (Vec<_>, Vec<_>) = std::mem::take(&mut self.flush_waiters)
            .into_iter()
            .partition(|(target, _)| *target <= written);
        self.flush_waiters = pending;
        for (_, reply) in done {
            // The caller may have stopped waiting (its own timeout); nothing to do then.
            let _ = reply.send(Ok(()));
        }
    }

    fn publish_queue_len(&self) {
        StorageMetrics::set(&self.metrics.queue_len, self.queue.len() as u64);
        ::metrics::gauge!(names::DB_QUEUE_LEN).set(self.queue.len() as f64);
    }
}

/// The `database` span of one batch write (traces, docs/PROTOCOL.md#traces). Batches mix sessions, so it is a
/// root span; `session.slug` names the session when the batch holds only one.
fn batch_span(batch: &[FinalRecord]) -> tracing::Span {
    let first = batch.first().map(|r| r.session_slug.as_str());
    let single = first.filter(|slug| batch.iter().all(|r| r.session_slug == *slug));
    let sessions = batch
        .iter()
        .map(|r| r.session_slug.as_str())
        .collect::<std::collections::HashSet<_>>()
        .len();
    let span = tracing::info_span!(parent: None, "database", db.operation = "write_batch",
        db.batch.size = batch.len(), db.batch.sessions = sessions,
        session.slug = tracing::field::Empty, db.outcome = tracing::field::Empty);
    if let Some(slug) = single {
        span.record("session.slug", slug);
    }
    span
}

impl Actor for TranscriptBatcher {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        // A previous run's spilled finals come first.
        self.refill();
        self.publish_queue_len();
        self.maybe_write(ctx);
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        self.sync_spill();
        if !self.queue.is_empty() {
            error!(
                unwritten = self.queue.len(),
                "transcript batcher stopped with finals still queued (send Flush before stopping)"
            );
        }
    }
}

impl Handler<SaveFinal> for TranscriptBatcher {
    type Result = ();

    fn handle(&mut self, msg: SaveFinal, ctx: &mut Self::Context) -> Self::Result {
        if let Err(error) = self.high_water.record(&msg.0.session_slug, msg.0.seq) {
            // The final itself is still queued; only numbering after a restart without the
            // database depends on the mark.
            warn!(session = %msg.0.session_slug, %error, "cannot record the seq high-water mark");
        }
        self.enqueue(msg.0, ctx);
    }
}

/// How long numbering waits for the database before going on from the high-water mark: a
/// session must go live at once even while the database is down.
const LAST_SEQ_TIMEOUT: Duration = Duration::from_secs(2);

impl Handler<LoadLastSeq> for TranscriptBatcher {
    type Result = ResponseFuture<Result<i64, StorageError>>;

    /// `max(stored, high-water)`; the high-water mark alone when the database does not answer
    /// within [`LAST_SEQ_TIMEOUT`]. Answered after every `SaveFinal` already in this mailbox,
    /// so a session reopened while its finals wait starts after them.
    fn handle(&mut self, msg: LoadLastSeq, _: &mut Self::Context) -> Self::Result {
        let marked = self.high_water.get(&msg.session_slug);
        let Some(source) = self.last_seq_source.clone() else {
            return Box::pin(std::future::ready(Ok(marked)));
        };
        let slug = msg.session_slug.clone();
        Box::pin(async move {
            match tokio::time::timeout(LAST_SEQ_TIMEOUT, source.send(msg)).await {
                Ok(Ok(Ok(stored))) => Ok(stored.max(marked)),
                Ok(Ok(Err(error))) => {
                    warn!(session = %slug, %error, last_seq = marked, "database unavailable: numbering goes on from the local high-water mark");
                    Ok(marked)
                }
                Ok(Err(_)) | Err(_) => {
                    warn!(session = %slug, last_seq = marked, "database did not answer in time: numbering goes on from the local high-water mark");
                    Ok(marked)
                }
            }
        })
    }
}

impl Handler<Flush> for TranscriptBatcher {
    type Result = ResponseFuture<Result<(), StorageError>>;

    fn handle(&mut self, _: Flush, ctx: &mut Self::Context) -> Self::Result {
        if self.spilled_all {
            return Box::pin(async {
                Err(StorageError(
                    "the queue was moved to the spill file (SpillAll); nothing is written any more"
                        .to_owned(),
                ))
            });
        }
        let target = self.accepted;
        if self.written + self.lost >= target {
            return Box::pin(async { Ok(()) });
        }
        let (tx, rx) = oneshot::channel();
        self.flush_waiters.push((target, tx));
        // A pending flush makes whatever is queued due now, without waiting for size or delay.
        self.maybe_write(ctx);
        Box::pin(async move {
            rx.await.unwrap_or_else(|_| {
                Err(StorageError(
                    "transcript batcher stopped before the flush completed".to_owned(),
                ))
            })
        })
    }
}

impl Handler<SpillAll> for TranscriptBatcher {
    type Result = Result<usize, StorageError>;

    fn handle(&mut self, _: SpillAll, ctx: &mut Self::Context) -> Self::Result {
        let Some(spill) = self.spill.as_mut() else {
            return Err(StorageError("no spill file configured".to_owned()));
        };
        let front: Vec<FinalRecord> = self.queue.iter().map(|q| q.record.clone()).collect();
        spill.rewrite_with_front(&front).map_err(|e| {
            StorageError(format!(
                "cannot spill the queue to {}: {e}",
                spill.path().display()
            ))
        })?;
        let pending = spill.pending();
        let file = spill.path().display().to_string();
        if let Some(timer) = self.retry_timer.take() {
            ctx.cancel_future(timer);
        }
        if let Some(timer) = self.delay_timer.take() {
            ctx.cancel_future(timer);
        }
        self.queue.clear();
        self.queued_from_spill = 0;
        self.spilled_all = true;
        StorageMetrics::add(&self.metrics.finals_spilled, front.len() as u64);
        ::metrics::counter!(names::DB_FINALS_SPILLED_TOTAL).increment(front.len() as u64);
        StorageMetrics::set(&self.metrics.spill_pending, pending as u64);
        ::metrics::gauge!(names::DB_SPILL_PENDING).set(pending as f64);
        self.publish_queue_len();
        warn!(
            file = %file,
            moved_from_memory = front.len(),
            pending_in_file = pending,
            "database still unavailable at shutdown: unwritten finals saved to the spill file; they are replayed on the next start"
        );
        for (_, reply) in self.flush_waiters.drain(..) {
            let _ = reply.send(Err(StorageError(
                "finals moved to the spill file instead of the database".to_owned(),
            )));
        }
        Ok(pending)
    }
}
