//! Provider faults during a real publish (issue #4): the mock provider drops the WebSocket at
//! random moments, closes with 44xx, or reaches its session limit, and nothing is lost.

#[path = "../pipelines/tests/support/mod.rs"]
mod pipeline_support;

use std::time::{Duration, Instant};

use mock_gladia::MockConfig;
use rand::Rng;
use test_harness::*;

/// What our decoder makes of the file's AAC frames when fed directly: the bytes the provider
/// must receive, each exactly once and in order.
fn direct_decode(flv: &std::path::Path) -> Vec<u8> {
    let stream = pipeline_support::decode::audio_stream(flv);
    let decoded = pipeline_support::decode::decode(&stream.config, &stream.frames);
    assert!(
        matches!(decoded.terminal, pipelines::DecoderEvent::Finished),
        "direct decode failed: {:?}",
        decoded.terminal
    );
    decoded.pcm
}

fn first_difference(a: &[u8], b: &[u8]) -> Option<usize> {
    a.iter().zip(b).position(|(x, y)| x != y)
}

#[actix_rt::test]
async fn ten_random_provider_drops_lose_no_audio_byte_and_no_final() {
    let _serial = SERIAL.lock().await;
    if !require_tools(&["ffmpeg", "espeak-ng", "sox"])
        || !pipeline_support::tools::tools_available()
    {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let wav = make_long_speech(dir.path(), 60.0);
    let flv = dir.path().join("speech.flv");
    encode_flv(&wav, &flv);
    let expected_pcm = direct_decode(&flv);
    let publish_s = expected_pcm.len() as f64 / 32_000.0;
    assert!(publish_s >= 59.0, "speech too short: {publish_s:.1} s");

    let mock = start_mock();
    let database = sqlite_url(dir.path(), "r.db");
    let service = Service::start(realtime_core_bin!(), &mock.service_env(&database));
    let slug = "provider-drops";
    let client = WsClient::connect(&service, &format!("sessionSlug={slug}")).await;
    let args = ffmpeg_copy_args(&flv, &service.rtmp_url(slug));
    let started = Instant::now();
    let publisher = actix_rt::spawn(async move {
        run_publisher("ffmpeg", &args, Duration::from_secs(150)).await;
    });

    // Ten moments spread at random over the publish, at least 1 s apart.
    let mut rng = rand::rng();
    let mut moments: Vec<f64> = Vec::new();
    while moments.len() < 10 {
        let at = rng.random_range(2.0..publish_s - 3.0);
        if moments.iter().all(|m| (m - at).abs() >= 1.0) {
            moments.push(at);
        }
    }
    moments.sort_by(f64::total_cmp);
    eprintln!("dropping the provider socket at {moments:.2?} s");
    let codes = [1001u16, 1011, 1012, 1013];
    for (k, at) in moments.iter().enumerate() {
        // The previous drop must have been resumed before the next one means anything.
        let resumed = mock
            .wait_for(Duration::from_secs(20), |s| {
                s.len() == 1 && s[0].ws_connections as usize > k
            })
            .await;
        assert!(
            resumed,
            "connection {} never came back: {:?}",
            k + 1,
            mock.sessions().len()
        );
        let due = started + Duration::from_secs_f64(*at);
        tokio::time::sleep_until(due.into()).await;
        let id = mock.sessions()[0].id.clone();
        let code = codes[rng.random_range(0..codes.len())];
        assert!(
            mock.drop_connection(&id, code).await,
            "no socket to drop at {at:.2} s"
        );
    }

    publisher.await.unwrap();
    mock.assert_one_session_closed(&service, Duration::from_secs(60))
        .await;
    let sessions = mock.sessions();
    assert_eq!(
        sessions.len(),
        1,
        "drops must resume the same provider session"
    );
    let session = &sessions[0];
    assert_eq!(session.ws_connections, 11, "ten drops, ten resumes");

    // Every audio byte exactly once and in order.
    let received = &session.pcm;
    assert!(
        received.as_slice() == expected_pcm.as_slice(),
        "the provider received {} bytes, the direct decode has {}; first difference at byte {:?}",
        received.len(),
        expected_pcm.len(),
        first_difference(received, &expected_pcm)
    );

    // Every final the provider sent reached the client, once, in order, numbered 1..n.
    let expected_finals: Vec<String> = session
        .finals_sent
        .iter()
        .map(|f| f.text.trim().to_owned())
        .collect();
    assert!(
        expected_finals.len() >= 10,
        "too few finals: {}",
        expected_finals.len()
    );
    let all = client
        .wait_until(Duration::from_secs(15), |m| {
            m.iter().filter(|m| m["isFinal"] == true).count() >= expected_finals.len()
        })
        .await;
    assert!(all, "finals missing at the client");
    let finals = client.finals();
    let texts: Vec<String> = finals
        .iter()
        .map(|f| f["text"].as_str().unwrap_or("").to_owned())
        .collect();
    assert_eq!(texts, expected_finals);
    let seqs: Vec<i64> = finals.iter().map(|f| f["seq"].as_i64().unwrap()).collect();
    assert_eq!(seqs, (1..=expected_finals.len() as i64).collect::<Vec<_>>());
    eprintln!(
        "{} drops, {} bytes byte-identical, {} finals delivered",
        moments.len(),
        received.len(),
        finals.len()
    );
}

/// `(offset, len)` of each provider session's audio inside the direct decode: every session
/// must hold one contiguous stretch of the source, exactly.
fn locate_sessions(
    expected: &[u8],
    sessions: &[mock_gladia::SessionRecord],
) -> Vec<(usize, usize)> {
    sessions
        .iter()
        .map(|s| {
            let probe = &s.pcm[..s.pcm.len().min(6400)];
            assert!(probe.len() >= 640, "session {} got almost no audio", s.id);
            let offset = expected
                .windows(probe.len())
                .step_by(2)
                .position(|w| w == probe)
                .map(|i| i * 2)
                .unwrap_or_else(|| panic!("session {}'s audio is not in the source", s.id));
            assert!(
                expected[offset..].starts_with(&s.pcm),
                "session {} does not hold one contiguous stretch of the source",
                s.id
            );
            (offset, s.pcm.len())
        })
        .collect()
}

/// The mock's final text says how long the utterance lasted: "utterance N lasting X seconds".
fn lasting_seconds(text: &str) -> f64 {
    text.split_whitespace()
        .nth(3)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("unexpected mock text {text:?}"))
}

