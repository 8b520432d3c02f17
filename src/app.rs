//! Wiring: storage, the session registry, the RTMP listener and the HTTP server.

use std::sync::Arc;
use std::time::Duration;

use ::actors::client::ClientSettings;
use ::actors::gladia::GladiaConfig;
use ::actors::registry::{
    SessionContext, SessionRegistry, SessionSettings, ShutDownAll, StopSessionThreads,
};
use ::actors::relay::{FlushRelay, RelayConfig, RelayPoster, DEFAULT_QUEUE_LIMIT};
use ::actors::stt::SttBackend;
use actix::prelude::*;
use actix_web::{web, App, HttpServer};
use anyhow::Context as _;

use crate::auth::{Authenticator, RequireToken};
use crate::config::{name_of, Config, SttProvider};
use crate::db::{start_storage_with, BatcherConfig, Flush, SpillAll};
use crate::http::{record_post_latency, routes, AiLocks, AppState};
use crate::rtmp::stream_key::{identity_stream_key_issuer, SignedStreamKeys};
use crate::rtmp::{identity_stream_key, serve, RtmpConfig, StreamKeyValidator};

/// How long shutdown waits for the sessions to finish: the provider's trailing finals (the
/// Gladia stop wait is 30 s) and the clients' last frames.
const SHUTDOWN_DRAIN_TIMEOUT: Duration = Duration::from_secs(40);
/// How long shutdown waits for the broadcast relay to post what it still holds (HTTP mode).
const SHUTDOWN_RELAY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long shutdown waits for the session threads to exit once their sessions are done.
const SHUTDOWN_THREADS_TIMEOUT: Duration = Duration::from_secs(5);
/// A session only posts from another instance keep alive is retired after this long without one.
const RELAYED_SESSION_IDLE: Duration = Duration::from_secs(60);
/// How long shutdown waits for queued finals to reach the database.
const SHUTDOWN_FLUSH_TIMEOUT: Duration = Duration::from_secs(15);

/// The provider a new session uses, and the start-up line saying which and why (SPEC §6).
async fn provider(config: &Config) -> anyhow::Result<(Option<SttBackend>, String)> {
    let reason = &config.stt_provider_reason;
    match (config.stt_provider, &config.gladia_api_key) {
        (SttProvider::Gladia, Some(key)) => Ok((
            Some(SttBackend::Gladia(Arc::new(GladiaConfig {
                api_url: config.gladia_api_url.clone(),
                api_key: key.clone(),
                region: config.gladia_region.as_ref().map(name_of),
                max_buffered_audio: Duration::from_secs(60),
                stop_timeout: Duration::from_secs(30),
                max_session: config.gladia_max_session,
            }))),
            format!(
                "speech-to-text provider: gladia at {} ({reason})",
                config.gladia_api_url
            ),
        )),
        (SttProvider::Whisper, _) => {
            let whisper = config.whisper.clone();
            let (provider, line) =
                tokio::task::spawn_blocking(move || crate::whisper_engine::start(&whisper))
                    .await
                    .context("whisper start-up")??;
            Ok((
                Some(SttBackend::Whisper(Arc::new(provider))),
                format!("speech-to-text provider: whisper, on this machine: {line} ({reason})"),
            ))
        }
        _ => Ok((
            None,
            format!(
                "speech-to-text provider: none ({reason}): audio is decoded but not transcribed"
            ),
        )),
    }
}

