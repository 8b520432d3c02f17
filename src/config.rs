//! Configuration (SPEC §2): every setting is an environment variable and a flag.
//!
//! clap reads the raw strings; `Config::from_cli` validates them so that a bad value stops
//! start-up with one line naming the variable, the value and what is allowed.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;

/// Live meeting audio over RTMP in, live transcripts over WebSocket out.
#[derive(Parser, Debug)]
#[command(name = "realtime-core", version, about)]
pub struct Cli {
    /// Address of the HTTP API and WebSocket listener (loopback by default, see SPEC §5).
    #[arg(long, env = "HTTP_HOST", default_value = "127.0.0.1")]
    pub http_host: String,
    /// Port of the HTTP API and WebSocket listener (0 picks a free port).
    #[arg(long, env = "PORT", default_value = "8080")]
    pub port: String,
    /// Address of the RTMP listener.
    #[arg(long, env = "RTMP_BIND", default_value = "127.0.0.1")]
    pub rtmp_bind: String,
    /// Port of the RTMP listener (0 picks a free port).
    #[arg(long, env = "RTMP_INTERNAL_PORT", default_value = "1937")]
    pub rtmp_internal_port: String,
    /// Host written into the rtmpUrl handed to egress.
    #[arg(long, env = "RTMP_HOST", default_value = "localhost")]
    pub rtmp_host: String,
    /// Port written into the rtmpUrl [default: the internal port].
    #[arg(long, env = "RTMP_EXTERNAL_PORT")]
    pub rtmp_external_port: Option<String>,
    /// sqlite://PATH or postgres://… [default: sqlite://./data/realtime-core.db]
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// Gladia API key (never logged).
    #[arg(long, env = "GLADIA_API_KEY", hide_env_values = true)]
    pub gladia_api_key: Option<String>,
    /// Base URL of the Gladia Live v2 API.
    #[arg(long, env = "GLADIA_API_URL", default_value = "https://api.gladia.io")]
    pub gladia_api_url: String,
    /// eu-west or us-west, sent as the region query parameter.
    #[arg(long, env = "GLADIA_REGION")]
    pub gladia_region: Option<String>,
    /// Gladia's limit on one live session, in seconds (5-10800). The stream moves to a fresh
    /// provider session before it, at a pause when there is one.
    #[arg(long, env = "GLADIA_MAX_SESSION_SECS", default_value = "10800")]
    pub gladia_max_session_secs: String,
    /// gladia or whisper [default: gladia with a key, else whisper when its model is installed]
    #[arg(long, env = "STT_PROVIDER")]
    pub stt_provider: Option<String>,
    /// A Whisper model in CTranslate2 format (tiny to large, multilingual or `.en`);
    /// scripts/install-whisper-model.sh installs the default one.
    #[arg(long, env = "WHISPER_MODEL_DIR", default_value = DEFAULT_WHISPER_MODEL_DIR)]
    pub whisper_model_dir: String,
    /// CPU threads one Whisper decode uses [default: the cores, at most 4].
    #[arg(long, env = "WHISPER_THREADS")]
    pub whisper_threads: Option<String>,
    /// Whisper decodes that run at once [default: cores / WHISPER_THREADS, at least 1].
    #[arg(long, env = "WHISPER_WORKERS")]
    pub whisper_workers: Option<String>,
    /// CTranslate2 compute type: int8, int8_float32, int16, float32, auto, ...
    #[arg(long, env = "WHISPER_COMPUTE_TYPE", default_value = "int8")]
    pub whisper_compute_type: String,
    /// Language code for multilingual models [default: detected per utterance].
    #[arg(long, env = "WHISPER_LANGUAGE")]
    pub whisper_language: Option<String>,
    /// Beam size of Whisper decoding (1: greedy, fastest).
    #[arg(long, env = "WHISPER_BEAM_SIZE", default_value = "1")]
    pub whisper_beam_size: String,
    /// A partial every this many ms of a growing utterance (each re-decodes the utterance).
    #[arg(long, env = "WHISPER_PARTIAL_PERIOD_MS", default_value = "1000")]
    pub whisper_partial_period_ms: String,
    /// A pause this long (ms) ends an utterance: its final is decoded.
    #[arg(long, env = "WHISPER_ENDPOINT_SILENCE_MS", default_value = "600")]
    pub whisper_endpoint_silence_ms: String,
    /// An utterance is cut at this length in ms (below Whisper's 30 s window).
    #[arg(long, env = "WHISPER_MAX_UTTERANCE_MS", default_value = "20000")]
    pub whisper_max_utterance_ms: String,
    /// Concurrent whisper sessions admitted [default: the number this machine serves in real
    /// time, measured at start-up].
    #[arg(long, env = "WHISPER_MAX_SESSIONS")]
    pub whisper_max_sessions: Option<String>,
    /// Audio per chunk sent to the provider, in ms (10-1000).
    #[arg(long, env = "PCM_CHUNK_SIZE_MS", default_value = "100")]
    pub pcm_chunk_size_ms: String,
    /// A partial chunk older than this (ms) is sent anyway (1-10000).
    #[arg(long, env = "PCM_FLUSH_INTERVAL_MS", default_value = "50")]
    pub pcm_flush_interval_ms: String,
    /// WebSocket ping period in ms.
    #[arg(long, env = "WS_PING_INTERVAL_MS", default_value = "30000")]
    pub ws_ping_interval_ms: String,
    /// Unanswered pings in a row before a client is closed.
    #[arg(long, env = "WS_MAX_MISSED_PONGS", default_value = "3")]
    pub ws_max_missed_pongs: String,
    /// Finals waiting for one slow client before it is disconnected.
    #[arg(long, env = "CLIENT_MAX_QUEUED_FINALS", default_value = "1000")]
    pub client_max_queued_finals: String,
    /// Finals per database batch.
    #[arg(long, env = "TRANSCRIPT_BATCH_SIZE", default_value = "50")]
    pub transcript_batch_size: String,
    /// A batch is written at the latest this many ms after its first final.
    #[arg(long, env = "TRANSCRIPT_BATCH_DELAY_MS", default_value = "2000")]
    pub transcript_batch_delay_ms: String,
    /// Finals kept in memory while the database is unavailable; the rest go to the spill file.
    #[arg(long, env = "TRANSCRIPT_MAX_QUEUED", default_value = "100000")]
    pub transcript_max_queued: String,
    /// Directory of the spill file [default: `spill` next to the SQLite file, else ./data/spill]
    #[arg(long, env = "TRANSCRIPT_SPILL_DIR")]
    pub transcript_spill_dir: Option<String>,
    /// Bound of the spill file in bytes; beyond it finals are lost (and counted).
    #[arg(long, env = "TRANSCRIPT_SPILL_MAX_BYTES", default_value = "1073741824")]
    pub transcript_spill_max_bytes: String,
    /// Decoder rebuilds (with back-off) after consecutive failures before the session reports
    /// the error state.
    #[arg(long, env = "DECODER_MAX_RESTARTS", default_value = "5")]
    pub decoder_max_restarts: String,
    /// How long (ms) a session whose publisher left keeps its provider session open (fed with
    /// silence) for the publisher to come back; egress retries for 30 s. 0 ends it at once.
    #[arg(long, env = "PUBLISHER_RECONNECT_GRACE_MS", default_value = "30000")]
    pub publisher_reconnect_grace_ms: String,
    /// An active-speaker report older than this (ms) is not used.
    #[arg(long, env = "ACTIVE_SPEAKER_TTL_MS", default_value = "3000")]
    pub active_speaker_ttl_ms: String,
    /// HS256 secret for client tokens.
    #[arg(long, env = "REALTIME_AUTH_SECRET", hide_env_values = true)]
    pub realtime_auth_secret: Option<String>,
    /// When set, publishes need a signed stream key.
    #[arg(long, env = "RTMP_STREAM_KEY_SECRET", hide_env_values = true)]
    pub rtmp_stream_key_secret: Option<String>,
    /// direct or http.
    #[arg(long, env = "REALTIME_BROADCAST_MODE", default_value = "direct")]
    pub realtime_broadcast_mode: String,
    /// Where an ingest-only instance posts transcripts (http mode).
    #[arg(long, env = "REALTIME_BROADCAST_URL")]
    pub realtime_broadcast_url: Option<String>,
    /// Shared secret of the broadcast endpoint.
    #[arg(long, env = "REALTIME_BROADCAST_SECRET", hide_env_values = true)]
    pub realtime_broadcast_secret: Option<String>,
    /// Redis URL for cluster mode.
    #[arg(long, env = "REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,
    /// Allow a non-loopback bind without secrets (private networks only).
    #[arg(long, env = "REALTIME_INSECURE", default_value = "false")]
    pub realtime_insecure: String,
    /// Maximum concurrent sessions on this instance.
    #[arg(long, env = "MAX_SESSIONS", default_value = "500")]
    pub max_sessions: String,
    /// Maximum WebSocket clients subscribed to one session.
    #[arg(long, env = "MAX_CLIENTS_PER_SESSION", default_value = "2000")]
    pub max_clients_per_session: String,
    /// Log filter (tracing EnvFilter syntax).
    #[arg(long, env = "RUST_LOG", default_value = "info")]
    pub rust_log: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SttProvider {
    Gladia,
    Whisper,
    /// No key and no Whisper model: audio is decoded but not transcribed.
    None,
}

/// The offline provider's settings (SPEC §6).
#[derive(Debug, Clone)]
pub struct WhisperConfig {
    pub model_dir: PathBuf,
    pub threads: usize,
    pub workers: usize,
    pub compute_type: String,
    pub language: Option<String>,
    pub beam_size: usize,
    pub partial_period: Duration,
    pub endpoint_silence: Duration,
    pub max_utterance: Duration,
    /// `None`: admit the measured number of sessions.
    pub max_sessions: Option<usize>,
}

pub const DEFAULT_WHISPER_MODEL_DIR: &str = "data/models/whisper-tiny.en";

const COMPUTE_TYPES: [&str; 10] = [
    "default",
    "auto",
    "float32",
    "int8",
    "int8_float32",
    "int8_float16",
    "int8_bfloat16",
    "int16",
    "float16",
    "bfloat16",
];

/// True when `dir` holds the files of a CTranslate2 Whisper model.
pub fn whisper_model_present(dir: &Path) -> bool {
    ["model.bin", "config.json", "tokenizer.json"]
        .iter()
        .all(|f| dir.join(f).is_file())
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub http_host: IpAddr,
    pub port: u16,
    pub rtmp_bind: IpAddr,
    pub rtmp_internal_port: u16,
    pub rtmp_host: String,
    pub rtmp_external_port: Option<u16>,
    pub database_url: String,
    pub gladia_api_key: Option<String>,
    pub gladia_api_url: String,
    pub gladia_region: Option<String>,
    pub gladia_max_session: Duration,
    pub stt_provider: SttProvider,
    /// Why this provider was chosen, for the start-up line.
    pub stt_provider_reason: String,
    pub whisper: WhisperConfig,
    pub pcm_chunk_ms: u32,
    pub pcm_flush_ms: u32,
    pub ws_ping_interval: Duration,
    pub ws_max_missed_pongs: u32,
    pub client_max_queued_finals: usize,
    pub transcript_batch_size: usize,
    pub transcript_batch_delay: Duration,
    pub transcript_max_queued: usize,
    pub transcript_spill_dir: PathBuf,
    pub transcript_spill_max_bytes: u64,
    pub active_speaker_ttl: Duration,
    pub publisher_reconnect_grace: Duration,
    pub decoder_max_restarts: u32,
    pub realtime_auth_secret: Option<String>,
    pub rtmp_stream_key_secret: Option<String>,
    /// `REALTIME_BROADCAST_MODE=http`: post every message to `realtime_broadcast_url`.
    pub broadcast_http: bool,
    /// The receiver's full broadcast endpoint URL (a base URL gets the path appended).
    pub realtime_broadcast_url: Option<String>,
    /// Sent by an http-mode instance; when set, this instance also accepts relayed messages.
    pub realtime_broadcast_secret: Option<String>,
    pub redis_url: Option<String>,
    pub insecure: bool,
    pub max_sessions: usize,
    pub max_clients_per_session: usize,
    pub rust_log: String,
}

pub const DEFAULT_DATABASE_URL: &str = "sqlite://./data/realtime-core.db";

/// One line: `VARIABLE="value" is not allowed: what is`.
#[derive(Debug, thiserror::Error)]
#[error("{variable}={value:?} is not allowed: {allowed}")]
pub struct ConfigError {
    pub variable: &'static str,
    pub value: String,
    pub allowed: String,
}

fn bad(variable: &'static str, value: &str, allowed: impl Into<String>) -> ConfigError {
    ConfigError {
        variable,
        value: value.to_owned(),
        allowed: allowed.into(),
    }
}

fn number<T: std::str::FromStr + PartialOrd + std::fmt::Display + Copy>(
    variable: &'static str,
    value: &str,
    min: T,
    max: T,
) -> Result<T, ConfigError> {
    match value.trim().parse::<T>() {
        Ok(n) if n >= min && n <= max => Ok(n),
        _ => Err(bad(
            variable,
            value,
            format!("a whole number from {min} to {max}"),
        )),
    }
}

fn address(variable: &'static str, value: &str) -> Result<IpAddr, ConfigError> {
    if value == "localhost" {
        return Ok(IpAddr::V4(Ipv4Addr::LOCALHOST));
    }
    value.parse().map_err(|_| {
        bad(
            variable,
            value,
            "an IP address such as 127.0.0.1 or 0.0.0.0",
        )
    })
}

fn boolean(variable: &'static str, value: &str) -> Result<bool, ConfigError> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" => Ok(true),
        "false" | "0" | "no" | "" => Ok(false),
        _ => Err(bad(variable, value, "true or false")),
    }
}

