//! End-to-end tests of the RTMP listener with real publishers (FFmpeg, GStreamer `rtmp2sink`,
//! librtmp `rtmpsink`) and hand-driven rml_rtmp clients, over loopback sockets.
//!
//! The session registry is a fake actor that records `AttachPublisher` and hands out a
//! `PublishHandle` pointing at a recorder actor. Every wait has a timeout; connection ends are
//! observed through `serve_observed`'s outcome channel rather than by sleeping.

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ::actors::messages::{
    AttachPublisher, AudioTagReceived, DetachPublisher, PublishHandle, PublishRefused, PublisherId,
};
use actix::prelude::*;
use rml_rtmp::chunk_io::ChunkSerializer;
use rml_rtmp::messages::{MessagePayload, RtmpMessage};
use rml_rtmp::rml_amf0::Amf0Value;
use rml_rtmp::sessions::{
    ClientSession, ClientSessionConfig, ClientSessionEvent, ClientSessionResult,
    PublishRequestType, ServerSession, ServerSessionConfig, ServerSessionEvent,
    ServerSessionResult,
};
use rml_rtmp::time::RtmpTimestamp;
use test_harness::{rtmp_client, EGRESS_AAC};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};
use tokio::time::timeout;

use super::connection::ConnectionOutcome;
use super::isolation::guarded;
use super::listener::serve_observed;
use super::proxy_protocol::{v1_header, v2_header};
use super::stream_key::{identity_stream_key, StreamKeyRejection, ValidKey};
use super::{ProxyProtocol, RtmpConfig};

/// Generous bounds for events that normally take milliseconds (2 shared cores, parallel tests).
const EVENT_TIMEOUT: Duration = Duration::from_secs(15);
/// A 3 s real-time publish plus encoder start-up.
const PUBLISHER_TIMEOUT: Duration = Duration::from_secs(40);

// ---------------------------------------------------------------------------------------------
// Fake actor tree
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
enum Recorded {
    Attach {
        slug: String,
        publisher: PublisherId,
        accepted: bool,
        /// The address the connection named as its publisher's.
        peer: String,
    },
    Audio {
        publisher: PublisherId,
        timestamp_ms: u32,
        head: Vec<u8>,
    },
    Detach {
        publisher: PublisherId,
        reason: String,
    },
}

/// Shared record of everything the fakes received, plus a live feed for waiting.
#[derive(Clone)]
struct Log {
    all: Arc<Mutex<Vec<Recorded>>>,
    feed: UnboundedSender<Recorded>,
}

impl Log {
    fn push(&self, event: Recorded) {
        self.all.lock().expect("log lock").push(event.clone());
        let _ = self.feed.send(event);
    }
}

/// Stands in for the ingest actor: records audio and detaches.
struct Recorder {
    log: Log,
}

impl Actor for Recorder {
    type Context = Context<Self>;
}

impl Handler<AudioTagReceived> for Recorder {
    type Result = ();
    fn handle(&mut self, msg: AudioTagReceived, _: &mut Self::Context) {
        self.log.push(Recorded::Audio {
            publisher: msg.publisher,
            timestamp_ms: msg.timestamp_ms,
            head: msg.payload.iter().take(2).copied().collect(),
        });
    }
}

impl Handler<DetachPublisher> for Recorder {
    type Result = ();
    fn handle(&mut self, msg: DetachPublisher, _: &mut Self::Context) {
        self.log.push(Recorded::Detach {
            publisher: msg.publisher,
            reason: msg.reason,
        });
    }
}

/// Answered once every message queued before it has been handled (one FIFO mailbox).
#[derive(Message)]
#[rtype(result = "()")]
struct Flush;

impl Handler<Flush> for Recorder {
    type Result = ();
    fn handle(&mut self, _: Flush, _: &mut Self::Context) {}
}

/// Stands in for the `SessionRegistry`.
struct FakeRegistry {
    log: Log,
    recorder: Addr<Recorder>,
    refuse_slugs: Vec<String>,
}

impl Actor for FakeRegistry {
    type Context = Context<Self>;
}

impl Handler<AttachPublisher> for FakeRegistry {
    type Result = Result<PublishHandle, PublishRefused>;
    fn handle(&mut self, msg: AttachPublisher, _: &mut Self::Context) -> Self::Result {
        let accepted = !self.refuse_slugs.contains(&msg.session_slug);
        self.log.push(Recorded::Attach {
            slug: msg.session_slug,
            publisher: msg.publisher,
            accepted,
            peer: msg.peer,
        });
        if !accepted {
            return Err(PublishRefused::UnknownSession);
        }
        Ok(PublishHandle {
            audio: self.recorder.clone().recipient(),
            detach: self.recorder.clone().recipient(),
            replaced: None,
        })
    }
}

