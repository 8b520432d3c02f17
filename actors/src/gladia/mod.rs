//! `GladiaActor`: one meeting session's connection to Gladia Live v2.
//!
//! It creates a provider session (`init`), streams PCM as binary WebSocket frames, turns
//! transcript messages into `TranscriptEvent`s, and keeps every byte the provider has not
//! acknowledged so a dropped connection loses no audio: it reconnects to the same URL and
//! resends (reference §4.3). A 1000 close before we asked to stop, or a 44xx close, means the
//! provider session is over: a fresh one is created and the unacknowledged audio goes there.

mod audio_buffer;
pub mod init;
pub mod protocol;

use std::sync::Arc;
use std::time::Duration;

use actix::io::{SinkWrite, WriteHandler};
use actix::prelude::*;
use actix_codec::Framed;
use awc::error::WsProtocolError;
use awc::ws::{Codec, Frame, Message as WsMessage};
use awc::BoxedSocket;

use futures_util::stream::{SplitSink, StreamExt};

use crate::events::{now_ms, EndOfAudio, PcmChunk, TranscriptEvent};
pub use audio_buffer::AudioBuffer;
use init::{init_session, InitError};
use protocol::{parse_server_message, InitResponse, ServerMessage};

/// How to reach Gladia. `Debug` never prints the key.
#[derive(Clone)]
pub struct GladiaConfig {
    pub api_url: String,
    pub api_key: String,
    pub region: Option<String>,
    /// Unacknowledged audio kept for resend; beyond it the oldest audio is dropped and counted.
    pub max_buffered_audio: Duration,
    /// How long to wait for trailing finals and the 1000 close after `stop_recording`.
    pub stop_timeout: Duration,
}

impl std::fmt::Debug for GladiaConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GladiaConfig")
            .field("api_url", &self.api_url)
            .field("api_key", &"[redacted]")
            .field("region", &self.region)
            .finish()
    }
}

/// What the provider connection is doing, reported to the `SessionSupervisor`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProviderPhase {
    /// Creating the provider session or opening its socket.
    Connecting,
    /// Audio is flowing.
    Streaming,
    /// A failure; retrying after a back-off. The detail says what failed.
    Retrying,
}

#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct ProviderStatus {
    /// Which of the session's provider streams this is (the supervisor numbers them).
    pub stream: u64,
    pub phase: ProviderPhase,
    pub detail: String,
    pub provider_session_id: Option<String>,
}

/// The provider stream is over: trailing finals delivered (or the wait timed out).
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct ProviderFinished {
    pub stream: u64,
    pub lost_audio_bytes: u64,
}

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
    state: ConnectionState,
    provider_session: Option<InitResponse>,
    /// Short prefix of the provider session id, making utterance ids unique across sessions.
    utterance_prefix: String,
    audio: AudioBuffer,
    /// Wall clock (ms) of the first PCM byte, and the buffer offset where the current
    /// provider session began: together they turn provider seconds into wall-clock times.
    audio_epoch_ms: Option<i64>,
    provider_base_offset: u64,
    end_of_audio: bool,
    failures_in_a_row: u32,
    connection_gen: u64,
}

const PCM_BYTES_PER_SEC: u64 = 32_000;

