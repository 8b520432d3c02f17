//! [`WhisperActor`]: one provider stream on the whisper provider. It segments the session's
//! PCM into utterances, asks the pool for partials and finals, and reports the same messages
//! as any provider stream (`crate::messages::provider`).

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use actix::prelude::*;

use crate::messages::{
    now_ms, EndOfAudio, HandOver, PcmChunk, ProviderFinished, ProviderPhase, ProviderStatus,
    PublisherGap, StreamSinks, TranscriptEvent,
};
use crate::metrics::names::{WHISPER_FINALS_TOTAL, WHISPER_STT_LATENCY_MS};

use super::pool::{Decoded, Job, JobKind, JobOutcome};
use super::provider::{Admission, WhisperProvider};
use super::vad::{Segmenter, Utterance, SAMPLE_RATE};

/// A decode came back from the pool.
#[derive(Message)]
#[rtype(result = "()")]
struct DecodeReply {
    kind: JobKind,
    /// Which utterance: its index in the stream and its first sample.
    index: u64,
    start_sample: u64,
    outcome: JobOutcome,
}

/// A final waiting for its decode, or decoded and waiting for an earlier one.
struct PendingFinal {
    utterance: Utterance,
    last_partial: Option<TranscriptEvent>,
    /// `Some` once decoded: the event to send (`None`: nothing was said).
    ready: Option<Option<TranscriptEvent>>,
}

pub struct WhisperActor {
    session_slug: String,
    stream: u64,
    /// Unique across the service: the pool replaces a stream's pending partial by its newer one.
    pool_stream: u64,
    provider: Arc<WhisperProvider>,
    admission: Option<Admission>,
    transcripts: Recipient<TranscriptEvent>,
    status: Recipient<ProviderStatus>,
    finished: Recipient<ProviderFinished>,
    segmenter: Segmenter,
    /// Makes utterance ids unique across the session's provider streams.
    prefix: String,
    /// Wall clock (ms) of sample 0, moved on by each publisher gap.
    epoch_ms: Option<i64>,
    gap_since: Option<Instant>,
    /// Index of the open (or next) utterance.
    open_index: u64,
    /// The open utterance's last partial sent, and its length when the last partial was asked.
    open_partial: Option<TranscriptEvent>,
    asked_at_len: usize,
    partial_in_flight: bool,
    finals: BTreeMap<u64, PendingFinal>,
    end_of_audio: bool,
}

impl WhisperActor {
    pub fn new(
        session_slug: String,
        stream: u64,
        provider: Arc<WhisperProvider>,
        admission: Admission,
        sinks: StreamSinks,
    ) -> WhisperActor {
        // Nothing of a whisper stream lives outside this process: no checkpoints.
        let StreamSinks {
            transcripts,
            status,
            finished,
            checkpoints: _,
        } = sinks;
        let pool_stream = provider.streams.fetch_add(1, Ordering::Relaxed);
        let segmenter = Segmenter::new(provider.settings.vad);
        WhisperActor {
            session_slug,
            stream,
            pool_stream,
            provider,
            admission: Some(admission),
            transcripts,
            status,
            finished,
            segmenter,
            prefix: uuid::Uuid::new_v4().simple().to_string()[..8].to_owned(),
            epoch_ms: None,
            gap_since: None,
            open_index: 0,
            open_partial: None,
            asked_at_len: 0,
            partial_in_flight: false,
            finals: BTreeMap::new(),
            end_of_audio: false,
        }
    }

    fn utterance_id(&self, index: u64) -> String {
        format!("{}:w{}", self.prefix, index + 1)
    }

    fn wall_ms(&self, sample: u64) -> i64 {
        self.epoch_ms.unwrap_or_else(now_ms) + (sample * 1000 / SAMPLE_RATE as u64) as i64
    }

    fn event(
        &self,
        index: u64,
        start: u64,
        end: u64,
        decoded: Decoded,
        is_final: bool,
    ) -> TranscriptEvent {
        TranscriptEvent {
            utterance_id: self.utterance_id(index),
            text: decoded.text,
            is_final,
            started_at_ms: self.wall_ms(start),
            ended_at_ms: self.wall_ms(end),
            language: decoded.language,
            provider_speaker: None,
            received_at: Instant::now(),
            provisional: false,
        }
    }

    fn submit(
        &self,
        ctx: &Context<Self>,
        kind: JobKind,
        index: u64,
        start_sample: u64,
        samples: Vec<f32>,
    ) {
        let reply_to = ctx.address();
        self.provider.pool.submit(Job {
            kind,
            stream: self.pool_stream,
            samples: Arc::new(samples),
            reply: Box::new(move |outcome| {
                reply_to.do_send(DecodeReply {
                    kind,
                    index,
                    start_sample,
                    outcome,
                })
            }),
        });
    }

