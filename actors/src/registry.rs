//! `SessionRegistry`: session slug → `SessionSupervisor`, the one entry point for routes and
//! the RTMP listener. Sessions start on demand and leave when nobody uses them.

use actix::prelude::*;
use std::collections::HashMap;

use crate::messages::{
    AttachPublisher, PublishHandle, PublishRefused, SessionInstance, SessionRetired,
};
use crate::settings::SessionContext;
use crate::stream_keys::RevokedKeys;
use crate::stt::SttBackend;
use crate::supervisor::{SessionSupervisor, ShutDown};

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum SessionRefused {
    #[error("session slug must be 1-128 characters of letters, digits, '-', '_' or '.'")]
    BadSlug,
    #[error("this instance already runs its maximum of {0} sessions")]
    TooManySessions(usize),
    #[error("the service is shutting down")]
    ShuttingDown,
}

/// Valid slugs are safe in URLs, logs and file names.
pub fn validate_slug(slug: &str) -> Result<(), SessionRefused> {
    let ok = !slug.is_empty()
        && slug.len() <= 128
        && slug
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(SessionRefused::BadSlug)
    }
}

#[derive(Message)]
#[rtype(result = "Result<Addr<SessionSupervisor>, SessionRefused>")]
pub struct GetOrCreateSession {
    pub session_slug: String,
}

#[derive(Message)]
#[rtype(result = "Option<Addr<SessionSupervisor>>")]
pub struct FindSession {
    pub session_slug: String,
}

#[derive(Message)]
#[rtype(result = "Vec<Addr<SessionSupervisor>>")]
pub struct ListSessions;

/// The provider every session uses (`None`: none configured), for the API.
#[derive(Message)]
#[rtype(result = "Option<SttBackend>")]
pub struct GetProvider;

pub struct SessionRegistry {
    context: SessionContext,
    sessions: HashMap<String, (SessionInstance, Addr<SessionSupervisor>)>,
    /// Numbers the supervisors this registry starts (see [`SessionInstance`]).
    instances: u64,
    shutting_down: bool,
    /// One arbiter (thread) per core; sessions are spread over them round-robin, so two cores
    /// carry the actors and one busy session cannot hold up every other (docs/PERFORMANCE.md).
    /// A session's actors all live on its supervisor's arbiter.
    session_threads: Vec<Arbiter>,
    next_thread: usize,
    /// Keys revoked by sessions that have retired since: refused here, before a new session
    /// could be opened for them (a live session answers for its own keys).
    revoked_keys: RevokedKeys,
}

impl SessionRegistry {
    pub fn new(context: SessionContext) -> Self {
        SessionRegistry {
            context,
            sessions: HashMap::new(),
            instances: 0,
            shutting_down: false,
            session_threads: Vec::new(),
            next_thread: 0,
            revoked_keys: RevokedKeys::default(),
        }
    }

    fn get_or_create(
        &mut self,
        slug: &str,
        ctx: &mut Context<Self>,
    ) -> Result<Addr<SessionSupervisor>, SessionRefused> {
        validate_slug(slug)?;
        if let Some((_, addr)) = self.sessions.get(slug).filter(|(_, a)| a.connected()) {
            return Ok(addr.clone());
        }
        if self.shutting_down {
            return Err(SessionRefused::ShuttingDown);
        }
        let max = self.context.settings.max_sessions;
        if self.sessions.len() >= max {
            return Err(SessionRefused::TooManySessions(max));
        }
        self.instances += 1;
        let instance = SessionInstance(self.instances);
        let (slug_owned, context, retired) = (
            slug.to_owned(),
            self.context.clone(),
            ctx.address().recipient(),
        );
        let supervisor = move || SessionSupervisor::new(slug_owned, instance, context, retired);
        let addr = match self.session_threads.get(self.next_thread) {
            Some(thread) => {
                self.next_thread = (self.next_thread + 1) % self.session_threads.len();
                SessionSupervisor::start_in_arbiter(&thread.handle(), move |_| supervisor())
            }
            None => supervisor().start(),
        };
        tracing::info!(session = %slug, "session created");
        self.sessions
            .insert(slug.to_owned(), (instance, addr.clone()));
        Ok(addr)
    }
}

impl Actor for SessionRegistry {
    type Context = Context<Self>;

