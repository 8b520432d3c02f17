//! The offline `whisper` provider end to end (issue #6): espeak-ng speech published over RTMP
//! by FFmpeg → the real binary (GStreamer decode, voice-activity segmentation, Whisper tiny.en
//! through CTranslate2) → a real WebSocket client and a real database, with no Gladia key.
//!
//! Needs the model (scripts/install-whisper-model.sh, which scripts/run-tests.sh runs): with
//! CI=true a missing model fails these tests.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use mock_gladia::MockConfig;
use serde_json::Value;
use test_harness::*;

/// What [`make_speech`] says.
const SPOKEN: [&str; 4] = [
    "The weekly sync starts now.",
    "Revenue grew by twelve percent this quarter.",
    "Please send the report before Friday.",
    "Thank you everyone, see you next week.",
];

fn model_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("WHISPER_MODEL_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data/models/whisper-tiny.en")
        });
    if ["model.bin", "config.json", "tokenizer.json"]
        .iter()
        .all(|f| dir.join(f).is_file())
    {
        return Some(dir);
    }
    let message = format!(
        "no Whisper model in {}: run scripts/install-whisper-model.sh",
        dir.display()
    );
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{message}");
    }
    eprintln!("\n*** SKIPPING (not in CI): {message} ***\n");
    None
}

fn whisper_env(model: &Path, database_url: &str) -> Vec<(&'static str, String)> {
    vec![
        ("STT_PROVIDER", "whisper".to_owned()),
        ("WHISPER_MODEL_DIR", model.display().to_string()),
        ("DATABASE_URL", database_url.to_owned()),
    ]
}

/// The finals' texts joined, and their word error rate against what was spoken.
fn wer_of(finals: &[Value]) -> (f64, String) {
    let heard = finals
        .iter()
        .map(|f| f["text"].as_str().unwrap_or_default())
        .collect::<Vec<_>>()
        .join(" ");
    (
        whisper::wer::word_error_rate(&SPOKEN.join(" "), &heard),
        heard,
    )
}

/// Publishes `wav` to `slug` and waits for its finals on `client` (the publish is over and the
/// provider stream ended: the session went back to waiting after the reconnect grace).
async fn publish_and_collect(service: &Service, client: &WsClient, wav: &Path, slug: &str) {
    run_publisher(
        "ffmpeg",
        &ffmpeg_speech_args(wav, &service.rtmp_url(slug)),
        Duration::from_secs(90),
    )
    .await;
    assert!(
        wait_for_stream_end(client).await,
        "the publish did not end: {:?}",
        client.snapshot()
    );
}

/// After PUBLISHER_RECONNECT_GRACE_MS the provider stream ends; the status saying so comes
/// after its last final.
async fn wait_for_stream_end(client: &WsClient) -> bool {
    client
        .wait_until(Duration::from_secs(30), |m| {
            m.iter().any(|m| {
                m["type"] == "status"
                    && m["state"] == "waiting_for_egress"
                    && m["detail"]
                        .as_str()
                        .unwrap_or("")
                        .contains("transcription finished")
            })
        })
        .await
}

