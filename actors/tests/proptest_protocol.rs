//! Property tests for the two JSON parsers facing the outside: Gladia server messages
//! (`gladia::protocol::parse_server_message`) and browser commands (`wire::ClientCommand`).
//! The proptest half of the `provider_messages` and `client_messages` fuzz targets: arbitrary
//! JSON never panics, and every documented shape (docs/reference/gladia-live-v2.md §3.4, docs/PROTOCOL.md#websocket-connection) is
//! accepted whatever its field values.

use actors::gladia::protocol::{
    parse_server_message, ParseError, ServerMessage, MAX_PROVIDER_SECONDS,
};
use actors::wire::ClientCommand;
use proptest::prelude::*;
use serde_json::{json, Map, Value};

/// Message types the provider documents, plus a few it does not, so arbitrary values often
/// take the parser's typed paths rather than stopping at "no type".
const TYPES: [&str; 12] = [
    "transcript",
    "audio_chunk",
    "stop_recording",
    "post_final_transcript",
    "speech_start",
    "speech_end",
    "start_session",
    "end_session",
    "translation",
    "error",
    "start_transcription",
    "subscribe",
];

/// Any JSON value, a few levels deep; keys lean towards the fields the parsers look at.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        ".{0,12}".prop_map(Value::String),
        prop::sample::select(TYPES.to_vec()).prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((key(), inner), 0..6)
                .prop_map(|entries| Value::Object(entries.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "type",
            "data",
            "id",
            "is_final",
            "utterance",
            "text",
            "start",
            "end",
            "byte_range",
            "acknowledged",
            "error",
            "message",
            "sessionSlug",
            "lastSeq",
        ])
        .prop_map(str::to_owned),
        "[a-z_]{0,8}",
    ]
}

/// A JSON object with a `type` (known or not) and arbitrary other members.
fn typed_object() -> impl Strategy<Value = Value> {
    (
        prop::sample::select(TYPES.to_vec()),
        prop::collection::vec((key(), json_value()), 0..6),
    )
        .prop_map(|(kind, members)| {
            let mut object: Map<String, Value> = members.into_iter().collect();
            object.insert("type".to_owned(), Value::from(kind));
            Value::Object(object)
        })
}

/// Finite seconds as the provider sends them (JSON has no NaN or infinity), half each for a
/// start and a duration, so their sum stays within a session's possible range
/// (`MAX_PROVIDER_SECONDS`, a day).
fn seconds() -> impl Strategy<Value = f64> {
    0.0_f64..(MAX_PROVIDER_SECONDS / 2.0)
}

