//! `BroadcastActor`: numbers finals, attributes speakers, serialises each message once and
//! hands it to every client of the session without ever waiting on one (docs/PROTOCOL.md#transcript-messages, #active-speaker).
//!
//! It also keeps the most recent finals (`replay`: the ring, and where a resuming client's
//! next page comes from). A client reconnecting with `lastSeq=N` is *catching up*: it gets no
//! live finals or partials, and pulls every final after N page by page ([`NextReplayPage`],
//! asked only when its outbox has room) from the ring or, for older ones, the database. The
//! page that finds nothing left switches it to live in the same handler, so no final can fall
//! between the replay and live delivery, and none is sent twice
//! (docs/PROTOCOL.md#resume-and-delivery-guarantees).
//!
//! HTTP broadcast mode (docs/PROTOCOL.md#http-broadcast-mode): on an ingest-only instance every message it emits also
//! goes to the [`crate::relay::RelayPoster`] ([`BroadcastActor::with_relay`]); on the receiving
//! instance [`RelayedTranscript`] fans a posted message out as if it were local, keeping the
//! sender's `seq`.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use bytestring::ByteString;

use crate::messages::{
    now_ms, ClientId, Deliver, NextReplayPage, ReplayPage, SessionState, TranscriptEvent,
};
use crate::metrics::names::{
    INGEST_BROADCAST_LATENCY_MS, WS_BROADCAST_ERRORS_TOTAL, WS_BROADCAST_LOOP_MS,
    WS_QUEUE_DROPS_TOTAL,
};
use crate::metrics::SessionMetrics;
use crate::outbound_frames::status_frame;
use crate::outbox::Outbound;
use crate::persistence::{FinalRecord, LoadFinalsAfter, LoadLastSeq, SaveFinal, Storage};
use crate::relay::RelayMessage;
use crate::speaker::{SpeakerReport, SpeakerTimeline};
use crate::wire::{to_json, IncomingTranscript, TranscriptMessage};

mod replay;

use replay::{judge_stored, PagePlan, ReplayRing, StoredPage};

/// How many utterance ids are remembered as finalized (duplicate finals are ignored).
const FINALIZED_MEMORY: usize = 4096;
/// Open utterances whose last relayed partial is remembered (to refuse stale ones).
const RELAYED_PARTIALS_MEMORY: usize = 1024;

/// A docs/PROTOCOL.md#transcript-messages message another instance posted (HTTP broadcast mode), already validated.
/// `None`: the session went away before it could be handled.
#[derive(Message)]
#[rtype(result = "Option<RelayOutcome>")]
pub struct RelayedTranscript(pub IncomingTranscript);

/// What became of a relayed message (the broadcast endpoint's answer).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RelayOutcome {
    /// Fanned out to this instance's clients (and, for a final, saved).
    Delivered,
    /// A final whose `seq` or utterance was already delivered: ignored.
    Duplicate,
    /// A partial older than what was delivered for its utterance, or after its final: ignored.
    Stale,
}

enum Pending {
    Local(TranscriptEvent),
    Relayed(
        IncomingTranscript,
        tokio::sync::oneshot::Sender<RelayOutcome>,
    ),
}

#[derive(Message)]
#[rtype(result = "()")]
pub struct AddClient {
    pub id: ClientId,
    pub deliver: Recipient<Deliver>,
    /// `Some`: the client resumes after this `seq` and pulls the finals it missed
    /// ([`NextReplayPage`]) before it gets any live. Never negative (the routes refuse it).
    pub last_seq: Option<i64>,
}

#[derive(Message)]
#[rtype(result = "()")]
pub struct RemoveClient {
    pub id: ClientId,
}

/// A session state change, sent to every client as `{"type":"status"}`.
#[derive(Message)]
#[rtype(result = "()")]
pub struct BroadcastStatus {
    pub state: SessionState,
    pub detail: String,
}

/// `POST /api/active-speaker`, forwarded by the supervisor.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ReportSpeaker(pub SpeakerReport);

enum Numbering {
    /// Waiting for the stored last `seq`; events wait too, so numbering never restarts at 1,
    /// and resuming clients are told to ask again.
    Loading { pending: Vec<Pending> },
    Ready {
        last_seq: i64,
        /// The newest finals, for resuming clients; it starts empty above the stored ones.
        ring: ReplayRing,
    },
}

/// How finals reach one client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Delivery {
    /// Every message as it happens.
    Live,
    /// Resuming: it pulls the finals it missed page by page, so live finals (which it will
    /// pull too) and partials (superseded by those finals) are not sent to it. Control frames
    /// and the goodbye still are.
    CatchingUp,
}

