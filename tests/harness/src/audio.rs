//! Audio fixtures (espeak-ng speech, sox, an AAC FLV encoded by FFmpeg) and the check that
//! the PCM the provider received is the audio that was published.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::publishers::EGRESS_AAC;

/// Speech made with espeak-ng: sentences separated by pauses, so the provider sees several
/// utterances. Returns the WAV path (22.05 kHz mono).
pub fn make_speech(dir: &Path) -> PathBuf {
    let wav = dir.join("speech.wav");
    let ssml = "<speak>The weekly sync starts now.<break time=\"900ms\"/>\
        Revenue grew by twelve percent this quarter.<break time=\"900ms\"/>\
        Please send the report before Friday.<break time=\"900ms\"/>\
        Thank you everyone, see you next week.</speak>";
    let status = Command::new("espeak-ng")
        .args(["-m", "-s", "150", "-w"])
        .arg(&wav)
        .arg(ssml)
        .status()
        .expect("espeak-ng runs");
    assert!(status.success(), "espeak-ng failed");
    wav
}

/// The source resampled to 16 kHz mono S16LE by sox: what the provider should receive.
pub fn reference_pcm(wav: &Path) -> Vec<i16> {
    let out = Command::new("sox")
        .arg(wav)
        .args([
            "-r",
            "16000",
            "-c",
            "1",
            "-b",
            "16",
            "-e",
            "signed-integer",
            "-t",
            "raw",
            "-",
        ])
        .output()
        .expect("sox runs");
    assert!(
        out.status.success(),
        "sox failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    samples(&out.stdout)
}

pub fn samples(pcm: &[u8]) -> Vec<i16> {
    pcm.chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]))
        .collect()
}

/// RMS per 20 ms window at 16 kHz.
pub fn envelope(samples: &[i16]) -> Vec<f64> {
    samples
        .chunks(320)
        .map(|w| {
            (w.iter().map(|&s| f64::from(s) * f64::from(s)).sum::<f64>() / w.len() as f64).sqrt()
        })
        .collect()
}

/// Best Pearson correlation of the two envelopes with `received` delayed by 0..=max_lag windows.
pub fn best_envelope_correlation(
    reference: &[f64],
    received: &[f64],
    max_lag: usize,
) -> (f64, usize) {
    let mut best = (f64::MIN, 0);
    for lag in 0..=max_lag {
        if lag >= received.len() {
            break;
        }
        let n = reference.len().min(received.len() - lag);
        let (a, b) = (&reference[..n], &received[lag..lag + n]);
        let (ma, mb) = (
            a.iter().sum::<f64>() / n as f64,
            b.iter().sum::<f64>() / n as f64,
        );
        let cov: f64 = a.iter().zip(b).map(|(x, y)| (x - ma) * (y - mb)).sum();
        let va: f64 = a.iter().map(|x| (x - ma).powi(2)).sum();
        let vb: f64 = b.iter().map(|y| (y - mb).powi(2)).sum();
        let r = cov / (va.sqrt() * vb.sqrt()).max(f64::EPSILON);
        if r > best.0 {
            best = (r, lag);
        }
    }
    best
}

/// Asserts the received PCM is the published audio: duration within 2 %, envelope correlation
/// above 0.9 (measured values are printed so a regression shows its size).
pub fn assert_pcm_matches(source_wav: &Path, received: &[u8]) {
    let reference = reference_pcm(source_wav);
    let got = samples(received);
    let (ref_s, got_s) = (reference.len() as f64 / 16000.0, got.len() as f64 / 16000.0);
    let deviation = (got_s - ref_s).abs() / ref_s;
    let (r, lag) = best_envelope_correlation(&envelope(&reference), &envelope(&got), 25);
    eprintln!("pcm check: source {ref_s:.3} s, received {got_s:.3} s ({:.2} %), envelope r={r:.4} at lag {} ms", deviation * 100.0, lag * 20);
    assert!(
        deviation <= 0.02,
        "received {got_s:.3} s of PCM for {ref_s:.3} s of audio"
    );
    assert!(
        r > 0.9,
        "received audio does not match the source: envelope correlation {r:.3}"
    );
}

/// About `seconds` of espeak-ng speech: [`make_speech`]'s four sentences repeated (sox
/// concatenation), for tests that need a long publish. Returns the WAV path.
pub fn make_long_speech(dir: &Path, seconds: f64) -> PathBuf {
    let one = make_speech(dir);
    let one_s = reference_pcm(&one).len() as f64 / 16_000.0;
    let copies = (seconds / one_s).ceil().max(1.0) as usize;
    let long = dir.join("long-speech.wav");
    let status = Command::new("sox")
        .args(std::iter::repeat_n(&one, copies))
        .arg(&long)
        .status()
        .expect("sox runs");
    assert!(status.success(), "sox concatenation failed");
    long
}

/// Encodes a WAV to an FLV file with AAC-LC 44.1 kHz stereo (what egress sends), so a test
/// can publish the very same AAC frames it decodes for its reference (`-c copy`).
pub fn encode_flv(wav: &Path, flv: &Path) {
    let status = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-nostdin", "-y", "-i"])
        .arg(wav)
        .args(EGRESS_AAC)
        .args(["-f", "flv"])
        .arg(flv)
        .status()
        .expect("ffmpeg runs");
    assert!(
        status.success(),
        "ffmpeg could not encode {}",
        wav.display()
    );
}