fn non_empty(value: Option<String>) -> Option<String> {
    value.filter(|v| !v.trim().is_empty())
}

fn whisper_config(cli: &Cli) -> Result<WhisperConfig, ConfigError> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = match non_empty(cli.whisper_threads.clone()) {
        Some(v) => number("WHISPER_THREADS", &v, 1usize, 256)?,
        None => cores.min(4),
    };
    let workers = match non_empty(cli.whisper_workers.clone()) {
        Some(v) => number("WHISPER_WORKERS", &v, 1usize, 256)?,
        None => (cores / threads).max(1),
    };
    let compute_type = cli.whisper_compute_type.trim().to_owned();
    if !COMPUTE_TYPES.contains(&compute_type.as_str()) {
        return Err(bad(
            "WHISPER_COMPUTE_TYPE",
            &cli.whisper_compute_type,
            COMPUTE_TYPES.join(", "),
        ));
    }
    let language = match non_empty(cli.whisper_language.clone()) {
        Some(l) if (2..=3).contains(&l.len()) && l.chars().all(|c| c.is_ascii_lowercase()) => {
            Some(l)
        }
        Some(l) => {
            return Err(bad(
                "WHISPER_LANGUAGE",
                &l,
                "a language code such as en or de",
            ))
        }
        None => None,
    };
    let max_sessions = match non_empty(cli.whisper_max_sessions.clone()) {
        Some(v) => Some(number("WHISPER_MAX_SESSIONS", &v, 1usize, 10_000)?),
        None => None,
    };
    Ok(WhisperConfig {
        model_dir: PathBuf::from(cli.whisper_model_dir.trim()),
        threads,
        workers,
        compute_type,
        language,
        beam_size: number("WHISPER_BEAM_SIZE", &cli.whisper_beam_size, 1usize, 16)?,
        partial_period: Duration::from_millis(number(
            "WHISPER_PARTIAL_PERIOD_MS",
            &cli.whisper_partial_period_ms,
            100u64,
            30_000,
        )?),
        endpoint_silence: Duration::from_millis(number(
            "WHISPER_ENDPOINT_SILENCE_MS",
            &cli.whisper_endpoint_silence_ms,
            100u64,
            10_000,
        )?),
        // Whisper hears 30 s at most; the cut leaves room for the pre-roll and tail.
        max_utterance: Duration::from_millis(number(
            "WHISPER_MAX_UTTERANCE_MS",
            &cli.whisper_max_utterance_ms,
            1_000u64,
            29_000,
        )?),
        max_sessions,
    })
}