struct Harness {
    port: u16,
    log: Log,
    feed: UnboundedReceiver<Recorded>,
    outcomes: UnboundedReceiver<ConnectionOutcome>,
    recorder: Addr<Recorder>,
}

impl Harness {
    async fn start(config: RtmpConfig, refuse_slugs: &[&str]) -> Harness {
        // RUST_LOG=realtime_core::rtmp=debug shows each connection's story; quiet by default.
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("off")),
            )
            .with_test_writer()
            .try_init();
        let (feed_tx, feed) = unbounded_channel();
        let log = Log {
            all: Arc::new(Mutex::new(Vec::new())),
            feed: feed_tx,
        };
        let recorder_log = log.clone();
        let recorder = Recorder::create(|ctx| {
            // A real ingest actor sees ~45 tags/s; the test must not drop any.
            ctx.set_mailbox_capacity(100_000);
            Recorder { log: recorder_log }
        });
        let registry = FakeRegistry {
            log: log.clone(),
            recorder: recorder.clone(),
            refuse_slugs: refuse_slugs.iter().map(|s| s.to_string()).collect(),
        }
        .start();
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("local addr").port();
        let (outcome_tx, outcomes) = unbounded_channel();
        actix_rt::spawn(serve_observed(
            listener,
            Arc::new(config),
            registry.recipient(),
            Some(outcome_tx),
        ));
        Harness {
            port,
            log,
            feed,
            outcomes,
            recorder,
        }
    }

    fn url(&self, app_and_key: &str) -> String {
        format!("rtmp://127.0.0.1:{}/{app_and_key}", self.port)
    }

    /// Waits for a recorded event matching `pred`; earlier events stay in the log.
    async fn wait_for(&mut self, what: &str, pred: impl Fn(&Recorded) -> bool) -> Recorded {
        let result = timeout(EVENT_TIMEOUT, async {
            loop {
                match self.feed.recv().await {
                    Some(event) if pred(&event) => return event,
                    Some(_) => continue,
                    None => panic!("event feed closed while waiting for {what}"),
                }
            }
        })
        .await;
        result.unwrap_or_else(|_| panic!("timed out waiting for {what}"))
    }

    /// Waits for the end of a connection matching `pred`, then for the recorder to have handled
    /// everything that connection sent.
    async fn wait_outcome(
        &mut self,
        what: &str,
        pred: impl Fn(&ConnectionOutcome) -> bool,
    ) -> ConnectionOutcome {
        let outcome = timeout(EVENT_TIMEOUT, async {
            loop {
                match self.outcomes.recv().await {
                    Some(outcome) if pred(&outcome) => return outcome,
                    Some(_) => continue,
                    None => panic!("outcome channel closed while waiting for {what}"),
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for connection end: {what}"));
        timeout(EVENT_TIMEOUT, self.recorder.send(Flush))
            .await
            .expect("recorder flush timed out")
            .expect("recorder alive");
        outcome
    }

    fn events(&self) -> Vec<Recorded> {
        self.log.all.lock().expect("log lock").clone()
    }

    fn attaches(&self, slug: &str) -> Vec<(PublisherId, bool)> {
        self.events()
            .into_iter()
            .filter_map(|e| match e {
                Recorded::Attach {
                    slug: s,
                    publisher,
                    accepted,
                    ..
                } if s == slug => Some((publisher, accepted)),
                _ => None,
            })
            .collect()
    }

    fn audio(&self, publisher: PublisherId) -> Vec<(u32, Vec<u8>)> {
        self.events()
            .into_iter()
            .filter_map(|e| match e {
                Recorded::Audio {
                    publisher: p,
                    timestamp_ms,
                    head,
                } if p == publisher => Some((timestamp_ms, head)),
                _ => None,
            })
            .collect()
    }

    fn detaches(&self, publisher: PublisherId) -> Vec<String> {
        self.events()
            .into_iter()
            .filter_map(|e| match e {
                Recorded::Detach {
                    publisher: p,
                    reason,
                } if p == publisher => Some(reason),
                _ => None,
            })
            .collect()
    }

    /// The checks every successful ~3 s publish must pass; returns the detach reason.
    fn assert_complete_publish(&self, slug: &str, expected_secs: f64) -> String {
        let attaches = self.attaches(slug);
        assert_eq!(attaches.len(), 1, "one attach for {slug}: {attaches:?}");
        let (publisher, accepted) = attaches[0];
        assert!(accepted);
        let audio = self.audio(publisher);
        assert!(!audio.is_empty(), "no audio for {slug}");
        assert_eq!(
            audio[0].1,
            vec![0xAF, 0x00],
            "first audio tag of {slug} must be the AAC sequence header"
        );
        // Raw AAC frames only (the sequence header carries no audio).
        let frames: Vec<u32> = audio
            .iter()
            .filter(|(_, head)| head.as_slice() == [0xAF, 0x01])
            .map(|(ts, _)| *ts)
            .collect();
        let first = frames.first().copied().unwrap_or_default();
        let last = frames.last().copied().unwrap_or_default();
        // Each frame is 1024 samples at 44.1 kHz (23.2 ms): span of N frames is (N-1) frames.
        let covered_ms = f64::from(last - first) + 1024.0 / 44.1;
        let expected_ms = expected_secs * 1000.0;
        assert!(
            (covered_ms - expected_ms).abs() < 0.1 * expected_ms,
            "{slug}: {} AAC frames covering {covered_ms:.0} ms, expected ~{expected_ms:.0} ms",
            frames.len()
        );
        let detaches = self.detaches(publisher);
        assert_eq!(
            detaches.len(),
            1,
            "exactly one detach for {slug}: {detaches:?}"
        );
        eprintln!(
            "{slug}: {} audio tags, {covered_ms:.0} ms of AAC, detach reason: {:?}",
            audio.len(),
            detaches[0]
        );
        detaches[0].clone()
    }
}

fn test_config() -> RtmpConfig {
    RtmpConfig {
        handshake_timeout: Duration::from_millis(300),
        ..RtmpConfig::default()
    }
}

// ---------------------------------------------------------------------------------------------
// Publisher processes
// ---------------------------------------------------------------------------------------------

/// True when `tool` can run. Missing tools fail the test under CI=true, else skip it loudly.
fn tool_available(tool: &str) -> bool {
    let found = std::process::Command::new(tool)
        .arg("-version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if !found {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("{tool} is required for the RTMP tests (CI=true) but was not found on PATH");
        }
        eprintln!("\n!!!!!!!! SKIPPING: {tool} not found on PATH; install it to run this RTMP test !!!!!!!!\n");
    }
    found
}

/// A publisher process; killed if the test fails before it exits (`kill_on_drop`).
struct Publisher {
    name: &'static str,
    child: tokio::process::Child,
}

impl Publisher {
    fn spawn(name: &'static str, program: &str, args: &[&str]) -> Publisher {
        let child = tokio::process::Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {program}: {e}"));
        Publisher { name, child }
    }

    fn ffmpeg(url: &str, secs: u32) -> Publisher {
        let source = format!("sine=frequency=440:sample_rate=44100:duration={secs}");
        let input = [
            "-nostdin",
            "-hide_banner",
            "-loglevel",
            "warning",
            "-re",
            "-f",
            "lavfi",
            "-i",
            &source,
        ];
        let args = [&input[..], &EGRESS_AAC, &["-f", "flv", url]].concat();
        Publisher::spawn("ffmpeg", "ffmpeg", &args)
    }

    fn gst(name: &'static str, pipeline: &str) -> Publisher {
        let args: Vec<&str> = pipeline.split_whitespace().collect();
        Publisher::spawn(name, "gst-launch-1.0", &args)
    }

    /// Waits for exit (bounded); returns success and the captured output for messages.
    async fn finish(self) -> (bool, String) {
        let name = self.name;
        let output = timeout(PUBLISHER_TIMEOUT, self.child.wait_with_output())
            .await
            .unwrap_or_else(|_| panic!("{name} did not exit within {PUBLISHER_TIMEOUT:?}"))
            .unwrap_or_else(|e| panic!("{name} wait: {e}"));
        let text = format!(
            "{name} exit {:?}\nstdout:\n{}\nstderr:\n{}",
            output.status.code(),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        (output.status.success(), text)
    }
}

// ---------------------------------------------------------------------------------------------
// Hand-driven RTMP client (rml_rtmp client side)
// ---------------------------------------------------------------------------------------------

/// Client side of the handshake; returns bytes the server sent after S2.
async fn client_handshake(stream: &mut TcpStream) -> Vec<u8> {
    timeout(EVENT_TIMEOUT, rtmp_client::handshake(stream))
        .await
        .expect("handshake timed out")
        .expect("handshake")
}

/// A raw publisher that got `NetStream.Publish.Start` on `live/{key}`.
async fn raw_publisher(port: u16, key: &str) -> TcpStream {
    let stream = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    rtmp_client::start_publishing(stream, key, EVENT_TIMEOUT)
        .await
        .expect("publish accepted")
        .stream
}

/// `["@setDataFrame"]` on message stream 1: panics rml_rtmp 0.8 at sessions/server/mod.rs:938.
fn malformed_set_data_frame() -> Vec<u8> {
    let message = RtmpMessage::Amf0Data {
        values: vec![Amf0Value::Utf8String("@setDataFrame".into())],
    };
    let payload =
        MessagePayload::from_rtmp_message(message, RtmpTimestamp::new(0), 1).expect("payload");
    // Type-0 header, so it decodes whatever the client session sent before on this csid.
    ChunkSerializer::new()
        .serialize(&payload, true, false)
        .expect("chunk")
        .bytes
}

/// Reads until the server closes; panics if it does not within the timeout.
async fn expect_server_close(stream: &mut TcpStream, what: &str) {
    let mut buf = vec![0_u8; 8192];
    let closed = timeout(EVENT_TIMEOUT, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => continue,
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "server did not close {what}");
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

/// 1. FFmpeg's native RTMP client.
#[actix_rt::test]
async fn ffmpeg_publish_delivers_audio_and_detaches_once() {
    if !tool_available("ffmpeg") {
        return;
    }
    let mut h = Harness::start(test_config(), &[]).await;
    let ffmpeg = Publisher::ffmpeg(&h.url("live/session-ffmpeg"), 3);
    let (ok, output) = ffmpeg.finish().await;
    assert!(ok, "{output}");
    let outcome = h.wait_outcome("ffmpeg connection", |_| true).await;
    eprintln!("ffmpeg connection closed: {outcome:?}");
    h.assert_complete_publish("session-ffmpeg", 3.0);
}

/// 2. GStreamer rtmp2sink, the element LiveKit Egress uses.
#[actix_rt::test]
async fn gstreamer_rtmp2sink_publish_delivers_audio_and_detaches_once() {
    if !tool_available("gst-launch-1.0") {
        return;
    }
    let mut h = Harness::start(test_config(), &[]).await;
    let pipeline = format!(
        "audiotestsrc is-live=true num-buffers=130 ! audio/x-raw,rate=44100,channels=2,format=S16LE \
         ! audioconvert ! voaacenc bitrate=128000 ! aacparse \
         ! flvmux streamable=true skip-backwards-streams=true \
         ! rtmp2sink location={} async-connect=false",
        h.url("live/session-gst")
    );
    let gst = Publisher::gst("gst-launch-1.0 rtmp2sink", &pipeline);
    let (ok, output) = gst.finish().await;
    assert!(ok, "gst-launch must exit 0: {output}");
    let outcome = h.wait_outcome("rtmp2sink connection", |_| true).await;
    eprintln!("rtmp2sink connection closed: {outcome:?}");
    // 130 buffers of 1024 samples at 44.1 kHz.
    h.assert_complete_publish("session-gst", 130.0 * 1024.0 / 44100.0);
}

/// 3. librtmp through GStreamer's rtmpsink (pipelines bytes right after the handshake).
#[actix_rt::test]
async fn librtmp_rtmpsink_publish_delivers_audio_and_detaches_once() {
    if !tool_available("gst-launch-1.0") {
        return;
    }
    let mut h = Harness::start(test_config(), &[]).await;
    // `location` carries a space (" live=1"), so this one is not split on whitespace.
    let location = format!("location={} live=1", h.url("live/sess-lib"));
    let mut args: Vec<&str> = "audiotestsrc is-live=true num-buffers=130 \
         ! audio/x-raw,rate=44100,channels=2 ! audioconvert ! avenc_aac bitrate=64000 \
         ! aacparse ! flvmux streamable=true ! rtmpsink"
        .split_whitespace()
        .collect();
    args.push(&location);
    let gst = Publisher::spawn("gst-launch-1.0 rtmpsink", "gst-launch-1.0", &args);
    let (ok, output) = gst.finish().await;
    assert!(ok, "gst-launch must exit 0: {output}");
    let outcome = h.wait_outcome("rtmpsink connection", |_| true).await;
    eprintln!("librtmp connection closed: {outcome:?}");
    h.assert_complete_publish("sess-lib", 130.0 * 1024.0 / 44100.0);
}

/// 4. A publisher sending `@setDataFrame` with no values loses its connection; a concurrent
///    FFmpeg publish is untouched.
#[actix_rt::test]
async fn malformed_set_data_frame_closes_only_that_connection() {
    if !tool_available("ffmpeg") {
        return;
    }
    let mut h = Harness::start(test_config(), &[]).await;
    let ffmpeg = Publisher::ffmpeg(&h.url("live/session-survivor"), 3);
    h.wait_for(
        "survivor attach",
        |e| matches!(e, Recorded::Attach { slug, .. } if slug == "session-survivor"),
    )
    .await;

    let mut hostile = raw_publisher(h.port, "session-hostile").await;
    let hostile_addr = hostile.local_addr().expect("local addr");
    hostile
        .write_all(&malformed_set_data_frame())
        .await
        .expect("write hostile frame");
    expect_server_close(&mut hostile, "the hostile publisher").await;
    let outcome = h
        .wait_outcome("hostile connection", |o| o.peer == hostile_addr)
        .await;
    assert!(
        outcome.close_reason.contains("@setDataFrame"),
        "close reason: {}",
        outcome.close_reason
    );
    let hostile_attaches = h.attaches("session-hostile");
    assert_eq!(hostile_attaches.len(), 1);
    assert_eq!(h.detaches(hostile_attaches[0].0).len(), 1);

    let (ok, output) = ffmpeg.finish().await;
    assert!(ok, "{output}");
    h.wait_outcome("survivor connection", |o| o.peer != hostile_addr)
        .await;
    h.assert_complete_publish("session-survivor", 3.0);
}

/// 4b. The backstop: were the inspector to miss it, the panic inside rml_rtmp is caught.
#[test]
fn library_panic_on_malformed_set_data_frame_is_caught() {
    let (mut server, mut results) = ServerSession::new(ServerSessionConfig::new()).expect("server");
    let (mut client, initial) = ClientSession::new(ClientSessionConfig::new()).expect("client");
    let mut to_server = rtmp_client::outbound_bytes(initial);
    to_server.extend(rtmp_client::outbound_bytes(vec![client
        .request_connection("live".into())
        .expect("connect")]));
    let mut publish_sent = false;
    let mut published = false;
    // Ping-pong bytes between the two in memory, accepting every request, until publishing.
    // The first round delivers the server's greeting along with its answer to `connect`.
    for _ in 0..20 {
        let mut to_client = Vec::new();
        results.extend(server.handle_input(&to_server).expect("server input"));
        to_server.clear();
        while let Some(result) = (!results.is_empty()).then(|| results.remove(0)) {
            match result {
                ServerSessionResult::OutboundResponse(p) => to_client.extend_from_slice(&p.bytes),
                ServerSessionResult::RaisedEvent(
                    ServerSessionEvent::ConnectionRequested { request_id, .. }
                    | ServerSessionEvent::PublishStreamRequested { request_id, .. },
                ) => results.extend(server.accept_request(request_id).expect("accept")),
                _ => {}
            }
        }
        for result in client.handle_input(&to_client).expect("client input") {
            match result {
                ClientSessionResult::OutboundResponse(p) => to_server.extend_from_slice(&p.bytes),
                ClientSessionResult::RaisedEvent(ClientSessionEvent::ConnectionRequestAccepted) => {
                    to_server.extend(rtmp_client::outbound_bytes(vec![client
                        .request_publishing("k".into(), PublishRequestType::Live)
                        .expect("publish")]));
                    publish_sent = true;
                }
                ClientSessionResult::RaisedEvent(ClientSessionEvent::PublishRequestAccepted) => {
                    published = true
                }
                _ => {}
            }
        }
        if published {
            break;
        }
    }
    assert!(
        publish_sent && published,
        "in-memory publish did not complete"
    );
    let bytes = malformed_set_data_frame();
    let outcome = guarded(|| server.handle_input(&bytes));
    let panic = outcome.expect_err("rml_rtmp 0.8 panics on [\"@setDataFrame\"]");
    assert!(
        panic.message.contains("index out of bounds"),
        "{}",
        panic.message
    );
}

/// 5a. A connection that never sends a byte is closed at the handshake timeout.
#[actix_rt::test]
async fn silent_connection_is_closed_after_handshake_timeout() {
    let mut h = Harness::start(test_config(), &[]).await;
    let mut silent = TcpStream::connect(("127.0.0.1", h.port))
        .await
        .expect("connect");
    let addr = silent.local_addr().expect("addr");
    let started = tokio::time::Instant::now();
    expect_server_close(&mut silent, "a silent connection").await;
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(250),
        "closed too early: {waited:?}"
    );
    let outcome = h
        .wait_outcome("silent connection", |o| o.peer == addr)
        .await;
    assert!(outcome.close_reason.contains("handshake not finished"));
}

/// 5b. Garbage instead of a handshake, and garbage after a valid handshake: closed, no panic,
///     and the listener keeps accepting.
#[actix_rt::test]
async fn garbage_closes_the_connection_and_the_listener_survives() {
    let mut h = Harness::start(test_config(), &[]).await;

    let mut bad_version = TcpStream::connect(("127.0.0.1", h.port))
        .await
        .expect("connect");
    let addr = bad_version.local_addr().expect("addr");
    // Ignore write errors: the server may close before reading it all.
    let _ = bad_version.write_all(&[0xFF; 3000]).await;
    expect_server_close(&mut bad_version, "a bad handshake").await;
    let outcome = h.wait_outcome("bad handshake", |o| o.peer == addr).await;
    assert!(
        outcome.close_reason.contains("handshake failed"),
        "{outcome:?}"
    );

    // Pseudo-random bytes after a valid handshake: whatever rml_rtmp makes of them, the
    // connection is closed (parse error, or the 1 MiB cap before publishing).
    let mut noisy = TcpStream::connect(("127.0.0.1", h.port))
        .await
        .expect("connect");
    let addr = noisy.local_addr().expect("addr");
    client_handshake(&mut noisy).await;
    let mut state: u32 = 0x1234_5678;
    let junk: Vec<u8> = (0..2 * 1024 * 1024)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state as u8
        })
        .collect();
    let (mut reader, mut writer) = noisy.split();
    let write = async {
        let _ = writer.write_all(&junk).await;
    };
    let read = expect_server_close_half(&mut reader);
    let (_, closed) = tokio::join!(write, read);
    assert!(closed, "server did not close the noisy connection");
    let outcome = h.wait_outcome("noisy connection", |o| o.peer == addr).await;
    eprintln!("noisy connection closed: {}", outcome.close_reason);
    assert!(outcome.detach_reasons.is_empty());

    // Still accepting: a fresh handshake completes.
    let mut fresh = TcpStream::connect(("127.0.0.1", h.port))
        .await
        .expect("connect after garbage");
    client_handshake(&mut fresh).await;
    assert!(h.events().is_empty(), "nothing reached the actors");
}

async fn expect_server_close_half(reader: &mut tokio::net::tcp::ReadHalf<'_>) -> bool {
    let mut buf = vec![0_u8; 8192];
    timeout(EVENT_TIMEOUT, async {
        loop {
            match reader.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => continue,
            }
        }
    })
    .await
    .is_ok()
}

