//! `GladiaActor`: one meeting session's connection to Gladia Live v2.
//!
//! It creates a provider session (`init`), streams PCM as binary WebSocket frames, turns
//! transcript messages into `TranscriptEvent`s, and keeps every byte the provider has not
//! acknowledged so a dropped connection loses no audio: it reconnects to the same URL and
//! resends (docs/reference/gladia-live-v2.md §4.3). A 1000 close before we asked to stop, a 44xx close, or the
//! provider's session-length limit drawing near means the provider session is over: a fresh
//! one is created and fed again from the *settled* point (the start of the oldest utterance
//! without a final), so no utterance is cut in two; that utterance keeps its id. Partials left
//! without a final when the stream ends become finals marked `provisional`.
//!
//! In cluster mode the provider session outlives this process: the actor reports where it
//! stands ([`ProviderCheckpoint`]: id, URL, bytes acknowledged) for the supervisor to keep in
//! Redis, leaves it untouched when the session moves away ([`HandOver`]), and, started with
//! a [`ProviderResume`] by the instance that took the session, connects to the same URL with
//! no `init` and streams on from the provider's position; if the provider will not take the
//! connection, a fresh session is created and fed everything this instance has.

mod audio_buffer;
mod config;
pub mod init;
pub mod protocol;
mod send_clock;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::io::{SinkWrite, WriteHandler};
use actix::prelude::*;
use actix_codec::Framed;
use awc::error::WsProtocolError;
use awc::ws::{Codec, Frame, Message as WsMessage};
use awc::BoxedSocket;

use futures_util::stream::{SplitSink, StreamExt};

use crate::messages::{
    now_ms, EndOfAudio, HandOver, PcmChunk, ProviderCheckpoint, ProviderFinished, ProviderPhase,
    ProviderResume, ProviderStatus, PublisherGap, StreamSinks, TranscriptEvent,
};
use crate::metrics::names::{GLADIA_FINALS_TOTAL, GLADIA_RECONNECTS_TOTAL, GLADIA_STT_LATENCY_MS};
pub use audio_buffer::AudioBuffer;
pub use config::GladiaConfig;
use init::{init_session, InitError};
use protocol::{parse_server_message, InitResponse, ServerMessage};
use send_clock::SendClock;

type WsSink = SinkWrite<WsMessage, SplitSink<Framed<BoxedSocket, Codec>, WsMessage>>;

enum ConnectionState {
    /// Waiting for `init` or its retry timer.
    Initializing,
    /// Opening the WebSocket of `session`.
    Connecting,
    Streaming {
        sink: WsSink,
    },
    /// `stop_recording` sent; waiting for trailing finals and the 1000 close.
    Stopping {
        sink: WsSink,
    },
    Finished,
}

/// Frames from one WebSocket connection, tagged so a replaced connection's leftovers are ignored.
enum WsInput {
    Frame(u64, Result<Frame, WsProtocolError>),
    Ended(u64),
}

pub struct GladiaActor {
    session_slug: String,
    stream: u64,
    config: Arc<GladiaConfig>,
    transcripts: Recipient<TranscriptEvent>,
    status: Recipient<ProviderStatus>,
    finished: Recipient<ProviderFinished>,
    checkpoints: Recipient<ProviderCheckpoint>,
    state: ConnectionState,
    provider_session: Option<InitResponse>,
    /// Short prefix of the provider session id, making utterance ids unique across sessions.
    utterance_prefix: String,
    audio: AudioBuffer,
    /// When each stretch of audio was last written to the socket (`gladia.stt_latency_ms`).
    send_clock: SendClock,
    /// Wall clock (ms) of the first PCM byte, and the buffer offset where the current
    /// provider session began: together they turn provider seconds into wall-clock times.
    /// Negative for a session continued from another instance, which began before this
    /// buffer did.
    audio_epoch_ms: Option<i64>,
    provider_base_offset: i64,
    /// A provider session taken over, to continue at start instead of creating one.
    resume: Option<ProviderResume>,
    /// The continued session has not accepted a connection from here yet: a refusal means
    /// it is gone, and a fresh one is created.
    resume_unconfirmed: bool,
    /// After a continued session's first connection: the buffer offset of the first byte
    /// sent on it, matched with the provider's first acknowledgement to learn exactly where
    /// the provider's bytes stand against this buffer's.
    calibrate_from: Option<u64>,
    last_checkpoint: Option<Instant>,
    end_of_audio: bool,
    failures_in_a_row: u32,
    connection_gen: u64,
    /// Utterances with partials and no final yet, by full utterance id.
    open_utterances: BTreeMap<String, OpenUtterance>,
    /// After a rollover: the id of the utterance cut off, reused for the first utterance of
    /// the fresh provider session (which hears that utterance again from its start).
    carried_utterance: Option<String>,
    /// (provider id in the fresh session, id it continues).
    utterance_alias: Option<(String, String)>,
    /// Numbers provider sessions, so a limit timer of an old one does nothing.
    provider_session_gen: u64,
    /// Past 90 % of the session limit: roll over as soon as no utterance is open.
    rollover_wanted: bool,
    /// The publisher is away since then (see [`PublisherGap`]), and this much of the gap has
    /// been sent as silence.
    gap: Option<(std::time::Instant, u64)>,
    gap_silence: Option<SpawnHandle>,
}

