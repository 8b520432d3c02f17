//! The `onStatus` error sent when a publish is refused.
//!
//! rml_rtmp's `reject_request` answers a publish with an `_error` command on transaction 0, which
//! `rtmp2sink` does not match (it waits for `onStatus` on the publish's stream), so egress would
//! only see the close. docs/PROTOCOL.md#rtmp-ingest wants `NetStream.Publish.BadName` / `.Denied`, so we serialize the
//! `onStatus` ourselves. That bypasses the session's chunk serializer, whose header compression
//! would then be out of step with the peer; harmless only because the connection is closed
//! right after this packet, which is the single place this is used.

use std::collections::HashMap;

use rml_rtmp::chunk_io::ChunkSerializer;
use rml_rtmp::messages::{MessagePayload, RtmpMessage};
use rml_rtmp::rml_amf0::Amf0Value;
use rml_rtmp::time::RtmpTimestamp;

/// Serializes `onStatus {level: "error", code, description}` on `stream_id`, in chunks no
/// larger than `chunk_size` (what the session announced to the peer with SetChunkSize).
pub(crate) fn publish_refusal_bytes(
    code: &str,
    description: &str,
    stream_id: u32,
    chunk_size: u32,
) -> anyhow::Result<Vec<u8>> {
    let status: HashMap<String, Amf0Value> = [
        ("level", "error"),
        ("code", code),
        ("description", description),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), Amf0Value::Utf8String(v.to_string())))
    .collect();
    let message = RtmpMessage::Amf0Command {
        command_name: "onStatus".to_string(),
        transaction_id: 0.0,
        command_object: Amf0Value::Null,
        additional_arguments: vec![Amf0Value::Object(status)],
    };
    let payload = MessagePayload::from_rtmp_message(message, RtmpTimestamp::new(0), stream_id)?;
    let mut serializer = ChunkSerializer::new();
    // The SetChunkSize packet this returns is not sent: the peer already has that size from the
    // session; we only need our chunks to match it.
    serializer.set_max_chunk_size(chunk_size, RtmpTimestamp::new(0))?;
    // Uncompressed (type 0) header, so it decodes whatever the peer saw before on this csid.
    Ok(serializer.serialize(&payload, true, false)?.bytes)
}
