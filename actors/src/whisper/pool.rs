//! A bounded pool of decode threads, off the actix arbiters.
//!
//! Jobs are finals (an utterance ended) or partials (a snapshot of the growing utterance).
//! Finals always run, oldest first, before any partial. A partial replaces the same session's
//! pending partial (only the newest snapshot matters), and when more partials wait than the
//! pool allows, the oldest is skipped: under load the service gives fewer partials, never
//! fewer finals. The one exception bounds memory: a stream with
//! [`MAX_WAITING_FINALS_PER_STREAM`] finals already waiting is sending audio faster than it can
//! be decoded (a publisher far ahead of real time), and its next final is skipped (the actor
//! then keeps the utterance's last partial as a provisional final, if it showed one).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// The speech recogniser behind the pool (the binary plugs in Whisper through CTranslate2).
pub trait Transcriber: Send + Sync + 'static {
    /// Transcribes up to 30 s of 16 kHz mono audio in [-1, 1].
    fn transcribe(&self, samples: &[f32]) -> Result<Decoded, String>;
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded {
    /// Trimmed; empty when no speech was heard.
    pub text: String,
    pub language: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobKind {
    Partial,
    Final,
}

/// What became of a job.
#[derive(Debug)]
pub enum JobOutcome {
    Done {
        result: Result<Decoded, String>,
        /// Time spent decoding (not waiting).
        decode: Duration,
        /// Time from submission to the end of decoding.
        latency: Duration,
    },
    /// A partial dropped because a newer one replaced it or the pool was saturated; or a final
    /// of a stream that already had [`MAX_WAITING_FINALS_PER_STREAM`] waiting.
    Skipped,
}

pub type Reply = Box<dyn FnOnce(JobOutcome) + Send>;

/// Finals of one stream that may wait for a thread: each holds up to 30 s of audio (1.9 MB),
/// and real-time speech ends an utterance every few seconds, far below this.
pub const MAX_WAITING_FINALS_PER_STREAM: usize = 16;

pub struct Job {
    pub kind: JobKind,
    /// The session stream submitting it: its pending partial is replaced by a newer one.
    pub stream: u64,
    pub samples: Arc<Vec<f32>>,
    pub reply: Reply,
}

struct Queued {
    job: Job,
    submitted: Instant,
}

#[derive(Default)]
struct Queue {
    finals: VecDeque<Queued>,
    partials: VecDeque<Queued>,
    stopping: bool,
}

/// Counters shown by the API.
#[derive(Debug, Default)]
pub struct PoolStats {
    pub decoded: AtomicU64,
    pub skipped_partials: AtomicU64,
    pub skipped_finals: AtomicU64,
    pub failed: AtomicU64,
}

struct Shared {
    queue: Mutex<Queue>,
    ready: Condvar,
    max_pending_partials: usize,
    stats: PoolStats,
}

pub struct DecodePool {
    shared: Arc<Shared>,
    workers: Vec<std::thread::JoinHandle<()>>,
}

impl DecodePool {
    /// `workers` threads share `transcriber`; at most `max_pending_partials` partials wait.
    pub fn new(
        transcriber: Arc<dyn Transcriber>,
        workers: usize,
        max_pending_partials: usize,
    ) -> DecodePool {
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue::default()),
            ready: Condvar::new(),
            max_pending_partials: max_pending_partials.max(1),
            stats: PoolStats::default(),
        });
        let workers = (0..workers.max(1))
            .map(|i| {
                let shared = shared.clone();
                let transcriber = transcriber.clone();
                std::thread::Builder::new()
                    .name(format!("whisper-decode-{i}"))
                    .spawn(move || work(&shared, &*transcriber))
                    .expect("spawn a decode thread")
            })
            .collect();
        DecodePool { shared, workers }
    }

    pub fn submit(&self, job: Job) {
        let mut skipped = Vec::new();
        let mut skipped_final = None;
        {
            let mut queue = lock(&self.shared.queue);
            let queued = Queued {
                job,
                submitted: Instant::now(),
            };
            match queued.job.kind {
                JobKind::Final => {
                    let stream = queued.job.stream;
                    let waiting = queue
                        .finals
                        .iter()
                        .filter(|q| q.job.stream == stream)
                        .count();
                    if waiting >= MAX_WAITING_FINALS_PER_STREAM {
                        skipped_final = Some(queued);
                    } else {
                        queue.finals.push_back(queued);
                    }
                }
                JobKind::Partial => {
                    let stream = queued.job.stream;
                    if let Some(i) = queue.partials.iter().position(|q| q.job.stream == stream) {
                        skipped.extend(queue.partials.remove(i));
                    }
                    queue.partials.push_back(queued);
                    while queue.partials.len() > self.shared.max_pending_partials {
                        skipped.extend(queue.partials.pop_front());
                    }
                }
            }
        }
        self.shared.ready.notify_one();
        self.shared
            .stats
            .skipped_partials
            .fetch_add(skipped.len() as u64, Ordering::Relaxed);
        ::metrics::counter!(crate::metrics::names::WHISPER_SKIPPED_PARTIALS_TOTAL)
            .increment(skipped.len() as u64);
        for q in skipped {
            (q.job.reply)(JobOutcome::Skipped);
        }
        if let Some(q) = skipped_final {
            self.shared
                .stats
                .skipped_finals
                .fetch_add(1, Ordering::Relaxed);
            ::metrics::counter!(crate::metrics::names::WHISPER_SKIPPED_FINALS_TOTAL).increment(1);
            tracing::warn!(
                stream = q.job.stream,
                "whisper: audio arrives faster than it can be decoded; an utterance was skipped"
            );
            (q.job.reply)(JobOutcome::Skipped);
        }
    }

    pub fn stats(&self) -> &PoolStats {
        &self.shared.stats
    }

    /// Jobs waiting for a thread: (finals, partials).
    pub fn pending(&self) -> (usize, usize) {
        let queue = lock(&self.shared.queue);
        (queue.finals.len(), queue.partials.len())
    }

    pub fn workers(&self) -> usize {
        self.workers.len()
    }
}

