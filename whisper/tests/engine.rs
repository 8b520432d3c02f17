//! The real model on the bundled clip: loads, transcribes English correctly, and reports the
//! decode time (this runs in a debug build, with CTranslate2 itself compiled in Release).
//! Needs the model (scripts/install-whisper-model.sh); with CI=true a missing model fails.

use std::path::PathBuf;
use std::time::Instant;

use whisper::{
    calibration_clip, model_present, EngineOptions, WhisperEngine, Window, CALIBRATION_TEXT,
};

fn model_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("WHISPER_MODEL_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../data/models/whisper-tiny.en")
        });
    if model_present(&dir) {
        return Some(dir);
    }
    let message = format!(
        "no Whisper model in {}: run scripts/install-whisper-model.sh",
        dir.display()
    );
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{message}");
    }
    eprintln!("\n*** SKIPPING (not in CI): {message} ***\n");
    None
}

#[test]
fn transcribes_the_calibration_clip() {
    let Some(dir) = model_dir() else { return };
    // The reference window, and the fitted one the service uses by default
    // (WHISPER_MIN_WINDOW_S): both must keep the words.
    for window in [Window::Full, Window::Fit { min_seconds: 10 }] {
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get().min(4));
        let loaded = Instant::now();
        let engine = WhisperEngine::load(&EngineOptions {
            model_dir: dir.clone(),
            threads,
            replicas: 1,
            compute_type: "int8".into(),
            language: None,
            beam_size: 1,
            window,
        })
        .expect("model loads");
        let load = loaded.elapsed();
        let clip = calibration_clip();
        let mut times = Vec::new();
        let mut text = String::new();
        for _ in 0..3 {
            let t = Instant::now();
            let result = engine.transcribe(&clip).expect("decodes");
            times.push(t.elapsed());
            text = result.text;
            assert_eq!(result.language.as_deref(), Some("en"));
        }
        let front_end = whisper::LogMel::new(whisper::FeatureShape::default());
        let t = Instant::now();
        let _ = front_end.compute(&clip);
        let features = t.elapsed();
        let wer = whisper::wer::word_error_rate(CALIBRATION_TEXT, &text);
        let clip_s = clip.len() as f64 / 16_000.0;
        eprintln!(
            "{window:?}: model load {load:?}; decodes {times:?} (30 s log-mel front end {features:?}) for {clip_s:.1} s of speech ({threads} threads, int8, greedy); WER {wer:.3}: {text:?}"
        );
        assert!(wer <= 0.2, "{window:?}: WER {wer:.3}: {text:?}");
        // Silence is no speech, not an invented phrase.
        let silence = engine.transcribe(&vec![0.0; 32_000]).expect("decodes");
        assert_eq!(
            silence.text, "",
            "{window:?}: no-speech probability {}",
            silence.no_speech_prob
        );
    }
}
