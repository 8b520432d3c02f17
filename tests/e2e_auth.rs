//! docs/PROTOCOL.md#security, #rtmp-ingest end to end, against the real binary: client tokens on the WebSocket upgrade
//! and on the HTTP API (the auth matrix), anonymous access on loopback, the refusal to start on
//! a public bind without a secret, and signed RTMP stream keys with real publishers (FFmpeg and
//! GStreamer `rtmp2sink`) and the mock provider.

use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use futures_util::StreamExt as _;
use hmac::{Hmac, Mac};
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use mock_gladia::MockConfig;
use serde_json::{json, Value};
use sha2::Sha256;
use test_harness::*;

const AUTH_SECRET: &str = "e2e-auth-secret-0123456789";
const KEY_SECRET: &str = "e2e-stream-key-secret-9876543210";
const GLADIA_KEY: &str = "e2e-test-key";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

/// A token as the product's back end would mint it: a viewer's (no `role`).
fn token(secret: &str, exp: u64, sessions: Value) -> String {
    token_with_role(secret, exp, sessions, None)
}

fn token_with_role(secret: &str, exp: u64, sessions: Value, role: Option<&str>) -> String {
    token_for("user-17", secret, exp, sessions, role)
}

fn token_for(sub: &str, secret: &str, exp: u64, sessions: Value, role: Option<&str>) -> String {
    let mut claims = json!({ "sub": sub, "exp": exp, "sessions": sessions });
    if let Some(role) = role {
        claims["role"] = json!(role);
    }
    encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("encode token")
}

/// A viewer's token.
fn valid_for(sessions: Value) -> String {
    token(AUTH_SECRET, now() + 600, sessions)
}

fn with_role(role: &str, sessions: Value) -> String {
    token_with_role(AUTH_SECRET, now() + 600, sessions, Some(role))
}

/// An HTTP call; `(status, JSON body or null, WWW-Authenticate)`.
async fn call(
    service: &Service,
    method: &str,
    path: &str,
    bearer: Option<&str>,
) -> (u16, Value, Option<String>) {
    call_with(service, method, path, bearer, None).await
}

/// [`call`] with a JSON body.
async fn call_with(
    service: &Service,
    method: &str,
    path: &str,
    bearer: Option<&str>,
    body: Option<&Value>,
) -> (u16, Value, Option<String>) {
    let client = awc::Client::new();
    let mut request = match method {
        "GET" => client.get(service.url(path)),
        "POST" => client.post(service.url(path)),
        "DELETE" => client.delete(service.url(path)),
        other => panic!("method {other}"),
    };
    if let Some(token) = bearer {
        request = request.bearer_auth(token);
    }
    let sent = match body {
        Some(body) => request.send_json(body).await,
        None => request.send().await,
    };
    let mut response = sent.expect("http call");
    let challenge = response
        .headers()
        .get("www-authenticate")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = response.json::<Value>().await.unwrap_or(Value::Null);
    (response.status().as_u16(), body, challenge)
}

/// A WebSocket upgrade request sent as plain HTTP, so a refusal's status and JSON body can be
/// read (a WebSocket client only reports "not 101").
async fn upgrade(service: &Service, query: &str, bearer: Option<&str>) -> (u16, Value) {
    let mut request = awc::Client::new()
        .get(service.url(&format!("/api/realtime/transcribe?{query}")))
        .insert_header(("Connection", "Upgrade"))
        .insert_header(("Upgrade", "websocket"))
        .insert_header(("Sec-WebSocket-Version", "13"))
        .insert_header(("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="));
    if let Some(token) = bearer {
        request = request.bearer_auth(token);
    }
    let mut response = request.send().await.expect("upgrade request");
    let status = response.status().as_u16();
    let body = if status == 101 {
        Value::Null
    } else {
        response.json::<Value>().await.unwrap_or(Value::Null)
    };
    (status, body)
}

fn assert_refusal(what: &str, got: (u16, &Value), status: u16, code: &str, secrets: &[&str]) {
    assert_eq!(got.0, status, "{what}: status; body {}", got.1);
    assert_eq!(got.1["error"], code, "{what}: body {}", got.1);
    let message = got.1["message"].as_str().unwrap_or_default();
    assert!(!message.is_empty(), "{what}: no message: {}", got.1);
    for secret in secrets {
        assert!(
            !got.1.to_string().contains(secret),
            "{what}: body echoes a secret"
        );
    }
}

