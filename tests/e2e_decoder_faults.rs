//! Decoder faults at service level (issue #4): corrupted AAC frames from a real FFmpeg publish
//! make GStreamer fail; the pipeline is rebuilt from the stored AudioSpecificConfig and
//! transcription continues; a publisher sending only garbage ends in the `error` state.

#[path = "../pipelines/tests/support/mod.rs"]
mod pipeline_support;

use std::path::Path;
use std::time::Duration;

use pipeline_support::flv_file::{read_flv, FlvTag, TAG_AUDIO};
use test_harness::*;

/// Writes tags back into an FLV file (audio-only header flags are enough for FFmpeg).
fn write_flv(tags: &[FlvTag], path: &Path) {
    let mut out = b"FLV\x01\x04\x00\x00\x00\x09\x00\x00\x00\x00".to_vec();
    for tag in tags {
        let size = tag.data.len() as u32;
        out.push(tag.tag_type);
        out.extend_from_slice(&size.to_be_bytes()[1..]);
        out.extend_from_slice(&(tag.timestamp_ms & 0xFF_FFFF).to_be_bytes()[1..]);
        out.push((tag.timestamp_ms >> 24) as u8);
        out.extend_from_slice(&[0, 0, 0]);
        out.extend_from_slice(&tag.data);
        out.extend_from_slice(&(size + 11).to_be_bytes());
    }
    std::fs::write(path, out).expect("write flv");
}

/// The speech as FLV with every raw AAC frame between `from_ms` and `to_ms` replaced by noise
/// of the same length (the FLV and AAC framing stay valid; the AAC payload is garbage).
fn corrupted_speech_flv(dir: &Path, seconds: f64, from_ms: u32, to_ms: u32) -> std::path::PathBuf {
    let wav = make_long_speech(dir, seconds);
    let clean = dir.join("clean.flv");
    encode_flv(&wav, &clean);
    let mut tags = read_flv(&std::fs::read(&clean).unwrap()).expect("parse flv");
    let mut seed = 0x2545_f491_u32;
    let mut corrupted = 0;
    for tag in &mut tags {
        let raw_aac = tag.tag_type == TAG_AUDIO && tag.data.len() > 2 && tag.data[1] == 1;
        if raw_aac && (from_ms..to_ms).contains(&tag.timestamp_ms) {
            let mut data = tag.data.to_vec();
            for byte in &mut data[2..] {
                seed ^= seed << 13;
                seed ^= seed >> 17;
                seed ^= seed << 5;
                *byte = seed as u8;
            }
            tag.data = data.into();
            corrupted += 1;
        }
    }
    assert!(corrupted > 100, "only {corrupted} frames corrupted");
    let path = dir.join("corrupted.flv");
    write_flv(&tags, &path);
    path
}

#[actix_rt::test]
async fn corrupted_aac_rebuilds_the_decoder_and_transcription_continues() {
    let _serial = SERIAL.lock().await;
    if !require_tools(&["ffmpeg", "espeak-ng", "sox"])
        || !pipeline_support::tools::tools_available()
    {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // 3.5 s of garbage: well over the 50 consecutive errors avdec_aac tolerates.
    let flv = corrupted_speech_flv(dir.path(), 24.0, 8_000, 11_500);
    let mock = start_mock();
    let service = Service::start(
        realtime_core_bin!(),
        &mock.service_env(&sqlite_url(dir.path(), "r.db")),
    );
    let slug = "corrupt-aac";
    let client = WsClient::connect(&service, &format!("sessionSlug={slug}")).await;
    let args = ffmpeg_copy_args(&flv, &service.rtmp_url(slug));
    let publisher = actix_rt::spawn(async move {
        run_publisher("ffmpeg", &args, Duration::from_secs(90)).await;
    });

    let pcm_at_least = |seconds: f64| {
        let bytes = (seconds * 32_000.0) as usize;
        move |s: &[mock_gladia::SessionRecord]| s.len() == 1 && s[0].pcm.len() >= bytes
    };
    assert!(
        mock.wait_for(Duration::from_secs(20), pcm_at_least(5.0))
            .await
    );
    let before = service.threads_and_fds();
    // Past the garbage (which never reaches the provider), audio flows again.
    assert!(
        mock.wait_for(Duration::from_secs(30), pcm_at_least(15.0))
            .await,
        "audio stopped after the corrupted frames"
    );
    let after = service.threads_and_fds();
    let (_, snapshot) = service.get_json(&format!("/api/sessions/{slug}")).await;
    publisher.await.unwrap();

    assert!(
        snapshot["decoderRestarts"].as_u64().unwrap_or(0) >= 1,
        "{snapshot}"
    );
    assert_ne!(snapshot["state"], "error", "{snapshot}");
    assert!(service.log().contains("rebuilding the decoder"));
    eprintln!(
        "threads/fds before the corruption {before:?}, after the rebuild {after:?}; {snapshot}"
    );
    assert!(
        after.0 <= before.0 + 2,
        "threads grew: {before:?} → {after:?}"
    );
    assert!(
        after.1 <= before.1 + 2,
        "file descriptors grew: {before:?} → {after:?}"
    );

    mock.assert_one_session_closed(&service, Duration::from_secs(30))
        .await;
    let session = &mock.sessions()[0];
    // Speech after the garbage was transcribed: finals that start after it began.
    let later = session
        .finals_sent
        .iter()
        .filter(|f| f.start >= 8.5)
        .count();
    assert!(
        later >= 3,
        "only {later} finals after the corruption: {:?}",
        session.finals_sent
    );
    let expected = session.finals_sent.len();
    client
        .assert_finals_numbered(expected, Duration::from_secs(10))
        .await;
}

#[actix_rt::test]
async fn a_decoder_that_keeps_failing_puts_the_session_in_the_error_state() {
    let _serial = SERIAL.lock().await;
    if !require_tools(&["ffmpeg", "espeak-ng", "sox"])
        || !pipeline_support::tools::tools_available()
    {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // Garbage from 1 s to the end of the 12 s speech.
    let flv = corrupted_speech_flv(dir.path(), 12.0, 1_000, u32::MAX);
    let mock = start_mock();
    let service = Service::start(
        realtime_core_bin!(),
        &[
            mock.service_env(&sqlite_url(dir.path(), "r.db")),
            vec![("DECODER_MAX_RESTARTS", "2".to_owned())],
        ]
        .concat(),
    );
    let slug = "garbage-aac";
    let client = WsClient::connect(&service, &format!("sessionSlug={slug}")).await;
    let args = ffmpeg_copy_args(&flv, &service.rtmp_url(slug));
    let publisher = actix_rt::spawn(async move {
        run_publisher("ffmpeg", &args, Duration::from_secs(60)).await;
    });
    let error = client
        .wait_until(Duration::from_secs(30), |m| {
            m.iter()
                .any(|m| m["type"] == "status" && m["state"] == "error")
        })
        .await;
    assert!(error, "no error state: {:?}", client.snapshot());
    let status = client
        .snapshot()
        .into_iter()
        .find(|m| m["type"] == "status" && m["state"] == "error")
        .unwrap();
    let detail = status["detail"].as_str().unwrap_or("");
    assert!(
        detail.contains("decoder failed 3 times in a row"),
        "{status}"
    );
    let (_, snapshot) = service.get_json(&format!("/api/sessions/{slug}")).await;
    assert_eq!(snapshot["state"], "error", "{snapshot}");
    assert_eq!(snapshot["decoderRestarts"], 2, "{snapshot}");
    publisher.await.unwrap();
}
