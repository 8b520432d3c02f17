//! `ClusterActor`: this instance's one Redis client (docs/ARCHITECTURE.md#cluster-mode). It
//! answers the sessions' cluster messages (`actors::messages::cluster`) with the scripts of
//! `super::scripts`, renews the leases it holds, and runs the bus subscriber
//! (`super::subscriber`). Redis away is an answer, not a wait: every command is bounded by
//! [`COMMAND_TIMEOUT`], and while the connection is down commands fail at once
//! (`ClusterUnavailable`, `CommitOutcome::Unavailable`) and a reconnect is tried in the
//! background.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use ::actors::messages::cluster::{
    AnnounceSession, AskStop, BusFrame, BusKind, ClusterLink, ClusterNotice, ClusterUnavailable,
    CommitFinal, CommitOutcome, JoinCluster, LeaseGrant, LeaseToken, LeaveCluster, PublishFrame,
    ReadFinals, SaveProvider, TakeLease,
};
use actix::prelude::*;
use redis::aio::MultiplexedConnection;
use redis::AsyncConnectionConfig;

use super::directory::{self, Entry};
use super::envelope::{self, Control};
use super::keys;
use super::membership::{Member, Membership};
use super::provider_record;
use super::scripts;
use super::subscriber;

/// Longest wait for one Redis command: a final's commit waits this long at most before it is
/// delivered without the cluster.
pub const COMMAND_TIMEOUT: Duration = Duration::from_millis(500);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Partials and status frames published and not yet answered; beyond it partials are dropped.
const MAX_PUBLISHES_IN_FLIGHT: usize = 1000;

pub struct ClusterConfig {
    pub redis_url: String,
    /// `CLUSTER_LEASE_MS`: a dead owner's lease expires after this; renewed every third.
    pub lease: Duration,
    /// This process's name in tokens and on the bus (unique per run).
    pub instance_id: String,
}

struct Scripts {
    take: redis::Script,
    renew: redis::Script,
    release: redis::Script,
    commit: redis::Script,
    directory_drop: redis::Script,
    directory_expire: redis::Script,
    provider_save: redis::Script,
}

/// Every live session the directory lists, except this instance's own (they are local).
#[derive(Message)]
#[rtype(result = "Result<Vec<Entry>, ClusterUnavailable>")]
pub struct ListDirectory;

pub struct ClusterActor {
    client: redis::Client,
    config: Arc<ClusterConfig>,
    scripts: Arc<Scripts>,
    conn: Option<MultiplexedConnection>,
    connecting: bool,
    membership: Arc<Mutex<Membership>>,
    publishes_in_flight: Arc<std::sync::atomic::AtomicUsize>,
}

impl ClusterActor {
    /// Fails only on a malformed `REDIS_URL`; an unreachable Redis is retried.
    pub fn new(config: ClusterConfig) -> redis::RedisResult<Self> {
        let client = redis::Client::open(config.redis_url.as_str())?;
        Ok(ClusterActor {
            client,
            config: Arc::new(config),
            scripts: Arc::new(Scripts {
                take: redis::Script::new(scripts::TAKE),
                renew: redis::Script::new(scripts::RENEW),
                release: redis::Script::new(scripts::RELEASE),
                commit: redis::Script::new(scripts::COMMIT),
                directory_drop: redis::Script::new(scripts::DIRECTORY_DROP),
                directory_expire: redis::Script::new(scripts::DIRECTORY_EXPIRE),
                provider_save: redis::Script::new(scripts::PROVIDER_SAVE),
            }),
            conn: None,
            connecting: false,
            membership: Arc::default(),
            publishes_in_flight: Arc::default(),
        })
    }

    /// The recipients every session gets.
    pub fn link(addr: &Addr<ClusterActor>) -> ClusterLink {
        ClusterLink {
            join: addr.clone().recipient(),
            leave: addr.clone().recipient(),
            take_lease: addr.clone().recipient(),
            commit_final: addr.clone().recipient(),
            publish: addr.clone().recipient(),
            read_finals: addr.clone().recipient(),
            ask_stop: addr.clone().recipient(),
            announce: addr.clone().recipient(),
            save_provider: addr.clone().recipient(),
        }
    }

