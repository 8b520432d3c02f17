//! A second RTMP chunk parser, fed the same bytes as rml_rtmp's `ServerSession` *before* it,
//! to see what the session hides or chokes on:
//! - `deleteStream` whose argument is the stream *name* (GStreamer `rtmp2sink`, i.e. LiveKit
//!   Egress): the session drops it silently, yet docs/PROTOCOL.md#rtmp-ingest makes it an end of publish;
//! - `@setDataFrame` with too few values, which panics the session (mod.rs:938, :967): we close
//!   the connection before the session ever sees it (the `catch_unwind` stays as a backstop);
//! - a `SetChunkSize` of 0 or larger than any RTMP message can be, which the session applies
//!   without a check;
//! - the message stream id of `publish`, which the session keeps private but which a refusal
//!   `onStatus` must carry;
//! - AMF0 values nested deep enough to overflow the stack of rml_amf0's recursive decoder (an
//!   abort, not a panic: it would take the whole process down). Found by the `rtmp_connection`
//!   fuzz target (fuzz/).
//!
//! Parsing twice costs little: audio is ~45 small messages a second, and only control, command
//! and data messages (types 1, 15, 17, 18, 20) are decoded beyond the chunk header.

use rml_rtmp::chunk_io::ChunkDeserializer;
use rml_rtmp::messages::{MessagePayload, RtmpMessage};
use rml_rtmp::rml_amf0::Amf0Value;

