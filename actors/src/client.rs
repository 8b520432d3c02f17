//! `ClientActor`: one browser's WebSocket (actix-ws; docs/ARCHITECTURE.md "Backpressure" says
//! why not actix-web-actors).
//!
//! The actor owns the client's subscriptions, commands and heartbeat. Its socket's write side
//! is a [`SocketWriter`], shared with the fan-out hub of the actor's worker thread
//! ([`crate::fan_out`]): transcripts reach the writer from the hub in a plain call, one
//! message per thread rather than per client, and the writer's outbox (not an unbounded socket
//! buffer) decides what waits: finals and control frames first, only the newest partial per
//! utterance. What the writer cannot decide (close, next replay page) it tells the actor
//! ([`Written`]).
//!
//! A subscription with `lastSeq` starts by catching up (`catch_up`): the actor asks its session
//! for the next page of missed finals only when the outbox has room for it, so a backlog of any
//! length arrives without tripping `CLIENT_MAX_QUEUED_FINALS`
//! (docs/PROTOCOL.md#resume-and-delivery-guarantees).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use actix::prelude::*;
use actix_ws::{CloseCode, CloseReason, Message as WsMessage, ProtocolError};
use bytestring::ByteString;

use crate::fan_out;

use crate::access::{Action, Grant};
use crate::catch_up::{Answer, CatchUp, Step};
use crate::inbound_limit::{Inbound, InboundLimit};
use crate::messages::{ClientId, Deliver, FanOutThread, NextReplayPage, ReplayPage};
use crate::metrics::names::{
    WS_HEARTBEAT_TIMEOUTS_TOTAL, WS_POLICY_VIOLATION_CLOSES_TOTAL, WS_SLOW_CONSUMER_CLOSES_TOTAL,
};
use crate::outbound_frames::{error_frame, pong_frame};
use crate::outbox::{Outbound, Pushed};
use crate::registry::{GetOrCreateSession, SessionRegistry};
use crate::socket_writer::{SocketWriter, Written, SEND_TIMEOUT};
use crate::supervisor::{
    SessionSupervisor, StartTranscription, StopTranscription, Subscribe, Unsubscribe,
};
use crate::wire::{check_last_seq, to_json, ClientCommand, TranscriptionStartedMessage};

/// Close code of a socket whose token expired (private-use range 4000-4999, RFC 6455 §7.4.2).
const TOKEN_EXPIRED: u16 = 4001;

/// Sessions one socket may follow. A page shows one meeting, a dashboard a few; each
/// subscription costs the socket state and may open a session, so a socket cannot take many.
pub const MAX_SUBSCRIPTIONS_PER_SOCKET: usize = 16;

/// What a subscription does once the client is subscribed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Then {
    Nothing,
    /// `start_transcription`: start, and answer `transcription_started`.
    Start,
    /// `stop_transcription`.
    Stop,
}

/// Per-client limits (docs/PROTOCOL.md#configuration, #resume-and-delivery-guarantees).
#[derive(Debug, Clone, Copy)]
pub struct ClientSettings {
    pub max_queued_finals: usize,
    /// `WS_PING_INTERVAL_MS`.
    pub ping_interval: Duration,
    /// `WS_MAX_MISSED_PONGS`: pings in a row without any frame from the client.
    pub max_missed_pongs: u32,
}

/// The session a client asked for in its upgrade URL.
#[derive(Debug, Clone)]
pub struct InitialSubscription {
    pub session_slug: String,
    pub last_seq: Option<i64>,
}

