//! `TranscriptBatcher`: takes finals off the hot path, writes them in batches, and keeps
//! them through database outages (SPEC §2 `TRANSCRIPT_BATCH_*`, §7).
//!
//! The queue is the single source of truth: a batch is the first `n` queued finals, and it
//! leaves the queue only once the database has committed it. A failed write therefore leaves
//! the same finals, in the same order, at the front, and the next attempt retries them (the
//! upsert makes a retry of a batch that did commit after all harmless).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ::actors::persistence::{FinalRecord, SaveFinal, StorageError};
use actix::prelude::*;
use tokio::sync::oneshot;
use tracing::{error, info, warn};

use super::executor::WriteFinals;
use super::metrics::StorageMetrics;

/// First retry delay after a failed write; doubles per failure up to [`RETRY_MAX`].
const RETRY_INITIAL: Duration = Duration::from_millis(100);
/// Retry ceiling: a recovered database is picked up within 5 s without hammering a down one.
const RETRY_MAX: Duration = Duration::from_secs(5);
/// During a long outage, log one overflow line per this many lost finals, not one each.
const OVERFLOW_LOG_EVERY: u64 = 1000;

/// When a batch is written, and how much may wait in memory.
#[derive(Debug, Clone, Copy)]
pub struct BatcherConfig {
    /// Write as soon as this many finals are queued (`TRANSCRIPT_BATCH_SIZE`).
    pub batch_size: usize,
    /// Write at the latest this long after the oldest queued final arrived
    /// (`TRANSCRIPT_BATCH_DELAY_MS`).
    pub batch_delay: Duration,
    /// Finals kept in memory while the database is away. At roughly 300 bytes each the default
    /// is ~30 MB: hours of speech for dozens of meetings, yet bounded.
    pub max_queued: usize,
}

impl Default for BatcherConfig {
    fn default() -> Self {
        Self {
            batch_size: 50,
            batch_delay: Duration::from_millis(2000),
            max_queued: 100_000,
        }
    }
}

/// Completes once every final queued before it has been written. Used by graceful shutdown
/// and tests. It waits through an outage (the finals are still retried), so callers that
/// must not hang wrap it in a timeout. `Err` only if the batcher stops first.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "Result<(), StorageError>")]
pub struct Flush;

struct Queued {
    record: FinalRecord,
    queued_at: Instant,
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
    /// Finals ever accepted into / written out of the queue: `Flush` waits for
    /// `written >= accepted-at-the-time-of-the-flush`.
    accepted: u64,
    written: u64,
    flush_waiters: Vec<(u64, oneshot::Sender<Result<(), StorageError>>)>,
    /// When the current run of failed writes began, to log the outage's end.
    failing_since: Option<Instant>,
    /// Finals lost to a full queue, to rate-limit the log line.
    overflowed: u64,
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
            flush_waiters: Vec::new(),
            failing_since: None,
            overflowed: 0,
        }
    }

    fn enqueue(&mut self, record: FinalRecord, ctx: &mut Context<Self>) {
        if self.queue.len() >= self.config.max_queued {
            // TODO(issue 4): spill to a local append-only file here instead of dropping, and
            // replay it once the database is back. Until then a full queue loses the final.
            self.overflowed += 1;
            StorageMetrics::add(&self.metrics.finals_overflowed, 1);
            if (self.overflowed - 1).is_multiple_of(OVERFLOW_LOG_EVERY) {
                error!(
                    session = %record.session_slug,
                    seq = record.seq,
                    max_queued = self.config.max_queued,
                    lost_so_far = self.overflowed,
                    "transcript queue full while the database is unavailable; final not persisted"
                );
            }
            return;
        }
        self.queue.push_back(Queued {
            record,
            queued_at: Instant::now(),
        });
        self.accepted += 1;
        self.publish_queue_len();
        self.maybe_write(ctx);
    }

    /// Starts a write if one is due and none is in flight or backing off.
    fn maybe_write(&mut self, ctx: &mut Context<Self>) {
        if self.writing || self.retry_timer.is_some() {
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
        match result {
            Ok(_) => {
                self.queue.drain(..n);
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
                self.publish_queue_len();
                self.answer_flushes();
            }
            Err(e) => {
                StorageMetrics::add(&self.metrics.write_errors, 1);
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
        let written = self.written;
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
    }
}

/// The `database` span of one batch write (traces, SPEC §7). Batches mix sessions, so it is a
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

    fn stopped(&mut self, _: &mut Self::Context) {
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
        self.enqueue(msg.0, ctx);
    }
}

impl Handler<Flush> for TranscriptBatcher {
    type Result = ResponseFuture<Result<(), StorageError>>;

    fn handle(&mut self, _: Flush, ctx: &mut Self::Context) -> Self::Result {
        let target = self.accepted;
        if self.written >= target {
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
