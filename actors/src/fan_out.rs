//! `FanOutHub`: one per worker thread, the clients of that thread as one recipient
//! (docs/ARCHITECTURE.md#fan-out).
//!
//! A session's broadcaster does not message each client: it sends one [`DeliverBatch`] per
//! worker thread that has clients of the session, naming them, and the hub of that thread
//! hands the frame to each one's [`SocketWriter`] in a plain loop. A transcript to 1,000
//! clients on two threads is two wake-ups, not 1,000.
//!
//! The hub is started on the first client of a thread ([`join`]) and knows the clients of its
//! thread only through a thread-local table of writers; a client leaves it when its actor
//! stops ([`leave`]). A batch naming a client that already left skips it: the session hears
//! of the departure from the client's `Unsubscribe`.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use actix::prelude::*;

use crate::messages::{ClientId, DeliverBatch, FanOutThread};
use crate::socket_writer::SocketWriter;

/// Batches one hub may have waiting. Finals and control frames are sent regardless (the
/// broadcaster's `do_send`); a partial that finds the mailbox full is dropped and counted.
const HUB_MAILBOX: usize = 4096;

struct Hub {
    addr: Addr<FanOutHub>,
    thread: FanOutThread,
}

thread_local! {
    static HUB: RefCell<Option<Hub>> = const { RefCell::new(None) };
    static WRITERS: RefCell<HashMap<ClientId, SocketWriter>> = RefCell::new(HashMap::new());
}

/// Registers a client's writer with this thread's hub (starting the hub on first use) and
/// returns how sessions reach it.
pub fn join(client: ClientId, writer: SocketWriter) -> FanOutThread {
    WRITERS.with(|writers| writers.borrow_mut().insert(client, writer));
    HUB.with(|hub| {
        let mut hub = hub.borrow_mut();
        if let Some(running) = hub.as_ref().filter(|h| h.addr.connected()) {
            return running.thread.clone();
        }
        static NEXT: AtomicU64 = AtomicU64::new(1);
        let addr = FanOutHub.start();
        let thread = FanOutThread {
            id: NEXT.fetch_add(1, Ordering::Relaxed),
            batch: addr.clone().recipient(),
        };
        *hub = Some(Hub {
            addr,
            thread: thread.clone(),
        });
        thread
    })
}

/// The client's actor stopped: its writer leaves this thread's table.
pub fn leave(client: ClientId) {
    // `try_with`: a client stopped while the thread's locals are torn down has nothing to leave.
    let _ = WRITERS.try_with(|writers| writers.borrow_mut().remove(&client));
}

/// The hub of one worker thread. It holds no state of its own: the writers are the thread's.
pub struct FanOutHub;

impl Actor for FanOutHub {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(HUB_MAILBOX);
    }
}

impl Handler<DeliverBatch> for FanOutHub {
    type Result = ();

    fn handle(&mut self, batch: DeliverBatch, _: &mut Self::Context) {
        // The writers are cloned out first: a writer's `deliver` may (through the actor it
        // tells) end with a client leaving the table, which must not happen under a borrow.
        let writers: Vec<SocketWriter> = WRITERS.with(|writers| {
            let writers = writers.borrow();
            batch
                .clients
                .iter()
                .filter_map(|id| writers.get(id).cloned())
                .collect()
        });
        for writer in writers {
            writer.deliver(batch.outbound.clone());
        }
    }
}
