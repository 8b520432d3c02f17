//! docs/PROTOCOL.md#resume-and-delivery-guarantees against the real binary: a client far
//! behind resumes whatever `CLIENT_MAX_QUEUED_FINALS` is. With the cap at 200, a client 5,000
//! finals behind (3,000 of them older than the in-memory ring, so read from the database)
//! receives every missed final exactly once and in order, then the finals that arrived during
//! its replay, then live ones, and is never closed with 1013. After a restart (nothing in
//! memory) the same backlog comes from the database alone; finals still queued for the
//! database are waited for, not skipped. A negative `lastSeq` is refused.
//!
//! Finals are injected through the HTTP relay endpoint (docs/PROTOCOL.md#http-broadcast-mode),
//! which keeps the sender's `seq`: thousands of finals in seconds, no provider needed.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::{json, Value};
use test_harness::*;
use tokio::sync::Notify;

const SECRET: &str = "resume-relay-secret-8d2e41";
const RELAY: &str = "/api/realtime/transcribe/broadcast";
/// The cap the issue reported as unreachable: a backlog 25 times larger.
const MAX_QUEUED_FINALS: &str = "200";
const BACKLOG: i64 = 5_000;
/// Finals posted while the client catches up, then after it did.
const DURING_REPLAY: i64 = 100;
const AFTER_REPLAY: i64 = 50;

/// Bytes of text per final: 5,000 of them (10 MB) overflow the loopback socket buffers, so a
/// reader that pauses really makes the server's writes wait while its replay is under way.
const TEXT_BYTES: usize = 2048;

fn final_message(slug: &str, seq: i64) -> Value {
    let text = format!("final number {seq} ");
    let padding = "x".repeat(TEXT_BYTES.saturating_sub(text.len()));
    json!({
        "type": "transcript", "sessionSlug": slug, "utteranceId": format!("relay:{seq}"),
        "text": format!("{text}{padding}"), "isFinal": true, "speaker": "Alice",
        "speakerId": "user-17", "ts": 1_763_800_000_000_i64 + seq, "transcriptType": "final",
        "seq": seq, "startedAt": 1_763_799_000_000_i64 + seq, "endedAt": 1_763_799_000_500_i64 + seq,
    })
}

/// Posts finals `seqs` in order, each answered `delivered` before the next is sent (the relay
/// refuses a `seq` at or below the last one, so order matters).
async fn post_finals(service: &Service, slug: &str, seqs: std::ops::RangeInclusive<i64>) {
    let client = awc::Client::new();
    for seq in seqs {
        let mut response = client
            .post(service.url(RELAY))
            .insert_header(("x-broadcast-secret", SECRET))
            .send_json(&final_message(slug, seq))
            .await
            .expect("relay post");
        let body: Value = response.json().await.unwrap_or(Value::Null);
        assert_eq!(
            (response.status().as_u16(), body["outcome"].as_str()),
            (200, Some("delivered")),
            "final {seq}: {body}"
        );
    }
}

/// What a reading client has seen so far.
#[derive(Default)]
struct Seen {
    finals: Vec<i64>,
    errors: Vec<Value>,
    close: Option<(u16, String)>,
    ended: bool,
}

/// A WebSocket client that reads like a slow browser: after `pause_after` finals it stops
/// reading for `pause` (its socket buffers fill and the server's writes stall), then goes on.
struct SlowReader {
    seen: Arc<Mutex<Seen>>,
    changed: Arc<Notify>,
}

