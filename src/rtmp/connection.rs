//! One RTMP connection, from the handshake to the end of its publish.
//!
//! The connection is a small state machine ([`State`]) around rml_rtmp's `Handshake` and
//! `ServerSession`. Every library call that parses peer bytes runs under
//! [`guarded`](super::isolation::guarded) and every byte first goes through the
//! [`WireInspector`], so a hostile or malformed stream ends this connection only. The read loop
//! never waits on the actor tree except for the one `AttachPublisher` round trip.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix::Recipient;
use actors::messages::{AttachPublisher, PublisherId};
use rml_rtmp::handshake::{Handshake, HandshakeError, HandshakeProcessResult, PeerType};
use rml_rtmp::sessions::{
    ServerSession, ServerSessionConfig, ServerSessionError, ServerSessionEvent, ServerSessionResult,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc::UnboundedSender;
use tokio::time::Instant;

use super::config::RtmpConfig;
use super::isolation::{guarded, LibraryPanic};
use super::publication::{IngestGone, Publication};
use super::refusal::publish_refusal_bytes;
use super::stream_key::{rejection_for_refusal, StreamKeyRejection, ValidKey};
use super::wire_inspector::{Finding, Hostile, WireInspector};
use crate::log_budget::{Budget, LogBudget};

/// Fixed read buffer: a connection's memory does not grow with what the peer sends at once.
const READ_BUFFER_SIZE: usize = 64 * 1024;

/// Bytes a connection may send before its publish is accepted. connect + createStream +
/// publish take well under 2 KiB for every client we know; this bounds what an unauthenticated
/// peer can make the chunk parsers buffer.
const MAX_BYTES_BEFORE_PUBLISH: u64 = 1024 * 1024;

/// A peer that does not take our (small) control responses within this time is stuck or hostile.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// A connection past the handshake that has not started publishing by then is closed. Real
/// clients publish within a second; this keeps idle sockets from piling up (each holds a task
/// and a 64 KiB buffer).
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(30);

/// A publishing connection silent for this long is dead (an encoder always sends audio, silence
/// included; egress itself gives up after 30 s without progress and reconnects).
const PUBLISHING_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// After the connection is doomed, how long we still try to deliver the last packets (a refusal
/// `onStatus`, a connect `_error`) before dropping the socket.
const FINAL_FLUSH_TIMEOUT: Duration = Duration::from_secs(1);

/// Publisher ids are unique in the process, across listeners, so a replaced publisher's late
/// messages can always be told apart.
static NEXT_PUBLISHER_ID: AtomicU64 = AtomicU64::new(1);

/// Where a connection is in the RTMP life cycle.
enum State {
    /// Waiting for C0/C1/C2; must finish within `RtmpConfig::handshake_timeout`.
    Handshaking(Box<Handshake>),
    /// Handshake done; waiting for `connect` on our app.
    AwaitingConnect,
    /// `connect` accepted; waiting for `publish` (also where we return after a publish ends).
    Connected,
    /// Publish accepted by the session registry; audio flows to its ingest actor.
    Publishing(Box<Publication>),
}

impl State {
    fn name(&self) -> &'static str {
        match self {
            State::Handshaking(_) => "handshaking",
            State::AwaitingConnect => "awaiting-connect",
            State::Connected => "connected",
            State::Publishing(_) => "publishing",
        }
    }
}

