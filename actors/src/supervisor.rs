//! `SessionSupervisor`: owns one meeting session's state and its children.
//!
//! ```text
//! SessionSupervisor ─┬─ IngestActor    (lives as long as the session)
//!                    ├─ GladiaActor or WhisperActor (one per provider stream, see `stt`;
//!                    │                  replaced after a stop)
//!                    └─ BroadcastActor (lives as long as the session)
//! ```
//! It is the only place that decides the session's state (docs/PROTOCOL.md#session-lifecycle); children report to it.

use actix::prelude::*;
use std::collections::{HashMap, HashSet};
use std::time::Duration;

use crate::broadcast::{
    AddClient, BecomeFollower, BecomeOwner, BroadcastActor, BroadcastStatus, BusAvailable,
    RemoveClient, ReportSpeaker, SayGoodbye,
};
use crate::ingest::{DrainIngest, IngestActor, IngestReport, UseProvider, UsePublisher};
use crate::messages::cluster::{
    AnnounceSession, AskStop, ClusterNotice, ClusterUnavailable, JoinCluster, LeaseGrant,
    LeaseToken, LeaveCluster, SaveProvider, TakeLease,
};
use crate::messages::{
    AttachPublisher, ClientId, Deliver, FanOutThread, NextReplayPage, ProviderCheckpoint,
    ProviderFinished, ProviderPhase, ProviderResume, ProviderStatus, PublishHandle, PublishRefused,
    PublisherId, SessionInstance, SessionRetired, SessionState, StreamSinks,
};
use crate::metrics::SessionMetrics;
use crate::outbound_frames::status_frame;
use crate::outbox::Outbound;
use crate::persistence::{IsStreamKeyRevoked, RevokeStreamKeys, SaveSessionState};
use crate::settings::SessionContext;
use crate::stream_keys::{KeyStanding, SessionKeys};
use crate::stt::{SttAdmission, SttStream};

/// What the HTTP API and `transcription_started` show about a session.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionSnapshot {
    pub session_slug: String,
    pub state: SessionState,
    pub detail: String,
    /// Where egress publishes, with the session's current stream key: only after a start, and
    /// only shown to host and service tokens (docs/PROTOCOL.md#roles).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rtmp_url: Option<String>,
    pub clients: usize,
    pub publisher: Option<String>,
    pub provider: Option<&'static str>,
    pub provider_session_id: Option<String>,
    pub publishes: u64,
    pub provider_streams: u64,
    pub decoder_restarts: u64,
}

#[derive(Message)]
#[rtype(result = "SessionSnapshot")]
pub struct GetSnapshot;

/// Idempotent: a session that ended is opened again.
#[derive(Message)]
#[rtype(result = "SessionSnapshot")]
pub struct StartTranscription;

/// The provider gets its stop, trailing finals are delivered and saved, the session ends.
#[derive(Message)]
#[rtype(result = "SessionSnapshot")]
pub struct StopTranscription;

/// Refused when the session already has `MAX_CLIENTS_PER_SESSION` clients.
#[derive(Message)]
#[rtype(result = "Result<Subscribed, SubscribeRefused>")]
pub struct Subscribe {
    pub client: ClientId,
    pub deliver: Recipient<Deliver>,
    /// The client's worker thread, through which the broadcaster reaches it with the other
    /// clients there (`None`: through `deliver` alone).
    pub thread: Option<FanOutThread>,
    /// Resume: the client pulls every final with `seq > last_seq` (through
    /// [`Subscribed::replay`]) before it gets any live. Never negative.
    pub last_seq: Option<i64>,
}

/// A subscription accepted.
pub struct Subscribed {
    /// Where a resuming client asks for its next page of missed finals (the session's
    /// broadcaster). `None` only when the session has no broadcaster (it is going away).
    pub replay: Option<Recipient<NextReplayPage>>,
}

#[derive(Debug, Clone, thiserror::Error)]
#[error("session {session_slug:?} already has its maximum of {max} clients")]
pub struct SubscribeRefused {
    pub session_slug: String,
    pub max: usize,
}

/// Graceful shutdown of the service (docs/PROTOCOL.md#shutdown): refuse new publishes, drain the decoder, send
/// the provider its stop, deliver its trailing finals, then close every client with 1001.
/// Completes when the clients have been told; the caller bounds the wait.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ShutDown;

#[derive(Message)]
#[rtype(result = "()")]
pub struct Unsubscribe {
    pub client: ClientId,
}

struct Publisher {
    id: PublisherId,
    peer: String,
    /// Tells this publisher's connection it was replaced.
    replaced: Option<tokio::sync::oneshot::Sender<()>>,
    /// The `ingest` span: this publish's lifetime (it ends when the publisher is dropped).
    _span: tracing::Span,
}

/// Why the session exists and how it may end; together with [`SessionState`] (what clients
/// see) it decides when the supervisor retires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lifecycle {
    /// Opened by a publish, a client or a relayed post: retires as soon as nothing uses it.
    OnDemand,
    /// Opened (or reopened) by an explicit start: kept until it is stopped and ended.
    Started,
    /// A stop was asked for: trailing finals are being delivered, then the session is
    /// `ended`. A new start or publish opens it again (`Started`).
    Stopping,
    /// The service is shutting down: stops like `Stopping`, refuses publishers and is
    /// never opened again.
    ShuttingDown,
}

