//! What a session sends to one WebSocket client. The broadcaster and the supervisor know a
//! client only as a [`ClientId`] and a `Recipient<Deliver>`, never as a `ClientActor`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use actix::prelude::*;

use crate::outbox::Outbound;

/// Process-unique client id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ClientId(pub u64);

impl ClientId {
    pub fn next() -> ClientId {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        ClientId(NEXT.fetch_add(1, Ordering::Relaxed))
    }
}

/// A frame for this client from its session's broadcaster or supervisor.
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct Deliver(pub Outbound);

/// One frame for several clients of one worker thread, handed to that thread's fan-out hub
/// (`fan_out`): one message per thread instead of one per client.
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct DeliverBatch {
    pub clients: Arc<[ClientId]>,
    pub outbound: Outbound,
}

/// The worker thread a client lives on, as its sessions see it: the clients with the same
/// `id` are reached together through `batch`.
#[derive(Clone)]
pub struct FanOutThread {
    pub id: u64,
    pub batch: Recipient<DeliverBatch>,
}

impl std::fmt::Debug for FanOutThread {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FanOutThread")
            .field("id", &self.id)
            .finish()
    }
}

/// How a session reaches one client: its own mailbox (status, replies, the goodbye of a
/// client added late) and, for what goes to every client, the hub of its thread. Without a
/// thread (tests' collectors) everything goes to `deliver`.
#[derive(Clone)]
pub struct ClientLink {
    pub id: ClientId,
    pub deliver: Recipient<Deliver>,
    pub thread: Option<FanOutThread>,
}