    fn members(&self) -> std::sync::MutexGuard<'_, Membership> {
        // A panic while holding it cannot leave the map half-changed in a way that matters.
        self.membership
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The connection, or `None` (and a reconnect started) while Redis is away.
    fn connection(&mut self, ctx: &mut Context<Self>) -> Option<MultiplexedConnection> {
        if self.conn.is_none() {
            self.connect(ctx);
        }
        self.conn.clone()
    }

    fn connect(&mut self, ctx: &mut Context<Self>) {
        if self.connecting {
            return;
        }
        self.connecting = true;
        let client = self.client.clone();
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(COMMAND_TIMEOUT));
        async move {
            client
                .get_multiplexed_async_connection_with_config(&config)
                .await
        }
        .into_actor(self)
        .map(|result, act, ctx| {
            act.connecting = false;
            match result {
                Ok(conn) => {
                    if act.conn.is_none() {
                        tracing::info!("cluster: connected to Redis");
                    }
                    act.conn = Some(conn);
                }
                Err(error) => {
                    tracing::warn!(error = %error.category(), "cluster: Redis unreachable; retrying");
                    ctx.run_later(Duration::from_secs(1), |act, ctx| {
                        if act.conn.is_none() {
                            act.connect(ctx);
                        }
                    });
                }
            }
        })
        .spawn(ctx);
    }

    /// Runs a command whose answer nobody waits for; a broken connection is still noticed.
    fn fire<T: 'static>(
        &mut self,
        ctx: &mut Context<Self>,
        command: impl std::future::Future<Output = redis::RedisResult<T>> + 'static,
    ) {
        command
            .into_actor(self)
            .map(|result, act, _| {
                if let Err(error) = result {
                    act.failed(&error);
                }
            })
            .spawn(ctx);
    }

    /// After a failed command: a broken connection is dropped (and rebuilt on next use).
    fn failed(&mut self, error: &redis::RedisError) {
        if error.is_io_error()
            || error.is_timeout()
            || error.is_connection_dropped()
            || error.is_unrecoverable_error()
        {
            self.conn = None;
        }
    }

    /// The directory's field for a session held here, valid one lease from now.
    fn directory_field(&self, snapshot: &serde_json::Value) -> String {
        let until = ::actors::messages::now_ms() + self.config.lease.as_millis() as i64;
        directory::encode(&self.config.instance_id, until, snapshot)
    }

    fn renew_leases(&mut self, ctx: &mut Context<Self>) {
        let leases = self.members().leases();
        if leases.is_empty() {
            return;
        }
        let fields: Vec<(String, String)> = self
            .members()
            .announced()
            .into_iter()
            .map(|(slug, snapshot)| {
                let field = self.directory_field(&snapshot);
                (slug, field)
            })
            .collect();
        let Some(mut conn) = self.connection(ctx) else {
            return;
        };
        let scripts = self.scripts.clone();
        let lease_ms = self.config.lease.as_millis() as u64;
        async move {
            let mut lost = Vec::new();
            let mut error = None;
            for (slug, token) in leases {
                let renewed: redis::RedisResult<i64> = scripts
                    .renew
                    .key(keys::lease(&slug))
                    .arg(&*token.0)
                    .arg(lease_ms)
                    .invoke_async(&mut conn)
                    .await;
                match renewed {
                    Ok(0) => lost.push((slug, token)),
                    Ok(_) => {}
                    Err(e) => {
                        error = Some(e);
                        break;
                    }
                }
            }
            if error.is_none() && !fields.is_empty() {
                // Kept fresh with the lease: an entry nobody renews expires with it.
                let written: redis::RedisResult<i64> = redis::cmd("HSET")
                    .arg(directory::KEY)
                    .arg(&fields)
                    .query_async(&mut conn)
                    .await;
                error = written.err();
            }
            (lost, error)
        }
        .into_actor(self)
        .map(|(lost, error), act, _| {
            if let Some(error) = &error {
                act.failed(error);
            }
            let mut members = act.members();
            for (slug, token) in lost {
                tracing::warn!(session = %slug, "cluster: lease held by another instance now");
                members.release(&slug, &token);
                members.notify(&slug, ClusterNotice::LeaseLost);
            }
        })
        .spawn(ctx);
    }
}

