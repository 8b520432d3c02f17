//! The AAC `AudioSpecificConfig` (ISO/IEC 14496-3, 1.6.2.1), carried in the FLV AAC
//! sequence header.
//!
//! It is the only reliable source of sample rate and channel count: LiveKit Egress'
//! `onMetaData` omits them. Choices made here:
//!
//! - Escape object type (31) is read (`32 + 6 bits`); such types (USAC, ...) are then
//!   rejected as unsupported, but parsing never fails because of the escape itself.
//! - Sampling frequency index 15 reads the explicit 24-bit frequency.
//! - Explicit SBR/PS signalling (object type 5 or 29, "hierarchical") is followed:
//!   `sample_rate` is the extension (output) rate, `core_sample_rate` the AAC core
//!   rate. Implicit SBR is not visible here; `avdec_aac` detects it and the pipeline
//!   resamples whatever comes out, so nothing depends on it.
//! - Channel configuration 0 (layout in a program config element) is **rejected**:
//!   no publisher we target (LiveKit/faac, FFmpeg, OBS) sends it for mono/stereo, and
//!   a clear error beats guessing a channel count for the decoder caps.
//! - Object types the GStreamer `avdec_aac` + `aacparse` path cannot take are rejected
//!   with their name, so a publisher misconfiguration is obvious in the logs.

use bytes::Bytes;

/// Sampling frequencies by `samplingFrequencyIndex` (0..=12; 13, 14 reserved; 15 explicit).
const SAMPLE_RATES: [u32; 13] = [
    96_000, 88_200, 64_000, 48_000, 44_100, 32_000, 24_000, 22_050, 16_000, 12_000, 11_025, 8_000,
    7_350,
];

/// Explicit frequencies above the largest indexed rate are not real AAC streams.
const MAX_SAMPLE_RATE: u32 = 96_000;

const AOT_ESCAPE: u8 = 31;
const AOT_SBR: u8 = 5;
const AOT_PS: u8 = 29;

/// Core object types `avdec_aac` decodes from raw frames with `codec_data`.
const DECODABLE_CORE_TYPES: [u8; 3] = [1, 2, 4];

/// Parsed `AudioSpecificConfig`; `raw` keeps the original bytes for the decoder's
/// `codec_data`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AudioSpecificConfig {
    /// Signalled audio object type (2 = AAC-LC, 5 = HE-AAC, 29 = HE-AACv2, ...).
    pub object_type: u8,
    /// Output sample rate in Hz (the SBR extension rate for explicit HE-AAC).
    pub sample_rate: u32,
    /// Channel count from the channel configuration (1..=6, or 8 for config 7).
    pub channels: u8,
    /// The bytes this was parsed from.
    pub raw: Bytes,
    /// Object type of the AAC core (differs from `object_type` for explicit SBR/PS).
    pub core_object_type: u8,
    /// Sample rate of the AAC core in Hz; one frame lasts `frame_length / core_sample_rate`.
    pub core_sample_rate: u32,
    /// Samples per frame at the core rate: 1024, or 960 when `frameLengthFlag` is set.
    pub frame_length: u32,
}

