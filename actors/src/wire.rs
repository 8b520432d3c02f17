//! The JSON messages existing front ends read (docs/PROTOCOL.md#websocket-connection, #transcript-messages). Field names are a contract:
//! change them and deployed clients break.

use serde::Serialize;

use crate::messages::SessionState;

/// `{"type":"transcript",...}` for partials and finals alike (docs/PROTOCOL.md#transcript-messages).
#[derive(Serialize, Debug)]
#[serde(rename_all = "camelCase")]
pub struct TranscriptMessage<'a> {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub session_slug: &'a str,
    pub utterance_id: &'a str,
    pub text: &'a str,
    pub is_final: bool,
    pub speaker: &'a str,
    pub speaker_id: &'a str,
    /// When the server sent it, ms since the epoch.
    pub ts: i64,
    pub transcript_type: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seq: Option<i64>,
    pub started_at: i64,
    pub ended_at: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub language: Option<&'a str>,
    /// Only on finals made from a partial the provider never finalized.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub provisional: bool,
}

/// `{"type":"status",...}`: every session state change (docs/PROTOCOL.md#session-lifecycle).
#[derive(Serialize, Debug)]
#[serde(rename_all = "camelCase")]
pub struct StatusMessage<'a> {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub session_slug: &'a str,
    pub state: SessionState,
    pub detail: &'a str,
}

/// Reply to `start_transcription`.
#[derive(Serialize, Debug)]
#[serde(rename_all = "camelCase")]
pub struct TranscriptionStartedMessage<'a> {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub session_slug: &'a str,
    pub rtmp_url: &'a str,
    pub state: SessionState,
}

/// `{"type":"error","code":…,"message":…}`: bad client input; the socket stays open.
#[derive(Serialize, Debug)]
pub struct ErrorMessage<'a> {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub code: &'a str,
    pub message: &'a str,
}

/// What a client may send (docs/PROTOCOL.md#websocket-connection). Unknown types are rejected with `bad_request`.
#[derive(serde::Deserialize, Debug, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientCommand {
    StartTranscription {
        #[serde(rename = "sessionSlug")]
        session_slug: String,
    },
    StopTranscription {
        #[serde(rename = "sessionSlug")]
        session_slug: String,
    },
    Subscribe {
        #[serde(rename = "sessionSlug")]
        session_slug: String,
        #[serde(rename = "lastSeq", default)]
        last_seq: Option<i64>,
    },
    Ping,
}

/// A docs/PROTOCOL.md#transcript-messages message posted by an ingest-only instance to `POST
/// /api/realtime/transcribe/broadcast` (HTTP broadcast mode). Unknown fields are ignored, as a
/// client would; [`IncomingTranscript::validate`] checks what serde cannot.
#[derive(serde::Deserialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct IncomingTranscript {
    #[serde(rename = "type")]
    pub kind: String,
    pub session_slug: String,
    pub utterance_id: String,
    pub text: String,
    pub is_final: bool,
    pub speaker: String,
    pub speaker_id: String,
    /// When the sender sent it.
    pub ts: i64,
    #[serde(default)]
    pub transcript_type: Option<String>,
    /// Required on finals: the sender's numbering is kept.
    #[serde(default)]
    pub seq: Option<i64>,
    #[serde(default)]
    pub started_at: Option<i64>,
    #[serde(default)]
    pub ended_at: Option<i64>,
    #[serde(default)]
    pub language: Option<String>,
    #[serde(default)]
    pub provisional: bool,
}

/// Longest utterance id, speaker and language accepted from another instance.
const MAX_RELAYED_FIELD: usize = 256;

/// The highest `seq` accepted: 2^53 - 1, the largest integer a browser's JSON parser reads
/// exactly. A relayed `seq` near `i64::MAX` would also make the receiver's next local final
/// overflow its numbering.
pub const MAX_SEQ: i64 = (1 << 53) - 1;

/// A client's `lastSeq` (upgrade query or `subscribe`): the `seq` of the last final it has, 0
/// for none. A negative one is refused rather than read as 0, so a client bug shows instead of
/// quietly replaying everything (docs/PROTOCOL.md#resume-and-delivery-guarantees).
pub fn check_last_seq(last_seq: Option<i64>) -> Result<Option<i64>, String> {
    match last_seq {
        Some(n) if !(0..=MAX_SEQ).contains(&n) => Err(format!(
            "lastSeq must be a whole number from 0 to {MAX_SEQ}, not {n}"
        )),
        other => Ok(other),
    }
}

impl IncomingTranscript {
    /// What serde cannot check; the error names the field.
    pub fn validate(&self) -> Result<(), String> {
        if self.kind != "transcript" {
            return Err(format!("type must be \"transcript\", not {:?}", self.kind));
        }
        if let Some(t) = &self.transcript_type {
            let expected = if self.is_final { "final" } else { "partial" };
            if t != expected {
                return Err(format!(
                    "transcriptType {t:?} contradicts isFinal={}",
                    self.is_final
                ));
            }
        }
        match (self.is_final, self.seq) {
            (true, Some(seq)) if (1..=MAX_SEQ).contains(&seq) => {}
            (true, _) => {
                return Err(format!(
                    "a final needs seq, a whole number from 1 to {MAX_SEQ}"
                ))
            }
            (false, Some(_)) => return Err("a partial carries no seq".into()),
            (false, None) => {}
        }
        for (field, value) in [
            ("utteranceId", self.utterance_id.as_str()),
            ("speaker", self.speaker.as_str()),
            ("speakerId", self.speaker_id.as_str()),
            ("language", self.language.as_deref().unwrap_or("")),
        ] {
            if value.len() > MAX_RELAYED_FIELD {
                return Err(format!("{field} is longer than {MAX_RELAYED_FIELD} bytes"));
            }
        }
        if self.utterance_id.is_empty() {
            return Err("utteranceId must not be empty".into());
        }
        Ok(())
    }
}

