//! What WebSocket clients rely on (docs/PROTOCOL.md#resume-and-delivery-guarantees, #active-speaker): heartbeat, resume with `lastSeq` (from
//! memory and, after a restart, from the database) and active-speaker attribution.

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{json, Value};
use test_harness::*;

async fn publish_speech(service: &Service, wav: &std::path::Path, slug: &str) {
    let args = ffmpeg_speech_args(wav, &service.rtmp_url(slug));
    run_publisher("ffmpeg", &args, Duration::from_secs(90)).await;
}

#[actix_rt::test]
async fn a_client_that_never_answers_pings_is_closed_removed_and_counted() {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let mock = start_mock();
    let service = Service::start(
        realtime_core_bin!(),
        &mock.service_env_with(
            &sqlite_url(dir.path(), "r.db"),
            &[("WS_PING_INTERVAL_MS", "200"), ("WS_MAX_MISSED_PONGS", "2")],
        ),
    );
    let answering = WsClient::connect(&service, "sessionSlug=heartbeat").await;

    // A raw client that reads nothing and sends nothing: it answers no ping.
    let url = format!(
        "ws://{}/api/realtime/transcribe?sessionSlug=heartbeat",
        service.http
    );
    let (_, mut silent) = awc::Client::new().ws(url).connect().await.unwrap();
    let (_, before) = service.get_json("/metrics").await;
    let before = before["counters"]["ws.heartbeat_timeouts_total"]
        .as_u64()
        .unwrap();

    let mut pings = 0;
    let close = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(frame) = silent.next().await {
            match frame {
                Ok(awc::ws::Frame::Ping(_)) => pings += 1,
                Ok(awc::ws::Frame::Close(reason)) => return reason,
                Ok(_) => {}
                Err(e) => panic!("protocol error: {e}"),
            }
        }
        None
    })
    .await
    .expect("the silent client was not closed");
    let reason = close.expect("close frame with a reason");
    assert_eq!(u16::from(reason.code), 1001);
    assert_eq!(reason.description.as_deref(), Some("heartbeat_timeout"));
    assert_eq!(
        pings, 2,
        "closed after exactly WS_MAX_MISSED_PONGS unanswered pings"
    );

    let (_, after) = service.get_json("/metrics").await;
    assert_eq!(
        after["counters"]["ws.heartbeat_timeouts_total"]
            .as_u64()
            .unwrap(),
        before + 1
    );
    let (_, session) = service.get_json("/api/sessions/heartbeat").await;
    assert_eq!(
        session["clients"], 1,
        "the silent client is still counted: {session}"
    );
    // The answering client (it pongs) outlived several intervals and is still served.
    answering.send(json!({"type": "ping"}));
    assert!(
        answering
            .wait_until(Duration::from_secs(2), |m| m
                .iter()
                .any(|m| m["type"] == "pong"))
            .await
    );
}