proptest! {
    #[test]
    fn provider_parser_never_panics_on_json(value in prop_oneof![json_value(), typed_object()]) {
        let _ = parse_server_message(&value.to_string());
    }

    #[test]
    fn provider_parser_never_panics_on_text(text in ".{0,64}") {
        let _ = parse_server_message(&text);
    }

    /// §3.4 `transcript`, partial or final, with the envelope and the optional fields present
    /// or not.
    #[test]
    fn every_transcript_is_accepted(
        id in ".{0,20}",
        is_final in any::<bool>(),
        text in ".{0,40}",
        start in seconds(),
        duration in seconds(),
        language in prop::option::of("[a-z]{2}"),
        confidence in 0.0_f64..=1.0,
        channel in 0_u32..4,
        envelope in any::<bool>(),
    ) {
        let mut utterance = json!({
            "text": text, "start": start, "end": start + duration,
            "confidence": confidence, "channel": channel, "words": [],
        });
        if let Some(language) = &language {
            utterance["language"] = json!(language);
        }
        let mut message = json!({
            "type": "transcript",
            "data": { "id": id, "is_final": is_final, "utterance": utterance },
        });
        if envelope {
            message["session_id"] = json!("de0a341d-c69f-4e15-a649-7b3f49e211f0");
            message["created_at"] = json!("2024-10-10T14:35:28.387Z");
        }
        match parse_server_message(&message.to_string()) {
            Ok(ServerMessage::Transcript(data)) => {
                prop_assert_eq!(data.id, id);
                prop_assert_eq!(data.is_final, is_final);
                prop_assert_eq!(data.utterance.text, text);
                // serde_json's default float parsing may differ in the last bit.
                prop_assert!((data.utterance.start - start).abs() <= start * 1e-12);
                prop_assert_eq!(data.utterance.language, language);
            }
            other => prop_assert!(false, "{message} parsed as {other:?}"),
        }
    }

    /// A transcript whose times no live session can have (beyond a day, negative, ending
    /// before it starts) is refused as out of range, never accepted nor a panic.
    #[test]
    fn transcripts_with_impossible_times_are_refused(
        start in prop_oneof![
            (MAX_PROVIDER_SECONDS + 0.001)..1e300,
            -1e300..-0.001_f64,
            0.0_f64..MAX_PROVIDER_SECONDS,
        ],
        backwards in 0.001_f64..1e6,
    ) {
        // Either `start` itself is out of range, or the end is before it.
        let end = if (0.0..=MAX_PROVIDER_SECONDS).contains(&start) { start - backwards } else { start };
        let message = json!({
            "type": "transcript",
            "data": { "id": "u", "is_final": true,
                      "utterance": { "text": "x", "start": start, "end": end } },
        });
        let parsed = parse_server_message(&message.to_string());
        prop_assert!(
            matches!(parsed, Err(ParseError::TimeOutOfRange { .. })),
            "{message} parsed as {parsed:?}"
        );
    }

    /// §3.4 `audio_chunk`: acknowledged with a byte range within a day of audio, or rejected
    /// with an error and null data.
    #[test]
    fn every_audio_chunk_ack_is_accepted(
        start in 0u32..1_500_000_000,
        length in 0u32..1_000_000_000,
        acknowledged in any::<bool>(),
        error in prop::option::of(".{0,30}"),
    ) {
        let end = u64::from(start) + u64::from(length);
        let message = if acknowledged {
            json!({
                "type": "audio_chunk", "acknowledged": true, "error": null,
                "session_id": "s", "created_at": "t",
                "data": { "byte_range": [start, end], "time_range": [0.1, 0.2] },
            })
        } else {
            json!({
                "type": "audio_chunk", "acknowledged": false,
                "error": error.as_ref().map(|m| json!({ "message": m })),
                "data": null,
            })
        };
        match parse_server_message(&message.to_string()) {
            Ok(ServerMessage::AudioChunkAck { acknowledged: got, byte_start, byte_end, error: got_error }) => {
                prop_assert_eq!(got, acknowledged);
                if acknowledged {
                    prop_assert_eq!(byte_start, Some(u64::from(start)));
                    prop_assert_eq!(byte_end, Some(end));
                    prop_assert_eq!(got_error, None);
                } else {
                    prop_assert_eq!(byte_start, None);
                    prop_assert_eq!(byte_end, None);
                    prop_assert_eq!(got_error, error);
                }
            }
            other => prop_assert!(false, "{message} parsed as {other:?}"),
        }
    }

    /// The other documented types: the ones we act on map to their variant, the rest to
    /// `Other` (logged only), whatever `data` holds.
    #[test]
    fn other_documented_types_are_accepted(
        kind in prop::sample::select(vec![
            "stop_recording", "post_final_transcript", "speech_start", "speech_end",
            "start_session", "start_recording", "end_recording", "end_session", "translation",
            "named_entity_recognition", "sentiment_analysis", "post_transcript",
            "post_summarization", "post_chapterization",
        ]),
        data in json_value(),
    ) {
        let message = json!({ "type": kind, "session_id": "s", "created_at": "t", "data": data });
        let parsed = parse_server_message(&message.to_string());
        let ok = match kind {
            "stop_recording" => matches!(parsed, Ok(ServerMessage::StopRecordingAck)),
            "post_final_transcript" => matches!(parsed, Ok(ServerMessage::PostFinalTranscript)),
            _ => matches!(&parsed, Ok(ServerMessage::Other(k)) if k.as_str() == kind),
        };
        prop_assert!(ok, "{} parsed as {:?}", message, parsed);
    }

    #[test]
    fn client_parser_never_panics(value in prop_oneof![json_value(), typed_object()]) {
        let _ = serde_json::from_str::<ClientCommand>(&value.to_string());
    }

    #[test]
    fn client_parser_never_panics_on_text(text in ".{0,64}") {
        let _ = serde_json::from_str::<ClientCommand>(&text);
    }

    /// docs/PROTOCOL.md#websocket-connection: every command with any slug (and any `lastSeq`, or none) parses to itself.
    #[test]
    fn every_client_command_is_accepted(
        slug in ".{0,40}",
        last_seq in prop::option::of(any::<i64>()),
        which in 0_u8..4,
    ) {
        let (text, expected) = match which {
            0 => (
                json!({ "type": "start_transcription", "sessionSlug": slug }),
                ClientCommand::StartTranscription { session_slug: slug.clone() },
            ),
            1 => (
                json!({ "type": "stop_transcription", "sessionSlug": slug }),
                ClientCommand::StopTranscription { session_slug: slug.clone() },
            ),
            2 => {
                let mut text = json!({ "type": "subscribe", "sessionSlug": slug });
                if let Some(seq) = last_seq {
                    text["lastSeq"] = json!(seq);
                }
                (text, ClientCommand::Subscribe { session_slug: slug.clone(), last_seq })
            }
            _ => (json!({ "type": "ping" }), ClientCommand::Ping),
        };
        let parsed = serde_json::from_str::<ClientCommand>(&text.to_string());
        prop_assert_eq!(parsed.ok(), Some(expected));
    }
}
