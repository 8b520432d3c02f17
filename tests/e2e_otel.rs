//! Traces end to end (docs/PROTOCOL.md#traces, issue #5): the real binary exports its span tree over OTLP/HTTP
//! to an in-process receiver while FFmpeg publishes speech transcribed by the mock provider.
//! The receiver decodes every `POST /v1/traces` as an `ExportTraceServiceRequest`; the test
//! checks span names, the tree, attributes, `service.name`, and that no secret leaves.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use actix_web::{web, App, HttpResponse, HttpServer};
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use mock_gladia::MockConfig;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{any_value, KeyValue};
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message as _;
use serde_json::json;
use test_harness::*;
use tokio::sync::Notify;

const GLADIA_KEY: &str = "e2e-otel-gladia-key-5f1c9a";
const AUTH_SECRET: &str = "e2e-otel-auth-secret-0a9b8c7d";
const KEY_SECRET: &str = "e2e-otel-stream-key-secret-77e1";
const SLUG: &str = "otel-weekly";

/// One received span with its resource's attributes.
#[derive(Clone, Debug)]
struct Received {
    resource: Vec<KeyValue>,
    span: Span,
}

/// An OTLP/HTTP receiver on 127.0.0.1:0: what a collector's `otlp` receiver does, in-process.
#[derive(Clone, Default)]
struct Receiver {
    spans: Arc<Mutex<Vec<Received>>>,
    /// Every request body as received, to search for secrets byte for byte.
    bodies: Arc<Mutex<Vec<Vec<u8>>>>,
    /// Requests that were not a decodable `ExportTraceServiceRequest`.
    errors: Arc<Mutex<Vec<String>>>,
    changed: Arc<Notify>,
}

impl Receiver {
    fn accept(&self, content_type: &str, body: &[u8]) -> Result<(), String> {
        if !content_type.starts_with("application/x-protobuf") {
            return Err(format!("content-type {content_type:?}, expected protobuf"));
        }
        let request = ExportTraceServiceRequest::decode(body)
            .map_err(|e| format!("not an ExportTraceServiceRequest: {e}"))?;
        self.bodies.lock().unwrap().push(body.to_vec());
        let mut spans = self.spans.lock().unwrap();
        for resource_spans in request.resource_spans {
            let resource = resource_spans
                .resource
                .map(|r| r.attributes)
                .unwrap_or_default();
            for scope in resource_spans.scope_spans {
                for span in scope.spans {
                    spans.push(Received {
                        resource: resource.clone(),
                        span,
                    });
                }
            }
        }
        Ok(())
    }

    /// Waits until `pred` holds over the spans received so far; false at the timeout.
    async fn wait_until(&self, timeout: Duration, pred: impl Fn(&[Received]) -> bool) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.changed.notified();
            if pred(&self.spans.lock().unwrap()) {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return pred(&self.spans.lock().unwrap());
            }
        }
    }

    fn spans(&self) -> Vec<Received> {
        self.spans.lock().unwrap().clone()
    }
}

async fn export(
    receiver: web::Data<Receiver>,
    request: actix_web::HttpRequest,
    body: web::Bytes,
) -> HttpResponse {
    let content_type = request
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let result = receiver.accept(&content_type, &body);
    receiver.changed.notify_waiters();
    match result {
        Ok(()) => HttpResponse::Ok()
            .content_type("application/x-protobuf")
            .body(ExportTraceServiceResponse::default().encode_to_vec()),
        Err(error) => {
            receiver.errors.lock().unwrap().push(error.clone());
            HttpResponse::BadRequest().body(error)
        }
    }
}

/// Starts the receiver on the test's runtime; returns it and its base URL.
fn start_receiver() -> (Receiver, String) {
    let receiver = Receiver::default();
    let data = web::Data::new(receiver.clone());
    let server = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .app_data(web::PayloadConfig::new(16 << 20))
            .route("/v1/traces", web::post().to(export))
    })
    .workers(1)
    .disable_signals()
    .bind(("127.0.0.1", 0))
    .expect("receiver binds");
    let addr = server.addrs()[0];
    actix_rt::spawn(server.run());
    (receiver, format!("http://{addr}"))
}

fn attr(span: &Span, key: &str) -> Option<String> {
    value_of(&span.attributes, key)
}

fn value_of(attributes: &[KeyValue], key: &str) -> Option<String> {
    let value = attributes.iter().find(|kv| kv.key == key)?.value.as_ref()?;
    Some(match value.value.as_ref()? {
        any_value::Value::StringValue(s) => s.clone(),
        any_value::Value::IntValue(i) => i.to_string(),
        any_value::Value::BoolValue(b) => b.to_string(),
        any_value::Value::DoubleValue(d) => d.to_string(),
        other => format!("{other:?}"),
    })
}

fn named<'a>(spans: &'a [Received], name: &str) -> Vec<&'a Span> {
    spans
        .iter()
        .filter(|r| r.span.name == name)
        .map(|r| &r.span)
        .collect()
}