struct ClientEntry {
    deliver: Recipient<Deliver>,
    delivery: Delivery,
}

pub struct BroadcastActor {
    session_slug: Arc<str>,
    /// The session's span: each delivered final is a `broadcast` child (partials are not).
    span: tracing::Span,
    storage: Storage,
    speaker_ttl_ms: i64,
    numbering: Numbering,
    clients: HashMap<ClientId, ClientEntry>,
    finalized: HashSet<String>,
    finalized_order: VecDeque<String>,
    speakers: SpeakerTimeline,
    /// `ws.session_broadcast_lag_ms{sessionSlug}` (the supervisor owns the client gauge).
    lag_ms: ::metrics::Gauge,
    /// Handles looked up once: every message records both.
    broadcast_latency_ms: ::metrics::Histogram,
    broadcast_loop_ms: ::metrics::Histogram,
    /// HTTP broadcast mode: every emitted message is also posted to another instance.
    relay: Option<Recipient<RelayMessage>>,
    /// Relayed partials: utterance id → (`ts`, `endedAt`) of the newest one delivered.
    relayed_partials: HashMap<String, (i64, i64)>,
}

impl BroadcastActor {
    pub fn new(session_slug: &str, storage: Storage, speaker_ttl: Duration) -> Self {
        BroadcastActor {
            session_slug: session_slug.into(),
            span: tracing::Span::none(),
            storage,
            speaker_ttl_ms: speaker_ttl.as_millis() as i64,
            numbering: Numbering::Loading {
                pending: Vec::new(),
            },
            clients: HashMap::new(),
            finalized: HashSet::new(),
            finalized_order: VecDeque::new(),
            speakers: SpeakerTimeline::default(),
            lag_ms: SessionMetrics::new(session_slug).broadcast_lag_ms,
            broadcast_latency_ms: ::metrics::histogram!(INGEST_BROADCAST_LATENCY_MS),
            broadcast_loop_ms: ::metrics::histogram!(WS_BROADCAST_LOOP_MS),
            relay: None,
            relayed_partials: HashMap::new(),
        }
    }

    /// Also hands every message this actor emits to `relay` (HTTP broadcast mode).
    pub fn with_relay(mut self, relay: Option<Recipient<RelayMessage>>) -> Self {
        self.relay = relay;
        self
    }

    fn relay(&self, is_final: bool, frame: &ByteString) {
        if let Some(relay) = &self.relay {
            relay.do_send(RelayMessage {
                session_slug: self.session_slug.clone(),
                is_final,
                frame: frame.clone(),
            });
        }
    }

    /// Traces each delivered final as a `broadcast` child of `session_span`.
    pub fn traced(mut self, session_span: tracing::Span) -> Self {
        self.span = session_span;
        self
    }

    fn load_last_seq(&mut self, ctx: &mut Context<Self>) {
        let request = self.storage.load_last_seq.send(LoadLastSeq {
            session_slug: self.session_slug.to_string(),
        });
        request
            .into_actor(self)
            .map(|result, act, ctx| match result {
                Ok(Ok(last_seq)) => {
                    let ready = Numbering::Ready { last_seq, ring: ReplayRing::after(last_seq) };
                    let pending = match std::mem::replace(&mut act.numbering, ready) {
                        Numbering::Loading { pending } => pending,
                        Numbering::Ready { .. } => Vec::new(),
                    };
                    for item in pending {
                        match item {
                            Pending::Local(event) => act.publish(event),
                            Pending::Relayed(message, reply) => {
                                let outcome = act.accept_relayed(message);
                                let _ = reply.send(outcome);
                            }
                        }
                    }
                }
                Ok(Err(error)) => {
                    tracing::warn!(session = %act.session_slug, %error, "cannot read last seq; retrying");
                    ctx.run_later(Duration::from_secs(1), |act, ctx| act.load_last_seq(ctx));
                }
                Err(error) => {
                    tracing::warn!(session = %act.session_slug, %error, "storage unavailable; retrying");
                    ctx.run_later(Duration::from_secs(1), |act, ctx| act.load_last_seq(ctx));
                }
            })
            .spawn(ctx);
    }

    /// `provisional` is not stored: a final replayed from the database shows without it.
    fn final_frame(&self, record: &FinalRecord, provisional: bool) -> Outbound {
        let message = TranscriptMessage {
            kind: "transcript",
            session_slug: &self.session_slug,
            utterance_id: &record.utterance_id,
            text: &record.text,
            is_final: true,
            speaker: &record.speaker,
            speaker_id: &record.speaker_id,
            ts: now_ms(),
            transcript_type: "final",
            seq: Some(record.seq),
            started_at: record.started_at_ms,
            ended_at: record.ended_at_ms,
            language: record.language.as_deref(),
            provisional,
        };
        Outbound::Final {
            session: self.session_slug.clone(),
            seq: record.seq,
            utterance_id: record.utterance_id.as_str().into(),
            frame: ByteString::from(to_json(&message)),
        }
    }

