//! The broadcaster's side of a paged resume, against an in-memory store whose writes can be
//! held back like the batcher's queue (docs/PROTOCOL.md#resume-and-delivery-guarantees).

use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use super::replay::REPLAY_RING;
use super::*;
use crate::persistence::memory::{MemoryStorage, WriteHeld};
use crate::wire::IncomingTranscript;

/// What the broadcaster pushes to one client.
struct Collect(Arc<Mutex<Vec<Outbound>>>, Arc<Notify>);
impl Actor for Collect {
    type Context = Context<Self>;
}
impl Handler<Deliver> for Collect {
    type Result = ();
    fn handle(&mut self, Deliver(outbound): Deliver, _: &mut Self::Context) {
        if let Ok(mut seen) = self.0.lock() {
            seen.push(outbound);
        }
        self.1.notify_waiters();
    }
}

fn relayed(seq: Option<i64>, utterance: i64) -> RelayedTranscript {
    RelayedTranscript(IncomingTranscript {
        kind: "transcript".into(),
        session_slug: "s".into(),
        utterance_id: format!("u{utterance}"),
        text: "hello".into(),
        is_final: seq.is_some(),
        speaker: "A".into(),
        speaker_id: "a".into(),
        ts: utterance,
        transcript_type: None,
        seq,
        started_at: Some(0),
        ended_at: Some(1),
        language: None,
        provisional: false,
    })
}

async fn post(broadcast: &Addr<BroadcastActor>, seqs: std::ops::RangeInclusive<i64>) {
    for seq in seqs {
        let outcome = broadcast.send(relayed(Some(seq), seq)).await.unwrap();
        assert_eq!(outcome, Some(RelayOutcome::Delivered), "final {seq}");
    }
}

fn transcripts(seen: &Mutex<Vec<Outbound>>) -> Vec<Option<i64>> {
    seen.lock()
        .unwrap()
        .iter()
        .filter_map(|o| match o {
            Outbound::Final { seq, .. } => Some(Some(*seq)),
            Outbound::Partial { .. } => Some(None),
            _ => None,
        })
        .collect()
}

#[actix_rt::test]
async fn a_resume_from_far_back_pages_through_the_database_the_batchers_gap_and_memory() {
    let (store, storage) = MemoryStorage::holding().start_storage();
    let broadcast = BroadcastActor::new("s", storage, Duration::from_secs(3)).start();
    // The ring keeps the newest REPLAY_RING; the 500 before them only the store has.
    let first = REPLAY_RING as i64 + 500;
    post(&broadcast, 1..=first).await;

    let seen = Arc::new(Mutex::new(Vec::new()));
    let changed = Arc::new(Notify::new());
    let client = ClientId::next();
    let deliver = Collect(seen.clone(), changed.clone()).start().recipient();
    broadcast
        .send(AddClient {
            id: client,
            deliver,
            thread: None,
            last_seq: Some(0),
        })
        .await
        .unwrap();
    let page = |after: i64| {
        broadcast.send(NextReplayPage {
            client,
            after,
            limit: 100,
        })
    };

    // Finals 1..=500 are still in the "batcher's queue": the page waits, it does not skip.
    assert!(matches!(page(0).await.unwrap(), ReplayPage::NotYet));
    store.send(WriteHeld).await.unwrap();

    let mut after = 0;
    let mut paged = Vec::new();
    let mut pages = 0;
    let last = first + 10;
    loop {
        match page(after).await.unwrap() {
            ReplayPage::Finals { frames, through } => {
                pages += 1;
                assert!(frames.len() <= 100, "page of {}", frames.len());
                paged.extend(frames.iter().filter_map(|o| match o {
                    Outbound::Final { seq, .. } => Some(*seq),
                    _ => None,
                }));
                after = through;
            }
            ReplayPage::Live => break,
            other => panic!("after {after}: {other:?}"),
        }
        if pages == 10 {
            // Live traffic meanwhile: finals wait their turn in the ring, partials are dropped.
            post(&broadcast, first + 1..=last).await;
            let partial = broadcast.send(relayed(None, last + 1)).await.unwrap();
            assert_eq!(partial, Some(RelayOutcome::Delivered));
        }
    }
    assert_eq!(
        paged,
        (1..=last).collect::<Vec<_>>(),
        "every final once, in order"
    );
    assert!(
        transcripts(&seen).is_empty(),
        "pushed during the catch-up: {:?}",
        transcripts(&seen)
    );

    // Live from the answer on: the next final is pushed.
    post(&broadcast, last + 1..=last + 1).await;
    let arrived = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let notified = changed.notified();
            if !transcripts(&seen).is_empty() {
                break;
            }
            notified.await;
        }
    })
    .await;
    assert!(arrived.is_ok(), "the first live final never came");
    assert_eq!(transcripts(&seen), vec![Some(last + 1)]);
}