/// The answer while Redis is away: at once, never a wait.
fn not_connected<T: 'static>() -> ResponseActFuture<ClusterActor, Result<T, ClusterUnavailable>> {
    Box::pin(fut::ready(Err(ClusterUnavailable(
        "Redis is not connected".into(),
    ))))
}

impl Actor for ClusterActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.connect(ctx);
        ctx.run_interval(self.config.lease / 3, |act, ctx| act.renew_leases(ctx));
        actix_rt::spawn(subscriber::run(
            self.client.clone(),
            self.config.instance_id.clone(),
            self.membership.clone(),
        ));
    }
}

impl Handler<JoinCluster> for ClusterActor {
    type Result = ();

    fn handle(&mut self, msg: JoinCluster, _: &mut Self::Context) {
        self.members().join(
            msg.session_slug,
            Member {
                instance: msg.instance,
                notices: msg.notices,
                bus: msg.bus,
            },
        );
    }
}

impl Handler<LeaveCluster> for ClusterActor {
    type Result = ();

    fn handle(&mut self, msg: LeaveCluster, ctx: &mut Self::Context) {
        self.members().leave(&msg.session_slug, msg.instance);
        let Some(token) = msg.lease else { return };
        self.members().release(&msg.session_slug, &token);
        let Some(mut conn) = self.connection(ctx) else {
            return;
        };
        let scripts = self.scripts.clone();
        let owner = self.config.instance_id.clone();
        self.fire(ctx, async move {
            let released: redis::RedisResult<i64> = scripts
                .release
                .key(keys::lease(&msg.session_slug))
                .arg(&*token.0)
                .invoke_async(&mut conn)
                .await;
            released?;
            scripts
                .directory_drop
                .key(directory::KEY)
                .arg(&msg.session_slug)
                .arg(owner)
                .invoke_async::<i64>(&mut conn)
                .await
        });
    }
}

impl Handler<TakeLease> for ClusterActor {
    type Result = ResponseActFuture<Self, Result<LeaseGrant, ClusterUnavailable>>;

    fn handle(&mut self, msg: TakeLease, ctx: &mut Self::Context) -> Self::Result {
        let Some(mut conn) = self.connection(ctx) else {
            return not_connected();
        };
        let scripts = self.scripts.clone();
        let config = self.config.clone();
        let slug = msg.session_slug;
        Box::pin(
            async move {
                let taken: redis::RedisResult<(String, i64, Vec<u8>)> = scripts
                    .take
                    .key(keys::lease(&slug))
                    .key(keys::fence(&slug))
                    .key(keys::seq(&slug))
                    .key(keys::provider(&slug))
                    .arg(&config.instance_id)
                    .arg(config.lease.as_millis() as u64)
                    .arg(keys::CONTROL_CHANNEL)
                    .arg(&slug)
                    .invoke_async(&mut conn)
                    .await;
                (slug, taken)
            }
            .into_actor(self)
            .map(|(slug, taken), act, _| match taken {
                Ok((token, committed_seq, provider)) => {
                    let provider = match provider.as_slice() {
                        [] => None,
                        raw => provider_record::decode(raw)
                            .inspect_err(|error| tracing::warn!(session = %slug, %error, "cluster: the previous owner's provider record refused; starting a fresh provider session"))
                            .ok(),
                    };
                    let token = LeaseToken(token.into());
                    act.members().hold(slug, token.clone());
                    Ok(LeaseGrant {
                        token,
                        committed_seq: committed_seq.max(0),
                        provider,
                    })
                }
                Err(error) => {
                    act.failed(&error);
                    Err(ClusterUnavailable(error.category().to_owned()))
                }
            }),
        )
    }
}

impl Handler<CommitFinal> for ClusterActor {
    type Result = ResponseActFuture<Self, CommitOutcome>;