/// A gap this long is filled with silence as it goes (egress usually reconnects sooner).
const GAP_SILENCE_AFTER: Duration = Duration::from_secs(2);
const GAP_SILENCE_TICK: Duration = Duration::from_millis(100);
/// The longest silence written in one piece (a resend frame is at most 512 KiB anyway).
const GAP_SILENCE_MAX_PIECE: u64 = 5 * PCM_BYTES_PER_SEC;

/// The newest partial of an utterance that has no final yet.
struct OpenUtterance {
    start_offset: u64,
    last_partial: TranscriptEvent,
}

/// Checkpoints while audio is acknowledged are at least this far apart: a takeover resumes
/// at most this much behind the provider's real position (its first acknowledgement then
/// says exactly where).
const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);
/// Connection attempts to a continued session before it is given up for a fresh one.
const RESUME_ATTEMPTS: u32 = 3;

/// Audio older than this before the acknowledged point, with no utterance open, is silence
/// the provider has already passed over: it need not be kept for a fresh session.
const UNSETTLED_SILENCE_KEPT: u64 = 10 * PCM_BYTES_PER_SEC;

const PCM_BYTES_PER_SEC: u64 = 32_000;

impl GladiaActor {
    pub fn new(
        session_slug: String,
        stream: u64,
        config: Arc<GladiaConfig>,
        sinks: StreamSinks,
    ) -> Self {
        let StreamSinks {
            transcripts,
            status,
            finished,
            checkpoints,
        } = sinks;
        let max_bytes = config.max_buffered_audio.as_millis() as u64 * PCM_BYTES_PER_SEC / 1000;
        GladiaActor {
            session_slug,
            stream,
            config,
            transcripts,
            status,
            finished,
            checkpoints,
            state: ConnectionState::Initializing,
            provider_session: None,
            utterance_prefix: String::new(),
            audio: AudioBuffer::new(max_bytes),
            send_clock: SendClock::default(),
            audio_epoch_ms: None,
            provider_base_offset: 0,
            resume: None,
            resume_unconfirmed: false,
            calibrate_from: None,
            last_checkpoint: None,
            end_of_audio: false,
            failures_in_a_row: 0,
            connection_gen: 0,
            open_utterances: BTreeMap::new(),
            carried_utterance: None,
            utterance_alias: None,
            provider_session_gen: 0,
            rollover_wanted: false,
            gap: None,
            gap_silence: None,
        }
    }

    /// Continue `resume` (another instance's provider session) rather than create one.
    pub fn resuming(mut self, resume: Option<ProviderResume>) -> Self {
        self.resume = resume;
        self
    }

    fn report(&self, phase: ProviderPhase, detail: impl Into<String>) {
        self.status.do_send(ProviderStatus {
            stream: self.stream,
            phase,
            detail: detail.into(),
            provider_session_id: self.provider_session.as_ref().map(|s| s.id.clone()),
        });
    }

    fn backoff(&self) -> Duration {
        let exp = self.failures_in_a_row.min(8);
        Duration::from_millis((250u64 << exp).min(10_000))
    }

