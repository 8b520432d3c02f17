//! Offline speech-to-text with a Whisper model in CTranslate2 format (tiny to large,
//! multilingual or English-only `.en`), decoded on the CPU through `ct2rs`.
//!
//! [`WhisperEngine::transcribe`] turns up to 30 s of 16 kHz mono audio into text. It uses the
//! low-level `ct2rs::sys::Whisper` with a prompt chosen for the model: English-only models get
//! `<|startoftranscript|><|notimestamps|>` (the multilingual prompt garbles them), multilingual
//! ones `<|startoftranscript|><|lang|><|transcribe|><|notimestamps|>` with the language
//! configured or detected. Whisper pads every input to 30 s, so one decode costs about the
//! same whatever the clip's length. The engine is `Send + Sync`; concurrent calls are spread
//! over its replicas.

mod features;
pub mod wer;

use std::path::{Path, PathBuf};

use ct2rs::sys::{self, ComputeType, Config, Device, StorageView, WhisperOptions};
use ct2rs::tokenizers::hf;

pub use features::{FeatureShape, LogMel};

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("the Whisper model directory {0} has no {1}")]
    MissingFile(PathBuf, &'static str),
    #[error("{0}")]
    BadOption(String),
    #[error("cannot load the Whisper model from {dir}: {message}")]
    Load { dir: PathBuf, message: String },
    #[error("decoding failed: {0}")]
    Decode(String),
}

/// How to load and run the model.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    pub model_dir: PathBuf,
    /// CPU threads one decode uses.
    pub threads: usize,
    /// Decodes that may run at once (CTranslate2 replicas sharing the weights).
    pub replicas: usize,
    /// `int8`, `int8_float32`, `int16`, `float32`, `auto`, … (CTranslate2's names).
    pub compute_type: String,
    /// For multilingual models: the language code (`en`, `de`, …); `None` detects it per clip.
    pub language: Option<String>,
    /// 1 is greedy decoding.
    pub beam_size: usize,
    /// How much audio the encoder sees per decode.
    pub window: Window,
}

/// The encoder's input window. Whisper was trained on 30 s windows (shorter audio padded with
/// silence), but the encoder's cost grows with the window, not the speech: a 3 s utterance in a
/// 30 s window is 90 % silence encoded. CTranslate2 accepts shorter inputs; very short ones
/// make the decoder repeat or stop early (whisper.cpp's `audio_ctx` has the same trade), so
/// the window never goes below `min_seconds`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Window {
    /// Always 30 s: the reference behaviour.
    Full,
    /// The utterance rounded up to the next whole second, but at least `min_seconds` and at
    /// most 30 s.
    Fit { min_seconds: u32 },
}

impl Window {
    /// The window for a floor of `min_seconds` (`WHISPER_MIN_WINDOW_S`): 30 or more is the
    /// full window.
    pub fn at_least(min_seconds: u32) -> Window {
        match min_seconds {
            30.. => Window::Full,
            min_seconds => Window::Fit { min_seconds },
        }
    }

    /// Frames (10 ms each) of the window for `samples` samples of audio at `shape`'s rate.
    pub fn frames(self, samples: usize, shape: &FeatureShape) -> usize {
        let max = shape.nb_max_frames;
        match self {
            Window::Full => max,
            Window::Fit { min_seconds } => {
                let per_second = shape.sampling_rate / shape.hop_length;
                let seconds = samples.div_ceil(shape.sampling_rate.max(1));
                // A second of margin: the last word must not touch the window's edge.
                let seconds = (seconds + 1).max(min_seconds as usize);
                (seconds * per_second).min(max)
            }
        }
    }
}

/// The files a CTranslate2 Whisper model directory must hold.
pub const MODEL_FILES: [&str; 3] = ["model.bin", "config.json", "tokenizer.json"];

/// True when `dir` looks like a CTranslate2 Whisper model.
pub fn model_present(dir: &Path) -> bool {
    MODEL_FILES.iter().all(|f| dir.join(f).is_file())
}

pub fn parse_compute_type(name: &str) -> Result<ComputeType, EngineError> {
    Ok(match name {
        "default" => ComputeType::DEFAULT,
        "auto" => ComputeType::AUTO,
        "float32" => ComputeType::FLOAT32,
        "int8" => ComputeType::INT8,
        "int8_float32" => ComputeType::INT8_FLOAT32,
        "int8_float16" => ComputeType::INT8_FLOAT16,
        "int8_bfloat16" => ComputeType::INT8_BFLOAT16,
        "int16" => ComputeType::INT16,
        "float16" => ComputeType::FLOAT16,
        "bfloat16" => ComputeType::BFLOAT16,
        other => {
            return Err(EngineError::BadOption(format!(
                "unknown compute type {other:?}"
            )))
        }
    })
}