pub struct ClientActor {
    id: ClientId,
    socket: actix_ws::Session,
    incoming: Option<actix_ws::MessageStream>,
    registry: Addr<SessionRegistry>,
    /// The sessions and role the token granted (docs/PROTOCOL.md#roles).
    grant: Grant,
    subscriptions: HashMap<String, Addr<SessionSupervisor>>,
    /// Subscriptions asked for and not answered yet: they count toward
    /// [`MAX_SUBSCRIPTIONS_PER_SOCKET`] too, or a burst of commands would slip past it.
    subscribing: usize,
    initial_subscription: Option<InitialSubscription>,
    /// Sessions this client is still catching up on (subscribed with `lastSeq`), by slug.
    resuming: HashMap<String, Resuming>,
    writer: SocketWriter,
    /// The worker thread's fan-out, which the sessions reach this client through.
    thread: FanOutThread,
    closing: bool,
    /// The service is shutting down: close with 1001 once the outbox is written.
    leaving: bool,
    settings: ClientSettings,
    /// Pings sent since the client last sent any frame.
    unanswered_pings: u32,
    /// Frames the client may send per second (1008 `policy_violation` beyond).
    inbound: InboundLimit,
    /// When the token the socket was opened with stops being valid: the socket is closed
    /// then with 4001 `token_expired`. `None`: no token (anonymous mode).
    token_valid_until: Option<std::time::SystemTime>,
}

/// One session's catch-up and where its pages come from.
struct Resuming {
    catch_up: CatchUp,
    source: Recipient<NextReplayPage>,
}

/// A subscription's answer: the session, its snapshot after a start or stop, and where a
/// resuming client asks for pages.
type SubscribeAnswer = (
    String,
    Addr<SessionSupervisor>,
    Option<crate::supervisor::SessionSnapshot>,
    Option<Recipient<NextReplayPage>>,
);

impl ClientActor {
    /// Starts the client's actor on the current worker thread and joins that thread's fan-out.
    pub fn open(
        socket: actix_ws::Session,
        incoming: actix_ws::MessageStream,
        registry: Addr<SessionRegistry>,
        grant: Grant,
        initial_subscription: Option<InitialSubscription>,
        settings: ClientSettings,
        token_valid_until: Option<std::time::SystemTime>,
    ) -> Addr<ClientActor> {
        ClientActor::create(|ctx| {
            let id = ClientId::next();
            let writer = SocketWriter::new(
                socket.clone(),
                settings.max_queued_finals,
                ctx.address().recipient(),
            );
            let thread = fan_out::join(id, writer.clone());
            ClientActor {
                id,
                socket,
                incoming: Some(incoming),
                registry,
                grant,
                subscriptions: HashMap::new(),
                subscribing: 0,
                initial_subscription,
                resuming: HashMap::new(),
                writer,
                thread,
                closing: false,
                leaving: false,
                settings,
                unanswered_pings: 0,
                inbound: InboundLimit::default(),
                token_valid_until,
            }
        })
    }

    fn enqueue(&mut self, outbound: Outbound, ctx: &mut Context<Self>) {
        match self.writer.push(outbound) {
            Pushed::Queued | Pushed::DuplicateFinal | Pushed::PartialDropped => self.pump(ctx),
            Pushed::TooManyQueued => {
                tracing::warn!(
                    client = self.id.0,
                    "client too far behind on finals and replies: closing"
                );
                ::metrics::counter!(WS_SLOW_CONSUMER_CLOSES_TOTAL).increment(1);
                self.close(ctx, CloseCode::Again, "slow_consumer");
            }
        }
    }

    fn reply(&mut self, frame: ByteString, ctx: &mut Context<Self>) {
        self.enqueue(Outbound::Control(frame), ctx);
    }

    /// Writes what the socket takes; once the service is leaving and no replay is left, closes
    /// when the outbox is written. Also tells the writer whether a replay waits for room.
    fn pump(&mut self, _ctx: &mut Context<Self>) {
        if self.closing {
            return;
        }
        self.writer.tell_room(!self.resuming.is_empty());
        // A client still catching up closes once its replay is written (or the session is
        // gone), not between two pages.
        if self.leaving && self.resuming.is_empty() {
            self.writer.close_when_drained();
        } else {
            self.writer.flush();
        }
    }

    fn close(&mut self, ctx: &mut Context<Self>, code: CloseCode, description: &str) {
        if self.closing {
            return;
        }
        self.closing = true;
        self.resuming.clear();
        self.writer.stop();
        // Leave the sessions now: nothing more should queue for a client being closed.
        for (_, supervisor) in self.subscriptions.drain() {
            supervisor.do_send(Unsubscribe { client: self.id });
        }
        let socket = self.socket.clone();
        let reason = CloseReason {
            code,
            description: Some(description.to_owned()),
        };
        // A slow client's close frame waits behind the frames it has not read yet; give it as
        // long as a send gets, then drop the connection anyway.
        async move {
            let _ = tokio::time::timeout(SEND_TIMEOUT, socket.close(Some(reason))).await;
        }
        .into_actor(self)
        .map(|_, _, ctx| ctx.stop())
        .spawn(ctx);
    }

