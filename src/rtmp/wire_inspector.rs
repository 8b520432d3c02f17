//! A second RTMP chunk parser, fed the same bytes as rml_rtmp's `ServerSession` *before* it,
//! to see what the session hides or chokes on:
//! - `deleteStream` whose argument is the stream *name* (GStreamer `rtmp2sink`, i.e. LiveKit
//!   Egress): the session drops it silently, yet SPEC §3 makes it an end of publish;
//! - `@setDataFrame` with too few values, which panics the session (mod.rs:938, :967): we close
//!   the connection before the session ever sees it (the `catch_unwind` stays as a backstop);
//! - a `SetChunkSize` of 0 or larger than any RTMP message can be, which the session applies
//!   without a check;
//! - the message stream id of `publish`, which the session keeps private but which a refusal
//!   `onStatus` must carry.
//!
//! Parsing twice costs little: audio is ~45 small messages a second, and only control, command
//! and data messages (types 1, 18, 20) are decoded beyond the chunk header.

use rml_rtmp::chunk_io::ChunkDeserializer;
use rml_rtmp::messages::{MessagePayload, RtmpMessage};
use rml_rtmp::rml_amf0::Amf0Value;

/// RTMP message type ids we look into (RTMP spec 5.4 and 7.1).
const TYPE_SET_CHUNK_SIZE: u8 = 1;
const TYPE_AMF0_DATA: u8 = 18;
const TYPE_AMF0_COMMAND: u8 = 20;

/// The largest chunk size that means anything: a message length is 24 bits, so a bigger chunk
/// can never be filled. (The spec allows up to 2^31-1; rml_rtmp takes any of those, and 0.)
pub(crate) const MAX_CHUNK_SIZE: u32 = 0xFF_FFFF;

/// Something in the bytes the connection must act on after the session has processed them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Finding {
    /// `deleteStream` with a string argument (rtmp2sink): an end of publish the session ignores.
    DeleteStreamByName,
    /// A `publish` command arrived on this message stream id.
    PublishOnStream(u32),
}

/// Bytes the session must not see; the connection is closed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Hostile {
    #[error("malformed @setDataFrame ({0} values) that would panic rml_rtmp")]
    MalformedSetDataFrame(usize),
    #[error("absurd chunk size {0}")]
    ChunkSize(u32),
    #[error("chunk stream could not be parsed: {0}")]
    Chunking(String),
}

pub(crate) struct WireInspector {
    deserializer: ChunkDeserializer,
}

impl WireInspector {
    pub(crate) fn new() -> Self {
        Self {
            deserializer: ChunkDeserializer::new(),
        }
    }

    /// Parses `bytes` (the exact bytes about to go to the session, in the same order) and
    /// reports what it found, or why the session must not see them.
    pub(crate) fn inspect(&mut self, bytes: &[u8]) -> Result<Vec<Finding>, Hostile> {
        let mut findings = Vec::new();
        let mut input = bytes;
        loop {
            // Same calling convention as the session: new bytes once, then empty slices until
            // no complete message is left.
            let next = self
                .deserializer
                .get_next_message(input)
                .map_err(|e| Hostile::Chunking(e.to_string()))?;
            input = &[];
            match next {
                None => return Ok(findings),
                Some(payload) => self.inspect_message(&payload, &mut findings)?,
            }
        }
    }

    fn inspect_message(
        &mut self,
        payload: &MessagePayload,
        findings: &mut Vec<Finding>,
    ) -> Result<(), Hostile> {
        if !matches!(
            payload.type_id,
            TYPE_SET_CHUNK_SIZE | TYPE_AMF0_DATA | TYPE_AMF0_COMMAND
        ) {
            return Ok(());
        }
        // A message that does not decode is left to the session, which fails on it with its
        // own error (and we close on that).
        let Ok(message) = payload.to_rtmp_message() else {
            return Ok(());
        };
        match message {
            RtmpMessage::SetChunkSize { size } => {
                if size == 0 || size > MAX_CHUNK_SIZE {
                    return Err(Hostile::ChunkSize(size));
                }
                // Keep in step with the session, which applies it before the next message.
                self.deserializer
                    .set_max_chunk_size(size as usize)
                    .map_err(|e| Hostile::Chunking(e.to_string()))?;
            }
            RtmpMessage::Amf0Data { values } => {
                if set_data_frame_would_panic(&values) {
                    return Err(Hostile::MalformedSetDataFrame(values.len()));
                }
            }
            RtmpMessage::Amf0Command {
                command_name,
                additional_arguments,
                ..
            } => match command_name.as_str() {
                "deleteStream"
                    if matches!(additional_arguments.first(), Some(Amf0Value::Utf8String(_))) =>
                {
                    findings.push(Finding::DeleteStreamByName);
                }
                "publish" => findings.push(Finding::PublishOnStream(payload.message_stream_id)),
                _ => {}
            },
            _ => {}
        }
        Ok(())
    }
}

