//! `IngestActor`: one session's audio, from FLV audio tags to provider-sized PCM chunks.
//!
//! It owns the GStreamer decode pipeline, which has no thread of its own: a frame is decoded
//! inside `push_frame`, on this actor's session thread (one per core), and the decoder's
//! callback only leaves its events in a list that this actor takes right after the call.
//! So a session costs no thread, and PCM reaches the chunker without crossing one.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix::prelude::*;
use pipelines::{
    parse_audio_tag, AudioSpecificConfig, AudioTag, DecodePipeline, DecoderEvent, PcmChunker,
    Timing, MAX_TIMESTAMP_STEP_MS,
};

use crate::messages::PcmChunk;
use crate::messages::{AudioTagReceived, DetachPublisher, PublisherId};
use crate::metrics::names::{
    INGEST_AUDIO_BYTES_TOTAL, INGEST_DECODER_RESTARTS_TOTAL, INGEST_PCM_BYTES_TOTAL,
};

/// First wait before rebuilding a failed decoder; doubles per consecutive failure.
const RESTART_BACKOFF_INITIAL: Duration = Duration::from_millis(100);
const RESTART_BACKOFF_MAX: Duration = Duration::from_secs(5);
/// A decoder that produced this much PCM (5 s) counts as healthy again: its failure streak
/// starts over.
const HEALTHY_PCM_BYTES: u64 = 5 * 32_000;

/// Sent by the supervisor: this publisher is now the session's source (a previous one, if
/// any, is replaced: egress reconnects to the same key at once).
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "()")]
pub struct UsePublisher(pub PublisherId);

/// Sent by the supervisor: where PCM goes from now on (a new provider stream after a stop).
#[derive(Message, Clone)]
#[rtype(result = "()")]
pub struct UseProvider(pub Option<Recipient<PcmChunk>>);

/// Stop decoding: drain what is in the pipeline, hand it on, then report `IngestDrained`.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "()")]
pub struct DrainIngest;

/// Reported to the supervisor. `Drained` is sent after the last PCM chunk went to the
/// provider's mailbox, so the supervisor's `EndOfAudio` arrives after it (mailboxes are FIFO).
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub enum IngestReport {
    /// The publisher left and its audio has been decoded and handed to the provider.
    Drained {
        publisher: Option<PublisherId>,
        reason: String,
    },
    /// The decoder failed and is being rebuilt; the detail says why.
    DecoderError(String),
    /// The decoder failed more times in a row than allowed: this publisher's audio is not
    /// decoded any more (a new publish or AAC configuration tries again).
    DecoderFailed(String),
}

#[derive(Default, Debug, Clone, Copy)]
pub struct IngestCounters {
    pub audio_tags: u64,
    pub audio_bytes: u64,
    pub pcm_bytes: u64,
    pub dropped_tags: u64,
    pub dropped_pcm_chunks: u64,
    pub decoder_starts: u64,
    /// Frames whose RTMP timestamp went backwards or jumped beyond
    /// `pipelines::MAX_TIMESTAMP_STEP_MS` (handled: stream time moved one frame on).
    pub timestamp_discontinuities: u64,
}

#[derive(Message)]
#[rtype(result = "IngestCounters")]
pub struct GetIngestCounters;

/// Where the decoder's callback leaves its events. The callback runs inside `push_frame` and
/// `finish`, on this actor's thread, so the list holds one call's output and is never
/// contended; the mutex is only what the callback's `Send + Sync` bound asks for.
#[derive(Default, Clone)]
struct DecoderEvents(Arc<Mutex<Vec<DecoderEvent>>>);

impl DecoderEvents {
    fn push(&self, event: DecoderEvent) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).push(event);
    }

    fn take(&self) -> Vec<DecoderEvent> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

enum DecoderState {
    /// No AAC sequence header yet.
    NotConfigured,
    Running {
        pipeline: DecodePipeline,
        config: AudioSpecificConfig,
        events: DecoderEvents,
    },
    /// The pipeline failed; a rebuild from `config` is due after a back-off. Frames that
    /// arrive meanwhile are dropped (counted).
    Restarting { config: AudioSpecificConfig },
    /// Too many failures in a row: frames are dropped until a new publisher or configuration.
    Failed { config: AudioSpecificConfig },
}

