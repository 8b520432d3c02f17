//! What operators see when things go wrong: provider init failures (visible in the session
//! state, key never logged, transient ones recovered), bad configuration, hostile publishers.

use std::process::Command;
use std::time::Duration;

use mock_gladia::MockConfig;
use test_harness::*;

/// A key that would be easy to spot in a log.
const SECRET_KEY: &str = "gk-e2e-DO-NOT-LOG-7f3a9c";

async fn provider_failure_is_visible(status: u16, slug: &str, recovers: bool) {
    let _serial = SERIAL.lock().await;
    if !require_tools(&["ffmpeg", "espeak-ng", "sox"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mock = start_mock_with(MockConfig {
        api_key: SECRET_KEY.into(),
        ..MockConfig::default()
    });
    mock.fail_next_inits(&[status]);
    let service = Service::start(
        realtime_core_bin!(),
        &[
            mock.service_env(&sqlite_url(dir.path(), "r.db")),
            vec![("RUST_LOG", "debug".to_owned())],
        ]
        .concat(),
    );
    let client = WsClient::connect(&service, &format!("sessionSlug={slug}")).await;
    let wav = make_speech(dir.path());
    let url = service.rtmp_url(slug);
    let args = ffmpeg_speech_args(&wav, &url);
    let publisher = actix_rt::spawn(async move {
        run_publisher("ffmpeg", &args, Duration::from_secs(90)).await;
    });

    // The failure reaches the clients as a status, and the HTTP snapshot shows it too.
    let code = status.to_string();
    let seen = client
        .wait_until(Duration::from_secs(15), |m| {
            m.iter().any(|m| {
                m["type"] == "status"
                    && m["state"] == "reconnecting"
                    && m["detail"].as_str().unwrap_or("").contains(&code)
            })
        })
        .await;
    assert!(
        seen,
        "no reconnecting status naming {status}: {:?}",
        client.snapshot()
    );
    if !recovers {
        let (_, session) = service.get_json(&format!("/api/sessions/{slug}")).await;
        assert_eq!(session["state"], "reconnecting", "{session}");
        assert!(
            session["detail"].as_str().unwrap().contains(&code),
            "{session}"
        );
    }

    if recovers {
        let live = client
            .wait_until(Duration::from_secs(15), |m| {
                m.iter()
                    .any(|m| m["type"] == "status" && m["state"] == "live")
            })
            .await;
        assert!(
            live,
            "session did not recover from {status}: {:?}",
            client.snapshot()
        );
        publisher.await.unwrap();
        mock.assert_one_session_closed(&service, Duration::from_secs(30))
            .await;
        let expected = mock.sessions()[0].finals_sent.len();
        assert!(expected >= 3);
        let all = client
            .wait_until(Duration::from_secs(10), |m| {
                m.iter().filter(|m| m["isFinal"] == true).count() == expected
            })
            .await;
        assert!(all, "finals missing after recovery");
        assert_pcm_matches(&wav, &mock.sessions()[0].pcm);
    } else {
        publisher.abort();
    }

    let requests = mock.init_requests();
    assert_eq!(requests[0].status, status);
    assert_eq!(
        requests[0].headers.get("x-gladia-key").map(String::as_str),
        Some(SECRET_KEY)
    );
    let log = service.log();
    assert!(log.contains(&code), "the log does not mention the {status}");
    assert!(!log.contains(SECRET_KEY), "the API key leaked into the log");
}

#[actix_rt::test]
async fn init_401_is_visible_and_the_key_is_never_logged() {
    provider_failure_is_visible(401, "init-401", false).await;
}

#[actix_rt::test]
async fn init_429_is_visible_then_recovers() {
    provider_failure_is_visible(429, "init-429", true).await;
}

#[actix_rt::test]
async fn init_500_is_visible_then_recovers() {
    provider_failure_is_visible(500, "init-500", true).await;
}

#[test]
fn a_bad_setting_stops_start_up_with_one_line() {
    for (variable, value, allowed) in [
        ("PORT", "eighty", "whole number"),
        ("GLADIA_REGION", "mars", "eu-west or us-west"),
        ("PCM_CHUNK_SIZE_MS", "0", "from 10 to 1000"),
        ("REALTIME_BROADCAST_MODE", "smoke", "direct or http"),
    ] {
        let output = Command::new(env!("CARGO_BIN_EXE_realtime-core"))
            .env(variable, value)
            .output()
            .unwrap();
        assert_eq!(
            output.status.code(),
            Some(2),
            "{variable}={value} was accepted"
        );
        let stderr = String::from_utf8_lossy(&output.stderr);
        let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "expected one line, got: {stderr}");
        assert!(
            lines[0].contains(variable) && lines[0].contains(value) && lines[0].contains(allowed),
            "{}",
            lines[0]
        );
    }
}

#[test]
fn help_lists_every_setting() {
    let output = Command::new(env!("CARGO_BIN_EXE_realtime-core"))
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&output.stdout);
    for variable in [
        "HTTP_HOST",
        "PORT",
        "RTMP_BIND",
        "RTMP_INTERNAL_PORT",
        "RTMP_HOST",
        "RTMP_EXTERNAL_PORT",
        "DATABASE_URL",
        "GLADIA_API_KEY",
        "GLADIA_API_URL",
        "GLADIA_REGION",
        "STT_PROVIDER",
        "WHISPER_MODEL_DIR",
        "WHISPER_THREADS",
        "WHISPER_WORKERS",
        "WHISPER_COMPUTE_TYPE",
        "WHISPER_LANGUAGE",
        "WHISPER_BEAM_SIZE",
        "WHISPER_MIN_WINDOW_S",
        "WHISPER_PARTIAL_PERIOD_MS",
        "WHISPER_ENDPOINT_SILENCE_MS",
        "WHISPER_MAX_UTTERANCE_MS",
        "WHISPER_MAX_SESSIONS",
        "PCM_CHUNK_SIZE_MS",
        "PCM_FLUSH_INTERVAL_MS",
        "WS_PING_INTERVAL_MS",
        "WS_MAX_MISSED_PONGS",
        "CLIENT_MAX_QUEUED_FINALS",
        "TRANSCRIPT_BATCH_SIZE",
        "TRANSCRIPT_BATCH_DELAY_MS",
        "ACTIVE_SPEAKER_TTL_MS",
        "REALTIME_AUTH_SECRET",
        "RTMP_STREAM_KEY_SECRET",
        "REALTIME_BROADCAST_MODE",
        "REALTIME_BROADCAST_URL",
        "REALTIME_BROADCAST_SECRET",
        "RUST_LOG",
    ] {
        assert!(
            help.contains(&format!("[env: {variable}")),
            "--help does not list {variable}"
        );
    }
}

