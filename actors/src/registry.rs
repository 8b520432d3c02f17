//! `SessionRegistry`: session slug → `SessionSupervisor`, the one entry point for routes and
//! the RTMP listener. Sessions start on demand and leave when nobody uses them.

use std::collections::HashMap;
use std::sync::Arc;

use actix::prelude::*;

use crate::access::StreamKeyIssuer;
use crate::ingest_messages::{AttachPublisher, PublishHandle, PublishRefused};
use crate::persistence::Storage;
use crate::stt::SttBackend;
use crate::supervisor::{SessionSupervisor, ShutDown};

/// Settings every session shares.
pub struct SessionSettings {
    /// `rtmp://{RTMP_HOST}:{RTMP_EXTERNAL_PORT}/live/`; the slug is appended.
    pub rtmp_url_base: String,
    /// `None`: no STT provider configured (SPEC §6), audio is decoded but not transcribed.
    pub provider: Option<SttBackend>,
    pub pcm_chunk_ms: u32,
    pub pcm_flush_ms: u32,
    pub active_speaker_ttl: std::time::Duration,
    /// Decoder rebuilds after consecutive failures before the session reports `error`.
    pub decoder_max_restarts: u32,
    /// How long the provider stream outlives a publisher that left (egress reconnects).
    pub publisher_reconnect_grace: std::time::Duration,
    pub max_sessions: usize,
    pub max_clients_per_session: usize,
    /// The stream key handed to egress for a slug (signed when keys are signed).
    pub stream_key_issuer: StreamKeyIssuer,
    /// HTTP broadcast mode (`REALTIME_BROADCAST_MODE=http`): every session's messages are also
    /// posted to another instance through this [`crate::relay::RelayPoster`].
    pub relay: Option<Recipient<crate::relay::RelayMessage>>,
    /// A session that only transcripts posted by another instance keep alive (HTTP broadcast
    /// mode, receiving side: no publisher, no client) is retired this long after the last
    /// post, so posts for many meetings do not fill `max_sessions` over time.
    pub relayed_session_idle: std::time::Duration,
}

#[derive(Clone)]
pub struct SessionContext {
    pub settings: Arc<SessionSettings>,
    pub storage: Storage,
}

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

/// Sent by a supervisor that has nothing left to do.
#[derive(Message)]
#[rtype(result = "()")]
pub struct SessionRetired {
    pub session_slug: String,
    pub supervisor: Addr<SessionSupervisor>,
}

pub struct SessionRegistry {
    context: SessionContext,
    sessions: HashMap<String, Addr<SessionSupervisor>>,
    shutting_down: bool,
    /// One arbiter (thread) per core; sessions are spread over them round-robin, so two cores
    /// carry the actors and one busy session cannot hold up every other (docs/PERFORMANCE.md).
    /// A session's actors all live on its supervisor's arbiter.
    session_threads: Vec<Arbiter>,
    next_thread: usize,
}

impl SessionRegistry {
    pub fn new(context: SessionContext) -> Self {
        SessionRegistry {
            context,
            sessions: HashMap::new(),
            shutting_down: false,
            session_threads: Vec::new(),
            next_thread: 0,
        }
    }

    fn get_or_create(
        &mut self,
        slug: &str,
        ctx: &mut Context<Self>,
    ) -> Result<Addr<SessionSupervisor>, SessionRefused> {
        validate_slug(slug)?;
        if let Some(addr) = self.sessions.get(slug).filter(|a| a.connected()) {
            return Ok(addr.clone());
        }
        if self.shutting_down {
            return Err(SessionRefused::ShuttingDown);
        }
        let max = self.context.settings.max_sessions;
        if self.sessions.len() >= max {
            return Err(SessionRefused::TooManySessions(max));
        }
        let (slug_owned, context, registry) =
            (slug.to_owned(), self.context.clone(), ctx.address());
        let addr = match self.session_threads.get(self.next_thread) {
            Some(thread) => {
                self.next_thread = (self.next_thread + 1) % self.session_threads.len();
                SessionSupervisor::start_in_arbiter(&thread.handle(), move |_| {
                    SessionSupervisor::new(slug_owned, context, registry)
                })
            }
            None => SessionSupervisor::new(slug_owned, context, registry).start(),
        };
        tracing::info!(session = %slug, "session created");
        self.sessions.insert(slug.to_owned(), addr.clone());
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
            .filter(|a| a.connected())
            .cloned()
    }
}

impl Handler<ListSessions> for SessionRegistry {
    type Result = MessageResult<ListSessions>;

    fn handle(&mut self, _: ListSessions, _: &mut Self::Context) -> Self::Result {
        MessageResult(
            self.sessions
                .values()
                .filter(|a| a.connected())
                .cloned()
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
            .filter(|a| a.connected())
            .map(|session| session.send(ShutDown))
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
        if self.sessions.get(&msg.session_slug) == Some(&msg.supervisor) {
            self.sessions.remove(&msg.session_slug);
        }
    }
}

impl Handler<AttachPublisher> for SessionRegistry {
    type Result = ResponseFuture<Result<PublishHandle, PublishRefused>>;

    fn handle(&mut self, msg: AttachPublisher, ctx: &mut Self::Context) -> Self::Result {
        // Without signed stream keys a publish to an unknown slug starts that session (SPEC §3).
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