/// 6. Refusals: a key the validator denies, a slug the registry refuses, a wrong app. FFmpeg
///    fails each time; no publisher is left attached.
#[actix_rt::test]
async fn refused_publishes_fail_cleanly() {
    if !tool_available("ffmpeg") {
        return;
    }
    let config = RtmpConfig {
        stream_key_validator: Arc::new(|key: &str| {
            if key.starts_with("denied") {
                Err(StreamKeyRejection::Denied)
            } else {
                identity_stream_key(key).map(|slug| ValidKey { slug, signed: None })
            }
        }),
        ..test_config()
    };
    let mut h = Harness::start(config, &["refused-by-registry"]).await;

    let (ok, output) = Publisher::ffmpeg(&h.url("live/denied-secret"), 1)
        .finish()
        .await;
    assert!(!ok, "ffmpeg must fail on a denied key: {output}");
    let outcome = h.wait_outcome("denied key", |_| true).await;
    assert_eq!(
        outcome.close_reason,
        "publish refused with NetStream.Publish.Denied"
    );
    assert!(h.events().is_empty(), "no AttachPublisher for a denied key");
    eprintln!(
        "ffmpeg on a denied key: {}",
        output.lines().last().unwrap_or("")
    );

    let (ok, output) = Publisher::ffmpeg(&h.url("live/refused-by-registry"), 1)
        .finish()
        .await;
    assert!(!ok, "ffmpeg must fail when the registry refuses: {output}");
    let outcome = h.wait_outcome("registry refusal", |_| true).await;
    assert_eq!(
        outcome.close_reason,
        "publish refused with NetStream.Publish.BadName"
    );
    let attaches = h.attaches("refused-by-registry");
    assert_eq!(attaches.len(), 1);
    assert!(!attaches[0].1);
    assert!(h.detaches(attaches[0].0).is_empty(), "refused: no detach");

    let (ok, output) = Publisher::ffmpeg(&h.url("other/session-x"), 1)
        .finish()
        .await;
    assert!(!ok, "ffmpeg must fail on an unknown app: {output}");
    let outcome = h.wait_outcome("wrong app", |_| true).await;
    assert!(outcome.close_reason.contains("rejected"), "{outcome:?}");
    assert!(h.attaches("session-x").is_empty());
}