impl Lifecycle {
    fn stopping(self) -> bool {
        matches!(self, Lifecycle::Stopping | Lifecycle::ShuttingDown)
    }
}

/// Which instance ingests the session, in cluster mode (docs/ARCHITECTURE.md#cluster-mode).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Ownership {
    /// Not clustered: this instance is the only one.
    Local,
    /// Another instance ingests the session (or none does yet); this one serves its clients.
    Following,
    /// This instance ingests it and holds its lease.
    Owner(LeaseToken),
    /// This instance ingests it, but the cluster could not be reached when the publisher
    /// came: the lease is taken again once the bus is back.
    OwnerUnleased,
}

impl Ownership {
    fn owns(&self) -> bool {
        matches!(
            self,
            Ownership::Local | Ownership::Owner(_) | Ownership::OwnerUnleased
        )
    }
}

struct ProviderStream {
    id: u64,
    addr: SttStream,
    /// `EndOfAudio` sent: the stream is finishing and takes no more audio.
    ending: bool,
}

pub struct SessionSupervisor {
    slug: String,
    /// The root `session` span (traces, docs/PROTOCOL.md#traces); children: ingest, decode, stt, broadcast.
    span: tracing::Span,
    /// One `stt` span per provider stream, open until it reports `ProviderFinished`.
    stt_spans: HashMap<u64, tracing::Span>,
    instance: SessionInstance,
    context: SessionContext,
    /// The registry, told when this session retires; the supervisor sends it nothing else.
    retired: Recipient<SessionRetired>,
    state: SessionState,
    lifecycle: Lifecycle,
    detail: String,
    ingest: Option<Addr<IngestActor>>,
    broadcast: Option<Addr<BroadcastActor>>,
    provider: Option<ProviderStream>,
    /// Streams told to end that have not reported `ProviderFinished` yet.
    finishing_streams: HashSet<u64>,
    provider_session_id: Option<String>,
    publisher: Option<Publisher>,
    clients: HashSet<ClientId>,
    stream_counter: u64,
    publishes: u64,
    decoder_restarts: u64,
    /// Fired once no publisher or provider stream is left (see [`ShutDown`]).
    drained_waiters: Vec<tokio::sync::oneshot::Sender<()>>,
    /// `ws.session_clients{sessionSlug}`, kept equal to `clients.len()`.
    clients_gauge: ::metrics::Gauge,
    /// The last time another instance's transcript was routed here ([`GetBroadcast`]).
    last_relayed: Option<std::time::Instant>,
    /// An idle check for a relayed-only session is scheduled.
    relayed_idle_check: bool,
    /// The stream key `rtmpUrl` shows, the keys in use and those revoked (docs/PROTOCOL.md#stream-keys).
    keys: SessionKeys,
    ownership: Ownership,
    /// The provider session the previous owner left, for the next provider stream to
    /// continue (docs/ARCHITECTURE.md#cluster-mode, provider continuity).
    provider_to_continue: Option<ProviderResume>,
    /// This session counts in `ingest.live_sessions` (it has a publisher).
    counted_live: bool,
}

impl SessionSupervisor {
    pub fn new(
        slug: String,
        instance: SessionInstance,
        context: SessionContext,
        retired: Recipient<SessionRetired>,
    ) -> Self {
        let span = tracing::info_span!(parent: None, "session", session.slug = %slug);
        let ownership = if context.settings.cluster.is_some() {
            Ownership::Following
        } else {
            Ownership::Local
        };
        SessionSupervisor {
            slug,
            span,
            stt_spans: HashMap::new(),
            instance,
            context,
            retired,
            state: SessionState::WaitingForEgress,
            lifecycle: Lifecycle::OnDemand,
            detail: "waiting for the meeting's audio".to_owned(),
            ingest: None,
            broadcast: None,
            provider: None,
            finishing_streams: HashSet::new(),
            provider_session_id: None,
            publisher: None,
            clients: HashSet::new(),
            stream_counter: 0,
            publishes: 0,
            decoder_restarts: 0,
            last_relayed: None,
            relayed_idle_check: false,
            keys: SessionKeys::default(),
            drained_waiters: Vec::new(),
            clients_gauge: ::metrics::Gauge::noop(),
            ownership,
            provider_to_continue: None,
            counted_live: false,
        }
    }

    fn snapshot(&self) -> SessionSnapshot {
        SessionSnapshot {
            session_slug: self.slug.clone(),
            state: self.state,
            detail: self.detail.clone(),
            rtmp_url: self
                .keys
                .issued()
                .map(|key| format!("{}{}", self.context.settings.rtmp_url_base, key.key)),
            clients: self.clients.len(),
            publisher: self.publisher.as_ref().map(|p| p.peer.clone()),
            provider: self.context.settings.provider.as_ref().map(|p| p.name()),
            provider_session_id: self.provider_session_id.clone(),
            publishes: self.publishes,
            provider_streams: self.stream_counter,
            decoder_restarts: self.decoder_restarts,
        }
    }

