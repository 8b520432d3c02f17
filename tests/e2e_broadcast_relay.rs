//! HTTP broadcast mode (docs/PROTOCOL.md#configuration `REALTIME_BROADCAST_MODE=http`, §4.6 `POST
//! /api/realtime/transcribe/broadcast`): two real service instances. The ingest instance A
//! transcribes an FFmpeg publish through the mock provider and posts every message to the
//! receiving instance B, whose WebSocket clients get them as if B had transcribed them: the
//! same finals with the same `seq` and text, in order, partials included, saved in B's database.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};

use serde_json::{json, Value};
use test_harness::*;

const SECRET: &str = "relay-shared-secret-5f1c2a";
const AUTH_SECRET: &str = "relay-auth-secret-0123456789";
const PATH: &str = "/api/realtime/transcribe/broadcast";

enum Database {
    Sqlite,
    Postgres,
}

fn database_url(database: &Database, dir: &std::path::Path, name: &str) -> Option<String> {
    match database {
        Database::Sqlite => Some(sqlite_url(dir, &format!("{name}.db"))),
        Database::Postgres => fresh_postgres_database("rtcore_relay"),
    }
}

/// POSTs `body` to the broadcast endpoint with `secret` (if any) in `x-broadcast-secret`.
async fn post_broadcast(service: &Service, secret: Option<&str>, body: Vec<u8>) -> (u16, Value) {
    let mut request = awc::Client::new()
        .post(service.url(PATH))
        .insert_header(("content-type", "application/json"));
    if let Some(secret) = secret {
        request = request.insert_header(("x-broadcast-secret", secret));
    }
    let mut response = request.send_body(body).await.expect("http post");
    let status = response.status().as_u16();
    let body = response.json::<Value>().await.unwrap_or(Value::Null);
    (status, body)
}

async fn post_message(service: &Service, message: &Value) -> (u16, Value) {
    post_broadcast(service, Some(SECRET), message.to_string().into_bytes()).await
}

fn transcript(slug: &str, id: &str, text: &str, seq: Option<i64>, ts: i64) -> Value {
    let mut m = json!({
        "type": "transcript", "sessionSlug": slug, "utteranceId": id, "text": text,
        "isFinal": seq.is_some(), "speaker": "Alice", "speakerId": "user-17:sess-9", "ts": ts,
        "transcriptType": if seq.is_some() { "final" } else { "partial" },
        "startedAt": ts - 900, "endedAt": ts - 100, "language": "en",
    });
    if let Some(seq) = seq {
        m["seq"] = json!(seq);
    }
    m
}

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn client_token(slug: &str) -> String {
    encode(
        &Header::new(Algorithm::HS256),
        &json!({ "sub": "user-17", "exp": now_s() + 600, "sessions": [slug] }),
        &EncodingKey::from_secret(AUTH_SECRET.as_bytes()),
    )
    .expect("encode token")
}

fn finals_at_least(n: usize) -> impl Fn(&[Value]) -> bool {
    move |m| m.iter().filter(|m| m["isFinal"] == true).count() >= n
}

/// The fields both instances must agree on for one final.
fn final_key(m: &Value) -> (i64, String, String, String, String) {
    (
        m["seq"].as_i64().unwrap_or(-1),
        m["utteranceId"].as_str().unwrap_or_default().to_owned(),
        m["text"].as_str().unwrap_or_default().to_owned(),
        m["speaker"].as_str().unwrap_or_default().to_owned(),
        m["speakerId"].as_str().unwrap_or_default().to_owned(),
    )
}