    /// Creates a provider session; on failure retries after a back-off.
    fn start_provider_session(&mut self, ctx: &mut Context<Self>) {
        self.drop_connection(ctx);
        self.state = ConnectionState::Initializing;
        self.provider_session = None;
        self.resume_unconfirmed = false;
        self.calibrate_from = None;
        self.report(ProviderPhase::Connecting, "creating provider session");
        let config = self.config.clone();
        let slug = self.session_slug.clone();
        async move { init_session(&config, &slug).await }
            .into_actor(self)
            .map(|result, act, ctx| match result {
                Ok(session) => {
                    tracing::info!(session = %act.session_slug, provider_session = %session.id, "gladia session created");
                    act.utterance_prefix = utterance_prefix(&session.id);
                    // The fresh session hears everything since the settled point; that audio
                    // starts its clock.
                    act.provider_base_offset = to_i64(act.audio.rewind_to_settled());
                    act.provider_session = Some(session);
                    act.arm_session_limit(ctx);
                    act.connect(ctx);
                }
                Err(error) => act.init_failed(ctx, error),
            })
            .spawn(ctx);
    }

    /// Continues the provider session another instance left (no `init`): its clock is at
    /// `acked_bytes` when this buffer's first byte arrives.
    fn continue_provider_session(&mut self, resume: ProviderResume, ctx: &mut Context<Self>) {
        tracing::info!(session = %self.session_slug, provider_session = %resume.provider_session_id,
            acked_bytes = resume.acked_bytes, "continuing the provider session of the previous owner");
        self.utterance_prefix = utterance_prefix(&resume.provider_session_id);
        self.provider_base_offset = -to_i64(resume.acked_bytes);
        self.provider_session = Some(InitResponse {
            id: resume.provider_session_id,
            url: resume.url,
        });
        self.resume_unconfirmed = true;
        self.report(ProviderPhase::Connecting, "continuing the provider session");
        self.arm_session_limit(ctx);
        self.connect(ctx);
    }

    /// Tells the supervisor where the provider session stands (see [`ProviderResume`]).
    fn checkpoint(&mut self, force: bool) {
        let Some(session) = &self.provider_session else {
            return;
        };
        if self.resume_unconfirmed
            || (!force
                && self
                    .last_checkpoint
                    .is_some_and(|at| at.elapsed() < CHECKPOINT_EVERY))
        {
            return;
        }
        self.last_checkpoint = Some(Instant::now());
        let acked = to_i64(self.audio.acked_offset()).saturating_sub(self.provider_base_offset);
        self.checkpoints.do_send(ProviderCheckpoint {
            stream: self.stream,
            resume: ProviderResume {
                provider_session_id: session.id.clone(),
                url: session.url.clone(),
                acked_bytes: acked.max(0) as u64,
            },
        });
    }

    fn init_failed(&mut self, ctx: &mut Context<Self>, error: InitError) {
        self.failures_in_a_row += 1;
        let delay = if error.is_permanent() {
            Duration::from_secs(30).max(self.backoff())
        } else {
            self.backoff()
        };
        tracing::warn!(session = %self.session_slug, %error, retry_in_ms = delay.as_millis() as u64, "gladia init failed");
        self.report(
            ProviderPhase::Retrying,
            format!(
                "stt provider init failed: {error}; retrying in {} ms",
                delay.as_millis()
            ),
        );
        if self.end_of_audio && self.failures_in_a_row > 6 {
            // The publish is over and the provider keeps refusing: give up rather than hold the session forever.
            tracing::error!(session = %self.session_slug, lost_bytes = self.audio.unacknowledged_bytes(), "giving up on gladia after the publish ended");
            self.finish(ctx);
            return;
        }
        ctx.run_later(delay, |act, ctx| act.start_provider_session(ctx));
    }

