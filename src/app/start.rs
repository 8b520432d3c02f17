//! Start-up: storage, the session registry, the RTMP listener and the HTTP server, in the
//! order each needs the one before.
//!
//! Storage comes first because a previous run's spill file must reach the database before a
//! session numbers its finals; both listeners are bound before anything is announced, so a
//! port in use stops start-up with an error instead of a half-started service.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ::actors::client::ClientSettings;
use ::actors::registry::SessionRegistry;
use ::actors::relay::{RelayConfig, RelayPoster, DEFAULT_QUEUE_LIMIT};
use ::actors::settings::{SessionContext, SessionSettings};
use actix::prelude::*;
use actix_web::dev::ServerHandle;
use actix_web::{web, App, HttpServer};
use anyhow::Context as _;

use super::provider::provider;
use crate::auth::Authenticator;
use crate::cluster::{ClusterActor, ClusterConfig};
use crate::config::Config;
use crate::db::{start_storage_with, BatcherConfig, Sharing, StorageHandles};
use crate::http::{record_post_latency, routes, AiLocks, AppState, RequireToken};
use crate::rtmp::stream_key::{identity_stream_key_validator, SignedStreamKeys};
use crate::rtmp::{serve, RtmpConfig};

/// A session only posts from another instance keep alive is retired after this long without one.
const RELAYED_SESSION_IDLE: Duration = Duration::from_secs(60);

/// The running service: what the ready line names and what shutdown stops, in its order.
pub(super) struct Running {
    /// Where the HTTP API and WebSocket listen.
    pub http: SocketAddr,
    /// Where the RTMP listener listens.
    pub rtmp: SocketAddr,
    /// Which speech-to-text provider and why, for the start-up log.
    pub provider_line: String,
    pub registry: Addr<SessionRegistry>,
    /// HTTP broadcast mode only: the poster to the receiving instance.
    pub relay: Option<Addr<RelayPoster>>,
    /// Held to the end: the batcher is flushed at shutdown.
    pub storage: StorageHandles,
    pub server: ServerHandle,
    pub server_task: tokio::task::JoinHandle<std::io::Result<()>>,
}

/// Cluster mode (docs/ARCHITECTURE.md#cluster-mode): the Redis actor on a thread of its own,
/// so a busy session thread never delays a commit or a lease renewal. An unreachable Redis is
/// not a start-up failure: the instance serves its own sessions and joins when Redis answers.
fn start_cluster(url: &str, lease: Duration) -> anyhow::Result<Addr<ClusterActor>> {
    let instance_id = uuid::Uuid::new_v4().simple().to_string()[..12].to_owned();
    let actor = ClusterActor::new(ClusterConfig {
        redis_url: url.to_owned(),
        lease,
        instance_id: instance_id.clone(),
    })
    .map_err(|e| anyhow::anyhow!("REDIS_URL is not a usable Redis URL ({})", e.category()))?;
    tracing::info!(instance = %instance_id, lease_ms = lease.as_millis() as u64, "cluster mode: sessions shared through Redis");
    let thread = Arbiter::new();
    let addr = ClusterActor::start_in_arbiter(&thread.handle(), move |_| actor);
    // The thread lives as long as the process.
    std::mem::forget(thread);
    Ok(addr)
}

