//! `SocketWriter`: the write side of one browser socket, shared on its worker thread by the
//! client's `ClientActor` and that thread's [`crate::fan_out`] (docs/ARCHITECTURE.md#fan-out).
//!
//! A frame is written by a plain call, not by a message to the client actor: the fan-out of a
//! worker thread hands one transcript to every client there in one loop. The writer moves
//! what the client's [`Outbox`] holds into the socket's channel (actix-ws, 32 frames) for as
//! long as the channel takes frames without waiting, and actix-ws encodes everything the
//! channel holds into one buffer: frames queued together leave in one write. Only when the
//! channel is full does a frame wait, in a task of its own; the outbox keeps deciding what
//! waits behind it (finals and control frames first, only the newest partial per utterance),
//! and a socket that takes nothing for [`SEND_TIMEOUT`] is a slow consumer.
//!
//! What only the actor can do (close, leave its sessions, ask for a replay page) it is told
//! with a [`Written`] message; the writer itself never blocks and never closes.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use actix::prelude::*;
use bytestring::ByteString;
use futures_util::FutureExt;

use crate::metrics::names::{WS_BROADCAST_ERRORS_TOTAL, WS_QUEUE_DROPS_TOTAL};
use crate::outbox::{Outbound, Outbox, Pushed};

/// A socket that has not accepted a frame for this long is a slow consumer (docs/PROTOCOL.md#resume-and-delivery-guarantees).
pub const SEND_TIMEOUT: Duration = Duration::from_secs(10);

/// What the writer tells its client actor.
#[derive(Message, Debug, Clone, Copy, PartialEq, Eq)]
#[rtype(result = "()")]
pub enum Written {
    /// The socket is gone (a write failed): the client should stop.
    Gone,
    /// The client is too far behind (too many finals queued, or nothing accepted for
    /// [`SEND_TIMEOUT`]): close it as a slow consumer.
    SlowConsumer,
    /// Frames left the outbox: a client catching up may have room for its next page. Told
    /// only while [`SocketWriter::tell_room`] is on.
    Room,
    /// The outbox is empty and [`SocketWriter::close_when_drained`] is on.
    Drained,
    /// The session said goodbye (service shutdown); everything before it is queued.
    Goodbye,
}

/// One frame the writer sends.
enum Outgoing {
    Text(ByteString),
    Pong(bytes::Bytes),
}

/// What an attempt to hand a frame to the socket's channel did.
enum Attempt {
    Sent,
    /// The channel is full: the frame must wait.
    Full,
    Gone,
}

struct State {
    /// `None` while a task waits with it for room in the channel.
    socket: Option<actix_ws::Session>,
    outbox: Outbox,
    /// The pong owed to the client's latest ping, written before the next outbox frame. One at
    /// most: a newer ping replaces it (RFC 6455 §5.5.3 lets an endpoint answer only the most
    /// recent), so pings from a client that never reads cannot pile up pongs.
    pong: Option<bytes::Bytes>,
    /// The client is closing or gone: nothing more is written or queued.
    stopped: bool,
    tell_room: bool,
    close_when_drained: bool,
    /// `Drained` was told already (once is enough: the actor closes).
    drained_told: bool,
    actor: Recipient<Written>,
}

/// Cheap to clone: every clone is the same writer. Not `Send`: it lives on its client's
/// worker thread.
#[derive(Clone)]
pub struct SocketWriter(Rc<RefCell<State>>);

impl SocketWriter {
    /// `max_queued`: `CLIENT_MAX_QUEUED_FINALS`. `actor` hears what the writer cannot handle.
    pub fn new(socket: actix_ws::Session, max_queued: usize, actor: Recipient<Written>) -> Self {
        SocketWriter(Rc::new(RefCell::new(State {
            socket: Some(socket),
            outbox: Outbox::new(max_queued),
            pong: None,
            stopped: false,
            tell_room: false,
            close_when_drained: false,
            drained_told: false,
            actor,
        })))
    }

