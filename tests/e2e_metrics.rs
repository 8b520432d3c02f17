//! The metrics endpoints (docs/PROTOCOL.md#metrics) over a real publish: FFmpeg → the real binary →
//! the mock Gladia → two WebSocket clients, then `GET /metrics` and `/metrics/prometheus`.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::json;
use test_harness::*;

const SLUG: &str = "metrics-e2e";

fn gauge_key(name: &str) -> String {
    format!("{name}{{sessionSlug={SLUG}}}")
}

/// `GET /metrics/prometheus`: content type and body.
async fn get_prometheus(service: &Service) -> (String, String) {
    let mut response = awc::Client::new()
        .get(service.url("/metrics/prometheus"))
        .send()
        .await
        .expect("http get");
    assert_eq!(response.status().as_u16(), 200);
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let body = response.body().limit(16 << 20).await.expect("body");
    (
        content_type,
        String::from_utf8(body.to_vec()).expect("utf-8 text"),
    )
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// Parses the text format: every line is a `# HELP`/`# TYPE` comment or
/// `name{labels} value`. Returns `name{labels}` → value.
fn parse_prometheus(text: &str) -> HashMap<String, f64> {
    let mut samples = HashMap::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        if let Some(comment) = line.strip_prefix("# ") {
            let mut words = comment.split(' ');
            let kind = words.next();
            assert!(
                matches!(kind, Some("TYPE") | Some("HELP")),
                "bad comment: {line}"
            );
            assert!(words.next().is_some_and(valid_name), "bad name in: {line}");
            if kind == Some("TYPE") {
                let kind = words.next().unwrap_or_default();
                assert!(
                    ["counter", "gauge", "summary", "histogram", "untyped"].contains(&kind),
                    "{line}"
                );
            }
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("`series value`");
        let name = match series.split_once('{') {
            Some((name, labels)) => {
                let labels = labels.strip_suffix('}').expect("labels end with }");
                for label in labels.split(',') {
                    let (key, value) = label.split_once('=').expect("label=value");
                    assert!(valid_name(key), "bad label name in: {line}");
                    assert!(
                        value.len() >= 2 && value.starts_with('"') && value.ends_with('"'),
                        "unquoted label value in: {line}"
                    );
                }
                name
            }
            None => series,
        };
        assert!(valid_name(name), "bad metric name in: {line}");
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value in: {line}"));
        samples.insert(series.to_owned(), value);
    }
    samples
}

#[actix_rt::test]
async fn a_publish_is_measured_in_json_and_prometheus_and_its_session_series_go_with_it() {
    let _serial = SERIAL.lock().await;
    if !require_tools(&["ffmpeg", "espeak-ng", "sox"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let database_url = sqlite_url(dir.path(), "metrics.db");
    let wav = make_speech(dir.path());
    let mock = start_mock();
    let service = Service::start(realtime_core_bin!(), &mock.service_env(&database_url));

    // Before anything happened, every docs/PROTOCOL.md#observability series is there at zero.
    let (status, before) = service.get_json("/metrics").await;
    assert_eq!(status, 200);
    for name in [
        "gladia.stt_latency_ms",
        "ingest.broadcast_latency_ms",
        "ws.broadcast_loop_ms",
        "http.post_latency_ms",
    ] {
        assert_eq!(before["latencies"][name]["count"], 0, "{name}: {before}");
    }
    for name in [
        "ws.broadcast_errors_total",
        "ws.heartbeat_timeouts_total",
        "ws.queue_drops_total",
        "ingest.audio_bytes_total",
        "ingest.decoder_restarts_total",
        "gladia.reconnects_total",
        "db.write_errors_total",
    ] {
        assert_eq!(before["counters"][name], 0, "{name}: {before}");
    }

    // Two clients; each sees its status frame once subscribed (the gauge is set before it).
    let clients = [
        WsClient::connect(&service, &format!("sessionSlug={SLUG}")).await,
        WsClient::connect(&service, &format!("sessionSlug={SLUG}")).await,
    ];
    for client in &clients {
        assert!(
            client
                .wait_until(Duration::from_secs(5), |m| m
                    .iter()
                    .any(|m| m["type"] == "status"))
                .await
        );
    }
    let (_, subscribed) = service.get_json("/metrics").await;
    assert_eq!(
        subscribed["gauges"][gauge_key("ws.session_clients")],
        2.0,
        "{subscribed}"
    );

    let args = ffmpeg_speech_args(&wav, &service.rtmp_url(SLUG));
    run_publisher("ffmpeg", &args, Duration::from_secs(90)).await;
    mock.assert_one_session_closed(&service, Duration::from_secs(30))
        .await;
    let finals_sent = mock.sessions().remove(0).finals_sent.len();
    assert!(finals_sent >= 3, "only {finals_sent} utterances");
    for client in &clients {
        assert!(
            client
                .wait_until(Duration::from_secs(10), |m| {
                    m.iter().filter(|m| m["isFinal"] == true).count() == finals_sent
                })
                .await,
            "a client got {} of {finals_sent} finals",
            client.finals().len()
        );
    }
    let stored =
        wait_for_stored_finals(&database_url, SLUG, finals_sent, Duration::from_secs(10)).await;
    assert_eq!(stored.len(), finals_sent);
    let (status, _) = service
        .post_json(
            "/api/active-speaker",
            json!({"sessionSlug": SLUG, "identity": "ada", "name": "Ada"}),
        )
        .await;
    assert_eq!(status, 204);

    let (_, after) = service.get_json("/metrics").await;
    eprintln!("/metrics after the publish: {after:#}");
    let latencies = &after["latencies"];
    let stt = &latencies["gladia.stt_latency_ms"];
    assert_eq!(
        stt["count"], finals_sent,
        "one STT latency per final received: {after}"
    );
    for name in [
        "gladia.stt_latency_ms",
        "ingest.broadcast_latency_ms",
        "ws.broadcast_loop_ms",
        "http.post_latency_ms",
    ] {
        let l = &latencies[name];
        let field = |f: &str| {
            l[f].as_f64()
                .unwrap_or_else(|| panic!("{name}.{f} missing: {l}"))
        };
        assert!(l["count"].as_u64().unwrap() > 0, "{name}: {l}");
        let (min, p50, p95, p99, max, avg) = (
            field("minMs"),
            field("p50Ms"),
            field("p95Ms"),
            field("p99Ms"),
            field("maxMs"),
            field("avgMs"),
        );
        assert!(
            0.0 <= min && min <= p50 && p50 <= p95 && p95 <= p99 && p99 <= max,
            "{name}: {l}"
        );
        assert!(min <= avg && avg <= max, "{name}: {l}");
        assert!(max < 30_000.0, "{name} took half a minute: {l}");
    }
    assert!(
        latencies["ingest.broadcast_latency_ms"]["count"]
            .as_u64()
            .unwrap()
            >= finals_sent as u64,
        "every final and partial is broadcast: {after}"
    );
    let counters = &after["counters"];
    assert_eq!(counters["gladia.finals_total"], finals_sent);
    assert!(counters["ingest.audio_bytes_total"].as_u64().unwrap() > 0);
    assert!(counters["ingest.pcm_bytes_total"].as_u64().unwrap() > 0);
    assert_eq!(counters["db.finals_written_total"], finals_sent);
    assert!(counters["db.batches_written_total"].as_u64().unwrap() >= 1);
    assert_eq!(counters["gladia.reconnects_total"], 0);
    assert_eq!(
        after["histograms"]["db.batch_size"]["count"],
        counters["db.batches_written_total"]
    );
    assert_eq!(after["gauges"][gauge_key("ws.session_clients")], 2.0);
    assert!(
        after["gauges"][gauge_key("ws.session_broadcast_lag_ms")]
            .as_f64()
            .is_some_and(|lag| lag >= 0.0),
        "{after}"
    );

    let (content_type, text) = get_prometheus(&service).await;
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    let samples = parse_prometheus(&text);
    for (name, value) in counters.as_object().unwrap() {
        let prometheus_name = name.replace('.', "_");
        assert_eq!(
            samples.get(&prometheus_name).copied(),
            value.as_f64(),
            "{prometheus_name} in:\n{text}"
        );
    }
    assert_eq!(
        samples.get(&format!(r#"ws_session_clients{{sessionSlug="{SLUG}"}}"#)),
        Some(&2.0),
        "{text}"
    );
    assert_eq!(
        samples.get("gladia_stt_latency_ms_count"),
        Some(&(finals_sent as f64)),
        "{text}"
    );
    assert!(samples.contains_key(r#"gladia_stt_latency_ms{quantile="0.99"}"#));

    // The clients leave; the publish is over: the session retires and its series go.
    for client in &clients {
        client.close();
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let gone = loop {
        let (_, now) = service.get_json("/metrics").await;
        let gauges = now["gauges"].as_object().cloned().unwrap_or_default();
        if !gauges.keys().any(|k| k.contains(SLUG)) {
            break now;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the session's series outlived it: {now}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        gone["latencies"]["gladia.stt_latency_ms"]["count"],
        finals_sent
    );
    let (_, text) = get_prometheus(&service).await;
    assert!(!text.contains(SLUG), "{text}");
}