pub struct IngestActor {
    session_slug: String,
    publisher: Option<PublisherId>,
    decoder: DecoderState,
    generation: u64,
    chunker: PcmChunker,
    flush_interval: Duration,
    provider: Option<Recipient<PcmChunk>>,
    report: Recipient<IngestReport>,
    counters: IngestCounters,
    /// `ingest.audio_bytes_total` and `ingest.pcm_bytes_total`, looked up once: every audio
    /// tag and decoded buffer adds to them.
    audio_bytes_total: ::metrics::Counter,
    pcm_bytes_total: ::metrics::Counter,
    /// Rebuilds allowed after consecutive decoder failures (`DECODER_MAX_RESTARTS`).
    max_restarts: u32,
    failures_in_a_row: u32,
    /// Whether this publisher's first timestamp discontinuity has been logged; later ones
    /// are only counted (a broken publisher could jump on every frame).
    discontinuity_logged: bool,
    /// PCM out of the current pipeline: enough of it clears the failure streak.
    pcm_since_start: u64,
    /// The session's span, parent of one `decode` span per decoder pipeline.
    span: tracing::Span,
    decode_span: Option<tracing::Span>,
}

impl IngestActor {
    pub fn new(
        session_slug: String,
        chunk_ms: u32,
        flush_ms: u32,
        max_restarts: u32,
        report: Recipient<IngestReport>,
    ) -> Self {
        IngestActor {
            session_slug,
            publisher: None,
            decoder: DecoderState::NotConfigured,
            generation: 0,
            chunker: PcmChunker::new(chunk_ms, flush_ms),
            flush_interval: Duration::from_millis(u64::from(flush_ms.max(1))),
            provider: None,
            report,
            counters: IngestCounters::default(),
            audio_bytes_total: ::metrics::counter!(INGEST_AUDIO_BYTES_TOTAL),
            pcm_bytes_total: ::metrics::counter!(INGEST_PCM_BYTES_TOTAL),
            max_restarts,
            failures_in_a_row: 0,
            discontinuity_logged: false,
            pcm_since_start: 0,
            span: tracing::Span::none(),
            decode_span: None,
        }
    }

    /// Traces each decoder pipeline as a `decode` child of `session_span`.
    pub fn traced(mut self, session_span: tracing::Span) -> Self {
        self.span = session_span;
        self
    }

    /// Ends the current `decode` span, recording how it ended.
    fn end_decode_span(&mut self, outcome: &str) {
        if let Some(span) = self.decode_span.take() {
            span.record("decode.pcm_bytes", self.pcm_since_start);
            span.record("decode.outcome", outcome);
        }
    }

    fn forward(&mut self, chunk: bytes::Bytes) {
        let Some(provider) = &self.provider else {
            return;
        };
        if provider.try_send(PcmChunk { pcm: chunk }).is_err() {
            self.counters.dropped_pcm_chunks += 1;
            if self.counters.dropped_pcm_chunks.is_power_of_two() {
                tracing::warn!(session = %self.session_slug, dropped = self.counters.dropped_pcm_chunks, "provider mailbox full: PCM chunk dropped");
            }
        }
    }

    fn start_decoder(&mut self, config: AudioSpecificConfig) {
        self.generation += 1;
        let generation = self.generation;
        let events = DecoderEvents::default();
        let on_event = {
            let events = events.clone();
            move |event: DecoderEvent| events.push(event)
        };
        match DecodePipeline::start(&config, on_event) {
            Ok(pipeline) => {
                self.end_decode_span("replaced");
                self.decode_span = Some(tracing::info_span!(parent: &self.span, "decode",
                    session.slug = %self.session_slug, decode.generation = generation,
                    decode.restart = self.failures_in_a_row, audio.sample_rate = config.sample_rate,
                    audio.channels = config.channels, decode.pcm_bytes = tracing::field::Empty,
                    decode.outcome = tracing::field::Empty));
                self.counters.decoder_starts += 1;
                self.pcm_since_start = 0;
                tracing::info!(session = %self.session_slug, rate = config.sample_rate, channels = config.channels, "decoder started");
                self.decoder = DecoderState::Running {
                    pipeline,
                    config,
                    events,
                };
            }
            Err(error) => {
                tracing::error!(session = %self.session_slug, %error, "decoder failed to start");
                self.decoder = DecoderState::NotConfigured;
                self.report
                    .do_send(IngestReport::DecoderError(error.to_string()));
            }
        }
    }

    /// A frame's RTMP timestamp did not follow the previous one (docs/PROTOCOL.md#accepted-streams):
    /// already handled by the decoder's clock; counted, and the publisher's first one logged.
    fn on_discontinuity(&mut self, previous_ms: u32, timestamp_ms: u32) {
        self.counters.timestamp_discontinuities += 1;
        if self.discontinuity_logged {
            tracing::debug!(session = %self.session_slug, previous_ms, timestamp_ms, "rtmp timestamp discontinuity");
            return;
        }
        self.discontinuity_logged = true;
        tracing::info!(
            session = %self.session_slug,
            publisher = ?self.publisher,
            previous_ms,
            timestamp_ms,
            max_step_ms = MAX_TIMESTAMP_STEP_MS,
            "rtmp timestamp went backwards or jumped: stream time moves one frame on (later ones of this publish are only counted)"
        );
    }

