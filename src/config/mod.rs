//! Configuration (docs/PROTOCOL.md#configuration): every setting is an environment variable and a flag.
//!
//! [`Cli`] declares each setting once, with its type, default and range; clap reads and checks
//! it through the parsers of `values`, so a bad value stops start-up with one line naming the
//! variable ([`ConfigError`]). [`Config::from_cli`] adds only what spans several settings: the
//! defaults that depend on another setting, and the combinations that are refused.

mod values;

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::builder::EnumValueParser;
use clap::{ArgAction, Parser, ValueEnum};

use crate::rtmp::{ProxyProtocol, TrustedProxies, PROXY_HEADER_TIMEOUT};

use values::{
    address, bad, boolean, database_url, host, http_url, language, log_filter, millis, path,
    redis_url, relay_url, seconds, text, trusted_proxies, whole, BlankIsUnset, Trimmed,
};
pub use values::{name_of, ConfigError};

// Here rather than in `values`: the conversion needs the settings' command, and `values` does
// not depend on `Cli` (the modules import one way).
impl From<clap::Error> for ConfigError {
    fn from(error: clap::Error) -> Self {
        ConfigError::from_clap(error, <Cli as clap::CommandFactory>::command())
    }
}

/// Live meeting audio over RTMP in, live transcripts over WebSocket out.
// Optional settings are declared `std::option::Option` with an empty default: a blank variable
// means "not set" (see `values::BlankIsUnset`).
#[derive(Parser, Debug)]
#[command(name = "realtime-core", version, about)]
pub struct Cli {
    /// Address of the HTTP API and WebSocket listener (loopback by default, see docs/PROTOCOL.md#security).
    #[arg(long, env = "HTTP_HOST", default_value = "127.0.0.1", value_parser = address)]
    pub http_host: IpAddr,
    /// Port of the HTTP API and WebSocket listener (0 picks a free port).
    #[arg(long, env = "PORT", default_value = "8080", value_parser = whole(0u16, u16::MAX))]
    pub port: u16,
    /// Address of the RTMP listener.
    #[arg(long, env = "RTMP_BIND", default_value = "127.0.0.1", value_parser = address)]
    pub rtmp_bind: IpAddr,
    /// Port of the RTMP listener (0 picks a free port).
    #[arg(long, env = "RTMP_INTERNAL_PORT", default_value = "1937",
          value_parser = whole(0u16, u16::MAX))]
    pub rtmp_internal_port: u16,
    /// Concurrent RTMP connections from one publisher address (behind a PROXY-protocol load
    /// balancer: the address its header names).
    #[arg(long, env = "RTMP_MAX_CONNECTIONS_PER_IP", default_value = "16",
          value_parser = whole(1usize, 100_000))]
    pub rtmp_max_connections_per_ip: usize,
    /// Concurrent RTMP connections on the listener, whatever their address.
    #[arg(long, env = "RTMP_MAX_CONNECTIONS", default_value = "1024",
          value_parser = whole(1usize, 1_000_000))]
    pub rtmp_max_connections: usize,
    /// Every RTMP connection starts with a PROXY protocol v1 or v2 header from a load balancer
    /// in RTMP_TRUSTED_PROXIES; other peers are closed.
    #[arg(long, env = "RTMP_PROXY_PROTOCOL", default_value = "false", action = ArgAction::Set,
          value_parser = boolean)]
    pub rtmp_proxy_protocol: bool,
    /// Comma-separated CIDR blocks of the load balancers allowed to send a PROXY header
    /// (required with RTMP_PROXY_PROTOCOL=true).
    #[arg(long, env = "RTMP_TRUSTED_PROXIES", default_value = "", hide_default_value = true,
          value_parser = BlankIsUnset(trusted_proxies))]
    pub rtmp_trusted_proxies: std::option::Option<TrustedProxies>,
    /// Host written into the rtmpUrl handed to egress.
    #[arg(long, env = "RTMP_HOST", default_value = "localhost", value_parser = host)]
    pub rtmp_host: String,
    /// Port written into the rtmpUrl [default: the internal port].
    #[arg(long, env = "RTMP_EXTERNAL_PORT", default_value = "", hide_default_value = true,
          value_parser = BlankIsUnset(whole(1u16, u16::MAX)))]
    pub rtmp_external_port: std::option::Option<u16>,
    /// sqlite://PATH or postgres://… [default: sqlite://./data/realtime-core.db]
    #[arg(long, env = "DATABASE_URL", hide_env_values = true, default_value = "",
          hide_default_value = true, value_parser = BlankIsUnset(database_url))]
    pub database_url: std::option::Option<String>,
    /// Gladia API key (never logged).
    #[arg(long, env = "GLADIA_API_KEY", hide_env_values = true, default_value = "",
          hide_default_value = true, value_parser = BlankIsUnset(text))]
    pub gladia_api_key: std::option::Option<String>,
    /// Base URL of the Gladia Live v2 API.
    #[arg(long, env = "GLADIA_API_URL", default_value = "https://api.gladia.io",
          value_parser = http_url)]
    pub gladia_api_url: String,
    /// Sent as the region query parameter [default: none, Gladia's choice].
    #[arg(long, env = "GLADIA_REGION", default_value = "", hide_default_value = true,
          value_parser = BlankIsUnset(Trimmed(EnumValueParser::<GladiaRegion>::new())))]
    pub gladia_region: std::option::Option<GladiaRegion>,
    /// Gladia's limit on one live session, in seconds (5-10800). The stream moves to a fresh
    /// provider session before it, at a pause when there is one.
    #[arg(long, env = "GLADIA_MAX_SESSION_SECS", default_value = "10800",
          value_parser = seconds(5, 10_800))]
    pub gladia_max_session_secs: Duration,
    /// Who transcribes [default: gladia with a key, else whisper when its model is installed]
    #[arg(long, env = "STT_PROVIDER", default_value = "", hide_default_value = true,
          value_parser = BlankIsUnset(Trimmed(EnumValueParser::<SttProvider>::new())))]
    pub stt_provider: std::option::Option<SttProvider>,
    /// A Whisper model in CTranslate2 format (tiny to large, multilingual or `.en`);
    /// scripts/install-whisper-model.sh installs the default one.
    #[arg(long, env = "WHISPER_MODEL_DIR", default_value = DEFAULT_WHISPER_MODEL_DIR,
          value_parser = path)]
    pub whisper_model_dir: PathBuf,
    /// CPU threads one Whisper decode uses [default: the cores, at most 4].
    #[arg(long, env = "WHISPER_THREADS", default_value = "", hide_default_value = true,
          value_parser = BlankIsUnset(whole(1usize, 256)))]
    pub whisper_threads: std::option::Option<usize>,
    /// Whisper decodes that run at once [default: cores / WHISPER_THREADS, at least 1].
    #[arg(long, env = "WHISPER_WORKERS", default_value = "", hide_default_value = true,
          value_parser = BlankIsUnset(whole(1usize, 256)))]
    pub whisper_workers: std::option::Option<usize>,
    /// CTranslate2 compute type.
    #[arg(long, env = "WHISPER_COMPUTE_TYPE", default_value = "int8",
          value_parser = Trimmed(EnumValueParser::<ComputeType>::new()))]
    pub whisper_compute_type: ComputeType,
    /// Language code for multilingual models [default: detected per utterance].
    #[arg(long, env = "WHISPER_LANGUAGE", default_value = "", hide_default_value = true,
          value_parser = BlankIsUnset(language))]
    pub whisper_language: std::option::Option<String>,
    /// Beam size of Whisper decoding (1: greedy, fastest).
    #[arg(long, env = "WHISPER_BEAM_SIZE", default_value = "1", value_parser = whole(1usize, 16))]
    pub whisper_beam_size: usize,
    /// The Whisper encoder's window fits the utterance but is at least this many seconds
    /// (30: always the full window, as Whisper was trained; shorter decodes faster).
    #[arg(long, env = "WHISPER_MIN_WINDOW_S", default_value = "10", value_parser = whole(1u32, 30))]
    pub whisper_min_window_s: u32,
    /// A partial every this many ms of a growing utterance (each re-decodes the utterance).
    #[arg(long, env = "WHISPER_PARTIAL_PERIOD_MS", default_value = "1000",
          value_parser = millis(100, 30_000))]
    pub whisper_partial_period_ms: Duration,
    /// A pause this long (ms) ends an utterance: its final is decoded.
    #[arg(long, env = "WHISPER_ENDPOINT_SILENCE_MS", default_value = "600",
          value_parser = millis(100, 10_000))]
    pub whisper_endpoint_silence_ms: Duration,
    /// An utterance is cut at this length in ms (below Whisper's 30 s window).
    // Whisper hears 30 s at most; the cut leaves room for the pre-roll and tail.
    #[arg(long, env = "WHISPER_MAX_UTTERANCE_MS", default_value = "20000",
          value_parser = millis(1_000, 29_000))]
    pub whisper_max_utterance_ms: Duration,
    /// Concurrent whisper sessions admitted [default: the number this machine serves in real
    /// time, measured at start-up].
    #[arg(long, env = "WHISPER_MAX_SESSIONS", default_value = "", hide_default_value = true,
          value_parser = BlankIsUnset(whole(1usize, 10_000)))]
    pub whisper_max_sessions: std::option::Option<usize>,
    /// Audio per chunk sent to the provider, in ms (10-1000).
    #[arg(long, env = "PCM_CHUNK_SIZE_MS", default_value = "100", value_parser = whole(10u32, 1000))]
    pub pcm_chunk_size_ms: u32,
    /// A partial chunk older than this (ms) is sent anyway (1-10000).
    #[arg(long, env = "PCM_FLUSH_INTERVAL_MS", default_value = "50",
          value_parser = whole(1u32, 10_000))]
    pub pcm_flush_interval_ms: u32,
    /// WebSocket ping period in ms.
    #[arg(long, env = "WS_PING_INTERVAL_MS", default_value = "30000",
          value_parser = millis(100, 3_600_000))]
    pub ws_ping_interval_ms: Duration,
    /// Unanswered pings in a row before a client is closed.
    #[arg(long, env = "WS_MAX_MISSED_PONGS", default_value = "3", value_parser = whole(1u32, 1000))]
    pub ws_max_missed_pongs: u32,
    /// Finals waiting for one slow client before it is disconnected.
    #[arg(long, env = "CLIENT_MAX_QUEUED_FINALS", default_value = "1000",
          value_parser = whole(1usize, 1_000_000))]
    pub client_max_queued_finals: usize,
    /// Finals per database batch.
    #[arg(long, env = "TRANSCRIPT_BATCH_SIZE", default_value = "50",
          value_parser = whole(1usize, 10_000))]
    pub transcript_batch_size: usize,
    /// A batch is written at the latest this many ms after its first final.
    #[arg(long, env = "TRANSCRIPT_BATCH_DELAY_MS", default_value = "2000",
          value_parser = millis(1, 600_000))]
    pub transcript_batch_delay_ms: Duration,
    /// Finals kept in memory while the database is unavailable; the rest go to the spill file.
    #[arg(long, env = "TRANSCRIPT_MAX_QUEUED", default_value = "100000",
          value_parser = whole(1usize, 100_000_000))]
    pub transcript_max_queued: usize,
    /// Directory of the spill file [default: `spill` next to the SQLite file, else ./data/spill]
    #[arg(long, env = "TRANSCRIPT_SPILL_DIR", default_value = "", hide_default_value = true,
          value_parser = BlankIsUnset(path))]
    pub transcript_spill_dir: std::option::Option<PathBuf>,
    /// Bound of the spill file in bytes (at most 1 TiB); beyond it finals are lost (and
    /// counted).
    #[arg(long, env = "TRANSCRIPT_SPILL_MAX_BYTES", default_value = "1073741824",
          value_parser = whole(0u64, MAX_SPILL_BYTES))]
    pub transcript_spill_max_bytes: u64,
    /// Decoder rebuilds (with back-off) after consecutive failures before the session reports
    /// the error state.
    #[arg(long, env = "DECODER_MAX_RESTARTS", default_value = "5", value_parser = whole(0u32, 1000))]
    pub decoder_max_restarts: u32,
    /// How long (ms) a session whose publisher left keeps its provider session open (fed with
    /// silence) for the publisher to come back; egress retries for 30 s. 0 ends it at once.
    #[arg(long, env = "PUBLISHER_RECONNECT_GRACE_MS", default_value = "30000",
          value_parser = millis(0, 600_000))]
    pub publisher_reconnect_grace_ms: Duration,
    /// An active-speaker report older than this (ms) is not used.
    #[arg(long, env = "ACTIVE_SPEAKER_TTL_MS", default_value = "3000",
          value_parser = millis(1, 3_600_000))]
    pub active_speaker_ttl_ms: Duration,
    /// HS256 secret for client tokens.
    #[arg(long, env = "REALTIME_AUTH_SECRET", hide_env_values = true, default_value = "",
          hide_default_value = true, value_parser = BlankIsUnset(text))]
    pub realtime_auth_secret: std::option::Option<String>,
    /// When set, publishes need a signed stream key.
    #[arg(long, env = "RTMP_STREAM_KEY_SECRET", hide_env_values = true, default_value = "",
          hide_default_value = true, value_parser = BlankIsUnset(text))]
    pub rtmp_stream_key_secret: std::option::Option<String>,
    /// How long a signed stream key minted by a start can publish, in seconds (60-604800). A
    /// stop revokes it sooner; egress reconnects reuse it, so it must outlast the meeting.
    #[arg(long, env = "RTMP_STREAM_KEY_TTL_SECS", default_value = "21600",
          value_parser = seconds(60, 604_800))]
    pub rtmp_stream_key_ttl_secs: Duration,
    /// direct: this instance's clients only; http: every message is also posted to another
    /// instance.
    #[arg(long, env = "REALTIME_BROADCAST_MODE", default_value = "direct",
          value_parser = Trimmed(EnumValueParser::<BroadcastMode>::new()))]
    pub realtime_broadcast_mode: BroadcastMode,
    /// Where an ingest-only instance posts transcripts (http mode).
    #[arg(long, env = "REALTIME_BROADCAST_URL", default_value = "", hide_default_value = true,
          value_parser = BlankIsUnset(relay_url))]
    pub realtime_broadcast_url: std::option::Option<String>,
    /// Shared secret of the broadcast endpoint.
    #[arg(long, env = "REALTIME_BROADCAST_SECRET", hide_env_values = true, default_value = "",
          hide_default_value = true, value_parser = BlankIsUnset(text))]
    pub realtime_broadcast_secret: std::option::Option<String>,
    /// Allow a non-loopback bind without secrets (private networks only).
    #[arg(long, env = "REALTIME_INSECURE", default_value = "false", action = ArgAction::Set,
          value_parser = boolean)]
    pub realtime_insecure: bool,
    /// Maximum concurrent sessions on this instance.
    #[arg(long, env = "MAX_SESSIONS", default_value = "500", value_parser = whole(1usize, 100_000))]
    pub max_sessions: usize,
    /// Maximum WebSocket clients subscribed to one session.
    #[arg(long, env = "MAX_CLIENTS_PER_SESSION", default_value = "2000",
          value_parser = whole(1usize, 1_000_000))]
    pub max_clients_per_session: usize,
    /// Cluster mode: instances sharing this Redis (and one PostgreSQL DATABASE_URL) serve
    /// any session from any instance.
    #[arg(long, env = "REDIS_URL", hide_env_values = true, default_value = "",
          hide_default_value = true, value_parser = BlankIsUnset(redis_url))]
    pub redis_url: std::option::Option<String>,
    /// Cluster mode: how long a session's owner holds it without renewing (a dead instance's
    /// sessions can be taken after this), in ms (1000-60000).
    #[arg(long, env = "CLUSTER_LEASE_MS", default_value = "5000", value_parser = millis(1000, 60_000))]
    pub cluster_lease_ms: Duration,
    /// Log filter (tracing EnvFilter syntax).
    #[arg(long, env = "RUST_LOG", default_value = "info", value_parser = log_filter)]
    pub rust_log: String,
}

