//! End-to-end tests of the mock over real sockets, using `awc` as the client.

use std::time::Duration;

use awc::ws::{self, CloseCode, CloseReason};
use base64::Engine as _;
use bytes::Bytes;
use futures_util::{SinkExt as _, StreamExt as _};
use mock_gladia::{ConnectionEnd, MockConfig, MockGladia};
use serde_json::{json, Value};

type WsConn = actix_codec::Framed<awc::BoxedSocket, ws::Codec>;

const KEY: &str = "test-key";
const STEP: Duration = Duration::from_secs(5);

fn start() -> MockGladia {
    // awc builds a rustls connector even for plain http and the workspace enables no rustls
    // crypto backend, so one must be installed process-wide (Err = already installed).
    let _ = rustls::crypto::ring::default_provider().install_default();
    match MockGladia::start(MockConfig::default()) {
        Ok(mock) => mock,
        Err(e) => panic!("mock did not start: {e:#}"),
    }
}

fn silence(ms: usize) -> Vec<u8> {
    vec![0; ms * 32]
}

fn tone(ms: usize) -> Vec<u8> {
    (0..ms * 16)
        .flat_map(|i| {
            let t = i as f64 / 16_000.0;
            ((8000.0 * (2.0 * std::f64::consts::PI * 440.0 * t).sin()) as i16).to_le_bytes()
        })
        .collect()
}

/// POSTs an init request and returns (status, JSON body).
async fn init(mock: &MockGladia, query: &str, key: Option<&str>, body: &Value) -> (u16, Value) {
    let mut req = awc::Client::new().post(format!("{}/v2/live{query}", mock.base_url()));
    if let Some(key) = key {
        // Mixed case on purpose: header names are case-insensitive.
        req = req.insert_header(("X-Gladia-Key", key));
    }
    let mut resp = req.send_json(body).await.expect("init request failed");
    let status = resp.status().as_u16();
    let body: Value = resp.json().await.expect("init response is not JSON");
    (status, body)
}

async fn create_session(mock: &MockGladia, body: &Value) -> (String, String) {
    let (status, resp) = init(mock, "", Some(KEY), body).await;
    assert_eq!(status, 201, "{resp}");
    let id = resp["id"].as_str().expect("id").to_owned();
    let url = resp["url"].as_str().expect("url").to_owned();
    (id, url)
}

async fn connect(url: &str) -> WsConn {
    let (_, conn) = awc::Client::new()
        .ws(url)
        .connect()
        .await
        .expect("WebSocket connect failed");
    conn
}

async fn send_binary(conn: &mut WsConn, bytes: &[u8]) {
    conn.send(ws::Message::Binary(Bytes::copy_from_slice(bytes)))
        .await
        .expect("send binary");
}

async fn send_json(conn: &mut WsConn, value: &Value) {
    conn.send(ws::Message::Text(value.to_string().into()))
        .await
        .expect("send text");
}

/// What the server sent next: a JSON message, or the close code.
#[derive(Debug)]
enum Incoming {
    Json(Value),
    Closed(Option<u16>),
}

async fn next(conn: &mut WsConn) -> Incoming {
    loop {
        let frame = tokio::time::timeout(STEP, conn.next())
            .await
            .expect("timed out waiting for a server frame");
        match frame {
            Some(Ok(ws::Frame::Text(text))) => {
                return Incoming::Json(serde_json::from_slice(&text).expect("server sent bad JSON"))
            }
            Some(Ok(ws::Frame::Close(reason))) => {
                return Incoming::Closed(reason.map(|r| u16::from(r.code)))
            }
            Some(Ok(_)) => continue,
            Some(Err(e)) => panic!("protocol error: {e}"),
            None => return Incoming::Closed(None),
        }
    }
}

async fn next_json(conn: &mut WsConn) -> Value {
    match next(conn).await {
        Incoming::Json(v) => v,
        Incoming::Closed(code) => panic!("closed ({code:?}) while expecting a message"),
    }
}

/// Reads messages until the server closes; returns them and the close code.
async fn read_until_close(conn: &mut WsConn) -> (Vec<Value>, Option<u16>) {
    let mut messages = Vec::new();
    loop {
        match next(conn).await {
            Incoming::Json(v) => messages.push(v),
            Incoming::Closed(code) => return (messages, code),
        }
    }
}

fn assert_envelope(msg: &Value, session_id: &str) {
    assert_eq!(msg["session_id"], session_id, "{msg}");
    let created = msg["created_at"].as_str().expect("created_at");
    assert!(created.ends_with('Z') && created.contains('T'), "{created}");
}