    /// Subscribes to `slug` (once), then does what `then` says.
    fn subscribe(
        &mut self,
        slug: String,
        last_seq: Option<i64>,
        then: Then,
        ctx: &mut Context<Self>,
    ) {
        if !self.grant.sessions.allows(&slug) {
            let message = format!("this token is not valid for session {slug:?}");
            self.reply(error_frame("forbidden", &message), ctx);
            return;
        }
        if then != Then::Nothing && !self.grant.role.may(Action::Control) {
            let message = format!(
                "a {} token may not start or stop transcription: it needs role host or service",
                self.grant.role.name()
            );
            self.reply(error_frame("role_forbidden", &message), ctx);
            return;
        }
        let registry = self.registry.clone();
        let deliver = ctx.address().recipient();
        let thread = Some(self.thread.clone());
        let client = self.id;
        let already = self.subscriptions.get(&slug).cloned();
        let new = already.is_none();
        if new {
            if self.subscriptions.len() + self.subscribing >= MAX_SUBSCRIPTIONS_PER_SOCKET {
                let message = format!(
                    "a socket follows at most {MAX_SUBSCRIPTIONS_PER_SOCKET} sessions; open another socket"
                );
                self.reply(error_frame("too_many_subscriptions", &message), ctx);
                return;
            }
            self.subscribing += 1;
        }
        let unavailable = |e: MailboxError| ("unavailable", e.to_string());
        async move {
            let supervisor = match already.clone() {
                Some(s) => s,
                None => registry
                    .send(GetOrCreateSession {
                        session_slug: slug.clone(),
                    })
                    .await
                    .map_err(unavailable)?
                    .map_err(|e| ("bad_request", e.to_string()))?,
            };
            let mut replay = None;
            if already.is_none() {
                let subscribed = supervisor
                    .send(Subscribe {
                        client,
                        deliver,
                        thread,
                        last_seq,
                    })
                    .await
                    .map_err(unavailable)?
                    .map_err(|e| ("too_many_clients", e.to_string()))?;
                replay = subscribed.replay;
            }
            let snapshot = match then {
                Then::Nothing => None,
                Then::Start => Some(supervisor.send(StartTranscription).await),
                Then::Stop => Some(supervisor.send(StopTranscription).await),
            }
            .transpose()
            .map_err(unavailable)?;
            Ok::<_, (&'static str, String)>((slug, supervisor, snapshot, replay))
        }
        .into_actor(self)
        .map(move |result, act, ctx| {
            if new {
                act.subscribing = act.subscribing.saturating_sub(1);
            }
            act.subscribed(result, last_seq, then, ctx)
        })
        .spawn(ctx);
    }

    /// What a subscription's answer does: keep the session, start catching up, answer a start.
    fn subscribed(
        &mut self,
        result: Result<SubscribeAnswer, (&'static str, String)>,
        last_seq: Option<i64>,
        then: Then,
        ctx: &mut Context<Self>,
    ) {
        let act = self;
        match result {
            Ok((slug, supervisor, snapshot, replay)) => {
                act.subscriptions.entry(slug.clone()).or_insert(supervisor);
                if let (Some(after), Some(source)) = (last_seq, replay) {
                    if !act.closing {
                        let catch_up = CatchUp::new(after, act.settings.max_queued_finals);
                        act.resuming
                            .insert(slug.clone(), Resuming { catch_up, source });
                        act.catch_up(ctx);
                    }
                }
                if let (Some(snapshot), Then::Start) = (snapshot, then) {
                    let frame = to_json(&TranscriptionStartedMessage {
                        kind: "transcription_started",
                        session_slug: &slug,
                        rtmp_url: snapshot.rtmp_url.as_deref().unwrap_or_default(),
                        state: snapshot.state,
                    });
                    act.reply(frame.into(), ctx);
                }
            }
            Err((code, message)) => act.reply(error_frame(code, &message), ctx),
        }
    }

    /// Queues what fits of the pages received and asks for the next pages the outbox has room
    /// for, then writes. Called after every write, answer and retry timer.
    fn catch_up(&mut self, ctx: &mut Context<Self>) {
        if self.closing || self.resuming.is_empty() {
            self.pump(ctx);
            return;
        }
        let now = Instant::now();
        let mut asks = Vec::new();
        for (slug, resuming) in &mut self.resuming {
            let frames = resuming.catch_up.take_held(self.writer.room());
            for frame in frames {
                // Within the room just measured: never `TooManyQueued`.
                if self.writer.push(frame) == Pushed::TooManyQueued {
                    tracing::error!(client = self.id.0, "replayed final refused by the outbox");
                }
            }
            if let Step::Ask { after, limit } = resuming.catch_up.step(self.writer.room(), now) {
                asks.push((slug.clone(), resuming.source.clone(), after, limit));
            }
        }
        for (slug, source, after, limit) in asks {
            let request = NextReplayPage {
                client: self.id,
                after,
                limit,
            };
            source
                .send(request)
                .into_actor(self)
                .map(move |answer, act, ctx| act.page_answered(&slug, answer, ctx))
                .spawn(ctx);
        }
        self.pump(ctx);
    }

    fn page_answered(
        &mut self,
        slug: &str,
        answer: Result<ReplayPage, MailboxError>,
        ctx: &mut Context<Self>,
    ) {
        let Some(resuming) = self.resuming.get_mut(slug) else {
            return; // closing
        };
        let Ok(page) = answer else {
            // The session went away (shutdown, or retired): nothing more can come from it.
            self.resuming.remove(slug);
            if !self.leaving {
                let message = format!("session {slug:?} went away during the replay; reconnect with the last seq received");
                self.reply(error_frame("replay_unavailable", &message), ctx);
            }
            self.pump(ctx);
            return;
        };
        match resuming.catch_up.answered(page, Instant::now()) {
            Answer::Paged => {}
            Answer::Live => {
                self.resuming.remove(slug);
            }
            Answer::Retry { retry_in, tell } => {
                if tell {
                    let message = "older transcripts cannot be read right now; the replay retries and live messages wait behind it";
                    self.reply(error_frame("replay_unavailable", message), ctx);
                }
                ctx.run_later(retry_in, |act, ctx| act.catch_up(ctx));
            }
        }
        self.catch_up(ctx);
    }

    /// docs/PROTOCOL.md#resume-and-delivery-guarantees: ping every interval; any frame from the client answers; too many
    /// unanswered pings in a row close the client.
    fn heartbeat(&mut self, ctx: &mut Context<Self>) {
        if self.closing {
            return;
        }
        if self.unanswered_pings >= self.settings.max_missed_pongs {
            tracing::info!(
                client = self.id.0,
                missed = self.unanswered_pings,
                "client stopped answering pings: closing"
            );
            ::metrics::counter!(WS_HEARTBEAT_TIMEOUTS_TOTAL).increment(1);
            self.close(ctx, CloseCode::Away, "heartbeat_timeout");
            return;
        }
        self.unanswered_pings += 1;
        let mut socket = self.socket.clone();
        actix_rt::spawn(async move {
            let _ = socket.ping(b"").await;
        });
    }

    fn handle_command(&mut self, text: &str, ctx: &mut Context<Self>) {
        let command: ClientCommand = match serde_json::from_str(text) {
            Ok(c) => c,
            Err(error) => {
                let message = format!("unrecognised message: {error}");
                self.reply(error_frame("bad_request", &message), ctx);
                return;
            }
        };
        match command {
            ClientCommand::Ping => self.reply(pong_frame(), ctx),
            ClientCommand::Subscribe {
                session_slug,
                last_seq,
            } => match check_last_seq(last_seq) {
                Ok(last_seq) => self.subscribe(session_slug, last_seq, Then::Nothing, ctx),
                Err(message) => self.reply(error_frame("bad_request", &message), ctx),
            },
            ClientCommand::StartTranscription { session_slug } => {
                self.subscribe(session_slug, None, Then::Start, ctx)
            }
            ClientCommand::StopTranscription { session_slug } => {
                self.subscribe(session_slug, None, Then::Stop, ctx)
            }
        }
    }
}

impl Actor for ClientActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(256);
        if let Some(incoming) = self.incoming.take() {
            // docs/PROTOCOL.md#websocket-connection: a frame over 64 KiB closes the socket with 1009.
            ctx.add_stream(incoming.max_frame_size(64 * 1024));
        }
        if let Some(initial) = self.initial_subscription.take() {
            self.subscribe(initial.session_slug, initial.last_seq, Then::Nothing, ctx);
        }
        ctx.run_interval(self.settings.ping_interval, |act, ctx| act.heartbeat(ctx));
        if let Some(until) = self.token_valid_until {
            let left = until
                .duration_since(std::time::SystemTime::now())
                .unwrap_or(Duration::ZERO);
            ctx.run_later(left, |act, ctx| {
                tracing::info!(client = act.id.0, "token expired: closing");
                act.close(ctx, CloseCode::Other(TOKEN_EXPIRED), "token_expired");
            });
        }
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        self.writer.stop();
        fan_out::leave(self.id);
        for supervisor in self.subscriptions.values() {
            supervisor.do_send(Unsubscribe { client: self.id });
        }
    }
}