    fn set_state(&mut self, state: SessionState, detail: impl Into<String>) {
        // Every publisher change is followed by a state change.
        self.count_live();
        let detail = detail.into();
        if state == self.state && detail == self.detail {
            return;
        }
        tracing::info!(session = %self.slug, from = %self.state, to = %state, %detail, "session state");
        let changed = state != self.state;
        self.state = state;
        self.detail = detail;
        if let Some(broadcast) = &self.broadcast {
            broadcast.do_send(BroadcastStatus {
                state,
                detail: self.detail.clone(),
            });
        }
        self.announce();
        // The `sessions` row is the owner's to write: a follower's local state would hide it.
        if changed && self.ownership.owns() {
            self.context
                .storage
                .save_session_state
                .do_send(SaveSessionState {
                    session_slug: self.slug.clone(),
                    state,
                });
        }
    }

    /// `ingest.live_sessions` follows whether a publisher is attached.
    fn count_live(&mut self) {
        let live = self.publisher.is_some();
        if live != self.counted_live {
            self.counted_live = live;
            let gauge = ::metrics::gauge!(crate::metrics::names::INGEST_LIVE_SESSIONS);
            if live {
                gauge.increment(1.0);
            } else {
                gauge.decrement(1.0);
            }
        }
    }

    /// The owner tells the cluster's directory what its session looks like now.
    fn announce(&self) {
        let (Some(cluster), Ownership::Owner(_)) =
            (&self.context.settings.cluster, &self.ownership)
        else {
            return;
        };
        let mut snapshot = self.snapshot();
        snapshot.rtmp_url = None;
        cluster.announce.do_send(AnnounceSession {
            session_slug: self.slug.clone(),
            snapshot: serde_json::to_value(snapshot).unwrap_or_default(),
        });
    }

    /// A publisher arrived here: in cluster mode the session's lease is taken first (whoever
    /// held it stops ingesting), so this instance numbers from what the cluster committed.
    fn take_lease_and_attach(
        &mut self,
        msg: AttachPublisher,
        ctx: &mut Context<Self>,
    ) -> ResponseActFuture<Self, Result<PublishHandle, PublishRefused>> {
        let cluster = self.context.settings.cluster.clone();
        match (&self.ownership, cluster) {
            (Ownership::Following | Ownership::OwnerUnleased, Some(cluster)) => {
                let take = cluster.take_lease.send(TakeLease {
                    session_slug: self.slug.clone(),
                });
                Box::pin(take.into_actor(self).map(move |grant, act, ctx| {
                    let grant = grant
                        .map_err(|e| ClusterUnavailable(e.to_string()))
                        .and_then(|g| g);
                    act.became_owner(grant);
                    act.attach(msg, ctx)
                }))
            }
            _ => Box::pin(fut::ready(self.attach(msg, ctx))),
        }
    }

    fn became_owner(&mut self, grant: Result<LeaseGrant, ClusterUnavailable>) {
        let Some(broadcast) = &self.broadcast else {
            return;
        };
        match grant {
            Ok(grant) => {
                tracing::info!(session = %self.slug, committed_seq = grant.committed_seq, "this instance owns the session");
                broadcast.do_send(BecomeOwner {
                    token: Some(grant.token.clone()),
                    committed_seq: grant.committed_seq,
                });
                // Only a session without a provider stream of its own continues another's.
                if self.provider.as_ref().is_none_or(|p| p.ending) {
                    self.provider_to_continue = grant.provider;
                }
                self.ownership = Ownership::Owner(grant.token);
                self.announce();
            }
            Err(error) => {
                tracing::warn!(session = %self.slug, %error, "cluster unreachable: ingesting without a lease, numbering from this instance's last seq");
                broadcast.do_send(BecomeOwner {
                    token: None,
                    committed_seq: 0,
                });
                self.ownership = Ownership::OwnerUnleased;
            }
        }
    }

    /// Another instance took the session (or the lease could not be kept): stop ingesting at
    /// once, and serve this instance's clients from the bus.
    fn lost_lease(&mut self) {
        if !matches!(
            self.ownership,
            Ownership::Owner(_) | Ownership::OwnerUnleased
        ) {
            return;
        }
        tracing::info!(session = %self.slug, "the session moved to another instance: ingest stopped here");
        self.ownership = Ownership::Following;
        if let Some(broadcast) = &self.broadcast {
            broadcast.do_send(BecomeFollower);
        }
        if let Some(mut publisher) = self.publisher.take() {
            // Its detach is then ignored: no publisher is current.
            if let Some(replaced) = publisher.replaced.take() {
                let _ = replaced.send(());
            }
        }
        self.hand_over_provider_stream();
        self.set_state(
            SessionState::WaitingForEgress,
            "the meeting's audio moved to another instance",
        );
        self.notify_if_drained();
    }

    /// The state while audio may flow, given what the provider is doing.
    fn live_state(&mut self) {
        if self.publisher.is_none() {
            return;
        }
        if self.context.settings.provider.is_none() {
            self.set_state(SessionState::Reconnecting, "no STT provider configured");
        } else if self.provider_session_id.is_some() {
            self.set_state(SessionState::Live, "transcribing");
        }
    }

