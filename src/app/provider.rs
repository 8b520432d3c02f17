//! The speech-to-text provider every new session uses (docs/PROTOCOL.md#speech-to-text-providers), built once at start-up.
//!
//! Gladia needs only its settings; Whisper loads its model and measures this machine, which
//! takes seconds of blocking work, so it runs off the async thread. The line returned says
//! which provider and why, for the operator reading the start-up log.

use std::sync::Arc;
use std::time::Duration;

use ::actors::gladia::GladiaConfig;
use ::actors::stt::SttBackend;
use anyhow::Context as _;

use crate::config::{name_of, Config, SttProvider};

/// The provider a new session uses (`None`: audio is decoded but not transcribed), and the
/// start-up line saying which and why.
pub(super) async fn provider(config: &Config) -> anyhow::Result<(Option<SttBackend>, String)> {
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
