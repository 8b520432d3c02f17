//! The vertical slice end to end: real publishers (FFmpeg, GStreamer rtmp2sink) → the real
//! binary's RTMP listener → GStreamer decode → the mock Gladia over real HTTP/WebSocket →
//! a real WebSocket client → a real database (SQLite file and PostgreSQL server).

use std::path::Path;
use std::time::Duration;

use serde_json::json;
use test_harness::*;

enum Publisher {
    FfmpegAacStereo44k,
    FfmpegAacMono48k,
    FfmpegAacWithH264,
    Rtmp2sink,
}

async fn publish(publisher: Publisher, wav: &Path, url: &str) {
    let wav_s = wav.to_str().unwrap();
    let timeout = Duration::from_secs(90);
    match publisher {
        Publisher::FfmpegAacStereo44k => {
            let args = ffmpeg_speech_args(wav, url);
            run_publisher("ffmpeg", &args, timeout).await
        }
        Publisher::FfmpegAacMono48k => {
            let args = ffmpeg_args(
                &[
                    "-re", "-i", wav_s, "-c:a", "aac", "-b:a", "96k", "-ar", "48000", "-ac", "1",
                ],
                url,
            );
            run_publisher("ffmpeg", &args, timeout).await
        }
        Publisher::FfmpegAacWithH264 => {
            let args = ffmpeg_args(
                &[
                    &[
                        "-re",
                        "-i",
                        wav_s,
                        "-re",
                        "-f",
                        "lavfi",
                        "-i",
                        "testsrc=size=320x240:rate=25",
                        "-map",
                        "1:v",
                        "-map",
                        "0:a",
                        "-shortest",
                        "-c:v",
                        "libx264",
                        "-preset",
                        "ultrafast",
                        "-tune",
                        "zerolatency",
                        "-g",
                        "50",
                    ][..],
                    &EGRESS_AAC,
                ]
                .concat(),
                url,
            );
            run_publisher("ffmpeg", &args, timeout).await
        }
        Publisher::Rtmp2sink => {
            run_publisher("gst-launch-1.0", &rtmp2sink_args(wav, url), timeout).await
        }
    }
}