fn names(spans: &[Received]) -> Vec<String> {
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for r in spans {
        *counts.entry(r.span.name.as_str()).or_default() += 1;
    }
    let mut names: Vec<String> = counts.iter().map(|(n, c)| format!("{n}×{c}")).collect();
    names.sort();
    names
}

/// A host token: it starts the session and learns the publish URL.
fn client_token() -> String {
    let exp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
        + 600;
    encode(
        &Header::new(Algorithm::HS256),
        &json!({ "sub": "otel-test", "exp": exp, "sessions": [SLUG], "role": "host" }),
        &EncodingKey::from_secret(AUTH_SECRET.as_bytes()),
    )
    .expect("encode token")
}

#[actix_rt::test]
async fn published_session_exports_its_span_tree_over_otlp() {
    let _serial = SERIAL.lock().await;
    if !require_tools(&["ffmpeg", "espeak-ng", "sox"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let wav = make_speech(dir.path());
    let (receiver, endpoint) = start_receiver();
    let mock = start_mock_with(MockConfig {
        api_key: GLADIA_KEY.into(),
        ..MockConfig::default()
    });
    let mut service = Service::start(
        realtime_core_bin!(),
        &[
            mock.service_env(&sqlite_url(dir.path(), "otel.db")),
            vec![
                ("REALTIME_AUTH_SECRET", AUTH_SECRET.to_owned()),
                ("RTMP_STREAM_KEY_SECRET", KEY_SECRET.to_owned()),
                ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint),
                ("OTEL_BSP_SCHEDULE_DELAY", "100".to_owned()),
            ],
        ]
        .concat(),
    );
    assert!(
        service.log().contains("exporting traces over OTLP/HTTP"),
        "{}",
        service.log()
    );

    // A client starts the transcription and learns the signed stream key from rtmpUrl.
    let token = client_token();
    let client = WsClient::connect(&service, &format!("sessionSlug={SLUG}&token={token}")).await;
    client.send(json!({"type": "start_transcription", "sessionSlug": SLUG}));
    assert!(
        client
            .wait_until(Duration::from_secs(10), |m| m
                .iter()
                .any(|m| m["type"] == "transcription_started"))
            .await,
        "no transcription_started: {:?}",
        client.snapshot()
    );
    let started = client
        .snapshot()
        .into_iter()
        .find(|m| m["type"] == "transcription_started")
        .expect("transcription_started");
    let rtmp_url = started["rtmpUrl"].as_str().expect("rtmpUrl").to_owned();
    let stream_key = rtmp_url
        .rsplit('/')
        .next()
        .expect("key in rtmpUrl")
        .to_owned();
    let signature = stream_key
        .rsplit('.')
        .next()
        .expect("signed key")
        .to_owned();
    assert!(
        stream_key.starts_with(&format!("{SLUG}.")) && signature.len() >= 40,
        "not a signed key: {stream_key}"
    );

    run_publisher(
        "ffmpeg",
        &ffmpeg_speech_args(&wav, &service.rtmp_url(&stream_key)),
        Duration::from_secs(90),
    )
    .await;
    mock.assert_one_session_closed(&service, Duration::from_secs(30))
        .await;

    let provider = mock.sessions().remove(0);
    let expected_finals = provider.finals_sent.len();
    assert!(expected_finals >= 3, "only {expected_finals} finals");
    assert!(
        client
            .wait_until(Duration::from_secs(10), |m| m
                .iter()
                .filter(|m| m["isFinal"] == true)
                .count()
                == expected_finals)
            .await,
        "client got {} of {expected_finals} finals",
        client.finals().len()
    );

    // While the service runs: the publish, decoder, provider stream, every delivered final
    // and the batch writes are exported as soon as each of them ends.
    let children_arrived = receiver
        .wait_until(Duration::from_secs(20), |spans| {
            ["ingest", "decode", "stt"]
                .iter()
                .all(|n| !named(spans, n).is_empty())
                && named(spans, "broadcast").len() == expected_finals
                && named(spans, "database")
                    .iter()
                    .filter_map(|s| attr(s, "db.batch.size"))
                    .filter_map(|n| n.parse::<usize>().ok())
                    .sum::<usize>()
                    >= expected_finals
        })
        .await;
    assert!(
        children_arrived,
        "spans received while running: {:?}; receiver errors: {:?}; log:\n{}",
        names(&receiver.spans()),
        receiver.errors.lock().unwrap(),
        service.log()
    );
    assert!(
        named(&receiver.spans(), "session").is_empty(),
        "the session span ended while the session is still open"
    );

    // Graceful shutdown ends the session; the exporter is flushed before the process exits.
    service.signal("TERM");
    let status = service.wait_exit(Duration::from_secs(60)).await;
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(0),
        "service did not exit cleanly; log:\n{}",
        service.log()
    );
    let session_arrived = receiver
        .wait_until(Duration::from_secs(10), |spans| {
            !named(spans, "session").is_empty()
        })
        .await;
    assert!(
        session_arrived,
        "no session span after shutdown; got {:?}; log:\n{}",
        names(&receiver.spans()),
        service.log()
    );

    let spans = receiver.spans();
    assert!(receiver.errors.lock().unwrap().is_empty());
    eprintln!("received spans: {:?}", names(&spans));
    for r in &spans {
        assert_eq!(
            value_of(&r.resource, "service.name").as_deref(),
            Some("realtime-core"),
            "resource of span {:?}",
            r.span.name
        );
    }

    let sessions = named(&spans, "session");
    assert_eq!(sessions.len(), 1, "one session span per session");
    let session = sessions[0];
    assert_eq!(attr(session, "session.slug").as_deref(), Some(SLUG));
    assert!(session.parent_span_id.is_empty(), "session is a root span");

    // ingest, decode, stt and broadcast are children of the session span, in its trace.
    for name in ["ingest", "decode", "stt", "broadcast"] {
        let children = named(&spans, name);
        assert!(!children.is_empty(), "no {name} span");
        for child in children {
            assert_eq!(
                child.parent_span_id, session.span_id,
                "{name}'s parent is not the session span"
            );
            assert_eq!(child.trace_id, session.trace_id, "{name} in another trace");
            assert_eq!(attr(child, "session.slug").as_deref(), Some(SLUG), "{name}");
            assert!(
                child.start_time_unix_nano >= session.start_time_unix_nano
                    && child.end_time_unix_nano <= session.end_time_unix_nano,
                "{name} outside the session's lifetime"
            );
        }
    }

    let ingest = named(&spans, "ingest");
    assert_eq!(ingest.len(), 1, "one publish, one ingest span");
    assert_eq!(
        attr(ingest[0], "rtmp.stream_key.slug").as_deref(),
        Some(SLUG)
    );
    let peer = attr(ingest[0], "net.peer.address").unwrap_or_default();
    assert!(peer.starts_with("127.0.0.1:"), "peer address {peer:?}");

    let decode = named(&spans, "decode");
    assert_eq!(
        attr(decode[0], "audio.sample_rate").as_deref(),
        Some("44100")
    );
    assert_eq!(
        attr(decode[0], "decode.outcome").as_deref(),
        Some("drained")
    );
    let pcm_bytes: u64 = attr(decode[0], "decode.pcm_bytes")
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(pcm_bytes > 32_000, "decode span saw {pcm_bytes} PCM bytes");

    let stt = named(&spans, "stt");
    assert_eq!(stt.len(), 1, "one provider stream");
    assert_eq!(attr(stt[0], "stt.provider").as_deref(), Some("gladia"));
    assert_eq!(
        attr(stt[0], "stt.provider_session_id").as_deref(),
        Some(provider.id.as_str())
    );

    let mut seqs: Vec<i64> = named(&spans, "broadcast")
        .iter()
        .filter_map(|s| attr(s, "transcript.seq")?.parse().ok())
        .collect();
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=expected_finals as i64).collect::<Vec<_>>());

    let database = named(&spans, "database");
    for batch in &database {
        assert!(batch.parent_span_id.is_empty(), "database spans are roots");
        assert_eq!(attr(batch, "session.slug").as_deref(), Some(SLUG));
        assert_eq!(attr(batch, "db.outcome").as_deref(), Some("ok"));
    }
    let written: usize = database
        .iter()
        .filter_map(|s| attr(s, "db.batch.size")?.parse::<usize>().ok())
        .sum();
    assert_eq!(written, expected_finals, "every final written once");

    // No secret leaves the process: searched in the raw bytes of every export request.
    let bodies = receiver.bodies.lock().unwrap().clone();
    assert!(!bodies.is_empty());
    for (what, secret) in [
        ("Gladia API key", GLADIA_KEY),
        ("auth secret", AUTH_SECRET),
        ("stream key secret", KEY_SECRET),
        ("stream key signature", signature.as_str()),
        ("client token", token.as_str()),
        ("provider WebSocket token", provider.token.as_str()),
    ] {
        for body in &bodies {
            assert!(
                !body.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "the {what} was exported in a span"
            );
        }
    }
    // Transcripts are meeting content, not telemetry.
    for sent in &provider.finals_sent {
        let text = sent.text.trim();
        for body in &bodies {
            assert!(
                !body.windows(text.len()).any(|w| w == text.as_bytes()),
                "transcript text {text:?} was exported"
            );
        }
    }
}

/// gRPC (port 4317) is not built in: asking for it stops start-up with one line instead of
/// exporting nowhere.
#[test]
fn grpc_protocol_refuses_to_start() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_realtime-core"))
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317")
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
        .env("PORT", "0")
        .env("RTMP_INTERNAL_PORT", "0")
        .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        .env_remove("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        .env_remove("HTTP_HOST")
        .env_remove("RTMP_BIND")
        .output()
        .expect("binary runs");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line, got: {stderr}");
    assert!(
        lines[0].contains("OTEL_EXPORTER_OTLP_PROTOCOL") && lines[0].contains("http/protobuf"),
        "{}",
        lines[0]
    );
}