/// 6b. rtmp2sink (egress) sees the refusal as an error and exits non-zero, promptly.
#[actix_rt::test]
async fn rtmp2sink_on_refused_key_fails() {
    if !tool_available("gst-launch-1.0") {
        return;
    }
    let config = RtmpConfig {
        stream_key_validator: Arc::new(|_: &str| Err(StreamKeyRejection::Denied)),
        ..test_config()
    };
    let mut h = Harness::start(config, &[]).await;
    let pipeline = format!(
        "audiotestsrc is-live=true num-buffers=130 ! audio/x-raw,rate=44100,channels=2,format=S16LE \
         ! audioconvert ! voaacenc bitrate=128000 ! aacparse \
         ! flvmux streamable=true skip-backwards-streams=true \
         ! rtmp2sink location={} async-connect=false",
        h.url("live/any-key")
    );
    let (ok, output) = Publisher::gst("gst-launch-1.0 rtmp2sink", &pipeline)
        .finish()
        .await;
    assert!(!ok, "gst-launch must fail: {output}");
    eprintln!("rtmp2sink refused: {output}");
    let outcome = h.wait_outcome("refused rtmp2sink", |_| true).await;
    assert_eq!(
        outcome.close_reason,
        "publish refused with NetStream.Publish.Denied"
    );
    assert!(h.events().is_empty());
}