#[actix_rt::test]
async fn a_44xx_close_and_the_session_limit_continue_on_fresh_sessions_without_losing_speech() {
    let _serial = SERIAL.lock().await;
    if !require_tools(&["ffmpeg", "espeak-ng", "sox"])
        || !pipeline_support::tools::tools_available()
    {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // Each copy of the speech is four sentences; the mock makes one utterance of each.
    let one_copy_utterances = [1.74, 2.68, 2.24, 2.40];
    let wav = make_long_speech(dir.path(), 36.0);
    let flv = dir.path().join("speech.flv");
    encode_flv(&wav, &flv);
    let expected_pcm = direct_decode(&flv);

    let mock = start_mock();
    let database = sqlite_url(dir.path(), "r.db");
    let service = Service::start(
        realtime_core_bin!(),
        &[
            mock.service_env(&database),
            vec![("GLADIA_MAX_SESSION_SECS", "12".to_owned())],
        ]
        .concat(),
    );
    let slug = "provider-rollover";
    let client = WsClient::connect(&service, &format!("sessionSlug={slug}")).await;
    let args = ffmpeg_copy_args(&flv, &service.rtmp_url(slug));
    let publisher = actix_rt::spawn(async move {
        run_publisher("ffmpeg", &args, Duration::from_secs(120)).await;
    });

    // A 44xx close in the middle of an utterance, a few seconds in.
    let mid_utterance = client
        .wait_until(Duration::from_secs(30), |m| {
            let partials = m.iter().filter(|m| m["isFinal"] == false).count();
            let last_is_partial = m
                .iter()
                .rev()
                .find(|m| m["type"] == "transcript")
                .is_some_and(|m| m["isFinal"] == false);
            partials >= 8 && last_is_partial
        })
        .await;
    assert!(mid_utterance, "no partials: {:?}", client.snapshot());
    let id = mock.sessions()[0].id.clone();
    assert!(mock.drop_connection(&id, 4408).await, "no socket to close");

    publisher.await.unwrap();
    let ended = mock
        .wait_for(Duration::from_secs(60), |s| {
            s.last()
                .is_some_and(|last| last.stop_received && last.closed_with_1000)
        })
        .await;
    assert!(
        ended,
        "the last provider session did not end after the publish"
    );
    let sessions = mock.sessions();
    // One after the 44xx, then one per ~11 s (90–97 % of the 12 s limit).
    assert!(
        sessions.len() >= 4,
        "only {} provider sessions",
        sessions.len()
    );

    // No lost speech: the sessions' audio covers the source without a gap.
    let spans = locate_sessions(&expected_pcm, &sessions);
    eprintln!(
        "provider sessions hold (offset, bytes) {spans:?} of {} bytes",
        expected_pcm.len()
    );
    assert_eq!(spans[0].0, 0, "the first session starts at the first byte");
    for pair in spans.windows(2) {
        let ((a, a_len), (b, _)) = (pair[0], pair[1]);
        assert!(
            b <= a + a_len,
            "gap of {} bytes between sessions",
            b - (a + a_len)
        );
    }
    let (last, last_len) = spans[spans.len() - 1];
    assert_eq!(
        last + last_len,
        expected_pcm.len(),
        "the tail of the audio is missing"
    );

    // No utterance cut in two or heard twice: one final per sentence, each as long as the
    // sentence, numbered 1..n.
    let sentences = expected_pcm.len() as f64 / 32_000.0 / 12.38 * 4.0;
    let expected_finals = (sentences.round() as usize / 4) * 4;
    let all = client
        .wait_until(Duration::from_secs(15), |m| {
            m.iter().filter(|m| m["isFinal"] == true).count() >= expected_finals
        })
        .await;
    let finals = client.finals();
    assert!(all, "{} finals, expected {expected_finals}", finals.len());
    assert_eq!(finals.len(), expected_finals, "{finals:#?}");
    for (i, f) in finals.iter().enumerate() {
        let got = lasting_seconds(f["text"].as_str().unwrap());
        let want = one_copy_utterances[i % 4];
        assert!(
            (got - want).abs() <= 0.2,
            "final {} lasts {got} s, the sentence {want} s: cut by a rollover? {f}",
            i + 1
        );
        assert_eq!(f["seq"], i as i64 + 1);
        assert!(f.get("provisional").is_none());
    }
    // An utterance that crossed a rollover kept its id: every partial shown became a final.
    let final_ids: std::collections::HashSet<&str> = finals
        .iter()
        .filter_map(|f| f["utteranceId"].as_str())
        .collect();
    let snapshot = client.transcripts();
    let dangling: Vec<&str> = snapshot
        .iter()
        .filter(|m| m["isFinal"] == false)
        .filter_map(|m| m["utteranceId"].as_str())
        .filter(|id| !final_ids.contains(id))
        .collect();
    assert!(
        dangling.is_empty(),
        "partials never finalized: {dangling:?}"
    );

    let stored =
        wait_for_stored_finals(&database, slug, expected_finals, Duration::from_secs(10)).await;
    let stored_seqs: Vec<i64> = stored.iter().map(|f| f.seq).collect();
    assert_eq!(
        stored_seqs,
        (1..=expected_finals as i64).collect::<Vec<_>>()
    );
}

#[actix_rt::test]
async fn a_draft_the_provider_never_finalizes_becomes_a_provisional_final() {
    let _serial = SERIAL.lock().await;
    if !require_tools(&["ffmpeg", "espeak-ng", "sox"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // The speech, cut in the middle of its last sentence.
    let full = make_speech(dir.path());
    let wav = dir.path().join("cut.wav");
    let status = std::process::Command::new("sox")
        .arg(&full)
        .arg(&wav)
        .args(["trim", "0", "-1.2"])
        .status()
        .unwrap();
    assert!(status.success());

    let mock = start_mock_with(MockConfig {
        drop_open_utterance_on_stop: true,
        ..MockConfig::default()
    });
    let database = sqlite_url(dir.path(), "r.db");
    let service = Service::start(
        realtime_core_bin!(),
        &[
            mock.service_env(&database),
            vec![
                // The stream ends with the publish, mid-sentence (no silence to end the utterance).
                ("PUBLISHER_RECONNECT_GRACE_MS", "0".to_owned()),
            ],
        ]
        .concat(),
    );
    let slug = "provisional";
    let client = WsClient::connect(&service, &format!("sessionSlug={slug}")).await;
    let args = ffmpeg_speech_args(&wav, &service.rtmp_url(slug));
    run_publisher("ffmpeg", &args, Duration::from_secs(60)).await;

    mock.assert_one_session_closed(&service, Duration::from_secs(30))
        .await;
    let provider_finals = mock.sessions()[0].finals_sent.len();
    assert_eq!(
        provider_finals, 3,
        "the mock should finalize three of the four sentences"
    );
    let got = client
        .wait_until(Duration::from_secs(15), |m| {
            m.iter().filter(|m| m["isFinal"] == true).count() == provider_finals + 1
        })
        .await;
    let finals = client.finals();
    assert!(got, "no provisional final: {finals:#?}");
    let provisional = &finals[provider_finals];
    assert_eq!(provisional["provisional"], true, "{provisional}");
    assert_eq!(provisional["seq"], provider_finals as i64 + 1);
    // The provisional final carries the provider's last partial. The client may not have seen
    // that partial itself: a partial still queued when its utterance's final arrives is dropped
    // (never a partial after its final), so compare with what the mock sent.
    let last_sent = mock.sessions()[0]
        .partials_sent
        .last()
        .cloned()
        .expect("the mock sent partials");
    assert_eq!(
        provisional["text"].as_str(),
        Some(last_sent.text.trim_start())
    );
    let client_partial = client
        .transcripts()
        .into_iter()
        .rev()
        .find(|m| m["isFinal"] == false)
        .expect("partials");
    assert_eq!(provisional["utteranceId"], client_partial["utteranceId"]);
    assert!(finals[..provider_finals]
        .iter()
        .all(|f| f.get("provisional").is_none()));

    // Saved like any final.
    let saved = wait_for_stored_finals(
        &database,
        slug,
        provider_finals + 1,
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(saved.len(), provider_finals + 1);
    assert_eq!(
        saved.last().map(|f| f.text.as_str()),
        provisional["text"].as_str()
    );
}