/// Builds and starts everything. Must be called inside an actix `System`.
pub(super) async fn start(config: &Config) -> anyhow::Result<Running> {
    // Before anything records: every docs/PROTOCOL.md#metrics metric goes to the registry /metrics reads.
    ::actors::metrics::install();
    pipelines::init().context("GStreamer is not usable")?;
    let storage = start_storage_with(
        &config.database_url,
        BatcherConfig {
            batch_size: config.transcript_batch_size,
            batch_delay: config.transcript_batch_delay,
            max_queued: config.transcript_max_queued,
            spill_dir: Some(config.transcript_spill_dir.clone()),
            spill_max_bytes: config.transcript_spill_max_bytes,
            sharing: if config.redis_url.is_some() {
                Sharing::Cluster
            } else {
                Sharing::Alone
            },
        },
    )
    .context("database")?;
    let cluster = match &config.redis_url {
        Some(url) => Some(start_cluster(url, config.cluster_lease)?),
        None => None,
    };

    let rtmp_addr = (config.rtmp_bind, config.rtmp_internal_port);
    let rtmp_listener = tokio::net::TcpListener::bind(rtmp_addr)
        .await
        .with_context(|| {
            format!(
                "cannot bind RTMP on {}:{}",
                config.rtmp_bind, config.rtmp_internal_port
            )
        })?;
    let rtmp_local = rtmp_listener.local_addr()?;

    let (provider, provider_line) = provider(config).await?;
    // docs/PROTOCOL.md#rtmp-ingest: with RTMP_STREAM_KEY_SECRET, `rtmpUrl` carries a signed key and only signed keys
    // may publish; without it the key is the slug (development).
    let signed_keys = config
        .rtmp_stream_key_secret
        .as_deref()
        .map(|secret| SignedStreamKeys::new(secret.as_bytes(), config.rtmp_stream_key_ttl));
    // docs/PROTOCOL.md#configuration REALTIME_BROADCAST_MODE=http: every session's messages are also posted to the
    // receiving instance; this instance still serves its own clients and saves its finals.
    let relay = match (
        config.broadcast_http(),
        &config.realtime_broadcast_url,
        &config.realtime_broadcast_secret,
    ) {
        (true, Some(url), Some(secret)) => Some(
            RelayPoster::new(RelayConfig {
                url: url.clone(),
                secret: secret.as_str().into(),
                queue_limit: DEFAULT_QUEUE_LIMIT,
            })
            .start(),
        ),
        _ => None,
    };
    let settings = SessionSettings {
        rtmp_url_base: config.rtmp_url_base(rtmp_local.port()),
        provider,
        pcm_chunk_ms: config.pcm_chunk_ms,
        pcm_flush_ms: config.pcm_flush_ms,
        active_speaker_ttl: config.active_speaker_ttl,
        publisher_reconnect_grace: config.publisher_reconnect_grace,
        decoder_max_restarts: config.decoder_max_restarts,
        max_sessions: config.max_sessions,
        max_clients_per_session: config.max_clients_per_session,
        stream_key_issuer: signed_keys
            .as_ref()
            .map_or_else(::actors::stream_keys::slug_as_key, SignedStreamKeys::issuer),
        relay: relay.clone().map(Addr::recipient),
        relayed_session_idle: RELAYED_SESSION_IDLE,
        cluster: cluster.as_ref().map(ClusterActor::link),
    };
    let registry = SessionRegistry::new(SessionContext {
        settings: Arc::new(settings),
        storage: storage.storage.clone(),
    })
    .start();

    actix_rt::spawn(serve(
        rtmp_listener,
        Arc::new(RtmpConfig {
            stream_key_validator: signed_keys
                .as_ref()
                .map_or_else(identity_stream_key_validator, SignedStreamKeys::validator),
            max_connections_per_ip: config.rtmp_max_connections_per_ip,
            max_connections: config.rtmp_max_connections,
            proxy_protocol: config.rtmp_proxy_protocol.clone(),
            ..RtmpConfig::default()
        }),
        registry.clone().recipient(),
    ));

    let auth = Authenticator::new(config.realtime_auth_secret.as_deref());
    let state = AppState {
        registry: registry.clone(),
        storage: storage.storage.clone(),
        db_ping: storage.executor.clone().recipient(),
        client_settings: ClientSettings {
            max_queued_finals: config.client_max_queued_finals,
            ping_interval: config.ws_ping_interval,
            max_missed_pongs: config.ws_max_missed_pongs,
        },
        ai_locks: AiLocks {
            acquire: storage.writer.clone().recipient(),
            release: storage.writer.clone().recipient(),
        },
        broadcast_secret: config.realtime_broadcast_secret.as_deref().map(Into::into),
        speaker_limits: Default::default(),
        auth: auth.clone(),
        cluster: cluster.clone(),
    };
    let server = HttpServer::new(move || {
        App::new()
            // Guards every /api/* route, including ones added later (docs/PROTOCOL.md#security).
            .wrap(RequireToken::new(auth.clone()))
            // Outermost, so a POST's latency includes the token check.
            .wrap(actix_web::middleware::from_fn(record_post_latency))
            .app_data(web::Data::new(state.clone()))
            .configure(routes)
    })
    // One worker per core: each WebSocket client's actor lives on its worker's thread, so
    // fan-out to many clients uses every core (docs/PERFORMANCE.md).
    .workers(std::thread::available_parallelism().map_or(1, |n| n.get()))
    // actix leaves Nagle on for HTTP/1 sockets: a frame written while the previous one is
    // unacknowledged would wait for the viewer's delayed ACK (up to 40 ms on Linux). Fan-out
    // already writes what a client has queued in one call, so there is nothing to coalesce.
    .tcp_nodelay(true)
    // We handle SIGTERM/SIGINT ourselves (`super::shutdown`): the sessions must finish
    // before the server stops.
    .disable_signals()
    .shutdown_timeout(5)
    .bind((config.http_host, config.port))
    .with_context(|| format!("cannot bind HTTP on {}:{}", config.http_host, config.port))?;
    let http_local = server
        .addrs()
        .first()
        .copied()
        .context("HTTP listener has no address")?;

    let server = server.run();
    let server_handle = server.handle();
    let server_task = actix_rt::spawn(server);
    Ok(Running {
        http: http_local,
        rtmp: rtmp_local,
        provider_line,
        registry,
        relay,
        storage,
        server: server_handle,
        server_task,
    })
}