/// Beyond this a spill bound is a typo, not a disk.
const MAX_SPILL_BYTES: u64 = 1 << 40;

/// Who transcribes (`STT_PROVIDER`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SttProvider {
    Gladia,
    Whisper,
    /// No key and no Whisper model: audio is decoded but not transcribed. Never configured,
    /// only concluded.
    #[value(skip)]
    None,
}

/// Gladia's regions (`GLADIA_REGION`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum GladiaRegion {
    EuWest,
    UsWest,
}

/// CTranslate2's compute types (`WHISPER_COMPUTE_TYPE`), named as CTranslate2 names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
#[value(rename_all = "snake_case")]
pub enum ComputeType {
    Default,
    Auto,
    Float32,
    Int8,
    Int8Float32,
    Int8Float16,
    Int8Bfloat16,
    Int16,
    Float16,
    Bfloat16,
}

/// Where a session's messages go (`REALTIME_BROADCAST_MODE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BroadcastMode {
    /// To this instance's own clients.
    Direct,
    /// Also posted to the instance at `REALTIME_BROADCAST_URL` (docs/PROTOCOL.md#configuration).
    Http,
}

/// The offline provider's settings (docs/PROTOCOL.md#speech-to-text-providers).
#[derive(Debug, Clone)]
pub struct WhisperConfig {
    pub model_dir: PathBuf,
    pub threads: usize,
    pub workers: usize,
    pub compute_type: ComputeType,
    pub language: Option<String>,
    pub beam_size: usize,
    /// The encoder window's lower bound in seconds (30: the full window).
    pub min_window_s: u32,
    pub partial_period: Duration,
    pub endpoint_silence: Duration,
    pub max_utterance: Duration,
    /// `None`: admit the measured number of sessions.
    pub max_sessions: Option<usize>,
}