    /// Starts a provider stream in the place `admission` holds (see [`Self::admit`]).
    fn start_provider_stream(&mut self, admission: SttAdmission, ctx: &mut Context<Self>) {
        let (Some(broadcast), Some(ingest)) = (self.broadcast.clone(), self.ingest.clone()) else {
            return;
        };
        self.stream_counter += 1;
        let stream = self.stream_counter;
        self.stt_spans.insert(
            stream,
            tracing::info_span!(parent: &self.span, "stt", session.slug = %self.slug,
                stt.provider = admission.provider_name(), stt.stream = stream,
                stt.provider_session_id = tracing::field::Empty,
                stt.lost_audio_bytes = tracing::field::Empty),
        );
        let me = ctx.address();
        let addr = admission.start(
            self.slug.clone(),
            stream,
            StreamSinks {
                transcripts: broadcast.recipient(),
                status: me.clone().recipient(),
                finished: me.clone().recipient(),
                checkpoints: me.recipient(),
            },
            self.provider_to_continue.take(),
        );
        ingest.do_send(UseProvider(Some(addr.audio.clone())));
        self.provider = Some(ProviderStream {
            id: stream,
            addr,
            ending: false,
        });
    }

    /// A place for a new provider stream. `Ok(None)`: no provider is configured. A whisper
    /// provider at its capacity refuses: the session says so in its state (docs/PROTOCOL.md#speech-to-text-providers).
    fn admit(&mut self) -> Result<Option<SttAdmission>, String> {
        let Some(backend) = &self.context.settings.provider else {
            return Ok(None);
        };
        match backend.admit() {
            Ok(admission) => Ok(Some(admission)),
            Err(refused) => {
                let why = refused.to_string();
                tracing::warn!(session = %self.slug, %why, "provider stream refused");
                self.set_state(SessionState::Error, format!("{why}; publish refused"));
                Err(why)
            }
        }
    }

    /// No more audio for the current provider stream.
    fn end_provider_stream(&mut self) {
        self.stop_feeding_provider(SttStream::end_of_audio);
    }

    /// The session moved to another instance: the provider session is left running for the
    /// new owner to continue (no stop, whose trailing finals would be fenced anyway).
    fn hand_over_provider_stream(&mut self) {
        self.stop_feeding_provider(SttStream::hand_over);
    }

    /// The current provider stream takes no more audio and is told why by `signal`, once.
    fn stop_feeding_provider(&mut self, signal: fn(&SttStream)) {
        if let Some(stream) = &mut self.provider {
            if !stream.ending {
                stream.ending = true;
                signal(&stream.addr);
                self.finishing_streams.insert(stream.id);
            }
        }
        if let Some(ingest) = &self.ingest {
            ingest.do_send(UseProvider(None));
        }
    }

    /// Egress reconnects within seconds (docs/PROTOCOL.md#rtmp-ingest): keep the provider session, fed with silence
    /// so it does not time out, and end it only if no publisher is back within `grace`.
    fn hold_provider_for_reconnect(
        &mut self,
        grace: Duration,
        reason: &str,
        ctx: &mut Context<Self>,
    ) {
        if let Some(stream) = self.provider.as_ref().filter(|s| !s.ending) {
            stream.addr.publisher_gap();
        }
        self.set_state(
            SessionState::WaitingForEgress,
            format!(
                "publisher left ({reason}); keeping the transcription open {} s for it to return",
                grace.as_secs()
            ),
        );
        let publishes = self.publishes;
        ctx.run_later(grace, move |act, ctx| {
            if act.publisher.is_none() && act.publishes == publishes {
                tracing::info!(session = %act.slug, "no publisher came back: ending the provider stream");
                act.end_provider_stream();
                act.notify_if_drained();
                act.maybe_retire(ctx);
            }
        });
    }

    /// A session nobody uses any more leaves the registry.
    /// Retires a session kept only by relayed posts once none came for
    /// `relayed_session_idle`; a publisher or client arriving meanwhile keeps it (busy).
    fn check_relayed_idle(&mut self, after: Duration, ctx: &mut Context<Self>) {
        self.relayed_idle_check = true;
        ctx.run_later(after, |act, ctx| {
            act.relayed_idle_check = false;
            let idle = act.context.settings.relayed_session_idle;
            match act.last_relayed.map(|t| t.elapsed()) {
                Some(since) if since < idle => act.check_relayed_idle(idle - since, ctx),
                _ => act.maybe_retire(ctx),
            }
        });
    }

    fn maybe_retire(&mut self, ctx: &mut Context<Self>) {
        let busy = !self.clients.is_empty()
            || self.publisher.is_some()
            || self.provider.is_some()
            || !self.finishing_streams.is_empty();
        let finished = self.state == SessionState::Ended || self.lifecycle == Lifecycle::OnDemand;
        if !busy && finished {
            tracing::debug!(session = %self.slug, "session retired");
            // Before the registry hears of it: a session reopened under this slug then
            // registers fresh series rather than losing them to this removal.
            SessionMetrics::forget(&self.slug);
            if let Some(cluster) = &self.context.settings.cluster {
                cluster.leave.do_send(LeaveCluster {
                    session_slug: self.slug.clone(),
                    instance: self.instance,
                    lease: match &self.ownership {
                        Ownership::Owner(token) => Some(token.clone()),
                        _ => None,
                    },
                });
            }
            self.retired.do_send(SessionRetired {
                session_slug: self.slug.clone(),
                instance: self.instance,
                revoked_keys: self.keys.revoked().to_vec(),
            });
            ctx.stop();
        }
    }

