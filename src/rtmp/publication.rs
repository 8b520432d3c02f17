//! An accepted publish: forwards audio to the session's ingest actor without ever blocking the
//! read loop, and guarantees exactly one `DetachPublisher`.

use std::time::{Duration, Instant};

use ::actors::messages::{AudioTagReceived, DetachPublisher, PublishHandle, PublisherId};
use actix::prelude::SendError;
use actix::Recipient;
use bytes::Bytes;

/// At most one "audio dropped" warning per publish in this interval: a wedged ingest actor at
/// ~45 messages a second must not flood the log.
const DROP_LOG_INTERVAL: Duration = Duration::from_secs(5);

/// The ingest side is gone (its actor stopped); the publish cannot continue.
#[derive(Debug, thiserror::Error)]
#[error("ingest actor mailbox closed")]
pub(crate) struct IngestGone;

/// Sends `DetachPublisher` exactly once: explicitly through [`DetachGuard::finish`], or from
/// `Drop` when the connection task ends any other way (error path, panic unwinding, runtime
/// shutdown), so the registry never keeps a ghost publisher.
pub(crate) struct DetachGuard {
    pending: Option<(Recipient<DetachPublisher>, PublisherId)>,
}

impl DetachGuard {
    pub(crate) fn new(detach: Recipient<DetachPublisher>, publisher: PublisherId) -> Self {
        Self {
            pending: Some((detach, publisher)),
        }
    }

    /// Sends the detach if it has not been sent yet; later calls do nothing.
    pub(crate) fn finish(&mut self, reason: &str) {
        if let Some((detach, publisher)) = self.pending.take() {
            // `do_send` ignores mailbox capacity: the end of a publish must not be dropped.
            detach.do_send(DetachPublisher {
                publisher,
                reason: reason.to_string(),
            });
        }
    }
}

impl Drop for DetachGuard {
    fn drop(&mut self) {
        self.finish("connection task ended while publishing");
    }
}

/// State of one accepted publish on a connection.
pub(crate) struct Publication {
    pub slug: String,
    pub publisher: PublisherId,
    audio: Recipient<AudioTagReceived>,
    replaced: Option<tokio::sync::oneshot::Receiver<()>>,
    guard: DetachGuard,
    pub started: Instant,
    pub audio_messages: u64,
    pub audio_bytes: u64,
    pub dropped: u64,
    drops_since_log: u64,
    last_drop_log: Option<Instant>,
}

impl Publication {
    pub(crate) fn new(slug: String, publisher: PublisherId, handle: PublishHandle) -> Self {
        Self {
            slug,
            publisher,
            audio: handle.audio,
            replaced: handle.replaced,
            guard: DetachGuard::new(handle.detach, publisher),
            started: Instant::now(),
            audio_messages: 0,
            audio_bytes: 0,
            dropped: 0,
            drops_since_log: 0,
            last_drop_log: None,
        }
    }

    /// Hands one FLV audio payload to the ingest actor. A full mailbox drops the tag (counted,
    /// logged at most every [`DROP_LOG_INTERVAL`]): the RTMP read loop must keep reading.
    pub(crate) fn forward_audio(
        &mut self,
        timestamp_ms: u32,
        payload: Bytes,
        peer: &str,
    ) -> Result<(), IngestGone> {
        self.audio_messages += 1;
        self.audio_bytes += payload.len() as u64;
        let message = AudioTagReceived {
            publisher: self.publisher,
            timestamp_ms,
            payload,
        };
        match self.audio.try_send(message) {
            Ok(()) => Ok(()),
            Err(SendError::Full(_)) => {
                self.dropped += 1;
                self.drops_since_log += 1;
                let due = self
                    .last_drop_log
                    .is_none_or(|at| at.elapsed() >= DROP_LOG_INTERVAL);
                if due {
                    tracing::warn!(
                        peer,
                        slug = %self.slug,
                        publisher = %self.publisher,
                        dropped = self.drops_since_log,
                        dropped_total = self.dropped,
                        "rtmp audio dropped: ingest mailbox full"
                    );
                    self.drops_since_log = 0;
                    self.last_drop_log = Some(Instant::now());
                }
                Ok(())
            }
            Err(SendError::Closed(_)) => Err(IngestGone),
        }
    }

    /// Completes when a newer publish of the same key replaced this one; never otherwise.
    pub(crate) async fn replaced(&mut self) {
        if let Some(signal) = self.replaced.as_mut() {
            let replaced = signal.await.is_ok();
            // A finished oneshot must not be polled again.
            self.replaced = None;
            if replaced {
                return;
            }
        }
        std::future::pending::<()>().await
    }

    /// Ends the publish: sends `DetachPublisher` (once) with `reason`.
    pub(crate) fn finish(mut self, reason: &str) {
        self.guard.finish(reason);
    }
}