    /// Opens (or reopens) the WebSocket of the current provider session.
    fn connect(&mut self, ctx: &mut Context<Self>) {
        let Some(session) = self.provider_session.clone() else {
            self.start_provider_session(ctx);
            return;
        };
        self.drop_connection(ctx);
        self.state = ConnectionState::Connecting;
        self.connection_gen += 1;
        let gen = self.connection_gen;
        async move { awc::Client::new().ws(session.url.as_str()).max_frame_size(4 << 20).connect().await }
            .into_actor(self)
            .map(move |result, act, ctx| {
                if gen != act.connection_gen {
                    return;
                }
                match result {
                    Ok((_response, framed)) => {
                        let (sink, stream) = framed.split();
                        let frames = stream.map(move |f| WsInput::Frame(gen, f));
                        let ended = futures_util::stream::once(async move { WsInput::Ended(gen) });
                        ctx.add_stream(frames.chain(ended));
                        act.failures_in_a_row = 0;
                        act.audio.rewind_to_unacknowledged();
                        if std::mem::take(&mut act.resume_unconfirmed) {
                            act.calibrate_from = Some(act.audio.acked_offset());
                        }
                        act.state = ConnectionState::Streaming { sink: SinkWrite::new(sink, ctx) };
                        act.report(ProviderPhase::Streaming, "transcribing");
                        act.checkpoint(true);
                        act.pump_audio();
                        if act.end_of_audio {
                            act.send_stop(ctx);
                        }
                    }
                    Err(error) => {
                        act.failures_in_a_row += 1;
                        let refused = matches!(error, awc::error::WsClientError::InvalidResponseStatus(_));
                        if act.resume_unconfirmed && (refused || act.failures_in_a_row >= RESUME_ATTEMPTS) {
                            // Ended, expired or unknown there: nothing of it can be kept.
                            tracing::info!(session = %act.session_slug, %error, "the previous owner's provider session cannot be continued; starting a fresh one");
                            act.resume_unconfirmed = false;
                            act.start_provider_session(ctx);
                            return;
                        }
                        let delay = act.backoff();
                        tracing::warn!(session = %act.session_slug, %error, "gladia websocket connect failed");
                        act.report(ProviderPhase::Retrying, format!("stt provider connection failed: {error}"));
                        ctx.run_later(delay, |act, ctx| act.connect(ctx));
                    }
                }
            })
            .spawn(ctx);
    }

    /// Timers for the provider's session limit (see [`GladiaConfig::max_session`]).
    fn arm_session_limit(&mut self, ctx: &mut Context<Self>) {
        self.provider_session_gen += 1;
        self.rollover_wanted = false;
        let gen = self.provider_session_gen;
        let limit = self.config.max_session;
        ctx.run_later(limit.mul_f64(0.90), move |act, ctx| {
            if gen == act.provider_session_gen {
                act.rollover_wanted = true;
                act.roll_over_if_quiet(ctx);
            }
        });
        ctx.run_later(limit.mul_f64(0.97), move |act, ctx| {
            if gen == act.provider_session_gen && !act.end_of_audio {
                act.roll_over(ctx, "provider session limit reached");
            }
        });
    }

    fn roll_over_if_quiet(&mut self, ctx: &mut Context<Self>) {
        if self.rollover_wanted && self.open_utterances.is_empty() && !self.end_of_audio {
            self.roll_over(ctx, "provider session limit near; switching at a pause");
        }
    }

    /// Leaves the current provider session for a fresh one, fed again from the settled point.
    fn roll_over(&mut self, ctx: &mut Context<Self>, why: &str) {
        if matches!(
            self.state,
            ConnectionState::Stopping { .. } | ConnectionState::Finished
        ) {
            return;
        }
        tracing::info!(session = %self.session_slug, why, open_utterances = self.open_utterances.len(), "moving to a fresh provider session");
        // The oldest open utterance is heard again from its start and keeps its id; any other
        // open one is heard again too, under the fresh session's id.
        self.carried_utterance = self
            .open_utterances
            .iter()
            .min_by_key(|(_, open)| open.start_offset)
            .map(|(id, _)| id.clone());
        self.open_utterances.clear();
        self.utterance_alias = None;
        if let ConnectionState::Streaming { sink } = &mut self.state {
            // A client close with 1000 ends the provider session (docs/reference/gladia-live-v2.md §4.1).
            let _ = sink.write(WsMessage::Close(Some(awc::ws::CloseCode::Normal.into())));
        }
        self.provider_session_gen += 1;
        self.start_provider_session(ctx);
    }