    fn started(&mut self, _: &mut Self::Context) {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        self.session_threads = (0..cores).map(|_| Arbiter::new()).collect();
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        for thread in &self.session_threads {
            thread.stop();
        }
    }
}

impl Handler<GetOrCreateSession> for SessionRegistry {
    type Result = Result<Addr<SessionSupervisor>, SessionRefused>;

    fn handle(&mut self, msg: GetOrCreateSession, ctx: &mut Self::Context) -> Self::Result {
        self.get_or_create(&msg.session_slug, ctx)
    }
}

impl Handler<GetProvider> for SessionRegistry {
    type Result = Option<SttBackend>;

    fn handle(&mut self, _: GetProvider, _: &mut Self::Context) -> Self::Result {
        self.context.settings.provider.clone()
    }
}

impl Handler<FindSession> for SessionRegistry {
    type Result = Option<Addr<SessionSupervisor>>;

    fn handle(&mut self, msg: FindSession, _: &mut Self::Context) -> Self::Result {
        self.sessions
            .get(&msg.session_slug)
            .filter(|(_, a)| a.connected())
            .map(|(_, a)| a.clone())
    }
}

impl Handler<ListSessions> for SessionRegistry {
    type Result = MessageResult<ListSessions>;

    fn handle(&mut self, _: ListSessions, _: &mut Self::Context) -> Self::Result {
        MessageResult(
            self.sessions
                .values()
                .filter(|(_, a)| a.connected())
                .map(|(_, a)| a.clone())
                .collect(),
        )
    }
}

/// Graceful shutdown: no new session from now on; every session finishes its transcription
/// and says goodbye to its clients (see [`crate::supervisor::ShutDown`]). Completes when all
/// have; the caller bounds the wait.
#[derive(Message)]
#[rtype(result = "usize")]
pub struct ShutDownAll;

impl Handler<ShutDownAll> for SessionRegistry {
    type Result = ResponseFuture<usize>;

    fn handle(&mut self, _: ShutDownAll, _: &mut Self::Context) -> Self::Result {
        self.shutting_down = true;
        let waits: Vec<_> = self
            .sessions
            .values()
            .filter(|(_, a)| a.connected())
            .map(|(_, session)| session.send(ShutDown))
            .collect();
        Box::pin(async move {
            let count = waits.len();
            futures_util::future::join_all(waits).await;
            count
        })
    }
}

/// Last step of a shutdown: stop the session threads and wait until they have exited, so every
/// session's actors are dropped (their trace spans end) before the process exports its last
/// spans and exits. Sessions created afterwards run on the registry's own thread.
#[derive(Message)]
#[rtype(result = "()")]
pub struct StopSessionThreads;

impl Handler<StopSessionThreads> for SessionRegistry {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _: StopSessionThreads, _: &mut Self::Context) -> Self::Result {
        let threads = std::mem::take(&mut self.session_threads);
        self.next_thread = 0;
        for thread in &threads {
            thread.stop();
        }
        Box::pin(async move {
            let joined = tokio::task::spawn_blocking(move || {
                for thread in threads {
                    let _ = thread.join();
                }
            });
            if joined.await.is_err() {
                tracing::warn!("a session thread panicked while stopping");
            }
        })
    }
}

impl Handler<SessionRetired> for SessionRegistry {
    type Result = ();

    fn handle(&mut self, msg: SessionRetired, _: &mut Self::Context) {
        let now = crate::messages::now_ms().max(0).unsigned_abs() / 1000;
        for key in &msg.revoked_keys {
            self.revoked_keys.insert(key, now);
        }
        if self.sessions.get(&msg.session_slug).map(|(i, _)| *i) == Some(msg.instance) {
            self.sessions.remove(&msg.session_slug);
        }
    }
}

impl Handler<AttachPublisher> for SessionRegistry {
    type Result = ResponseFuture<Result<PublishHandle, PublishRefused>>;