    fn publish(&mut self, event: TranscriptEvent) {
        let last_seq = match &mut self.numbering {
            Numbering::Loading { pending, .. } => {
                pending.push(Pending::Local(event));
                return;
            }
            Numbering::Ready { last_seq, .. } => last_seq,
        };
        if self.finalized.contains(&event.utterance_id) {
            // A partial after its final, or a repeated final: never shown, never renumbered.
            return;
        }
        let (speaker, speaker_id) = self.speakers.attribute(
            event.ended_at_ms,
            self.speaker_ttl_ms,
            event.provider_speaker.as_deref(),
        );
        if event.is_final {
            *last_seq += 1;
            let record = FinalRecord {
                session_slug: self.session_slug.to_string(),
                seq: *last_seq,
                utterance_id: event.utterance_id,
                text: event.text,
                speaker: speaker.to_string(),
                speaker_id: speaker_id.to_string(),
                started_at_ms: event.started_at_ms,
                ended_at_ms: event.ended_at_ms,
                language: event.language,
            };
            // Never the text: transcripts are the meeting's content, not telemetry.
            let _span = tracing::info_span!(parent: &self.span, "broadcast",
                session.slug = %self.session_slug, transcript.seq = record.seq,
                transcript.utterance_id = %record.utterance_id, broadcast.clients = self.clients.len())
            .entered();
            let outbound = self.final_frame(&record, event.provisional);
            self.remember_final(record.utterance_id.clone());
            self.keep_for_replay(record.seq, &outbound);
            self.storage.save_final.do_send(SaveFinal(record));
            if let Outbound::Final { frame, .. } = &outbound {
                self.relay(true, frame);
            }
            self.fan_out(outbound);
            self.record_latency(event.received_at);
        } else {
            let message = TranscriptMessage {
                kind: "transcript",
                session_slug: &self.session_slug,
                utterance_id: &event.utterance_id,
                text: &event.text,
                is_final: false,
                speaker: &speaker,
                speaker_id: &speaker_id,
                ts: now_ms(),
                transcript_type: "partial",
                seq: None,
                started_at: event.started_at_ms,
                ended_at: event.ended_at_ms,
                language: event.language.as_deref(),
                provisional: false,
            };
            let frame = ByteString::from(to_json(&message));
            self.relay(false, &frame);
            self.fan_out(Outbound::Partial {
                utterance_id: event.utterance_id.as_str().into(),
                frame,
            });
            self.record_latency(event.received_at);
        }
    }

    /// `ingest.broadcast_latency_ms`: the provider message arrived at `received`; its frame
    /// is now in every client's outbound path (the `ClientActor` that writes its socket).
    fn record_latency(&self, received: Instant) {
        let ms = received.elapsed().as_secs_f64() * 1000.0;
        self.broadcast_latency_ms.record(ms);
        self.lag_ms.set(ms);
    }

