//! Graceful shutdown (issue #4, docs/PROTOCOL.md#shutdown): SIGTERM in the middle of speech sends the provider
//! its stop, delivers and saves the trailing finals, closes clients with 1001 and exits 0.

use std::process::Stdio;
use std::time::{Duration, Instant};

use test_harness::*;

/// SIGTERM must be done within this: the provider's stop wait plus the database flush.
const SHUTDOWN_BOUND: Duration = Duration::from_secs(60);

#[actix_rt::test]
async fn sigterm_mid_speech_delivers_and_saves_every_final_then_exits_0() {
    let _serial = SERIAL.lock().await;
    if !require_tools(&["ffmpeg", "espeak-ng", "sox"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mock = start_mock();
    let database = sqlite_url(dir.path(), "r.db");
    let mut service = Service::start(
        realtime_core_bin!(),
        &[
            mock.service_env(&database),
            vec![
                // Longer than the test: only the shutdown flush can save the finals.
                ("TRANSCRIPT_BATCH_DELAY_MS", "600000".to_owned()),
                ("TRANSCRIPT_BATCH_SIZE", "1000".to_owned()),
            ],
        ]
        .concat(),
    );
    let slug = "shutdown";
    let client = WsClient::connect(&service, &format!("sessionSlug={slug}")).await;
    let wav = make_speech(dir.path());
    // The publisher is cut off by the shutdown, so its exit status is not checked.
    let mut publisher = tokio::process::Command::new("ffmpeg")
        .args(ffmpeg_speech_args(&wav, &service.rtmp_url(slug)))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("ffmpeg starts");

    // Mid-speech: one final done and the next utterance under way.
    let mid_speech = client
        .wait_until(Duration::from_secs(30), |m| {
            let finals = m.iter().filter(|m| m["isFinal"] == true).count();
            let last = m.iter().rev().find(|m| m["type"] == "transcript");
            finals >= 1 && last.is_some_and(|m| m["isFinal"] == false)
        })
        .await;
    assert!(mid_speech, "no speech yet: {:?}", client.snapshot());
    let finals_before = client.finals().len();

    let signalled = Instant::now();
    service.signal("TERM");
    let status = service.wait_exit(SHUTDOWN_BOUND).await;
    let took = signalled.elapsed();
    let status = status.unwrap_or_else(|| panic!("still running {SHUTDOWN_BOUND:?} after SIGTERM"));
    assert_eq!(
        status.code(),
        Some(0),
        "exit status {status}; log:\n{}",
        service.log()
    );
    let _ = publisher.kill().await;

    // The provider got its stop and finished the utterance in progress.
    let sessions = mock.sessions();
    assert_eq!(sessions.len(), 1);
    assert!(sessions[0].stop_received, "no stop_recording sent");
    assert!(sessions[0].closed_with_1000);
    let provider_finals: Vec<String> = sessions[0]
        .finals_sent
        .iter()
        .map(|f| f.text.trim().to_owned())
        .collect();
    assert!(
        provider_finals.len() > finals_before,
        "no trailing final after the stop ({} before)",
        finals_before
    );

    // The client got every final, then a 1001 close.
    let close = client.wait_closed(Duration::from_secs(5)).await;
    assert_eq!(close.as_ref().map(|c| c.0), Some(1001), "close: {close:?}");
    let finals = client.finals();
    let texts: Vec<String> = finals
        .iter()
        .map(|f| f["text"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(texts, provider_finals, "the client misses finals");

    // Every final saved, by the shutdown flush.
    let stored = stored_finals(&database, slug);
    let stored_texts: Vec<String> = stored.iter().map(|f| f.text.clone()).collect();
    assert_eq!(
        stored_texts, provider_finals,
        "finals missing from the database"
    );
    assert_eq!(
        stored.iter().map(|f| f.seq).collect::<Vec<_>>(),
        (1..=provider_finals.len() as i64).collect::<Vec<_>>()
    );
    eprintln!(
        "SIGTERM → exit 0 in {took:?}; {} finals delivered and saved ({} after the signal)",
        provider_finals.len(),
        provider_finals.len() - finals_before
    );
}