/// A client that floods ping frames and never reads used to make the service spawn a task per
/// ping, each waiting on a full pong channel (3.7 GB in 20 s). Now pongs go through the
/// client's writer, one at most, and a client over the frame rate is closed with 1008.
#[actix_rt::test]
async fn a_ping_flood_that_never_reads_is_closed_with_1008_and_memory_stays_bounded() {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let mock = start_mock();
    let service = Service::start(
        realtime_core_bin!(),
        &mock.service_env(&sqlite_url(dir.path(), "flood.db")),
    );
    let bystander = WsClient::connect(&service, "sessionSlug=flood").await;
    let url = format!(
        "ws://{}/api/realtime/transcribe?sessionSlug=flood",
        service.http
    );
    let rss_before = service.rss_kb();
    assert!(rss_before > 0, "cannot read the service's RSS");

    // For 20 s: connect, send pings as fast as the socket takes them without reading until
    // the connection refuses more, then read what the server sent (a few pongs, its close);
    // again, on a new connection.
    let started = std::time::Instant::now();
    let (mut sent, mut connections, mut pongs_max, mut rss_peak) = (0u64, 0u64, 0u64, rss_before);
    while started.elapsed() < Duration::from_secs(20) && connections < 500 {
        let (_, framed) = awc::Client::new().ws(url.as_str()).connect().await.unwrap();
        let (mut sink, mut stream) = framed.split();
        connections += 1;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            let ping = awc::ws::Message::Ping(bytes::Bytes::from_static(b"flood"));
            match tokio::time::timeout_at(deadline, futures_util::SinkExt::send(&mut sink, ping))
                .await
            {
                Ok(Ok(())) => sent += 1,
                Ok(Err(_)) | Err(_) => break,
            }
            if sent % 500 == 0 {
                rss_peak = rss_peak.max(service.rss_kb());
            }
        }
        rss_peak = rss_peak.max(service.rss_kb());
        let (mut pongs, mut close) = (0u64, None);
        let _ = tokio::time::timeout(Duration::from_secs(10), async {
            while let Some(frame) = stream.next().await {
                match frame {
                    Ok(awc::ws::Frame::Pong(_)) => pongs += 1,
                    Ok(awc::ws::Frame::Close(reason)) => {
                        close = reason;
                        break;
                    }
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
        })
        .await;
        let close = close.expect("the server closed the flooding socket with a close frame");
        assert_eq!(u16::from(close.code), 1008, "{close:?}");
        assert_eq!(close.description.as_deref(), Some("policy_violation"));
        assert!(
            pongs <= u64::from(::actors::inbound_limit::MAX_FRAMES_PER_SECOND),
            "a pong only for pings admitted before the close: {pongs}"
        );
        pongs_max = pongs_max.max(pongs);
    }
    let rss_after = service.rss_kb();
    let growth_mb = rss_peak.saturating_sub(rss_before) as f64 / 1024.0;
    eprintln!(
        "ping flood: {sent} pings over {connections} connections in {:.1?}, each closed with \
         1008 (at most {pongs_max} pongs read back); RSS {rss_before} KiB -> peak {rss_peak} \
         KiB (+{growth_mb:.1} MB), {rss_after} KiB at the end",
        started.elapsed()
    );
    assert!(growth_mb <= 20.0, "RSS grew by {growth_mb:.1} MB");

    let (_, metrics) = service.get_json("/metrics").await;
    assert_eq!(
        metrics["counters"]["ws.policy_violation_closes_total"],
        connections
    );
    // The session and its other client are untouched.
    bystander.send(json!({"type": "ping"}));
    assert!(
        bystander
            .wait_until(Duration::from_secs(2), |m| m
                .iter()
                .any(|m| m["type"] == "pong"))
            .await
    );
}

fn finals_in(messages: &[Value]) -> Vec<i64> {
    messages
        .iter()
        .filter(|m| m["isFinal"] == true)
        .map(|m| m["seq"].as_i64().unwrap())
        .collect()
}

#[actix_rt::test]
async fn resume_replays_missed_finals_from_memory_and_after_a_restart_from_the_database() {
    let _serial = SERIAL.lock().await;
    if !require_tools(&["ffmpeg", "espeak-ng", "sox"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let database_url = sqlite_url(dir.path(), "r.db");
    let wav = make_speech(dir.path());
    let mock = start_mock();
    let slug = "resume";

    let first_run_finals = {
        let service = Service::start(realtime_core_bin!(), &mock.service_env(&database_url));
        let live = WsClient::connect(&service, &format!("sessionSlug={slug}")).await;
        publish_speech(&service, &wav, slug).await;
        mock.assert_one_session_closed(&service, Duration::from_secs(30))
            .await;
        let n = mock.sessions()[0].finals_sent.len() as i64;
        assert!(
            live.wait_until(Duration::from_secs(10), |m| finals_in(m).len() as i64 == n)
                .await
        );

        // A client that saw final 1 reconnects: it gets 2..=n from memory, in order, once.
        let resumed = WsClient::connect(&service, &format!("sessionSlug={slug}&lastSeq=1")).await;
        assert!(
            resumed
                .wait_until(Duration::from_secs(5), |m| finals_in(m).len() as i64
                    == n - 1)
                .await
        );
        assert_eq!(finals_in(&resumed.snapshot()), (2..=n).collect::<Vec<_>>());
        // Same over the socket's `subscribe` message, on a fresh connection.
        let other = WsClient::connect(&service, "sessionSlug=unrelated").await;
        other.send(json!({"type": "subscribe", "sessionSlug": slug, "lastSeq": n - 1}));
        assert!(
            other
                .wait_until(Duration::from_secs(5), |m| !finals_in(m).is_empty())
                .await
        );
        assert_eq!(finals_in(&other.snapshot()), vec![n]);

        // Let the batch reach the database before the process goes away.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while (stored_finals(&database_url, slug).len() as i64) < n
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(stored_finals(&database_url, slug).len() as i64, n);
        n
    };

    // A new process: memory is empty, the database is not.
    let service = Service::start(realtime_core_bin!(), &mock.service_env(&database_url));
    let resumed = WsClient::connect(&service, &format!("sessionSlug={slug}&lastSeq=1")).await;
    assert!(
        resumed
            .wait_until(Duration::from_secs(5), |m| finals_in(m).len() as i64
                == first_run_finals - 1)
            .await,
        "replay from the database missing: {:?}",
        resumed.snapshot()
    );
    assert_eq!(
        finals_in(&resumed.snapshot()),
        (2..=first_run_finals).collect::<Vec<_>>()
    );

    // Numbering survives the restart: the next publish continues after the stored finals.
    publish_speech(&service, &wav, slug).await;
    assert!(
        mock.wait_for(Duration::from_secs(30), |s| s.len() == 2
            && s[1].closed_with_1000)
            .await
    );
    let second = mock.sessions()[1].finals_sent.len() as i64;
    let total = first_run_finals + second;
    assert!(
        resumed
            .wait_until(Duration::from_secs(10), |m| finals_in(m).len() as i64
                == total - 1)
            .await
    );
    assert_eq!(
        finals_in(&resumed.snapshot()),
        (2..=total).collect::<Vec<_>>(),
        "seq gap or repeat across the restart"
    );
    let ids: std::collections::HashSet<String> = resumed
        .finals()
        .iter()
        .map(|m| m["utteranceId"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        ids.len() as i64,
        total - 1,
        "utterance ids repeat across provider sessions"
    );
}

#[actix_rt::test]
async fn transcripts_are_attributed_to_the_reported_active_speaker() {
    let _serial = SERIAL.lock().await;
    if !require_tools(&["ffmpeg", "espeak-ng", "sox"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let wav = make_speech(dir.path());
    let mock = start_mock();
    let service = Service::start(
        realtime_core_bin!(),
        &mock.service_env_with(
            &sqlite_url(dir.path(), "r.db"),
            &[("ACTIVE_SPEAKER_TTL_MS", "60000")],
        ),
    );
    let slug = "speakers";
    let client = WsClient::connect(&service, &format!("sessionSlug={slug}")).await;
    let post = |body: Value| {
        let url = service.url("/api/active-speaker");
        async move {
            awc::Client::new()
                .post(url)
                .send_json(&body)
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(
        post(json!({"sessionSlug": "nobody-here", "identity": "u1", "name": "A"})).await,
        404
    );
    assert_eq!(
        post(json!({"sessionSlug": slug, "identity": ""})).await,
        400
    );
    // Reported before the speech starts; within the TTL for the whole clip.
    let reported_at = actors::messages::now_ms();
    assert_eq!(
        post(json!({"sessionSlug": slug, "identity": "user-17:sess-9", "name": "Alice", "timestamp": reported_at})).await,
        204
    );
    publish_speech(&service, &wav, slug).await;
    mock.assert_one_session_closed(&service, Duration::from_secs(30))
        .await;
    let n = mock.sessions()[0].finals_sent.len();
    assert!(
        client
            .wait_until(Duration::from_secs(10), |m| finals_in(m).len() == n)
            .await
    );
    for m in client.transcripts() {
        assert_eq!(
            (m["speaker"].as_str(), m["speakerId"].as_str()),
            (Some("Alice"), Some("user-17:sess-9")),
            "{m}"
        );
    }
    // A client flooding reports is told to slow down.
    let mut statuses = Vec::new();
    for _ in 0..15 {
        statuses.push(post(json!({"sessionSlug": slug, "identity": "flood", "name": "F"})).await);
    }
    assert!(statuses.contains(&429), "no rate limit: {statuses:?}");
}

async fn ai_lock_contention_renewal_expiry_and_release(database_url: String) {
    let mock = start_mock();
    let service = Service::start(realtime_core_bin!(), &mock.service_env(&database_url));
    let url = service.url("/api/sessions/meeting-ai/ai-lock");
    let acquire = |holder: &'static str, ttl: i64| {
        let url = url.clone();
        async move {
            let mut r = awc::Client::new()
                .post(url)
                .send_json(&json!({"holder": holder, "ttlMs": ttl}))
                .await
                .unwrap();
            let body: Value = r.json().await.unwrap();
            (r.status().as_u16(), body)
        }
    };
    let release = |holder: &'static str| {
        let url = url.clone();
        async move {
            let r = awc::Client::new()
                .delete(url)
                .send_json(&json!({"holder": holder}))
                .await
                .unwrap();
            r.status().as_u16()
        }
    };

    // Two coordinators race; exactly one wins and the other is told who holds it.
    let (a, b) = futures_util::join!(
        acquire("coordinator-a", 60_000),
        acquire("coordinator-b", 60_000)
    );
    let (winner, loser) = if a.0 == 200 { (a, b) } else { (b, a) };
    assert_eq!(winner.0, 200, "{winner:?}");
    assert_eq!(loser.0, 409, "{loser:?}");
    assert_eq!(winner.1["acquired"], true);
    assert_eq!(loser.1["acquired"], false);
    assert_eq!(loser.1["holder"], winner.1["holder"]);
    let holder: &'static str = if winner.1["holder"] == "coordinator-a" {
        "coordinator-a"
    } else {
        "coordinator-b"
    };
    let other: &'static str = if holder == "coordinator-a" {
        "coordinator-b"
    } else {
        "coordinator-a"
    };

    // Renewal by the holder moves the deadline; a non-holder cannot release it.
    let (status, renewed) = acquire(holder, 120_000).await;
    assert_eq!(status, 200);
    assert!(renewed["lockedUntil"].as_i64() > winner.1["lockedUntil"].as_i64());
    assert_eq!(release(other).await, 409);
    assert_eq!(acquire(other, 1000).await.0, 409);
    assert_eq!(release(holder).await, 204);

    // After a release, and after an expiry, the other side gets it.
    let (status, short) = acquire(other, 300).await;
    assert_eq!(status, 200);
    let expires_at = short["lockedUntil"].as_i64().unwrap();
    assert_eq!(acquire(holder, 60_000).await.0, 409, "taken before expiry");
    let wait = (expires_at - actors::messages::now_ms() + 50).max(0) as u64;
    tokio::time::sleep(Duration::from_millis(wait)).await;
    let (status, body) = acquire(holder, 60_000).await;
    assert_eq!(status, 200, "the expired lock was not freed: {body}");
    assert_eq!(acquire(holder, 0).await.0, 400);
}

#[actix_rt::test]
async fn ai_lock_on_sqlite() {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    ai_lock_contention_renewal_expiry_and_release(sqlite_url(dir.path(), "r.db")).await;
}

#[actix_rt::test]
async fn ai_lock_on_postgres() {
    let _serial = SERIAL.lock().await;
    let Some(url) = fresh_postgres_database("rtcore_lock") else {
        return;
    };
    ai_lock_contention_renewal_expiry_and_release(url).await;
}

/// One socket cannot follow more than 16 sessions: a burst of 40 subscribes (sent before any
/// is answered) gets 16 subscriptions and 24 clear refusals, and opens no more sessions.
#[actix_rt::test]
async fn one_socket_follows_at_most_16_sessions() {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let mock = start_mock();
    let service = Service::start(
        realtime_core_bin!(),
        &mock.service_env(&sqlite_url(dir.path(), "subs.db")),
    );
    let client = WsClient::connect(&service, "sessionSlug=home").await;
    for i in 1..40 {
        client.send(json!({"type": "subscribe", "sessionSlug": format!("s{i}")}));
    }
    let counts = |m: &[serde_json::Value]| {
        let statuses: std::collections::HashSet<&str> = m
            .iter()
            .filter(|m| m["type"] == "status")
            .filter_map(|m| m["sessionSlug"].as_str())
            .collect();
        let refused = m
            .iter()
            .filter(|m| m["code"] == "too_many_subscriptions")
            .count();
        (statuses.len(), refused)
    };
    let settled = client
        .wait_until(Duration::from_secs(10), |m| counts(m) == (16, 24))
        .await;
    assert!(settled, "{:?}", counts(&client.snapshot()));
    let (status, body) = service.get_json("/api/sessions").await;
    assert_eq!(status, 200);
    let sessions = body["sessions"].as_array().map_or(0, Vec::len);
    assert_eq!(sessions, 16, "refused subscribes opened sessions: {body}");
}

#[actix_rt::test]
async fn limits_refuse_abuse_with_clear_errors() {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let mock = start_mock();
    let service = Service::start(
        realtime_core_bin!(),
        &mock.service_env_with(
            &sqlite_url(dir.path(), "r.db"),
            &[("MAX_CLIENTS_PER_SESSION", "2"), ("MAX_SESSIONS", "3")],
        ),
    );

    // Clients per session: the third subscriber gets a clear error, the first two are served.
    let first = WsClient::connect(&service, "sessionSlug=crowded").await;
    let second = WsClient::connect(&service, "sessionSlug=crowded").await;
    // Both are subscribed (their first status came) before the third asks: with one HTTP
    // worker per core, connections are handled in parallel, not in connect order.
    for client in [&first, &second] {
        assert!(
            client
                .wait_until(Duration::from_secs(5), |m| m
                    .iter()
                    .any(|m| m["type"] == "status"))
                .await
        );
    }
    let third = WsClient::connect(&service, "sessionSlug=crowded").await;
    assert!(
        third
            .wait_until(Duration::from_secs(5), |m| m
                .iter()
                .any(|m| m["code"] == "too_many_clients"))
            .await,
        "{:?}",
        third.snapshot()
    );

    // Sessions per instance.
    for slug in ["s1", "s2"] {
        let (status, _) = service
            .post_json(&format!("/api/sessions/{slug}/transcription"), json!({}))
            .await;
        assert_eq!(status, 200);
    }
    let (status, body) = service
        .post_json("/api/sessions/s3/transcription", json!({}))
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (503, Some("too_many_sessions")),
        "{body}"
    );

    // Bodies and query strings.
    let huge = "x".repeat(64 * 1024);
    let (status, body) = service
        .post_json(
            "/api/active-speaker",
            json!({"sessionSlug": "crowded", "identity": huge}),
        )
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (413, Some("body_too_large")),
        "{body}"
    );
    let (status, body) = service
        .get_json("/api/sessions/crowded/transcripts?afterSeq=abc")
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("bad_request")),
        "{body}"
    );
    let (status, body) = service.get_json("/api/sessions/bad%20slug").await;
    assert_eq!(status, 400, "{body}");

    // A WebSocket frame over 64 KiB closes that socket with 1009.
    let url = format!(
        "ws://{}/api/realtime/transcribe?sessionSlug=s1",
        service.http
    );
    let (_, mut socket) = awc::Client::new()
        .ws(url)
        .max_frame_size(1 << 20)
        .connect()
        .await
        .unwrap();
    use futures_util::SinkExt;
    socket
        .send(awc::ws::Message::Text(
            format!("{{\"type\":\"ping\",\"pad\":\"{huge}\"}}").into(),
        ))
        .await
        .unwrap();
    let close = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(frame) = socket.next().await {
            if let Ok(awc::ws::Frame::Close(reason)) = frame {
                return reason.map(|r| u16::from(r.code));
            }
        }
        None
    })
    .await
    .expect("oversized frame did not close the socket");
    assert_eq!(close, Some(1009));
}
