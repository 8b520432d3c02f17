//! What a session sends to one WebSocket client. The broadcaster and the supervisor know a
//! client only as a [`ClientId`] and a `Recipient<Deliver>`, never as a `ClientActor`.

use std::sync::atomic::{AtomicU64, Ordering};

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
