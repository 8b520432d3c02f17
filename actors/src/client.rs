//! `ClientActor`: one browser's WebSocket (actix-ws, see DESIGN.md "Backpressure").
//!
//! The actor owns the socket's `Session` and an `Outbox`; at most one frame is in flight, so
//! the outbox (not an unbounded socket buffer) decides what waits: finals and control frames
//! first, only the newest partial per utterance. Its mailbox stays small because every
//! `Deliver` is moved into the outbox at once.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use actix::prelude::*;
use actix_ws::{CloseCode, CloseReason, Message as WsMessage, ProtocolError};
use bytestring::ByteString;

use crate::outbound_frames::{error_frame, pong_frame};
use crate::outbox::{Outbound, Outbox, Pushed};
use crate::registry::{GetOrCreateSession, SessionRegistry};
use crate::supervisor::{
    SessionSupervisor, StartTranscription, StopTranscription, Subscribe, Unsubscribe,
};
use crate::wire::{to_json, ClientCommand, TranscriptionStartedMessage};

/// A socket that has not accepted a frame for this long is a slow consumer (SPEC §4.4).
const SEND_TIMEOUT: Duration = Duration::from_secs(10);

/// Process-unique client id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ClientId(pub u64);

impl ClientId {
    pub fn next() -> ClientId {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        ClientId(NEXT.fetch_add(1, Ordering::Relaxed))
    }
}

/// A frame for this client from its session's broadcaster.
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct Deliver(pub Outbound);

pub struct ClientActor {
    id: ClientId,
    socket: actix_ws::Session,
    incoming: Option<actix_ws::MessageStream>,
    registry: Addr<SessionRegistry>,
    subscriptions: HashMap<String, Addr<SessionSupervisor>>,
    initial_subscription: Option<String>,
    outbox: Outbox,
    in_flight: bool,
    closing: bool,
}

impl ClientActor {
    pub fn new(
        socket: actix_ws::Session,
        incoming: actix_ws::MessageStream,
        registry: Addr<SessionRegistry>,
        initial_subscription: Option<String>,
        max_queued_finals: usize,
    ) -> Self {
        ClientActor {
            id: ClientId::next(),
            socket,
            incoming: Some(incoming),
            registry,
            subscriptions: HashMap::new(),
            initial_subscription,
            outbox: Outbox::new(max_queued_finals),
            in_flight: false,
            closing: false,
        }
    }

    fn enqueue(&mut self, outbound: Outbound, ctx: &mut Context<Self>) {
        match self.outbox.push(outbound) {
            Pushed::Queued | Pushed::PartialDropped => self.pump(ctx),
            Pushed::TooManyFinals => {
                tracing::warn!(
                    client = self.id.0,
                    "client too far behind on finals: closing"
                );
                self.close(ctx, CloseCode::Again, "slow_consumer");
            }
        }
    }

    fn reply(&mut self, frame: ByteString, ctx: &mut Context<Self>) {
        self.enqueue(Outbound::Control(frame), ctx);
    }

    /// Writes the next frame if none is in flight.
    fn pump(&mut self, ctx: &mut Context<Self>) {
        if self.in_flight || self.closing {
            return;
        }
        let Some(frame) = self.outbox.pop() else {
            return;
        };
        self.in_flight = true;
        let mut socket = self.socket.clone();
        async move { tokio::time::timeout(SEND_TIMEOUT, socket.text(frame)).await }
            .into_actor(self)
            .map(|result, act, ctx| {
                act.in_flight = false;
                match result {
                    Ok(Ok(())) => act.pump(ctx),
                    Ok(Err(_closed)) => {
                        tracing::debug!(client = act.id.0, "send failed: client gone");
                        act.closing = true;
                        ctx.stop();
                    }
                    Err(_elapsed) => {
                        tracing::warn!(
                            client = act.id.0,
                            "socket accepted nothing for 10 s: closing"
                        );
                        act.close(ctx, CloseCode::Again, "slow_consumer");
                    }
                }
            })
            .spawn(ctx);
    }