pub const DEFAULT_WHISPER_MODEL_DIR: &str = "data/models/whisper-tiny.en";

pub const DEFAULT_DATABASE_URL: &str = "sqlite://./data/realtime-core.db";

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
    pub rtmp_max_connections_per_ip: usize,
    pub rtmp_max_connections: usize,
    /// Whether RTMP publishers are behind a PROXY-protocol load balancer, and which.
    pub rtmp_proxy_protocol: ProxyProtocol,
    pub database_url: String,
    pub gladia_api_key: Option<String>,
    pub gladia_api_url: String,
    pub gladia_region: Option<GladiaRegion>,
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
    pub rtmp_stream_key_ttl: Duration,
    /// `Http`: post every message to `realtime_broadcast_url` too.
    pub broadcast_mode: BroadcastMode,
    /// The receiver's full broadcast endpoint URL (a base URL gets the path appended).
    pub realtime_broadcast_url: Option<String>,
    /// Sent by an http-mode instance; when set, this instance also accepts relayed messages.
    pub realtime_broadcast_secret: Option<String>,
    pub insecure: bool,
    pub max_sessions: usize,
    pub max_clients_per_session: usize,
    /// Cluster mode's Redis; `None`: this instance is alone.
    pub redis_url: Option<String>,
    pub cluster_lease: Duration,
    pub rust_log: String,
}