    /// Ends the transcription: the ingest drains the decoder, the provider gets its stop and
    /// delivers its trailing finals, then the session is `ended`.
    fn request_stop(&mut self) {
        if self.state != SessionState::Ended && !self.lifecycle.stopping() {
            self.lifecycle = Lifecycle::Stopping;
            if self.publisher.is_some() {
                // The ingest drains the decoder, then reports `Drained`, which ends the stream.
                if let Some(ingest) = &self.ingest {
                    ingest.do_send(DrainIngest);
                }
                self.set_state(
                    SessionState::Ended,
                    "stopping: waiting for trailing transcripts",
                );
            } else {
                self.end_provider_stream();
                self.set_state(SessionState::Ended, "transcription stopped");
            }
        }
    }

    /// Tells shutdown waiters once no audio is in flight any more.
    fn notify_if_drained(&mut self) {
        if self.publisher.is_none() && self.provider.is_none() && self.finishing_streams.is_empty()
        {
            for waiter in self.drained_waiters.drain(..) {
                let _ = waiter.send(());
            }
        }
    }

    /// A stop revokes every key the session handed out or accepted (docs/PROTOCOL.md#stream-keys):
    /// at once here and in the registry (when the session retires), and in the store, so a
    /// restarted instance refuses them too. A shutdown does not revoke: egress reconnects to
    /// another instance with the same key.
    fn revoke_keys(&mut self) {
        let revoked = self.keys.revoke_all(&self.slug);
        if revoked.is_empty() {
            return;
        }
        let store = self.context.storage.revoke_stream_keys.clone();
        let slug = self.slug.clone();
        // Retried until stored or until every key has expired anyway (then there is nothing
        // left to refuse): a database outage at the stop must not let a restarted instance
        // accept the keys. One task per stop, sleeping between tries.
        let last_expiry = revoked.iter().map(|k| k.expires_at).max().unwrap_or(0);
        actix_rt::spawn(async move {
            let mut delay = std::time::Duration::from_secs(1);
            let mut failures = 0u32;
            loop {
                match store.send(RevokeStreamKeys(revoked.clone())).await {
                    Ok(Ok(())) => {
                        if failures > 0 {
                            tracing::info!(session = %slug, failures, "stream key revocation stored");
                        }
                        return;
                    }
                    Ok(Err(error)) if failures == 0 => tracing::warn!(session = %slug, %error,
                        "stream key revocation not stored yet: retrying (this instance refuses the keys meanwhile)"),
                    Ok(Err(_)) => {}
                    Err(error) => {
                        tracing::error!(session = %slug, %error, "stream key revocation not stored: storage gone");
                        return;
                    }
                }
                failures += 1;
                if unix_now() >= last_expiry {
                    return;
                }
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(std::time::Duration::from_secs(30));
            }
        });
    }

    /// A start or a publish on an ended session opens it again (not during a shutdown).
    fn reopen_if_ended(&mut self) {
        if self.state == SessionState::Ended && self.lifecycle != Lifecycle::ShuttingDown {
            self.lifecycle = Lifecycle::Started;
            self.set_state(
                SessionState::WaitingForEgress,
                "waiting for the meeting's audio",
            );
        }
    }
}

impl Actor for SessionSupervisor {
    type Context = Context<Self>;

    fn stopped(&mut self, _: &mut Self::Context) {
        // Whatever ends the actor, its publisher no longer counts.
        self.publisher = None;
        self.count_live();
    }

    fn started(&mut self, ctx: &mut Self::Context) {
        self.clients_gauge = SessionMetrics::new(&self.slug).clients;
        self.clients_gauge.set(0.0);
        let settings = &self.context.settings;
        let me = ctx.address();
        let broadcast = BroadcastActor::new(
            &self.slug,
            self.context.storage.clone(),
            settings.active_speaker_ttl,
        )
        .traced(self.span.clone())
        .with_relay(settings.relay.clone())
        .with_cluster(settings.cluster.clone())
        .start();
        if let Some(cluster) = &settings.cluster {
            cluster.join.do_send(JoinCluster {
                session_slug: self.slug.clone(),
                instance: self.instance,
                notices: me.clone().recipient(),
                bus: broadcast.clone().recipient(),
            });
        }
        self.broadcast = Some(broadcast);
        self.ingest = Some(
            IngestActor::new(
                self.slug.clone(),
                settings.pcm_chunk_ms,
                settings.pcm_flush_ms,
                settings.decoder_max_restarts,
                me.recipient(),
            )
            .traced(self.span.clone())
            .start(),
        );
        self.context
            .storage
            .save_session_state
            .do_send(SaveSessionState {
                session_slug: self.slug.clone(),
                state: self.state,
            });
    }
}

/// Seconds since the Unix epoch, for key expiries.
fn unix_now() -> u64 {
    crate::messages::now_ms().max(0).unsigned_abs() / 1000
}

