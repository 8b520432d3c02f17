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
//!
//! Cluster mode (docs/ARCHITECTURE.md#cluster-mode, [`BroadcastActor::with_cluster`]): the
//! broadcaster of the instance that owns the session numbers its finals and commits each to
//! the cluster before delivering it ([`cluster_seq::CommitQueue`]); on every other instance
//! with clients of the session it follows the owner: it delivers the finals the bus brings
//! with the owner's `seq`, fills any it missed from the cluster's log and then the database,
//! and saves them too (the upsert stores each once), so a final the owner committed reaches
//! the database even if the owner dies before writing it.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use bytestring::ByteString;

use crate::messages::cluster::{
    BusFrame, BusKind, ClusterLink, CommitFinal, CommitOutcome, LeaseToken, PublishFrame,
    ReadFinals,
};
use crate::messages::{
    now_ms, ClientId, Deliver, DeliverBatch, FanOutThread, NextReplayPage, ReplayPage,
    SessionState, TranscriptEvent,
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

mod cluster_seq;
mod replay;
mod threads;

use cluster_seq::{judge_remote, CommitQueue, Remote};
use replay::{judge_stored, PagePlan, ReplayRing, StoredPage};
use threads::Threads;

/// Finals read from the cluster's log or the database in one step of a fill.
const FILL_PAGE: usize = 100;
/// How often a fill asks the database again for finals it knows exist but that no store has
/// yet (the owner's writer still holds them), before it reports them lost: 40 × 250 ms.
const FILL_DB_TRIES: u32 = 40;
/// Local provider events held while a new owner catches up with the cluster's log.
const MAX_HELD_EVENTS: usize = 10_000;

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
    /// A frame another instance published, judged once the stored last `seq` is known.
    Bus(BusFrame),
}

/// This instance's part in numbering the session (docs/ARCHITECTURE.md#cluster-mode).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Role {
    /// Not clustered, or the cluster unreachable when the publisher came: numbers alone.
    Alone,
    /// Holds the session's lease: numbers, and commits each final before delivering it.
    Owner(LeaseToken),
    /// Another instance owns the session: delivers what the bus brings with its `seq`.
    Follower,
}

/// The owner, or the session's broadcaster when it becomes one (docs/ARCHITECTURE.md#cluster-mode).
#[derive(Message)]
#[rtype(result = "()")]
pub struct BecomeOwner {
    /// `None`: the cluster could not be reached; number alone until it is back.
    pub token: Option<LeaseToken>,
    /// The highest `seq` the cluster has committed for the session: numbering continues
    /// after it, once the finals up to it are delivered here.
    pub committed_seq: i64,
}

/// Another instance took the session: deliver its finals from now on.
#[derive(Message)]
#[rtype(result = "()")]
pub struct BecomeFollower;

/// The cluster's bus went away (`false`) or came back (`true`).
#[derive(Message)]
#[rtype(result = "()")]
pub struct BusAvailable(pub bool);

/// A numbered final waiting for its commit.
struct Committing {
    record: FinalRecord,
    outbound: Outbound,
    received_at: Instant,
}

/// A follower (or a new owner) reading the finals it missed from the cluster's log, then the
/// database.
#[derive(Debug, Default)]
struct Fill {
    active: bool,
    /// Asked again while active: another round once this one ends.
    again: bool,
    /// Database reads that found nothing yet (see [`FILL_DB_TRIES`]).
    db_tries: u32,
}

