//! Gladia Live v2 wire types (docs/reference/gladia-live-v2.md §2–§3).
//!
//! Parsing is liberal: unknown message types and extra fields are tolerated, because the
//! reference marks several shapes UNCONFIRMED; only what we act on is required.

use serde::Deserialize;
use serde_json::{json, Value};

/// The init body docs/PROTOCOL.md#speech-to-text-providers asks for. `region` is deliberately absent: it goes in the query.
pub fn init_body(session_slug: &str) -> Value {
    json!({
        "encoding": "wav/pcm",
        "bit_depth": 16,
        "sample_rate": 16000,
        "channels": 1,
        "custom_metadata": { "sessionSlug": session_slug },
        "messages_config": {
            "receive_partial_transcripts": true,
            "receive_final_transcripts": true,
            "receive_acknowledgments": true,
        }
    })
}

/// 2xx answer to `POST /v2/live`.
#[derive(Deserialize, Debug, Clone)]
pub struct InitResponse {
    pub id: String,
    pub url: String,
}

/// Gladia's error body; only `message` is shown (never echo request headers).
#[derive(Deserialize, Debug, Default)]
pub struct ErrorBody {
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default)]
    pub validation_errors: Option<Vec<String>>,
}

#[derive(Deserialize, Debug)]
pub struct Utterance {
    #[serde(default)]
    pub text: String,
    #[serde(default)]
    pub start: f64,
    #[serde(default)]
    pub end: f64,
    #[serde(default)]
    pub language: Option<String>,
    /// Present only with diarization, which live sessions do not offer; kept if it ever comes.
    #[serde(default)]
    pub speaker: Option<Value>,
}

#[derive(Deserialize, Debug)]
pub struct TranscriptData {
    pub id: String,
    #[serde(default)]
    pub is_final: bool,
    pub utterance: Utterance,
}

#[derive(Deserialize, Debug)]
pub struct AckData {
    #[serde(default)]
    pub byte_range: Option<(u64, u64)>,
}

/// The server messages we act on; everything else is `Other` and only logged.
#[derive(Debug)]
pub enum ServerMessage {
    Transcript(TranscriptData),
    AudioChunkAck {
        acknowledged: bool,
        /// Where the acknowledged chunk began in the provider session's bytes: after a
        /// takeover, where the new owner's first byte landed.
        byte_start: Option<u64>,
        /// How many bytes the provider session has received in all (SDK reading, see the
        /// reference §4.3).
        byte_end: Option<u64>,
        error: Option<String>,
    },
    StopRecordingAck,
    PostFinalTranscript,
    Other(String),
}

#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    #[error("provider sent invalid JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("provider message has no type")]
    NoType,
    #[error("provider {kind} message is malformed: {reason}")]
    Malformed { kind: String, reason: String },
    /// A time that cannot be a position in a live session (docs/reference/gladia-live-v2.md):
    /// not finite, negative, beyond [`MAX_PROVIDER_SECONDS`], or an end before its start.
    /// Refused whole, so no timestamp arithmetic downstream can overflow.
    #[error("provider transcript has out-of-range times: start {start}, end {end}")]
    TimeOutOfRange { start: f64, end: f64 },
}

/// The longest position a provider time may name, in seconds: a day, well beyond Gladia's
/// 3-hour session limit, and small enough that milliseconds from the epoch cannot overflow.
pub const MAX_PROVIDER_SECONDS: f64 = 86_400.0;

impl Utterance {
    fn check_times(&self) -> Result<(), ParseError> {
        let in_range = |t: f64| t.is_finite() && (0.0..=MAX_PROVIDER_SECONDS).contains(&t);
        if in_range(self.start) && in_range(self.end) && self.end >= self.start {
            Ok(())
        } else {
            Err(ParseError::TimeOutOfRange {
                start: self.start,
                end: self.end,
            })
        }
    }
}