    /// Queues a frame from a session and writes what the socket takes. Refusals are counted
    /// and told to the actor here, so the fan-out needs no answer.
    pub fn deliver(&self, outbound: Outbound) {
        if let Outbound::Goodbye = outbound {
            self.tell(Written::Goodbye);
            return;
        }
        if self.push(outbound) == Pushed::TooManyQueued {
            self.tell(Written::SlowConsumer);
        }
        self.flush();
    }

    /// Queues a frame without writing; the caller decides (and flushes). `TooManyQueued`
    /// is the caller's to act on. A stopped writer queues nothing.
    pub fn push(&self, outbound: Outbound) -> Pushed {
        let mut state = self.0.borrow_mut();
        if state.stopped {
            return Pushed::Queued;
        }
        let pushed = state.outbox.push(outbound);
        if pushed == Pushed::PartialDropped {
            ::metrics::counter!(WS_QUEUE_DROPS_TOTAL).increment(1);
        }
        pushed
    }

    /// The answer to the client's latest ping, written before anything queued.
    pub fn pong(&self, payload: bytes::Bytes) {
        self.0.borrow_mut().pong = Some(payload);
        self.flush();
    }

    /// How many more finals and control frames fit in the outbox.
    pub fn room(&self) -> usize {
        self.0.borrow().outbox.room()
    }

    /// While on, every write that empties some of the outbox tells [`Written::Room`].
    pub fn tell_room(&self, on: bool) {
        self.0.borrow_mut().tell_room = on;
    }

    /// Tells [`Written::Drained`] once the outbox is empty (now, if it is).
    pub fn close_when_drained(&self) {
        self.0.borrow_mut().close_when_drained = true;
        self.flush();
    }

    /// The client is closing: nothing more is written (the close frame goes after what the
    /// socket's channel holds already).
    pub fn stop(&self) {
        let mut state = self.0.borrow_mut();
        state.stopped = true;
        state.outbox = Outbox::new(0);
        state.pong = None;
    }

    /// Hands the socket every frame it takes without waiting: the pong first, then the outbox
    /// in its order. A full channel leaves the next frame waiting in a task of its own.
    pub fn flush(&self) {
        let mut guard = self.0.borrow_mut();
        let state = &mut *guard;
        let mut wrote = false;
        loop {
            if state.stopped {
                return;
            }
            let Some(socket) = state.socket.as_mut() else {
                return; // a frame is waiting for room: it flushes again when written
            };
            let frame = match state.pong.take() {
                Some(payload) => Outgoing::Pong(payload),
                None => match state.outbox.pop() {
                    Some(text) => Outgoing::Text(text),
                    None => break,
                },
            };
            match try_send(socket, &frame) {
                Attempt::Sent => wrote = true,
                Attempt::Gone => {
                    state.stopped = true;
                    drop(guard);
                    self.gone();
                    return;
                }
                Attempt::Full => {
                    let socket = state.socket.take();
                    drop(guard);
                    if let Some(socket) = socket {
                        self.wait_for_room(socket, frame);
                    }
                    return;
                }
            }
        }
        let room = wrote && state.tell_room;
        let drained = state.close_when_drained && !state.drained_told;
        if drained {
            state.drained_told = true;
        }
        drop(guard);
        if room {
            self.tell(Written::Room);
        }
        if drained {
            self.tell(Written::Drained);
        }
    }

    /// Waits (in a task on this thread) until the socket takes `frame`, then writes on.
    fn wait_for_room(&self, mut socket: actix_ws::Session, frame: Outgoing) {
        let writer = self.clone();
        actix_rt::spawn(async move {
            let send = async {
                match &frame {
                    Outgoing::Text(text) => socket.text(text.clone()).await,
                    Outgoing::Pong(payload) => socket.pong(payload).await,
                }
            };
            let result = tokio::time::timeout(SEND_TIMEOUT, send).await;
            writer.0.borrow_mut().socket = Some(socket);
            match result {
                Ok(Ok(())) => {
                    let tell_room = writer.0.borrow().tell_room;
                    if tell_room {
                        writer.tell(Written::Room);
                    }
                    writer.flush();
                }
                Ok(Err(_closed)) => {
                    writer.0.borrow_mut().stopped = true;
                    writer.gone();
                }
                Err(_elapsed) => {
                    tracing::warn!("socket accepted nothing for 10 s: closing");
                    writer.tell(Written::SlowConsumer);
                }
            }
        });
    }