    fn handle(&mut self, msg: CommitFinal, ctx: &mut Self::Context) -> Self::Result {
        let Some(mut conn) = self.connection(ctx) else {
            return Box::pin(fut::ready(CommitOutcome::Unavailable));
        };
        let scripts = self.scripts.clone();
        let config = self.config.clone();
        let envelope = envelope::encode(
            &config.instance_id,
            &BusFrame {
                kind: BusKind::Final,
                seq: Some(msg.seq),
                utterance_id: msg.utterance_id.clone(),
                frame: msg.frame.clone(),
            },
        );
        Box::pin(
            async move {
                let slug = &*msg.session_slug;
                let answer: redis::RedisResult<String> = scripts
                    .commit
                    .key(keys::lease(slug))
                    .key(keys::seq(slug))
                    .key(keys::log(slug))
                    .arg(&*msg.token.0)
                    .arg(msg.seq)
                    .arg(envelope)
                    .arg(keys::LOG_MAX_LEN)
                    .arg(keys::bus(slug))
                    .arg(config.lease.as_millis() as u64)
                    .invoke_async(&mut conn)
                    .await;
                answer
            }
            .into_actor(self)
            .map(|answer, act, _| match answer.as_deref() {
                Ok("ok") => CommitOutcome::Committed,
                Ok(_) => CommitOutcome::Fenced,
                Err(error) => {
                    tracing::warn!(error = %error.category(), "cluster: a final's commit failed; delivered without the cluster");
                    act.failed(error);
                    CommitOutcome::Unavailable
                }
            }),
        )
    }
}

impl Handler<PublishFrame> for ClusterActor {
    type Result = ();

    fn handle(&mut self, msg: PublishFrame, ctx: &mut Self::Context) {
        let in_flight = self.publishes_in_flight.clone();
        if in_flight.load(std::sync::atomic::Ordering::Relaxed) >= MAX_PUBLISHES_IN_FLIGHT
            && msg.kind == BusKind::Partial
        {
            return;
        }
        let Some(mut conn) = self.connection(ctx) else {
            return;
        };
        let envelope = envelope::encode(
            &self.config.instance_id,
            &BusFrame {
                kind: msg.kind,
                seq: None,
                utterance_id: msg.utterance_id,
                frame: msg.frame,
            },
        );
        in_flight.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let channel = keys::bus(&msg.session_slug);
        self.fire(ctx, async move {
            let published: redis::RedisResult<i64> = redis::cmd("PUBLISH")
                .arg(channel)
                .arg(envelope)
                .query_async(&mut conn)
                .await;
            in_flight.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
            published
        });
    }
}

impl Handler<ReadFinals> for ClusterActor {
    type Result = ResponseActFuture<Self, Result<Vec<BusFrame>, ClusterUnavailable>>;

    fn handle(&mut self, msg: ReadFinals, ctx: &mut Self::Context) -> Self::Result {
        let Some(mut conn) = self.connection(ctx) else {
            return not_connected();
        };
        Box::pin(
            async move {
                let start = format!("{}-0", msg.after.saturating_add(1));
                let reply: redis::RedisResult<redis::streams::StreamRangeReply> =
                    redis::cmd("XRANGE")
                        .arg(keys::log(&msg.session_slug))
                        .arg(start)
                        .arg("+")
                        .arg("COUNT")
                        .arg(msg.limit.clamp(1, 1000))
                        .query_async(&mut conn)
                        .await;
                (msg.session_slug, reply)
            }
            .into_actor(self)
            .map(|(slug, reply), act, _| match reply {
                Ok(reply) => Ok(reply
                    .ids
                    .into_iter()
                    .filter_map(|entry| {
                        let bytes: Vec<u8> = entry.get("m")?;
                        match envelope::decode(&bytes) {
                            Ok(decoded)
                                if decoded.frame.kind == BusKind::Final
                                    && entry.id.split('-').next()
                                        == decoded.frame.seq.map(|s| s.to_string()).as_deref() =>
                            {
                                Some(decoded.frame)
                            }
                            Ok(_) => {
                                tracing::warn!(session = %slug, id = %entry.id.escape_debug(), "cluster log entry that is not its final: skipped");
                                None
                            }
                            Err(error) => {
                                tracing::warn!(session = %slug, %error, "cluster log entry refused");
                                None
                            }
                        }
                    })
                    .collect()),
                Err(error) => {
                    act.failed(&error);
                    Err(ClusterUnavailable(error.category().to_owned()))
                }
            }),
        )
    }
}

