//! docs/PROTOCOL.md#resume-and-delivery-guarantees under load: one client stops reading (its TCP receive window fills) while the
//! session pushes 100,000 partials and 2,000 finals. The server's memory stays bounded, the
//! other clients keep receiving with p99 latency within 2x of a run without the slow client,
//! the slow client is closed with 1013 `slow_consumer`, and when it reconnects with `lastSeq`
//! it receives every final exactly once and in order.
//!
//! In-process: the real actor tree and HTTP routes, real sockets, an in-memory store.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ::actors::client::ClientSettings;
use ::actors::messages::{now_ms, TranscriptEvent};
use ::actors::metrics::counter_value;
use ::actors::metrics::names::WS_SLOW_CONSUMER_CLOSES_TOTAL;
use ::actors::persistence::memory::MemoryStorage;
use ::actors::persistence::StorageError;
use ::actors::registry::{GetOrCreateSession, SessionRegistry};
use ::actors::settings::{SessionContext, SessionSettings};
use ::actors::supervisor::GetBroadcast;
use actix::prelude::*;
use actix_web::{web, App, HttpServer};
use futures_util::StreamExt;
use realtime_core::db::Ping;
use realtime_core::http::{routes, AppState};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const PARTIALS: usize = 100_000;
const FINALS: usize = 2_000;
const MAX_QUEUED_FINALS: usize = 200;
const FAST_CLIENTS: usize = 3;
/// Big enough that the finals alone (2,000 x 2 KB) overflow any kernel socket buffer, so the
/// stalled client's window fills however the partials coalesce on a busy machine.
const FINAL_TEXT_BYTES: usize = 2048;

/// The database-only endpoints the routes hold (readiness, the AI lock), answered without one;
/// the finals themselves go to `MemoryStorage`.
struct NoDatabase;
impl Actor for NoDatabase {
    type Context = Context<Self>;
}
impl Handler<Ping> for NoDatabase {
    type Result = Result<(), StorageError>;
    fn handle(&mut self, _: Ping, _: &mut Self::Context) -> Self::Result {
        Ok(())
    }
}

impl Handler<realtime_core::db::AcquireAiLock> for NoDatabase {
    type Result = Result<realtime_core::db::AiLockState, StorageError>;
    fn handle(
        &mut self,
        _: realtime_core::db::AcquireAiLock,
        _: &mut Self::Context,
    ) -> Self::Result {
        Err(StorageError("not used here".into()))
    }
}
impl Handler<realtime_core::db::ReleaseAiLock> for NoDatabase {
    type Result = Result<bool, StorageError>;
    fn handle(
        &mut self,
        _: realtime_core::db::ReleaseAiLock,
        _: &mut Self::Context,
    ) -> Self::Result {
        Err(StorageError("not used here".into()))
    }
}

struct Server {
    addr: std::net::SocketAddr,
    registry: Addr<SessionRegistry>,
}

