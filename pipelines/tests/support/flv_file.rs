//! Minimal FLV container reader (Adobe FLV spec v10, annex E) so tests can feed
//! real FFmpeg output: header, then tags of type 8 (audio), 9 (video), 18 (script).

/// Tag types in the FLV container.
pub const TAG_AUDIO: u8 = 8;
pub const TAG_VIDEO: u8 = 9;
pub const TAG_SCRIPT: u8 = 18;

/// One FLV tag: its type, timestamp in ms (what RTMP carries) and body (what an
/// RTMP message of that type carries).
#[derive(Debug, Clone)]
pub struct FlvTag {
    pub tag_type: u8,
    pub timestamp_ms: u32,
    pub data: bytes::Bytes,
}

/// Parses a whole FLV file; errors name the offset so a broken fixture is obvious.
pub fn read_flv(file: &[u8]) -> Result<Vec<FlvTag>, String> {
    if file.len() < 9 || &file[..3] != b"FLV" {
        return Err("not an FLV file (missing 'FLV' signature)".into());
    }
    let header_len = be_u32(&file[5..9]) as usize;
    // After the header comes PreviousTagSize0 (always 0).
    let mut pos = header_len + 4;
    let mut tags = Vec::new();
    while pos < file.len() {
        let header = file
            .get(pos..pos + 11)
            .ok_or_else(|| format!("truncated tag header at offset {pos}"))?;
        // Bit 5 is the "filter" (encryption) flag; the low 5 bits are the type.
        let tag_type = header[0] & 0x1F;
        let size = be_u24(&header[1..4]) as usize;
        let timestamp_ms = be_u24(&header[4..7]) | (u32::from(header[7]) << 24);
        let body_start = pos + 11;
        let data = file
            .get(body_start..body_start + size)
            .ok_or_else(|| format!("truncated tag body at offset {body_start} (size {size})"))?;
        tags.push(FlvTag {
            tag_type,
            timestamp_ms,
            data: bytes::Bytes::copy_from_slice(data),
        });
        // Skip the body and the trailing PreviousTagSize.
        pos = body_start + size + 4;
    }
    Ok(tags)
}

fn be_u24(b: &[u8]) -> u32 {
    (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2])
}

fn be_u32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}