#[actix_rt::test]
async fn wrong_or_missing_key_gets_401_with_gladia_error_body() {
    let mock = start();
    for key in [Some("wrong"), None] {
        let (status, body) = init(&mock, "", key, &json!({})).await;
        assert_eq!(status, 401);
        assert_eq!(body["statusCode"], 401);
        assert_eq!(body["path"], "/v2/live");
        assert_eq!(body["message"], "gladia key not found");
        let request_id = body["request_id"].as_str().expect("request_id");
        assert!(request_id.starts_with("G-") && request_id.len() == 10);
        assert!(body["timestamp"].as_str().is_some());
    }
    assert!(mock.sessions().is_empty());
    let statuses: Vec<u16> = mock.init_requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [401, 401]);
}

#[actix_rt::test]
async fn body_validation_and_region() {
    let mock = start();
    let (status, body) = init(&mock, "", Some(KEY), &json!({"region": "eu-west"})).await;
    assert_eq!(status, 400);
    assert_eq!(body["statusCode"], 400);
    let errors = body["validation_errors"]
        .as_array()
        .expect("validation_errors");
    assert!(errors
        .iter()
        .any(|e| e.as_str().unwrap_or("").contains("\"region\"")));

    let (status, body) = init(&mock, "", Some(KEY), &json!({"sample_rate": 22050})).await;
    assert_eq!(status, 400);
    assert!(body["validation_errors"][0]
        .as_str()
        .unwrap_or("")
        .contains("sample_rate"));

    let bad_flag = json!({"messages_config": {"receive_partial_transcripts": "yes"}});
    let (status, _) = init(&mock, "", Some(KEY), &bad_flag).await;
    assert_eq!(status, 400);

    let (status, body) = init(&mock, "?region=mars", Some(KEY), &json!({})).await;
    assert_eq!(status, 400, "{body}");

    let (status, body) = init(&mock, "", Some(KEY), &json!({"sample_rate": 48000})).await;
    assert_eq!(status, 422);
    assert_eq!(
        body["message"],
        "mock supports only wav/pcm 16-bit 16 kHz mono"
    );

    let (status, body) = init(&mock, "?region=us-west", Some(KEY), &json!({})).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(mock.sessions()[0].region.as_deref(), Some("us-west"));
    let record = mock.init_requests().pop().expect("recorded");
    assert_eq!(record.query, "region=us-west");
    assert_eq!(
        record.headers.get("x-gladia-key").map(String::as_str),
        Some(KEY)
    );
}