    /// A message another instance posted, fanned out as if local with the sender's `seq`.
    /// Never relayed onwards. Must only be called once numbering is ready.
    fn accept_relayed(&mut self, message: IncomingTranscript) -> RelayOutcome {
        let Numbering::Ready { last_seq, .. } = &mut self.numbering else {
            return RelayOutcome::Stale;
        };
        let id = message.utterance_id;
        let ended_at = message.ended_at.unwrap_or(message.ts);
        let started_at = message.started_at.unwrap_or(ended_at);
        if message.is_final {
            let seq = message.seq.unwrap_or(0);
            if seq <= *last_seq || self.finalized.contains(&id) {
                return RelayOutcome::Duplicate;
            }
            if seq > *last_seq + 1 {
                tracing::warn!(session = %self.session_slug, expected = *last_seq + 1, got = seq, "relayed finals skipped some seq numbers (dropped by the sender)");
            }
            *last_seq = seq;
            let record = FinalRecord {
                session_slug: self.session_slug.to_string(),
                seq,
                utterance_id: id,
                text: message.text,
                speaker: message.speaker,
                speaker_id: message.speaker_id,
                started_at_ms: started_at,
                ended_at_ms: ended_at,
                language: message.language,
            };
            self.relayed_partials.remove(&record.utterance_id);
            let outbound = self.final_frame(&record, message.provisional);
            self.remember_final(record.utterance_id.clone());
            self.keep_for_replay(record.seq, &outbound);
            self.storage.save_final.do_send(SaveFinal(record));
            self.fan_out(outbound);
            return RelayOutcome::Delivered;
        }
        if self.finalized.contains(&id) {
            return RelayOutcome::Stale;
        }
        let mark = (message.ts, ended_at);
        if self
            .relayed_partials
            .get(&id)
            .is_some_and(|last| mark <= *last)
        {
            return RelayOutcome::Stale;
        }
        if self.relayed_partials.len() >= RELAYED_PARTIALS_MEMORY
            && !self.relayed_partials.contains_key(&id)
        {
            // Utterances whose final never came; forgetting them only weakens stale detection.
            self.relayed_partials.clear();
        }
        self.relayed_partials.insert(id.clone(), mark);
        let frame = ByteString::from(to_json(&TranscriptMessage {
            kind: "transcript",
            session_slug: &self.session_slug,
            utterance_id: &id,
            text: &message.text,
            is_final: false,
            speaker: &message.speaker,
            speaker_id: &message.speaker_id,
            ts: now_ms(),
            transcript_type: "partial",
            seq: None,
            started_at,
            ended_at,
            language: message.language.as_deref(),
            provisional: false,
        }));
        self.fan_out(Outbound::Partial {
            utterance_id: id.as_str().into(),
            frame,
        });
        RelayOutcome::Delivered
    }

    fn fan_out(&mut self, outbound: Outbound) {
        let started = Instant::now();
        let mut gone = Vec::new();
        let transcript = matches!(outbound, Outbound::Final { .. } | Outbound::Partial { .. });
        for (id, client) in &self.clients {
            if transcript && client.delivery == Delivery::CatchingUp {
                // Kept in the ring (finals) for its next page, or superseded (partials).
                continue;
            }
            if !deliver(&client.deliver, outbound.clone()) {
                gone.push(*id);
            }
        }
        for id in gone {
            ::metrics::counter!(WS_BROADCAST_ERRORS_TOTAL).increment(1);
            self.clients.remove(&id);
        }
        self.broadcast_loop_ms
            .record(started.elapsed().as_secs_f64() * 1000.0);
    }

    /// A resuming client starts catching up: it asks for its pages itself (its outbox knows
    /// when it has room), and gets nothing live until a page finds nothing left.
    fn add_client(&mut self, msg: AddClient) {
        let delivery = match msg.last_seq {
            Some(_) => Delivery::CatchingUp,
            None => Delivery::Live,
        };
        self.clients.insert(
            msg.id,
            ClientEntry {
                deliver: msg.deliver,
                delivery,
            },
        );
    }

    /// Keeps a final just numbered for resuming clients.
    fn keep_for_replay(&mut self, seq: i64, outbound: &Outbound) {
        if let Numbering::Ready { ring, .. } = &mut self.numbering {
            ring.push(seq, outbound.clone());
        }
    }

    /// The next page for a catching-up client (docs/PROTOCOL.md#resume-and-delivery-guarantees).
    fn next_page(&mut self, msg: NextReplayPage) -> ResponseActFuture<Self, ReplayPage> {
        let answer = |page| -> ResponseActFuture<Self, ReplayPage> { Box::pin(fut::ready(page)) };
        let Numbering::Ready { last_seq, ring } = &self.numbering else {
            return answer(ReplayPage::NotYet);
        };
        let Some(client) = self.clients.get_mut(&msg.client) else {
            // Not added yet (cannot happen in order, but costs nothing to allow) or gone.
            return answer(ReplayPage::NotYet);
        };
        let (after, floor, limit) = match ring.page(msg.after, *last_seq, msg.limit) {
            PagePlan::CaughtUp => {
                // In the same handler as the check: the next final numbered goes to it live.
                client.delivery = Delivery::Live;
                return answer(ReplayPage::Live);
            }
            PagePlan::Memory { frames, through } => {
                return answer(ReplayPage::Finals { frames, through });
            }
            PagePlan::Database {
                after,
                floor,
                limit,
            } => (after, floor, limit),
        };
        let request = LoadFinalsAfter {
            session_slug: self.session_slug.to_string(),
            after_seq: after,
            limit: i64::try_from(limit).unwrap_or(i64::MAX),
        };
        let read = self
            .storage
            .load_finals_after
            .send(request)
            .into_actor(self);
        Box::pin(read.map(move |result, act, _| match result {
            Ok(Ok(records)) => match judge_stored(after, floor, records) {
                StoredPage::Finals(records) => {
                    let through = records.last().map_or(after, |r| r.seq);
                    let frames = records.iter().map(|r| act.final_frame(r, false)).collect();
                    ReplayPage::Finals { frames, through }
                }
                StoredPage::NotStoredYet => ReplayPage::NotYet,
                StoredPage::Lost { through } => {
                    tracing::warn!(session = %act.session_slug, after, through, "finals missing from the database were skipped in a replay");
                    ReplayPage::Finals { frames: Vec::new(), through }
                }
            },
            Ok(Err(error)) => {
                tracing::warn!(session = %act.session_slug, %error, "replay from the database failed");
                ReplayPage::Unavailable
            }
            Err(error) => {
                tracing::warn!(session = %act.session_slug, %error, "storage unavailable for a replay");
                ReplayPage::Unavailable
            }
        }))
    }