/// Why a connection ended. Its `Display` is the reason logged and sent in `DetachPublisher`.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Close {
    #[error("tcp close")]
    PeerClosed,
    #[error("handshake not finished within {0:?}")]
    HandshakeTimeout(Duration),
    #[error("no publish within {0:?}")]
    NoPublish(Duration),
    #[error("nothing received for {0:?} while publishing")]
    Idle(Duration),
    #[error("handshake failed: {0}")]
    Handshake(#[from] HandshakeError),
    #[error("read failed: {0}")]
    Read(std::io::Error),
    #[error("write failed: {0}")]
    Write(std::io::Error),
    #[error("write timed out after {0:?}")]
    WriteTimeout(Duration),
    #[error(transparent)]
    Panic(#[from] LibraryPanic),
    #[error("protocol error: {0}")]
    Protocol(#[from] ServerSessionError),
    #[error("hostile input: {0}")]
    Hostile(#[from] Hostile),
    #[error("{0} bytes sent without publishing")]
    TooMuchBeforePublish(u64),
    #[error("unexpected {0}")]
    UnexpectedCommand(&'static str),
    #[error("app {0:?} rejected")]
    AppRejected(String),
    #[error("replaced by a newer publish of the same key")]
    Replaced,
    #[error("playback refused (ingest only)")]
    PlayRefused,
    #[error("publish refused with {0}")]
    PublishRefused(&'static str),
    #[error(transparent)]
    IngestGone(#[from] IngestGone),
}

impl Close {
    /// Ends that are part of normal operation (or of a refusal we chose) log at info; anything
    /// that points at a broken or hostile peer, or at us, logs at warn.
    fn is_routine(&self) -> bool {
        matches!(
            self,
            Close::PeerClosed
                | Close::AppRejected(_)
                | Close::PublishRefused(_)
                | Close::PlayRefused
                | Close::Replaced
                | Close::Read(_)
        )
    }
}

/// What a finished connection did; sent to the optional observer (tests use it to know a
/// connection task is over without sleeping; `fuzz_entry` to report how a connection ended).
#[cfg_attr(not(test), allow(dead_code))]
#[derive(Debug, Clone)]
pub(crate) struct ConnectionOutcome {
    pub peer: SocketAddr,
    pub close_reason: String,
    /// Reasons of the `DetachPublisher` messages this connection sent, in order.
    pub detach_reasons: Vec<String>,
}

/// Generic over the byte stream only so the fuzz entry point can drive the very same code from
/// memory (`fuzz_entry`); the listener always uses a `TcpStream`.
struct Connection<S> {
    peer: SocketAddr,
    /// `peer` rendered once, for logs and `AttachPublisher`.
    peer_label: String,
    socket: S,
    config: Arc<RtmpConfig>,
    sessions: Recipient<AttachPublisher>,
    state: State,
    session: ServerSession,
    /// Chunk size the session announces to the peer; our own refusal packet must match it.
    outbound_chunk_size: u32,
    /// Session packets produced before the handshake completed; sent right after S2.
    initial_packets: Vec<u8>,
    inspector: WireInspector,
    /// Message stream id of the latest `publish` (rml_rtmp does not expose it).
    publish_stream_id: u32,
    /// Outbound bytes, appended in the order the session produced them, written by `flush`.
    out: Vec<u8>,
    bytes_before_publish: u64,
    /// When the connection last entered a non-publishing state after the handshake.
    unpublished_since: Instant,
    video_bytes: u64,
    detach_reasons: Vec<String>,
}

/// Runs one connection to its end. Never panics on peer input; logs one line when it closes.
pub(crate) async fn handle_connection<S: AsyncRead + AsyncWrite + Unpin>(
    socket: S,
    peer: SocketAddr,
    config: Arc<RtmpConfig>,
    sessions: Recipient<AttachPublisher>,
    observer: Option<UnboundedSender<ConnectionOutcome>>,
) {
    let mut connection = match Connection::new(socket, peer, config, sessions) {
        Ok(connection) => connection,
        Err(error) => {
            tracing::error!(%peer, %error, "rtmp session could not be created");
            return;
        }
    };
    let close = match connection.read_loop().await {
        Ok(never) => match never {},
        Err(close) => close,
    };
    connection.close(&close).await;
    if let Some(observer) = observer {
        // The observer may be gone (test over); nothing to do then.
        let _ = observer.send(ConnectionOutcome {
            peer,
            close_reason: close.to_string(),
            detach_reasons: std::mem::take(&mut connection.detach_reasons),
        });
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Connection<S> {
    fn new(
        socket: S,
        peer: SocketAddr,
        config: Arc<RtmpConfig>,
        sessions: Recipient<AttachPublisher>,
    ) -> Result<Self, ServerSessionError> {
        let session_config = ServerSessionConfig::new();
        let outbound_chunk_size = session_config.chunk_size;
        // The session is created now (no peer input involved) and its greeting (SetChunkSize,
        // WindowAck, StreamBegin, SetPeerBandwidth, onBWDone) held until the handshake is done.
        let (session, initial_results) = ServerSession::new(session_config)?;
        let mut initial_packets = Vec::new();
        for result in initial_results {
            if let ServerSessionResult::OutboundResponse(packet) = result {
                initial_packets.extend_from_slice(&packet.bytes);
            }
        }
        Ok(Self {
            peer,
            peer_label: peer.to_string(),
            socket,
            config,
            sessions,
            state: State::Handshaking(Box::new(Handshake::new(PeerType::Server))),
            session,
            outbound_chunk_size,
            initial_packets,
            inspector: WireInspector::new(),
            publish_stream_id: 0,
            out: Vec::new(),
            bytes_before_publish: 0,
            unpublished_since: Instant::now(),
            video_bytes: 0,
            detach_reasons: Vec::new(),
        })
    }

    /// Reads until something ends the connection; returns only with the reason.
    async fn read_loop(&mut self) -> Result<std::convert::Infallible, Close> {
        let mut buffer = vec![0_u8; READ_BUFFER_SIZE];
        let handshake_deadline = Instant::now() + self.config.handshake_timeout;
        loop {
            // Every state bounds how long a read may wait; only the bound differs.
            let (deadline, expired) = match self.state {
                State::Handshaking(_) => (
                    handshake_deadline,
                    Close::HandshakeTimeout(self.config.handshake_timeout),
                ),
                State::AwaitingConnect | State::Connected => (
                    self.unpublished_since + PUBLISH_TIMEOUT,
                    Close::NoPublish(PUBLISH_TIMEOUT),
                ),
                State::Publishing(_) => (
                    Instant::now() + PUBLISHING_IDLE_TIMEOUT,
                    Close::Idle(PUBLISHING_IDLE_TIMEOUT),
                ),
            };
            let read = tokio::time::timeout_at(deadline, self.socket.read(&mut buffer));
            let read = match &mut self.state {
                State::Publishing(publication) => tokio::select! {
                    read = read => read,
                    () = publication.replaced() => return Err(Close::Replaced),
                },
                _ => read.await,
            };
            let n = read.map_err(|_| expired)?.map_err(Close::Read)?;
            if n == 0 {
                return Err(Close::PeerClosed);
            }
            let bytes = &buffer[..n];
            if matches!(self.state, State::Handshaking(_)) {
                self.on_handshake_bytes(bytes).await?;
            } else {
                self.on_session_bytes(bytes).await?;
            }
            self.flush().await?;
        }
    }

    async fn on_handshake_bytes(&mut self, bytes: &[u8]) -> Result<(), Close> {
        self.count_unpublished(bytes.len())?;
        let State::Handshaking(handshake) = &mut self.state else {
            return Ok(());
        };
        match guarded(|| handshake.process_bytes(bytes))?? {
            HandshakeProcessResult::InProgress { response_bytes } => {
                self.out.extend_from_slice(&response_bytes);
            }
            HandshakeProcessResult::Completed {
                response_bytes,
                remaining_bytes,
            } => {
                self.out.extend_from_slice(&response_bytes);
                self.out.append(&mut self.initial_packets);
                self.state = State::AwaitingConnect;
                self.unpublished_since = Instant::now();
                tracing::debug!(peer = %self.peer, "rtmp handshake complete");
                // librtmp pipelines C2 and `connect` in one write: those bytes are already
                // RTMP chunks and belong to the session.
                if !remaining_bytes.is_empty() {
                    self.on_session_bytes(&remaining_bytes).await?;
                }
            }
        }
        Ok(())
    }

    async fn on_session_bytes(&mut self, bytes: &[u8]) -> Result<(), Close> {
        if !matches!(self.state, State::Publishing(_)) {
            self.count_unpublished(bytes.len())?;
        }
        // The inspector sees the bytes first, so input that would panic or mislead the session
        // never reaches it.
        let findings = guarded(|| self.inspector.inspect(bytes))??;
        for finding in &findings {
            if let Finding::PublishOnStream(stream_id) = finding {
                self.publish_stream_id = *stream_id;
            }
        }
        let results = guarded(|| self.session.handle_input(bytes))??;
        for result in results {
            match result {
                ServerSessionResult::OutboundResponse(packet) => {
                    self.out.extend_from_slice(&packet.bytes)
                }
                ServerSessionResult::RaisedEvent(event) => self.on_event(event).await?,
                ServerSessionResult::UnhandleableMessageReceived(payload) => tracing::debug!(
                    peer = %self.peer,
                    type_id = payload.type_id,
                    "rtmp message type ignored"
                ),
            }
        }
        // After the session's events, so audio in the same read is forwarded before the end.
        if findings.contains(&Finding::DeleteStreamByName) {
            self.end_publish("deleteStream (by name)");
        }
        Ok(())
    }

    fn count_unpublished(&mut self, len: usize) -> Result<(), Close> {
        self.bytes_before_publish = self.bytes_before_publish.saturating_add(len as u64);
        if self.bytes_before_publish > MAX_BYTES_BEFORE_PUBLISH {
            return Err(Close::TooMuchBeforePublish(self.bytes_before_publish));
        }
        Ok(())
    }

    async fn on_event(&mut self, event: ServerSessionEvent) -> Result<(), Close> {
        match event {
            ServerSessionEvent::ConnectionRequested {
                request_id,
                app_name,
            } => self.on_connect(request_id, app_name),
            ServerSessionEvent::PublishStreamRequested {
                request_id,
                stream_key,
                ..
            } => self.on_publish(request_id, &stream_key).await,
            ServerSessionEvent::PublishStreamFinished { .. } => {
                self.end_publish("deleteStream");
                Ok(())
            }
            ServerSessionEvent::AudioDataReceived {
                data, timestamp, ..
            } => {
                // Audio outside an accepted publish (after FCUnpublish, say) has nowhere to go.
                if let State::Publishing(publication) = &mut self.state {
                    publication.forward_audio(timestamp.value, data, &self.peer_label)?;
                }
                Ok(())
            }
            ServerSessionEvent::VideoDataReceived { data, .. } => {
                // Video is allowed (room composites) but not used; counted for the end log.
                self.video_bytes += data.len() as u64;
                Ok(())
            }
            ServerSessionEvent::StreamMetadataChanged { metadata, .. } => {
                // Informational only: rate and channels come from the AudioSpecificConfig.
                tracing::debug!(peer = %self.peer, ?metadata, "rtmp stream metadata");
                Ok(())
            }
            ServerSessionEvent::UnhandleableAmf0Command { command_name, .. } => {
                // releaseStream, FCPublish, _checkbw need no reply from us (tested with
                // rtmp2sink, FFmpeg and librtmp). FCUnpublish comes first in every client's stop
                // sequence, before deleteStream, so it usually is the end we see.
                if command_name == "FCUnpublish" {
                    self.end_publish("FCUnpublish");
                } else {
                    tracing::debug!(peer = %self.peer, command = %command_name, "rtmp command ignored");
                }
                Ok(())
            }
            ServerSessionEvent::PlayStreamRequested { request_id, .. } => {
                let results = guarded(|| {
                    self.session.reject_request(
                        request_id,
                        "NetStream.Play.Failed",
                        "this server only ingests",
                    )
                })??;
                self.queue_packets(results);
                Err(Close::PlayRefused)
            }
            other => {
                tracing::trace!(peer = %self.peer, event = ?other, "rtmp event");
                Ok(())
            }
        }
    }

    fn on_connect(&mut self, request_id: u32, app_name: String) -> Result<(), Close> {
        if !matches!(self.state, State::AwaitingConnect) {
            return Err(Close::UnexpectedCommand("second connect"));
        }
        if app_name != self.config.app_name {
            let results = guarded(|| {
                self.session.reject_request(
                    request_id,
                    "NetConnection.Connect.Rejected",
                    "unknown application",
                )
            })??;
            self.queue_packets(results);
            return Err(Close::AppRejected(app_name));
        }
        let results = guarded(|| self.session.accept_request(request_id))??;
        self.queue_packets(results);
        self.state = State::Connected;
        tracing::info!(peer = %self.peer, app = %app_name, "rtmp connected");
        Ok(())
    }

    async fn on_publish(&mut self, request_id: u32, stream_key: &str) -> Result<(), Close> {
        if !matches!(self.state, State::Connected) {
            // A second publish on a connection that is already publishing.
            return Err(self.refuse(StreamKeyRejection::BadName, "already publishing"));
        }
        let ValidKey { slug, signed } = match (self.config.stream_key_validator)(stream_key) {
            Ok(valid) => valid,
            Err(rejection) => {
                // The key may be a signed secret: log its length, never its text. A few lines
                // a second: anyone can try keys as fast as they can connect.
                static REFUSALS: LogBudget = LogBudget::new(10);
                if let Budget::Log { suppressed } = REFUSALS.take(std::time::Instant::now()) {
                    tracing::info!(
                        peer = %self.peer,
                        key_len = stream_key.len(),
                        %rejection,
                        suppressed,
                        "rtmp publish refused: stream key"
                    );
                }
                return Err(self.refuse(rejection, &rejection.to_string()));
            }
        };
        let publisher = PublisherId(NEXT_PUBLISHER_ID.fetch_add(1, Ordering::Relaxed));
        // The one place the read loop waits on the actor tree: the publisher cannot send audio
        // before it gets NetStream.Publish.Start anyway.
        let reply = self
            .sessions
            .send(AttachPublisher {
                session_slug: slug.clone(),
                publisher,
                peer: self.peer_label.clone(),
                key: signed,
            })
            .await;
        let handle = match reply {
            Ok(Ok(handle)) => handle,
            Ok(Err(refused)) => {
                tracing::info!(peer = %self.peer, %slug, %publisher, %refused, "rtmp publish refused by registry");
                return Err(self.refuse(rejection_for_refusal(&refused), &refused.to_string()));
            }
            Err(mailbox) => {
                tracing::error!(peer = %self.peer, %slug, %publisher, %mailbox, "rtmp publish: session registry unreachable");
                return Err(self.refuse(StreamKeyRejection::Denied, "service unavailable"));
            }
        };
        // From here the publication's guard owes the registry a DetachPublisher, whatever happens.
        self.state = State::Publishing(Box::new(Publication::new(slug.clone(), publisher, handle)));
        let results = guarded(|| self.session.accept_request(request_id))??;
        self.queue_packets(results);
        tracing::info!(peer = %self.peer, %slug, %publisher, "rtmp publish started");
        Ok(())
    }

    /// Queues a `NetStream.Publish.*` error `onStatus` and returns the close it implies.
    fn refuse(&mut self, rejection: StreamKeyRejection, description: &str) -> Close {
        let code = rejection.status_code();
        match publish_refusal_bytes(
            code,
            description,
            self.publish_stream_id,
            self.outbound_chunk_size,
        ) {
            Ok(bytes) => self.out.extend_from_slice(&bytes),
            Err(error) => {
                tracing::error!(peer = %self.peer, %error, "rtmp refusal could not be serialized")
            }
        }
        Close::PublishRefused(code)
    }

    /// Ends the current publish, if any, and goes back to `Connected`. The connection stays
    /// open: clients close it themselves right after, and one may publish again.
    fn end_publish(&mut self, reason: &str) {
        if !matches!(self.state, State::Publishing(_)) {
            // The later signals of a stop sequence (deleteStream after FCUnpublish, TCP close).
            tracing::debug!(peer = %self.peer, signal = reason, "rtmp end of publish, none live");
            return;
        }
        if let State::Publishing(publication) = std::mem::replace(&mut self.state, State::Connected)
        {
            self.unpublished_since = Instant::now();
            tracing::info!(
                peer = %self.peer,
                slug = %publication.slug,
                publisher = %publication.publisher,
                reason,
                audio_messages = publication.audio_messages,
                audio_bytes = publication.audio_bytes,
                audio_dropped = publication.dropped,
                video_bytes = self.video_bytes,
                duration_ms = publication.started.elapsed().as_millis() as u64,
                "rtmp publish ended"
            );
            publication.finish(reason);
            self.detach_reasons.push(reason.to_string());
        }
    }

    /// Appends the session's outbound packets; other results of accept/reject carry nothing.
    fn queue_packets(&mut self, results: Vec<ServerSessionResult>) {
        for result in results {
            if let ServerSessionResult::OutboundResponse(packet) = result {
                self.out.extend_from_slice(&packet.bytes);
            }
        }
    }

    async fn flush(&mut self) -> Result<(), Close> {
        if self.out.is_empty() {
            return Ok(());
        }
        tokio::time::timeout(WRITE_TIMEOUT, self.socket.write_all(&self.out))
            .await
            .map_err(|_| Close::WriteTimeout(WRITE_TIMEOUT))?
            .map_err(Close::Write)?;
        self.out.clear();
        Ok(())
    }

    /// Last words: deliver pending packets if the peer still listens, end the publish with the
    /// close reason, log one line.
    async fn close(&mut self, close: &Close) {
        if !matches!(close, Close::Write(_) | Close::WriteTimeout(_)) && !self.out.is_empty() {
            let _ =
                tokio::time::timeout(FINAL_FLUSH_TIMEOUT, self.socket.write_all(&self.out)).await;
            self.out.clear();
        }
        let state = self.state.name();
        let reason = close.to_string();
        if matches!(self.state, State::Publishing(_)) {
            self.end_publish(&reason);
        }
        if close.is_routine() {
            tracing::info!(peer = %self.peer, state, %reason, "rtmp connection closed");
        } else {
            tracing::warn!(peer = %self.peer, state, %reason, "rtmp connection closed");
        }
        let _ = self.socket.shutdown().await;
    }
}