#[actix_rt::test]
async fn full_session_acks_transcripts_and_stop() {
    let mock = start();
    let init_body = json!({
        "encoding": "wav/pcm", "bit_depth": 16, "sample_rate": 16000, "channels": 1,
        "messages_config": {"receive_partial_transcripts": true},
    });
    let (status, resp) = init(&mock, "", Some(KEY), &init_body).await;
    assert_eq!(status, 201);
    let id = resp["id"].as_str().expect("id").to_owned();
    let url = resp["url"].as_str().expect("url").to_owned();
    assert!(resp["created_at"].as_str().is_some());
    assert!(url.starts_with("ws://127.0.0.1:"), "{url}");
    assert!(!url.contains(&id), "token must differ from id: {url}");

    let mut conn = connect(&url).await;
    let mut audio = silence(1000);
    audio.extend(tone(1000));
    audio.extend(silence(1000));
    // 100 ms frames; frame 5 goes as a base64 JSON chunk instead of binary.
    for (i, frame) in audio.chunks(3200).enumerate() {
        if i == 5 {
            let chunk = base64::engine::general_purpose::STANDARD.encode(frame);
            send_json(
                &mut conn,
                &json!({"type": "audio_chunk", "data": {"chunk": chunk}}),
            )
            .await;
        } else {
            send_binary(&mut conn, frame).await;
        }
    }
    // Everything produced by the audio arrives before the stop ack.
    let mut messages = Vec::new();
    let mut acked = 0;
    while acked < 30 {
        let msg = next_json(&mut conn).await;
        if msg["type"] == "audio_chunk" {
            acked += 1;
        }
        messages.push(msg);
    }
    send_json(&mut conn, &json!({"type": "stop_recording"})).await;
    let (rest, close_code) = read_until_close(&mut conn).await;
    messages.extend(rest);
    assert_eq!(close_code, Some(1000));

    for msg in &messages {
        assert_envelope(msg, &id);
    }
    // Acks: contiguous half-open ranges covering every byte.
    let mut expected_start = 0;
    for ack in messages.iter().filter(|m| m["type"] == "audio_chunk") {
        assert_eq!(ack["acknowledged"], true);
        assert!(ack["error"].is_null());
        let range = &ack["data"]["byte_range"];
        assert_eq!(range[0], expected_start, "{ack}");
        let end = range[1].as_u64().expect("end");
        assert_eq!(end, expected_start + 3200);
        let time_end = ack["data"]["time_range"][1].as_f64().expect("time end");
        assert!((time_end - end as f64 / 32000.0).abs() < 1e-6);
        expected_start = end;
    }
    assert_eq!(expected_start, audio.len() as u64);

    // One utterance: speech_start, partials, then the final with the same id.
    let transcripts: Vec<&Value> = messages
        .iter()
        .filter(|m| m["type"] == "transcript")
        .collect();
    let (last, partials) = transcripts.split_last().expect("transcripts");
    assert!(!partials.is_empty());
    for t in &transcripts {
        assert_eq!(t["data"]["id"], "00_00000000");
        let u = &t["data"]["utterance"];
        assert!(u["text"].as_str().expect("text").starts_with(' '));
        for field in ["start", "end", "confidence", "channel", "language", "words"] {
            assert!(!u[field].is_null(), "{field} missing in {t}");
        }
    }
    assert!(partials.iter().all(|p| p["data"]["is_final"] == false));
    assert_eq!(last["data"]["is_final"], true);
    assert_eq!(last["data"]["utterance"]["start"], 1.0);
    assert_eq!(last["data"]["utterance"]["end"], 2.0);
    assert_eq!(last["data"]["utterance"]["words"][0]["word"], " utterance");
    let position = |kind: &str| messages.iter().position(|m| m["type"] == kind);
    let final_at = messages
        .iter()
        .position(|m| m["type"] == "transcript" && m["data"]["is_final"] == true);
    assert!(position("speech_start") < final_at);
    assert!(position("speech_end") > final_at);
    assert_eq!(
        messages[position("speech_start").expect("speech_start")]["data"]["time"],
        1.0
    );

    // Stop: ack, then post-processing, then the 1000 close.
    let stop_at = position("stop_recording").expect("stop ack");
    let stop = &messages[stop_at];
    assert_eq!(stop["acknowledged"], true);
    assert_eq!(stop["data"]["recording_duration"], 3.0);
    assert_eq!(stop["data"]["recording_left_to_process"], 0);
    assert!(position("post_transcript") > Some(stop_at));
    let post_final = &messages[position("post_final_transcript").expect("post_final_transcript")];
    assert_eq!(post_final["data"]["metadata"]["audio_duration"], 3.0);
    assert_eq!(
        post_final["data"]["transcription"]["utterances"][0]["text"],
        last["data"]["utterance"]["text"]
    );

    assert!(
        mock.wait_for(STEP, |s| s.first().is_some_and(|s| s.closed_with_1000))
            .await
    );
    let session = &mock.sessions()[0];
    assert_eq!(session.pcm, audio);
    // One arrival stamp per audio frame, cumulative byte counts rising to the total, in time order.
    assert_eq!(session.pcm_arrivals.len(), session.audio_frames as usize);
    assert_eq!(
        session.pcm_arrivals.last().map(|a| a.1),
        Some(audio.len() as u64)
    );
    assert!(session
        .pcm_arrivals
        .windows(2)
        .all(|w| w[0].0 <= w[1].0 && w[0].1 <= w[1].1));
    assert!(session.stop_received);
    assert_eq!(session.ws_connections, 1);
    assert_eq!(session.finals_sent.len(), 1);
    assert_eq!(session.partials_sent.len(), partials.len());
    assert_eq!(session.connection_ends, [ConnectionEnd::ServerClosed(1000)]);

    // The URL is dead once the session ended with 1000.
    let refused = awc::Client::new().ws(url.as_str()).connect().await;
    assert!(matches!(
        refused,
        Err(awc::error::WsClientError::InvalidResponseStatus(s)) if s.as_u16() == 404
    ));
}

#[actix_rt::test]
async fn defaults_send_no_partials_and_flush_on_stop() {
    let mock = start();
    let (_, url) = create_session(&mock, &json!({})).await;
    let mut conn = connect(&url).await;
    // Speech right up to the stop: the final only comes from the flush.
    send_binary(&mut conn, &tone(600)).await;
    send_json(&mut conn, &json!({"type": "stop_recording"})).await;
    let (messages, close_code) = read_until_close(&mut conn).await;
    assert_eq!(close_code, Some(1000));
    let transcripts: Vec<&Value> = messages
        .iter()
        .filter(|m| m["type"] == "transcript")
        .collect();
    assert_eq!(transcripts.len(), 1, "partials are off by default");
    assert_eq!(transcripts[0]["data"]["is_final"], true);
    assert_eq!(transcripts[0]["data"]["utterance"]["end"], 0.6);
}