    /// Audio before the oldest open utterance (or, with none open, before the last final and
    /// well behind the acknowledged point) is settled.
    fn update_settled(&mut self, last_final_end: Option<u64>) {
        match self.open_utterances.values().map(|o| o.start_offset).min() {
            Some(oldest_open) => self.audio.settle(oldest_open),
            None => {
                if let Some(end) = last_final_end {
                    self.audio.settle(end);
                }
                let quiet = self
                    .audio
                    .acked_offset()
                    .saturating_sub(UNSETTLED_SILENCE_KEPT);
                self.audio.settle(quiet);
            }
        }
    }

    /// Provider seconds in the current session → absolute byte offset (sample-aligned).
    fn offset_of(&self, seconds: f64) -> u64 {
        let bytes = (seconds.max(0.0) * PCM_BYTES_PER_SEC as f64) as u64 & !1;
        self.buffer_offset(bytes)
    }

    /// A byte position of the provider session → this buffer's offset (0 for a position
    /// before the buffer began, which only a continued session can name).
    fn buffer_offset(&self, provider_bytes: u64) -> u64 {
        self.provider_base_offset
            .saturating_add(to_i64(provider_bytes))
            .max(0) as u64
    }

    fn drop_connection(&mut self, ctx: &mut Context<Self>) {
        if let ConnectionState::Streaming { sink } | ConnectionState::Stopping { sink } =
            std::mem::replace(&mut self.state, ConnectionState::Initializing)
        {
            ctx.cancel_future(sink.handle());
        }
        // Frames still queued from the old connection carry an old generation and are ignored.
        self.connection_gen += 1;
    }

    /// Writes every unsent byte to the socket, if there is one.
    fn pump_audio(&mut self) {
        let sink = match &mut self.state {
            ConnectionState::Streaming { sink } | ConnectionState::Stopping { sink } => sink,
            _ => return,
        };
        loop {
            let from = self.audio.sent_offset();
            let Some(frame) = self.audio.next_unsent() else {
                break;
            };
            if sink.write(WsMessage::Binary(frame)).is_err() {
                // The sink is closing; the connection-lost path rewinds and resends.
                break;
            }
            // Queued on the socket's sink, flushed to the kernel as the actor yields: the
            // moment the provider can start hearing these bytes, to within a poll.
            self.send_clock
                .sent(from, self.audio.sent_offset(), Instant::now());
        }
    }

