//! The protocol logic of one live session, free of I/O: audio in, server messages out.
//!
//! The WebSocket layer feeds it frames and sends back whatever JSON it returns, in order.
//! Keeping it here (rather than in the socket loop) is what lets a session survive reconnects:
//! byte counters, the speech detector and utterance numbering all live with the session, not
//! with a connection.

use serde_json::Value;

use crate::config::MockConfig;
use crate::messages::{self, Utterance, BYTES_PER_SECOND};
use crate::records::{SentTranscript, SessionRecord};
use crate::speech_detector::{DetectorSettings, SpeechDetector, SpeechEvent};

/// Which optional messages the client asked for (`messages_config`), with Gladia's defaults.
#[derive(Debug, Clone, Copy)]
pub struct MessageFlags {
    pub partials: bool,
    pub finals: bool,
    pub speech_events: bool,
    pub acknowledgments: bool,
    pub post_processing: bool,
    pub lifecycle: bool,
}

impl MessageFlags {
    /// Reads `messages_config` of an already validated init body.
    pub fn from_init_body(body: &Value) -> Self {
        let flag = |name: &str, default: bool| {
            body.get("messages_config")
                .and_then(|m| m.get(name))
                .and_then(Value::as_bool)
                .unwrap_or(default)
        };
        MessageFlags {
            partials: flag("receive_partial_transcripts", false),
            finals: flag("receive_final_transcripts", true),
            speech_events: flag("receive_speech_events", true),
            acknowledgments: flag("receive_acknowledgments", true),
            post_processing: flag("receive_post_processing_events", true),
            lifecycle: flag("receive_lifecycle_events", false),
        }
    }
}

pub struct LiveSession {
    pub record: SessionRecord,
    flags: MessageFlags,
    detector: SpeechDetector,
    /// Finals produced so far (sent or not), for the post-processing results.
    utterances: Vec<Utterance>,
    drop_open_utterance_on_stop: bool,
}

impl LiveSession {
    pub fn new(record: SessionRecord, config: &MockConfig) -> Self {
        let flags = MessageFlags::from_init_body(&record.init_body);
        let mut settings = DetectorSettings {
            rms_threshold: config.speech_rms_threshold,
            endpoint_silence_ms: config.endpoint_silence_ms,
            partial_every_ms: config.partial_every_ms,
            max_utterance_ms: config.max_utterance_ms,
        };
        if config.honour_body_endpointing {
            let seconds_to_ms = |key: &str| {
                record
                    .init_body
                    .get(key)
                    .and_then(Value::as_f64)
                    .map(|s| (s * 1000.0).round() as u32)
            };
            if let Some(ms) = seconds_to_ms("endpointing") {
                settings.endpoint_silence_ms = ms;
            }
            if let Some(ms) = seconds_to_ms("maximum_duration_without_endpointing") {
                settings.max_utterance_ms = ms;
            }
        }
        LiveSession {
            record,
            flags,
            detector: SpeechDetector::new(settings),
            utterances: Vec::new(),
            drop_open_utterance_on_stop: config.drop_open_utterance_on_stop,
        }
    }

    fn id(&self) -> &str {
        &self.record.id
    }

    fn recording_duration(&self) -> f64 {
        self.record.pcm.len() as f64 / BYTES_PER_SECOND
    }

    /// One audio frame arrived: record it, ack it, and run recognition on it.
    pub fn on_audio(&mut self, bytes: &[u8]) -> Vec<Value> {
        if self.record.stop_received {
            return self.reject("audio_chunk", "Recording already stopped");
        }
        let mut out = Vec::new();
        if self.flags.lifecycle && self.record.pcm.is_empty() && !bytes.is_empty() {
            // When Gladia sends start_recording is UNCONFIRMED; the first audio byte is the
            // most natural reading.
            out.push(messages::lifecycle(self.id(), "start_recording"));
        }
        let start = self.record.pcm.len() as u64;
        self.record.pcm.extend_from_slice(bytes);
        self.record
            .pcm_arrivals
            .push((std::time::SystemTime::now(), self.record.pcm.len() as u64));
        self.record.audio_frames += 1;
        if self.flags.acknowledgments {
            out.push(messages::audio_chunk_ack(
                self.id(),
                start,
                self.record.pcm.len() as u64,
            ));
        }
        let events = self.detector.push(bytes);
        self.speech_messages(events, &mut out);
        out
    }