impl GladiaActor {
    pub fn new(
        session_slug: String,
        stream: u64,
        config: Arc<GladiaConfig>,
        transcripts: Recipient<TranscriptEvent>,
        status: Recipient<ProviderStatus>,
        finished: Recipient<ProviderFinished>,
    ) -> Self {
        let max_bytes = config.max_buffered_audio.as_millis() as u64 * PCM_BYTES_PER_SEC / 1000;
        GladiaActor {
            session_slug,
            stream,
            config,
            transcripts,
            status,
            finished,
            state: ConnectionState::Initializing,
            provider_session: None,
            utterance_prefix: String::new(),
            audio: AudioBuffer::new(max_bytes),
            audio_epoch_ms: None,
            provider_base_offset: 0,
            end_of_audio: false,
            failures_in_a_row: 0,
            connection_gen: 0,
        }
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
        self.report(ProviderPhase::Connecting, "creating provider session");
        let config = self.config.clone();
        let slug = self.session_slug.clone();
        async move { init_session(&config, &slug).await }
            .into_actor(self)
            .map(|result, act, ctx| match result {
                Ok(session) => {
                    tracing::info!(session = %act.session_slug, provider_session = %session.id, "gladia session created");
                    act.utterance_prefix = session.id.chars().filter(|c| c.is_ascii_alphanumeric()).take(8).collect();
                    // Resent audio starts the new provider session's clock.
                    act.audio.rewind_to_unacknowledged();
                    act.provider_base_offset = act.audio.total_bytes() - act.audio.unacknowledged_bytes();
                    act.provider_session = Some(session);
                    act.connect(ctx);
                }
                Err(error) => act.init_failed(ctx, error),
            })
            .spawn(ctx);
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
                        act.state = ConnectionState::Streaming { sink: SinkWrite::new(sink, ctx) };
                        act.report(ProviderPhase::Streaming, "transcribing");
                        act.pump_audio();
                        if act.end_of_audio {
                            act.send_stop(ctx);
                        }
                    }
                    Err(error) => {
                        act.failures_in_a_row += 1;
                        let delay = act.backoff();
                        tracing::warn!(session = %act.session_slug, %error, "gladia websocket connect failed");
                        act.report(ProviderPhase::Retrying, format!("stt provider connection failed: {error}"));
                        ctx.run_later(delay, |act, ctx| act.connect(ctx));
                    }
                }
            })
            .spawn(ctx);
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
        while let Some(frame) = self.audio.next_unsent() {
            if sink.write(WsMessage::Binary(frame)).is_err() {
                // The sink is closing; the connection-lost path rewinds and resends.
                break;
            }
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
                act.start_provider_session(ctx);
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
                    + (self.provider_base_offset * 1000 / PCM_BYTES_PER_SEC) as i64;
                let to_ms = |seconds: f64| epoch + (seconds.max(0.0) * 1000.0) as i64;
                let event = TranscriptEvent {
                    utterance_id: format!("{}:{}", self.utterance_prefix, data.id),
                    text: data.utterance.text.trim_start().to_owned(),
                    is_final: data.is_final,
                    started_at_ms: to_ms(data.utterance.start),
                    ended_at_ms: to_ms(data.utterance.end),
                    language: data.utterance.language,
                    provider_speaker: data.utterance.speaker.map(|s| match s {
                        serde_json::Value::String(s) => s,
                        other => format!("speaker {other}"),
                    }),
                    received_at: std::time::Instant::now(),
                };
                self.transcripts.do_send(event);
            }
            ServerMessage::AudioChunkAck {
                acknowledged: true,
                byte_end: Some(end),
                ..
            } => {
                self.audio
                    .acknowledge(self.provider_base_offset.saturating_add(end));
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
        let _ = ctx;
    }
}

impl Actor for GladiaActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        // 60 s of audio at 100 ms chunks fits; beyond that the ingest side counts drops.
        ctx.set_mailbox_capacity(1024);
        self.start_provider_session(ctx);
    }
}

impl Handler<PcmChunk> for GladiaActor {
    type Result = ();

    fn handle(&mut self, chunk: PcmChunk, _ctx: &mut Self::Context) {
        if self.end_of_audio || matches!(self.state, ConnectionState::Finished) {
            return;
        }
        self.audio_epoch_ms
            .get_or_insert_with(|| now_ms() - (chunk.pcm.len() as i64 / 32));
        self.audio.push(chunk.pcm);
        self.pump_audio();
    }
}

impl Handler<EndOfAudio> for GladiaActor {
    type Result = ();

    fn handle(&mut self, _: EndOfAudio, ctx: &mut Self::Context) {
        if self.end_of_audio {
            return;
        }
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