pub fn to_json<T: Serialize>(value: &T) -> String {
    // Serialising these plain structs cannot fail; fall back to an empty object rather than panic.
    serde_json::to_string(value).unwrap_or_else(|_| "{}".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_last_seq_is_a_seq_or_zero() {
        for ok in [None, Some(0), Some(1), Some(MAX_SEQ)] {
            assert_eq!(check_last_seq(ok), Ok(ok));
        }
        for bad in [-1, i64::MIN, MAX_SEQ + 1, i64::MAX] {
            let error = check_last_seq(Some(bad)).expect_err("refused");
            assert!(error.contains("lastSeq"), "{error}");
        }
    }

    #[test]
    fn a_relayed_seq_outside_what_clients_read_exactly_is_refused() {
        let mut message: IncomingTranscript = serde_json::from_value(serde_json::json!({
            "type": "transcript", "sessionSlug": "s", "utteranceId": "u", "text": "t",
            "isFinal": true, "speaker": "A", "speakerId": "a", "ts": 1, "seq": MAX_SEQ,
        }))
        .expect("parses");
        assert_eq!(message.validate(), Ok(()));
        for seq in [0, -1, MAX_SEQ + 1, i64::MAX, i64::MIN] {
            message.seq = Some(seq);
            assert!(message.validate().is_err(), "{seq}");
        }
    }

    #[test]
    fn transcript_message_has_the_contract_fields() {
        let msg = TranscriptMessage {
            kind: "transcript",
            session_slug: "weekly-sync",
            utterance_id: "00_00000003",
            text: "Hello world",
            is_final: true,
            speaker: "Alice",
            speaker_id: "user-17:sess-9",
            ts: 1763800000123,
            transcript_type: "final",
            seq: Some(3),
            started_at: 1,
            ended_at: 2,
            language: Some("en"),
            provisional: false,
        };
        let v: serde_json::Value = serde_json::from_str(&to_json(&msg)).unwrap();
        for field in [
            "type",
            "sessionSlug",
            "utteranceId",
            "text",
            "isFinal",
            "speaker",
            "speakerId",
            "ts",
            "transcriptType",
            "seq",
            "startedAt",
            "endedAt",
            "language",
        ] {
            assert!(v.get(field).is_some(), "missing {field}");
        }
        assert_eq!(v["type"], "transcript");
        assert_eq!(v["isFinal"], true);
        assert!(
            v.get("provisional").is_none(),
            "only provisional finals say so"
        );
    }

    #[test]
    fn partials_carry_no_seq() {
        let msg = TranscriptMessage {
            kind: "transcript",
            session_slug: "s",
            utterance_id: "u",
            text: "t",
            is_final: false,
            speaker: "room",
            speaker_id: "room",
            ts: 0,
            transcript_type: "partial",
            seq: None,
            started_at: 0,
            ended_at: 0,
            language: None,
            provisional: false,
        };
        let v: serde_json::Value = serde_json::from_str(&to_json(&msg)).unwrap();
        assert!(v.get("seq").is_none());
    }

    #[test]
    fn incoming_transcripts_are_validated() {
        let final_json = r#"{"type":"transcript","sessionSlug":"s","utteranceId":"a:1","text":"Hi",
            "isFinal":true,"speaker":"room","speakerId":"room","ts":5,"transcriptType":"final",
            "seq":3,"startedAt":1,"endedAt":2,"extra":"ignored"}"#;
        let m: IncomingTranscript = serde_json::from_str(final_json).unwrap();
        assert_eq!(m.seq, Some(3));
        assert!(m.validate().is_ok());
        let mut bad = m.clone();
        bad.seq = None;
        assert!(bad.validate().unwrap_err().contains("seq"));
        let mut bad = m.clone();
        bad.is_final = false;
        assert!(bad.validate().unwrap_err().contains("transcriptType"));
        let mut bad = m.clone();
        bad.kind = "status".into();
        assert!(bad.validate().is_err());
        let mut bad = m;
        bad.utterance_id = "x".repeat(300);
        assert!(bad.validate().unwrap_err().contains("utteranceId"));
        assert!(serde_json::from_str::<IncomingTranscript>(r#"{"type":"transcript"}"#).is_err());
    }

    #[test]
    fn client_commands_parse() {
        let c: ClientCommand =
            serde_json::from_str(r#"{"type":"subscribe","sessionSlug":"a","lastSeq":4}"#).unwrap();
        assert_eq!(
            c,
            ClientCommand::Subscribe {
                session_slug: "a".into(),
                last_seq: Some(4)
            }
        );
        assert!(serde_json::from_str::<ClientCommand>(r#"{"type":"nope"}"#).is_err());
        assert!(serde_json::from_str::<ClientCommand>(r#"{"type":"ping"}"#).is_ok());
    }
}