async fn transcripts_reach_the_other_instance(database: Database, slug: &str) {
    let _serial = SERIAL.lock().await;
    if !require_tools(&["ffmpeg", "espeak-ng", "sox"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let Some(b_database) = database_url(&database, dir.path(), "receiver") else {
        return;
    };
    let a_database = sqlite_url(dir.path(), "ingest.db");

    // B: the WebSocket instance; it accepts relayed messages with the shared secret.
    let receiver = Service::start(
        realtime_core_bin!(),
        &[
            ("DATABASE_URL", b_database.clone()),
            ("REALTIME_BROADCAST_SECRET", SECRET.to_owned()),
        ],
    );
    // A: the ingest instance, with the provider, posting everything to B.
    let mock = start_mock();
    let mut ingest = Service::start(
        realtime_core_bin!(),
        &[
            mock.service_env(&a_database),
            vec![
                ("REALTIME_BROADCAST_MODE", "http".to_owned()),
                (
                    "REALTIME_BROADCAST_URL",
                    format!("http://{}", receiver.http),
                ),
                ("REALTIME_BROADCAST_SECRET", SECRET.to_owned()),
            ],
        ]
        .concat(),
    );
    let on_b = WsClient::connect(&receiver, &format!("sessionSlug={slug}")).await;
    let on_a = WsClient::connect(&ingest, &format!("sessionSlug={slug}")).await;

    let wav = make_speech(dir.path());
    run_publisher(
        "ffmpeg",
        &ffmpeg_speech_args(&wav, &ingest.rtmp_url(slug)),
        Duration::from_secs(90),
    )
    .await;
    mock.assert_one_session_closed(&ingest, Duration::from_secs(30))
        .await;
    let provider = mock.sessions().remove(0);
    let expected = provider.finals_sent.len();
    assert!(
        expected >= 3,
        "the mock found only {expected} utterances in four sentences"
    );

    assert!(
        on_a.wait_until(Duration::from_secs(10), finals_at_least(expected))
            .await,
        "the ingest instance's client got {} of {expected} finals",
        on_a.finals().len()
    );
    assert!(
        on_b.wait_until(Duration::from_secs(15), finals_at_least(expected)).await,
        "the receiving instance's client got {} of {expected} finals; receiver log:\n{}\ningest log:\n{}",
        on_b.finals().len(),
        receiver.log(),
        ingest.log()
    );

    // B's stream is a valid §4.3/§4.4 stream on its own: seq 1..n without gaps, each final
    // after partials of its utterance, nothing after a final.
    let b_ids = assert_transcript_stream(&on_b.snapshot(), slug);
    let a_ids = assert_transcript_stream(&on_a.snapshot(), slug);
    assert_eq!(b_ids, a_ids, "the two instances' clients saw other finals");
    let a_finals: Vec<_> = on_a.finals().iter().map(final_key).collect();
    let b_finals: Vec<_> = on_b.finals().iter().map(final_key).collect();
    assert_eq!(
        b_finals, a_finals,
        "finals differ in seq, text or speaker between the instances"
    );
    for (sent, got) in provider.finals_sent.iter().zip(on_b.finals()) {
        assert_eq!(got["text"], sent.text.trim_start());
    }
    let b_partials = on_b.transcripts().len() - expected;
    eprintln!(
        "relay: {expected} finals, {} partials on A, {b_partials} on B",
        on_a.transcripts().len() - expected
    );
    assert!(b_partials >= expected, "partials were not relayed");

    // Both databases hold the finals: A saves its own, B saves what it received.
    let expected_seqs: Vec<i64> = (1..=expected as i64).collect();
    for (name, url) in [("ingest", &a_database), ("receiver", &b_database)] {
        let stored = wait_for_stored_finals(url, slug, expected, Duration::from_secs(10)).await;
        assert_eq!(
            stored
                .iter()
                .map(|f| f.utterance_id.clone())
                .collect::<Vec<_>>(),
            a_ids,
            "{name} database holds other finals"
        );
        assert_eq!(
            stored.iter().map(|f| f.seq).collect::<Vec<_>>(),
            expected_seqs,
            "{name} database numbering"
        );
        let texts: Vec<String> = on_a
            .finals()
            .iter()
            .map(|m| m["text"].as_str().unwrap_or_default().to_owned())
            .collect();
        assert_eq!(
            stored.iter().map(|f| f.text.clone()).collect::<Vec<_>>(),
            texts
        );
    }
    let (status, body) = receiver
        .get_json(&format!("/api/sessions/{slug}/transcripts?afterSeq=0"))
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["transcripts"].as_array().map(Vec::len), Some(expected));

    // A client of B resuming with lastSeq=1 gets the rest, numbered by the sender.
    let resumed = WsClient::connect(&receiver, &format!("sessionSlug={slug}&lastSeq=1")).await;
    assert!(
        resumed
            .wait_until(Duration::from_secs(10), finals_at_least(expected - 1))
            .await,
        "resume on the receiver replayed {} finals",
        resumed.finals().len()
    );
    let replayed: Vec<i64> = resumed
        .finals()
        .iter()
        .filter_map(|m| m["seq"].as_i64())
        .collect();
    assert_eq!(replayed, (2..=expected as i64).collect::<Vec<_>>());

    // A repeat of a final B already has (a retried post) is recognised, not shown again.
    let repeat = on_b.finals()[0].clone();
    let (status, body) = post_message(&receiver, &repeat).await;
    assert_eq!((status, body["outcome"].as_str()), (200, Some("duplicate")));

    // Graceful shutdown of the ingest instance flushes its relay queue; exit code 0.
    assert_eq!(ingest.terminate(), Some(0), "log:\n{}", ingest.log());
    let ingest_log = ingest.log();
    assert!(
        ingest_log.contains("broadcast relay flushed"),
        "log:\n{ingest_log}"
    );
    for log in [ingest_log, receiver.log()] {
        assert!(!log.contains(SECRET), "the shared secret was logged");
    }
    assert_eq!(
        on_b.finals().len(),
        expected,
        "the duplicate reached a client"
    );
}

#[actix_rt::test]
async fn transcripts_from_the_ingest_instance_reach_clients_of_the_other_sqlite() {
    transcripts_reach_the_other_instance(Database::Sqlite, "relay-sqlite").await;
}

#[actix_rt::test]
async fn transcripts_from_the_ingest_instance_reach_clients_of_the_other_postgres() {
    transcripts_reach_the_other_instance(Database::Postgres, "relay-postgres").await;
}

#[actix_rt::test]
async fn broadcast_endpoint_checks_its_secret_and_the_message() {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let slug = "relay-checks";
    let database = sqlite_url(dir.path(), "r.db");
    // Client tokens are required everywhere else: the broadcast endpoint needs only its secret.
    let receiver = Service::start(
        realtime_core_bin!(),
        &[
            ("DATABASE_URL", database.clone()),
            ("REALTIME_BROADCAST_SECRET", SECRET.to_owned()),
            ("REALTIME_AUTH_SECRET", AUTH_SECRET.to_owned()),
        ],
    );
    let client = WsClient::connect(
        &receiver,
        &format!("sessionSlug={slug}&token={}", client_token(slug)),
    )
    .await;

    let partial = transcript(slug, "p1:00_0", "Hello", None, 1_000);
    let (status, body) = post_broadcast(&receiver, None, partial.to_string().into_bytes()).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("bad_broadcast_secret"))
    );
    let (status, body) = post_broadcast(
        &receiver,
        Some("relay-shared-secret-5f1c2b"),
        partial.to_string().into_bytes(),
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("bad_broadcast_secret"))
    );
    let (status, body) = post_broadcast(
        &receiver,
        Some(AUTH_SECRET),
        partial.to_string().into_bytes(),
    )
    .await;
    assert_eq!(
        status, 401,
        "a client token secret is not the broadcast secret: {body}"
    );

    // Malformed messages: clear 400s, nothing delivered.
    let mut final_without_seq = transcript(slug, "p1:00_0", "Hello", Some(1), 2_000);
    final_without_seq.as_object_mut().unwrap().remove("seq");
    let mut status_message = partial.clone();
    status_message["type"] = json!("status");
    let mut bad_slug = partial.clone();
    bad_slug["sessionSlug"] = json!("no spaces/allowed");
    for (body, code, mentions) in [
        (b"{not json".to_vec(), "bad_message", "transcript"),
        (
            json!({"type": "transcript"}).to_string().into_bytes(),
            "bad_message",
            "sessionSlug",
        ),
        (
            final_without_seq.to_string().into_bytes(),
            "bad_message",
            "seq",
        ),
        (
            status_message.to_string().into_bytes(),
            "bad_message",
            "type",
        ),
        (
            bad_slug.to_string().into_bytes(),
            "bad_session_slug",
            "slug",
        ),
    ] {
        let (status, answer) = post_broadcast(&receiver, Some(SECRET), body).await;
        assert_eq!(
            (status, answer["error"].as_str()),
            (400, Some(code)),
            "{answer}"
        );
        assert!(
            answer["message"]
                .as_str()
                .unwrap_or_default()
                .contains(mentions),
            "{answer}"
        );
    }
    let mut huge = partial.clone();
    huge["text"] = json!("x".repeat(70 * 1024));
    let (status, answer) =
        post_broadcast(&receiver, Some(SECRET), huge.to_string().into_bytes()).await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (413, Some("body_too_large"))
    );

    // Valid messages: delivered once; repeats and stale partials are recognised.
    let steps = [
        (
            transcript(slug, "p1:00_0", "Hello", None, 1_000),
            "delivered",
        ),
        (transcript(slug, "p1:00_0", "Hel", None, 900), "stale"),
        (
            transcript(slug, "p1:00_0", "Hello world", Some(1), 1_200),
            "delivered",
        ),
        (
            transcript(slug, "p1:00_0", "Hello world", Some(1), 1_200),
            "duplicate",
        ),
        (
            transcript(slug, "p1:00_0", "Hello wor", None, 1_300),
            "stale",
        ),
        (
            transcript(slug, "p1:00_1", "Second", Some(2), 2_000),
            "delivered",
        ),
        (
            transcript(slug, "p1:00_0", "Hello world", Some(1), 1_200),
            "duplicate",
        ),
    ];
    for (message, outcome) in &steps {
        let (status, answer) = post_message(&receiver, message).await;
        assert_eq!(
            (status, answer["outcome"].as_str()),
            (200, Some(*outcome)),
            "{message}"
        );
    }
    assert!(
        client
            .wait_until(Duration::from_secs(5), |m| {
                m.iter().filter(|m| m["isFinal"] == true).count() >= 2
            })
            .await,
        "finals not delivered: {:?}",
        client.snapshot()
    );
    let shown: Vec<(String, bool, Option<i64>)> = client
        .transcripts()
        .iter()
        .map(|m| {
            (
                m["text"].as_str().unwrap_or_default().to_owned(),
                m["isFinal"] == true,
                m["seq"].as_i64(),
            )
        })
        .collect();
    assert_eq!(
        shown,
        [
            ("Hello".to_owned(), false, None),
            ("Hello world".to_owned(), true, Some(1)),
            ("Second".to_owned(), true, Some(2)),
        ]
    );
    let first = &client.finals()[0];
    assert_eq!(first["speaker"], "Alice");
    assert_eq!(first["speakerId"], "user-17:sess-9");
    assert_eq!(first["language"], "en");
    assert_eq!(first["startedAt"], 300);
    assert_eq!(first["endedAt"], 1_100);
    let stored = wait_for_stored_finals(&database, slug, 2, Duration::from_secs(10)).await;
    assert_eq!(
        stored
            .iter()
            .map(|f| (f.seq, f.utterance_id.as_str(), f.text.as_str()))
            .collect::<Vec<_>>(),
        [(1, "p1:00_0", "Hello world"), (2, "p1:00_1", "Second")]
    );
    assert!(
        !receiver.log().contains(SECRET),
        "the shared secret was logged"
    );
}

#[actix_rt::test]
async fn broadcast_endpoint_is_off_without_a_secret() {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let service = Service::start(
        realtime_core_bin!(),
        &[("DATABASE_URL", sqlite_url(dir.path(), "r.db"))],
    );
    let message = transcript("relay-off", "u:1", "Hi", Some(1), 1_000);
    for secret in [Some(SECRET), None] {
        let (status, body) =
            post_broadcast(&service, secret, message.to_string().into_bytes()).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (404, Some("broadcast_disabled"))
        );
    }
    let (status, _) = service.get_json("/api/sessions/relay-off").await;
    assert_eq!(status, 404, "a refused post must not create the session");
}

#[actix_rt::test]
async fn http_mode_without_its_secret_does_not_start() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_realtime-core"))
        .env_remove("REALTIME_BROADCAST_SECRET")
        .env("REALTIME_BROADCAST_MODE", "http")
        .env("REALTIME_BROADCAST_URL", "http://127.0.0.1:9")
        .env("PORT", "0")
        .env("RTMP_INTERNAL_PORT", "0")
        .output()
        .expect("binary runs");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("REALTIME_BROADCAST_SECRET"), "{stderr}");
}