/// Why an `AudioSpecificConfig` was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AacConfigError {
    #[error("AudioSpecificConfig of {len} byte(s) ends while reading {field}")]
    Truncated { len: usize, field: &'static str },
    #[error("AudioSpecificConfig uses reserved sampling frequency index {index}")]
    ReservedFrequencyIndex { index: u8 },
    #[error("AudioSpecificConfig has invalid explicit sampling frequency {hz} Hz (expected 1..={MAX_SAMPLE_RATE})")]
    InvalidExplicitFrequency { hz: u32 },
    #[error("AudioSpecificConfig channel configuration 0 (program config element) is not supported; publish mono or stereo")]
    ProgramConfigElement,
    #[error("AudioSpecificConfig has reserved/unsupported channel configuration {config}")]
    UnsupportedChannelConfig { config: u8 },
    #[error("AAC object type {object_type} ({name}) is not supported by the decoder; supported: 1 Main, 2 LC, 4 LTP, 5 HE-AAC (SBR), 29 HE-AACv2 (PS)")]
    UnsupportedObjectType { object_type: u8, name: &'static str },
}

impl AudioSpecificConfig {
    /// Parses and validates an `AudioSpecificConfig`. Never panics on short or
    /// garbage input; trailing bytes (GA extensions, sync extensions) are kept in
    /// `raw` for the decoder but not interpreted.
    pub fn parse(raw: Bytes) -> Result<Self, AacConfigError> {
        let mut bits = BitReader::new(&raw);
        let object_type = read_object_type(&mut bits)?;
        let mut core_sample_rate = read_sample_rate(&mut bits)?;
        let channel_config = bits.read(4, "channelConfiguration")? as u8;

        let mut core_object_type = object_type;
        let mut sample_rate = core_sample_rate;
        if object_type == AOT_SBR || object_type == AOT_PS {
            // Explicit hierarchical signalling: the first rate is the core's, then
            // come the extension (output) rate and the core's object type.
            sample_rate = read_sample_rate(&mut bits)?;
            core_object_type = read_object_type(&mut bits)?;
        }
        if !DECODABLE_CORE_TYPES.contains(&core_object_type) {
            return Err(AacConfigError::UnsupportedObjectType {
                object_type: core_object_type,
                name: object_type_name(core_object_type),
            });
        }
        if object_type == AOT_SBR || object_type == AOT_PS {
            // Some muxers write the same rate twice; never report a core rate above
            // the output rate.
            core_sample_rate = core_sample_rate.min(sample_rate);
        }

        // GASpecificConfig starts with frameLengthFlag for all decodable core types.
        let frame_length = if bits.read(1, "frameLengthFlag")? == 1 {
            960
        } else {
            1024
        };

        let channels = match channel_config {
            0 => return Err(AacConfigError::ProgramConfigElement),
            1..=6 => channel_config,
            7 => 8,
            config => return Err(AacConfigError::UnsupportedChannelConfig { config }),
        };

        Ok(Self {
            object_type,
            sample_rate,
            channels,
            raw,
            core_object_type,
            core_sample_rate,
            frame_length,
        })
    }

    /// Duration of one AAC frame in nanoseconds (e.g. 1024 / 44 100 Hz ≈ 23.2 ms).
    pub fn frame_duration_ns(&self) -> u64 {
        u64::from(self.frame_length) * 1_000_000_000 / u64::from(self.core_sample_rate.max(1))
    }
}

fn read_object_type(bits: &mut BitReader<'_>) -> Result<u8, AacConfigError> {
    let aot = bits.read(5, "audioObjectType")? as u8;
    if aot == AOT_ESCAPE {
        Ok(32 + bits.read(6, "audioObjectTypeExt")? as u8)
    } else {
        Ok(aot)
    }
}

fn read_sample_rate(bits: &mut BitReader<'_>) -> Result<u32, AacConfigError> {
    let index = bits.read(4, "samplingFrequencyIndex")? as u8;
    match index {
        15 => {
            let hz = bits.read(24, "samplingFrequency")?;
            if hz == 0 || hz > MAX_SAMPLE_RATE {
                Err(AacConfigError::InvalidExplicitFrequency { hz })
            } else {
                Ok(hz)
            }
        }
        _ => SAMPLE_RATES
            .get(usize::from(index))
            .copied()
            .ok_or(AacConfigError::ReservedFrequencyIndex { index }),
    }
}

fn object_type_name(object_type: u8) -> &'static str {
    match object_type {
        0 => "null",
        1 => "AAC Main",
        2 => "AAC LC",
        3 => "AAC SSR",
        4 => "AAC LTP",
        5 => "SBR",
        6 => "AAC Scalable",
        17 => "ER AAC LC",
        19 => "ER AAC LTP",
        20 => "ER AAC Scalable",
        23 => "ER AAC LD",
        29 => "PS",
        32 => "Layer-1",
        33 => "Layer-2",
        34 => "Layer-3",
        39 => "ER AAC ELD",
        42 => "USAC",
        _ => "not an AAC variant",
    }
}

/// MSB-first bit reader over a byte slice; every read is bounds-checked.
struct BitReader<'a> {
    data: &'a [u8],
    bit_pos: usize,
}

impl<'a> BitReader<'a> {
    fn new(data: &'a [u8]) -> Self {
        Self { data, bit_pos: 0 }
    }

