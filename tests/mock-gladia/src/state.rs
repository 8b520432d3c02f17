//! State shared by the HTTP handlers, the WebSocket tasks and the test-facing handle.
//!
//! One `std::sync::Mutex` guards everything: critical sections are short and never cross an
//! `.await`. Every mutation bumps a `watch` counter so `MockGladia::wait_for` can sleep until
//! something changes instead of polling.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard};

use tokio::sync::watch;

use crate::config::MockConfig;
use crate::live_session::LiveSession;
use crate::records::{InitRecord, SessionRecord};

/// The socket currently attached to a session (at most one, like Gladia).
pub struct ActiveConnection {
    pub id: u64,
    pub ws: actix_ws::Session,
    /// Fault injection: asks the connection's own loop to close with this code, between two
    /// frames, so every ack of audio it recorded is on the wire before the close frame.
    pub inject_close: tokio::sync::mpsc::UnboundedSender<u16>,
}

pub struct SessionEntry {
    pub live: LiveSession,
    pub active: Option<ActiveConnection>,
}

#[derive(Default)]
pub struct Inner {
    pub init_requests: Vec<InitRecord>,
    /// Statuses to answer to the next init calls (fault injection).
    pub fail_next: VecDeque<u16>,
    /// In creation order; entries are never removed, so an index is a stable session handle.
    pub sessions: Vec<SessionEntry>,
    next_connection_id: u64,
}

impl Inner {
    pub fn session_index_by_token(&self, token: &str) -> Option<usize> {
        self.sessions
            .iter()
            .position(|s| s.live.record.token == token)
    }

    pub fn next_connection_id(&mut self) -> u64 {
        self.next_connection_id += 1;
        self.next_connection_id
    }
}

pub struct Shared {
    pub config: MockConfig,
    inner: Mutex<Inner>,
    changes: watch::Sender<u64>,
}

impl Shared {
    pub fn new(config: MockConfig) -> Self {
        Shared {
            config,
            inner: Mutex::new(Inner::default()),
            changes: watch::Sender::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock would be a mock bug; keep serving rather than
        // cascading panics into every test that shares the server.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Reads the state.
    pub fn read<R>(&self, f: impl FnOnce(&Inner) -> R) -> R {
        f(&self.lock())
    }

    /// Mutates the state and wakes `wait_for` callers.
    pub fn update<R>(&self, f: impl FnOnce(&mut Inner) -> R) -> R {
        let result = f(&mut self.lock());
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
        result
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    pub fn session_snapshots(&self) -> Vec<SessionRecord> {
        self.read(|i| i.sessions.iter().map(|s| s.live.record.clone()).collect())
    }
}
