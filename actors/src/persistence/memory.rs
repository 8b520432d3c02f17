//! [`MemoryStorage`]: the storage messages answered from memory, for tests and benchmarks
//! that exercise sessions without a database (feature `test-support`).

use actix::prelude::*;

use super::{
    FinalRecord, IsStreamKeyRevoked, LoadFinalsAfter, LoadLastSeq, RevokeStreamKeys, SaveFinal,
    SaveSessionState, Storage, StorageError,
};

/// Keeps every final it is sent (or none, for benchmarks that only measure fan-out) and
/// answers the loads from them.
#[derive(Debug, Default)]
pub struct MemoryStorage {
    finals: Vec<FinalRecord>,
    discard: bool,
    revoked_nonces: std::collections::HashSet<String>,
    /// `Some`: finals wait here, unread by the loads, until [`WriteHeld`] (as they wait in the
    /// batcher's queue for a slow or absent database).
    held: Option<Vec<FinalRecord>>,
}

/// Makes the finals a [`MemoryStorage::holding`] store holds readable, in arrival order; later
/// ones are held again.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "()")]
pub struct WriteHeld;

impl MemoryStorage {
    /// Keeps nothing: every session starts at `seq` 1 and replays come back empty.
    pub fn discarding() -> MemoryStorage {
        MemoryStorage {
            discard: true,
            ..MemoryStorage::default()
        }
    }

    /// Holds every final until it is sent [`WriteHeld`].
    pub fn holding() -> MemoryStorage {
        MemoryStorage {
            held: Some(Vec::new()),
            ..MemoryStorage::default()
        }
    }

    /// Starts the actor and hands out its recipients as a [`Storage`].
    pub fn start_storage(self) -> (Addr<MemoryStorage>, Storage) {
        let addr = self.start();
        let storage = Storage {
            save_final: addr.clone().recipient(),
            load_last_seq: addr.clone().recipient(),
            load_finals_after: addr.clone().recipient(),
            save_session_state: addr.clone().recipient(),
            revoke_stream_keys: addr.clone().recipient(),
            is_stream_key_revoked: addr.clone().recipient(),
        };
        (addr, storage)
    }
}

impl Actor for MemoryStorage {
    type Context = Context<Self>;
}

impl Handler<SaveFinal> for MemoryStorage {
    type Result = ();
    fn handle(&mut self, SaveFinal(record): SaveFinal, _: &mut Self::Context) {
        if self.discard {
            return;
        }
        match &mut self.held {
            Some(held) => held.push(record),
            None => self.finals.push(record),
        }
    }
}

impl Handler<WriteHeld> for MemoryStorage {
    type Result = ();
    fn handle(&mut self, _: WriteHeld, _: &mut Self::Context) {
        if let Some(held) = &mut self.held {
            self.finals.append(held);
        }
    }
}

impl Handler<LoadLastSeq> for MemoryStorage {
    type Result = Result<i64, StorageError>;
    fn handle(&mut self, m: LoadLastSeq, _: &mut Self::Context) -> Self::Result {
        Ok(self
            .finals
            .iter()
            .filter(|f| f.session_slug == m.session_slug)
            .map(|f| f.seq)
            .max()
            .unwrap_or(0))
    }
}

impl Handler<LoadFinalsAfter> for MemoryStorage {
    type Result = Result<Vec<FinalRecord>, StorageError>;
    fn handle(&mut self, m: LoadFinalsAfter, _: &mut Self::Context) -> Self::Result {
        let mut found: Vec<FinalRecord> = self
            .finals
            .iter()
            .filter(|f| f.session_slug == m.session_slug && f.seq > m.after_seq)
            .cloned()
            .collect();
        found.sort_by_key(|f| f.seq);
        found.truncate(usize::try_from(m.limit).unwrap_or(0));
        Ok(found)
    }
}

impl Handler<SaveSessionState> for MemoryStorage {
    type Result = ();
    fn handle(&mut self, _: SaveSessionState, _: &mut Self::Context) {}
}

impl Handler<RevokeStreamKeys> for MemoryStorage {
    type Result = Result<(), StorageError>;
    fn handle(&mut self, m: RevokeStreamKeys, _: &mut Self::Context) -> Self::Result {
        self.revoked_nonces
            .extend(m.0.into_iter().map(|key| key.nonce));
        Ok(())
    }
}

impl Handler<IsStreamKeyRevoked> for MemoryStorage {
    type Result = Result<bool, StorageError>;
    fn handle(&mut self, m: IsStreamKeyRevoked, _: &mut Self::Context) -> Self::Result {
        Ok(self.revoked_nonces.contains(&m.nonce))
    }
}
