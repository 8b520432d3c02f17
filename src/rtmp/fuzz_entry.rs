//! Drives one RTMP connection from bytes in memory, for the cargo-fuzz target
//! `fuzz/fuzz_targets/rtmp_connection.rs` and the proptests in `tests/proptest_rtmp.rs`.
//!
//! It runs the listener's own per-connection code (`connection::handle_connection`: handshake,
//! `WireInspector`, rml_rtmp `ServerSession` under `catch_unwind`, event handling, limits) with
//! two stand-ins: the socket is an in-memory stream that hands out the input in reads of at most
//! `max_read` bytes and then reports EOF, and the session registry is a stub actor that accepts
//! every publish (or refuses slugs starting with `refuse`) and drops the audio. A duplicate of
//! the byte handling would drift from the real one; this cannot.

use std::cell::OnceCell;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;

use ::actors::messages::{
    AttachPublisher, AudioTagReceived, DetachPublisher, PublishHandle, PublishRefused,
};
use actix::prelude::*;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::mpsc::unbounded_channel;

use super::connection::handle_connection;
use super::RtmpConfig;

/// What one in-memory connection did.
#[derive(Debug, Clone)]
pub struct ConnectionRun {
    /// Why the connection ended, as the listener logs it (`tcp close` once the input is used up).
    pub close_reason: String,
    /// Bytes the connection wrote back (handshake S0/S1/S2, control messages, statuses).
    pub bytes_written: u64,
    /// Bytes of the input the connection read before it ended.
    pub bytes_read: u64,
    /// Why each accepted publish ended (one entry per `DetachPublisher`), in order.
    pub detach_reasons: Vec<String>,
}

/// Feeds `input` to a fresh connection in reads of at most `max_read` bytes (at least 1) and
/// returns once the connection has ended. Never panics unless the connection code itself panics
/// outside its `catch_unwind`, which is exactly what the fuzz target looks for.
///
/// Reuses one actix `System` per thread: creating a runtime per input would dominate the cost.
/// The system is leaked on purpose: dropping it from a thread-local destructor at thread exit
/// makes its actors touch thread-locals that are already gone (a panic in every test thread).
pub fn run_connection(input: &[u8], max_read: usize) -> ConnectionRun {
    type Runtime = (SystemRunner, Recipient<AttachPublisher>);
    thread_local! {
        static RUNTIME: OnceCell<&'static Runtime> = const { OnceCell::new() };
    }
    let (system, registry) = RUNTIME.with(|cell| {
        *cell.get_or_init(|| {
            let system = System::new();
            let registry = system.block_on(async { StubRegistry::new().start().recipient() });
            Box::leak(Box::new((system, registry)))
        })
    });
    system.block_on(drive(input, max_read.max(1), registry.clone()))
}

async fn drive(
    input: &[u8],
    max_read: usize,
    registry: Recipient<AttachPublisher>,
) -> ConnectionRun {
    let mut stream = MemoryStream {
        input,
        position: 0,
        max_read,
        written: 0,
    };
    let peer = SocketAddr::from((Ipv4Addr::LOCALHOST, 40_000));
    let (observer, mut outcomes) = unbounded_channel();
    handle_connection(
        &mut stream,
        peer,
        Arc::new(RtmpConfig::default()),
        registry,
        Some(observer),
    )
    .await;
    let (close_reason, detach_reasons) = match outcomes.try_recv() {
        Ok(outcome) => (outcome.close_reason, outcome.detach_reasons),
        Err(_) => ("no outcome reported".to_string(), Vec::new()),
    };
    ConnectionRun {
        close_reason,
        bytes_written: stream.written,
        bytes_read: stream.position as u64,
        detach_reasons,
    }
}

/// The peer: the input, then EOF. Writes are counted and dropped, so memory stays bounded
/// however much the connection answers. Always ready, so timeouts never fire.
struct MemoryStream<'a> {
    input: &'a [u8],
    position: usize,
    max_read: usize,
    written: u64,
}

impl AsyncRead for MemoryStream<'_> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let rest = &self.input[self.position..];
        let n = rest.len().min(self.max_read).min(buf.remaining());
        buf.put_slice(&rest[..n]);
        self.position += n;
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for MemoryStream<'_> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.written += buf.len() as u64;
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut std::task::Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut std::task::Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// Stands in for the `SessionRegistry`: the point where the connection hands over to the actor
/// tree. Accepting lets the fuzzer reach audio forwarding and the end-of-publish paths;
/// refusing `refuse*` slugs reaches the refusal `onStatus`.
pub(crate) struct StubRegistry {
    sink: Option<Addr<AudioSink>>,
}

impl StubRegistry {
    pub(crate) fn new() -> Self {
        Self { sink: None }
    }
}

impl Actor for StubRegistry {
    type Context = Context<Self>;

    fn started(&mut self, _: &mut Self::Context) {
        self.sink = Some(AudioSink.start());
    }
}

impl Handler<AttachPublisher> for StubRegistry {
    type Result = Result<PublishHandle, PublishRefused>;

    fn handle(&mut self, msg: AttachPublisher, _: &mut Self::Context) -> Self::Result {
        if msg.session_slug.starts_with("refuse") {
            return Err(PublishRefused::UnknownSession);
        }
        let sink = self
            .sink
            .as_ref()
            .ok_or_else(|| PublishRefused::Other("sink not started".to_string()))?;
        Ok(PublishHandle {
            audio: sink.clone().recipient(),
            detach: sink.clone().recipient(),
            replaced: None,
        })
    }
}

/// Stands in for the `IngestActor`: drops audio and detaches. Its mailbox is bounded like the
/// real one, so a burst of audio also exercises the "mailbox full" drop path.
struct AudioSink;

impl Actor for AudioSink {
    type Context = Context<Self>;
}

impl Handler<AudioTagReceived> for AudioSink {
    type Result = ();

    fn handle(&mut self, _: AudioTagReceived, _: &mut Self::Context) {}
}

impl Handler<DetachPublisher> for AudioSink {
    type Result = ();

    fn handle(&mut self, _: DetachPublisher, _: &mut Self::Context) {}
}