impl Handler<Deliver> for ClientActor {
    type Result = ();

    fn handle(&mut self, Deliver(outbound): Deliver, ctx: &mut Self::Context) {
        if let Outbound::Goodbye = outbound {
            self.leaving = true;
            self.pump(ctx);
            return;
        }
        self.enqueue(outbound, ctx);
    }
}

impl Handler<Written> for ClientActor {
    type Result = ();

    fn handle(&mut self, written: Written, ctx: &mut Self::Context) {
        match written {
            Written::Gone => {
                tracing::debug!(client = self.id.0, "send failed: client gone");
                self.closing = true;
                ctx.stop();
            }
            Written::SlowConsumer => {
                if !self.closing {
                    tracing::warn!(
                        client = self.id.0,
                        "client too far behind (finals queued, or nothing accepted for 10 s): closing"
                    );
                    ::metrics::counter!(WS_SLOW_CONSUMER_CLOSES_TOTAL).increment(1);
                }
                self.close(ctx, CloseCode::Again, "slow_consumer");
            }
            // A frame left the outbox: maybe room for the next replay page.
            Written::Room => self.catch_up(ctx),
            Written::Drained => self.close(ctx, CloseCode::Away, "server shutting down"),
            Written::Goodbye => {
                self.leaving = true;
                self.pump(ctx);
            }
        }
    }
}