impl Config {
    pub fn from_cli(cli: Cli) -> Result<Config, ConfigError> {
        let whisper = whisper_config(&cli)?;
        let http_host = address("HTTP_HOST", &cli.http_host)?;
        let rtmp_bind = address("RTMP_BIND", &cli.rtmp_bind)?;
        let port = number("PORT", &cli.port, 0u16, u16::MAX)?;
        let rtmp_internal_port = number(
            "RTMP_INTERNAL_PORT",
            &cli.rtmp_internal_port,
            0u16,
            u16::MAX,
        )?;
        let rtmp_external_port = match non_empty(cli.rtmp_external_port) {
            Some(v) => Some(number("RTMP_EXTERNAL_PORT", &v, 1u16, u16::MAX)?),
            None => None,
        };
        if cli.rtmp_host.trim().is_empty() || cli.rtmp_host.contains(['/', ' ', '?', '#']) {
            return Err(bad(
                "RTMP_HOST",
                &cli.rtmp_host,
                "a host name or address, without scheme or path",
            ));
        }
        let database_url =
            non_empty(cli.database_url).unwrap_or_else(|| DEFAULT_DATABASE_URL.to_owned());
        let db_ok = ["sqlite:", "postgres://", "postgresql://"]
            .iter()
            .any(|p| database_url.starts_with(p));
        if !db_ok {
            // Never echo the URL: it may carry a password.
            return Err(bad(
                "DATABASE_URL",
                "<hidden>",
                "a sqlite://PATH or postgres://… URL",
            ));
        }
        let gladia_api_url = cli.gladia_api_url.trim_end_matches('/').to_owned();
        if !(gladia_api_url.starts_with("http://") || gladia_api_url.starts_with("https://")) {
            return Err(bad(
                "GLADIA_API_URL",
                &cli.gladia_api_url,
                "an http:// or https:// URL",
            ));
        }
        let gladia_region = match non_empty(cli.gladia_region) {
            Some(r) if r == "eu-west" || r == "us-west" => Some(r),
            Some(r) => return Err(bad("GLADIA_REGION", &r, "eu-west or us-west")),
            None => None,
        };
        let gladia_api_key = non_empty(cli.gladia_api_key);
        let model_dir = whisper.model_dir.display().to_string();
        let (stt_provider, stt_provider_reason) = match non_empty(cli.stt_provider).as_deref() {
            Some("gladia") if gladia_api_key.is_none() => {
                return Err(bad(
                    "STT_PROVIDER",
                    "gladia",
                    "whisper, unless GLADIA_API_KEY is set",
                ))
            }
            Some("gladia") => (SttProvider::Gladia, "STT_PROVIDER=gladia".to_owned()),
            Some("whisper") => (SttProvider::Whisper, "STT_PROVIDER=whisper".to_owned()),
            Some(other) => return Err(bad("STT_PROVIDER", other, "gladia or whisper")),
            None if gladia_api_key.is_some() => {
                (SttProvider::Gladia, "GLADIA_API_KEY is set".to_owned())
            }
            None if whisper_model_present(&whisper.model_dir) => (
                SttProvider::Whisper,
                format!("no GLADIA_API_KEY; Whisper model found in {model_dir}"),
            ),
            None => (
                SttProvider::None,
                format!("no GLADIA_API_KEY and no Whisper model in {model_dir}; scripts/install-whisper-model.sh installs it"),
            ),
        };
        let gladia_max_session = Duration::from_secs(number(
            "GLADIA_MAX_SESSION_SECS",
            &cli.gladia_max_session_secs,
            5u64,
            10_800,
        )?);
        let pcm_chunk_ms = number("PCM_CHUNK_SIZE_MS", &cli.pcm_chunk_size_ms, 10u32, 1000)?;
        let pcm_flush_ms = number(
            "PCM_FLUSH_INTERVAL_MS",
            &cli.pcm_flush_interval_ms,
            1u32,
            10_000,
        )?;
        let ws_ping_interval = Duration::from_millis(number(
            "WS_PING_INTERVAL_MS",
            &cli.ws_ping_interval_ms,
            100u64,
            3_600_000,
        )?);
        let ws_max_missed_pongs =
            number("WS_MAX_MISSED_PONGS", &cli.ws_max_missed_pongs, 1u32, 1000)?;
        let client_max_queued_finals = number(
            "CLIENT_MAX_QUEUED_FINALS",
            &cli.client_max_queued_finals,
            1usize,
            1_000_000,
        )?;
        let transcript_batch_size = number(
            "TRANSCRIPT_BATCH_SIZE",
            &cli.transcript_batch_size,
            1usize,
            10_000,
        )?;
        let transcript_batch_delay = Duration::from_millis(number(
            "TRANSCRIPT_BATCH_DELAY_MS",
            &cli.transcript_batch_delay_ms,
            1u64,
            600_000,
        )?);
        let transcript_max_queued = number(
            "TRANSCRIPT_MAX_QUEUED",
            &cli.transcript_max_queued,
            1usize,
            100_000_000,
        )?;
        let transcript_spill_dir = non_empty(cli.transcript_spill_dir)
            .map(PathBuf::from)
            .unwrap_or_else(|| crate::db::default_spill_dir(&database_url));
        let transcript_spill_max_bytes = number(
            "TRANSCRIPT_SPILL_MAX_BYTES",
            &cli.transcript_spill_max_bytes,
            0u64,
            u64::MAX,
        )?;
        let active_speaker_ttl = Duration::from_millis(number(
            "ACTIVE_SPEAKER_TTL_MS",
            &cli.active_speaker_ttl_ms,
            1u64,
            3_600_000,
        )?);
        let decoder_max_restarts = number(
            "DECODER_MAX_RESTARTS",
            &cli.decoder_max_restarts,
            0u32,
            1000,
        )?;
        let publisher_reconnect_grace = Duration::from_millis(number(
            "PUBLISHER_RECONNECT_GRACE_MS",
            &cli.publisher_reconnect_grace_ms,
            0u64,
            600_000,
        )?);
        let broadcast_http = match cli.realtime_broadcast_mode.as_str() {
            "direct" => false,
            "http" => true,
            other => return Err(bad("REALTIME_BROADCAST_MODE", other, "direct or http")),
        };
        let realtime_broadcast_url = match non_empty(cli.realtime_broadcast_url) {
            Some(url) if url.starts_with("http://") || url.starts_with("https://") => {
                Some(::actors::relay::endpoint_url(&url))
            }
            Some(url) => {
                return Err(bad(
                    "REALTIME_BROADCAST_URL",
                    &::actors::relay::loggable_url(&url),
                    "an http:// or https:// URL of the receiving instance",
                ))
            }
            None => None,
        };
        let realtime_broadcast_secret = non_empty(cli.realtime_broadcast_secret);
        if broadcast_http && realtime_broadcast_url.is_none() {
            return Err(bad(
                "REALTIME_BROADCAST_URL",
                "",
                "a URL when REALTIME_BROADCAST_MODE=http",
            ));
        }
        if broadcast_http && realtime_broadcast_secret.is_none() {
            // Never echo a secret; here there is none to echo.
            return Err(bad(
                "REALTIME_BROADCAST_SECRET",
                "",
                "the receiving instance's shared secret when REALTIME_BROADCAST_MODE=http",
            ));
        }
        let insecure = boolean("REALTIME_INSECURE", &cli.realtime_insecure)?;
        let max_sessions = number("MAX_SESSIONS", &cli.max_sessions, 1usize, 100_000)?;
        let max_clients_per_session = number(
            "MAX_CLIENTS_PER_SESSION",
            &cli.max_clients_per_session,
            1usize,
            1_000_000,
        )?;
        if tracing_subscriber::EnvFilter::try_new(&cli.rust_log).is_err() {
            return Err(bad(
                "RUST_LOG",
                &cli.rust_log,
                "a tracing filter such as info or realtime_core=debug",
            ));
        }
        let config = Config {
            http_host,
            port,
            rtmp_bind,
            rtmp_internal_port,
            rtmp_host: cli.rtmp_host,
            rtmp_external_port,
            database_url,
            gladia_api_key,
            gladia_api_url,
            gladia_max_session,
            gladia_region,
            stt_provider,
            stt_provider_reason,
            whisper,
            pcm_chunk_ms,
            pcm_flush_ms,
            ws_ping_interval,
            ws_max_missed_pongs,
            client_max_queued_finals,
            transcript_batch_size,
            transcript_batch_delay,
            transcript_max_queued,
            transcript_spill_dir,
            transcript_spill_max_bytes,
            active_speaker_ttl,
            publisher_reconnect_grace,
            decoder_max_restarts,
            realtime_auth_secret: non_empty(cli.realtime_auth_secret),
            rtmp_stream_key_secret: non_empty(cli.rtmp_stream_key_secret),
            broadcast_http,
            realtime_broadcast_url,
            realtime_broadcast_secret,
            redis_url: non_empty(cli.redis_url),
            insecure,
            max_sessions,
            max_clients_per_session,
            rust_log: cli.rust_log,
        };
        config.check_exposure()?;
        Ok(config)
    }

