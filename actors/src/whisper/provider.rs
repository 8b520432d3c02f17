//! [`WhisperProvider`]: what every whisper session shares — the decode pool, the settings,
//! the admission count — and the start-up [`measure`]ment of how many sessions this machine
//! serves in real time.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::metrics::names::WHISPER_REFUSED_SESSIONS_TOTAL;

use super::pool::{DecodePool, Transcriber};
use super::vad::VadConfig;

/// How the provider segments and decodes.
#[derive(Debug, Clone)]
pub struct WhisperSettings {
    pub vad: VadConfig,
    /// A partial every this much of a growing utterance's audio.
    pub partial_period: Duration,
    /// The model's name, for logs and the API.
    pub model: String,
}

/// What start-up measured on this machine (see [`measure`]).
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Measurement {
    /// Wall time of one decode with every worker busy, in ms.
    pub decode_ms: u64,
    /// Decodes per second the pool completes with every worker busy.
    pub decodes_per_sec: f64,
    /// Sessions served in real time: each needs one decode per partial period, with 20 %
    /// headroom. At least 1.
    pub realtime_sessions: usize,
}

/// One decode per `partial_period` per session (a partial, or the final that ends the
/// utterance), 20 % of the pool's throughput kept in reserve.
const HEADROOM: f64 = 0.8;

/// Times `rounds` decodes on every worker at once, after a warm-up decode, on `clip`.
pub fn measure(
    transcriber: &Arc<dyn Transcriber>,
    workers: usize,
    partial_period: Duration,
    clip: &[f32],
    rounds: usize,
) -> Result<Measurement, String> {
    transcriber.transcribe(clip)?;
    let workers = workers.max(1);
    let rounds = rounds.max(1);
    let started = Instant::now();
    let results: Vec<Result<Duration, String>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                scope.spawn(|| {
                    let mut total = Duration::ZERO;
                    for _ in 0..rounds {
                        let t = Instant::now();
                        transcriber.transcribe(clip)?;
                        total += t.elapsed();
                    }
                    Ok(total)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err("decode panicked".into())))
            .collect()
    });
    let elapsed = started.elapsed().as_secs_f64().max(1e-6);
    let mut busy = Duration::ZERO;
    for r in results {
        busy += r?;
    }
    let decodes = (workers * rounds) as f64;
    let decodes_per_sec = decodes / elapsed;
    let realtime = (decodes_per_sec * partial_period.as_secs_f64() * HEADROOM).floor() as usize;
    Ok(Measurement {
        decode_ms: (busy.as_secs_f64() * 1000.0 / decodes) as u64,
        decodes_per_sec,
        realtime_sessions: realtime.max(1),
    })
}

/// The whisper provider of the whole service.
pub struct WhisperProvider {
    // The stream actor (`super::actor`) submits to the pool and reads the settings.
    pub(super) pool: DecodePool,
    pub(super) settings: WhisperSettings,
    measurement: Measurement,
    /// Sessions admitted at once: the measured number, unless configured.
    capacity: usize,
    capacity_measured: bool,
    active: AtomicUsize,
    /// Numbers the streams, for the pool's per-stream partial replacement.
    pub(super) streams: AtomicU64,
    refused: AtomicU64,
}

/// What `GET /api/sessions` shows about the provider.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WhisperStatus {
    pub model: String,
    /// Concurrent whisper sessions this instance admits.
    pub capacity: usize,
    /// True when `capacity` is the measured one (not `WHISPER_MAX_SESSIONS`).
    pub capacity_measured: bool,
    pub active_sessions: usize,
    pub refused_sessions: u64,
    pub measured: Measurement,
    pub decode_workers: usize,
    pub partial_period_ms: u64,
    pub decodes: u64,
    pub skipped_partials: u64,
    pub failed_decodes: u64,
}

/// One admitted session's place; given back when dropped.
pub struct Admission {
    provider: Arc<WhisperProvider>,
}

impl Drop for Admission {
    fn drop(&mut self) {
        self.provider.active.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Why a session was not admitted.
#[derive(Debug, Clone, thiserror::Error)]
#[error("speech-to-text capacity reached: this machine transcribes at most {capacity} whisper session(s) in real time and all are in use")]
pub struct CapacityReached {
    pub capacity: usize,
}

impl WhisperProvider {
    /// `capacity`: `None` admits the measured number of sessions.
    pub fn new(
        transcriber: Arc<dyn Transcriber>,
        workers: usize,
        settings: WhisperSettings,
        measurement: Measurement,
        capacity: Option<usize>,
    ) -> WhisperProvider {
        let workers = workers.max(1);
        WhisperProvider {
            // Beyond one waiting partial per worker, partials would only age in the queue.
            pool: DecodePool::new(transcriber, workers, workers),
            capacity: capacity.unwrap_or(measurement.realtime_sessions),
            capacity_measured: capacity.is_none(),
            settings,
            measurement,
            active: AtomicUsize::new(0),
            streams: AtomicU64::new(0),
            refused: AtomicU64::new(0),
        }
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// A place for one more session, if the machine has one.
    pub fn admit(self: &Arc<Self>) -> Result<Admission, CapacityReached> {
        let taken = self
            .active
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.capacity).then_some(n + 1)
            });
        match taken {
            Ok(_) => Ok(Admission {
                provider: self.clone(),
            }),
            Err(_) => {
                self.refused.fetch_add(1, Ordering::Relaxed);
                ::metrics::counter!(WHISPER_REFUSED_SESSIONS_TOTAL).increment(1);
                Err(CapacityReached {
                    capacity: self.capacity,
                })
            }
        }
    }

    /// True when a session could be admitted now.
    pub fn has_room(&self) -> bool {
        self.active.load(Ordering::Acquire) < self.capacity
    }

    pub fn status(&self) -> WhisperStatus {
        let stats = self.pool.stats();
        WhisperStatus {
            model: self.settings.model.clone(),
            capacity: self.capacity,
            capacity_measured: self.capacity_measured,
            active_sessions: self.active.load(Ordering::Acquire),
            refused_sessions: self.refused.load(Ordering::Relaxed),
            measured: self.measurement.clone(),
            decode_workers: self.pool.workers(),
            partial_period_ms: self.settings.partial_period.as_millis() as u64,
            decodes: stats.decoded.load(Ordering::Relaxed),
            skipped_partials: stats.skipped_partials.load(Ordering::Relaxed),
            failed_decodes: stats.failed.load(Ordering::Relaxed),
        }
    }
}