/// RTMP message type ids we look into (RTMP spec 5.4 and 7.1).
const TYPE_SET_CHUNK_SIZE: u8 = 1;
const TYPE_AMF0_DATA: u8 = 18;
const TYPE_AMF0_COMMAND: u8 = 20;
/// AMF3-flagged data and command: rml_rtmp decodes both as AMF0 (Flash clients mislabel them),
/// so they need the same checks; a command may carry one leading 0x00 that it skips.
const TYPE_AMF3_DATA: u8 = 15;
const TYPE_AMF3_COMMAND: u8 = 17;

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
    #[error("AMF0 values nested deeper than {MAX_AMF0_DEPTH} levels")]
    Amf0TooDeep,
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
        match payload.type_id {
            TYPE_SET_CHUNK_SIZE => {}
            TYPE_AMF0_DATA | TYPE_AMF0_COMMAND | TYPE_AMF3_DATA | TYPE_AMF3_COMMAND => {
                // Before anything decodes it, here or in the session.
                let data = &payload.data[..];
                let skipped = match data {
                    [0x00, rest @ ..] if payload.type_id == TYPE_AMF3_COMMAND => rest,
                    _ => data,
                };
                if amf0_depth_exceeds(skipped, MAX_AMF0_DEPTH) {
                    return Err(Hostile::Amf0TooDeep);
                }
            }
            _ => return Ok(()),
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
            RtmpMessage::Amf0Data { values } if set_data_frame_would_panic(&values) => {
                return Err(Hostile::MalformedSetDataFrame(values.len()));
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

/// Deepest AMF0 nesting (objects, ECMA arrays, strict arrays) a command or data message may
/// have. rml_amf0 decodes (and drops) values recursively, so a message of a few hundred KiB of
/// nested arrays overflows the stack: an abort that `catch_unwind` cannot catch, taking the
/// whole process down. Real clients nest two levels (`connect`'s command object, `onMetaData`).
pub(crate) const MAX_AMF0_DEPTH: usize = 32;

/// How deep the AMF0 values in `data` nest, counted without recursion, stopping early once past
/// `limit`. Follows rml_amf0 0.3's reader: a `0x09` byte or the end of data where a value is
/// expected ends the current array or the message; anything it would refuse ends the scan
/// (the real decoder fails there too, before going any deeper).
fn amf0_depth_exceeds(data: &[u8], limit: usize) -> bool {
    /// A container being read: an object or ECMA array (properties up to the end marker), or a
    /// strict array with its announced count still to read.
    enum Frame {
        Properties,
        Items(u32),
    }
    let mut reader = Amf0Reader { data, position: 0 };
    let mut stack: Vec<Frame> = Vec::new();
    loop {
        match stack.last_mut() {
            Some(Frame::Properties) => {
                let Some(label_length) = reader.u16() else {
                    return false;
                };
                if label_length == 0 {
                    // The end marker (rml_amf0 refuses anything else here).
                    if reader.take(1) != Some(&[0x09][..]) {
                        return false;
                    }
                    stack.pop();
                    continue;
                }
                // rml_amf0 reads the label with `read`, accepting a short one.
                reader.skip(usize::from(label_length));
            }
            Some(Frame::Items(0)) => {
                stack.pop();
                continue;
            }
            Some(Frame::Items(remaining)) => *remaining -= 1,
            None => {}
        }
        let in_properties = matches!(stack.last(), Some(Frame::Properties));
        let Some(&[marker]) = reader.take(1) else {
            // End of data: ends a strict array or the message; a property without a value is
            // an error. Either way nothing deeper follows.
            if in_properties || stack.is_empty() {
                return false;
            }
            stack.pop();
            continue;
        };
        let pushed = match marker {
            0x09 if in_properties => return false,
            0x09 if stack.is_empty() => return false,
            0x09 => {
                stack.pop();
                continue;
            }
            0x00 => reader.take(8).map(|_| None),
            0x01 => reader.take(1).map(|_| None),
            0x05 | 0x06 => Some(None),
            0x02 => reader.u16().map(|length| {
                reader.skip(usize::from(length));
                None
            }),
            0x03 => Some(Some(Frame::Properties)),
            0x08 => reader.u32().map(|_| Some(Frame::Properties)),
            0x0A => reader.u32().map(|count| Some(Frame::Items(count))),
            _ => return false,
        };
        match pushed {
            None => return false,
            Some(None) => {}
            Some(Some(frame)) => {
                stack.push(frame);
                if stack.len() > limit {
                    return true;
                }
            }
        }
    }
}

/// Big-endian reads over a byte slice that report the end of data instead of panicking.
struct Amf0Reader<'a> {
    data: &'a [u8],
    position: usize,
}

impl<'a> Amf0Reader<'a> {
    fn take(&mut self, count: usize) -> Option<&'a [u8]> {
        let bytes = self
            .data
            .get(self.position..self.position.checked_add(count)?)?;
        self.position += count;
        Some(bytes)
    }

    fn skip(&mut self, count: usize) {
        self.position = self.position.saturating_add(count).min(self.data.len());
    }

    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Option<u32> {
        self.take(4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
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

    /// `depth` strict arrays of one element, each inside the previous, after a command name.
    fn nested_arrays(depth: usize) -> Vec<u8> {
        let mut data = vec![0x02, 0x00, 0x07];
        data.extend_from_slice(b"connect");
        data.push(0x00);
        data.extend_from_slice(&1.0_f64.to_be_bytes());
        for _ in 0..depth {
            data.extend_from_slice(&[0x0A, 0x00, 0x00, 0x00, 0x01]);
        }
        data.push(0x05);
        data
    }

    fn raw_chunk(type_id: u8, data: Vec<u8>) -> Vec<u8> {
        let payload = MessagePayload {
            timestamp: RtmpTimestamp::new(0),
            type_id,
            message_stream_id: 0,
            data: data.into(),
        };
        ChunkSerializer::new()
            .serialize(&payload, true, false)
            .expect("serializable test chunk")
            .bytes
    }

    #[test]
    fn refuses_amf0_nesting_that_would_overflow_the_decoder_stack() {
        // Deep enough to abort the process in rml_amf0 (found by fuzzing: ~150 000 levels).
        for type_id in [TYPE_AMF0_COMMAND, TYPE_AMF0_DATA, TYPE_AMF3_DATA] {
            let bytes = raw_chunk(type_id, nested_arrays(200_000));
            assert!(matches!(
                WireInspector::new().inspect(&bytes),
                Err(Hostile::Amf0TooDeep)
            ));
        }
        let mut amf3 = vec![0x00];
        amf3.extend(nested_arrays(MAX_AMF0_DEPTH + 1));
        assert!(matches!(
            WireInspector::new().inspect(&raw_chunk(TYPE_AMF3_COMMAND, amf3)),
            Err(Hostile::Amf0TooDeep)
        ));
        // Up to the limit is fine (and far beyond what any client sends).
        let bytes = raw_chunk(TYPE_AMF0_COMMAND, nested_arrays(MAX_AMF0_DEPTH));
        assert!(WireInspector::new().inspect(&bytes).is_ok());
    }

    #[test]
    fn depth_scan_follows_every_container_kind() {
        let object_in_ecma_in_object = [
            0x03, 0x00, 0x01, b'a', // object, property "a":
            0x08, 0x00, 0x00, 0x00, 0x01, 0x00, 0x01, b'b', // ECMA array, property "b":
            0x03, 0x00, 0x00, 0x09, // empty object
            0x00, 0x00, 0x09, // end of ECMA array
            0x00, 0x00, 0x09, // end of object
            0x0A, 0x00, 0x00, 0x00, 0x02, 0x05, 0x09, // array of 2, ended early by 0x09
        ];
        assert!(!amf0_depth_exceeds(&object_in_ecma_in_object, 3));
        assert!(amf0_depth_exceeds(&object_in_ecma_in_object, 2));
        // Strings and numbers whose bytes look like container markers are skipped, not read.
        let scalars = [
            0x02, 0x00, 0x03, 0x03, 0x0A, 0x08, // string "\x03\x0a\x08"
            0x00, 0x03, 0x03, 0x03, 0x03, 0x0A, 0x0A, 0x0A, 0x0A, // number
        ];
        assert!(!amf0_depth_exceeds(&scalars, 0));
        // Truncated and malformed input ends the scan without a verdict of "deep".
        for cut in 0..object_in_ecma_in_object.len() {
            assert!(!amf0_depth_exceeds(&object_in_ecma_in_object[..cut], 3));
        }
        assert!(!amf0_depth_exceeds(&[0xFF, 0x0A, 0x0A], 0));
    }

    #[test]
    fn real_connect_and_metadata_pass_the_depth_check() {
        let mut properties = std::collections::HashMap::new();
        properties.insert("app".to_string(), Amf0Value::Utf8String("live".into()));
        properties.insert(
            "tcUrl".to_string(),
            Amf0Value::Utf8String("rtmp://h/live".into()),
        );
        let connect = RtmpMessage::Amf0Command {
            command_name: "connect".into(),
            transaction_id: 1.0,
            command_object: Amf0Value::Object(properties.clone()),
            additional_arguments: vec![],
        };
        let metadata = RtmpMessage::Amf0Data {
            values: vec![
                Amf0Value::Utf8String("@setDataFrame".into()),
                Amf0Value::Utf8String("onMetaData".into()),
                Amf0Value::Object(properties),
            ],
        };
        let mut inspector = WireInspector::new();
        assert!(inspector.inspect(&wire(connect, 0)).is_ok());
        assert!(inspector.inspect(&wire(metadata, 1)).is_ok());
    }
}
