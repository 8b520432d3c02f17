//! Egress reconnects (issue #4, docs/PROTOCOL.md#rtmp-ingest): the same key published again and again, with the old
//! connection closed, still alive, or frozen half-dead, by real FFmpeg and GStreamer
//! `rtmp2sink` processes. One session, one provider session, continuous `seq`, nothing leaked.

use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use test_harness::*;
use tokio::process::{Child, Command};

const RECONNECTS: usize = 20;

/// How the previous publisher is left when the next one arrives.
#[derive(Debug, Clone, Copy)]
enum OldPublisher {
    /// Killed first: the TCP connection is gone (egress restarting its stream bin).
    Closed,
    /// Still publishing: the new publish must replace it.
    Alive,
    /// Frozen (SIGSTOP): its socket is open but silent, like a wedged connection.
    HalfDead,
}

fn spawn_publisher(tool: &str, args: &[String]) -> Child {
    Command::new(tool)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("{tool} starts: {e}"))
}

fn signal(child: &Child, signal: &str) {
    if let Some(pid) = child.id() {
        let _ = std::process::Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(pid.to_string())
            .status();
    }
}

async fn session(service: &Service, slug: &str) -> Value {
    let (status, body) = service.get_json(&format!("/api/sessions/{slug}")).await;
    assert_eq!(status, 200, "{body}");
    body
}

/// Waits until the session counts `publishes` attached publishes with one attached now.
async fn wait_attached(service: &Service, slug: &str, publishes: u64) -> bool {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while tokio::time::Instant::now() < deadline {
        let snapshot = session(service, slug).await;
        if snapshot["publishes"].as_u64() == Some(publishes) && !snapshot["publisher"].is_null() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

async fn reconnects_keep_one_session(tool: &str, slug: &str) {
    let _serial = SERIAL.lock().await;
    let needed: &[&str] = if tool == "ffmpeg" {
        &["ffmpeg", "espeak-ng", "sox"]
    } else {
        &["gst-launch-1.0", "espeak-ng", "sox"]
    };
    if !require_tools(needed) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let wav = make_long_speech(dir.path(), 30.0);
    let mock = start_mock();
    let database = sqlite_url(dir.path(), "r.db");
    let service = Service::start(
        realtime_core_bin!(),
        &[
            mock.service_env(&database),
            vec![("PUBLISHER_RECONNECT_GRACE_MS", "5000".to_owned())],
        ]
        .concat(),
    );
    let client = WsClient::connect(&service, &format!("sessionSlug={slug}")).await;
    let url = service.rtmp_url(slug);
    let args = if tool == "ffmpeg" {
        ffmpeg_speech_args(&wav, &url)
    } else {
        rtmp2sink_args(&wav, &url)
    };

    let mut current = spawn_publisher(tool, &args);
    assert!(
        wait_attached(&service, slug, 1).await,
        "first publish never attached"
    );
    let mut frozen: Vec<Child> = Vec::new();
    let mut baseline = None;
    let modes = [
        OldPublisher::Closed,
        OldPublisher::Alive,
        OldPublisher::HalfDead,
    ];
    for k in 0..RECONNECTS {
        // Let audio flow from the current publisher: at least 1 s more reaches the provider.
        let before = mock.sessions().first().map_or(0, |s| s.pcm.len());
        let flowing = mock
            .wait_for(Duration::from_secs(15), |s| {
                s.len() == 1 && s[0].pcm.len() >= before + 32_000
            })
            .await;
        assert!(flowing, "no audio after publish {}", k + 1);
        if k == 1 {
            // After one full replace cycle: what a steady session holds.
            baseline = Some(service.threads_and_fds());
        }
        let mode = modes[k % modes.len()];
        match mode {
            OldPublisher::Closed => {
                let _ = current.kill().await;
            }
            OldPublisher::Alive => {}
            OldPublisher::HalfDead => signal(&current, "STOP"),
        }
        let old = std::mem::replace(&mut current, spawn_publisher(tool, &args));
        match mode {
            OldPublisher::Closed => {}
            OldPublisher::Alive => frozen.push(old),
            OldPublisher::HalfDead => frozen.push(old),
        }
        assert!(
            wait_attached(&service, slug, k as u64 + 2).await,
            "reconnect {} ({mode:?}) never attached: {}",
            k + 1,
            session(&service, slug).await
        );
    }
    let steady = service.threads_and_fds();
    let snapshot = session(&service, slug).await;
    for child in &mut frozen {
        signal(child, "CONT");
        let _ = child.kill().await;
    }
    let _ = current.kill().await;

    // One session, one provider session on one socket, every publish counted.
    let (_, list) = service.get_json("/api/sessions").await;
    let sessions = list
        .as_array()
        .or_else(|| list["sessions"].as_array())
        .cloned()
        .unwrap_or_default();
    assert_eq!(sessions.len(), 1, "{list}");
    assert_eq!(snapshot["publishes"], RECONNECTS as u64 + 1);
    assert_eq!(snapshot["providerStreams"], 1, "{snapshot}");
    mock.assert_one_session_closed(&service, Duration::from_secs(30))
        .await;
    let provider = &mock.sessions()[0];
    assert_eq!(
        provider.ws_connections, 1,
        "the provider socket was reopened"
    );

    // Replaced and half-dead connections were closed, and no decoder was left behind.
    let (base_threads, base_fds) = baseline.expect("baseline taken");
    let (threads, fds) = steady;
    eprintln!(
        "{tool}: {} publishes; threads {base_threads} → {threads}, fds {base_fds} → {fds}; {} provider bytes",
        RECONNECTS + 1,
        provider.pcm.len()
    );
    assert!(
        threads <= base_threads + 2,
        "threads grew from {base_threads} to {threads}"
    );
    assert!(
        fds <= base_fds + 3,
        "file descriptors grew from {base_fds} to {fds}"
    );

    // Continuous numbering at the client and in the database.
    let expected = provider.finals_sent.len();
    assert!(expected >= 3, "only {expected} finals");
    client
        .assert_finals_numbered(expected, Duration::from_secs(10))
        .await;
    let stored = wait_for_stored_finals(&database, slug, expected, Duration::from_secs(10)).await;
    assert_eq!(stored.len(), expected);
}

#[actix_rt::test]
async fn twenty_ffmpeg_reconnects_keep_one_session_and_provider_stream() {
    reconnects_keep_one_session("ffmpeg", "reconnect-ffmpeg").await;
}

#[actix_rt::test]
async fn twenty_rtmp2sink_reconnects_keep_one_session_and_provider_stream() {
    reconnects_keep_one_session("gst-launch-1.0", "reconnect-rtmp2sink").await;
}