    fn gone(&self) {
        // docs/PROTOCOL.md#resume-and-delivery-guarantees: a failed send closes and removes the client at once.
        ::metrics::counter!(WS_BROADCAST_ERRORS_TOTAL).increment(1);
        self.tell(Written::Gone);
    }

    fn tell(&self, what: Written) {
        // The actor's mailbox is on this thread; `do_send` ignores its capacity, and these
        // are rare (one per close, or per written batch while catching up).
        let actor = self.0.borrow().actor.clone();
        actor.do_send(what);
    }
}

/// Hands `frame` to the socket's channel if it has room now. The send is polled once, outside
/// tokio's cooperative budget: a thread's fan-out writes to hundreds of sockets in one task
/// poll, and a spent budget would make a channel with room look full.
fn try_send(socket: &mut actix_ws::Session, frame: &Outgoing) -> Attempt {
    let sent = match frame {
        Outgoing::Text(text) => {
            tokio::task::unconstrained(socket.text(text.clone())).now_or_never()
        }
        Outgoing::Pong(payload) => tokio::task::unconstrained(socket.pong(payload)).now_or_never(),
    };
    match sent {
        Some(Ok(())) => Attempt::Sent,
        Some(Err(_closed)) => Attempt::Gone,
        None => Attempt::Full,
    }
}

#[cfg(test)]
mod tests {
    use std::future::poll_fn;
    use std::pin::Pin;
    use std::sync::{Arc, Mutex};

    use actix_web::body::MessageBody;
    use actix_web::http::header;
    use actix_web::test::TestRequest;

    use super::*;

    /// Records what the writer tells its actor.
    struct Told(Arc<Mutex<Vec<Written>>>);
    impl Actor for Told {
        type Context = Context<Self>;
    }
    impl Handler<Written> for Told {
        type Result = ();
        fn handle(&mut self, written: Written, _: &mut Self::Context) {
            self.0.lock().unwrap().push(written);
        }
    }

    /// A real actix-ws session over a test request: the writer's socket and the response body
    /// that the HTTP dispatcher would write to the connection.
    async fn socket() -> (actix_ws::Session, actix_web::body::BoxBody) {
        use actix_web::FromRequest;
        let (request, mut payload) = TestRequest::default()
            .insert_header((header::UPGRADE, "websocket"))
            .insert_header((header::CONNECTION, "upgrade"))
            .insert_header((header::SEC_WEBSOCKET_VERSION, "13"))
            .insert_header((header::SEC_WEBSOCKET_KEY, "dGhlIHNhbXBsZSBub25jZQ=="))
            .to_http_parts();
        let payload = actix_web::web::Payload::from_request(&request, &mut payload)
            .await
            .expect("payload");
        let (response, session, _incoming) = actix_ws::handle(&request, payload).expect("upgrade");
        (session, response.into_body())
    }

    /// One poll of the body: the bytes one `write` to the connection would carry.
    async fn next_chunk(body: &mut actix_web::body::BoxBody) -> Option<bytes::Bytes> {
        poll_fn(|cx| Pin::new(&mut *body).poll_next(cx))
            .await
            .map(|chunk| chunk.expect("body chunk"))
    }

    /// The texts of the unmasked server frames in `chunk` (payloads under 126 bytes).
    fn texts(chunk: &[u8]) -> Vec<String> {
        let mut texts = Vec::new();
        let mut rest = chunk;
        while let [opcode, len, tail @ ..] = rest {
            assert_eq!(*opcode, 0x81, "a final text frame");
            let len = usize::from(*len);
            assert!(len < 126 && tail.len() >= len, "short frame in the test");
            texts.push(String::from_utf8(tail[..len].to_vec()).unwrap());
            rest = &tail[len..];
        }
        texts
    }