    /// Reads `count` (≤ 32) bits, or reports which field ran past the end.
    fn read(&mut self, count: usize, field: &'static str) -> Result<u32, AacConfigError> {
        let truncated = AacConfigError::Truncated {
            len: self.data.len(),
            field,
        };
        if count > 32 || self.bit_pos + count > self.data.len() * 8 {
            return Err(truncated);
        }
        let mut value: u32 = 0;
        for _ in 0..count {
            let Some(&byte) = self.data.get(self.bit_pos / 8) else {
                return Err(truncated);
            };
            let bit = (byte >> (7 - self.bit_pos % 8)) & 1;
            value = (value << 1) | u32::from(bit);
            self.bit_pos += 1;
        }
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(bytes: &'static [u8]) -> Result<AudioSpecificConfig, AacConfigError> {
        AudioSpecificConfig::parse(Bytes::from_static(bytes))
    }

    #[test]
    fn lc_44100_stereo() {
        // What LiveKit Egress (faac) and FFmpeg send by default.
        let asc = parse(&[0x12, 0x10]).unwrap();
        assert_eq!(asc.object_type, 2);
        assert_eq!(asc.sample_rate, 44_100);
        assert_eq!(asc.channels, 2);
        assert_eq!(asc.frame_length, 1024);
        assert_eq!(&asc.raw[..], &[0x12, 0x10]);
        assert_eq!(asc.frame_duration_ns(), 23_219_954);
    }

    #[test]
    fn lc_48000_mono() {
        let asc = parse(&[0x11, 0x88]).unwrap();
        assert_eq!(
            (asc.object_type, asc.sample_rate, asc.channels),
            (2, 48_000, 1)
        );
    }

    #[test]
    fn ffmpeg_five_byte_config_with_trailing_extension() {
        // FFmpeg's encoder appends a sync extension (0x56 0xE5 0x00); it is kept, not read.
        let asc = parse(&[0x12, 0x10, 0x56, 0xE5, 0x00]).unwrap();
        assert_eq!((asc.sample_rate, asc.channels), (44_100, 2));
        assert_eq!(asc.raw.len(), 5);
    }

    #[test]
    fn explicit_frequency() {
        // aot 2 (00010), index 15 (1111), 44 056 Hz in 24 bits, channels 1 (0001), flag 0.
        let bits = format!("00010 1111 {:024b} 0001 0", 44_056);
        let asc = AudioSpecificConfig::parse(pack_bits(&bits)).unwrap();
        assert_eq!(
            (asc.object_type, asc.sample_rate, asc.channels),
            (2, 44_056, 1)
        );
    }

    #[test]
    fn explicit_frequency_zero_is_rejected() {
        let bits = format!("00010{}{}00010", "1111", "0".repeat(24));
        assert_eq!(
            AudioSpecificConfig::parse(pack_bits(&bits)),
            Err(AacConfigError::InvalidExplicitFrequency { hz: 0 })
        );
    }

    #[test]
    fn explicit_he_aac() {
        // aot 5, core 24 kHz (index 6), stereo, extension 48 kHz (index 3), core aot 2, flag 0.
        let bits = "00101 0110 0010 0011 00010 0";
        let asc = AudioSpecificConfig::parse(pack_bits(bits)).unwrap();
        assert_eq!(asc.object_type, 5);
        assert_eq!(asc.core_object_type, 2);
        assert_eq!(asc.sample_rate, 48_000);
        assert_eq!(asc.core_sample_rate, 24_000);
        assert_eq!(asc.channels, 2);
    }

    #[test]
    fn escape_object_type_is_read_then_rejected() {
        // aot 31 + 6 bits (10 -> 42 USAC), index 4, stereo.
        let bits = "11111 001010 0100 0010 0";
        assert_eq!(
            AudioSpecificConfig::parse(pack_bits(bits)),
            Err(AacConfigError::UnsupportedObjectType {
                object_type: 42,
                name: "USAC"
            })
        );
    }

    #[test]
    fn unsupported_and_reserved_values() {
        // aot 3 (SSR), 44.1 kHz, stereo.
        assert!(matches!(
            parse(&[0x1A, 0x10]),
            Err(AacConfigError::UnsupportedObjectType { object_type: 3, .. })
        ));
        // Channel configuration 0: PCE.
        assert_eq!(
            parse(&[0x12, 0x00]),
            Err(AacConfigError::ProgramConfigElement)
        );
        // Channel configuration 9: reserved.
        assert_eq!(
            parse(&[0x12, 0x48]),
            Err(AacConfigError::UnsupportedChannelConfig { config: 9 })
        );
        // Frequency index 13: reserved.
        assert_eq!(
            parse(&[0x16, 0x90]),
            Err(AacConfigError::ReservedFrequencyIndex { index: 13 })
        );
    }

    #[test]
    fn truncated_inputs_are_errors() {
        assert!(matches!(
            parse(&[]),
            Err(AacConfigError::Truncated { len: 0, .. })
        ));
        assert!(matches!(
            parse(&[0x12]),
            Err(AacConfigError::Truncated { len: 1, .. })
        ));
        // Explicit frequency announced but missing.
        assert!(matches!(
            parse(&[0x17, 0x80]),
            Err(AacConfigError::Truncated {
                field: "samplingFrequency",
                ..
            })
        ));
        // Escape announced but missing.
        assert!(matches!(
            parse(&[0xF8]),
            Err(AacConfigError::Truncated { .. })
        ));
    }

    #[test]
    fn garbage_never_panics() {
        for a in 0..=u8::MAX {
            for b in [0u8, 0x10, 0x88, 0xFF] {
                let _ = AudioSpecificConfig::parse(Bytes::copy_from_slice(&[a]));
                let _ = AudioSpecificConfig::parse(Bytes::copy_from_slice(&[a, b]));
                let _ = AudioSpecificConfig::parse(Bytes::copy_from_slice(&[a, b, a]));
            }
        }
    }

    /// Packs a string of '0'/'1' (spaces ignored) MSB-first, zero-padded.
    fn pack_bits(bits: &str) -> Bytes {
        let bits: Vec<u8> = bits.bytes().filter(|b| *b != b' ').collect();
        let mut out = vec![0u8; bits.len().div_ceil(8)];
        for (i, bit) in bits.iter().enumerate() {
            if *bit == b'1' {
                out[i / 8] |= 0x80 >> (i % 8);
            }
        }
        Bytes::from(out)
    }
}