    /// SPEC §5: bound beyond loopback, the service needs its secrets unless told it is private.
    fn check_exposure(&self) -> Result<(), ConfigError> {
        if self.insecure {
            return Ok(());
        }
        if !self.http_host.is_loopback() && self.realtime_auth_secret.is_none() {
            return Err(bad(
                "HTTP_HOST",
                &self.http_host.to_string(),
                "a loopback address unless REALTIME_AUTH_SECRET is set (or REALTIME_INSECURE=true on a private network)",
            ));
        }
        if !self.rtmp_bind.is_loopback() && self.rtmp_stream_key_secret.is_none() {
            return Err(bad(
                "RTMP_BIND",
                &self.rtmp_bind.to_string(),
                "a loopback address unless RTMP_STREAM_KEY_SECRET is set (or REALTIME_INSECURE=true on a private network)",
            ));
        }
        Ok(())
    }

    /// The `rtmp://host:port/live/` prefix handed to egress, given the bound RTMP port.
    pub fn rtmp_url_base(&self, bound_rtmp_port: u16) -> String {
        let port = self.rtmp_external_port.unwrap_or(bound_rtmp_port);
        format!("rtmp://{}:{}/live/", self.rtmp_host, port)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Config, ConfigError> {
        let mut argv = vec!["realtime-core"];
        argv.extend_from_slice(args);
        Config::from_cli(Cli::try_parse_from(argv).expect("clap accepts the flags"))
    }

    #[test]
    fn defaults_are_valid_and_local() {
        let c = parse(&[]).unwrap();
        assert!(c.http_host.is_loopback());
        assert_eq!(c.port, 8080);
        assert_eq!(c.pcm_chunk_ms, 100);
        assert_eq!(c.database_url, DEFAULT_DATABASE_URL);
        assert_eq!(c.transcript_max_queued, 100_000);
        assert_eq!(c.transcript_spill_dir, PathBuf::from("./data/spill"));
        assert_eq!(c.transcript_spill_max_bytes, 1 << 30);
        let c = parse(&["--database-url", "postgres://h/db"]).unwrap();
        assert_eq!(c.transcript_spill_dir, PathBuf::from("./data/spill"));
        let c = parse(&["--transcript-spill-dir", "/var/spool/rt"]).unwrap();
        assert_eq!(c.transcript_spill_dir, PathBuf::from("/var/spool/rt"));
    }

    #[test]
    fn bad_values_name_the_variable() {
        let e = parse(&["--port", "http"]).unwrap_err().to_string();
        assert!(e.starts_with("PORT=\"http\""), "{e}");
        let e = parse(&["--gladia-region", "mars"]).unwrap_err().to_string();
        assert!(
            e.contains("GLADIA_REGION") && e.contains("eu-west or us-west"),
            "{e}"
        );
        let e = parse(&["--pcm-chunk-size-ms", "0"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("PCM_CHUNK_SIZE_MS"), "{e}");
        assert!(!e.contains('\n'));
    }

    #[test]
    fn public_bind_needs_secrets() {
        let e = parse(&["--http-host", "0.0.0.0"]).unwrap_err().to_string();
        assert!(e.contains("REALTIME_AUTH_SECRET"), "{e}");
        assert!(parse(&["--http-host", "0.0.0.0", "--realtime-insecure", "true"]).is_ok());
    }

    #[test]
    fn http_broadcast_mode_needs_url_and_secret() {
        let c = parse(&[]).unwrap();
        assert!(!c.broadcast_http && c.realtime_broadcast_url.is_none());
        let e = parse(&["--realtime-broadcast-mode", "kafka"])
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("REALTIME_BROADCAST_MODE=\"kafka\"") && e.contains("direct or http"),
            "{e}"
        );
        let e = parse(&["--realtime-broadcast-mode", "http"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("REALTIME_BROADCAST_URL"), "{e}");
        let e = parse(&[
            "--realtime-broadcast-mode",
            "http",
            "--realtime-broadcast-url",
            "http://10.0.0.2:8080",
        ])
        .unwrap_err()
        .to_string();
        assert!(e.contains("REALTIME_BROADCAST_SECRET"), "{e}");
        let e = parse(&["--realtime-broadcast-url", "ftp://x"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("REALTIME_BROADCAST_URL"), "{e}");
        let c = parse(&[
            "--realtime-broadcast-mode",
            "http",
            "--realtime-broadcast-url",
            "http://10.0.0.2:8080/",
            "--realtime-broadcast-secret",
            "s3cret",
        ])
        .unwrap();
        assert!(c.broadcast_http);
        assert_eq!(
            c.realtime_broadcast_url.as_deref(),
            Some("http://10.0.0.2:8080/api/realtime/transcribe/broadcast")
        );
    }

    #[test]
    fn provider_defaults_to_whisper_only_when_its_model_is_there() {
        let empty = tempfile::tempdir().unwrap();
        let dir = empty.path().to_str().unwrap();
        let c = parse(&["--whisper-model-dir", dir]).unwrap();
        assert_eq!(c.stt_provider, SttProvider::None);
        assert!(c.stt_provider_reason.contains("install-whisper-model.sh"));
        for f in ["model.bin", "config.json", "tokenizer.json"] {
            std::fs::write(empty.path().join(f), b"x").unwrap();
        }
        let c = parse(&["--whisper-model-dir", dir]).unwrap();
        assert_eq!(c.stt_provider, SttProvider::Whisper);
        let c = parse(&["--whisper-model-dir", dir, "--gladia-api-key", "k"]).unwrap();
        assert_eq!(c.stt_provider, SttProvider::Gladia);
        let c = parse(&[
            "--whisper-model-dir",
            dir,
            "--gladia-api-key",
            "k",
            "--stt-provider",
            "whisper",
        ])
        .unwrap();
        assert_eq!(c.stt_provider, SttProvider::Whisper);
        assert_eq!(c.stt_provider_reason, "STT_PROVIDER=whisper");
    }

    #[test]
    fn whisper_settings_are_validated() {
        let e = parse(&["--whisper-max-utterance-ms", "30000"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("WHISPER_MAX_UTTERANCE_MS"), "{e}");
        let e = parse(&["--whisper-compute-type", "int4"])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("WHISPER_COMPUTE_TYPE") && e.contains("int8"),
            "{e}"
        );
        let e = parse(&["--whisper-max-sessions", "0"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("WHISPER_MAX_SESSIONS"), "{e}");
        let c = parse(&["--whisper-threads", "2", "--whisper-workers", "3"]).unwrap();
        assert_eq!((c.whisper.threads, c.whisper.workers), (2, 3));
        assert_eq!(c.whisper.max_sessions, None);
    }

    #[test]
    fn database_url_is_never_echoed() {
        let e = parse(&["--database-url", "mysql://user:hunter2@db/x"])
            .unwrap_err()
            .to_string();
        assert!(!e.contains("hunter2"), "{e}");
    }
}