/// Mirrors rml_rtmp 0.8's `handle_amf0_data_set_data_frame`: it indexes `values[1]` without a
/// length check, and removes `values[2]` once `values[1]` is `onMetaData`.
fn set_data_frame_would_panic(values: &[Amf0Value]) -> bool {
    match values {
        [Amf0Value::Utf8String(first)] => first == "@setDataFrame",
        [Amf0Value::Utf8String(first), Amf0Value::Utf8String(second)] => {
            first == "@setDataFrame" && second == "onMetaData"
        }
        _ => false,
    }
}

#[cfg(test)]
mod unit_tests {
    use super::*;
    use rml_rtmp::chunk_io::ChunkSerializer;
    use rml_rtmp::time::RtmpTimestamp;

    fn wire(message: RtmpMessage, stream_id: u32) -> Vec<u8> {
        let payload = MessagePayload::from_rtmp_message(message, RtmpTimestamp::new(0), stream_id)
            .expect("serializable test message");
        ChunkSerializer::new()
            .serialize(&payload, true, false)
            .expect("serializable test chunk")
            .bytes
    }

    fn command(name: &str, args: Vec<Amf0Value>) -> RtmpMessage {
        RtmpMessage::Amf0Command {
            command_name: name.to_string(),
            transaction_id: 0.0,
            command_object: Amf0Value::Null,
            additional_arguments: args,
        }
    }

    #[test]
    fn sees_delete_stream_by_name_but_not_by_id() {
        let mut inspector = WireInspector::new();
        let by_name = wire(
            command("deleteStream", vec![Amf0Value::Utf8String("key".into())]),
            0,
        );
        assert_eq!(
            inspector.inspect(&by_name).expect("valid"),
            vec![Finding::DeleteStreamByName]
        );
        let by_id = wire(command("deleteStream", vec![Amf0Value::Number(1.0)]), 0);
        assert_eq!(inspector.inspect(&by_id).expect("valid"), vec![]);
    }

    #[test]
    fn refuses_set_data_frame_that_would_panic() {
        for values in [
            vec![Amf0Value::Utf8String("@setDataFrame".into())],
            vec![
                Amf0Value::Utf8String("@setDataFrame".into()),
                Amf0Value::Utf8String("onMetaData".into()),
            ],
        ] {
            let bytes = wire(RtmpMessage::Amf0Data { values }, 1);
            assert!(matches!(
                WireInspector::new().inspect(&bytes),
                Err(Hostile::MalformedSetDataFrame(_))
            ));
        }
        let fine = wire(
            RtmpMessage::Amf0Data {
                values: vec![
                    Amf0Value::Utf8String("@setDataFrame".into()),
                    Amf0Value::Utf8String("onMetaData".into()),
                    Amf0Value::Object(Default::default()),
                ],
            },
            1,
        );
        assert!(WireInspector::new().inspect(&fine).is_ok());
    }

    #[test]
    fn refuses_absurd_chunk_sizes_and_follows_sane_ones() {
        let zero = wire(RtmpMessage::SetChunkSize { size: 0 }, 0);
        assert!(matches!(
            WireInspector::new().inspect(&zero),
            Err(Hostile::ChunkSize(0))
        ));
        let huge = wire(RtmpMessage::SetChunkSize { size: 1 << 30 }, 0);
        assert!(WireInspector::new().inspect(&huge).is_err());

        // After SetChunkSize(4096), a 1000-byte message in one chunk must parse.
        let mut inspector = WireInspector::new();
        inspector
            .inspect(&wire(RtmpMessage::SetChunkSize { size: 4096 }, 0))
            .expect("sane chunk size");
        let mut serializer = ChunkSerializer::new();
        serializer
            .set_max_chunk_size(4096, RtmpTimestamp::new(0))
            .expect("serializer chunk size");
        let publish = MessagePayload::from_rtmp_message(
            command(
                "publish",
                vec![
                    Amf0Value::Utf8String("k".repeat(1000)),
                    Amf0Value::Utf8String("live".into()),
                ],
            ),
            RtmpTimestamp::new(0),
            1,
        )
        .expect("payload");
        let bytes = serializer
            .serialize(&publish, true, false)
            .expect("chunk")
            .bytes;
        assert_eq!(
            inspector.inspect(&bytes).expect("valid"),
            vec![Finding::PublishOnStream(1)]
        );
    }
}
