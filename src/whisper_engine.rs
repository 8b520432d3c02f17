//! The offline provider's engine: Whisper through CTranslate2 (the `whisper` crate), loaded
//! and measured at start-up, behind the actors' [`Transcriber`]. A build without the `whisper`
//! feature (the fuzz build) has no engine and says so if asked for one.

#[cfg(feature = "whisper")]
pub use engine::start;

/// Without the `whisper` feature: no offline provider in this build.
#[cfg(not(feature = "whisper"))]
pub fn start(
    _: &crate::config::WhisperConfig,
) -> anyhow::Result<(::actors::whisper::WhisperProvider, String)> {
    anyhow::bail!(
        "STT_PROVIDER=whisper: this build has no whisper provider (built without the `whisper` feature)"
    )
}

#[cfg(feature = "whisper")]
mod engine {
    use std::sync::Arc;
    use std::time::Instant;

    use ::actors::whisper::pool::{Decoded, Transcriber};
    use ::actors::whisper::vad::VadConfig;
    use ::actors::whisper::{measure, WhisperProvider, WhisperSettings};
    use anyhow::Context as _;

    use crate::config::{name_of, WhisperConfig};

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
    pub fn start(config: &WhisperConfig) -> anyhow::Result<(WhisperProvider, String)> {
        let before = resident_bytes();
        let loaded = Instant::now();
        let engine = whisper::WhisperEngine::load(&whisper::EngineOptions {
            model_dir: config.model_dir.clone(),
            threads: config.threads,
            replicas: config.workers,
            compute_type: name_of(&config.compute_type),
            language: config.language.clone(),
            beam_size: config.beam_size,
            window: whisper::Window::at_least(config.min_window_s),
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
            name_of(&config.compute_type),
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
}