    fn close(&mut self, ctx: &mut Context<Self>, code: CloseCode, description: &str) {
        if self.closing {
            return;
        }
        self.closing = true;
        let socket = self.socket.clone();
        let reason = CloseReason {
            code,
            description: Some(description.to_owned()),
        };
        async move {
            let _ = tokio::time::timeout(Duration::from_secs(1), socket.close(Some(reason))).await;
        }
        .into_actor(self)
        .map(|_, _, ctx| ctx.stop())
        .spawn(ctx);
    }

    fn subscribe(
        &mut self,
        slug: String,
        ctx: &mut Context<Self>,
        then_start: bool,
        then_stop: bool,
    ) {
        let registry = self.registry.clone();
        let deliver = ctx.address().recipient();
        let client = self.id;
        let already = self.subscriptions.get(&slug).cloned();
        async move {
            let supervisor = match already {
                Some(s) => s,
                None => registry
                    .send(GetOrCreateSession {
                        session_slug: slug.clone(),
                    })
                    .await
                    .map_err(|e| e.to_string())?
                    .map_err(|e| e.to_string())?,
            };
            let snapshot = if then_start {
                Some(
                    supervisor
                        .send(StartTranscription)
                        .await
                        .map_err(|e| e.to_string())?,
                )
            } else if then_stop {
                Some(
                    supervisor
                        .send(StopTranscription)
                        .await
                        .map_err(|e| e.to_string())?,
                )
            } else {
                None
            };
            Ok::<_, String>((slug, supervisor, snapshot))
        }
        .into_actor(self)
        .map(move |result, act, ctx| match result {
            Ok((slug, supervisor, snapshot)) => {
                if !act.subscriptions.contains_key(&slug) {
                    supervisor.do_send(Subscribe {
                        client,
                        deliver: deliver.clone(),
                    });
                    act.subscriptions.insert(slug.clone(), supervisor);
                }
                if let (Some(snapshot), true) = (snapshot, then_start) {
                    let frame = to_json(&TranscriptionStartedMessage {
                        kind: "transcription_started",
                        session_slug: &slug,
                        rtmp_url: &snapshot.rtmp_url,
                        state: snapshot.state,
                    });
                    act.reply(frame.into(), ctx);
                }
            }
            Err(message) => act.reply(error_frame("bad_request", &message), ctx),
        })
        .spawn(ctx);
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
            ClientCommand::Subscribe { session_slug, .. } => {
                self.subscribe(session_slug, ctx, false, false)
            }
            ClientCommand::StartTranscription { session_slug } => {
                self.subscribe(session_slug, ctx, true, false)
            }
            ClientCommand::StopTranscription { session_slug } => {
                self.subscribe(session_slug, ctx, false, true)
            }
        }
    }
}

impl Actor for ClientActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(256);
        if let Some(incoming) = self.incoming.take() {
            // SPEC §4.1: a frame over 64 KiB closes the socket with 1009.
            ctx.add_stream(incoming.max_frame_size(64 * 1024));
        }
        if let Some(slug) = self.initial_subscription.take() {
            self.subscribe(slug, ctx, false, false);
        }
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        for supervisor in self.subscriptions.values() {
            supervisor.do_send(Unsubscribe { client: self.id });
        }
    }
}

impl Handler<Deliver> for ClientActor {
    type Result = ();

    fn handle(&mut self, Deliver(outbound): Deliver, ctx: &mut Self::Context) {
        self.enqueue(outbound, ctx);
    }
}

impl StreamHandler<Result<WsMessage, ProtocolError>> for ClientActor {
    fn handle(&mut self, message: Result<WsMessage, ProtocolError>, ctx: &mut Self::Context) {
        match message {
            Ok(WsMessage::Text(text)) => self.handle_command(&text, ctx),
            Ok(WsMessage::Ping(payload)) => {
                let mut socket = self.socket.clone();
                actix_rt::spawn(async move {
                    let _ = socket.pong(&payload).await;
                });
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