    fn send_stop(&mut self, ctx: &mut Context<Self>) {
        let ConnectionState::Streaming { mut sink } =
            std::mem::replace(&mut self.state, ConnectionState::Initializing)
        else {
            return;
        };
        let _ = sink.write(WsMessage::Text(r#"{"type":"stop_recording"}"#.into()));
        self.state = ConnectionState::Stopping { sink };
        let gen = self.connection_gen;
        let timeout = self.config.stop_timeout;
        ctx.run_later(timeout, move |act, ctx| {
            if gen == act.connection_gen && matches!(act.state, ConnectionState::Stopping { .. }) {
                tracing::warn!(session = %act.session_slug, ?timeout, "gladia did not close after stop_recording; ending anyway");
                act.finish(ctx);
            }
        });
    }

    fn finish(&mut self, ctx: &mut Context<Self>) {
        self.drop_connection(ctx);
        // Drafts the provider never finalized are kept as provisional finals.
        let mut open: Vec<OpenUtterance> = std::mem::take(&mut self.open_utterances)
            .into_values()
            .collect();
        open.sort_by_key(|o| o.start_offset);
        for draft in open {
            tracing::info!(session = %self.session_slug, utterance = %draft.last_partial.utterance_id, "partial without a final kept as a provisional final");
            self.transcripts.do_send(TranscriptEvent {
                is_final: true,
                provisional: true,
                ..draft.last_partial
            });
        }
        self.state = ConnectionState::Finished;
        let lost = self.audio.overflow_bytes;
        self.finished.do_send(ProviderFinished {
            stream: self.stream,
            lost_audio_bytes: lost,
        });
        ctx.stop();
    }

    /// The socket is gone. Decide between resuming the same provider session and a new one.
    fn connection_lost(&mut self, ctx: &mut Context<Self>, code: Option<u16>, why: String) {
        let stopping = matches!(self.state, ConnectionState::Stopping { .. });
        if matches!(self.state, ConnectionState::Finished) {
            return;
        }
        if stopping && code == Some(1000) {
            tracing::info!(session = %self.session_slug, "gladia session closed after stop");
            self.finish(ctx);
            return;
        }
        self.drop_connection(ctx);
        self.failures_in_a_row += 1;
        ::metrics::counter!(GLADIA_RECONNECTS_TOTAL).increment(1);
        let provider_session_over = matches!(code, Some(1000) | Some(4400..=4499));
        tracing::warn!(session = %self.session_slug, ?code, %why, provider_session_over, "gladia connection lost");
        self.report(
            ProviderPhase::Retrying,
            format!("stt provider connection lost ({why}); reconnecting"),
        );
        let delay = if self.failures_in_a_row <= 1 {
            Duration::ZERO
        } else {
            self.backoff()
        };
        ctx.run_later(delay, move |act, ctx| {
            if provider_session_over {
                act.roll_over(ctx, "provider session closed");
            } else {
                act.connect(ctx);
            }
        });
    }

    fn handle_text(&mut self, ctx: &mut Context<Self>, text: &str) {
        let message = match parse_server_message(text) {
            Ok(m) => m,
            Err(error) => {
                tracing::warn!(session = %self.session_slug, %error, "ignoring provider message");
                return;
            }
        };
        match message {
            ServerMessage::Transcript(data) => {
                let epoch = self.audio_epoch_ms.unwrap_or_else(now_ms)
                    + self.provider_base_offset * 1000 / PCM_BYTES_PER_SEC as i64;
                // Times are within MAX_PROVIDER_SECONDS (checked at parse); saturating anyway.
                let to_ms = |seconds: f64| epoch.saturating_add((seconds.max(0.0) * 1000.0) as i64);
                if let Some(carried) = self.carried_utterance.take() {
                    self.utterance_alias = Some((data.id.clone(), carried));
                }
                let utterance_id = match &self.utterance_alias {
                    Some((provider_id, carried)) if *provider_id == data.id => carried.clone(),
                    _ => format!("{}:{}", self.utterance_prefix, data.id),
                };
                let start_offset = self.offset_of(data.utterance.start);
                let end_offset = self.offset_of(data.utterance.end);
                let event = TranscriptEvent {
                    utterance_id,
                    text: data.utterance.text.trim_start().to_owned(),
                    is_final: data.is_final,
                    started_at_ms: to_ms(data.utterance.start),
                    ended_at_ms: to_ms(data.utterance.end),
                    language: data.utterance.language,
                    provider_speaker: data.utterance.speaker.map(|s| match s {
                        serde_json::Value::String(s) => s,
                        other => format!("speaker {other}"),
                    }),
                    received_at: Instant::now(),
                    provisional: false,
                };
                if event.is_final {
                    self.record_stt_latency(end_offset, event.received_at);
                    self.open_utterances.remove(&event.utterance_id);
                    self.update_settled(Some(end_offset));
                    self.transcripts.do_send(event);
                    self.roll_over_if_quiet(ctx);
                } else {
                    self.open_utterances.insert(
                        event.utterance_id.clone(),
                        OpenUtterance {
                            start_offset,
                            last_partial: event.clone(),
                        },
                    );
                    self.update_settled(None);
                    self.transcripts.do_send(event);
                }
            }
            ServerMessage::AudioChunkAck {
                acknowledged: true,
                byte_start,
                byte_end: Some(end),
                ..
            } => {
                if let (Some(from), Some(start)) = (self.calibrate_from.take(), byte_start) {
                    // The first chunk sent from here landed at `start` of the provider's
                    // bytes: the previous owner's last checkpoint was that far behind.
                    let base = to_i64(from).saturating_sub(to_i64(start));
                    if base != self.provider_base_offset {
                        tracing::debug!(session = %self.session_slug, behind_bytes = self.provider_base_offset - base, "continued provider session calibrated");
                        self.provider_base_offset = base;
                    }
                }
                self.audio.acknowledge(self.buffer_offset(end));
                self.update_settled(None);
                self.checkpoint(false);
            }
            ServerMessage::AudioChunkAck {
                acknowledged: false,
                error,
                ..
            } => {
                tracing::warn!(session = %self.session_slug, error = error.as_deref().unwrap_or("none"), "provider rejected an audio chunk");
            }
            ServerMessage::AudioChunkAck { .. } => {}
            ServerMessage::StopRecordingAck => {
                tracing::debug!(session = %self.session_slug, "stop_recording acknowledged")
            }
            ServerMessage::PostFinalTranscript => {
                tracing::debug!(session = %self.session_slug, "post_final_transcript received")
            }
            ServerMessage::Other(kind) => {
                tracing::trace!(session = %self.session_slug, %kind, "provider message")
            }
        }
    }
}

impl GladiaActor {
    /// `gladia.stt_latency_ms` for a final whose utterance ends at `end_offset`: from when
    /// the frame holding that byte was (last) written to the socket to `received`. Measured
    /// on the sending clock of this process, so no clock of the provider is involved.
    fn record_stt_latency(&mut self, end_offset: u64, received: Instant) {
        ::metrics::counter!(GLADIA_FINALS_TOTAL).increment(1);
        if let Some(sent) = self.send_clock.sent_at(end_offset) {
            let latency = received.saturating_duration_since(sent);
            ::metrics::histogram!(GLADIA_STT_LATENCY_MS).record(latency.as_secs_f64() * 1000.0);
        }
        // Audio before the settled point belongs to finished utterances: no final will ask.
        self.send_clock.forget_before(
            self.audio
                .settled_offset()
                .saturating_sub(UNSETTLED_SILENCE_KEPT),
        );
    }
}

impl Actor for GladiaActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        // 60 s of audio at 100 ms chunks fits; beyond that the ingest side counts drops.
        ctx.set_mailbox_capacity(1024);
        match self.resume.take() {
            Some(resume) => self.continue_provider_session(resume, ctx),
            None => self.start_provider_session(ctx),
        }
    }
}

