//! Wiring: storage, the session registry, the RTMP listener and the HTTP server.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ::actors::client::ClientSettings;
use ::actors::gladia::GladiaConfig;
use ::actors::registry::{SessionContext, SessionRegistry, SessionSettings, ShutDownAll};
use ::actors::stt::SttBackend;
use ::actors::whisper::pool::{Decoded, Transcriber};
use ::actors::whisper::vad::VadConfig;
use ::actors::whisper::{measure, WhisperProvider, WhisperSettings};
use actix::prelude::*;
use actix_web::{web, App, HttpServer};
use anyhow::Context as _;

use crate::auth::{Authenticator, RequireToken};
use crate::config::{Config, SttProvider, WhisperConfig};
use crate::db::{start_storage, Flush};
use crate::http::{routes, AiLocks, AppState};
use crate::rtmp::stream_key::{identity_stream_key_issuer, SignedStreamKeys};
use crate::rtmp::{identity_stream_key, serve, RtmpConfig, StreamKeyValidator};

/// How long shutdown waits for the sessions to finish: the provider's trailing finals (the
/// Gladia stop wait is 30 s) and the clients' last frames.
const SHUTDOWN_DRAIN_TIMEOUT: Duration = Duration::from_secs(40);
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
                region: config.gladia_region.clone(),
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
            let (provider, line) = tokio::task::spawn_blocking(move || start_whisper(&whisper))
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

/// Whisper through CTranslate2 (the `whisper` crate) as the actors' [`Transcriber`].
struct Ct2Whisper(whisper::WhisperEngine);

impl Transcriber for Ct2Whisper {
    fn transcribe(&self, samples: &[f32]) -> Result<Decoded, String> {
        self.0
            .transcribe(samples)
            .map(|t| Decoded {
                text: t.text,
                language: t.language,
            })
            .map_err(|e| e.to_string())
    }
}

/// Resident memory of this process in bytes (Linux), for the start-up line.
fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

/// Loads the model, measures how many sessions this machine transcribes in real time, and
/// starts the decode pool. Blocking (a few seconds).
fn start_whisper(config: &WhisperConfig) -> anyhow::Result<(WhisperProvider, String)> {
    let before = resident_bytes();
    let loaded = Instant::now();
    let engine = whisper::WhisperEngine::load(&whisper::EngineOptions {
        model_dir: config.model_dir.clone(),
        threads: config.threads,
        replicas: config.workers,
        compute_type: config.compute_type.clone(),
        language: config.language.clone(),
        beam_size: config.beam_size,
    })
    .with_context(|| {
        format!(
            "STT_PROVIDER=whisper needs a model in WHISPER_MODEL_DIR={} (scripts/install-whisper-model.sh installs it)",
            config.model_dir.display()
        )
    })?;
    let load_ms = loaded.elapsed().as_millis();
    let model = engine.name().to_owned();
    let multilingual = engine.is_multilingual();
    let transcriber: Arc<dyn Transcriber> = Arc::new(Ct2Whisper(engine));
    let clip = whisper::calibration_clip();
    let measurement = measure(
        &transcriber,
        config.workers,
        config.partial_period,
        &clip,
        2,
    )
    .map_err(|e| anyhow::anyhow!("whisper calibration decode failed: {e}"))?;
    let model_mb = match (before, resident_bytes()) {
        (Some(b), Some(a)) => format!("{} MB", a.saturating_sub(b) >> 20),
        _ => "unknown".to_owned(),
    };
    let clip_s = clip.len() as f64 / 16_000.0;
    let capacity = config.max_sessions.unwrap_or(measurement.realtime_sessions);
    let line = format!(
        "model {model} ({}, {}, beam {}), {} thread(s) × {} worker(s), loaded in {load_ms} ms, {model_mb} resident; one decode of {clip_s:.0} s of speech takes {} ms (real-time factor {:.3}); {} concurrent session(s) at most ({})",
        if multilingual { "multilingual" } else { "English-only" },
        config.compute_type,
        config.beam_size,
        config.threads,
        config.workers,
        measurement.decode_ms,
        measurement.decode_ms as f64 / 1000.0 / clip_s,
        capacity,
        match config.max_sessions {
            Some(_) => format!("WHISPER_MAX_SESSIONS; measured {}", measurement.realtime_sessions),
            None => format!(
                "measured: one decode per {} ms partial period per session, 20 % headroom",
                config.partial_period.as_millis()
            ),
        },
    );
    let provider = WhisperProvider::new(
        transcriber,
        config.workers,
        WhisperSettings {
            vad: VadConfig {
                endpoint_silence: config.endpoint_silence,
                max_utterance: config.max_utterance,
            },
            partial_period: config.partial_period,
            model,
        },
        measurement,
        config.max_sessions,
    );
    Ok((provider, line))
}

/// Runs the service until SIGINT/SIGTERM. Must be called inside an actix `System`.
pub async fn run(config: Config) -> anyhow::Result<()> {
    pipelines::init().context("GStreamer is not usable")?;
    let storage = start_storage(
        &config.database_url,
        config.transcript_batch_size,
        config.transcript_batch_delay,
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
    };
    let auth = Authenticator::new(config.realtime_auth_secret.as_deref());
    let server = HttpServer::new(move || {
        App::new()
            // Guards every /api/* route, including ones added later (SPEC §5).
            .wrap(RequireToken::new(auth.clone()))
            .app_data(web::Data::new(state.clone()))
            .configure(routes)
    })
    .workers(1)
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
    tracing::info!("flushing queued transcripts");
    match tokio::time::timeout(SHUTDOWN_FLUSH_TIMEOUT, storage.batcher.send(Flush)).await {
        Ok(Ok(Ok(()))) => tracing::info!("all transcripts saved"),
        Ok(_) => tracing::error!("transcript flush failed at shutdown"),
        Err(_) => tracing::error!(
            "transcript flush timed out at shutdown; unsaved finals remain in memory"
        ),
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