#[actix_rt::test]
async fn a_client_without_last_seq_is_live_at_once() {
    let (_, storage) = MemoryStorage::default().start_storage();
    let broadcast = BroadcastActor::new("s", storage, Duration::from_secs(3)).start();
    post(&broadcast, 1..=3).await;
    let seen = Arc::new(Mutex::new(Vec::new()));
    let changed = Arc::new(Notify::new());
    let deliver = Collect(seen.clone(), changed.clone()).start().recipient();
    broadcast
        .send(AddClient {
            id: ClientId::next(),
            deliver,
            thread: None,
            last_seq: None,
        })
        .await
        .unwrap();
    post(&broadcast, 4..=4).await;
    let notified = changed.notified();
    if transcripts(&seen).is_empty() {
        let _ = tokio::time::timeout(Duration::from_secs(5), notified).await;
    }
    assert_eq!(
        transcripts(&seen),
        vec![Some(4)],
        "nothing replayed, live at once"
    );
}

/// A worker thread's hub, as the broadcaster sees it: what each batch named.
#[derive(Default)]
struct Hub {
    batches: Vec<(Option<i64>, usize)>,
}
impl Actor for Hub {
    type Context = Context<Self>;
}
impl Handler<DeliverBatch> for Hub {
    type Result = ();
    fn handle(&mut self, batch: DeliverBatch, _: &mut Self::Context) {
        let seq = match batch.outbound {
            Outbound::Final { seq, .. } => Some(seq),
            _ => None,
        };
        self.batches.push((seq, batch.clients.len()));
    }
}
#[derive(Message)]
#[rtype(result = "Vec<(Option<i64>, usize)>")]
struct Batches;
impl Handler<Batches> for Hub {
    type Result = MessageResult<Batches>;
    fn handle(&mut self, _: Batches, _: &mut Self::Context) -> Self::Result {
        MessageResult(std::mem::take(&mut self.batches))
    }
}

#[actix_rt::test]
async fn a_frame_for_a_hundred_clients_on_two_threads_is_two_messages() {
    let (_, storage) = MemoryStorage::default().start_storage();
    let broadcast = BroadcastActor::new("s", storage, Duration::from_secs(3)).start();
    let hubs = [Hub::default().start(), Hub::default().start()];
    let seen = Arc::new(Mutex::new(Vec::new()));
    let changed = Arc::new(Notify::new());
    let own = Collect(seen.clone(), changed)
        .start()
        .recipient::<Deliver>();
    // 60 live clients on thread 1, 40 on thread 2, and one on thread 1 still catching up.
    for (count, thread, last_seq) in [(60, 0, None), (40, 1, None), (1, 0, Some(0))] {
        for _ in 0..count {
            broadcast
                .send(AddClient {
                    id: ClientId::next(),
                    deliver: own.clone(),
                    thread: Some(FanOutThread {
                        id: thread as u64 + 1,
                        batch: hubs[thread].clone().recipient(),
                    }),
                    last_seq,
                })
                .await
                .unwrap();
        }
    }
    post(&broadcast, 1..=3).await;
    broadcast
        .send(BroadcastStatus {
            state: SessionState::Live,
            detail: String::new(),
        })
        .await
        .unwrap();
    // The broadcaster queued every batch before answering; the hubs' mailboxes are in order.
    assert_eq!(
        hubs[0].send(Batches).await.unwrap(),
        vec![(Some(1), 60), (Some(2), 60), (Some(3), 60), (None, 61)],
        "one batch per frame, naming the live clients (all of them for a status)"
    );
    assert_eq!(
        hubs[1].send(Batches).await.unwrap(),
        vec![(Some(1), 40), (Some(2), 40), (Some(3), 40), (None, 40)]
    );
    assert!(
        seen.lock().unwrap().is_empty(),
        "no client was messaged on its own"
    );
}
