//! Publishers run as processes (FFmpeg, GStreamer `rtmp2sink`) and their command lines.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

/// Runs a publisher to completion (it paces itself in real time), failing on error or timeout.
pub async fn run_publisher(program: &str, args: &[String], timeout: Duration) {
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("{program} starts: {e}"));
    let mut stderr = child.stderr.take().expect("stderr");
    let status = tokio::time::timeout(timeout, child.wait())
        .await
        .unwrap_or_else(|_| panic!("{program} did not finish in {timeout:?}"));
    let mut err = String::new();
    let _ = tokio::io::AsyncReadExt::read_to_string(&mut stderr, &mut err).await;
    assert!(status.expect("wait").success(), "{program} failed: {err}");
}

pub fn ffmpeg_args(input_and_codec: &[&str], url: &str) -> Vec<String> {
    let mut args: Vec<String> = ["-hide_banner", "-loglevel", "error", "-nostdin"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    args.extend(input_and_codec.iter().map(|s| s.to_string()));
    args.extend(["-f".to_string(), "flv".to_string(), url.to_string()]);
    args
}

/// FFmpeg's audio options for what LiveKit Egress sends by default: AAC-LC 44.1 kHz stereo
/// 128 kb/s.
pub const EGRESS_AAC: [&str; 8] = ["-c:a", "aac", "-b:a", "128k", "-ar", "44100", "-ac", "2"];

/// FFmpeg publishing a WAV the way a typical encoder does: paced in real time, encoded as
/// [`EGRESS_AAC`].
pub fn ffmpeg_speech_args(wav: &Path, url: &str) -> Vec<String> {
    let wav = wav.to_str().expect("utf-8 path");
    ffmpeg_args(&[&["-re", "-i", wav][..], &EGRESS_AAC].concat(), url)
}

/// GStreamer `rtmp2sink`, the element LiveKit Egress publishes with, fed from a WAV file.
pub fn rtmp2sink_args(wav: &Path, url: &str) -> Vec<String> {
    format!(
        "-q filesrc location={} ! wavparse ! audioconvert ! audioresample ! audio/x-raw,rate=44100,channels=2 ! \
         voaacenc bitrate=128000 ! aacparse ! flvmux streamable=true skip-backwards-streams=true ! \
         rtmp2sink location={url} async-connect=false",
        wav.display()
    )
    .split_whitespace()
    .map(str::to_owned)
    .collect()
}

/// Runs a publisher that the service must refuse: it has to exit non-zero within `timeout`
/// (a refused publish closes the connection, so no timer stands in for the refusal). Returns
/// its stderr for the test's message.
pub async fn run_refused_publisher(program: &str, args: &[String], timeout: Duration) -> String {
    let output = tokio::time::timeout(
        timeout,
        tokio::process::Command::new(program)
            .args(args)
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .unwrap_or_else(|_| panic!("{program} was not refused within {timeout:?}"))
    .unwrap_or_else(|e| panic!("{program} starts: {e}"));
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(
        !output.status.success(),
        "{program} published although the service had to refuse it: {stderr}"
    );
    stderr
}

/// FFmpeg re-publishing an FLV file unchanged, paced in real time.
pub fn ffmpeg_copy_args(flv: &Path, url: &str) -> Vec<String> {
    let flv = flv.to_str().expect("utf-8 path");
    ffmpeg_args(&["-re", "-i", flv, "-c", "copy"], url)
}
