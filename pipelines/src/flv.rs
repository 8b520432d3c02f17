//! FLV `AUDIODATA` parsing: the body of an RTMP audio message.
//!
//! Layout (Adobe FLV spec v10, E.4.2): one byte
//! `SoundFormat(4) | SoundRate(2) | SoundSize(1) | SoundType(1)`, then, for AAC
//! (SoundFormat 10) only, one `AACPacketType` byte (0 = sequence header carrying the
//! `AudioSpecificConfig`, 1 = one raw AAC frame) and the payload. For AAC the
//! rate/size/type bits are fixed placeholders (`0xAF`), so they are ignored here:
//! the real parameters come from the `AudioSpecificConfig`.

use bytes::Bytes;

/// FLV `SoundFormat` value for AAC.
pub const SOUND_FORMAT_AAC: u8 = 10;

const AAC_PACKET_SEQUENCE_HEADER: u8 = 0;
const AAC_PACKET_RAW: u8 = 1;

/// What one RTMP audio message carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AudioTag {
    /// AAC sequence header: the `AudioSpecificConfig` bytes (see [`crate::aac_config`]).
    AacSequenceHeader(Bytes),
    /// One raw AAC access unit (no ADTS header).
    AacRaw(Bytes),
    /// A codec we do not decode (MP3 = 2, Speex = 11, Enhanced-RTMP ExHeader = 9, ...).
    /// Not an error: the caller decides whether to log, count or close.
    Unsupported { sound_format: u8 },
}

/// Malformed FLV audio data. Messages say what was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FlvError {
    #[error("empty FLV audio tag: expected at least the SoundFormat byte")]
    Empty,
    #[error("AAC audio tag of {len} byte(s) has no AACPacketType byte")]
    MissingAacPacketType { len: usize },
    #[error("AAC audio tag has unknown AACPacketType {packet_type} (expected 0 = sequence header or 1 = raw)")]
    UnknownAacPacketType { packet_type: u8 },
    #[error("AAC sequence header is empty: no AudioSpecificConfig")]
    EmptySequenceHeader,
    #[error("raw AAC audio tag carries no frame data")]
    EmptyAacFrame,
}

/// Parses an RTMP audio message body. The returned payloads are slices of
/// `payload` (no copy). Never panics, whatever the input.
pub fn parse_audio_tag(payload: &Bytes) -> Result<AudioTag, FlvError> {
    let first = *payload.first().ok_or(FlvError::Empty)?;
    let sound_format = first >> 4;
    if sound_format != SOUND_FORMAT_AAC {
        return Ok(AudioTag::Unsupported { sound_format });
    }
    let packet_type = *payload
        .get(1)
        .ok_or(FlvError::MissingAacPacketType { len: payload.len() })?;
    let body = payload.slice(2..);
    match packet_type {
        AAC_PACKET_SEQUENCE_HEADER if body.is_empty() => Err(FlvError::EmptySequenceHeader),
        AAC_PACKET_SEQUENCE_HEADER => Ok(AudioTag::AacSequenceHeader(body)),
        AAC_PACKET_RAW if body.is_empty() => Err(FlvError::EmptyAacFrame),
        AAC_PACKET_RAW => Ok(AudioTag::AacRaw(body)),
        other => Err(FlvError::UnknownAacPacketType { packet_type: other }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequence_header_is_sliced_without_copy() {
        let msg = Bytes::from_static(&[0xAF, 0x00, 0x12, 0x10]);
        let tag = parse_audio_tag(&msg).unwrap();
        let AudioTag::AacSequenceHeader(asc) = tag else {
            panic!("expected a sequence header, got {tag:?}");
        };
        assert_eq!(&asc[..], &[0x12, 0x10]);
        // Same backing storage: slice of the input, not a copy.
        assert_eq!(asc.as_ptr(), msg[2..].as_ptr());
    }

    #[test]
    fn raw_frame() {
        let msg = Bytes::from_static(&[0xAF, 0x01, 0x21, 0x10, 0x05]);
        assert_eq!(
            parse_audio_tag(&msg).unwrap(),
            AudioTag::AacRaw(Bytes::from_static(&[0x21, 0x10, 0x05]))
        );
    }

    #[test]
    fn other_codecs_are_unsupported_not_errors() {
        // MP3, 44 kHz, 16 bit, stereo.
        let msg = Bytes::from_static(&[0x2F, 0xFF, 0xFB]);
        assert_eq!(
            parse_audio_tag(&msg).unwrap(),
            AudioTag::Unsupported { sound_format: 2 }
        );
        // A lone byte of a non-AAC format is still a valid tag header.
        assert_eq!(
            parse_audio_tag(&Bytes::from_static(&[0xB2])).unwrap(),
            AudioTag::Unsupported { sound_format: 11 }
        );
    }

    #[test]
    fn truncated_and_malformed_inputs_are_errors() {
        assert_eq!(parse_audio_tag(&Bytes::new()), Err(FlvError::Empty));
        assert_eq!(
            parse_audio_tag(&Bytes::from_static(&[0xAF])),
            Err(FlvError::MissingAacPacketType { len: 1 })
        );
        assert_eq!(
            parse_audio_tag(&Bytes::from_static(&[0xAF, 0x00])),
            Err(FlvError::EmptySequenceHeader)
        );
        assert_eq!(
            parse_audio_tag(&Bytes::from_static(&[0xAF, 0x01])),
            Err(FlvError::EmptyAacFrame)
        );
        assert_eq!(
            parse_audio_tag(&Bytes::from_static(&[0xAF, 0x02, 0x00])),
            Err(FlvError::UnknownAacPacketType { packet_type: 2 })
        );
    }

    #[test]
    fn every_short_prefix_is_handled_without_panic() {
        let msg = [0xAFu8, 0x01, 0x21, 0x10, 0x05];
        for len in 0..=msg.len() {
            let _ = parse_audio_tag(&Bytes::copy_from_slice(&msg[..len]));
        }
        for first in 0..=u8::MAX {
            for second in [0u8, 1, 2, 0xFF] {
                let _ = parse_audio_tag(&Bytes::copy_from_slice(&[first, second]));
                let _ = parse_audio_tag(&Bytes::copy_from_slice(&[first]));
            }
        }
    }
}