    fn remember_final(&mut self, utterance_id: String) {
        if self.finalized.insert(utterance_id.clone()) {
            self.finalized_order.push_back(utterance_id);
            if self.finalized_order.len() > FINALIZED_MEMORY {
                if let Some(old) = self.finalized_order.pop_front() {
                    self.finalized.remove(&old);
                }
            }
        }
    }
}

/// Hands a frame to one client without waiting. False when the client is gone.
fn deliver(client: &Recipient<Deliver>, outbound: Outbound) -> bool {
    match client.try_send(Deliver(outbound)) {
        Ok(()) => true,
        Err(SendError::Full(Deliver(outbound))) => {
            // The client actor moves each frame into its outbox at once; a full mailbox means
            // its arbiter is starved. Partials may go; finals and control frames may not.
            if matches!(outbound, Outbound::Partial { .. }) {
                ::metrics::counter!(WS_QUEUE_DROPS_TOTAL).increment(1);
            } else {
                client.do_send(Deliver(outbound));
            }
            true
        }
        Err(SendError::Closed(_)) => false,
    }
}

impl Actor for BroadcastActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(4096);
        self.load_last_seq(ctx);
    }
}

impl Handler<TranscriptEvent> for BroadcastActor {
    type Result = ();

    fn handle(&mut self, event: TranscriptEvent, _: &mut Self::Context) {
        self.publish(event);
    }
}

impl Handler<RelayedTranscript> for BroadcastActor {
    type Result = ResponseFuture<Option<RelayOutcome>>;

    fn handle(
        &mut self,
        RelayedTranscript(message): RelayedTranscript,
        _: &mut Self::Context,
    ) -> Self::Result {
        if let Numbering::Loading { pending, .. } = &mut self.numbering {
            // Judged once the stored last seq is known, in arrival order with local events.
            let (reply, outcome) = tokio::sync::oneshot::channel();
            pending.push(Pending::Relayed(message, reply));
            return Box::pin(async move { outcome.await.ok() });
        }
        let outcome = self.accept_relayed(message);
        Box::pin(std::future::ready(Some(outcome)))
    }
}

impl Handler<AddClient> for BroadcastActor {
    type Result = ();

    fn handle(&mut self, msg: AddClient, _: &mut Self::Context) {
        self.add_client(msg);
    }
}

impl Handler<NextReplayPage> for BroadcastActor {
    type Result = ResponseActFuture<Self, ReplayPage>;

    fn handle(&mut self, msg: NextReplayPage, _: &mut Self::Context) -> Self::Result {
        self.next_page(msg)
    }
}

impl Handler<RemoveClient> for BroadcastActor {
    type Result = ();

    fn handle(&mut self, msg: RemoveClient, _: &mut Self::Context) {
        self.clients.remove(&msg.id);
    }
}

/// Shutdown: every client closes with 1001 after the frames it was given before this.
#[derive(Message)]
#[rtype(result = "()")]
pub struct SayGoodbye;

impl Handler<SayGoodbye> for BroadcastActor {
    type Result = ();

    fn handle(&mut self, _: SayGoodbye, _: &mut Self::Context) {
        // To catching-up clients too: each closes once its replay is written (or the session
        // is gone), and resumes elsewhere with its last `seq`.
        self.fan_out(Outbound::Goodbye);
    }
}

impl Handler<BroadcastStatus> for BroadcastActor {
    type Result = ();

    fn handle(&mut self, msg: BroadcastStatus, _: &mut Self::Context) {
        let frame = status_frame(&self.session_slug, msg.state, &msg.detail);
        self.fan_out(Outbound::Control(frame));
    }
}

impl Handler<ReportSpeaker> for BroadcastActor {
    type Result = ();

    fn handle(&mut self, ReportSpeaker(report): ReportSpeaker, _: &mut Self::Context) {
        self.speakers.record(report);
    }
}

#[cfg(test)]
mod tests;