pub fn parse_server_message(text: &str) -> Result<ServerMessage, ParseError> {
    let value: Value = serde_json::from_str(text)?;
    let kind = value
        .get("type")
        .and_then(Value::as_str)
        .ok_or(ParseError::NoType)?
        .to_owned();
    let malformed = |e: serde_json::Error| ParseError::Malformed {
        kind: kind.clone(),
        reason: e.to_string(),
    };
    Ok(match kind.as_str() {
        "transcript" => {
            let data = value.get("data").cloned().unwrap_or(Value::Null);
            let data: TranscriptData = serde_json::from_value(data).map_err(malformed)?;
            data.utterance.check_times()?;
            ServerMessage::Transcript(data)
        }
        "audio_chunk" => {
            let acknowledged = value
                .get("acknowledged")
                .and_then(Value::as_bool)
                .unwrap_or(false);
            let range = match value.get("data") {
                Some(Value::Null) | None => None,
                Some(data) => {
                    serde_json::from_value::<AckData>(data.clone())
                        .map_err(malformed)?
                        .byte_range
                }
            };
            if let Some((start, end)) = range {
                // A day of 16 kHz mono is 2.8 GB: anything past MAX_PROVIDER_SECONDS of
                // audio, or backwards, is not a position in this session.
                let max = (MAX_PROVIDER_SECONDS as u64) * 32_000;
                if start > end || end > max {
                    return Err(ParseError::Malformed {
                        kind,
                        reason: format!("byte_range [{start}, {end}] out of range"),
                    });
                }
            }
            let (byte_start, byte_end) = (range.map(|r| r.0), range.map(|r| r.1));
            let error = value
                .get("error")
                .and_then(|e| e.get("message"))
                .and_then(Value::as_str)
                .map(str::to_owned);
            ServerMessage::AudioChunkAck {
                acknowledged,
                byte_start,
                byte_end,
                error,
            }
        }
        "stop_recording" => ServerMessage::StopRecordingAck,
        "post_final_transcript" => ServerMessage::PostFinalTranscript,
        _ => ServerMessage::Other(kind),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transcripts_with_out_of_range_times_are_refused() {
        let with = |start: &str, end: &str| {
            parse_server_message(&format!(
                r#"{{"type":"transcript","data":{{"id":"u","is_final":true,"utterance":{{"text":"x","start":{start},"end":{end}}}}}}}"#
            ))
        };
        for (start, end) in [
            ("1e300", "1e300"),
            ("0", "1e300"),
            ("-1", "2"),
            ("5", "4"),
            ("0", "86400.5"),
        ] {
            assert!(
                matches!(with(start, end), Err(ParseError::TimeOutOfRange { .. })),
                "{start}..{end}"
            );
        }
        assert!(with("0", "86400").is_ok());
        assert!(with("1.5", "1.5").is_ok());
    }

    #[test]
    fn parses_the_documented_transcript() {
        let text = r#"{"type":"transcript","session_id":"x","created_at":"2024-10-10T14:35:28.387Z",
          "data":{"id":"00_00000000","is_final":true,"utterance":{"text":" Hello world","start":0.188,
          "end":1.284,"language":"en","confidence":1,"channel":0,"words":[]}}}"#;
        match parse_server_message(text).unwrap() {
            ServerMessage::Transcript(t) => {
                assert_eq!(t.id, "00_00000000");
                assert!(t.is_final);
                assert_eq!(t.utterance.text, " Hello world");
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn parses_acks_and_tolerates_unknown_types() {
        let ack = r#"{"type":"audio_chunk","acknowledged":true,"error":null,"data":{"byte_range":[3200,6400],"time_range":[0.1,0.2]}}"#;
        assert!(matches!(
            parse_server_message(ack).unwrap(),
            ServerMessage::AudioChunkAck {
                acknowledged: true,
                byte_start: Some(3200),
                byte_end: Some(6400),
                error: None
            }
        ));
        for range in ["[6400,3200]", "[0,99999999999999]"] {
            let bad = format!(
                r#"{{"type":"audio_chunk","acknowledged":true,"data":{{"byte_range":{range}}}}}"#
            );
            assert!(
                matches!(
                    parse_server_message(&bad),
                    Err(ParseError::Malformed { .. })
                ),
                "{range}"
            );
        }
        let rejected = r#"{"type":"audio_chunk","acknowledged":false,"error":{"message":"quota"},"data":null}"#;
        assert!(matches!(
            parse_server_message(rejected).unwrap(),
            ServerMessage::AudioChunkAck {
                acknowledged: false,
                byte_end: None,
                error: Some(_),
                ..
            }
        ));
        assert!(matches!(
            parse_server_message(r#"{"type":"speech_start"}"#).unwrap(),
            ServerMessage::Other(_)
        ));
        assert!(parse_server_message("not json").is_err());
        assert!(parse_server_message(r#"{"type":"transcript","data":{}}"#).is_err());
    }

    #[test]
    fn init_body_keeps_region_out() {
        let body = init_body("weekly");
        assert!(body.get("region").is_none());
        assert_eq!(body["sample_rate"], 16000);
        assert_eq!(body["custom_metadata"]["sessionSlug"], "weekly");
    }
}