    /// Utterances the segmenter closed: each gets its final decode (or is dropped when it
    /// was too little speech and no partial was shown for it).
    fn close_utterances(&mut self, ended: Vec<Utterance>, ctx: &Context<Self>) {
        for utterance in ended {
            let index = self.open_index;
            self.open_index += 1;
            let last_partial = self.open_partial.take();
            self.asked_at_len = 0;
            if !utterance.is_speech() && last_partial.is_none() {
                continue;
            }
            self.submit(
                ctx,
                JobKind::Final,
                index,
                utterance.start_sample,
                utterance.samples.clone(),
            );
            self.finals.insert(
                index,
                PendingFinal {
                    utterance,
                    last_partial,
                    ready: None,
                },
            );
        }
    }

    fn maybe_ask_partial(&mut self, ctx: &Context<Self>) {
        if self.partial_in_flight || self.end_of_audio {
            return;
        }
        let period =
            self.provider.settings.partial_period.as_millis() as usize * SAMPLE_RATE / 1000;
        let Some((start, samples)) = self.segmenter.current() else {
            return;
        };
        if samples.len() >= self.asked_at_len + period.max(1) {
            self.asked_at_len = samples.len();
            self.partial_in_flight = true;
            let samples = samples.to_vec();
            self.submit(ctx, JobKind::Partial, self.open_index, start, samples);
        }
    }

    /// Sends the finals that are decoded and have no undecoded final before them.
    fn flush_finals(&mut self, ctx: &mut Context<Self>) {
        while let Some(entry) = self.finals.first_entry() {
            if entry.get().ready.is_none() {
                break;
            }
            if let Some(Some(event)) = entry.remove().ready {
                self.transcripts.do_send(event);
            }
        }
        self.finish_if_done(ctx);
    }

    fn finish_if_done(&mut self, ctx: &mut Context<Self>) {
        if self.end_of_audio && self.finals.is_empty() {
            // The place is free before the supervisor hears of the end (it may start a new stream).
            self.admission.take();
            self.finished.do_send(ProviderFinished {
                stream: self.stream,
                lost_audio_bytes: 0,
            });
            ctx.stop();
        }
    }

    /// Sends a partial while its utterance is open, or after it ended as long as its final is
    /// still being decoded (never after the final).
    fn partial_decoded(&mut self, index: u64, start_sample: u64, decoded: Decoded) {
        let open = index == self.open_index
            && self.segmenter.current().map(|(start, _)| start) == Some(start_sample);
        let end = if open {
            self.segmenter.position()
        } else {
            match self.finals.get(&index) {
                Some(p) if p.ready.is_none() && p.utterance.start_sample == start_sample => {
                    p.utterance.end_sample
                }
                _ => return,
            }
        };
        let event = self.event(index, start_sample, end, decoded, false);
        if open {
            self.open_partial = Some(event.clone());
        } else if let Some(pending) = self.finals.get_mut(&index) {
            pending.last_partial = Some(event.clone());
        }
        self.transcripts.do_send(event);
    }

    fn account_gap(&mut self) {
        if let (Some(since), Some(epoch)) = (self.gap_since.take(), self.epoch_ms.as_mut()) {
            *epoch += since.elapsed().as_millis() as i64;
        }
    }
}

impl Actor for WhisperActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(1024);
        self.status.do_send(ProviderStatus {
            stream: self.stream,
            phase: ProviderPhase::Streaming,
            detail: format!(
                "transcribing on this machine ({})",
                self.provider.settings.model
            ),
            provider_session_id: Some(format!("whisper:{}", self.prefix)),
        });
    }
}

impl Handler<PcmChunk> for WhisperActor {
    type Result = ();

    fn handle(&mut self, chunk: PcmChunk, ctx: &mut Self::Context) {
        if self.end_of_audio {
            return;
        }
        self.account_gap();
        let samples: Vec<i16> = chunk
            .pcm
            .chunks_exact(2)
            .map(|b| i16::from_le_bytes([b[0], b[1]]))
            .collect();
        if self.epoch_ms.is_none() {
            self.epoch_ms = Some(now_ms() - (samples.len() * 1000 / SAMPLE_RATE) as i64);
        }
        let ended = self.segmenter.push(&samples);
        self.close_utterances(ended, ctx);
        self.maybe_ask_partial(ctx);
    }
}

impl Handler<DecodeReply> for WhisperActor {
    type Result = ();