/// Runs the service until SIGINT/SIGTERM. Must be called inside an actix `System`.
pub async fn run(config: Config) -> anyhow::Result<()> {
    // Before anything records: every SPEC §7 metric goes to the registry /metrics reads.
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
        },
    )
    .context("database")?;

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

    let (provider, provider_line) = provider(&config).await?;
    // SPEC §3: with RTMP_STREAM_KEY_SECRET, `rtmpUrl` carries a signed key and only signed keys
    // may publish; without it the key is the slug (development).
    let signed_keys = config
        .rtmp_stream_key_secret
        .as_deref()
        .map(|secret| SignedStreamKeys::new(secret.as_bytes()));
    // SPEC §2 REALTIME_BROADCAST_MODE=http: every session's messages are also posted to the
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
            .map_or_else(identity_stream_key_issuer, SignedStreamKeys::issuer),
        relay: relay.clone().map(Addr::recipient),
        relayed_session_idle: RELAYED_SESSION_IDLE,
    };
    let registry = SessionRegistry::new(SessionContext {
        settings: Arc::new(settings),
        storage: storage.storage.clone(),
    })
    .start();

    actix_rt::spawn(serve(
        rtmp_listener,
        Arc::new(RtmpConfig {
            stream_key_validator: signed_keys.as_ref().map_or_else(
                || Arc::new(identity_stream_key) as StreamKeyValidator,
                SignedStreamKeys::validator,
            ),
            ..RtmpConfig::default()
        }),
        registry.clone().recipient(),
    ));

    let registry_for_shutdown = registry.clone();
    let state = AppState {
        registry,
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
    };
    let auth = Authenticator::new(config.realtime_auth_secret.as_deref());
    let server = HttpServer::new(move || {
        App::new()
            // Guards every /api/* route, including ones added later (SPEC §5).
            .wrap(RequireToken::new(auth.clone()))
            // Outermost, so a POST's latency includes the token check.
            .wrap(actix_web::middleware::from_fn(record_post_latency))
            .app_data(web::Data::new(state.clone()))
            .configure(routes)
    })
    // One worker per core: each WebSocket client's actor lives on its worker's thread, so
    // fan-out to many clients uses every core (docs/PERFORMANCE.md).
    .workers(std::thread::available_parallelism().map_or(1, |n| n.get()))
    // We handle SIGTERM/SIGINT ourselves: the sessions must finish before the server stops.
    .disable_signals()
    .shutdown_timeout(5)
    .bind((config.http_host, config.port))
    .with_context(|| format!("cannot bind HTTP on {}:{}", config.http_host, config.port))?;
    let http_local = server
        .addrs()
        .first()
        .copied()
        .context("HTTP listener has no address")?;

    tracing::info!("{provider_line}");
    if config.realtime_auth_secret.is_some() {
        tracing::info!("client tokens required: HS256 JWT on the WebSocket and every /api route");
    } else {
        tracing::warn!(
            "REALTIME_AUTH_SECRET is not set: anonymous clients are accepted (loopback only)"
        );
    }
    if config.rtmp_stream_key_secret.is_some() {
        tracing::info!("RTMP publishes need a signed stream key (RTMP_STREAM_KEY_SECRET)");
    } else {
        tracing::warn!("RTMP_STREAM_KEY_SECRET is not set: the stream key is the session slug");
    }
    let exposed_without_secrets = (!config.http_host.is_loopback()
        && config.realtime_auth_secret.is_none())
        || (!config.rtmp_bind.is_loopback() && config.rtmp_stream_key_secret.is_none());
    if config.insecure && exposed_without_secrets {
        tracing::warn!(
            "REALTIME_INSECURE=true: listening beyond loopback without secrets; anyone who can reach this network can read and publish sessions"
        );
    }
    if let Some(url) = config
        .realtime_broadcast_url
        .as_deref()
        .filter(|_| config.broadcast_http())
    {
        let url = ::actors::relay::loggable_url(url);
        tracing::info!(%url, "HTTP broadcast mode: every transcript is also posted to another instance");
    }
    if config.realtime_broadcast_secret.is_some() {
        tracing::info!("accepting relayed transcripts on POST /api/realtime/transcribe/broadcast (shared secret)");
    }
    tracing::info!(http = %http_local, rtmp = %rtmp_local, "realtime-core ready");

    let server = server.run();
    let server_handle = server.handle();
    let server_task = actix_rt::spawn(server);

    let signal = shutdown_signal().await?;
    tracing::info!(
        signal,
        "shutting down: refusing new publishes and clients, finishing every transcription"
    );
    // New connections wait in the backlog until the listener closes; open ones carry on so
    // clients get their trailing finals.
    server_handle.pause().await;
    match tokio::time::timeout(
        SHUTDOWN_DRAIN_TIMEOUT,
        registry_for_shutdown.send(ShutDownAll),
    )
    .await
    {
        Ok(Ok(sessions)) => {
            tracing::info!(sessions, "every session finished; clients closed with 1001")
        }
        Ok(Err(error)) => tracing::error!(%error, "session shutdown failed"),
        Err(_) => tracing::error!(
            timeout_s = SHUTDOWN_DRAIN_TIMEOUT.as_secs(),
            "sessions did not finish in time; closing anyway"
        ),
    }
    if let Some(relay) = &relay {
        // The sessions' last messages are queued now; post them before the process goes.
        match tokio::time::timeout(SHUTDOWN_RELAY_TIMEOUT, relay.send(FlushRelay)).await {
            Ok(Ok(0)) => tracing::info!("broadcast relay flushed"),
            Ok(Ok(left)) => tracing::error!(left, "broadcast relay could not post everything"),
            Ok(Err(error)) => tracing::error!(%error, "broadcast relay flush failed"),
            Err(_) => tracing::error!(
                timeout_s = SHUTDOWN_RELAY_TIMEOUT.as_secs(),
                "broadcast relay flush timed out; unposted messages are lost to the receiver"
            ),
        }
    }
    tracing::info!("flushing queued transcripts");
    let flushed =
        match tokio::time::timeout(SHUTDOWN_FLUSH_TIMEOUT, storage.batcher.send(Flush)).await {
            Ok(Ok(Ok(()))) => {
                tracing::info!("all transcripts saved");
                true
            }
            Ok(_) => {
                tracing::error!("transcript flush failed at shutdown");
                false
            }
            Err(_) => {
                tracing::warn!(
                    timeout_s = SHUTDOWN_FLUSH_TIMEOUT.as_secs(),
                    "transcript flush timed out at shutdown (database unavailable?)"
                );
                false
            }
        };
    if !flushed {
        // The database is still away: what is queued goes to the spill file, replayed on the
        // next start (issue #4: nothing dropped).
        match storage.batcher.send(SpillAll).await {
            Ok(Ok(pending)) => tracing::warn!(
                pending,
                "unsaved finals are in the spill file; the next start writes them"
            ),
            Ok(Err(error)) => {
                tracing::error!(%error, "cannot spill the unsaved finals; they are lost")
            }
            Err(error) => tracing::error!(%error, "transcript batcher unavailable at shutdown"),
        }
    }
    // Every session has finished; stop their threads so their actors (and trace spans) are
    // gone before the exporter's final flush in main.
    if tokio::time::timeout(
        SHUTDOWN_THREADS_TIMEOUT,
        registry_for_shutdown.send(StopSessionThreads),
    )
    .await
    .is_err()
    {
        tracing::warn!("session threads did not stop in time");
    }
    server_handle.stop(true).await;
    match server_task.await {
        Ok(result) => result.context("HTTP server")?,
        Err(error) => tracing::error!(%error, "HTTP server task failed"),
    }
    tracing::info!("stopped");
    Ok(())
}

/// Waits for SIGTERM or SIGINT; returns its name.
async fn shutdown_signal() -> anyhow::Result<&'static str> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut terminate = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
    Ok(tokio::select! {
        _ = terminate.recv() => "SIGTERM",
        _ = interrupt.recv() => "SIGINT",
    })
}