/// Waits for the first WebSocket message of `type`.
async fn wait_for_type(client: &WsClient, kind: &str) -> Value {
    let found = client
        .wait_until(Duration::from_secs(10), |m| {
            m.iter().any(|m| m["type"] == kind)
        })
        .await;
    assert!(found, "no {kind:?} message; got {:?}", client.snapshot());
    client
        .snapshot()
        .into_iter()
        .find(|m| m["type"] == kind)
        .expect("message present")
}

/// The service with `REALTIME_AUTH_SECRET` set and a SQLite database in `dir`.
fn start_with_auth_secret(dir: &std::path::Path) -> Service {
    Service::start(
        realtime_core_bin!(),
        &[
            ("REALTIME_AUTH_SECRET", AUTH_SECRET.to_owned()),
            ("DATABASE_URL", sqlite_url(dir, "auth.db")),
        ],
    )
}

/// Every refusal of docs/PROTOCOL.md#websocket-connection, #security, on the upgrade and on `/api` routes, with its status and body.
#[actix_rt::test]
async fn auth_matrix_refuses_with_documented_status_and_body() {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let service = start_with_auth_secret(dir.path());

    let expired = token(AUTH_SECRET, now() - 3600, json!(["weekly"]));
    let other_session = valid_for(json!(["other"]));
    let bad_signature = token("not-the-secret", now() + 600, json!(["weekly"]));
    let malformed = "this-is-not-a-jwt".to_owned();
    let secrets = [
        AUTH_SECRET,
        expired.as_str(),
        other_session.as_str(),
        bad_signature.as_str(),
    ];
    let cases: [(&str, Option<&str>, u16, &str); 5] = [
        ("no token", None, 401, "missing_token"),
        ("expired token", Some(&expired), 401, "token_expired"),
        (
            "token for another session",
            Some(&other_session),
            403,
            "session_forbidden",
        ),
        ("bad signature", Some(&bad_signature), 401, "bad_signature"),
        ("malformed token", Some(&malformed), 401, "malformed_token"),
    ];

    for (what, token, status, code) in cases {
        // WebSocket, token in the query (what browsers do).
        let query = match token {
            Some(t) => format!("sessionSlug=weekly&token={t}"),
            None => "sessionSlug=weekly".to_owned(),
        };
        let (got, body) = upgrade(&service, &query, None).await;
        assert_refusal(
            &format!("ws ?token, {what}"),
            (got, &body),
            status,
            code,
            &secrets,
        );
        // WebSocket, bearer header.
        let (got, body) = upgrade(&service, "sessionSlug=weekly", token).await;
        assert_refusal(
            &format!("ws bearer, {what}"),
            (got, &body),
            status,
            code,
            &secrets,
        );
        // HTTP routes with a slug, read and write.
        for (method, path) in [
            ("GET", "/api/sessions/weekly"),
            ("POST", "/api/sessions/weekly/transcription"),
            ("GET", "/api/sessions/weekly/transcripts"),
        ] {
            let (got, body, challenge) = call(&service, method, path, token).await;
            assert_refusal(
                &format!("{method} {path}, {what}"),
                (got, &body),
                status,
                code,
                &secrets,
            );
            if status == 401 {
                assert!(
                    challenge.is_some_and(|c| c.starts_with("Bearer")),
                    "{method} {path}: a 401 names the Bearer scheme"
                );
            }
        }
    }
    // The list has no slug: only the token itself is judged.
    let (got, body, _) = call(&service, "GET", "/api/sessions", None).await;
    assert_refusal(
        "GET /api/sessions, no token",
        (got, &body),
        401,
        "missing_token",
        &secrets,
    );
    let (got, body, _) = call(&service, "GET", "/api/sessions", Some(&expired)).await;
    assert_refusal(
        "GET /api/sessions, expired",
        (got, &body),
        401,
        "token_expired",
        &secrets,
    );

    // A valid token still needs the slug (400, as without auth).
    let weekly = valid_for(json!(["weekly"]));
    let (got, body) = upgrade(&service, &format!("token={weekly}"), None).await;
    assert_refusal(
        "ws without slug",
        (got, &body),
        400,
        "missing_session_slug",
        &[&weekly],
    );

    // Health stays open for probes.
    let (got, _, _) = call(&service, "GET", "/healthz", None).await;
    assert_eq!(got, 200);

    // Nothing secret reached the log.
    let log = service.log();
    for secret in secrets.iter().chain([&weekly.as_str()]) {
        assert!(
            !log.contains(secret),
            "the log contains a token or the secret"
        );
    }
}

