//! Criterion benchmarks for the hot paths of issue #5: PCM chunking, message serialisation,
//! the per-client outbox, and one broadcast to N in-memory clients.
//!
//!     cargo bench -p actors --bench hot_paths
//!
//! Figures and how to read them: docs/PERFORMANCE.md.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ::actors::broadcast::{AddClient, BroadcastActor};
use ::actors::messages::TranscriptEvent;
use ::actors::messages::{ClientId, Deliver};
use ::actors::outbox::{Outbound, Outbox};
use ::actors::persistence::memory::MemoryStorage;
use ::actors::wire::{to_json, TranscriptMessage};
use actix::prelude::*;
use bytestring::ByteString;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use pipelines::PcmChunker;
use tokio::sync::Notify;

/// 20 ms of 16 kHz mono S16LE: what the decoder hands over per AAC frame (~21 ms at 48 kHz).
const DECODER_BUFFER_BYTES: usize = 640;

fn chunking(c: &mut Criterion) {
    let mut group = c.benchmark_group("chunking");
    let pcm = vec![7u8; DECODER_BUFFER_BYTES];
    // One second of audio per iteration, in decoder-sized pushes, cut into 100 ms chunks.
    group.throughput(Throughput::Bytes(32_000));
    group.bench_function("one_second_into_100ms_chunks", |b| {
        let mut chunker = PcmChunker::new(100, 50);
        let now = Instant::now();
        b.iter(|| {
            let mut chunks = 0;
            for _ in 0..50 {
                chunks += chunker.push(std::hint::black_box(&pcm), now).len();
            }
            std::hint::black_box(chunks)
        });
    });
    group.finish();
}

fn message(seq: i64, text: &str) -> TranscriptMessage<'_> {
    TranscriptMessage {
        kind: "transcript",
        session_slug: "weekly-sync",
        utterance_id: "p1-00_00000042",
        text,
        is_final: true,
        speaker: "Alice Example",
        speaker_id: "alice",
        ts: 1_764_480_000_000,
        transcript_type: "final",
        seq: Some(seq),
        started_at: 1_764_479_990_000,
        ended_at: 1_764_479_995_000,
        language: Some("en"),
        provisional: false,
    }
}

fn serialization(c: &mut Criterion) {
    let mut group = c.benchmark_group("serialization");
    let text = "so the next thing on the agenda is the quarterly review of the ingest latency";
    group.bench_function("final_transcript_message", |b| {
        let mut seq = 0;
        b.iter(|| {
            seq += 1;
            std::hint::black_box(to_json(&message(seq, std::hint::black_box(text))))
        });
    });
    group.finish();
}

fn outbox(c: &mut Criterion) {
    let mut group = c.benchmark_group("outbox");
    let partial: ByteString = to_json(&message(1, "partial words")).into();
    let final_frame: ByteString = to_json(&message(1, "final words")).into();
    let session: Arc<str> = "weekly-sync".into();
    // A typical utterance as one client sees it: ten partials, then the final, then the socket
    // takes everything queued.
    group.bench_function("ten_partials_then_final_then_drain", |b| {
        let mut outbox = Outbox::new(1000);
        let mut seq = 0i64;
        b.iter(|| {
            seq += 1;
            let utterance: Arc<str> = format!("u{seq}").into();
            for _ in 0..10 {
                outbox.push(Outbound::Partial {
                    utterance_id: utterance.clone(),
                    frame: partial.clone(),
                });
            }
            outbox.push(Outbound::Final {
                session: session.clone(),
                seq,
                utterance_id: utterance,
                frame: final_frame.clone(),
            });
            while let Some(frame) = outbox.pop() {
                std::hint::black_box(frame);
            }
        });
    });
    group.finish();
}

/// A client without a socket: it queues each frame in a real [`Outbox`] and pops it, as the
/// `ClientActor` does before writing, and says when every client has the current frame.
struct SinkClient {
    outbox: Outbox,
    received: Arc<AtomicUsize>,
    expected: Arc<AtomicUsize>,
    all_received: Arc<Notify>,
}
impl Actor for SinkClient {
    type Context = Context<Self>;
}
impl Handler<Deliver> for SinkClient {
    type Result = ();
    fn handle(&mut self, Deliver(outbound): Deliver, _: &mut Self::Context) {
        let counts = !matches!(outbound, Outbound::Control(_));
        self.outbox.push(outbound);
        while let Some(frame) = self.outbox.pop() {
            std::hint::black_box(frame);
        }
        if counts
            && self.received.fetch_add(1, Ordering::AcqRel) + 1
                == self.expected.load(Ordering::Acquire)
        {
            self.all_received.notify_one();
        }
    }
}

fn event(n: u64, is_final: bool) -> TranscriptEvent {
    TranscriptEvent {
        utterance_id: format!("u{}", (n - 1) / 8),
        text: "so the next thing on the agenda is the quarterly review".to_owned(),
        is_final,
        started_at_ms: 1_764_479_990_000,
        ended_at_ms: 1_764_479_995_000,
        language: Some("en".to_owned()),
        provider_speaker: None,
        received_at: Instant::now(),
        provisional: false,
    }
}

/// One provider message handed to the `BroadcastActor` until every one of N clients has
/// taken it from its outbox. All actors share one arbiter, so this is the actor-side cost of
/// a fan-out (serialise once, N mailbox sends, N outbox passes), without socket writes.
fn broadcast(c: &mut Criterion) {
    let mut group = c.benchmark_group("broadcast");
    group.measurement_time(Duration::from_secs(5));
    for clients in [10usize, 100, 1000] {
        group.throughput(Throughput::Elements(clients as u64));
        group.bench_with_input(
            BenchmarkId::new("partial_to_n_clients", clients),
            &clients,
            |b, &clients| {
                let system = actix::System::new();
                let received = Arc::new(AtomicUsize::new(0));
                let expected = Arc::new(AtomicUsize::new(usize::MAX));
                let all_received = Arc::new(Notify::new());
                let broadcaster = system.block_on(async {
                    // Keeps nothing: this measures fan-out, not the database.
                    let (_, storage) = MemoryStorage::discarding().start_storage();
                    let broadcaster =
                        BroadcastActor::new("bench", storage, Duration::from_secs(3)).start();
                    for _ in 0..clients {
                        let sink = SinkClient {
                            outbox: Outbox::new(1000),
                            received: received.clone(),
                            expected: expected.clone(),
                            all_received: all_received.clone(),
                        }
                        .start();
                        broadcaster
                            .send(AddClient {
                                id: ClientId::next(),
                                deliver: sink.recipient(),
                                thread: None,
                                last_seq: None,
                            })
                            .await
                            .expect("broadcaster alive");
                    }
                    broadcaster
                });
                let mut n = 0u64;
                b.iter_custom(|iters| {
                    system.block_on(async {
                        let started = Instant::now();
                        for _ in 0..iters {
                            n += 1;
                            received.store(0, Ordering::Release);
                            expected.store(clients, Ordering::Release);
                            let done = all_received.notified();
                            // Every eighth message finalizes its utterance, as in speech.
                            broadcaster.do_send(event(n, n.is_multiple_of(8)));
                            done.await;
                        }
                        started.elapsed()
                    })
                });
            },
        );
    }
    group.finish();
}

criterion_group!(hot_paths, chunking, serialization, outbox, broadcast);
criterion_main!(hot_paths);
