//! A session's clients grouped by the worker thread they live on (docs/ARCHITECTURE.md#fan-out):
//! the broadcaster sends one batch per thread, naming the thread's clients, instead of one
//! message per client. Pure bookkeeping; the id lists are rebuilt only after a change.

use std::collections::HashMap;
use std::sync::Arc;

use actix::Recipient;

use crate::messages::{ClientId, DeliverBatch, FanOutThread};

/// The clients of one thread, and the lists a batch names.
struct Thread {
    batch: Recipient<DeliverBatch>,
    /// Client → live (`false`: catching up, so it gets control frames only).
    members: HashMap<ClientId, bool>,
    /// `None` after a change: rebuilt at the next batch.
    lists: Option<Lists>,
}

#[derive(Clone)]
struct Lists {
    live: Arc<[ClientId]>,
    all: Arc<[ClientId]>,
}

/// One thread's share of a frame: its hub and the clients it names.
pub struct Batch {
    pub thread: u64,
    pub hub: Recipient<DeliverBatch>,
    pub clients: Arc<[ClientId]>,
}

#[derive(Default)]
pub struct Threads {
    by_id: HashMap<u64, Thread>,
    /// Which thread each client is on.
    thread_of: HashMap<ClientId, u64>,
}

impl Threads {
    pub fn add(&mut self, client: ClientId, thread: FanOutThread, live: bool) {
        self.remove(client);
        let entry = self.by_id.entry(thread.id).or_insert_with(|| Thread {
            batch: thread.batch,
            members: HashMap::new(),
            lists: None,
        });
        entry.members.insert(client, live);
        entry.lists = None;
        self.thread_of.insert(client, thread.id);
    }

    /// A client that caught up gets transcripts from now on.
    pub fn set_live(&mut self, client: ClientId) {
        if let Some(thread) = self.thread(client) {
            if let Some(live) = thread.members.get_mut(&client) {
                *live = true;
                thread.lists = None;
            }
        }
    }

    pub fn remove(&mut self, client: ClientId) {
        let Some(id) = self.thread_of.remove(&client) else {
            return;
        };
        if let Some(thread) = self.by_id.get_mut(&id) {
            thread.members.remove(&client);
            thread.lists = None;
            if thread.members.is_empty() {
                self.by_id.remove(&id);
            }
        }
    }

    /// A thread whose hub is gone (its arbiter stopped): its clients with it.
    pub fn remove_thread(&mut self, id: u64) -> Vec<ClientId> {
        let Some(thread) = self.by_id.remove(&id) else {
            return Vec::new();
        };
        let clients: Vec<ClientId> = thread.members.into_keys().collect();
        for client in &clients {
            self.thread_of.remove(client);
        }
        clients
    }

    /// How many clients are reached through a thread.
    pub fn len(&self) -> usize {
        self.thread_of.len()
    }

    pub fn contains(&self, client: ClientId) -> bool {
        self.thread_of.contains_key(&client)
    }

    /// One batch per thread with anyone to receive it: the live clients for a transcript,
    /// all of them otherwise.
    pub fn batches(&mut self, transcript: bool) -> Vec<Batch> {
        let mut batches = Vec::with_capacity(self.by_id.len());
        for (id, thread) in &mut self.by_id {
            let lists = thread.lists.get_or_insert_with(|| Lists {
                live: thread
                    .members
                    .iter()
                    .filter(|(_, live)| **live)
                    .map(|(client, _)| *client)
                    .collect(),
                all: thread.members.keys().copied().collect(),
            });
            let clients = if transcript { &lists.live } else { &lists.all };
            if !clients.is_empty() {
                batches.push(Batch {
                    thread: *id,
                    hub: thread.batch.clone(),
                    clients: clients.clone(),
                });
            }
        }
        batches
    }

    fn thread(&mut self, client: ClientId) -> Option<&mut Thread> {
        let id = self.thread_of.get(&client)?;
        self.by_id.get_mut(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix::prelude::*;

    struct Sink;
    impl Actor for Sink {
        type Context = Context<Self>;
    }
    impl Handler<DeliverBatch> for Sink {
        type Result = ();
        fn handle(&mut self, _: DeliverBatch, _: &mut Self::Context) {}
    }

    fn thread(id: u64) -> FanOutThread {
        FanOutThread {
            id,
            batch: Sink.start().recipient(),
        }
    }

    fn names(batches: &[Batch]) -> Vec<(u64, Vec<u64>)> {
        let mut named: Vec<(u64, Vec<u64>)> = batches
            .iter()
            .map(|batch| {
                let mut ids: Vec<u64> = batch.clients.iter().map(|c| c.0).collect();
                ids.sort_unstable();
                (batch.thread, ids)
            })
            .collect();
        named.sort_unstable();
        named
    }

    #[actix_rt::test]
    async fn one_batch_per_thread_naming_its_clients() {
        let mut threads = Threads::default();
        let (a, b) = (thread(1), thread(2));
        threads.add(ClientId(10), a.clone(), true);
        threads.add(ClientId(11), a, true);
        threads.add(ClientId(20), b, true);
        assert_eq!(
            names(&threads.batches(true)),
            vec![(1, vec![10, 11]), (2, vec![20])]
        );
    }

    #[actix_rt::test]
    async fn catching_up_clients_get_control_frames_only_until_live() {
        let mut threads = Threads::default();
        let a = thread(1);
        threads.add(ClientId(10), a.clone(), true);
        threads.add(ClientId(11), a, false);
        assert_eq!(names(&threads.batches(true)), vec![(1, vec![10])]);
        assert_eq!(names(&threads.batches(false)), vec![(1, vec![10, 11])]);
        threads.set_live(ClientId(11));
        assert_eq!(names(&threads.batches(true)), vec![(1, vec![10, 11])]);
    }

    #[actix_rt::test]
    async fn removed_clients_and_empty_threads_get_no_batch() {
        let mut threads = Threads::default();
        let (a, b) = (thread(1), thread(2));
        threads.add(ClientId(10), a, true);
        threads.add(ClientId(20), b, false);
        threads.remove(ClientId(10));
        assert!(!threads.contains(ClientId(10)));
        // Thread 2's only client is catching up: no transcript batch at all.
        assert!(threads.batches(true).is_empty());
        assert_eq!(threads.remove_thread(2), vec![ClientId(20)]);
        assert!(threads.batches(false).is_empty());
    }
}