/// A valid token opens the WebSocket (query or bearer) and the HTTP routes, and scopes them:
/// the socket cannot subscribe elsewhere, and the session list shows only its sessions.
#[actix_rt::test]
async fn valid_tokens_work_and_are_scoped_to_their_sessions() {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let service = start_with_auth_secret(dir.path());
    let weekly = with_role("host", json!(["weekly"]));
    let service_token = with_role("service", json!("*"));

    // HTTP with the session token, and with a service token on another session.
    let (status, body, _) = call(
        &service,
        "POST",
        "/api/sessions/weekly/transcription",
        Some(&weekly),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["sessionSlug"], "weekly");
    let (status, body, _) = call(
        &service,
        "POST",
        "/api/sessions/other/transcription",
        Some(&service_token),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, body, _) = call(&service, "GET", "/api/sessions/weekly", Some(&weekly)).await;
    assert_eq!(status, 200, "{body}");

    // The list: the session token sees its session only, the service token sees both.
    let slugs = |body: &Value| -> Vec<String> {
        body["sessions"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s["sessionSlug"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    let (status, body, _) = call(&service, "GET", "/api/sessions", Some(&weekly)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(slugs(&body), ["weekly"]);
    let (_, body, _) = call(&service, "GET", "/api/sessions", Some(&service_token)).await;
    assert_eq!(slugs(&body), ["other", "weekly"]);

    // WebSocket with ?token=: it works, and the socket is bound to the token's sessions.
    let client = WsClient::connect(&service, &format!("sessionSlug=weekly&token={weekly}")).await;
    client.send(json!({"type": "start_transcription", "sessionSlug": "weekly"}));
    let started = wait_for_type(&client, "transcription_started").await;
    assert_eq!(started["sessionSlug"], "weekly");
    client.send(json!({"type": "subscribe", "sessionSlug": "other"}));
    let refused = wait_for_type(&client, "error").await;
    assert_eq!(refused["code"], "forbidden", "{refused}");

    // WebSocket with the bearer header.
    let (response, mut framed) = awc::Client::new()
        .ws(format!(
            "ws://{}/api/realtime/transcribe?sessionSlug=weekly",
            service.http
        ))
        .bearer_auth(&weekly)
        .connect()
        .await
        .expect("upgrade with a bearer token");
    assert_eq!(response.status().as_u16(), 101);
    futures_util::SinkExt::send(
        &mut framed,
        awc::ws::Message::Text(json!({"type": "ping"}).to_string().into()),
    )
    .await
    .expect("send ping");
    let pong = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(Ok(frame)) = framed.next().await {
            if let awc::ws::Frame::Text(text) = frame {
                let value: Value = serde_json::from_slice(&text).expect("JSON frame");
                if value["type"] == "pong" {
                    return Some(value);
                }
            }
        }
        None
    })
    .await
    .expect("pong in time");
    assert!(pong.is_some(), "bearer-authenticated socket answers");
}

/// A socket lives no longer than its token: at `exp` (plus the clock-skew leeway the token was
/// accepted with) it is closed with 4001 `token_expired`.
#[actix_rt::test]
async fn a_socket_is_closed_with_4001_when_its_token_expires() {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let service = start_with_auth_secret(dir.path());
    // Past its exp, but within the leeway: accepted, and valid for 4 more seconds.
    let leeway = realtime_core::auth::CLOCK_SKEW_LEEWAY_SECS;
    let valid_until = now() + 4;
    let expiring = token(AUTH_SECRET, valid_until - leeway, json!(["a"]));
    let lasting = valid_for(json!(["a"]));
    let opened = std::time::Instant::now();
    let client = WsClient::connect(&service, &format!("sessionSlug=a&token={expiring}")).await;
    let other = WsClient::connect(&service, &format!("sessionSlug=a&token={lasting}")).await;
    let closed = client.wait_closed(Duration::from_secs(15)).await;
    let after = opened.elapsed();
    assert_eq!(closed, Some((4001, "token_expired".to_owned())));
    assert!(
        after >= Duration::from_secs(2),
        "closed after {after:?}, before its exp"
    );
    // A socket with a valid token is still served.
    other.send(json!({"type": "ping"}));
    assert!(
        other
            .wait_until(Duration::from_secs(2), |m| m
                .iter()
                .any(|m| m["type"] == "pong"))
            .await
    );
}

/// Active-speaker poisoning: a report from far in the future would win attribution for every
/// transcript until then, and a token claiming many identities would get the rate limit of
/// each. Both are refused.
#[actix_rt::test]
async fn active_speaker_reports_far_from_now_or_from_many_identities_are_refused() {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let service = start_with_auth_secret(dir.path());
    let bearer = with_role("service", json!("*"));
    // A client makes the session exist.
    let _client = WsClient::connect(&service, &format!("sessionSlug=spk&token={bearer}")).await;
    let report = |identity: String, timestamp: Option<i64>| {
        let mut body = json!({"sessionSlug": "spk", "identity": identity});
        if let Some(ts) = timestamp {
            body["timestamp"] = json!(ts);
        }
        awc::Client::new()
            .post(service.url("/api/active-speaker"))
            .bearer_auth(&bearer)
            .send_json(&body)
    };
    let now_ms = (now() * 1000) as i64;
    for ts in [now_ms + 3_600_000, now_ms - 3_600_000, i64::MIN, i64::MAX] {
        let mut response = report("alice".into(), Some(ts)).await.expect("http call");
        let body: Value = response.json().await.unwrap_or(Value::Null);
        assert_eq!(
            (response.status().as_u16(), body["error"].as_str()),
            (400, Some("bad_timestamp")),
            "timestamp {ts}"
        );
    }
    // 520 identities from one token, as fast as they go: the token's 10 a second apply.
    let started = std::time::Instant::now();
    let (mut accepted, mut limited) = (0u64, 0u64);
    for i in 0..520 {
        let response = report(format!("fake-{i}"), None).await.expect("http call");
        match response.status().as_u16() {
            204 => accepted += 1,
            429 => limited += 1,
            other => panic!("report {i}: {other}"),
        }
    }
    let windows = started.elapsed().as_secs() + 1;
    eprintln!(
        "520 identities in {:?}: {accepted} accepted, {limited} limited",
        started.elapsed()
    );
    assert!(
        accepted >= 1 && accepted <= 10 * windows,
        "{accepted} accepted in {windows} s"
    );
    assert_eq!(accepted + limited, 520);
}

/// A path is logged when its call is refused; a newline in it must not start a line of its own
/// (forged log entries). Every log event is one line: control characters are escaped.
#[actix_rt::test]
async fn a_refused_path_cannot_forge_a_log_line() {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let service = start_with_auth_secret(dir.path());
    const FORGED: &str = "2099-01-01T00:00:00Z ERROR FORGED";
    let (status, body, _) = call(
        &service,
        "GET",
        "/api/x%0A2099-01-01T00:00:00Z%20ERROR%20FORGED",
        None,
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("missing_token"))
    );
    // The refusal is logged (escaped) ...
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !service
        .log()
        .contains("\\n2099-01-01T00:00:00Z ERROR FORGED")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the refusal was not logged:\n{}",
            service.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // ... and no line begins with the forged text.
    let log = service.log();
    assert!(
        !log.lines()
            .any(|line| line.trim_start().starts_with(FORGED)),
        "{log}"
    );
}

/// A flood of refused calls costs a few log lines a second, not one each; the lines that get
/// through say how many were left out.
#[actix_rt::test]
async fn refusal_logs_are_rate_limited() {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let service = start_with_auth_secret(dir.path());
    let client = awc::Client::new();
    let started = std::time::Instant::now();
    const CALLS: usize = 600;
    for _ in 0..CALLS {
        let response = client
            .get(service.url("/api/sessions/flood"))
            .send()
            .await
            .expect("http call");
        assert_eq!(response.status().as_u16(), 401);
    }
    // One more, a second later, so the budget opens again and reports what it left out.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let response = client
        .get(service.url("/api/sessions/flood"))
        .send()
        .await
        .expect("http call");
    assert_eq!(response.status().as_u16(), 401);
    let seconds = started.elapsed().as_secs() + 1;
    let found = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let log = service.log();
            if log
                .lines()
                .any(|l| l.contains("api call refused") && !l.contains("suppressed=0"))
            {
                return log;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("a refusal line reports the suppressed ones");
    let lines = found
        .lines()
        .filter(|l| l.contains("api call refused"))
        .count();
    eprintln!(
        "{} refused calls in {:?}: {lines} log lines",
        CALLS + 1,
        started.elapsed()
    );
    assert!(
        lines as u64 <= 10 * (seconds + 1),
        "{lines} refusal lines for {CALLS} refusals in {seconds} s"
    );
}

/// Without REALTIME_AUTH_SECRET on loopback (the default), calls are anonymous.
#[actix_rt::test]
async fn anonymous_calls_work_on_loopback_without_a_secret() {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let service = Service::start(
        realtime_core_bin!(),
        &[("DATABASE_URL", sqlite_url(dir.path(), "anon.db"))],
    );
    assert!(service.http.ip().is_loopback());
    assert!(
        service.log().contains("REALTIME_AUTH_SECRET is not set"),
        "start-up says it runs anonymous"
    );
    let (status, body, _) = call(&service, "POST", "/api/sessions/open/transcription", None).await;
    assert_eq!(status, 200, "{body}");
    let (status, body, _) = call(&service, "GET", "/api/sessions", None).await;
    assert_eq!(status, 200, "{body}");
    let client = WsClient::connect(&service, "sessionSlug=open").await;
    client.send(json!({"type": "subscribe", "sessionSlug": "another"}));
    client.send(json!({"type": "ping"}));
    wait_for_type(&client, "pong").await;
    assert!(
        !client.snapshot().iter().any(|m| m["type"] == "error"),
        "anonymous clients may use any session: {:?}",
        client.snapshot()
    );
}

/// Bound beyond loopback without a secret, the service does not start: exit 2, one line.
#[test]
fn public_bind_without_a_secret_refuses_to_start() {
    let output = Command::new(env!("CARGO_BIN_EXE_realtime-core"))
        .env_remove("REALTIME_AUTH_SECRET")
        .env_remove("RTMP_STREAM_KEY_SECRET")
        .env_remove("REALTIME_INSECURE")
        .env("HTTP_HOST", "0.0.0.0")
        .env("PORT", "0")
        .env("RTMP_INTERNAL_PORT", "0")
        .output()
        .expect("binary runs");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line, got: {stderr}");
    assert!(lines[0].contains("REALTIME_AUTH_SECRET"), "{}", lines[0]);
    assert!(lines[0].contains("HTTP_HOST"), "{}", lines[0]);
}

/// docs/PROTOCOL.md#stream-keys's key, computed here independently of the service's code.
fn signed_key(secret: &str, slug: &str, nonce: &str, expiry: u64) -> String {
    let signed = format!("{slug}.{nonce}.{expiry}");
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("hmac key");
    mac.update(signed.as_bytes());
    format!(
        "{signed}.{}",
        URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
    )
}

/// The key part of an `rtmpUrl`, checked to be a signed key for `slug` valid for the default
/// `RTMP_STREAM_KEY_TTL_SECS` (6 h); returns it and its nonce.
fn key_of(rtmp_url: &str, service: &Service, slug: &str) -> (String, String) {
    let prefix = format!("rtmp://localhost:{}/live/", service.rtmp.port());
    let key = rtmp_url
        .strip_prefix(&prefix)
        .unwrap_or_else(|| panic!("rtmpUrl {rtmp_url:?} does not start with {prefix}"))
        .to_owned();
    let (rest, _) = key.rsplit_once('.').expect("signed key has a signature");
    let (rest, expiry) = rest.rsplit_once('.').expect("signed key has an expiry");
    let (key_slug, nonce) = rest.rsplit_once('.').expect("signed key has a nonce");
    let nonce = nonce.to_owned();
    assert_eq!(key_slug, slug);
    assert_eq!(nonce.len(), 32, "a 128-bit nonce in hex: {nonce}");
    let expiry: u64 = expiry.parse().expect("numeric expiry");
    let ttl = 6 * 3600;
    assert!(
        expiry > now() + ttl - 300 && expiry <= now() + ttl + 5,
        "key valid for about 6 h"
    );
    assert_eq!(
        key,
        signed_key(KEY_SECRET, slug, &nonce, expiry),
        "signature per docs/PROTOCOL.md#stream-keys"
    );
    (key, nonce)
}

fn tone_args(url: &str) -> Vec<String> {
    ffmpeg_args(
        &[
            "-re",
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440:duration=4",
            "-c:a",
            "aac",
            "-b:a",
            "96k",
            "-ar",
            "44100",
            "-ac",
            "2",
        ],
        url,
    )
}

/// With RTMP_STREAM_KEY_SECRET: forged and expired keys are refused at publish and nothing
/// reaches the provider; the key from the start call works with FFmpeg and with rtmp2sink.
#[actix_rt::test]
async fn signed_stream_keys_are_enforced_at_publish() {
    let _serial = SERIAL.lock().await;
    if !require_tools(&["ffmpeg", "gst-launch-1.0", "espeak-ng"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let wav = make_speech(dir.path());
    let mock = start_mock_with(MockConfig {
        api_key: GLADIA_KEY.into(),
        ..MockConfig::default()
    });
    let service = Service::start(
        realtime_core_bin!(),
        &[
            mock.service_env(&sqlite_url(dir.path(), "keys.db")),
            vec![("RTMP_STREAM_KEY_SECRET", KEY_SECRET.to_owned())],
        ]
        .concat(),
    );
    let slug = "team.weekly-sync";

    // The HTTP start call and the WebSocket start both hand out a signed key.
    let (status, body, _) = call(
        &service,
        "POST",
        &format!("/api/sessions/{slug}/transcription"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (key, nonce) = key_of(body["rtmpUrl"].as_str().expect("rtmpUrl"), &service, slug);
    let client = WsClient::connect(&service, &format!("sessionSlug={slug}")).await;
    client.send(json!({"type": "start_transcription", "sessionSlug": slug}));
    let started = wait_for_type(&client, "transcription_started").await;
    let (again, _) = key_of(
        started["rtmpUrl"].as_str().expect("rtmpUrl"),
        &service,
        slug,
    );
    assert_eq!(
        again, key,
        "a second start keeps the key egress may be using"
    );

    // Refused: the bare slug, a key signed with another secret, a stretched expiry, an expired
    // key. FFmpeg exits non-zero well before its 4 s of audio would end.
    let (_, signature) = key.rsplit_once('.').expect("signature");
    let refused = [
        ("bare slug", slug.to_owned()),
        (
            "other secret",
            signed_key("guessed-secret", slug, &nonce, now() + 3600),
        ),
        (
            "stretched expiry",
            format!("{slug}.{nonce}.{}.{signature}", now() + 7 * 24 * 3600),
        ),
        ("expired", signed_key(KEY_SECRET, slug, &nonce, now() - 60)),
    ];
    for (what, bad_key) in &refused {
        let stderr = run_refused_publisher(
            "ffmpeg",
            &tone_args(&service.rtmp_url(bad_key)),
            Duration::from_secs(30),
        )
        .await;
        eprintln!(
            "ffmpeg on a {what} key: {}",
            stderr.lines().last().unwrap_or("")
        );
    }
    assert!(
        mock.init_requests().is_empty() && mock.sessions().is_empty(),
        "a refused publish reached the provider"
    );
    let log = service.log();
    for (_, bad_key) in refused.iter().skip(1) {
        assert!(!log.contains(bad_key.as_str()), "a stream key was logged");
    }

    // Accepted: FFmpeg with the issued key; the audio reaches the provider.
    let args = ffmpeg_speech_args(&wav, &service.rtmp_url(&key));
    run_publisher("ffmpeg", &args, Duration::from_secs(90)).await;
    // 3 s of 16 kHz S16 mono: most of the ~8 s of speech, so audio flowed, not just a header.
    let enough = 3 * 16_000 * 2;
    let reached = mock
        .wait_for(Duration::from_secs(30), |s| {
            s.len() == 1 && s[0].pcm.len() >= enough
        })
        .await;
    assert!(
        reached,
        "FFmpeg's audio did not reach the provider; log:\n{}",
        service.log()
    );

    // Accepted: rtmp2sink (what LiveKit Egress uses) with the same key. It may continue the
    // same provider session (a publisher back within the reconnect grace) or start a new one;
    // up to 1 s (the tests' grace) of the audio may be gap silence.
    let received_before: usize = mock.sessions().iter().map(|s| s.pcm.len()).sum();
    run_publisher(
        "gst-launch-1.0",
        &rtmp2sink_args(&wav, &service.rtmp_url(&key)),
        Duration::from_secs(90),
    )
    .await;
    let reached = mock
        .wait_for(Duration::from_secs(30), |s| {
            s.iter().map(|s| s.pcm.len()).sum::<usize>() >= received_before + enough + 32_000
        })
        .await;
    assert!(
        reached,
        "rtmp2sink's audio did not reach the provider; log:\n{}",
        service.log()
    );
    assert!(
        !service.log().contains(&key),
        "the valid stream key was logged"
    );

    // A stop revokes the key: FFmpeg's publish with it is refused, here and after a restart
    // of the service on the same database, and nothing more reaches the provider.
    let (status, body, _) = call(
        &service,
        "DELETE",
        &format!("/api/sessions/{slug}/transcription"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body.get("rtmpUrl").is_none(),
        "no publish URL after a stop: {body}"
    );
    let sessions_before = mock.sessions().len();
    let stderr = run_refused_publisher(
        "ffmpeg",
        &tone_args(&service.rtmp_url(&key)),
        Duration::from_secs(30),
    )
    .await;
    eprintln!(
        "ffmpeg on a revoked key: {}",
        stderr.lines().last().unwrap_or("")
    );
    assert!(
        service.log().contains("stream key revoked"),
        "the refusal says why"
    );
    drop(service);
    let service = Service::start(
        realtime_core_bin!(),
        &[
            mock.service_env(&sqlite_url(dir.path(), "keys.db")),
            vec![("RTMP_STREAM_KEY_SECRET", KEY_SECRET.to_owned())],
        ]
        .concat(),
    );
    run_refused_publisher(
        "ffmpeg",
        &tone_args(&service.rtmp_url(&key)),
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(
        mock.sessions().len(),
        sessions_before,
        "a revoked key's audio reached the provider"
    );
    // The next start mints a new key.
    let (status, body, _) = call(
        &service,
        "POST",
        &format!("/api/sessions/{slug}/transcription"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (_, new_nonce) = key_of(body["rtmpUrl"].as_str().expect("rtmpUrl"), &service, slug);
    assert_ne!(new_nonce, nonce, "every start after a stop mints a new key");
}

/// docs/PROTOCOL.md#roles: viewer, host and service tokens against every route and WebSocket
/// command, with the status each gets; a viewer never sees a publish URL.
#[actix_rt::test]
async fn the_role_matrix_holds_for_every_route_and_command() {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let service = Service::start(
        realtime_core_bin!(),
        &[
            ("REALTIME_AUTH_SECRET", AUTH_SECRET.to_owned()),
            ("DATABASE_URL", sqlite_url(dir.path(), "roles.db")),
            ("RTMP_STREAM_KEY_SECRET", KEY_SECRET.to_owned()),
            (
                "REALTIME_BROADCAST_SECRET",
                "relay-secret-for-roles".to_owned(),
            ),
        ],
    );
    let roles = ["viewer", "host", "service"];
    let token_of = |role: &str| {
        token_for(
            &format!("{role}-user"),
            AUTH_SECRET,
            now() + 600,
            json!(["m"]),
            Some(role),
        )
    };
    let now_ms = (now() * 1000) as i64;
    // One final relayed with a service token before the matrix, so every role's resume has
    // something to replay; the same message in the matrix is a duplicate for whoever may post.
    let relayed = json!({
        "type": "transcript", "sessionSlug": "m", "utteranceId": "u1",
        "text": "relayed", "isFinal": true, "speaker": "A", "speakerId": "a",
        "ts": now_ms, "seq": 1,
    });
    let service_token = token_of("service");
    // A service client stays subscribed, so the session outlives each role's stop.
    let _holder =
        WsClient::connect(&service, &format!("sessionSlug=m&token={service_token}")).await;
    let (status, answer, _) = call_with(
        &service,
        "POST",
        "/api/realtime/transcribe/broadcast",
        Some(&service_token),
        Some(&relayed),
    )
    .await;
    assert_eq!(
        (status, answer["outcome"].as_str()),
        (200, Some("delivered")),
        "{answer}"
    );
    let mut table = Vec::new();
    for role in roles {
        let bearer = token_of(role);
        let t = Some(bearer.as_str());
        let mut row: Vec<(&str, u16)> = Vec::new();
        let lock = json!({"ttlMs": 30_000});
        let speaker = json!({"sessionSlug": "m", "identity": "alice"});
        let calls: [(&str, &str, &str, Option<&Value>); 10] = [
            ("POST start", "POST", "/api/sessions/m/transcription", None),
            ("GET list", "GET", "/api/sessions", None),
            ("GET session", "GET", "/api/sessions/m", None),
            (
                "GET transcripts",
                "GET",
                "/api/sessions/m/transcripts",
                None,
            ),
            (
                "POST ai-lock",
                "POST",
                "/api/sessions/m/ai-lock",
                Some(&lock),
            ),
            (
                "DELETE ai-lock",
                "DELETE",
                "/api/sessions/m/ai-lock",
                Some(&json!({})),
            ),
            (
                "POST active-speaker",
                "POST",
                "/api/active-speaker",
                Some(&speaker),
            ),
            (
                "POST relay (token)",
                "POST",
                "/api/realtime/transcribe/broadcast",
                Some(&relayed),
            ),
            (
                "DELETE stop",
                "DELETE",
                "/api/sessions/m/transcription",
                None,
            ),
            ("GET session after stop", "GET", "/api/sessions/m", None),
        ];
        for (name, method, path, body) in calls {
            let (status, answer, _) = call_with(&service, method, path, t, body).await;
            if status == 403 {
                assert_eq!(answer["error"], "role_forbidden", "{role} {name}: {answer}");
            }
            // A viewer never sees the publish URL, in any answer.
            if role == "viewer" {
                assert!(
                    !answer.to_string().contains("rtmp://"),
                    "{role} {name} shows a publish URL: {answer}"
                );
            }
            if role != "viewer" && name == "GET session" {
                assert!(
                    answer["rtmpUrl"]
                        .as_str()
                        .is_some_and(|u| u.starts_with("rtmp://")),
                    "{role} sees the publish URL: {answer}"
                );
            }
            row.push((name, status));
        }
        // The AI lock holder is the token's `sub`, not a claimed name.
        let (status, answer, _) = call_with(
            &service,
            "POST",
            "/api/sessions/m/ai-lock",
            t,
            Some(&json!({"holder": "someone-else", "ttlMs": 30_000})),
        )
        .await;
        row.push(("POST ai-lock as another", status));
        if role != "viewer" {
            assert_eq!(answer["error"], "holder_mismatch", "{answer}");
        }

        // The WebSocket: every role may watch; only host and service may start and stop.
        // Resuming from the start replays the relayed final to every role.
        let client =
            WsClient::connect(&service, &format!("sessionSlug=m&lastSeq=0&token={bearer}")).await;
        let replayed = client
            .wait_until(Duration::from_secs(10), |m| {
                m.iter()
                    .any(|m| m["type"] == "transcript" && m["isFinal"] == true)
            })
            .await;
        assert!(replayed, "{role}: no replay: {:?}", client.snapshot());
        client.send(json!({"type": "start_transcription", "sessionSlug": "m"}));
        client.send(json!({"type": "stop_transcription", "sessionSlug": "m"}));
        // Each command is answered (a refusal, `transcription_started`) or acted on in order;
        // the pong after them is written once the stop has been handled.
        let answered = client
            .wait_until(Duration::from_secs(10), |m| {
                m.iter()
                    .any(|m| m["type"] == "transcription_started" || m["code"] == "role_forbidden")
            })
            .await;
        assert!(
            answered,
            "{role}: start not answered: {:?}",
            client.snapshot()
        );
        client.send(json!({"type": "ping"}));
        wait_for_type(&client, "pong").await;
        let messages = client.snapshot();
        let refusals = messages
            .iter()
            .filter(|m| m["type"] == "error" && m["code"] == "role_forbidden")
            .count();
        let started = messages
            .iter()
            .filter(|m| m["type"] == "transcription_started")
            .count();
        let relayed_finals = messages
            .iter()
            .filter(|m| m["type"] == "transcript" && m["isFinal"] == true)
            .count();
        row.push(("WS start/stop refused", refusals as u16));
        row.push(("WS transcription_started", started as u16));
        row.push(("WS finals replayed", relayed_finals as u16));
        if role == "viewer" {
            assert!(
                !messages.iter().any(|m| m.to_string().contains("rtmp://")),
                "a viewer's socket got a publish URL: {messages:?}"
            );
        }
        client.close();
        table.push((role, row));
    }
    eprintln!("role matrix (status, or count for WS rows):");
    for (role, row) in &table {
        eprintln!("  {role:8} {row:?}");
    }
    let expected: [(&str, [u16; 14]); 3] = [
        // start list show transcripts lock unlock speaker relay stop show2 lock-as-other ws-refused ws-started ws-finals
        (
            "viewer",
            [
                403, 200, 200, 200, 403, 403, 403, 403, 403, 200, 403, 2, 0, 1,
            ],
        ),
        (
            "host",
            [
                200, 200, 200, 200, 200, 204, 403, 403, 200, 200, 400, 0, 1, 1,
            ],
        ),
        (
            "service",
            [
                200, 200, 200, 200, 200, 204, 204, 200, 200, 200, 400, 0, 1, 1,
            ],
        ),
    ];
    for ((role, row), (expected_role, statuses)) in table.iter().zip(expected) {
        assert_eq!(*role, expected_role);
        let got: Vec<u16> = row.iter().map(|(_, s)| *s).collect();
        assert_eq!(got, statuses, "{role}: {row:?}");
    }
}
