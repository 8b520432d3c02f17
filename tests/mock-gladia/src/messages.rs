//! Server → client WebSocket messages, in the exact shapes of the Gladia Live v2 reference (§3.3,
//! §3.4). Every message carries the common envelope `{session_id, created_at, type}`.

use serde_json::{json, Value};

use crate::timestamp::now_iso8601;

/// Bytes per second of PCM16 mono 16 kHz, the only format the mock accepts.
pub const BYTES_PER_SECOND: f64 = 32_000.0;

/// One recognised utterance, as listed in transcripts and post-processing results.
#[derive(Debug, Clone)]
pub struct Utterance {
    pub id: String,
    pub text: String,
    pub start: f64,
    pub end: f64,
}

/// `data.id` of utterance `n`: channel 0, per-session counter, as in the Gladia docs.
pub fn utterance_id(n: u32) -> String {
    format!("00_{n:08}")
}

/// Deterministic stand-in for recognised text. Finals read
/// `" utterance 3 lasting 1.42 seconds"`; partial `seq` shows the first `seq` words of the same
/// sentence (computed with the duration so far), so partials grow like real ones do.
pub fn utterance_text(n: u32, duration: f64, partial_seq: Option<u32>) -> String {
    let words = [
        "utterance".to_owned(),
        n.to_string(),
        "lasting".to_owned(),
        format!("{duration:.2}"),
        "seconds".to_owned(),
    ];
    let count = partial_seq.map_or(words.len(), |seq| (seq as usize).clamp(1, words.len()));
    words[..count]
        .iter()
        .map(|w| format!(" {w}"))
        .collect::<String>()
}

/// Rounds to milliseconds so JSON shows `1.42`, not `1.4200000000000002`.
pub fn round_ms(seconds: f64) -> f64 {
    (seconds * 1000.0).round() / 1000.0
}

fn envelope(session_id: &str, kind: &str) -> serde_json::Map<String, Value> {
    let mut m = serde_json::Map::new();
    m.insert("session_id".into(), session_id.into());
    m.insert("created_at".into(), now_iso8601().into());
    m.insert("type".into(), kind.into());
    m
}

fn with(mut m: serde_json::Map<String, Value>, extra: Value) -> Value {
    if let Value::Object(extra) = extra {
        m.extend(extra);
    }
    Value::Object(m)
}

/// `UtteranceDTO`: words are spread evenly over the utterance, each with its leading space.
pub fn utterance_json(u: &Utterance) -> Value {
    let words: Vec<&str> = u.text.split_whitespace().collect();
    let step = if words.is_empty() {
        0.0
    } else {
        (u.end - u.start) / words.len() as f64
    };
    let words: Vec<Value> = words
        .iter()
        .enumerate()
        .map(|(i, w)| {
            json!({
                "word": format!(" {w}"),
                "start": round_ms(u.start + step * i as f64),
                "end": round_ms(u.start + step * (i + 1) as f64),
                "confidence": 0.9,
            })
        })
        .collect();
    json!({
        "text": u.text,
        "start": round_ms(u.start),
        "end": round_ms(u.end),
        "language": "en",
        "confidence": 0.9,
        "channel": 0,
        "words": words,
    })
}

pub fn transcript(session_id: &str, u: &Utterance, is_final: bool) -> Value {
    with(
        envelope(session_id, "transcript"),
        json!({"data": {"id": u.id, "is_final": is_final, "utterance": utterance_json(u)}}),
    )
}

/// `speech_start` or `speech_end`.
pub fn speech_event(session_id: &str, kind: &str, time: f64) -> Value {
    with(
        envelope(session_id, kind),
        json!({"data": {"time": round_ms(time), "channel": 0}}),
    )
}

/// Ack of one audio chunk; ranges are half-open and session-relative (`end` = bytes so far),
/// which is what the official SDK's resume logic relies on.
pub fn audio_chunk_ack(session_id: &str, start: u64, end: u64) -> Value {
    with(
        envelope(session_id, "audio_chunk"),
        json!({
            "acknowledged": true,
            "error": null,
            "data": {
                "byte_range": [start, end],
                // Not rounded: time_range must stay exactly byte_range / 32000.
                "time_range": [start as f64 / BYTES_PER_SECOND, end as f64 / BYTES_PER_SECOND],
            },
        }),
    )
}

/// A rejected message (`acknowledged: false`), OAS `Error {message}` shape.
pub fn rejected_ack(session_id: &str, kind: &str, message: &str) -> Value {
    with(
        envelope(session_id, kind),
        json!({"acknowledged": false, "error": {"message": message}, "data": null}),
    )
}

pub fn stop_recording_ack(session_id: &str, recording_duration: f64) -> Value {
    with(
        envelope(session_id, "stop_recording"),
        json!({
            "acknowledged": true,
            "error": null,
            "data": {"recording_duration": recording_duration, "recording_left_to_process": 0},
        }),
    )
}

/// Lifecycle message without data (`start_recording`, `end_session`).
pub fn lifecycle(session_id: &str, kind: &str) -> Value {
    Value::Object(envelope(session_id, kind))
}

pub fn end_recording(session_id: &str, recording_duration: f64) -> Value {
    with(
        envelope(session_id, "end_recording"),
        json!({"data": {"recording_duration": round_ms(recording_duration)}}),
    )
}

fn transcription(utterances: &[Utterance]) -> Value {
    let full = utterances
        .iter()
        .map(|u| u.text.trim())
        .collect::<Vec<_>>()
        .join(" ");
    json!({
        "full_transcript": full,
        "languages": ["en"],
        "utterances": utterances.iter().map(utterance_json).collect::<Vec<_>>(),
    })
}

pub fn post_transcript(session_id: &str, utterances: &[Utterance]) -> Value {
    with(
        envelope(session_id, "post_transcript"),
        json!({"data": transcription(utterances)}),
    )
}

/// `StreamingTranscriptionResultDTO`; add-ons are never enabled in the mock, so they are null.
pub fn post_final_transcript(
    session_id: &str,
    utterances: &[Utterance],
    audio_duration: f64,
) -> Value {
    let audio_duration = round_ms(audio_duration);
    with(
        envelope(session_id, "post_final_transcript"),
        json!({
            "data": {
                "metadata": {
                    "audio_duration": audio_duration,
                    "number_of_distinct_channels": 1,
                    "billing_time": audio_duration,
                    "transcription_time": 0.0,
                },
                "transcription": transcription(utterances),
                "translation": null,
                "summarization": null,
                "named_entity_recognition": null,
                "sentiment_analysis": null,
                "chapterization": null,
            }
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn texts_have_a_leading_space_and_grow() {
        assert_eq!(
            utterance_text(3, 1.42, None),
            " utterance 3 lasting 1.42 seconds"
        );
        assert_eq!(utterance_text(3, 0.4, Some(1)), " utterance");
        assert_eq!(utterance_text(3, 0.4, Some(2)), " utterance 3");
        assert_eq!(
            utterance_text(3, 0.4, Some(9)),
            " utterance 3 lasting 0.40 seconds"
        );
        assert_eq!(utterance_id(3), "00_00000003");
    }
}