/// Serializes one message with a type-0 header (decodable whatever came before on its csid).
fn raw_message(message: RtmpMessage, stream_id: u32) -> Vec<u8> {
    let payload = MessagePayload::from_rtmp_message(message, RtmpTimestamp::new(0), stream_id)
        .expect("payload");
    ChunkSerializer::new()
        .serialize(&payload, true, false)
        .expect("chunk")
        .bytes
}

/// 7. The other end-of-publish signals: `deleteStream` with the stream *name* (rtmp2sink's
///    form, which rml_rtmp ignores) while the TCP connection stays open, and a bare TCP close.
#[actix_rt::test]
async fn delete_stream_by_name_and_tcp_close_end_the_publish() {
    let mut h = Harness::start(test_config(), &[]).await;

    let mut by_name = raw_publisher(h.port, "session-by-name").await;
    let delete = raw_message(
        RtmpMessage::Amf0Command {
            command_name: "deleteStream".into(),
            transaction_id: 0.0,
            command_object: Amf0Value::Null,
            additional_arguments: vec![Amf0Value::Utf8String("session-by-name".into())],
        },
        0,
    );
    by_name
        .write_all(&delete)
        .await
        .expect("write deleteStream");
    let detach = h
        .wait_for("detach after deleteStream(name)", |e| {
            matches!(e, Recorded::Detach { .. })
        })
        .await;
    assert!(
        matches!(&detach, Recorded::Detach { reason, .. } if reason == "deleteStream (by name)"),
        "{detach:?}"
    );
    drop(by_name);
    let outcome = h.wait_outcome("by-name connection", |_| true).await;
    assert_eq!(outcome.detach_reasons, vec!["deleteStream (by name)"]);

    let tcp_only = raw_publisher(h.port, "session-tcp-close").await;
    drop(tcp_only);
    let outcome = h.wait_outcome("tcp-close connection", |_| true).await;
    let attaches = h.attaches("session-tcp-close");
    assert_eq!(attaches.len(), 1);
    assert_eq!(h.detaches(attaches[0].0), vec!["tcp close"], "{outcome:?}");
}