#[actix_rt::test]
async fn reconnect_after_non_1000_close_continues_the_session() {
    let mock = start();
    let (id, url) = create_session(&mock, &json!({})).await;

    let mut conn = connect(&url).await;
    for _ in 0..3 {
        send_binary(&mut conn, &silence(100)).await;
    }
    for _ in 0..3 {
        assert_eq!(next_json(&mut conn).await["type"], "audio_chunk");
    }
    conn.send(ws::Message::Close(Some(CloseReason {
        code: CloseCode::Other(4000),
        description: Some("simulated drop".into()),
    })))
    .await
    .expect("send close");
    drop(conn);
    assert!(
        mock.wait_for(STEP, |s| s[0].connection_ends.len() == 1)
            .await
    );
    assert_eq!(
        mock.sessions()[0].connection_ends,
        [ConnectionEnd::ClientClosed(Some(4000))]
    );

    let mut conn = connect(&url).await;
    send_binary(&mut conn, &silence(100)).await;
    let ack = next_json(&mut conn).await;
    assert_eq!(ack["session_id"], id.as_str());
    assert_eq!(ack["data"]["byte_range"], json!([9600, 12800]));
    assert_eq!(ack["data"]["time_range"], json!([0.3, 0.4]));

    // A mock-side drop is resumable as well.
    assert!(mock.drop_connection(&id, 1011).await);
    assert_eq!(next(&mut conn).await.closed_code(), Some(1011));
    let mut conn = connect(&url).await;
    send_binary(&mut conn, &silence(100)).await;
    assert_eq!(
        next_json(&mut conn).await["data"]["byte_range"],
        json!([12800, 16000])
    );

    let session = &mock.sessions()[0];
    assert_eq!(session.ws_connections, 3);
    assert_eq!(session.pcm.len(), 16000);
    assert!(!session.ended);
}

impl Incoming {
    fn closed_code(self) -> Option<u16> {
        match self {
            Incoming::Closed(code) => code,
            Incoming::Json(v) => panic!("expected a close, got {v}"),
        }
    }
}

#[actix_rt::test]
async fn fault_injection_then_success() {
    let mock = start();
    mock.fail_next_inits(&[429, 500]);
    let (status, body) = init(&mock, "", Some(KEY), &json!({})).await;
    assert_eq!(status, 429);
    assert_eq!(body["statusCode"], 429);
    assert_eq!(body["path"], "/v2/live");
    let (status, body) = init(&mock, "", Some(KEY), &json!({})).await;
    assert_eq!(status, 500);
    assert_eq!(body["statusCode"], 500);
    let (status, _) = init(&mock, "", Some(KEY), &json!({})).await;
    assert_eq!(status, 201);
    let statuses: Vec<u16> = mock.init_requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [429, 500, 201]);
    assert_eq!(mock.sessions().len(), 1);
}

#[actix_rt::test]
async fn unknown_token_and_oversized_frames_are_refused() {
    let mock = start();
    let url = format!(
        "{}/v2/live/ws?token=nope",
        mock.base_url().replace("http", "ws")
    );
    let refused = awc::Client::new().ws(url.as_str()).connect().await;
    assert!(matches!(
        refused,
        Err(awc::error::WsClientError::InvalidResponseStatus(s)) if s.as_u16() == 404
    ));

    let (_, url) = create_session(&mock, &json!({})).await;
    let mut conn = connect(&url).await;
    // Garbage text is ignored and the socket stays usable.
    conn.send(ws::Message::Text("not json".into()))
        .await
        .expect("send");
    send_binary(&mut conn, &silence(10)).await;
    assert_eq!(
        next_json(&mut conn).await["data"]["byte_range"],
        json!([0, 320])
    );
    send_binary(&mut conn, &vec![0; 1024 * 1024 + 2]).await;
    assert_eq!(next(&mut conn).await.closed_code(), Some(1009));
    assert!(
        mock.wait_for(STEP, |s| s[0].connection_ends
            == [ConnectionEnd::ServerClosed(1009)])
            .await
    );
    assert_eq!(mock.sessions()[0].pcm.len(), 320);
}

#[actix_rt::test]
async fn wait_for_times_out() {
    let mock = start();
    let started = std::time::Instant::now();
    assert!(
        !mock
            .wait_for(Duration::from_millis(100), |s| !s.is_empty())
            .await
    );
    assert!(started.elapsed() >= Duration::from_millis(100));
}