impl StreamHandler<Result<WsMessage, ProtocolError>> for ClientActor {
    fn handle(&mut self, message: Result<WsMessage, ProtocolError>, ctx: &mut Self::Context) {
        if message.is_ok() {
            self.unanswered_pings = 0;
            if self.inbound.admit(std::time::Instant::now()) == Inbound::OverLimit {
                if !self.closing {
                    tracing::info!(client = self.id.0, "client sends too many frames: closing");
                    ::metrics::counter!(WS_POLICY_VIOLATION_CLOSES_TOTAL).increment(1);
                }
                self.close(ctx, CloseCode::Policy, "policy_violation");
                return;
            }
        }
        match message {
            Ok(WsMessage::Text(text)) => self.handle_command(&text, ctx),
            Ok(WsMessage::Ping(payload)) => {
                if !self.closing {
                    self.writer.pong(payload);
                }
            }
            Ok(WsMessage::Close(_)) => {
                self.closing = true;
                ctx.stop();
            }
            Ok(WsMessage::Binary(_)) => self.reply(
                error_frame("bad_request", "binary frames are not accepted"),
                ctx,
            ),
            Ok(_) => {}
            Err(ProtocolError::Overflow) => self.close(ctx, CloseCode::Size, "frame too large"),
            Err(error) => {
                tracing::debug!(client = self.id.0, %error, "websocket protocol error");
                self.close(ctx, CloseCode::Protocol, "protocol error");
            }
        }
    }

    fn finished(&mut self, ctx: &mut Self::Context) {
        // The browser went away: leave every session at once.
        ctx.stop();
    }
}