    /// Ends the current stream: the decoder, if there is one, hands on what it holds (in
    /// this call: it runs in this thread), then the rest of the chunker goes and the
    /// supervisor hears `Drained`.
    fn drain(&mut self, reason: String) {
        let leaving = self.publisher.take();
        if let DecoderState::Running {
            pipeline, events, ..
        } = std::mem::replace(&mut self.decoder, DecoderState::NotConfigured)
        {
            pipeline.finish();
            for event in events.take() {
                match event {
                    DecoderEvent::Pcm(pcm) => self.take_pcm(&pcm),
                    DecoderEvent::Finished => {}
                    DecoderEvent::Error(error) => {
                        tracing::error!(session = %self.session_slug, %error, "decoder error while draining");
                    }
                }
            }
        }
        self.drained(reason, leaving);
    }

    /// Decoded PCM: counted, and cut into the provider's chunks.
    fn take_pcm(&mut self, pcm: &[u8]) {
        self.counters.pcm_bytes += pcm.len() as u64;
        self.pcm_bytes_total.increment(pcm.len() as u64);
        self.pcm_since_start += pcm.len() as u64;
        if self.pcm_since_start >= HEALTHY_PCM_BYTES {
            self.failures_in_a_row = 0;
        }
        for chunk in self.chunker.push(pcm, Instant::now()) {
            self.forward(chunk);
        }
    }

    /// What the running decoder reported during one `push_frame`.
    fn on_decoded(&mut self, events: Vec<DecoderEvent>, ctx: &mut Context<Self>) {
        for event in events {
            match event {
                DecoderEvent::Pcm(pcm) => self.take_pcm(&pcm),
                // Only `finish` ends a stream, and `drain` reads its events itself.
                DecoderEvent::Finished => {}
                DecoderEvent::Error(error) => {
                    tracing::error!(session = %self.session_slug, %error, "decoder error");
                    if let DecoderState::Running { config, .. } =
                        std::mem::replace(&mut self.decoder, DecoderState::NotConfigured)
                    {
                        // Rebuild from the stored configuration so the next frames decode;
                        // bounded so a publisher sending only garbage cannot spin us.
                        self.restart_decoder(config, error, ctx);
                    }
                }
            }
        }
    }

    /// The pipeline failed: rebuild it from the stored configuration after a back-off, or,
    /// after too many failures in a row, give up on this publisher's audio and say so.
    fn restart_decoder(
        &mut self,
        config: AudioSpecificConfig,
        error: String,
        ctx: &mut Context<Self>,
    ) {
        self.end_decode_span("failed");
        if self.failures_in_a_row >= self.max_restarts {
            let why = format!(
                "audio decoder failed {} times in a row (last: {error})",
                self.failures_in_a_row + 1
            );
            tracing::error!(session = %self.session_slug, %why, "giving up on this publisher's audio");
            self.decoder = DecoderState::Failed { config };
            self.report.do_send(IngestReport::DecoderFailed(why));
            return;
        }
        self.report.do_send(IngestReport::DecoderError(error));
        self.failures_in_a_row += 1;
        ::metrics::counter!(INGEST_DECODER_RESTARTS_TOTAL).increment(1);
        let delay = RESTART_BACKOFF_INITIAL
            .saturating_mul(1 << (self.failures_in_a_row - 1).min(16))
            .min(RESTART_BACKOFF_MAX);
        tracing::warn!(session = %self.session_slug, attempt = self.failures_in_a_row, delay_ms = delay.as_millis() as u64, "rebuilding the decoder");
        self.decoder = DecoderState::Restarting { config };
        ctx.run_later(delay, |act, _| {
            // Only if nothing else (a drain, a new configuration) happened meanwhile.
            if matches!(act.decoder, DecoderState::Restarting { .. }) {
                if let DecoderState::Restarting { config } =
                    std::mem::replace(&mut act.decoder, DecoderState::NotConfigured)
                {
                    act.start_decoder(config);
                }
            }
        });
    }

    fn drained(&mut self, reason: String, leaving: Option<PublisherId>) {
        self.end_decode_span("drained");
        if let Some(rest) = self.chunker.flush_all() {
            self.forward(rest);
        }
        self.report.do_send(IngestReport::Drained {
            publisher: leaving,
            reason,
        });
    }
}