impl SlowReader {
    async fn connect(service: &Service, query: &str, pause_after: usize, pause: Duration) -> Self {
        let url = format!("ws://{}/api/realtime/transcribe?{query}", service.http);
        let (_, mut framed) = awc::Client::new()
            .ws(url)
            .max_frame_size(64 * 1024)
            .connect()
            .await
            .expect("websocket connects");
        let seen = Arc::new(Mutex::new(Seen::default()));
        let changed = Arc::new(Notify::new());
        let (s, c) = (seen.clone(), changed.clone());
        actix_rt::spawn(async move {
            let mut paused = false;
            while let Some(frame) = framed.next().await {
                match frame {
                    Ok(awc::ws::Frame::Text(text)) => {
                        let m: Value = serde_json::from_slice(&text).expect("JSON frame");
                        let count = {
                            let mut seen = s.lock().unwrap();
                            if m["type"] == "error" {
                                seen.errors.push(m.clone());
                            }
                            if m["isFinal"] == true {
                                seen.finals
                                    .push(m["seq"].as_i64().expect("a final has seq"));
                            }
                            seen.finals.len()
                        };
                        c.notify_waiters();
                        if !paused && count >= pause_after {
                            paused = true;
                            // The slow part: not an event to wait for, a reader that is busy.
                            tokio::time::sleep(pause).await;
                        }
                    }
                    Ok(awc::ws::Frame::Close(reason)) => {
                        let close = reason
                            .map(|r| (u16::from(r.code), r.description.unwrap_or_default()))
                            .unwrap_or((1005, String::new()));
                        s.lock().unwrap().close = Some(close);
                        break;
                    }
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
            s.lock().unwrap().ended = true;
            c.notify_waiters();
        });
        SlowReader { seen, changed }
    }

    /// Waits until `count` finals arrived, the socket ended, or `timeout` passed.
    async fn wait_for_finals(&self, count: usize, timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.changed.notified();
            {
                let seen = self.seen.lock().unwrap();
                if seen.finals.len() >= count || seen.ended {
                    return;
                }
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return;
            }
        }
    }

    fn finals(&self) -> Vec<i64> {
        self.seen.lock().unwrap().finals.clone()
    }

    fn assert_open(&self, what: &str) {
        let seen = self.seen.lock().unwrap();
        assert!(
            seen.close.is_none() && !seen.ended,
            "{what}: the client was closed: {:?}",
            seen.close
        );
        assert!(seen.errors.is_empty(), "{what}: errors {:?}", seen.errors);
    }
}

/// Asserts `got` is exactly `from..=to`, naming the first difference (not 5,000 numbers).
fn assert_every_final_once_in_order(got: &[i64], from: i64, to: i64, what: &str) {
    let expected: Vec<i64> = (from..=to).collect();
    if got != expected {
        let at = got
            .iter()
            .zip(&expected)
            .position(|(g, e)| g != e)
            .unwrap_or(got.len().min(expected.len()));
        panic!(
            "{what}: {} finals, expected {} ({from}..={to}); first difference at index {at}: got {:?}, expected {:?}",
            got.len(),
            expected.len(),
            got.get(at),
            expected.get(at)
        );
    }
}

fn service_env(database_url: &str) -> Vec<(&'static str, String)> {
    vec![
        ("DATABASE_URL", database_url.to_owned()),
        ("REALTIME_BROADCAST_SECRET", SECRET.to_owned()),
        ("CLIENT_MAX_QUEUED_FINALS", MAX_QUEUED_FINALS.to_owned()),
    ]
}

#[actix_rt::test]
async fn a_client_5000_finals_behind_resumes_every_final_once_in_order_then_live_sqlite() {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    far_behind(&sqlite_url(dir.path(), "resume.db")).await;
}

#[actix_rt::test]
async fn a_client_5000_finals_behind_resumes_every_final_once_in_order_then_live_postgres() {
    let _serial = SERIAL.lock().await;
    let Some(database_url) = fresh_postgres_database("rtcore_resume") else {
        return;
    };
    far_behind(&database_url).await;
}

async fn far_behind(database_url: &str) {
    let database_url = database_url.to_owned();
    let slug = "far-behind";
    let mut service = Service::start(realtime_core_bin!(), &service_env(&database_url));

    let started = Instant::now();
    post_finals(&service, slug, 1..=BACKLOG).await;
    let posting = started.elapsed();

    // 5,000 behind: 25 times the cap. It stalls for a second after 1,000 finals, while live
    // finals keep arriving.
    let rss_before = service.rss_kb();
    let started = Instant::now();
    let client = SlowReader::connect(
        &service,
        &format!("sessionSlug={slug}&lastSeq=0"),
        1_000,
        Duration::from_secs(1),
    )
    .await;
    let during = BACKLOG + 1..=BACKLOG + DURING_REPLAY;
    post_finals(&service, slug, during).await;
    let caught_up = BACKLOG + DURING_REPLAY;
    client
        .wait_for_finals(caught_up as usize, Duration::from_secs(30))
        .await;
    let replay = started.elapsed();
    client.assert_open("during the replay");
    assert_every_final_once_in_order(
        &client.finals(),
        1,
        caught_up,
        "the replay and the finals that arrived during it",
    );

    // Caught up: live finals follow, no gap, no repeat at the switch.
    let last = caught_up + AFTER_REPLAY;
    post_finals(&service, slug, caught_up + 1..=last).await;
    client
        .wait_for_finals(last as usize, Duration::from_secs(10))
        .await;
    client.assert_open("after the replay");
    assert_every_final_once_in_order(&client.finals(), 1, last, "replay then live");
    eprintln!(
        "resume: {BACKLOG} finals posted in {posting:?}; a client 5,000 behind with a cap of \
         {MAX_QUEUED_FINALS} got all {caught_up} (replay and finals during it) in {replay:?}, \
         then {AFTER_REPLAY} live; service RSS {rss_before} KiB before the resume, {} KiB after",
        service.rss_kb()
    );

    // A restart empties memory: the whole backlog now comes from the database.
    assert_eq!(
        service.terminate(),
        Some(0),
        "log:\n{}",
        service.log_tail(50)
    );
    let stored = stored_finals(&database_url, slug);
    assert_eq!(stored.len() as i64, last, "the finals were not all saved");
    let service = Service::start(realtime_core_bin!(), &service_env(&database_url));
    let client = SlowReader::connect(
        &service,
        &format!("sessionSlug={slug}&lastSeq=100"),
        usize::MAX,
        Duration::ZERO,
    )
    .await;
    client
        .wait_for_finals((last - 100) as usize, Duration::from_secs(30))
        .await;
    client.assert_open("replay from the database after a restart");
    assert_every_final_once_in_order(&client.finals(), 101, last, "after a restart");
    post_finals(&service, slug, last + 1..=last + 1).await;
    client
        .wait_for_finals((last + 1 - 100) as usize, Duration::from_secs(10))
        .await;
    assert_every_final_once_in_order(&client.finals(), 101, last + 1, "live after a restart");
    client.assert_open("live after a restart");
}

/// The finals between the database and the ring (still in the batcher's queue) are waited for,
/// not skipped: with one batch written 10 s after the first final, a client resuming from 0
/// right after 2,500 finals gets nothing until the batch lands, then all of them in order.
#[actix_rt::test]
async fn finals_still_queued_for_the_database_are_waited_for_not_skipped() {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let database_url = sqlite_url(dir.path(), "queued.db");
    let slug = "still-queued";
    let mut env = service_env(&database_url);
    env.push(("TRANSCRIPT_BATCH_SIZE", "10000".to_owned()));
    env.push(("TRANSCRIPT_BATCH_DELAY_MS", "10000".to_owned()));
    let service = Service::start(realtime_core_bin!(), &env);
    // 500 more than the ring holds: 1..=500 are only in the batcher's queue.
    let total = 2_500;
    post_finals(&service, slug, 1..=total).await;
    assert!(
        stored_finals(&database_url, slug).is_empty(),
        "the batch was written already: the gap this test needs is gone"
    );
    let client = SlowReader::connect(
        &service,
        &format!("sessionSlug={slug}&lastSeq=0"),
        usize::MAX,
        Duration::ZERO,
    )
    .await;
    client
        .wait_for_finals(total as usize, Duration::from_secs(20))
        .await;
    client.assert_open("waiting for the batch");
    assert!(
        !stored_finals(&database_url, slug).is_empty(),
        "the replay did not wait for the database"
    );
    assert_every_final_once_in_order(&client.finals(), 1, total, "across the batcher's gap");
    post_finals(&service, slug, total + 1..=total + 1).await;
    client
        .wait_for_finals(total as usize + 1, Duration::from_secs(10))
        .await;
    assert_every_final_once_in_order(&client.finals(), 1, total + 1, "then live");
}

#[actix_rt::test]
async fn a_negative_last_seq_is_refused() {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let service = Service::start(
        realtime_core_bin!(),
        &service_env(&sqlite_url(dir.path(), "r.db")),
    );
    // On the upgrade: an HTTP 400 before any socket opens.
    for last_seq in ["-1", "-9223372036854775808", "9007199254740992"] {
        let (status, body) = service
            .get_json(&format!(
                "/api/realtime/transcribe?sessionSlug=neg&lastSeq={last_seq}"
            ))
            .await;
        assert_eq!(
            (status, body["error"].as_str()),
            (400, Some("bad_request")),
            "lastSeq={last_seq}: {body}"
        );
        assert!(
            body["message"]
                .as_str()
                .unwrap_or_default()
                .contains("lastSeq"),
            "{body}"
        );
    }
    // On `subscribe`: an error frame, and the socket stays open.
    let client = WsClient::connect(&service, "sessionSlug=other").await;
    client.send(json!({"type": "subscribe", "sessionSlug": "neg", "lastSeq": -1}));
    assert!(
        client
            .wait_until(Duration::from_secs(5), |m| m
                .iter()
                .any(|m| m["type"] == "error"))
            .await,
        "no error frame: {:?}",
        client.snapshot()
    );
    let errors: Vec<Value> = client
        .snapshot()
        .into_iter()
        .filter(|m| m["type"] == "error")
        .collect();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0]["code"], "bad_request");
    client.send(json!({"type": "ping"}));
    assert!(
        client
            .wait_until(Duration::from_secs(5), |m| m
                .iter()
                .any(|m| m["type"] == "pong"))
            .await,
        "the socket did not stay open"
    );
    assert!(
        !client
            .snapshot()
            .iter()
            .any(|m| m["type"] == "status" && m["sessionSlug"] == "neg"),
        "the refused subscribe subscribed anyway"
    );
}
