//! `cargo run -p mock-gladia`: a standalone mock Gladia Live v2 server. Point the service's
//! `GLADIA_API_URL` at the printed address.

use std::net::SocketAddr;

use anyhow::Context as _;
use clap::Parser;
use mock_gladia::{MockConfig, MockGladia};

#[derive(Debug, Parser)]
#[command(about = "Mock Gladia Live v2 server (POST /v2/live + WebSocket)")]
struct Args {
    /// Address to listen on.
    #[arg(long, env = "MOCK_GLADIA_BIND", default_value = "127.0.0.1:8089")]
    bind: SocketAddr,
    /// The x-gladia-key value to accept.
    #[arg(long, env = "MOCK_GLADIA_API_KEY", default_value = "test-key")]
    api_key: String,
    /// RMS (i16 scale) above which a 20 ms frame is speech.
    #[arg(
        long,
        env = "MOCK_GLADIA_SPEECH_RMS_THRESHOLD",
        default_value_t = 500.0
    )]
    speech_rms_threshold: f64,
    /// Silence that ends an utterance, in ms.
    #[arg(long, env = "MOCK_GLADIA_ENDPOINT_SILENCE_MS", default_value_t = 300)]
    endpoint_silence_ms: u32,
    /// Audio time between partial transcripts, in ms.
    #[arg(long, env = "MOCK_GLADIA_PARTIAL_EVERY_MS", default_value_t = 200)]
    partial_every_ms: u32,
    /// Longest utterance before it is force-closed, in ms.
    #[arg(long, env = "MOCK_GLADIA_MAX_UTTERANCE_MS", default_value_t = 8000)]
    max_utterance_ms: u32,
    /// Use `endpointing` / `maximum_duration_without_endpointing` from init bodies.
    #[arg(long, env = "MOCK_GLADIA_HONOUR_BODY_ENDPOINTING")]
    honour_body_endpointing: bool,
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let args = Args::parse();
    let mock = MockGladia::start(MockConfig {
        api_key: args.api_key,
        bind: args.bind,
        speech_rms_threshold: args.speech_rms_threshold,
        endpoint_silence_ms: args.endpoint_silence_ms,
        partial_every_ms: args.partial_every_ms,
        max_utterance_ms: args.max_utterance_ms,
        honour_body_endpointing: args.honour_body_endpointing,
        ..MockConfig::default()
    })?;
    println!("mock-gladia listening on {}", mock.base_url());

    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot build the signal runtime")?
        .block_on(tokio::signal::ctrl_c())
        .context("cannot listen for Ctrl-C")?;
    println!("mock-gladia stopping");
    mock.stop();
    Ok(())
}