/// One decoded clip.
#[derive(Debug, Clone, PartialEq)]
pub struct Transcription {
    /// Trimmed; empty when the model heard no speech.
    pub text: String,
    /// The language code (`en`, …).
    pub language: Option<String>,
    /// The model's probability that the clip holds no speech.
    pub no_speech_prob: f32,
}

/// Above this no-speech probability a clip's text is dropped (the model invents phrases such
/// as "Thank you." for noise).
const NO_SPEECH_THRESHOLD: f32 = 0.6;

pub struct WhisperEngine {
    model: sys::Whisper,
    tokenizer: hf::Tokenizer,
    mel: LogMel,
    multilingual: bool,
    language: Option<String>,
    beam_size: usize,
    window: Window,
    name: String,
}

impl std::fmt::Debug for WhisperEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WhisperEngine")
            .field("name", &self.name)
            .field("multilingual", &self.multilingual)
            .finish()
    }
}

impl WhisperEngine {
    pub fn load(options: &EngineOptions) -> Result<WhisperEngine, EngineError> {
        let dir = &options.model_dir;
        for file in MODEL_FILES {
            if !dir.join(file).is_file() {
                return Err(EngineError::MissingFile(dir.clone(), file));
            }
        }
        let shape = match std::fs::read(dir.join("preprocessor_config.json")) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| EngineError::Load {
                dir: dir.clone(),
                message: format!("preprocessor_config.json: {e}"),
            })?,
            // Every Whisper model uses the standard front end; the file is optional here.
            Err(_) => FeatureShape::default(),
        };
        let load_error = |message: String| EngineError::Load {
            dir: dir.clone(),
            message,
        };
        let config = Config {
            device: Device::CPU,
            compute_type: parse_compute_type(&options.compute_type)?,
            device_indices: vec![0; options.replicas.max(1)],
            num_threads_per_replica: options.threads.max(1),
            ..Config::default()
        };
        let model = sys::Whisper::new(dir, config).map_err(|e| load_error(e.to_string()))?;
        let tokenizer = hf::Tokenizer::new(dir).map_err(|e| load_error(e.to_string()))?;
        if model.n_mels() != shape.feature_size {
            return Err(load_error(format!(
                "the model expects {} mel bins, preprocessor_config.json says {}",
                model.n_mels(),
                shape.feature_size
            )));
        }
        let multilingual = model.is_multilingual();
        let language = options.language.clone().filter(|_| multilingual);
        if let Some(lang) = &language {
            if tokenizer.token_to_id(&format!("<|{lang}|>")).is_none() {
                return Err(EngineError::BadOption(format!(
                    "the model does not know the language {lang:?}"
                )));
            }
        }
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| dir.display().to_string());
        Ok(WhisperEngine {
            model,
            tokenizer,
            mel: LogMel::new(shape),
            multilingual,
            language,
            beam_size: options.beam_size.max(1),
            window: options.window,
            name,
        })
    }

    pub fn is_multilingual(&self) -> bool {
        self.multilingual
    }

    /// The model directory's name, e.g. `whisper-tiny.en`.
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn sampling_rate(&self) -> usize {
        self.mel.shape().sampling_rate
    }

    /// The longest clip one decode takes, in samples (30 s).
    pub fn max_samples(&self) -> usize {
        self.mel.shape().n_samples
    }

    /// Transcribes up to 30 s of 16 kHz mono audio in [-1, 1] (longer audio is cut).
    pub fn transcribe(&self, samples: &[f32]) -> Result<Transcription, EngineError> {
        let shape = self.mel.shape().clone();
        let frames = self.window.frames(samples.len(), &shape);
        let mut features = self.mel.compute_frames(samples, frames);
        let dims = [1, shape.feature_size, frames];
        let decode = |e: anyhow::Error| EngineError::Decode(e.to_string());
        let view = StorageView::new(&dims, &mut features, Device::CPU).map_err(decode)?;
        let mut prompt = vec!["<|startoftranscript|>".to_owned()];
        let mut language = (!self.multilingual).then(|| "en".to_owned());
        if self.multilingual {
            let token = match &self.language {
                Some(lang) => format!("<|{lang}|>"),
                None => self.detect_language(&view)?,
            };
            language = Some(
                token
                    .trim_start_matches("<|")
                    .trim_end_matches("|>")
                    .to_owned(),
            );
            prompt.push(token);
            prompt.push("<|transcribe|>".to_owned());
        }
        prompt.push("<|notimestamps|>".to_owned());
        // Speech runs at most a few tokens a second; a bound stops a rare repetition loop.
        let seconds = samples.len().min(shape.n_samples) as f64 / shape.sampling_rate as f64;
        let max_length = (prompt.len() + 16 + (seconds * 8.0) as usize).min(448);
        let options = WhisperOptions {
            beam_size: self.beam_size,
            max_length,
            return_no_speech_prob: true,
            ..WhisperOptions::default()
        };
        let result = self
            .model
            .generate(&view, &[prompt], &options)
            .map_err(decode)?
            .into_iter()
            .next()
            .ok_or_else(|| EngineError::Decode("no result".into()))?;
        let ids: Vec<u32> = result
            .sequences_ids
            .into_iter()
            .next()
            .unwrap_or_default()
            .into_iter()
            .map(|id| id as u32)
            .collect();
        let text = self
            .tokenizer
            .decode(&ids, true)
            .map_err(|e| EngineError::Decode(e.to_string()))?;
        let text = if result.no_speech_prob > NO_SPEECH_THRESHOLD {
            String::new()
        } else {
            text.trim().to_owned()
        };
        Ok(Transcription {
            text,
            language,
            no_speech_prob: result.no_speech_prob,
        })
    }

    fn detect_language(&self, view: &StorageView) -> Result<String, EngineError> {
        self.model
            .detect_language(view)
            .map_err(|e| EngineError::Decode(e.to_string()))?
            .into_iter()
            .next()
            .and_then(|candidates| candidates.into_iter().next())
            // ct2rs keeps the field private; its Debug form is `DetectionResult { language: "<|en|>", … }`.
            .and_then(|best| language_token(&format!("{best:?}")))
            .ok_or_else(|| EngineError::Decode("language detection gave nothing".into()))
    }
}