impl Handler<AttachPublisher> for SessionSupervisor {
    type Result = ResponseActFuture<Self, Result<PublishHandle, PublishRefused>>;

    /// A signed key is checked against the session's revocations first; one this session has
    /// not seen (minted before a restart) against the store's. Then [`Self::attach`].
    fn handle(&mut self, msg: AttachPublisher, ctx: &mut Self::Context) -> Self::Result {
        let Some(key) = msg.key.clone() else {
            return self.take_lease_and_attach(msg, ctx);
        };
        match self.keys.standing(&key.nonce) {
            KeyStanding::Known => self.take_lease_and_attach(msg, ctx),
            KeyStanding::Revoked => Box::pin(fut::ready(Err(PublishRefused::KeyRevoked))),
            KeyStanding::Unknown => {
                let check = self
                    .context
                    .storage
                    .is_stream_key_revoked
                    .send(IsStreamKeyRevoked {
                        nonce: key.nonce.clone(),
                    });
                Box::pin(check.into_actor(self).then(move |answer, act, ctx| {
                    let refused = match (answer, act.keys.standing(&key.nonce)) {
                        // Revoked by a stop while the store was being asked.
                        (_, KeyStanding::Revoked) | (Ok(Ok(true)), _) => PublishRefused::KeyRevoked,
                        (Ok(Ok(false)), _) => {
                            act.keys.accept(&key.nonce, key.expires_at);
                            return act.take_lease_and_attach(msg, ctx);
                        }
                        (Ok(Err(error)), _) => {
                            tracing::warn!(session = %act.slug, %error, "stream key not checked: refusing the publish");
                            PublishRefused::Other(
                                "the stream key cannot be checked now (database unavailable); retry".into(),
                            )
                        }
                        (Err(_), _) => PublishRefused::Other("storage unavailable".into()),
                    };
                    Box::pin(fut::ready(Err(refused)))
                }))
            }
        }
    }
}

impl SessionSupervisor {
    fn attach(
        &mut self,
        msg: AttachPublisher,
        ctx: &mut Context<Self>,
    ) -> Result<PublishHandle, PublishRefused> {
        let shutting_down = self.lifecycle == Lifecycle::ShuttingDown;
        let Some(ingest) = self.ingest.clone().filter(|_| !shutting_down) else {
            return Err(PublishRefused::Other("session is shutting down".into()));
        };
        let need_stream = self.provider.as_ref().is_none_or(|p| p.ending);
        // Taken before anything changes, so a refused publish leaves the session as it was.
        let admission = if need_stream {
            match self.admit() {
                Ok(admission) => admission,
                Err(why) => {
                    self.maybe_retire(ctx);
                    return Err(PublishRefused::Other(why));
                }
            }
        } else {
            None
        };
        self.reopen_if_ended();
        // The ingest actor learns of the new publisher before the old connection can learn it
        // was replaced: its detach then finds another publisher current and is ignored.
        ingest.do_send(UsePublisher(msg.publisher));
        if let Some(old) = &mut self.publisher {
            tracing::info!(session = %self.slug, old = %old.id, new = %msg.publisher, "publisher replaced by a reconnect");
            if let Some(replaced) = old.replaced.take() {
                let _ = replaced.send(());
            }
        }
        self.publishes += 1;
        let (replaced, replaced_signal) = tokio::sync::oneshot::channel();
        // The key's slug only: a signed key's signature never reaches the actors.
        let span = tracing::info_span!(parent: &self.span, "ingest", session.slug = %self.slug,
            rtmp.stream_key.slug = %msg.session_slug, net.peer.address = %msg.peer,
            rtmp.publisher = %msg.publisher, rtmp.publish = self.publishes);
        self.publisher = Some(Publisher {
            id: msg.publisher,
            peer: msg.peer,
            replaced: Some(replaced),
            _span: span,
        });
        if let Some(admission) = admission {
            self.start_provider_stream(admission, ctx);
        } else if let Some(stream) = &self.provider {
            ingest.do_send(UseProvider(Some(stream.addr.audio.clone())));
        }
        if self.context.settings.provider.is_none() {
            self.set_state(SessionState::Reconnecting, "no STT provider configured");
        } else if self.provider_session_id.is_none() || need_stream {
            self.set_state(
                SessionState::Live,
                "publisher connected; starting speech-to-text",
            );
        } else {
            self.set_state(SessionState::Live, "transcribing");
        }
        self.announce();
        Ok(PublishHandle {
            audio: ingest.clone().recipient(),
            detach: ingest.recipient(),
            replaced: Some(replaced_signal),
        })
    }
}

impl Handler<IngestReport> for SessionSupervisor {
    type Result = ();