    fn handle(&mut self, msg: AttachPublisher, ctx: &mut Self::Context) -> Self::Result {
        if let Some(key) = &msg.key {
            if self.revoked_keys.contains(&key.nonce) {
                return Box::pin(std::future::ready(Err(PublishRefused::KeyRevoked)));
            }
        }
        // Without signed stream keys a publish to an unknown slug starts that session (docs/PROTOCOL.md#rtmp-ingest).
        let session = self.get_or_create(&msg.session_slug, ctx);
        Box::pin(async move {
            let supervisor = session.map_err(|e| match e {
                SessionRefused::BadSlug => PublishRefused::UnknownSession,
                SessionRefused::TooManySessions(_) => PublishRefused::SessionLimit,
                SessionRefused::ShuttingDown => {
                    PublishRefused::Other("the service is shutting down".into())
                }
            })?;
            supervisor
                .send(msg)
                .await
                .map_err(|e| PublishRefused::Other(e.to_string()))?
        })
    }
}

#[cfg(test)]
mod tests {
    //! The registry retires the sessions their supervisors give up.

    use std::time::{Duration, Instant};

    use super::*;
    use crate::broadcast::{RelayOutcome, RelayedTranscript};
    use crate::messages::SessionState;
    use crate::messages::{ClientId, Deliver, NextReplayPage, ReplayPage};
    use crate::outbox::Outbound;
    use crate::persistence::memory::MemoryStorage;
    use crate::settings::SessionSettings;
    use crate::supervisor::{
        GetBroadcast, GetSnapshot, ShutDown, StartTranscription, Subscribe, Subscribed,
    };
    use crate::wire::IncomingTranscript;

    fn registry(relayed_session_idle: Duration) -> Addr<SessionRegistry> {
        let (_, storage) = MemoryStorage::discarding().start_storage();
        let settings = SessionSettings {
            rtmp_url_base: "rtmp://localhost:1937/live/".into(),
            provider: None,
            pcm_chunk_ms: 100,
            pcm_flush_ms: 50,
            active_speaker_ttl: Duration::from_secs(3),
            decoder_max_restarts: 5,
            publisher_reconnect_grace: Duration::ZERO,
            max_sessions: 10,
            max_clients_per_session: 10,
            stream_key_issuer: crate::stream_keys::slug_as_key(),
            relay: None,
            relayed_session_idle,
            cluster: None,
        };
        SessionRegistry::new(SessionContext {
            settings: std::sync::Arc::new(settings),
            storage,
        })
        .start()
    }

    async fn session(registry: &Addr<SessionRegistry>, slug: &str) -> Addr<SessionSupervisor> {
        registry
            .send(GetOrCreateSession {
                session_slug: slug.into(),
            })
            .await
            .unwrap()
            .unwrap()
    }

    /// Subscribes a client that collects what it is sent.
    async fn subscribe(
        supervisor: &Addr<SessionSupervisor>,
        seen: std::sync::Arc<std::sync::Mutex<Vec<Outbound>>>,
        last_seq: Option<i64>,
    ) -> (ClientId, Subscribed) {
        let client = ClientId::next();
        let subscribed = supervisor
            .send(Subscribe {
                client,
                deliver: Collect(seen).start().recipient(),
                thread: None,
                last_seq,
            })
            .await
            .unwrap()
            .unwrap();
        (client, subscribed)
    }

    /// What `POST /api/realtime/transcribe/broadcast` does with one relayed final.
    async fn post_final(registry: &Addr<SessionRegistry>, slug: &str, seq: i64) -> RelayOutcome {
        let supervisor = session(registry, slug).await;
        let broadcast = supervisor.send(GetBroadcast).await.unwrap().unwrap();
        let message = IncomingTranscript {
            kind: "transcript".into(),
            session_slug: slug.into(),
            utterance_id: format!("u{seq}"),
            text: "hello".into(),
            is_final: true,
            speaker: "A".into(),
            speaker_id: "a".into(),
            ts: 1,
            transcript_type: Some("final".into()),
            seq: Some(seq),
            started_at: Some(0),
            ended_at: Some(1),
            language: Some("en".into()),
            provisional: false,
        };
        broadcast
            .send(RelayedTranscript(message))
            .await
            .unwrap()
            .unwrap()
    }