/// 8. A peer that chats (valid messages) without ever publishing is cut off at 1 MiB.
#[actix_rt::test]
async fn bytes_before_publish_are_capped() {
    let mut h = Harness::start(test_config(), &[]).await;
    let mut chatty = TcpStream::connect(("127.0.0.1", h.port))
        .await
        .expect("connect");
    let addr = chatty.local_addr().expect("addr");
    client_handshake(&mut chatty).await;
    let ack = raw_message(RtmpMessage::Acknowledgement { sequence_number: 1 }, 0);
    let flood: Vec<u8> = ack.repeat(2 * 1024 * 1024 / ack.len());
    let (mut reader, mut writer) = chatty.split();
    let write = async {
        let _ = writer.write_all(&flood).await;
    };
    let (_, closed) = tokio::join!(write, expect_server_close_half(&mut reader));
    assert!(closed, "server did not close the chatty connection");
    let outcome = h
        .wait_outcome("chatty connection", |o| o.peer == addr)
        .await;
    assert!(
        outcome.close_reason.contains("without publishing"),
        "{outcome:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Behind a PROXY-protocol load balancer (docs/PROTOCOL.md#hostile-input-and-limits)
// ---------------------------------------------------------------------------------------------

/// PROXY protocol on, trusting `trusted`, with a short header timeout (and the default
/// handshake timeout, longer than any of these tests: a connection that is held open stays so).
fn proxy_config(trusted: &str, max_connections_per_ip: usize) -> RtmpConfig {
    RtmpConfig {
        max_connections_per_ip,
        proxy_protocol: ProxyProtocol::Required {
            trusted: trusted.parse().expect("trusted proxies"),
            header_timeout: Duration::from_millis(300),
        },
        ..RtmpConfig::default()
    }
}

/// A connection to the listener that starts with `header`, as a load balancer's would.
async fn proxied(port: u16, header: &[u8]) -> TcpStream {
    let mut stream = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    stream.write_all(header).await.expect("header");
    stream
}

/// True when the server still holds `stream` open after a moment: an accepted connection waits
/// silently for the RTMP handshake.
async fn held_open(stream: &mut TcpStream) -> bool {
    let mut byte = [0_u8; 1];
    match timeout(Duration::from_millis(200), stream.read(&mut byte)).await {
        Ok(Ok(0)) | Ok(Err(_)) => false,
        Ok(Ok(_)) => panic!("the server sent bytes before the handshake"),
        Err(_) => true,
    }
}

/// The publish behind a v1 and a v2 header is attached with the address the header names, and
/// the connection's end is reported under it too.
#[actix_rt::test]
async fn a_proxied_publish_carries_the_address_its_header_names() {
    let mut h = Harness::start(proxy_config("127.0.0.1/32", 16), &[]).await;
    for (slug, header, claimed) in [
        (
            "via-v1",
            v1_header("203.0.113.5:4242".parse().unwrap()),
            "203.0.113.5:4242",
        ),
        (
            "via-v2",
            v2_header("[2001:db8::5]:4343".parse().unwrap(), b"\x04\x00\x02id"),
            "[2001:db8::5]:4343",
        ),
    ] {
        let stream = proxied(h.port, &header).await;
        let publishing = rtmp_client::start_publishing(stream, slug, EVENT_TIMEOUT)
            .await
            .unwrap_or_else(|e| panic!("{slug}: {e:#}"));
        let attach = h
            .wait_for(
                slug,
                |e| matches!(e, Recorded::Attach { slug: s, .. } if s == slug),
            )
            .await;
        let Recorded::Attach { peer, accepted, .. } = attach else {
            unreachable!("matched an attach")
        };
        assert!(accepted);
        assert_eq!(peer, claimed, "{slug}");
        drop(publishing);
        let outcome = h
            .wait_outcome(slug, |o| o.peer.to_string() == claimed)
            .await;
        assert_eq!(outcome.close_reason, "tcp close");
    }
}

/// With the PROXY protocol on, a peer outside the trusted blocks is closed at once, and a
/// trusted one that sends no header, or RTMP instead of one, is closed too.
#[actix_rt::test]
async fn untrusted_headerless_and_silent_peers_are_closed() {
    let h = Harness::start(proxy_config("10.0.0.0/8", 16), &[]).await;
    let mut untrusted = proxied(h.port, &v1_header("198.51.100.1:1".parse().unwrap())).await;
    expect_server_close(&mut untrusted, "a peer outside RTMP_TRUSTED_PROXIES").await;

    let h = Harness::start(proxy_config("127.0.0.0/8, ::1", 16), &[]).await;
    let mut rtmp_first = proxied(h.port, &[0x03; 1537]).await;
    expect_server_close(&mut rtmp_first, "RTMP bytes instead of a header").await;
    let mut silent = TcpStream::connect(("127.0.0.1", h.port))
        .await
        .expect("connect");
    let started = tokio::time::Instant::now();
    expect_server_close(&mut silent, "a silent proxy connection").await;
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "closed before the header timeout: {:?}",
        started.elapsed()
    );
    assert!(h.events().is_empty(), "nothing reached the actors");
}

/// `RTMP_MAX_CONNECTIONS_PER_IP` counts the address a header names, not the proxy's.
#[actix_rt::test]
async fn the_per_address_limit_counts_the_proxied_address() {
    let h = Harness::start(proxy_config("127.0.0.1/32", 1), &[]).await;
    let first: std::net::SocketAddr = "10.0.0.1:1000".parse().unwrap();
    let mut held = proxied(h.port, &v1_header(first)).await;
    assert!(held_open(&mut held).await, "first connection from 10.0.0.1");
    let mut second = proxied(h.port, &v2_header("10.0.0.1:1001".parse().unwrap(), &[])).await;
    expect_server_close(&mut second, "a second connection from 10.0.0.1").await;
    let mut other = proxied(h.port, &v1_header("10.0.0.2:1000".parse().unwrap())).await;
    assert!(
        held_open(&mut other).await,
        "10.0.0.2 is not limited by 10.0.0.1's connections, though both come from one proxy"
    );
    assert!(held_open(&mut held).await, "the first one stays open");
}
