//! Transcribes a raw 16 kHz mono S16LE file in one decode (at most 30 s) and times it:
//!   cargo run -p whisper --example transcribe -- MODEL_DIR FILE.raw [THREADS] [MIN_WINDOW_S]
//! (MIN_WINDOW_S: the encoder window fits the audio but is at least this long; 30, the
//! default, is the full window.)
//! (`sox in.wav -r 16000 -c 1 -b 16 -e signed-integer -t raw FILE.raw` makes one.)

use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let (Some(model), Some(file)) = (args.get(1), args.get(2)) else {
        eprintln!("usage: transcribe MODEL_DIR FILE.raw [THREADS] [MIN_WINDOW_S]");
        std::process::exit(2);
    };
    let threads = args.get(3).map_or(Ok(2), |t| t.parse())?;
    let window = whisper::Window::at_least(args.get(4).map_or(Ok(30), |t| t.parse::<u32>())?);
    let engine = whisper::WhisperEngine::load(&whisper::EngineOptions {
        model_dir: model.into(),
        threads,
        replicas: 1,
        compute_type: "int8".into(),
        language: None,
        beam_size: 1,
        window,
    })?;
    let samples: Vec<f32> = std::fs::read(file)?
        .chunks_exact(2)
        .map(|b| f32::from(i16::from_le_bytes([b[0], b[1]])) / 32_768.0)
        .collect();
    let started = Instant::now();
    let result = engine.transcribe(&samples)?;
    println!(
        "{:.2} s of audio in {:?}: {:?} (no-speech probability {:.3})",
        samples.len() as f64 / 16_000.0,
        started.elapsed(),
        result.text,
        result.no_speech_prob
    );
    Ok(())
}