impl Config {
    /// Adds what spans several settings to the values clap has checked one by one.
    pub fn from_cli(cli: Cli) -> Result<Config, ConfigError> {
        let database_url = cli
            .database_url
            .unwrap_or_else(|| DEFAULT_DATABASE_URL.to_owned());
        // The spill file lives next to the SQLite file it backs up.
        let transcript_spill_dir = cli
            .transcript_spill_dir
            .unwrap_or_else(|| crate::db::default_spill_dir(&database_url));
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        // Threads per decode times decodes at once fill the cores, unless told otherwise.
        let threads = cli.whisper_threads.unwrap_or(cores.min(4));
        let whisper = WhisperConfig {
            model_dir: cli.whisper_model_dir,
            threads,
            workers: cli.whisper_workers.unwrap_or((cores / threads).max(1)),
            compute_type: cli.whisper_compute_type,
            language: cli.whisper_language,
            beam_size: cli.whisper_beam_size,
            min_window_s: cli.whisper_min_window_s,
            partial_period: cli.whisper_partial_period_ms,
            endpoint_silence: cli.whisper_endpoint_silence_ms,
            max_utterance: cli.whisper_max_utterance_ms,
            max_sessions: cli.whisper_max_sessions,
        };
        let (stt_provider, stt_provider_reason) =
            choose_provider(cli.stt_provider, cli.gladia_api_key.is_some(), &whisper)?;
        let broadcast_http = cli.realtime_broadcast_mode == BroadcastMode::Http;
        if broadcast_http && cli.realtime_broadcast_url.is_none() {
            return Err(bad(
                "REALTIME_BROADCAST_URL",
                "",
                "a URL when REALTIME_BROADCAST_MODE=http",
            ));
        }
        if broadcast_http && cli.realtime_broadcast_secret.is_none() {
            // Never echo a secret; here there is none to echo.
            return Err(bad(
                "REALTIME_BROADCAST_SECRET",
                "",
                "the receiving instance's shared secret when REALTIME_BROADCAST_MODE=http",
            ));
        }
        let rtmp_proxy_protocol =
            proxy_protocol(cli.rtmp_proxy_protocol, cli.rtmp_trusted_proxies)?;
        if cli.redis_url.is_some() && !database_url.starts_with("postgres") {
            // Instances in a cluster number one session together: they need one database.
            // Only the scheme: the rest of the URL may carry a password.
            let scheme = database_url.split(':').next().unwrap_or_default();
            return Err(bad(
                "DATABASE_URL",
                &format!("{scheme}:…"),
                "a postgres://… URL shared by every instance when REDIS_URL is set",
            ));
        }
        let config = Config {
            http_host: cli.http_host,
            port: cli.port,
            rtmp_bind: cli.rtmp_bind,
            rtmp_internal_port: cli.rtmp_internal_port,
            rtmp_host: cli.rtmp_host,
            rtmp_external_port: cli.rtmp_external_port,
            rtmp_max_connections_per_ip: cli.rtmp_max_connections_per_ip,
            rtmp_max_connections: cli.rtmp_max_connections,
            rtmp_proxy_protocol,
            database_url,
            gladia_api_key: cli.gladia_api_key,
            gladia_api_url: cli.gladia_api_url,
            gladia_region: cli.gladia_region,
            gladia_max_session: cli.gladia_max_session_secs,
            stt_provider,
            stt_provider_reason,
            whisper,
            pcm_chunk_ms: cli.pcm_chunk_size_ms,
            pcm_flush_ms: cli.pcm_flush_interval_ms,
            ws_ping_interval: cli.ws_ping_interval_ms,
            ws_max_missed_pongs: cli.ws_max_missed_pongs,
            client_max_queued_finals: cli.client_max_queued_finals,
            transcript_batch_size: cli.transcript_batch_size,
            transcript_batch_delay: cli.transcript_batch_delay_ms,
            transcript_max_queued: cli.transcript_max_queued,
            transcript_spill_dir,
            transcript_spill_max_bytes: cli.transcript_spill_max_bytes,
            active_speaker_ttl: cli.active_speaker_ttl_ms,
            publisher_reconnect_grace: cli.publisher_reconnect_grace_ms,
            decoder_max_restarts: cli.decoder_max_restarts,
            realtime_auth_secret: cli.realtime_auth_secret,
            rtmp_stream_key_secret: cli.rtmp_stream_key_secret,
            rtmp_stream_key_ttl: cli.rtmp_stream_key_ttl_secs,
            broadcast_mode: cli.realtime_broadcast_mode,
            realtime_broadcast_url: cli.realtime_broadcast_url,
            realtime_broadcast_secret: cli.realtime_broadcast_secret,
            insecure: cli.realtime_insecure,
            max_sessions: cli.max_sessions,
            max_clients_per_session: cli.max_clients_per_session,
            redis_url: cli.redis_url,
            cluster_lease: cli.cluster_lease_ms,
            rust_log: cli.rust_log,
        };
        config.check_exposure()?;
        Ok(config)
    }