impl Actor for IngestActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        // ~43 AAC frames per second arrive; 1024 is ~20 s of slack before a tag is dropped.
        ctx.set_mailbox_capacity(1024);
        ctx.run_interval(self.flush_interval / 2, |act, _| {
            if let Some(chunk) = act.chunker.flush_due(Instant::now()) {
                act.forward(chunk);
            }
        });
    }
}

impl Handler<UsePublisher> for IngestActor {
    type Result = ();

    fn handle(&mut self, UsePublisher(publisher): UsePublisher, _: &mut Self::Context) {
        if let Some(old) = self.publisher.replace(publisher) {
            tracing::info!(session = %self.session_slug, %old, new = %publisher, "publisher replaced");
        }
        // A new publisher gets a fresh chance at decoding, and its own log line.
        self.failures_in_a_row = 0;
        self.discontinuity_logged = false;
        if matches!(self.decoder, DecoderState::Failed { .. }) {
            self.decoder = DecoderState::NotConfigured;
        }
    }
}

impl Handler<UseProvider> for IngestActor {
    type Result = ();

    fn handle(&mut self, UseProvider(provider): UseProvider, _: &mut Self::Context) {
        self.provider = provider;
    }
}

impl Handler<AudioTagReceived> for IngestActor {
    type Result = ();

    fn handle(&mut self, tag: AudioTagReceived, ctx: &mut Self::Context) {
        if Some(tag.publisher) != self.publisher {
            return;
        }
        self.counters.audio_tags += 1;
        self.counters.audio_bytes += tag.payload.len() as u64;
        self.audio_bytes_total.increment(tag.payload.len() as u64);
        match parse_audio_tag(&tag.payload) {
            Ok(AudioTag::AacSequenceHeader(raw)) => match AudioSpecificConfig::parse(raw) {
                Ok(config) => {
                    let same = match &self.decoder {
                        DecoderState::Running { config: c, .. }
                        | DecoderState::Restarting { config: c }
                        | DecoderState::Failed { config: c } => c.raw == config.raw,
                        DecoderState::NotConfigured => false,
                    };
                    if !same {
                        self.failures_in_a_row = 0;
                        // A new publisher with another format: the old pipeline is dropped.
                        self.start_decoder(config);
                    }
                }
                Err(error) => {
                    tracing::warn!(session = %self.session_slug, %error, "unusable AAC configuration");
                    self.report
                        .do_send(IngestReport::DecoderError(error.to_string()));
                }
            },
            Ok(AudioTag::AacRaw(frame)) => match &self.decoder {
                DecoderState::Running {
                    pipeline, events, ..
                } => {
                    let pushed = pipeline.push_frame(frame, tag.timestamp_ms);
                    let decoded = events.take();
                    match pushed {
                        Ok(Timing::Continuous) => {}
                        Ok(Timing::Discontinuity {
                            previous_ms,
                            timestamp_ms,
                        }) => self.on_discontinuity(previous_ms, timestamp_ms),
                        Err(error) => {
                            self.counters.dropped_tags += 1;
                            tracing::warn!(session = %self.session_slug, %error, "AAC frame not accepted by the decoder");
                        }
                    }
                    self.on_decoded(decoded, ctx);
                }
                DecoderState::Restarting { .. } | DecoderState::Failed { .. } => {
                    self.counters.dropped_tags += 1;
                }
                DecoderState::NotConfigured => {}
            },
            Ok(AudioTag::Unsupported { sound_format }) => {
                if self.counters.audio_tags == 1 {
                    tracing::warn!(session = %self.session_slug, sound_format, "publisher sends audio that is not AAC: ignored");
                }
            }
            Err(error) => {
                self.counters.dropped_tags += 1;
                tracing::debug!(session = %self.session_slug, %error, "bad audio tag");
            }
        }
    }
}

impl Handler<DetachPublisher> for IngestActor {
    type Result = ();

    fn handle(&mut self, msg: DetachPublisher, _: &mut Self::Context) {
        if Some(msg.publisher) == self.publisher {
            tracing::info!(session = %self.session_slug, publisher = %msg.publisher, reason = %msg.reason, "publish ended");
            self.drain(msg.reason);
        }
    }
}

impl Handler<DrainIngest> for IngestActor {
    type Result = ();

    fn handle(&mut self, _: DrainIngest, _: &mut Self::Context) {
        self.drain("session stopped".to_owned());
    }
}

impl Handler<GetIngestCounters> for IngestActor {
    type Result = MessageResult<GetIngestCounters>;

    fn handle(&mut self, _: GetIngestCounters, _: &mut Self::Context) -> Self::Result {
        MessageResult(self.counters)
    }
}