/// Two instances on one PostgreSQL database would number the same sessions twice: the second
/// refuses to start with one line, and starts once the first is gone (killed: the lock goes
/// with its connection).
#[actix_rt::test]
async fn a_second_instance_on_one_postgres_database_refuses_to_start() {
    let _serial = SERIAL.lock().await;
    let Some(database) = fresh_postgres_database("rtcore_two") else {
        return;
    };
    let mock = start_mock();
    let first = Service::start(realtime_core_bin!(), &mock.service_env(&database));
    let spill = tempfile::tempdir().unwrap();
    let second = |spill: &std::path::Path| {
        Command::new(env!("CARGO_BIN_EXE_realtime-core"))
            .envs(mock.service_env(&database))
            .env("PORT", "0")
            .env("RTMP_INTERNAL_PORT", "0")
            .env("TRANSCRIPT_SPILL_DIR", spill)
            .env("RUST_LOG", "warn")
            .output()
            .unwrap()
    };
    let output = second(spill.path());
    assert_eq!(output.status.code(), Some(1), "the second instance started");
    let stderr = String::from_utf8_lossy(&output.stderr);
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(
        lines.len() == 1 && lines[0].contains("another realtime-core instance"),
        "expected one clear line, got: {stderr}"
    );
    assert!(
        !stderr.contains("postgres:postgres@"),
        "the password reached the log: {stderr}"
    );

    // The first one dies without a goodbye: the lock is free at once.
    drop(first);
    let next = Service::start(realtime_core_bin!(), &mock.service_env(&database));
    assert!(next.log().contains("realtime-core ready"), "{}", next.log());
}