    fn handle(&mut self, report: IngestReport, ctx: &mut Self::Context) {
        match report {
            IngestReport::Drained { publisher, reason } => {
                let current = self.publisher.as_ref().map(|p| p.id);
                if publisher.is_some() && publisher != current {
                    return;
                }
                self.publisher = None;
                let grace = self.context.settings.publisher_reconnect_grace;
                let stopping = self.lifecycle.stopping();
                if stopping || grace.is_zero() {
                    self.end_provider_stream();
                    if stopping {
                        self.set_state(SessionState::Ended, "finishing transcription");
                    } else {
                        self.set_state(
                            SessionState::WaitingForEgress,
                            format!("publisher left ({reason})"),
                        );
                    }
                } else {
                    self.hold_provider_for_reconnect(grace, &reason, ctx);
                }
                self.notify_if_drained();
                self.maybe_retire(ctx);
            }
            IngestReport::DecoderError(error) => {
                self.decoder_restarts += 1;
                tracing::warn!(session = %self.slug, %error, restarts = self.decoder_restarts, "decoder error; rebuilding");
            }
            IngestReport::DecoderFailed(why) => {
                self.set_state(SessionState::Error, why);
            }
        }
    }
}

impl Handler<ProviderStatus> for SessionSupervisor {
    type Result = ();

    fn handle(&mut self, status: ProviderStatus, _: &mut Self::Context) {
        if let (Some(span), Some(id)) = (
            self.stt_spans.get(&status.stream),
            &status.provider_session_id,
        ) {
            span.record("stt.provider_session_id", id.as_str());
        }
        // A finishing old stream must not change the state of the session's current one.
        if self.provider.as_ref().map(|p| p.id) != Some(status.stream) {
            return;
        }
        if status.provider_session_id.is_some() {
            self.provider_session_id = status.provider_session_id;
        }
        match status.phase {
            ProviderPhase::Streaming => self.live_state(),
            ProviderPhase::Connecting => {}
            ProviderPhase::Retrying => {
                if self.state != SessionState::Ended {
                    self.set_state(SessionState::Reconnecting, status.detail);
                }
            }
        }
    }
}

impl Handler<ProviderFinished> for SessionSupervisor {
    type Result = ();

    fn handle(&mut self, finished: ProviderFinished, ctx: &mut Self::Context) {
        let stream = finished.stream;
        self.finishing_streams.remove(&stream);
        if let Some(span) = self.stt_spans.remove(&stream) {
            span.record("stt.lost_audio_bytes", finished.lost_audio_bytes);
        }
        if finished.lost_audio_bytes > 0 {
            tracing::warn!(session = %self.slug, lost_bytes = finished.lost_audio_bytes, "audio was lost while the provider was unreachable");
        }
        if self.provider.as_ref().map(|p| p.id) == Some(stream) {
            self.provider = None;
            // Its provider session is over: nothing is left for a later owner to continue.
            if let (Some(cluster), Ownership::Owner(token)) =
                (&self.context.settings.cluster, &self.ownership)
            {
                cluster.save_provider.do_send(SaveProvider {
                    session_slug: self.slug.clone(),
                    token: token.clone(),
                    resume: None,
                });
            }
            if self.publisher.is_some() {
                // The provider gave up while audio still flows: open a new stream.
                if let Ok(Some(admission)) = self.admit() {
                    self.start_provider_stream(admission, ctx);
                }
            } else if self.lifecycle.stopping() {
                self.set_state(SessionState::Ended, "transcription stopped");
            } else if self.state == SessionState::WaitingForEgress {
                // Sent after the stream's last final (the broadcaster's mailbox keeps order),
                // so a client knows every transcript of the publish has arrived.
                self.set_state(
                    SessionState::WaitingForEgress,
                    "publisher left; transcription finished, waiting for the meeting's audio",
                );
            }
        }
        if self.lifecycle.stopping() && self.provider.is_none() && self.finishing_streams.is_empty()
        {
            self.set_state(SessionState::Ended, "transcription stopped");
        }
        self.notify_if_drained();
        self.maybe_retire(ctx);
    }
}

/// The owner keeps its provider session's position in the cluster, fenced by its lease.
impl Handler<ProviderCheckpoint> for SessionSupervisor {
    type Result = ();

    fn handle(&mut self, checkpoint: ProviderCheckpoint, _: &mut Self::Context) {
        if self.provider.as_ref().map(|p| (p.id, p.ending)) != Some((checkpoint.stream, false)) {
            return;
        }
        if let (Some(cluster), Ownership::Owner(token)) =
            (&self.context.settings.cluster, &self.ownership)
        {
            cluster.save_provider.do_send(SaveProvider {
                session_slug: self.slug.clone(),
                token: token.clone(),
                resume: Some(checkpoint.resume),
            });
        }
    }
}

impl Handler<GetSnapshot> for SessionSupervisor {
    type Result = MessageResult<GetSnapshot>;

    fn handle(&mut self, _: GetSnapshot, _: &mut Self::Context) -> Self::Result {
        MessageResult(self.snapshot())
    }
}

impl Handler<StartTranscription> for SessionSupervisor {
    type Result = MessageResult<StartTranscription>;

    fn handle(&mut self, _: StartTranscription, _: &mut Self::Context) -> Self::Result {
        if self.lifecycle == Lifecycle::OnDemand {
            self.lifecycle = Lifecycle::Started;
        }
        self.reopen_if_ended();
        let issuer = self.context.settings.stream_key_issuer.clone();
        self.keys.current_or_mint(unix_now(), || issuer(&self.slug));
        MessageResult(self.snapshot())
    }
}

impl Handler<StopTranscription> for SessionSupervisor {
    type Result = MessageResult<StopTranscription>;