    fn handle(&mut self, reply: DecodeReply, ctx: &mut Self::Context) {
        let decoded = match reply.outcome {
            JobOutcome::Done {
                result: Ok(decoded),
                latency,
                decode,
            } => {
                if reply.kind == JobKind::Final {
                    ::metrics::counter!(WHISPER_FINALS_TOTAL).increment(1);
                    ::metrics::histogram!(WHISPER_STT_LATENCY_MS)
                        .record(latency.as_secs_f64() * 1000.0);
                }
                tracing::debug!(session = %self.session_slug, kind = ?reply.kind, decode_ms = decode.as_millis() as u64, latency_ms = latency.as_millis() as u64, chars = decoded.text.len(), "whisper decode");
                Some(decoded)
            }
            JobOutcome::Done {
                result: Err(error), ..
            } => {
                tracing::warn!(session = %self.session_slug, kind = ?reply.kind, %error, "whisper decode failed");
                None
            }
            JobOutcome::Skipped => None,
        };
        match reply.kind {
            JobKind::Partial => {
                self.partial_in_flight = false;
                if let Some(decoded) = decoded.filter(|d| !d.text.is_empty()) {
                    self.partial_decoded(reply.index, reply.start_sample, decoded);
                }
                self.maybe_ask_partial(ctx);
            }
            JobKind::Final => {
                let Some(pending) = self.finals.get(&reply.index) else {
                    return;
                };
                let (start, end) = (pending.utterance.start_sample, pending.utterance.end_sample);
                let event = match decoded.filter(|d| !d.text.is_empty()) {
                    Some(decoded) => Some(self.event(reply.index, start, end, decoded, true)),
                    // Nothing understood, but a partial was shown: keep it as a provisional final,
                    // as the Gladia path does with a partial its provider never finalized.
                    None => pending.last_partial.clone().map(|partial| TranscriptEvent {
                        is_final: true,
                        provisional: true,
                        received_at: Instant::now(),
                        ..partial
                    }),
                };
                if let Some(pending) = self.finals.get_mut(&reply.index) {
                    pending.ready = Some(event);
                }
                self.flush_finals(ctx);
            }
        }
    }
}

impl Handler<EndOfAudio> for WhisperActor {
    type Result = ();

    fn handle(&mut self, _: EndOfAudio, ctx: &mut Self::Context) {
        if self.end_of_audio {
            return;
        }
        let last = self.segmenter.finish();
        self.close_utterances(last.into_iter().collect(), ctx);
        self.end_of_audio = true;
        self.finish_if_done(ctx);
    }
}

/// A whisper stream cannot be continued on another instance: it ends as for [`EndOfAudio`]
/// (the finals it still makes are the new owner's to number, so the broadcaster drops them).
impl Handler<HandOver> for WhisperActor {
    type Result = ();

    fn handle(&mut self, _: HandOver, ctx: &mut Self::Context) {
        <Self as Handler<EndOfAudio>>::handle(self, EndOfAudio, ctx);
    }
}

impl Handler<PublisherGap> for WhisperActor {
    /// The publisher left: what was said so far is an utterance of its own; the time away is
    /// added to the clock when audio comes back.
    type Result = ();