impl Drop for DecodePool {
    /// Pending jobs are still decoded; the threads end when the queue is empty.
    fn drop(&mut self) {
        lock(&self.shared.queue).stopping = true;
        self.shared.ready.notify_all();
        for worker in self.workers.drain(..) {
            let _ = worker.join();
        }
    }
}

fn lock(queue: &Mutex<Queue>) -> std::sync::MutexGuard<'_, Queue> {
    // A panicking reply callback must not take the pool down with it.
    queue
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn work(shared: &Shared, transcriber: &dyn Transcriber) {
    loop {
        let next = {
            let mut queue = lock(&shared.queue);
            loop {
                if let Some(job) = queue.finals.pop_front() {
                    break Some(job);
                }
                if let Some(job) = queue.partials.pop_front() {
                    break Some(job);
                }
                if queue.stopping {
                    break None;
                }
                queue = shared
                    .ready
                    .wait(queue)
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
            }
        };
        let Some(Queued { job, submitted }) = next else {
            return;
        };
        let started = Instant::now();
        let result = transcriber.transcribe(&job.samples);
        let decode = started.elapsed();
        let counter = if result.is_ok() {
            &shared.stats.decoded
        } else {
            &shared.stats.failed
        };
        counter.fetch_add(1, Ordering::Relaxed);
        (job.reply)(JobOutcome::Done {
            result,
            decode,
            latency: submitted.elapsed(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    /// Blocks each decode until the test lets it go; the text is the clip's length.
    struct Gate {
        started: Mutex<mpsc::Sender<usize>>,
        release: Mutex<mpsc::Receiver<()>>,
    }

    impl Transcriber for Gate {
        fn transcribe(&self, samples: &[f32]) -> Result<Decoded, String> {
            let _ = self.started.lock().unwrap().send(samples.len());
            let _ = self.release.lock().unwrap().recv();
            Ok(Decoded {
                text: samples.len().to_string(),
                language: None,
            })
        }
    }

    fn job(kind: JobKind, stream: u64, len: usize, out: &mpsc::Sender<(usize, String)>) -> Job {
        let out = out.clone();
        Job {
            kind,
            stream,
            samples: Arc::new(vec![0.0; len]),
            reply: Box::new(move |outcome| {
                let text = match outcome {
                    JobOutcome::Done { result, .. } => result.unwrap().text,
                    JobOutcome::Skipped => "skipped".to_owned(),
                };
                let _ = out.send((len, text));
            }),
        }
    }

    #[test]
    fn saturation_skips_the_oldest_partial_and_never_a_final() {
        let (started_tx, started) = mpsc::channel();
        let (release, release_rx) = mpsc::channel();
        let gate = Arc::new(Gate {
            started: Mutex::new(started_tx),
            release: Mutex::new(release_rx),
        });
        let pool = DecodePool::new(gate, 1, 2);
        let (out, results) = mpsc::channel();

        // The one thread is busy with a partial of stream 1.
        pool.submit(job(JobKind::Partial, 1, 10, &out));
        assert_eq!(started.recv().unwrap(), 10);
        // Queued meanwhile: partials of streams 2, 3, 4 and finals of 2 and 3.
        pool.submit(job(JobKind::Partial, 2, 20, &out));
        pool.submit(job(JobKind::Final, 2, 21, &out));
        pool.submit(job(JobKind::Partial, 3, 30, &out));
        pool.submit(job(JobKind::Final, 3, 31, &out));
        pool.submit(job(JobKind::Partial, 4, 40, &out));
        // Three partials for two places: the oldest (stream 2's) is skipped at once.
        assert_eq!(results.recv().unwrap(), (20, "skipped".to_owned()));
        // A newer partial of stream 3 replaces its pending one.
        pool.submit(job(JobKind::Partial, 3, 32, &out));
        assert_eq!(results.recv().unwrap(), (30, "skipped".to_owned()));
        assert_eq!(pool.pending(), (2, 2));

        // Let everything run: the running partial, then both finals in order, then partials.
        for _ in 0..5 {
            release.send(()).unwrap();
        }
        let order: Vec<(usize, String)> = (0..5).map(|_| results.recv().unwrap()).collect();
        let lens: Vec<usize> = order.iter().map(|(l, _)| *l).collect();
        assert_eq!(lens, vec![10, 21, 31, 40, 32]);
        assert!(order.iter().all(|(l, t)| *t == l.to_string()));
        assert_eq!(pool.stats().skipped_partials.load(Ordering::Relaxed), 2);
        assert_eq!(pool.stats().decoded.load(Ordering::Relaxed), 5);
        let _ = started;
    }

    #[test]
    fn finals_are_never_dropped_however_many_wait() {
        struct Echo;
        impl Transcriber for Echo {
            fn transcribe(&self, samples: &[f32]) -> Result<Decoded, String> {
                std::thread::sleep(Duration::from_millis(1));
                Ok(Decoded {
                    text: samples.len().to_string(),
                    language: None,
                })
            }
        }
        let pool = DecodePool::new(Arc::new(Echo), 2, 1);
        let (out, results) = mpsc::channel();
        // Three streams, each within its bound of waiting finals.
        let n = 3 * MAX_WAITING_FINALS_PER_STREAM as u64;
        for i in 0..n {
            pool.submit(job(JobKind::Final, i % 3, i as usize + 1, &out));
            pool.submit(job(JobKind::Partial, i % 3, 1000 + i as usize, &out));
        }
        drop(pool); // drains the queue before the threads end
        drop(out);
        let all: Vec<(usize, String)> = results.iter().collect();
        let finals: Vec<&(usize, String)> = all.iter().filter(|(l, _)| *l <= n as usize).collect();
        assert_eq!(finals.len(), n as usize);
        assert!(finals.iter().all(|(l, t)| *t == l.to_string()));
        assert_eq!(all.len(), 2 * n as usize, "every job got exactly one reply");
    }

    #[test]
    fn a_stream_far_ahead_of_real_time_has_its_waiting_finals_bounded() {
        let (started_tx, started) = mpsc::channel();
        let (release, release_rx) = mpsc::channel();
        let gate = Arc::new(Gate {
            started: Mutex::new(started_tx),
            release: Mutex::new(release_rx),
        });
        let pool = DecodePool::new(gate, 1, 2);
        let (out, results) = mpsc::channel();
        // The thread is busy; stream 7 then ends utterances far faster than they decode.
        pool.submit(job(JobKind::Final, 7, 1, &out));
        assert_eq!(started.recv().unwrap(), 1);
        for len in 2..=MAX_WAITING_FINALS_PER_STREAM + 1 {
            pool.submit(job(JobKind::Final, 7, len, &out));
        }
        // Another stream is not held to stream 7's bound.
        pool.submit(job(JobKind::Final, 8, 500, &out));
        assert_eq!(pool.pending(), (MAX_WAITING_FINALS_PER_STREAM + 1, 0));
        // One more of stream 7: skipped at once, nothing more held.
        pool.submit(job(JobKind::Final, 7, 999, &out));
        assert_eq!(results.recv().unwrap(), (999, "skipped".to_owned()));
        assert_eq!(pool.pending(), (MAX_WAITING_FINALS_PER_STREAM + 1, 0));
        assert_eq!(pool.stats().skipped_finals.load(Ordering::Relaxed), 1);
        for _ in 0..MAX_WAITING_FINALS_PER_STREAM + 2 {
            release.send(()).unwrap();
        }
        drop(pool);
    }
}