impl Handler<PcmChunk> for GladiaActor {
    type Result = ();

    fn handle(&mut self, chunk: PcmChunk, ctx: &mut Self::Context) {
        if self.end_of_audio || matches!(self.state, ConnectionState::Finished) {
            return;
        }
        // Audio is back: the gap so far becomes silence, keeping the provider's clock true.
        self.fill_gap_silence();
        self.end_gap(ctx);
        self.audio_epoch_ms
            .get_or_insert_with(|| now_ms() - (chunk.pcm.len() as i64 / 32));
        self.audio.push(chunk.pcm);
        self.pump_audio();
    }
}

/// The session moved to another instance, which continues this provider session: drop the
/// socket without a close (a close with 1000 would end the provider session) and leave.
impl Handler<HandOver> for GladiaActor {
    type Result = ();

    fn handle(&mut self, _: HandOver, ctx: &mut Self::Context) {
        if matches!(self.state, ConnectionState::Finished) {
            return;
        }
        tracing::info!(session = %self.session_slug, unacknowledged_bytes = self.audio.unacknowledged_bytes(),
            "provider session left to the instance that took the session over");
        self.drop_connection(ctx);
        self.end_gap(ctx);
        self.open_utterances.clear();
        self.state = ConnectionState::Finished;
        self.finished.do_send(ProviderFinished {
            stream: self.stream,
            lost_audio_bytes: self.audio.overflow_bytes,
        });
        ctx.stop();
    }
}

impl Handler<EndOfAudio> for GladiaActor {
    type Result = ();

    fn handle(&mut self, _: EndOfAudio, ctx: &mut Self::Context) {
        if self.end_of_audio {
            return;
        }
        self.end_gap(ctx);
        self.end_of_audio = true;
        match self.state {
            ConnectionState::Streaming { .. } => self.send_stop(ctx),
            // Connected later: `connect` sends the buffered audio, then the stop.
            ConnectionState::Initializing | ConnectionState::Connecting => {
                if self.audio.total_bytes() == 0 {
                    self.finish(ctx);
                }
            }
            ConnectionState::Stopping { .. } | ConnectionState::Finished => {}
        }
    }
}