    /// A `{"type":"audio_chunk"}` whose chunk could not be decoded.
    pub fn on_bad_chunk(&mut self, problem: &str) -> Vec<Value> {
        self.reject("audio_chunk", problem)
    }

    /// `stop_recording`: ack, flush the open utterance, post-processing results. The caller
    /// closes the socket with 1000 after sending them.
    pub fn on_stop(&mut self) -> Vec<Value> {
        if self.record.stop_received {
            return self.reject("stop_recording", "Recording already stopped");
        }
        self.record.stop_received = true;
        let duration = self.recording_duration();
        let mut out = Vec::new();
        if self.flags.acknowledgments {
            out.push(messages::stop_recording_ack(self.id(), duration));
        }
        let events = self.detector.flush();
        if !self.drop_open_utterance_on_stop {
            self.speech_messages(events, &mut out);
        }
        if self.flags.lifecycle {
            out.push(messages::end_recording(self.id(), duration));
        }
        if self.flags.post_processing {
            out.push(messages::post_transcript(self.id(), &self.utterances));
            out.push(messages::post_final_transcript(
                self.id(),
                &self.utterances,
                duration,
            ));
        }
        if self.flags.lifecycle {
            out.push(messages::lifecycle(self.id(), "end_session"));
        }
        self.record.ended = true;
        self.record.closed_with_1000 = true;
        out
    }

    /// The client closed with 1000 without `stop_recording`: Gladia finishes in the background
    /// (results go to the callback), so the session just ends here.
    pub fn on_client_normal_close(&mut self) {
        for event in self.detector.flush() {
            if let SpeechEvent::Ended { index, start, end } = event {
                let utterance = final_utterance(index, start, end);
                self.utterances.push(utterance);
            }
        }
        self.record.ended = true;
        self.record.closed_with_1000 = true;
    }

    fn reject(&self, kind: &str, problem: &str) -> Vec<Value> {
        if self.flags.acknowledgments {
            vec![messages::rejected_ack(self.id(), kind, problem)]
        } else {
            Vec::new()
        }
    }

    fn speech_messages(&mut self, events: Vec<SpeechEvent>, out: &mut Vec<Value>) {
        for event in events {
            match event {
                SpeechEvent::Started { start, .. } => {
                    if self.flags.speech_events {
                        out.push(messages::speech_event(self.id(), "speech_start", start));
                    }
                }
                SpeechEvent::Partial {
                    index,
                    seq,
                    start,
                    end,
                } => {
                    if self.flags.partials {
                        let u = Utterance {
                            id: messages::utterance_id(index),
                            text: messages::utterance_text(index, end - start, Some(seq)),
                            start,
                            end,
                        };
                        out.push(messages::transcript(self.id(), &u, false));
                        self.record.partials_sent.push(sent(&u));
                    }
                }
                SpeechEvent::Ended { index, start, end } => {
                    let u = final_utterance(index, start, end);
                    // Final before speech_end, the order of the reference's §3.5 (which says
                    // the real order is UNCONFIRMED).
                    if self.flags.finals {
                        out.push(messages::transcript(self.id(), &u, true));
                        self.record.finals_sent.push(sent(&u));
                    }
                    if self.flags.speech_events {
                        out.push(messages::speech_event(self.id(), "speech_end", end));
                    }
                    self.utterances.push(u);
                }
            }
        }
    }
}

fn final_utterance(index: u32, start: f64, end: f64) -> Utterance {
    Utterance {
        id: messages::utterance_id(index),
        text: messages::utterance_text(index, end - start, None),
        start,
        end,
    }
}

fn sent(u: &Utterance) -> SentTranscript {
    SentTranscript {
        id: u.id.clone(),
        text: u.text.clone(),
        start: messages::round_ms(u.start),
        end: messages::round_ms(u.end),
        sent_at: std::time::SystemTime::now(),
    }
}