    fn handle(&mut self, _: PublisherGap, ctx: &mut Self::Context) {
        if self.end_of_audio || self.gap_since.is_some() {
            return;
        }
        self.gap_since = Some(Instant::now());
        let last = self.segmenter.finish();
        self.close_utterances(last.into_iter().collect(), ctx);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::whisper::pool::Transcriber;
    use crate::whisper::provider::{Measurement, WhisperSettings};
    use crate::whisper::vad::VadConfig;
    use std::sync::Mutex;

    /// "Decodes" by describing the clip: its length in tenths of a second.
    struct Describe;

    impl Transcriber for Describe {
        fn transcribe(&self, samples: &[f32]) -> Result<Decoded, String> {
            std::thread::sleep(Duration::from_millis(30));
            Ok(Decoded {
                text: format!("clip of {} tenths", samples.len() / 1_600),
                language: Some("en".into()),
            })
        }
    }

    #[derive(Debug)]
    enum Seen {
        Transcript(TranscriptEvent),
        Status(ProviderStatus),
        Finished(ProviderFinished),
    }

    struct Collector {
        seen: Arc<Mutex<Vec<Seen>>>,
        done: Option<tokio::sync::oneshot::Sender<()>>,
    }

    impl Actor for Collector {
        type Context = Context<Self>;
    }

    impl Handler<TranscriptEvent> for Collector {
        type Result = ();
        fn handle(&mut self, msg: TranscriptEvent, _: &mut Self::Context) {
            self.seen.lock().unwrap().push(Seen::Transcript(msg));
        }
    }

    impl Handler<ProviderStatus> for Collector {
        type Result = ();
        fn handle(&mut self, msg: ProviderStatus, _: &mut Self::Context) {
            self.seen.lock().unwrap().push(Seen::Status(msg));
        }
    }

    impl Handler<ProviderFinished> for Collector {
        type Result = ();
        fn handle(&mut self, msg: ProviderFinished, _: &mut Self::Context) {
            self.seen.lock().unwrap().push(Seen::Finished(msg));
            if let Some(done) = self.done.take() {
                let _ = done.send(());
            }
        }
    }

    impl Handler<crate::messages::ProviderCheckpoint> for Collector {
        type Result = ();
        fn handle(&mut self, _: crate::messages::ProviderCheckpoint, _: &mut Self::Context) {}
    }

    fn pcm(samples: impl Iterator<Item = i16>) -> Vec<PcmChunk> {
        let bytes: Vec<u8> = samples.flat_map(i16::to_le_bytes).collect();
        bytes
            .chunks(3_200) // 100 ms, as the ingest sends it
            .map(|c| PcmChunk {
                pcm: bytes::Bytes::copy_from_slice(c),
            })
            .collect()
    }

    fn tone(ms: usize) -> impl Iterator<Item = i16> {
        (0..ms * 16).map(|i| {
            let t = i as f32 / 16_000.0;
            (9_000.0 * (2.0 * std::f32::consts::PI * 200.0 * t).sin()) as i16
        })
    }

    fn quiet(ms: usize) -> impl Iterator<Item = i16> {
        (0..ms * 16).map(|i| ((i * 7_919) % 13) as i16 - 6)
    }

    fn provider(capacity: usize) -> Arc<WhisperProvider> {
        Arc::new(WhisperProvider::new(
            Arc::new(Describe),
            1,
            WhisperSettings {
                vad: VadConfig {
                    endpoint_silence: Duration::from_millis(400),
                    max_utterance: Duration::from_secs(5),
                },
                partial_period: Duration::from_millis(500),
                model: "describe".into(),
            },
            Measurement {
                decode_ms: 30,
                decodes_per_sec: 33.0,
                realtime_sessions: 13,
            },
            Some(capacity),
        ))
    }

    #[actix_rt::test]
    async fn utterances_become_partials_then_ordered_finals_and_the_place_is_given_back() {
        let provider = provider(1);
        let admission = provider.admit().expect("one place");
        assert!(provider.admit().is_err(), "capacity 1 admits one session");
        assert_eq!(provider.status().refused_sessions, 1);

        let seen = Arc::new(Mutex::new(Vec::new()));
        let (done, finished) = tokio::sync::oneshot::channel();
        let collector = Collector {
            seen: seen.clone(),
            done: Some(done),
        }
        .start();
        let actor = WhisperActor::new(
            "unit".into(),
            7,
            provider.clone(),
            admission,
            StreamSinks {
                transcripts: collector.clone().recipient(),
                status: collector.clone().recipient(),
                finished: collector.clone().recipient(),
                checkpoints: collector.recipient(),
            },
        )
        .start();
        let audio = quiet(500)
            .chain(tone(1_500))
            .chain(quiet(1_000))
            .chain(tone(1_200))
            .chain(quiet(200));
        for chunk in pcm(audio) {
            actor.send(chunk).await.unwrap();
            // Real time would be 100 ms; a little time lets partial decodes come back.
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        actor.do_send(EndOfAudio);
        tokio::time::timeout(Duration::from_secs(10), finished)
            .await
            .expect("the stream finishes")
            .unwrap();

        let seen = seen.lock().unwrap();
        assert!(
            matches!(&seen[0], Seen::Status(s) if s.phase == ProviderPhase::Streaming && s.stream == 7)
        );
        assert!(matches!(seen.last(), Some(Seen::Finished(f)) if f.stream == 7));
        let events: Vec<&TranscriptEvent> = seen
            .iter()
            .filter_map(|s| match s {
                Seen::Transcript(t) => Some(t),
                _ => None,
            })
            .collect();
        let finals: Vec<&&TranscriptEvent> = events.iter().filter(|e| e.is_final).collect();
        assert_eq!(finals.len(), 2, "{events:#?}");
        assert!(finals[0].utterance_id.ends_with(":w1") && finals[1].utterance_id.ends_with(":w2"));
        // 1.5 s of tone plus up to 200 ms pre-roll and tail: 15-19 tenths.
        assert!(
            finals[0].text.starts_with("clip of 1"),
            "{}",
            finals[0].text
        );
        for f in &finals {
            let first_final = events
                .iter()
                .position(|e| e.is_final && e.utterance_id == f.utterance_id)
                .unwrap();
            let partials = events
                .iter()
                .enumerate()
                .filter(|(_, e)| !e.is_final && e.utterance_id == f.utterance_id);
            assert!(
                partials.clone().count() >= 1,
                "no partial for {}",
                f.utterance_id
            );
            assert!(
                partials.into_iter().all(|(i, _)| i < first_final),
                "a partial after the final"
            );
            assert!(f.started_at_ms < f.ended_at_ms);
            assert_eq!(f.language.as_deref(), Some("en"));
        }
        drop(seen);
        assert_eq!(provider.status().active_sessions, 0);
        assert!(provider.admit().is_ok(), "the place is free again");
    }
}