    #[actix_rt::test]
    async fn a_session_only_relayed_posts_keep_is_retired_once_they_stop() {
        let idle = Duration::from_millis(400);
        let registry = registry(idle);
        // Posts closer together than the idle time, for three idle times: the session stays.
        let mut last_post = Instant::now();
        for seq in 1..=12 {
            assert_eq!(
                post_final(&registry, "relayed", seq).await,
                RelayOutcome::Delivered
            );
            last_post = Instant::now();
            assert_eq!(registry.send(ListSessions).await.unwrap().len(), 1);
            actix_rt::time::sleep(Duration::from_millis(100)).await;
        }
        // Then none: it is retired, not before the idle time and not much after.
        let retired_after = loop {
            if registry.send(ListSessions).await.unwrap().is_empty() {
                break last_post.elapsed();
            }
            assert!(
                last_post.elapsed() < idle * 5,
                "still registered {:?} after the last post",
                last_post.elapsed()
            );
            actix_rt::time::sleep(Duration::from_millis(20)).await;
        };
        assert!(retired_after >= idle, "retired after {retired_after:?}");
    }

    /// Collects what a session delivers to one client.
    struct Collect(std::sync::Arc<std::sync::Mutex<Vec<Outbound>>>);
    impl Actor for Collect {
        type Context = Context<Self>;
    }
    impl Handler<Deliver> for Collect {
        type Result = ();
        fn handle(&mut self, Deliver(outbound): Deliver, _: &mut Self::Context) {
            if let Ok(mut seen) = self.0.lock() {
                seen.push(outbound);
            }
        }
    }

    fn final_seqs(seen: &std::sync::Mutex<Vec<Outbound>>) -> Vec<i64> {
        seen.lock()
            .unwrap()
            .iter()
            .filter_map(|o| match o {
                Outbound::Final { seq, .. } => Some(*seq),
                _ => None,
            })
            .collect()
    }

    #[actix_rt::test]
    async fn a_resuming_subscriber_pulls_what_it_missed_then_gets_finals_live() {
        let registry = registry(Duration::from_secs(60));
        for seq in 1..=3 {
            assert_eq!(
                post_final(&registry, "resume", seq).await,
                RelayOutcome::Delivered
            );
        }
        let supervisor = session(&registry, "resume").await;
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (client, subscribed) = subscribe(&supervisor, seen.clone(), Some(1)).await;
        let replay = subscribed.replay.expect("the session has a broadcaster");
        // Catching up: a final arriving now is not pushed to it; it is paged like the rest.
        assert_eq!(
            post_final(&registry, "resume", 4).await,
            RelayOutcome::Delivered
        );
        let mut after = 1;
        let mut paged = Vec::new();
        loop {
            let page = replay
                .send(NextReplayPage {
                    client,
                    after,
                    limit: 2,
                })
                .await
                .unwrap();
            match page {
                ReplayPage::Finals { frames, through } => {
                    assert!(frames.len() <= 2, "a page beyond its limit");
                    paged.extend(frames.iter().filter_map(|o| match o {
                        Outbound::Final { seq, .. } => Some(*seq),
                        _ => None,
                    }));
                    after = through;
                }
                ReplayPage::Live => break,
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(paged, vec![2, 3, 4]);
        assert!(
            final_seqs(&seen).is_empty(),
            "a final was pushed during the catch-up"
        );
        // Live now: the next final is pushed, once.
        assert_eq!(
            post_final(&registry, "resume", 5).await,
            RelayOutcome::Delivered
        );
        let started = Instant::now();
        while final_seqs(&seen).is_empty() && started.elapsed() < Duration::from_secs(5) {
            actix_rt::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(final_seqs(&seen), vec![5]);
        assert!(supervisor.connected(), "the session survived the resume");
    }

    #[actix_rt::test]
    async fn a_session_stopped_by_a_shutdown_is_not_reopened_by_a_start() {
        let registry = registry(Duration::from_secs(60));
        let supervisor = session(&registry, "closing").await;
        // A client keeps the session alive through the shutdown.
        subscribe(&supervisor, Default::default(), None).await;
        let started = supervisor.send(StartTranscription).await.unwrap();
        assert_eq!(started.state, SessionState::WaitingForEgress);
        supervisor.send(ShutDown).await.unwrap();
        assert_eq!(
            supervisor.send(GetSnapshot).await.unwrap().state,
            SessionState::Ended
        );
        let again = supervisor.send(StartTranscription).await.unwrap();
        assert_eq!(again.state, SessionState::Ended, "{}", again.detail);
    }
}
