//! Property tests for the FLV audio tag and AudioSpecificConfig parsers: the proptest half of
//! the `flv_aac` fuzz target (fuzz/fuzz_targets/flv_aac.rs), run with the ordinary test suite.
//! Arbitrary bytes never panic; every valid config we build bit by bit parses back to the
//! values it was built from.

use bytes::Bytes;
use pipelines::{parse_audio_tag, AacConfigError, AudioSpecificConfig, AudioTag, FlvError};
use proptest::prelude::*;

const INDEXED_RATES: [u32; 13] = [
    96_000, 88_200, 64_000, 48_000, 44_100, 32_000, 24_000, 22_050, 16_000, 12_000, 11_025, 8_000,
    7_350,
];

/// MSB-first bit writer, the inverse of the parser's reader.
#[derive(Default)]
struct Bits {
    bits: Vec<bool>,
}

impl Bits {
    fn put(&mut self, value: u32, count: usize) -> &mut Self {
        for i in (0..count).rev() {
            self.bits.push((value >> i) & 1 == 1);
        }
        self
    }

    fn bytes(&self) -> Vec<u8> {
        let mut out = vec![0_u8; self.bits.len().div_ceil(8)];
        for (i, bit) in self.bits.iter().enumerate() {
            if *bit {
                out[i / 8] |= 0x80 >> (i % 8);
            }
        }
        out
    }
}

/// A sampling frequency as the config can carry it: an index into the table, or explicit.
#[derive(Debug, Clone, Copy)]
enum Rate {
    Indexed(u8),
    Explicit(u32),
}

impl Rate {
    fn hz(self) -> u32 {
        match self {
            Rate::Indexed(index) => INDEXED_RATES[usize::from(index)],
            Rate::Explicit(hz) => hz,
        }
    }

    fn write(self, bits: &mut Bits) {
        match self {
            Rate::Indexed(index) => {
                bits.put(u32::from(index), 4);
            }
            Rate::Explicit(hz) => {
                bits.put(15, 4).put(hz, 24);
            }
        }
    }
}

fn rate() -> impl Strategy<Value = Rate> {
    prop_oneof![
        (0_u8..13).prop_map(Rate::Indexed),
        (1_u32..=96_000).prop_map(Rate::Explicit),
    ]
}

/// A decodable config: plain (object type 1, 2 or 4) or explicit SBR/PS over such a core.
#[derive(Debug, Clone)]
struct ValidConfig {
    /// 5 (SBR) or 29 (PS) for explicit hierarchical signalling, else the core type.
    object_type: u8,
    core_object_type: u8,
    core_rate: Rate,
    extension_rate: Rate,
    channel_config: u8,
    short_frames: bool,
    /// GA extension / sync extension bytes an encoder may append; kept, never read.
    trailing: Vec<u8>,
}

impl ValidConfig {
    fn encode(&self) -> Vec<u8> {
        let mut bits = Bits::default();
        bits.put(u32::from(self.object_type), 5);
        self.core_rate.write(&mut bits);
        bits.put(u32::from(self.channel_config), 4);
        if self.is_explicit_sbr() {
            self.extension_rate.write(&mut bits);
            bits.put(u32::from(self.core_object_type), 5);
        }
        bits.put(u32::from(self.short_frames), 1);
        let mut bytes = bits.bytes();
        bytes.extend_from_slice(&self.trailing);
        bytes
    }

    fn is_explicit_sbr(&self) -> bool {
        matches!(self.object_type, 5 | 29)
    }
}

fn valid_config() -> impl Strategy<Value = ValidConfig> {
    (
        prop::sample::select(vec![1_u8, 2, 4]),
        prop::option::of(prop::sample::select(vec![5_u8, 29])),
        rate(),
        rate(),
        1_u8..=7,
        any::<bool>(),
        prop::collection::vec(any::<u8>(), 0..4),
    )
        .prop_map(
            |(core, sbr, core_rate, extension_rate, channel_config, short_frames, trailing)| {
                ValidConfig {
                    object_type: sbr.unwrap_or(core),
                    core_object_type: core,
                    core_rate,
                    extension_rate,
                    channel_config,
                    short_frames,
                    trailing,
                }
            },
        )
}

proptest! {
    #[test]
    fn audio_tags_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
        let payload = Bytes::from(bytes);
        if let Ok(AudioTag::AacSequenceHeader(config)) = parse_audio_tag(&payload) {
            let _ = AudioSpecificConfig::parse(config);
        }
        let _ = AudioSpecificConfig::parse(payload);
    }

    /// Every FLV tag shape maps to the variant and payload its header announces.
    #[test]
    fn audio_tags_split_as_announced(
        format in 0_u8..16,
        flags in 0_u8..16,
        packet_type in any::<u8>(),
        body in prop::collection::vec(any::<u8>(), 0..32),
    ) {
        let mut bytes = vec![format << 4 | flags, packet_type];
        bytes.extend_from_slice(&body);
        let parsed = parse_audio_tag(&Bytes::from(bytes));
        let expected = match (format, packet_type) {
            (10, 0) if body.is_empty() => Err(FlvError::EmptySequenceHeader),
            (10, 0) => Ok(AudioTag::AacSequenceHeader(Bytes::from(body))),
            (10, 1) if body.is_empty() => Err(FlvError::EmptyAacFrame),
            (10, 1) => Ok(AudioTag::AacRaw(Bytes::from(body))),
            (10, other) => Err(FlvError::UnknownAacPacketType { packet_type: other }),
            (other, _) => Ok(AudioTag::Unsupported { sound_format: other }),
        };
        prop_assert_eq!(parsed, expected);
    }

    #[test]
    fn valid_configs_round_trip(config in valid_config()) {
        let raw = config.encode();
        let asc = AudioSpecificConfig::parse(Bytes::from(raw.clone()))
            .map_err(|e| TestCaseError::fail(format!("{config:?} refused: {e}")))?;
        let (core_hz, output_hz) = if config.is_explicit_sbr() {
            let output = config.extension_rate.hz();
            (config.core_rate.hz().min(output), output)
        } else {
            (config.core_rate.hz(), config.core_rate.hz())
        };
        prop_assert_eq!(asc.object_type, config.object_type);
        prop_assert_eq!(asc.core_object_type, config.core_object_type);
        prop_assert_eq!(asc.sample_rate, output_hz);
        prop_assert_eq!(asc.core_sample_rate, core_hz);
        let channels = if config.channel_config == 7 { 8 } else { config.channel_config };
        prop_assert_eq!(asc.channels, channels);
        prop_assert_eq!(asc.frame_length, if config.short_frames { 960 } else { 1024 });
        prop_assert_eq!(&asc.raw[..], &raw[..]);
        prop_assert!(asc.frame_duration_ns() > 0);

        // Through an FLV sequence header, as publishers send it.
        let mut tag = vec![0xAF, 0x00];
        tag.extend_from_slice(&raw);
        prop_assert_eq!(
            parse_audio_tag(&Bytes::from(tag)),
            Ok(AudioTag::AacSequenceHeader(Bytes::from(raw)))
        );
    }

    /// Any prefix of a valid config is either the config itself or a clean "truncated" error.
    #[test]
    fn truncated_configs_are_errors(config in valid_config(), cut in any::<prop::sample::Index>()) {
        let raw = config.encode();
        let len = cut.index(raw.len());
        match AudioSpecificConfig::parse(Bytes::copy_from_slice(&raw[..len])) {
            Ok(_) | Err(AacConfigError::Truncated { .. }) => {}
            Err(other) => prop_assert!(false, "prefix {len} of {config:?}: {other}"),
        }
    }
}