/// Publishes speech, then checks the PCM the provider got, the client's messages and the database.
async fn speech_reaches_clients_and_database(publisher: Publisher, database: Database, slug: &str) {
    let _serial = SERIAL.lock().await;
    if !require_tools(&["ffmpeg", "gst-launch-1.0", "espeak-ng", "sox"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let database_url = match database {
        Database::Sqlite => sqlite_url(dir.path(), "realtime.db"),
        Database::Postgres => match fresh_postgres_database("rtcore_e2e") {
            Some(url) => url,
            None => return,
        },
    };
    let wav = make_speech(dir.path());
    let mock = start_mock();
    let service = Service::start(realtime_core_bin!(), &mock.service_env(&database_url));
    let client = WsClient::connect(&service, &format!("sessionSlug={slug}")).await;

    publish(publisher, &wav, &service.rtmp_url(slug)).await;

    // The publish is over: the service sends stop_recording and the mock closes with 1000.
    mock.assert_one_session_closed(&service, Duration::from_secs(30))
        .await;
    let provider = mock.sessions().remove(0);
    assert!(provider.stop_received);
    assert!(provider.init_body["custom_metadata"]
        .to_string()
        .contains(slug));
    assert_pcm_matches(&wav, &provider.pcm);

    let expected_finals = provider.finals_sent.len();
    assert!(
        expected_finals >= 3,
        "the mock found only {expected_finals} utterances in four sentences"
    );
    let all = client
        .wait_until(Duration::from_secs(10), |m| {
            m.iter().filter(|m| m["isFinal"] == true).count() == expected_finals
        })
        .await;
    assert!(
        all,
        "client got {} of {expected_finals} finals",
        client.finals().len()
    );
    let finals = assert_transcript_stream(&client.snapshot(), slug);
    for (sent, got) in provider.finals_sent.iter().zip(client.finals()) {
        assert_eq!(got["text"], sent.text.trim_start());
        assert!(got["utteranceId"].as_str().unwrap().ends_with(&sent.id));
    }

    // Saved in batches: wait for the batch delay to pass, then read the database itself.
    let stored =
        wait_for_stored_finals(&database_url, slug, finals.len(), Duration::from_secs(10)).await;
    let stored_ids: Vec<String> = stored.iter().map(|f| f.utterance_id.clone()).collect();
    assert_eq!(
        stored_ids, finals,
        "database holds other finals than the client got"
    );
    assert_eq!(
        stored.iter().map(|f| f.seq).collect::<Vec<_>>(),
        (1..=finals.len() as i64).collect::<Vec<_>>()
    );

    let (status, body) = service
        .get_json(&format!("/api/sessions/{slug}/transcripts?afterSeq=1"))
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        body["transcripts"].as_array().map(Vec::len),
        Some(finals.len() - 1)
    );
}

enum Database {
    Sqlite,
    Postgres,
}

#[actix_rt::test]
async fn ffmpeg_speech_is_transcribed_and_saved_to_sqlite() {
    speech_reaches_clients_and_database(
        Publisher::FfmpegAacStereo44k,
        Database::Sqlite,
        "ffmpeg-sqlite",
    )
    .await;
}

#[actix_rt::test]
async fn ffmpeg_speech_is_transcribed_and_saved_to_postgres() {
    speech_reaches_clients_and_database(
        Publisher::FfmpegAacStereo44k,
        Database::Postgres,
        "ffmpeg-postgres",
    )
    .await;
}

#[actix_rt::test]
async fn rtmp2sink_speech_is_transcribed_and_saved_to_sqlite() {
    speech_reaches_clients_and_database(Publisher::Rtmp2sink, Database::Sqlite, "gst-sqlite").await;
}

#[actix_rt::test]
async fn rtmp2sink_speech_is_transcribed_and_saved_to_postgres() {
    speech_reaches_clients_and_database(Publisher::Rtmp2sink, Database::Postgres, "gst-postgres")
        .await;
}

#[actix_rt::test]
async fn aac_48k_mono_decodes_correctly() {
    speech_reaches_clients_and_database(Publisher::FfmpegAacMono48k, Database::Sqlite, "mono-48k")
        .await;
}

#[actix_rt::test]
async fn aac_with_h264_video_decodes_correctly() {
    speech_reaches_clients_and_database(
        Publisher::FfmpegAacWithH264,
        Database::Sqlite,
        "with-video",
    )
    .await;
}

#[actix_rt::test]
async fn start_and_stop_over_websocket_and_http() {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let mock = start_mock();
    let service = Service::start(
        realtime_core_bin!(),
        &mock.service_env(&sqlite_url(dir.path(), "r.db")),
    );
    let client = WsClient::connect(&service, "sessionSlug=lifecycle").await;

    client.send(json!({"type": "start_transcription", "sessionSlug": "lifecycle"}));
    client.send(json!({"type": "ping"}));
    client.send(json!({"type": "no_such_command"}));
    client.send(json!("not an object"));
    let replies = client
        .wait_until(Duration::from_secs(5), |m| {
            m.iter().any(|m| m["type"] == "transcription_started")
                && m.iter().any(|m| m["type"] == "pong")
                && m.iter().filter(|m| m["type"] == "error").count() == 2
        })
        .await;
    assert!(replies, "replies missing: {:?}", client.snapshot());
    let started = client
        .snapshot()
        .into_iter()
        .find(|m| m["type"] == "transcription_started")
        .unwrap();
    // RTMP_HOST defaults to localhost; the port is the bound one.
    let expected_url = format!("rtmp://localhost:{}/live/lifecycle", service.rtmp.port());
    assert_eq!(started["rtmpUrl"], expected_url.as_str());
    assert_eq!(started["state"], "waiting_for_egress");
    assert!(client
        .snapshot()
        .iter()
        .filter(|m| m["type"] == "error")
        .all(|m| m["code"] == "bad_request"));

    let (status, session) = service.get_json("/api/sessions/lifecycle").await;
    assert_eq!(
        (status, session["state"].as_str()),
        (200, Some("waiting_for_egress"))
    );
    assert_eq!(session["clients"], 1);
    let (_, list) = service.get_json("/api/sessions").await;
    assert!(list["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .any(|s| s["sessionSlug"] == "lifecycle"));

    let mut response = awc::Client::new()
        .delete(service.url("/api/sessions/lifecycle/transcription"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["state"], "ended");
    let ended = client
        .wait_until(Duration::from_secs(5), |m| {
            m.iter()
                .any(|m| m["type"] == "status" && m["state"] == "ended")
        })
        .await;
    assert!(ended, "no ended status: {:?}", client.snapshot());

    let (status, body) = service.get_json("/api/realtime/transcribe").await;
    assert_eq!(status, 400);
    assert_eq!(body["error"], "missing_session_slug");
    let (status, _) = service.get_json("/api/sessions/no-such-session").await;
    assert_eq!(status, 404);
    let (status, _) = service.get_json("/healthz").await;
    assert_eq!(status, 200);
    let (status, _) = service.get_json("/readyz").await;
    assert_eq!(status, 200);
}