fn start_server() -> Server {
    // The cut-off is watched through the `ws.slow_consumer_closes_total` counter.
    ::actors::metrics::install();
    let (_, storage) = MemoryStorage::default().start_storage();
    let store = NoDatabase.start();
    let settings = SessionSettings {
        rtmp_url_base: "rtmp://localhost:1937/live/".into(),
        provider: None,
        pcm_chunk_ms: 100,
        pcm_flush_ms: 50,
        active_speaker_ttl: Duration::from_secs(3),
        publisher_reconnect_grace: Duration::ZERO,
        decoder_max_restarts: 5,
        max_sessions: 10,
        max_clients_per_session: 100,
        stream_key_issuer: ::actors::stream_keys::slug_as_key(),
        relay: None,
        relayed_session_idle: Duration::from_secs(60),
        cluster: None,
    };
    let registry = SessionRegistry::new(SessionContext {
        settings: Arc::new(settings),
        storage: storage.clone(),
    })
    .start();
    let state = AppState {
        registry: registry.clone(),
        storage,
        db_ping: store.clone().recipient(),
        ai_locks: realtime_core::http::AiLocks {
            acquire: store.clone().recipient(),
            release: store.recipient(),
        },
        client_settings: ClientSettings {
            max_queued_finals: MAX_QUEUED_FINALS,
            ping_interval: Duration::from_secs(30),
            max_missed_pongs: 3,
        },
        broadcast_secret: None,
        speaker_limits: Default::default(),
        auth: realtime_core::auth::Authenticator::new(None),
        cluster: None,
    };
    let auth = realtime_core::auth::Authenticator::new(None);
    let server = HttpServer::new(move || {
        App::new()
            .wrap(realtime_core::http::RequireToken::new(auth.clone()))
            .app_data(web::Data::new(state.clone()))
            .configure(routes)
    })
    .workers(1)
    .bind(("127.0.0.1", 0))
    .unwrap();
    let addr = server.addrs()[0];
    actix_rt::spawn(server.run());
    Server { addr, registry }
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Send instants of every event, by (utterance id, is_final): latency is measured on one clock.
type SentAt = Arc<Mutex<HashMap<(String, bool), Instant>>>;

/// A fast client: reads everything, records each message's delivery latency.
async fn fast_client(
    addr: std::net::SocketAddr,
    slug: &str,
    sent: SentAt,
) -> actix_rt::task::JoinHandle<(Vec<Duration>, Vec<i64>)> {
    let url = format!("ws://{addr}/api/realtime/transcribe?sessionSlug={slug}");
    let (_, mut framed) = awc::Client::new().ws(url).connect().await.unwrap();
    actix_rt::spawn(async move {
        let mut latencies = Vec::new();
        let mut finals = Vec::new();
        while let Some(Ok(frame)) = framed.next().await {
            if let awc::ws::Frame::Text(text) = frame {
                let now = Instant::now();
                let m: serde_json::Value = serde_json::from_slice(&text).unwrap();
                if m["type"] != "transcript" {
                    if m["type"] == "status" && m["detail"] == "load-test-done" {
                        break;
                    }
                    continue;
                }
                let key = (
                    m["utteranceId"].as_str().unwrap().to_owned(),
                    m["isFinal"] == true,
                );
                if let Some(at) = sent.lock().unwrap().get(&key) {
                    latencies.push(now.duration_since(*at));
                }
                if m["isFinal"] == true {
                    finals.push(m["seq"].as_i64().unwrap());
                }
            }
        }
        (latencies, finals)
    })
}

/// A client that upgrades, then never reads: with a 4 KiB receive buffer its window fills fast.
async fn stalled_client(addr: std::net::SocketAddr, slug: &str) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stream = socket.connect(addr).await.unwrap();
    let request = format!(
        "GET /api/realtime/transcribe?sessionSlug={slug} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    // Read exactly the response head; anything after it stays unread in the socket.
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        stream.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    stream
}

/// The stalled client's frames and close code, read once the server has cut it off.
type StalledDrain = tokio::sync::oneshot::Receiver<(Vec<serde_json::Value>, Option<u16>, String)>;

/// Reads the rest of a stalled client's socket: its text frames and the close code. Blocking,
/// on its own thread: the test's runtime is busy pushing the load, and a reader that only runs
/// between those pushes would be too slow to take the close frame within the server's 10 s.
fn drain_frames(stream: std::net::TcpStream) -> (Vec<serde_json::Value>, Option<u16>, String) {
    use std::io::Read;
    let mut stream = stream;
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let mut bytes = Vec::new();
    let started = Instant::now();
    let outcome = stream.read_to_end(&mut bytes).map_err(|e| e.kind());
    eprintln!(
        "stalled client drained {} bytes in {:?}: {outcome:?}",
        bytes.len(),
        started.elapsed(),
    );
    let (mut frames, mut close, mut reason) = (Vec::new(), None, String::new());
    let mut at = 0;
    while at + 2 <= bytes.len() {
        let opcode = bytes[at] & 0x0f;
        let mut len = (bytes[at + 1] & 0x7f) as usize;
        let mut header = 2;
        if len == 126 {
            len = u16::from_be_bytes([bytes[at + 2], bytes[at + 3]]) as usize;
            header = 4;
        } else if len == 127 {
            len = u64::from_be_bytes(bytes[at + 2..at + 10].try_into().unwrap()) as usize;
            header = 10;
        }
        if at + header + len > bytes.len() {
            break;
        }
        let payload = &bytes[at + header..at + header + len];
        match opcode {
            0x1 => frames.push(serde_json::from_slice(payload).unwrap()),
            0x8 if payload.len() >= 2 => {
                close = Some(u16::from_be_bytes([payload[0], payload[1]]));
                reason = String::from_utf8_lossy(&payload[2..]).into_owned();
            }
            _ => {}
        }
        at += header + len;
    }
    (frames, close, reason)
}

fn partial(utterance: usize, text_len: usize) -> TranscriptEvent {
    TranscriptEvent {
        utterance_id: format!("u{utterance}"),
        text: "x".repeat(text_len),
        is_final: false,
        started_at_ms: now_ms(),
        ended_at_ms: now_ms(),
        language: Some("en".into()),
        provider_speaker: None,
        received_at: Instant::now(),
        provisional: false,
    }
}

/// Pushes the load: 50 partials per utterance, then its final; paced in batches so the test
/// measures the server, not a queue in front of it.
async fn push_load(broadcast: &Addr<::actors::broadcast::BroadcastActor>, sent: &SentAt) {
    let partials_per_final = PARTIALS / FINALS;
    for utterance in 0..FINALS {
        for i in 0..partials_per_final {
            let event = partial(utterance, 500 + i);
            sent.lock()
                .unwrap()
                .insert((event.utterance_id.clone(), false), Instant::now());
            broadcast.do_send(event);
        }
        let mut event = partial(utterance, FINAL_TEXT_BYTES);
        event.is_final = true;
        sent.lock()
            .unwrap()
            .insert((event.utterance_id.clone(), true), Instant::now());
        broadcast.do_send(event);
        if utterance % 20 == 19 {
            // A round trip through the mailbox: at most ~1000 events wait at any time.
            broadcast
                .send(::actors::broadcast::RemoveClient {
                    id: ::actors::messages::ClientId(u64::MAX),
                })
                .await
                .unwrap();
        }
    }
    broadcast
        .send(::actors::broadcast::BroadcastStatus {
            state: ::actors::messages::SessionState::Live,
            detail: "load-test-done".into(),
        })
        .await
        .unwrap();
}

/// Asserts `seqs` is exactly `from..=to`, with a short message when it is not.
fn assert_run(seqs: &[i64], from: i64, to: i64, what: &str) {
    let expected: Vec<i64> = (from..=to).collect();
    assert!(
        seqs == expected.as_slice(),
        "{what}: got {} finals (first {:?}, last {:?}), expected {from}..={to}",
        seqs.len(),
        seqs.first(),
        seqs.last()
    );
}

fn p99(mut latencies: Vec<Duration>) -> Duration {
    latencies.sort();
    latencies[(latencies.len() * 99 / 100).min(latencies.len() - 1)]
}

/// Runs the load against a fresh session; returns the fast clients' p99 and their finals.
async fn run(
    server: &Server,
    slug: &str,
    with_stalled: bool,
) -> (Duration, Vec<Vec<i64>>, Option<StalledDrain>) {
    let supervisor = server
        .registry
        .send(GetOrCreateSession {
            session_slug: slug.into(),
        })
        .await
        .unwrap()
        .unwrap();
    let broadcast = supervisor.send(GetBroadcast).await.unwrap().unwrap();
    let sent: SentAt = Arc::default();
    let mut readers = Vec::new();
    for _ in 0..FAST_CLIENTS {
        readers.push(fast_client(server.addr, slug, sent.clone()).await);
    }
    let stalled = if with_stalled {
        let stream = stalled_client(server.addr, slug).await;
        // The client starts reading again only once the server has cut it off: the close frame
        // queues behind everything it left unread, and the server waits for it just as long as
        // for any send (10 s). Reading only after the whole load would outwait that on a busy
        // machine and find the connection dropped without its close frame.
        let cut_offs_before = counter_value(WS_SLOW_CONSUMER_CLOSES_TOTAL);
        let stream = stream.into_std().unwrap();
        let (done, drained) = tokio::sync::oneshot::channel();
        std::thread::spawn(move || {
            while counter_value(WS_SLOW_CONSUMER_CLOSES_TOTAL) == cut_offs_before {
                std::thread::sleep(Duration::from_millis(5));
            }
            let _ = done.send(drain_frames(stream));
        });
        Some(drained)
    } else {
        None
    };
    // Wait until the session counts every client, then a round trip through the broadcaster:
    // the supervisor queued each `AddClient` there before counting the client.
    let expected = FAST_CLIENTS + usize::from(with_stalled);
    let deadline = Instant::now() + Duration::from_secs(10);
    while supervisor
        .send(::actors::supervisor::GetSnapshot)
        .await
        .unwrap()
        .clients
        < expected
    {
        assert!(Instant::now() < deadline, "clients did not subscribe");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let _ = broadcast
        .send(::actors::broadcast::RemoveClient {
            id: ::actors::messages::ClientId(u64::MAX),
        })
        .await;
    push_load(&broadcast, &sent).await;
    let mut all = Vec::new();
    let mut finals = Vec::new();
    for reader in readers {
        let (latencies, f) = tokio::time::timeout(Duration::from_secs(120), reader)
            .await
            .unwrap()
            .unwrap();
        all.extend(latencies);
        finals.push(f);
    }
    (p99(all), finals, stalled)
}

#[actix_rt::test]
async fn a_stalled_client_is_cut_off_without_hurting_the_others_and_resumes_without_loss() {
    let server = start_server();
    let (baseline_p99, baseline_finals, _) = run(&server, "baseline", false).await;
    for f in &baseline_finals {
        assert_run(f, 1, FINALS as i64, "baseline client");
    }

    let rss_before = rss_kib();
    let (loaded_p99, finals, stalled) = run(&server, "stalled", true).await;
    let rss_after = rss_kib();
    for f in &finals {
        assert_run(
            f,
            1,
            FINALS as i64,
            "a fast client lost or reordered finals",
        );
    }
    eprintln!(
        "fast clients' p99 delivery latency: {:?} without the stalled client, {:?} with it; RSS {} KiB -> {} KiB (+{} KiB)",
        baseline_p99,
        loaded_p99,
        rss_before,
        rss_after,
        rss_after.saturating_sub(rss_before)
    );
    // 2x, with a 2 ms floor: on 2 shared cores a sub-millisecond baseline is mostly noise.
    assert!(
        loaded_p99 <= (baseline_p99 * 2).max(baseline_p99 + Duration::from_millis(2)),
        "the stalled client slowed the others: p99 {loaded_p99:?} vs {baseline_p99:?}"
    );
    // 100k partials of ~600 bytes and 2k finals of 2 KB are ~60 MB of traffic: growth must stay
    // far below it (the stalled client's outbox holds at most MAX_QUEUED_FINALS finals).
    assert!(
        rss_after.saturating_sub(rss_before) < 64 * 1024,
        "memory grew by {} KiB",
        rss_after - rss_before
    );

    let (frames, close, reason) = tokio::time::timeout(Duration::from_secs(60), stalled.unwrap())
        .await
        .expect("the stalled client was never cut off")
        .unwrap();
    assert_eq!(
        (close, reason.as_str()),
        (Some(1013), "slow_consumer"),
        "the stalled client was not cut off"
    );
    let seen: Vec<i64> = frames
        .iter()
        .filter(|m| m["isFinal"] == true)
        .map(|m| m["seq"].as_i64().unwrap())
        .collect();
    assert_run(
        &seen,
        1,
        seen.len() as i64,
        "finals before the cut-off were out of order",
    );
    assert!(
        (seen.len()) < FINALS,
        "the stalled client was cut off only after getting everything"
    );

    // It reconnects with the last seq it has and gets every other final exactly once.
    let last_seq = seen.last().copied().unwrap_or(0);
    let url = format!(
        "ws://{}/api/realtime/transcribe?sessionSlug=stalled&lastSeq={last_seq}",
        server.addr
    );
    let (_, mut framed) = awc::Client::new().ws(url).connect().await.unwrap();
    let mut replayed = Vec::new();
    while replayed.len() < FINALS - last_seq as usize {
        let frame = tokio::time::timeout(Duration::from_secs(10), framed.next())
            .await
            .expect("replay stalled");
        if let Some(Ok(awc::ws::Frame::Text(text))) = frame {
            let m: serde_json::Value = serde_json::from_slice(&text).unwrap();
            if m["isFinal"] == true {
                replayed.push(m["seq"].as_i64().unwrap());
            }
        }
    }
    assert_run(
        &replayed,
        last_seq + 1,
        FINALS as i64,
        "resume after the cut-off",
    );
    eprintln!(
        "stalled client got {} finals before the 1013, {} on resume",
        seen.len(),
        replayed.len()
    );
}