    fn final_frame(seq: i64) -> Outbound {
        Outbound::Final {
            session: "s".into(),
            seq,
            utterance_id: format!("u{seq}").into(),
            frame: format!("final {seq}").into(),
        }
    }

    fn partial(utterance: &str, text: &str) -> Outbound {
        Outbound::Partial {
            utterance_id: utterance.into(),
            frame: text.to_owned().into(),
        }
    }

    #[actix_rt::test]
    async fn frames_delivered_before_the_socket_is_written_leave_in_one_write() {
        let told = Arc::new(Mutex::new(Vec::new()));
        let (session, mut body) = socket().await;
        let writer = SocketWriter::new(session, 100, Told(told.clone()).start().recipient());
        // Five deliveries with no write in between (as a hub's batches while the worker
        // thread is busy): no frame waits for the one before it to be accepted.
        for seq in 1..=5 {
            writer.deliver(final_frame(seq));
        }
        let chunk = next_chunk(&mut body).await.expect("a chunk");
        assert_eq!(
            texts(&chunk),
            (1..=5).map(|s| format!("final {s}")).collect::<Vec<_>>()
        );
        assert!(told.lock().unwrap().is_empty(), "nothing to tell the actor");
    }

    #[actix_rt::test]
    async fn a_full_channel_keeps_the_outbox_deciding_what_waits() {
        let told = Arc::new(Mutex::new(Vec::new()));
        let (session, mut body) = socket().await;
        let writer = SocketWriter::new(session, 100, Told(told.clone()).start().recipient());
        // The socket's channel takes 32 frames; the 33rd waits (in its task), the rest in the
        // outbox, where a newer partial replaces an older one of the same utterance and a
        // final goes before any partial.
        for seq in 1..=33 {
            writer.deliver(final_frame(seq));
        }
        writer.deliver(partial("p", "partial old"));
        writer.deliver(partial("p", "partial new"));
        writer.deliver(final_frame(34));
        let mut seen = Vec::new();
        while seen.len() < 35 {
            let chunk = next_chunk(&mut body).await.expect("a chunk");
            seen.extend(texts(&chunk));
            // Let the waiting task run and the writer refill the channel.
            tokio::task::yield_now().await;
        }
        let mut expected: Vec<String> = (1..=34).map(|s| format!("final {s}")).collect();
        expected.push("partial new".to_owned());
        assert_eq!(seen, expected);
        assert!(told.lock().unwrap().is_empty());
    }

    #[actix_rt::test]
    async fn too_many_finals_queued_tells_the_actor_once_per_refusal() {
        let told = Arc::new(Mutex::new(Vec::new()));
        let (session, _body) = socket().await;
        // Two finals may wait in the outbox beyond the channel's 32 and the one waiting.
        let writer = SocketWriter::new(session, 2, Told(told.clone()).start().recipient());
        for seq in 1..=36 {
            writer.deliver(final_frame(seq));
        }
        // Let the actor's mailbox run.
        tokio::task::yield_now().await;
        tokio::task::yield_now().await;
        assert_eq!(*told.lock().unwrap(), vec![Written::SlowConsumer]);
    }

    #[actix_rt::test]
    async fn a_socket_whose_body_is_gone_tells_the_actor() {
        let told = Arc::new(Mutex::new(Vec::new()));
        let (session, body) = socket().await;
        let writer = SocketWriter::new(session, 10, Told(told.clone()).start().recipient());
        drop(body); // the connection closed
        writer.deliver(final_frame(1));
        writer.deliver(final_frame(2));
        tokio::task::yield_now().await;
        tokio::task::yield_now().await;
        assert_eq!(*told.lock().unwrap(), vec![Written::Gone]);
    }
}
