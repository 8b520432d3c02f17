//! External tools for the tests: FFmpeg makes the fixtures at test time.
//!
//! When FFmpeg or a GStreamer element is missing: with `CI=true` the test fails with
//! the reason; locally it prints a loud note and the test returns early.

use std::path::PathBuf;
use std::process::Command;

/// Returns false (after a loud note) if the test cannot run here; panics on CI.
pub fn tools_available() -> bool {
    let mut missing = Vec::new();
    match Command::new("ffmpeg").arg("-version").output() {
        Ok(out) if out.status.success() => {}
        _ => missing.push("ffmpeg (Debian package: ffmpeg)".to_string()),
    }
    if let Err(err) = pipelines::init() {
        missing.push(err.to_string());
    }
    if missing.is_empty() {
        return true;
    }
    let reason = format!("required media tools missing: {}", missing.join("; "));
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{reason} (CI=true: failing instead of skipping)");
    }
    loud_note(&reason);
    false
}

/// Runs `ffmpeg -y -hide_banner -loglevel error <args> <out>` and returns `out`,
/// placed in Cargo's per-target scratch directory under a unique name.
pub fn ffmpeg(name: &str, args: &[&str]) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("pipelines-fixtures");
    std::fs::create_dir_all(&dir).expect("create fixture dir");
    let out = dir.join(format!("{}-{name}", std::process::id()));
    let status = Command::new("ffmpeg")
        .args(["-y", "-hide_banner", "-loglevel", "error"])
        .args(args)
        .arg(&out)
        .status()
        .expect("run ffmpeg");
    assert!(status.success(), "ffmpeg failed for {name}: {args:?}");
    out
}

/// FLV with AAC from an FFmpeg lavfi audio source (plus optional extra args, e.g. video).
pub fn aac_flv(name: &str, lavfi_audio: &str, rate: u32, channels: u32, extra: &[&str]) -> PathBuf {
    let rate = rate.to_string();
    let channels = channels.to_string();
    let mut args = vec!["-f", "lavfi", "-i", lavfi_audio];
    args.extend_from_slice(extra);
    args.extend_from_slice(&[
        "-ar", &rate, "-ac", &channels, "-c:a", "aac", "-b:a", "128k", "-f", "flv",
    ]);
    ffmpeg(&format!("{name}.flv"), &args)
}

/// The same lavfi source rendered straight to S16LE 16 kHz mono (the reference).
pub fn reference_pcm(name: &str, lavfi_audio: &str) -> Vec<u8> {
    let path = ffmpeg(
        &format!("{name}.s16le"),
        &[
            "-f",
            "lavfi",
            "-i",
            lavfi_audio,
            "-ac",
            "1",
            "-ar",
            "16000",
            "-f",
            "s16le",
        ],
    );
    std::fs::read(path).expect("read reference pcm")
}

/// FLV made by GStreamer's `voaacenc ! flvmux`: the muxer LiveKit Egress feeds to
/// rtmp2sink. `None` (after a loud note, or a panic on CI) if gst-launch-1.0 or an
/// element is missing.
pub fn gst_flvmux_flv(name: &str, num_buffers: u32) -> Option<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("pipelines-fixtures");
    std::fs::create_dir_all(&dir).expect("create fixture dir");
    let out = dir.join(format!("{}-{name}.flv", std::process::id()));
    let launch = format!(
        "audiotestsrc freq=440 num-buffers={num_buffers} samplesperbuffer=1024 \
         ! audio/x-raw,rate=44100,channels=2,format=S16LE ! audioconvert \
         ! voaacenc bitrate=128000 ! aacparse ! flvmux streamable=true \
         ! filesink location={}",
        out.display()
    );
    let ok = Command::new("gst-launch-1.0")
        .arg("-q")
        .args(launch.split_whitespace())
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        return Some(out);
    }
    let reason = "gst-launch-1.0 with voaacenc/flvmux failed (packages gstreamer1.0-tools, \
                  gstreamer1.0-plugins-bad, gstreamer1.0-plugins-good)";
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{reason} (CI=true: failing instead of skipping)");
    }
    loud_note(reason);
    None
}

/// Written to the real stderr: libtest captures `eprintln!` of passing tests, and a
/// skipped test must not pass silently.
fn loud_note(reason: &str) {
    use std::io::Write;
    let _ = writeln!(
        std::io::stderr(),
        "\n!!!!!!!!!! SKIPPING TEST: {reason} (set CI=true to make this a failure) !!!!!!!!!!\n"
    );
}