/// The `<|xx|>` token in a `DetectionResult`'s Debug text.
fn language_token(debug: &str) -> Option<String> {
    let start = debug.find("<|")?;
    let end = debug[start..].find("|>")? + start + 2;
    Some(debug[start..end].to_owned())
}

/// What [`calibration_clip`] says.
pub const CALIBRATION_TEXT: &str =
    "Please review the budget before the meeting on Thursday, and send your questions to the team.";

/// 6 s of synthetic speech (espeak-ng, G.711 µ-law, 16 kHz): a realistic utterance for timing
/// decodes at start-up, since a decode's cost depends on the words it produces.
pub fn calibration_clip() -> Vec<f32> {
    include_bytes!("../assets/calibration.ulaw")
        .iter()
        .map(|&u| f32::from(ulaw_to_linear(u)) / 32_768.0)
        .collect()
}

/// G.711 µ-law to 16-bit linear.
fn ulaw_to_linear(code: u8) -> i16 {
    let u = !code;
    let exponent = (u >> 4) & 0x07;
    let mantissa = i32::from(u & 0x0F);
    let magnitude = (((mantissa << 3) + 0x84) << exponent) - 0x84;
    (if u & 0x80 != 0 { -magnitude } else { magnitude }) as i16
}

#[cfg(test)]
mod tests {
    #[test]
    fn ulaw_decodes_to_the_g711_table() {
        assert_eq!(super::ulaw_to_linear(0xFF), 0);
        assert_eq!(super::ulaw_to_linear(0x7F), 0);
        assert_eq!(super::ulaw_to_linear(0x80), 32_124);
        assert_eq!(super::ulaw_to_linear(0x00), -32_124);
        let clip = super::calibration_clip();
        assert_eq!(clip.len(), 95_738);
        let peak = clip.iter().fold(0f32, |m, s| m.max(s.abs()));
        assert!(peak > 0.2, "the clip is speech, not silence");
    }

    #[test]
    fn a_fitted_window_rounds_up_adds_a_second_and_stays_within_its_bounds() {
        use super::{FeatureShape, Window};
        let shape = FeatureShape::default();
        let fit = Window::Fit { min_seconds: 10 };
        assert_eq!(Window::Full.frames(16_000, &shape), 3000);
        assert_eq!(fit.frames(0, &shape), 1000, "never below the minimum");
        assert_eq!(fit.frames(3 * 16_000, &shape), 1000);
        // 12.5 s rounds up to 13, plus a second of margin.
        assert_eq!(fit.frames(200_000, &shape), 1400);
        assert_eq!(fit.frames(29 * 16_000, &shape), 3000, "never above 30 s");
        assert_eq!(fit.frames(40 * 16_000, &shape), 3000);
        assert_eq!(Window::Fit { min_seconds: 1 }.frames(100, &shape), 200);
        assert_eq!(Window::at_least(30), Window::Full);
        assert_eq!(Window::at_least(10), fit);
    }

    #[test]
    fn language_token_is_read_from_the_detection_result() {
        assert_eq!(
            super::language_token(r#"DetectionResult { language: "<|de|>", probability: 0.9 }"#),
            Some("<|de|>".to_owned())
        );
        assert_eq!(super::language_token("DetectionResult { }"), None);
    }
}