/// Checks the finals the client got are the ones stored, numbered 1..=n.
async fn assert_saved(database_url: &str, slug: &str, finals: &[Value]) {
    let stored =
        wait_for_stored_finals(database_url, slug, finals.len(), Duration::from_secs(10)).await;
    let got: Vec<(i64, String, String)> = finals
        .iter()
        .map(|f| {
            (
                f["seq"].as_i64().unwrap(),
                f["utteranceId"].as_str().unwrap().to_owned(),
                f["text"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let saved: Vec<(i64, String, String)> = stored
        .into_iter()
        .map(|s| (s.seq, s.utterance_id, s.text))
        .collect();
    assert_eq!(
        saved, got,
        "the database holds other finals than the client got"
    );
}

#[actix_rt::test]
async fn espeak_speech_becomes_partials_then_finals_and_is_saved() {
    let _serial = SERIAL.lock().await;
    let Some(model) = model_dir() else { return };
    if !require_tools(&["ffmpeg", "espeak-ng", "sox"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let database_url = sqlite_url(dir.path(), "whisper.db");
    let wav = make_speech(dir.path());
    let service = Service::start(realtime_core_bin!(), &whisper_env(&model, &database_url));
    let log = service.log();
    let line = log
        .lines()
        .find(|l| l.contains("speech-to-text provider: whisper"))
        .unwrap_or_else(|| panic!("no provider line; log:\n{log}"));
    assert!(line.contains("STT_PROVIDER=whisper"), "{line}");
    eprintln!("start-up: {line}");

    let slug = "whisper-sqlite";
    let client = WsClient::connect(&service, &format!("sessionSlug={slug}")).await;
    publish_and_collect(&service, &client, &wav, slug).await;

    let messages = client.snapshot();
    let final_ids = assert_transcript_stream_with(&messages, slug, false);
    let finals = client.finals();
    let partials: Vec<Value> = client
        .transcripts()
        .into_iter()
        .filter(|m| m["isFinal"] == false)
        .collect();
    let (wer, heard) = wer_of(&finals);
    eprintln!(
        "whisper: {} partials, {} finals, WER {wer:.3} against the spoken text; heard {heard:?}",
        partials.len(),
        finals.len()
    );
    assert!(
        (3..=6).contains(&finals.len()),
        "four sentences gave {} finals: {finals:?}",
        finals.len()
    );
    assert!(wer <= 0.4, "WER {wer:.3}: heard {heard:?}");
    // Partials came first: most utterances showed one before their final.
    let with_partial = final_ids
        .iter()
        .filter(|id| partials.iter().any(|p| p["utteranceId"] == id.as_str()))
        .count();
    assert!(
        with_partial * 2 >= final_ids.len() && !partials.is_empty(),
        "only {with_partial} of {} finals had partials",
        final_ids.len()
    );
    for f in &finals {
        assert_eq!(f["language"], "en", "{f}");
        let (start, end) = (
            f["startedAt"].as_i64().unwrap(),
            f["endedAt"].as_i64().unwrap(),
        );
        assert!(start < end && end - start < 10_000, "{f}");
    }
    assert_saved(&database_url, slug, &finals).await;

    let (status, body) = service.get_json("/api/sessions").await;
    assert_eq!(status, 200);
    let provider = &body["provider"];
    assert_eq!(provider["name"], "whisper", "{body}");
    assert!(
        provider["capacity"].as_u64().unwrap_or(0) >= 1,
        "{provider}"
    );
    assert_eq!(provider["capacityMeasured"], true, "{provider}");
    assert!(
        provider["decodes"].as_u64().unwrap_or(0) >= finals.len() as u64,
        "{provider}"
    );
    eprintln!("GET /api/sessions provider: {provider}");

    // docs/PROTOCOL.md#observability: the offline path has its own latency and counters next to Gladia's. Every
    // final the clients got was decoded as a final (a provisional one would be counted too).
    let (_, metrics) = service.get_json("/metrics").await;
    let decoded = metrics["counters"]["whisper.finals_total"].as_u64();
    assert!(
        decoded.is_some_and(|n| n >= finals.len() as u64),
        "whisper.finals_total {decoded:?} < {} finals: {metrics}",
        finals.len()
    );
    let latency = &metrics["latencies"]["whisper.stt_latency_ms"];
    assert_eq!(latency["count"].as_u64(), decoded, "{latency}");
    assert_eq!(metrics["counters"]["gladia.finals_total"], 0, "{metrics}");
    eprintln!("whisper.stt_latency_ms: {latency}");
}

/// The messages' shapes: which fields each kind of transcript message has.
fn shapes(messages: &[Value]) -> BTreeSet<(String, Vec<String>)> {
    messages
        .iter()
        .filter(|m| m["type"] == "transcript")
        .map(|m| {
            let kind = m["transcriptType"].as_str().unwrap_or("?").to_owned();
            // `language` is there only when the provider names one (the mock does not).
            let mut keys: Vec<String> = m
                .as_object()
                .unwrap()
                .keys()
                .filter(|k| k.as_str() != "language")
                .cloned()
                .collect();
            keys.sort();
            (kind, keys)
        })
        .collect()
}

/// The states the client was told, without repeats.
fn states(messages: &[Value]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for m in messages.iter().filter(|m| m["type"] == "status") {
        let state = m["state"].as_str().unwrap_or("?").to_owned();
        if out.last() != Some(&state) {
            out.push(state);
        }
    }
    out
}

struct Run {
    messages: Vec<Value>,
    finals: Vec<Value>,
    stored: Vec<StoredFinal>,
    api: Value,
}

async fn run_provider(env: Vec<(&'static str, String)>, database_url: &str, wav: &Path) -> Run {
    let service = Service::start(realtime_core_bin!(), &env);
    let slug = "parity";
    let client = WsClient::connect(&service, &format!("sessionSlug={slug}")).await;
    publish_and_collect(&service, &client, wav, slug).await;
    let finals = client.finals();
    assert_saved(database_url, slug, &finals).await;
    let (status, api) = service
        .get_json(&format!("/api/sessions/{slug}/transcripts"))
        .await;
    assert_eq!(status, 200);
    Run {
        messages: client.snapshot(),
        stored: stored_finals(database_url, slug),
        finals,
        api,
    }
}

#[actix_rt::test]
async fn the_same_audio_through_gladia_and_whisper_behaves_the_same_downstream() {
    let _serial = SERIAL.lock().await;
    let Some(model) = model_dir() else { return };
    if !require_tools(&["ffmpeg", "espeak-ng", "sox"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let wav = make_speech(dir.path());

    let mock = start_mock_with(MockConfig {
        api_key: "parity-key".into(),
        ..MockConfig::default()
    });
    let gladia_db = sqlite_url(dir.path(), "gladia.db");
    let gladia = run_provider(mock.service_env(&gladia_db), &gladia_db, &wav).await;
    let whisper_db = sqlite_url(dir.path(), "whisper.db");
    let whisper = run_provider(whisper_env(&model, &whisper_db), &whisper_db, &wav).await;

    for (name, run) in [("gladia", &gladia), ("whisper", &whisper)] {
        let finals = assert_transcript_stream_with(&run.messages, "parity", false);
        assert!(finals.len() >= 3, "{name}: {} finals", finals.len());
        // seq 1..=n on the socket, in the database and from the API alike.
        let seqs: Vec<i64> = run
            .finals
            .iter()
            .map(|f| f["seq"].as_i64().unwrap())
            .collect();
        assert_eq!(
            seqs,
            (1..=finals.len() as i64).collect::<Vec<_>>(),
            "{name}"
        );
        assert_eq!(
            run.stored.iter().map(|s| s.seq).collect::<Vec<_>>(),
            seqs,
            "{name}"
        );
        let api: Vec<i64> = run.api["transcripts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["seq"].as_i64().unwrap())
            .collect();
        assert_eq!(api, seqs, "{name}");
    }
    assert_eq!(
        shapes(&gladia.messages),
        shapes(&whisper.messages),
        "the transcript messages differ in shape"
    );
    assert_eq!(
        states(&gladia.messages),
        states(&whisper.messages),
        "the session went through other states"
    );
    let api_keys = |run: &Run| -> BTreeSet<String> {
        run.api["transcripts"][0]
            .as_object()
            .map(|o| o.keys().cloned().collect())
            .unwrap_or_default()
    };
    assert_eq!(api_keys(&gladia), api_keys(&whisper));
    let (wer, heard) = wer_of(&whisper.finals);
    eprintln!(
        "parity: gladia mock {} finals, whisper {} finals (WER {wer:.3}: {heard:?}); states {:?}",
        gladia.finals.len(),
        whisper.finals.len(),
        states(&whisper.messages)
    );
}

#[actix_rt::test]
async fn sessions_beyond_the_measured_capacity_are_refused_and_admitted_ones_stay_real_time() {
    let _serial = SERIAL.lock().await;
    let Some(model) = model_dir() else { return };
    if !require_tools(&["ffmpeg", "espeak-ng", "sox"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let database_url = sqlite_url(dir.path(), "capacity.db");
    let wav = make_speech(dir.path());
    let service = Service::start(realtime_core_bin!(), &whisper_env(&model, &database_url));
    let (_, body) = service.get_json("/api/sessions").await;
    let provider = body["provider"].clone();
    let capacity = provider["capacity"].as_u64().expect("capacity reported") as usize;
    assert_eq!(provider["capacityMeasured"], true, "{provider}");
    let rss_idle = rss_kib(service.pid());
    eprintln!("measured: {}", provider["measured"]);

    // `capacity` sessions publish the speech at once.
    let clients: Vec<(String, WsClient)> = futures_util::future::join_all((0..capacity).map(|i| {
        let slug = format!("admitted-{i}");
        let service = &service;
        async move {
            let client = WsClient::connect(service, &format!("sessionSlug={slug}")).await;
            (slug, client)
        }
    }))
    .await;
    let publishers: Vec<_> = clients
        .iter()
        .map(|(slug, _)| {
            let args = ffmpeg_speech_args(&wav, &service.rtmp_url(slug));
            actix_rt::spawn(
                async move { run_publisher("ffmpeg", &args, Duration::from_secs(90)).await },
            )
        })
        .collect();
    for (slug, client) in &clients {
        let live = client
            .wait_until(Duration::from_secs(20), |m| {
                m.iter()
                    .any(|m| m["type"] == "status" && m["state"] == "live")
            })
            .await;
        assert!(live, "{slug} did not go live: {:?}", client.snapshot());
    }
    let active = wait_for_active(&service, capacity).await;
    assert_eq!(active, capacity, "admitted sessions");
    let rss_busy = rss_kib(service.pid());

    // One more: refused over RTMP, told to its clients, refused by the start route.
    let extra = "one-too-many";
    let watcher = WsClient::connect(&service, &format!("sessionSlug={extra}")).await;
    let stderr = run_refused_publisher(
        "ffmpeg",
        &ffmpeg_speech_args(&wav, &service.rtmp_url(extra)),
        Duration::from_secs(30),
    )
    .await;
    eprintln!(
        "ffmpeg beyond capacity: {}",
        stderr.lines().last().unwrap_or("")
    );
    let told = watcher
        .wait_until(Duration::from_secs(5), |m| {
            m.iter().any(|m| {
                m["type"] == "status"
                    && m["state"] == "error"
                    && m["detail"]
                        .as_str()
                        .unwrap_or("")
                        .contains("capacity reached")
            })
        })
        .await;
    assert!(told, "no capacity status: {:?}", watcher.snapshot());
    let (_, metrics) = service.get_json("/metrics").await;
    assert!(
        metrics["counters"]["whisper.refused_sessions_total"]
            .as_u64()
            .is_some_and(|n| n >= 1),
        "the refused publish is not counted: {metrics}"
    );
    let (status, refusal) = service
        .post_json("/api/sessions/another-one/transcription", Value::Null)
        .await;
    assert_eq!(
        (status, refusal["error"].as_str()),
        (503, Some("stt_capacity_reached")),
        "{refusal}"
    );
    assert!(watcher.transcripts().is_empty());

    // The admitted sessions keep up: every final arrives soon after its speech ended.
    for publisher in publishers {
        publisher.await.expect("publisher task");
    }
    let mut latencies = Vec::new();
    for (slug, client) in &clients {
        assert!(wait_for_stream_end(client).await, "{slug} did not end");
        let finals = client.finals();
        let (wer, heard) = wer_of(&finals);
        eprintln!("{slug}: {} finals, WER {wer:.3}: {heard:?}", finals.len());
        assert!(
            finals.len() >= 3 && wer <= 0.4,
            "{slug}: WER {wer:.3}, {heard:?}"
        );
        // The last final ends only with the stream (after the reconnect grace): leave it out.
        for f in &finals[..finals.len() - 1] {
            latencies.push(f["ts"].as_i64().unwrap() - f["endedAt"].as_i64().unwrap());
        }
    }
    latencies.sort_unstable();
    let max = *latencies.last().expect("finals");
    eprintln!(
        "capacity {capacity}: final latency after the end of speech (endpoint silence included) median {} ms, max {max} ms; resident memory idle {} MiB, with {capacity} session(s) {} MiB",
        latencies[latencies.len() / 2],
        rss_idle / 1024,
        rss_busy / 1024
    );
    // Real time: a final waits at most for the pause that ends its utterance, a partial decode
    // already running and its own decode (both as measured at start-up), plus 1 s of slack.
    let decode_ms = provider["measured"]["decodeMs"].as_i64().unwrap();
    let bound = 600 + 2 * decode_ms + 1_000;
    eprintln!("latency bound {bound} ms (decode {decode_ms} ms)");
    assert!(
        max <= bound,
        "finals fell behind: {latencies:?} ms, bound {bound} ms"
    );
    // The places are free again.
    assert_eq!(wait_for_active(&service, 0).await, 0);
}

/// Waits until the provider reports `want` active sessions (or 10 s); returns the last count.
async fn wait_for_active(service: &Service, want: usize) -> usize {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, body) = service.get_json("/api/sessions").await;
        let active = body["provider"]["activeSessions"].as_u64().unwrap_or(0) as usize;
        if active == want || Instant::now() > deadline {
            return active;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}