impl Handler<AskStop> for ClusterActor {
    type Result = ();

    fn handle(&mut self, msg: AskStop, ctx: &mut Self::Context) {
        let Some(mut conn) = self.connection(ctx) else {
            tracing::warn!(session = %msg.session_slug, "cluster: Redis unreachable; the stop reaches only this instance");
            return;
        };
        let control = serde_json::to_string(&Control::Stop {
            slug: msg.session_slug,
            src: self.config.instance_id.clone(),
        })
        .unwrap_or_default();
        self.fire(ctx, async move {
            let published: redis::RedisResult<i64> = redis::cmd("PUBLISH")
                .arg(keys::CONTROL_CHANNEL)
                .arg(control)
                .query_async(&mut conn)
                .await;
            published
        });
    }
}

impl Handler<AnnounceSession> for ClusterActor {
    type Result = ();

    fn handle(&mut self, msg: AnnounceSession, ctx: &mut Self::Context) {
        if !self
            .members()
            .announce(&msg.session_slug, msg.snapshot.clone())
        {
            return;
        }
        let field = self.directory_field(&msg.snapshot);
        let Some(mut conn) = self.connection(ctx) else {
            return;
        };
        self.fire(ctx, async move {
            let written: redis::RedisResult<i64> = redis::cmd("HSET")
                .arg(directory::KEY)
                .arg(&msg.session_slug)
                .arg(field)
                .query_async(&mut conn)
                .await;
            written
        });
    }
}

impl Handler<SaveProvider> for ClusterActor {
    type Result = ();

    fn handle(&mut self, msg: SaveProvider, ctx: &mut Self::Context) {
        let Some(mut conn) = self.connection(ctx) else {
            return;
        };
        let scripts = self.scripts.clone();
        let record = msg
            .resume
            .as_ref()
            .map(provider_record::encode)
            .unwrap_or_default();
        self.fire(ctx, async move {
            let written: redis::RedisResult<i64> = scripts
                .provider_save
                .key(keys::lease(&msg.session_slug))
                .key(keys::provider(&msg.session_slug))
                .arg(&*msg.token.0)
                .arg(record)
                .arg(keys::PROVIDER_RECORD_MS)
                .invoke_async(&mut conn)
                .await;
            written
        });
    }
}

impl Handler<ListDirectory> for ClusterActor {
    type Result = ResponseActFuture<Self, Result<Vec<Entry>, ClusterUnavailable>>;

    fn handle(&mut self, _: ListDirectory, ctx: &mut Self::Context) -> Self::Result {
        let Some(mut conn) = self.connection(ctx) else {
            return not_connected();
        };
        let scripts = self.scripts.clone();
        let me = self.config.instance_id.clone();
        Box::pin(
            async move {
                let fields: std::collections::HashMap<String, Vec<u8>> = redis::cmd("HGETALL")
                    .arg(directory::KEY)
                    .query_async(&mut conn)
                    .await?;
                let now = ::actors::messages::now_ms();
                let mut entries = Vec::new();
                for (slug, value) in fields {
                    match directory::decode(&slug, &value, now) {
                        Ok(Some(entry)) if entry.owner != me => entries.push(entry),
                        Ok(Some(_)) => {}
                        Ok(None) => {
                            // An owner that stopped renewing: gone, unless it wrote again.
                            let _: redis::RedisResult<i64> = scripts
                                .directory_expire
                                .key(directory::KEY)
                                .arg(&slug)
                                .arg(value)
                                .invoke_async(&mut conn)
                                .await;
                        }
                        Err(error) => {
                            tracing::warn!(session = %slug.escape_debug(), %error, "cluster: directory entry refused");
                        }
                    }
                }
                Ok::<_, redis::RedisError>(entries)
            }
            .into_actor(self)
            .map(|listed, act, _| {
                listed.map_err(|error| {
                    act.failed(&error);
                    ClusterUnavailable(error.category().to_owned())
                })
            }),
        )
    }
}