    fn handle(&mut self, _: StopTranscription, ctx: &mut Self::Context) -> Self::Result {
        if let (Some(cluster), false) = (&self.context.settings.cluster, self.ownership.owns()) {
            // The owner, wherever it runs, stops its ingest and provider too.
            cluster.ask_stop.do_send(AskStop {
                session_slug: self.slug.clone(),
            });
        }
        self.request_stop();
        self.revoke_keys();
        self.maybe_retire(ctx);
        MessageResult(self.snapshot())
    }
}

impl Handler<ShutDown> for SessionSupervisor {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _: ShutDown, ctx: &mut Self::Context) -> Self::Result {
        self.request_stop();
        self.lifecycle = Lifecycle::ShuttingDown;
        let (drained, wait) = tokio::sync::oneshot::channel();
        self.drained_waiters.push(drained);
        self.notify_if_drained();
        let broadcast = self.broadcast.clone();
        self.maybe_retire(ctx);
        Box::pin(async move {
            // Err: the supervisor retired, which it does only once drained.
            let _ = wait.await;
            if let Some(broadcast) = broadcast {
                // Queued behind the trailing finals the provider already handed over.
                let _ = broadcast.send(SayGoodbye).await;
            }
        })
    }
}

impl Handler<Subscribe> for SessionSupervisor {
    type Result = Result<Subscribed, SubscribeRefused>;

    fn handle(&mut self, msg: Subscribe, _: &mut Self::Context) -> Self::Result {
        let max = self.context.settings.max_clients_per_session;
        if !self.clients.contains(&msg.client) && self.clients.len() >= max {
            return Err(SubscribeRefused {
                session_slug: self.slug.clone(),
                max,
            });
        }
        self.clients.insert(msg.client);
        self.clients_gauge.set(self.clients.len() as f64);
        let _ = msg.deliver.try_send(Deliver(Outbound::Control(status_frame(
            &self.slug,
            self.state,
            &self.detail,
        ))));
        // Sent before the answer: the client's first page request comes after the answer, so
        // the broadcaster knows the client by then.
        if let Some(broadcast) = &self.broadcast {
            broadcast.do_send(AddClient {
                id: msg.client,
                deliver: msg.deliver,
                thread: msg.thread,
                last_seq: msg.last_seq,
            });
        }
        Ok(Subscribed {
            replay: self.broadcast.clone().map(Addr::recipient),
        })
    }
}

impl Handler<Unsubscribe> for SessionSupervisor {
    type Result = ();

    fn handle(&mut self, msg: Unsubscribe, ctx: &mut Self::Context) {
        self.clients.remove(&msg.client);
        self.clients_gauge.set(self.clients.len() as f64);
        if let Some(broadcast) = &self.broadcast {
            broadcast.do_send(RemoveClient { id: msg.client });
        }
        self.maybe_retire(ctx);
    }
}

impl Handler<ReportSpeaker> for SessionSupervisor {
    type Result = ();

    fn handle(&mut self, msg: ReportSpeaker, _: &mut Self::Context) {
        if let Some(broadcast) = &self.broadcast {
            broadcast.do_send(msg);
        }
    }
}

/// The session's broadcaster: for relaying messages produced elsewhere (HTTP broadcast mode,
/// cluster relays) and for load tests that inject transcripts without a provider.
#[derive(Message)]
#[rtype(result = "Option<Addr<BroadcastActor>>")]
pub struct GetBroadcast;

impl Handler<GetBroadcast> for SessionSupervisor {
    type Result = Option<Addr<BroadcastActor>>;

    fn handle(&mut self, _: GetBroadcast, ctx: &mut Self::Context) -> Self::Result {
        self.last_relayed = Some(std::time::Instant::now());
        if !self.relayed_idle_check {
            self.check_relayed_idle(self.context.settings.relayed_session_idle, ctx);
        }
        self.broadcast.clone()
    }
}

impl Handler<ClusterNotice> for SessionSupervisor {
    type Result = ();

    fn handle(&mut self, notice: ClusterNotice, ctx: &mut Self::Context) {
        match notice {
            ClusterNotice::LeaseLost => self.lost_lease(),
            ClusterNotice::StopAsked => {
                self.request_stop();
                self.revoke_keys();
            }
            ClusterNotice::BusDown => {
                if let Some(broadcast) = &self.broadcast {
                    broadcast.do_send(BusAvailable(false));
                }
            }
            ClusterNotice::BusBack => {
                if let Some(broadcast) = &self.broadcast {
                    broadcast.do_send(BusAvailable(true));
                }
                if self.ownership == Ownership::OwnerUnleased && self.publisher.is_some() {
                    // Ingesting since before the cluster went away: take the lease now.
                    if let Some(cluster) = self.context.settings.cluster.clone() {
                        let take = cluster.take_lease.send(TakeLease {
                            session_slug: self.slug.clone(),
                        });
                        take.into_actor(self)
                            .map(|grant, act, _| {
                                if act.ownership == Ownership::OwnerUnleased {
                                    if let Ok(Ok(grant)) = grant {
                                        act.became_owner(Ok(grant));
                                    }
                                }
                            })
                            .spawn(ctx);
                    }
                }
            }
        }
        self.maybe_retire(ctx);
    }
}