/// The gap becomes silence for the provider: from [`GAP_SILENCE_AFTER`] on in real time, and
/// for a shorter gap when audio resumes.
impl Handler<PublisherGap> for GladiaActor {
    type Result = ();

    fn handle(&mut self, _: PublisherGap, ctx: &mut Self::Context) {
        if self.end_of_audio || self.gap.is_some() || self.audio_epoch_ms.is_none() {
            return;
        }
        let since = std::time::Instant::now();
        self.gap = Some((since, 0));
        ctx.run_later(GAP_SILENCE_AFTER, move |act, ctx| {
            if act.gap.is_some_and(|(s, _)| s == since) {
                act.fill_gap_silence();
                act.gap_silence =
                    Some(ctx.run_interval(GAP_SILENCE_TICK, |act, _| act.fill_gap_silence()));
            }
        });
    }
}

impl GladiaActor {
    /// Sends the part of the current publisher gap not yet sent as silence.
    fn fill_gap_silence(&mut self) {
        let Some((since, sent)) = &mut self.gap else {
            return;
        };
        let due = (since.elapsed().as_millis() as u64 * PCM_BYTES_PER_SEC / 1000) & !1;
        while *sent < due {
            let piece = (due - *sent).min(GAP_SILENCE_MAX_PIECE);
            self.audio
                .push(bytes::Bytes::from(vec![0u8; piece as usize]));
            *sent += piece;
        }
        self.pump_audio();
    }

    fn end_gap(&mut self, ctx: &mut Context<Self>) {
        self.gap = None;
        if let Some(silence) = self.gap_silence.take() {
            ctx.cancel_future(silence);
        }
    }
}

impl StreamHandler<WsInput> for GladiaActor {
    fn handle(&mut self, input: WsInput, ctx: &mut Self::Context) {
        match input {
            WsInput::Frame(gen, _) | WsInput::Ended(gen) if gen != self.connection_gen => {}
            WsInput::Frame(_, Ok(Frame::Text(text))) => match std::str::from_utf8(&text) {
                Ok(text) => self.handle_text(ctx, text),
                Err(_) => {
                    tracing::warn!(session = %self.session_slug, "provider sent non-UTF-8 text")
                }
            },
            WsInput::Frame(_, Ok(Frame::Ping(payload))) => {
                if let ConnectionState::Streaming { sink } | ConnectionState::Stopping { sink } =
                    &mut self.state
                {
                    let _ = sink.write(WsMessage::Pong(payload));
                }
            }
            WsInput::Frame(_, Ok(Frame::Close(reason))) => {
                let code = reason.as_ref().map(|r| u16::from(r.code));
                let why = match &reason {
                    Some(r) => format!(
                        "close {} {}",
                        u16::from(r.code),
                        r.description.as_deref().unwrap_or("")
                    ),
                    None => "close without code".to_owned(),
                };
                self.connection_lost(ctx, code, why.trim().to_owned());
            }
            WsInput::Frame(_, Ok(_)) => {}
            WsInput::Frame(_, Err(error)) => self.connection_lost(ctx, None, error.to_string()),
            WsInput::Ended(_) => self.connection_lost(ctx, None, "connection ended".to_owned()),
        }
    }

    fn finished(&mut self, _ctx: &mut Self::Context) {
        // One stream per connection ends all the time; the actor carries on.
    }
}

impl WriteHandler<WsProtocolError> for GladiaActor {
    fn error(&mut self, error: WsProtocolError, ctx: &mut Self::Context) -> Running {
        self.connection_lost(ctx, None, format!("write failed: {error}"));
        Running::Continue
    }

    fn finished(&mut self, _ctx: &mut Self::Context) {}
}

/// Utterance ids are `{prefix}:{provider id}`: the same prefix on every instance that
/// continues the session, so a final replaces the partials another instance showed.
fn utterance_prefix(provider_session_id: &str) -> String {
    provider_session_id
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .take(8)
        .collect()
}

/// Byte offsets fit an `i64` for 290 000 years of audio; saturating anyway.
fn to_i64(offset: u64) -> i64 {
    i64::try_from(offset).unwrap_or(i64::MAX)
}