#[derive(Message)]
#[rtype(result = "()")]
pub struct AddClient {
    pub id: ClientId,
    pub deliver: Recipient<Deliver>,
    pub thread: Option<FanOutThread>,
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
    /// The clients above that live on a worker thread with a fan-out hub, by thread.
    threads: Threads,
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
    /// Cluster mode: where finals are committed and frames published.
    cluster: Option<ClusterLink>,
    role: Role,
    commits: CommitQueue<Committing>,
    fill: Fill,
    /// The highest `seq` known to exist anywhere (the bus, a lease grant): a fill goes on
    /// until it has delivered up to here.
    known_head: i64,
    /// Provider events that came while a new owner was still catching up.
    held: VecDeque<TranscriptEvent>,
    /// The owner's newest status frame, for clients that subscribe here.
    remote_status: Option<ByteString>,
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
            threads: Threads::default(),
            finalized: HashSet::new(),
            finalized_order: VecDeque::new(),
            speakers: SpeakerTimeline::default(),
            lag_ms: SessionMetrics::new(session_slug).broadcast_lag_ms,
            broadcast_latency_ms: ::metrics::histogram!(INGEST_BROADCAST_LATENCY_MS),
            broadcast_loop_ms: ::metrics::histogram!(WS_BROADCAST_LOOP_MS),
            relay: None,
            relayed_partials: HashMap::new(),
            cluster: None,
            role: Role::Alone,
            commits: CommitQueue::default(),
            fill: Fill::default(),
            known_head: 0,
            held: VecDeque::new(),
            remote_status: None,
        }
    }

    /// Cluster mode: the session starts as a follower; [`BecomeOwner`] when a publisher is
    /// attached here.
    pub fn with_cluster(mut self, cluster: Option<ClusterLink>) -> Self {
        if cluster.is_some() {
            self.role = Role::Follower;
        }
        self.cluster = cluster;
        self
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
                    // First what the cluster's log holds beyond the database (finals an owner
                    // committed and has not written yet): local events wait for it.
                    act.fill(ctx);
                    for item in pending {
                        match item {
                            Pending::Local(event) => act.publish(event, ctx),
                            Pending::Relayed(message, reply) => {
                                let outcome = act.accept_relayed(message);
                                let _ = reply.send(outcome);
                            }
                            Pending::Bus(frame) => act.on_bus(frame, ctx),
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

    fn publish(&mut self, event: TranscriptEvent, ctx: &mut Context<Self>) {
        let last_seq = match &mut self.numbering {
            Numbering::Loading { pending, .. } => {
                pending.push(Pending::Local(event));
                return;
            }
            Numbering::Ready { last_seq, .. } => *last_seq,
        };
        if self.role == Role::Follower {
            // The session is owned elsewhere (its lease was taken while this provider stream
            // was still ending): its numbers are not ours to give.
            tracing::debug!(session = %self.session_slug, "a provider event after the session moved away: dropped");
            return;
        }
        if self.fill.active {
            // A new owner still catching up: numbering continues after what it reads.
            if self.held.len() >= MAX_HELD_EVENTS {
                self.held.pop_front();
            }
            self.held.push_back(event);
            return;
        }
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
            let record = FinalRecord {
                session_slug: self.session_slug.to_string(),
                seq: self.commits.next_seq(last_seq),
                utterance_id: event.utterance_id,
                text: event.text,
                speaker: speaker.to_string(),
                speaker_id: speaker_id.to_string(),
                started_at_ms: event.started_at_ms,
                ended_at_ms: event.ended_at_ms,
                language: event.language,
            };
            let outbound = self.final_frame(&record, event.provisional);
            self.remember_final(record.utterance_id.clone());
            let committing = Committing {
                record,
                outbound,
                received_at: event.received_at,
            };
            if matches!(self.role, Role::Owner(_)) {
                self.commits.push(committing.record.seq, committing);
                self.commit_next(ctx);
            } else {
                self.deliver_final(committing);
            }
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
            self.publish_to_cluster(BusKind::Partial, &event.utterance_id, &frame);
            self.fan_out(Outbound::Partial {
                utterance_id: event.utterance_id.as_str().into(),
                frame,
            });
            self.record_latency(event.received_at);
        }
    }

    /// A numbered final reaches everyone: the ring, the database, the relay, the clients.
    fn deliver_final(&mut self, committing: Committing) {
        let Committing {
            record,
            outbound,
            received_at,
        } = committing;
        // Never the text: transcripts are the meeting's content, not telemetry.
        let _span = tracing::info_span!(parent: &self.span, "broadcast",
            session.slug = %self.session_slug, transcript.seq = record.seq,
            transcript.utterance_id = %record.utterance_id, broadcast.clients = self.clients.len())
        .entered();
        if let Numbering::Ready { last_seq, .. } = &mut self.numbering {
            *last_seq = record.seq;
        }
        self.keep_for_replay(record.seq, &outbound);
        self.storage.save_final.do_send(SaveFinal(record));
        if let Outbound::Final { frame, .. } = &outbound {
            self.relay(true, frame);
        }
        self.fan_out(outbound);
        self.record_latency(received_at);
    }

    /// The owner commits its finals one at a time, in order; each is delivered once the
    /// cluster took it, or could not be asked (Redis away: the session carries on alone).
    fn commit_next(&mut self, ctx: &mut Context<Self>) {
        let (Some(cluster), Role::Owner(token)) = (&self.cluster, &self.role) else {
            return;
        };
        let Some((seq, head)) = self.commits.start_next() else {
            return;
        };
        let Outbound::Final {
            utterance_id,
            frame,
            ..
        } = &head.outbound
        else {
            return;
        };
        let commit = CommitFinal {
            session_slug: self.session_slug.clone(),
            token: token.clone(),
            seq: *seq,
            utterance_id: utterance_id.clone(),
            frame: frame.clone(),
        };
        cluster
            .commit_final
            .send(commit)
            .into_actor(self)
            .map(|outcome, act, ctx| {
                let outcome = outcome.unwrap_or(CommitOutcome::Unavailable);
                match outcome {
                    CommitOutcome::Committed | CommitOutcome::Unavailable => {
                        if let Some((_, committed)) = act.commits.finish_head() {
                            act.deliver_final(committed);
                        }
                        act.commit_next(ctx);
                    }
                    CommitOutcome::Fenced => {
                        let dropped = act.commits.abandon();
                        tracing::warn!(session = %act.session_slug, dropped,
                            "another instance owns the session now: finals not committed are not delivered");
                        act.become_follower();
                        act.fill(ctx);
                    }
                }
            })
            .spawn(ctx);
    }

    fn publish_to_cluster(&self, kind: BusKind, utterance_id: &str, frame: &ByteString) {
        if let (Some(cluster), Role::Owner(_)) = (&self.cluster, &self.role) {
            cluster.publish.do_send(PublishFrame {
                session_slug: self.session_slug.clone(),
                kind,
                utterance_id: utterance_id.into(),
                frame: frame.clone(),
            });
        }
    }

    fn become_follower(&mut self) {
        let dropped = self.commits.abandon() + self.held.len();
        self.held.clear();
        if dropped > 0 {
            tracing::warn!(session = %self.session_slug, dropped, "the session moved to another instance: transcripts not yet committed here are dropped");
        }
        self.role = Role::Follower;
    }

    /// A frame the session's owner published on another instance.
    fn on_bus(&mut self, frame: BusFrame, ctx: &mut Context<Self>) {
        if self.role != Role::Follower {
            // Ours, or an old owner's that the cluster's log already ordered before our lease.
            return;
        }
        match frame.kind {
            BusKind::Status => {
                self.remote_status = Some(frame.frame.clone());
                self.fan_out(Outbound::Control(frame.frame));
            }
            BusKind::Partial => {
                if !self.fill.active && !self.finalized.contains(frame.utterance_id.as_ref()) {
                    self.fan_out(Outbound::Partial {
                        utterance_id: frame.utterance_id,
                        frame: frame.frame,
                    });
                }
            }
            BusKind::Final => {
                let Some(seq) = frame.seq else { return };
                self.known_head = self.known_head.max(seq);
                let last_seq = match &mut self.numbering {
                    Numbering::Loading { pending } => {
                        pending.push(Pending::Bus(frame));
                        return;
                    }
                    Numbering::Ready { last_seq, .. } => *last_seq,
                };
                if self.fill.active {
                    // The fill reads it from the log, in order.
                    self.fill.again = true;
                    return;
                }
                match judge_remote(seq, last_seq) {
                    Remote::Duplicate => {}
                    Remote::Next => self.accept_remote(frame),
                    Remote::Gap => self.fill(ctx),
                }
            }
        }
    }

    /// A final the owner committed: delivered with its `seq`, kept for replay and saved
    /// (the upsert stores it once whoever else saves it).
    fn accept_remote(&mut self, frame: BusFrame) {
        let Some(seq) = frame.seq else { return };
        let parsed = serde_json::from_str::<IncomingTranscript>(&frame.frame)
            .map_err(|e| e.to_string())
            .and_then(|m| m.validate().map(|()| m));
        if let Numbering::Ready { last_seq, .. } = &mut self.numbering {
            *last_seq = seq;
        }
        let message = match parsed {
            Ok(message) if message.is_final && message.seq == Some(seq) => message,
            Ok(_) => {
                tracing::warn!(session = %self.session_slug, seq, "a final from the cluster that is not the final it claims to be: skipped");
                return;
            }
            Err(error) => {
                tracing::warn!(session = %self.session_slug, seq, error = %error, "a final from the cluster that is no transcript message: skipped");
                return;
            }
        };
        let ended_at = message.ended_at.unwrap_or(message.ts);
        let record = FinalRecord {
            session_slug: self.session_slug.to_string(),
            seq,
            utterance_id: message.utterance_id,
            text: message.text,
            speaker: message.speaker,
            speaker_id: message.speaker_id,
            started_at_ms: message.started_at.unwrap_or(ended_at),
            ended_at_ms: ended_at,
            language: message.language,
        };
        self.remember_final(record.utterance_id.clone());
        let outbound = Outbound::Final {
            session: self.session_slug.clone(),
            seq,
            utterance_id: frame.utterance_id,
            frame: frame.frame,
        };
        self.keep_for_replay(seq, &outbound);
        self.storage.save_final.do_send(SaveFinal(record));
        self.fan_out(outbound);
    }

    /// Reads the finals after the last one delivered here from the cluster's log, page by
    /// page; what the log no longer has (trimmed, or Redis restarted) from the database.
    fn fill(&mut self, ctx: &mut Context<Self>) {
        let Some(cluster) = &self.cluster else { return };
        let Numbering::Ready { last_seq, .. } = &self.numbering else {
            return;
        };
        if self.fill.active {
            self.fill.again = true;
            return;
        }
        self.fill.active = true;
        let after = *last_seq;
        cluster
            .read_finals
            .send(ReadFinals {
                session_slug: self.session_slug.clone(),
                after,
                limit: FILL_PAGE,
            })
            .into_actor(self)
            .map(move |answer, act, ctx| match answer {
                Ok(Ok(frames)) if !frames.is_empty() => {
                    for frame in frames {
                        let last = act.delivered_seq();
                        match frame.seq.map(|seq| judge_remote(seq, last)) {
                            Some(Remote::Next) => act.accept_remote(frame),
                            Some(Remote::Gap) => {
                                // The log lost the ones before: the database has them.
                                act.fill_from_database(ctx);
                                return;
                            }
                            _ => {}
                        }
                    }
                    act.fill.active = false;
                    act.fill(ctx);
                }
                Ok(Ok(_)) if act.known_head > after => act.fill_from_database(ctx),
                Ok(Ok(_)) => act.fill_done(ctx),
                Ok(Err(error)) => {
                    tracing::debug!(session = %act.session_slug, %error, "cluster log unavailable; filling when the bus is back");
                    act.fill_done(ctx);
                }
                Err(_) => act.fill_done(ctx),
            })
            .spawn(ctx);
    }

    fn fill_from_database(&mut self, ctx: &mut Context<Self>) {
        let after = self.delivered_seq();
        let request = LoadFinalsAfter {
            session_slug: self.session_slug.to_string(),
            after_seq: after,
            limit: FILL_PAGE as i64,
        };
        self.storage
            .load_finals_after
            .send(request)
            .into_actor(self)
            .map(move |answer, act, ctx| {
                let records = match answer {
                    Ok(Ok(records)) => records,
                    _ => Vec::new(),
                };
                if records.is_empty() {
                    act.fill.db_tries += 1;
                    if act.fill.db_tries < FILL_DB_TRIES {
                        ctx.run_later(Duration::from_millis(250), |act, ctx| {
                            act.fill_from_database(ctx)
                        });
                        return;
                    }
                    let head = act.known_head;
                    tracing::warn!(session = %act.session_slug, after, through = head,
                        "finals the cluster numbered are in neither its log nor the database: skipped");
                    if let Numbering::Ready { last_seq, .. } = &mut act.numbering {
                        *last_seq = (*last_seq).max(head);
                    }
                } else {
                    act.fill.db_tries = 0;
                    for record in records {
                        if record.seq <= act.delivered_seq() {
                            continue;
                        }
                        if record.seq > act.delivered_seq() + 1 {
                            tracing::warn!(session = %act.session_slug, after = act.delivered_seq(), next = record.seq,
                                "finals missing from the database were skipped while following the cluster");
                        }
                        let outbound = act.final_frame(&record, false);
                        act.remember_final(record.utterance_id.clone());
                        if let Numbering::Ready { last_seq, .. } = &mut act.numbering {
                            *last_seq = record.seq;
                        }
                        act.keep_for_replay(record.seq, &outbound);
                        act.fan_out(outbound);
                    }
                }
                act.fill.active = false;
                act.fill(ctx);
            })
            .spawn(ctx);
    }

    fn fill_done(&mut self, ctx: &mut Context<Self>) {
        self.fill.active = false;
        self.fill.db_tries = 0;
        if std::mem::take(&mut self.fill.again) {
            self.fill(ctx);
            return;
        }
        // A new owner caught up: what the provider said meanwhile is numbered now, in order.
        let held: Vec<_> = self.held.drain(..).collect();
        for event in held {
            self.publish(event, ctx);
        }
    }

    /// The `seq` of the last final delivered here (0 before the stored one is known).
    fn delivered_seq(&self) -> i64 {
        match &self.numbering {
            Numbering::Ready { last_seq, .. } => *last_seq,
            Numbering::Loading { .. } => 0,
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

    /// One batch per worker thread with clients of the session (`threads`), and one message
    /// to each client reached on its own (docs/ARCHITECTURE.md#fan-out).
    fn fan_out(&mut self, outbound: Outbound) {
        let started = Instant::now();
        let mut gone = Vec::new();
        let transcript = matches!(outbound, Outbound::Final { .. } | Outbound::Partial { .. });
        for batch in self.threads.batches(transcript) {
            let sent = DeliverBatch {
                clients: batch.clients,
                outbound: outbound.clone(),
            };
            if !deliver_batch(&batch.hub, sent) {
                gone.extend(self.threads.remove_thread(batch.thread));
            }
        }
        if self.clients.len() > self.threads.len() {
            for (id, client) in &self.clients {
                if self.threads.contains(*id)
                    || (transcript && client.delivery == Delivery::CatchingUp)
                {
                    // Reached through its thread; or kept in the ring (finals) for its next
                    // page, or superseded (partials).
                    continue;
                }
                if !deliver(&client.deliver, outbound.clone()) {
                    gone.push(*id);
                }
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
        if let (Role::Follower, Some(status)) = (&self.role, &self.remote_status) {
            // The owner's state, after the local one the supervisor sent.
            deliver(&msg.deliver, Outbound::Control(status.clone()));
        }
        if let Some(thread) = msg.thread {
            self.threads.add(msg.id, thread, delivery == Delivery::Live);
        }
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
                self.threads.set_live(msg.client);
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

/// Hands a frame to one thread's clients without waiting. False when the thread's hub is gone.
fn deliver_batch(hub: &Recipient<DeliverBatch>, batch: DeliverBatch) -> bool {
    match hub.try_send(batch) {
        Ok(()) => true,
        Err(SendError::Full(batch)) => {
            // The hub moves each batch into its clients' outboxes at once; a full mailbox
            // means its thread is starved. Partials may go; finals and control frames may not.
            if matches!(batch.outbound, Outbound::Partial { .. }) {
                let dropped = u64::try_from(batch.clients.len()).unwrap_or(u64::MAX);
                ::metrics::counter!(WS_QUEUE_DROPS_TOTAL).increment(dropped);
            } else {
                hub.do_send(batch);
            }
            true
        }
        Err(SendError::Closed(_)) => false,
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

    fn handle(&mut self, event: TranscriptEvent, ctx: &mut Self::Context) {
        self.publish(event, ctx);
    }
}

impl Handler<BusFrame> for BroadcastActor {
    type Result = ();

    fn handle(&mut self, frame: BusFrame, ctx: &mut Self::Context) {
        self.on_bus(frame, ctx);
    }
}

impl Handler<BecomeOwner> for BroadcastActor {
    type Result = ();

    fn handle(&mut self, msg: BecomeOwner, ctx: &mut Self::Context) {
        let was_follower = self.role == Role::Follower;
        self.role = match msg.token {
            Some(token) => Role::Owner(token),
            None => Role::Alone,
        };
        self.remote_status = None;
        self.known_head = self.known_head.max(msg.committed_seq);
        if was_follower {
            // Deliver what the last owner committed before numbering on from it.
            self.fill(ctx);
        }
    }
}

impl Handler<BecomeFollower> for BroadcastActor {
    type Result = ();

    fn handle(&mut self, _: BecomeFollower, ctx: &mut Self::Context) {
        if self.cluster.is_some() {
            self.become_follower();
            self.fill(ctx);
        }
    }
}

impl Handler<BusAvailable> for BroadcastActor {
    type Result = ();

    fn handle(&mut self, BusAvailable(up): BusAvailable, ctx: &mut Self::Context) {
        if self.role != Role::Follower {
            return;
        }
        if up {
            self.fill(ctx);
            if let Some(status) = self.remote_status.clone() {
                self.fan_out(Outbound::Control(status));
            }
        } else {
            let frame = status_frame(
                &self.session_slug,
                SessionState::Reconnecting,
                "cluster bus unavailable: live transcripts resume, and missed ones are filled in, when it is back",
            );
            self.fan_out(Outbound::Control(frame));
        }
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
        self.threads.remove(msg.id);
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
        if self.role == Role::Follower {
            // The owner's status reaches these clients over the bus.
            return;
        }
        let frame = status_frame(&self.session_slug, msg.state, &msg.detail);
        self.publish_to_cluster(BusKind::Status, "", &frame);
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