    /// docs/PROTOCOL.md#security: bound beyond loopback, the service needs its secrets unless told it is private.
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

    /// True when transcripts are also posted to another instance.
    pub fn broadcast_http(&self) -> bool {
        self.broadcast_mode == BroadcastMode::Http
    }

    /// The `rtmp://host:port/live/` prefix handed to egress, given the bound RTMP port.
    pub fn rtmp_url_base(&self, bound_rtmp_port: u16) -> String {
        let port = self.rtmp_external_port.unwrap_or(bound_rtmp_port);
        format!("rtmp://{}:{}/live/", self.rtmp_host, port)
    }
}

/// docs/PROTOCOL.md#hostile-input-and-limits: the PROXY protocol needs the proxies it trusts,
/// and a trusted list without the protocol is refused too: the operator meant the limits to
/// count publishers, and they would count the load balancer instead.
fn proxy_protocol(
    enabled: bool,
    trusted: Option<TrustedProxies>,
) -> Result<ProxyProtocol, ConfigError> {
    match (enabled, trusted) {
        (true, Some(trusted)) => Ok(ProxyProtocol::Required {
            trusted,
            header_timeout: PROXY_HEADER_TIMEOUT,
        }),
        (true, None) => Err(bad(
            "RTMP_TRUSTED_PROXIES",
            "",
            "the CIDR blocks of the load balancers (such as 10.0.0.0/8) when RTMP_PROXY_PROTOCOL=true",
        )),
        (false, Some(trusted)) => Err(bad(
            "RTMP_TRUSTED_PROXIES",
            &trusted.to_string(),
            "unset unless RTMP_PROXY_PROTOCOL=true",
        )),
        (false, None) => Ok(ProxyProtocol::Off),
    }
}

/// docs/PROTOCOL.md#speech-to-text-providers: the provider asked for, else Gladia with a key, else Whisper with a model, else
/// none; with the reason for the start-up line.
fn choose_provider(
    asked: Option<SttProvider>,
    gladia_key: bool,
    whisper: &WhisperConfig,
) -> Result<(SttProvider, String), ConfigError> {
    let model_dir = whisper.model_dir.display();
    Ok(match asked {
        Some(SttProvider::Gladia) if !gladia_key => {
            return Err(bad(
                "STT_PROVIDER",
                "gladia",
                "whisper, unless GLADIA_API_KEY is set",
            ))
        }
        Some(asked) => (asked, format!("STT_PROVIDER={}", name_of(&asked))),
        None if gladia_key => (SttProvider::Gladia, "GLADIA_API_KEY is set".to_owned()),
        None if whisper_model_present(&whisper.model_dir) => (
            SttProvider::Whisper,
            format!("no GLADIA_API_KEY; Whisper model found in {model_dir}"),
        ),
        None => (
            SttProvider::None,
            format!("no GLADIA_API_KEY and no Whisper model in {model_dir}; scripts/install-whisper-model.sh installs it"),
        ),
    })
}

#[cfg(test)]
mod tests;
