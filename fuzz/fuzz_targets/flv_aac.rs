//! FLV audio tag and AudioSpecificConfig parsing on arbitrary bytes: the first thing the ingest
//! does with every RTMP audio message a publisher sends.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use pipelines::{parse_audio_tag, AudioSpecificConfig, AudioTag};

fuzz_target!(|data: &[u8]| {
    let payload = Bytes::copy_from_slice(data);
    if let Ok(AudioTag::AacSequenceHeader(config)) = parse_audio_tag(&payload) {
        if let Ok(asc) = AudioSpecificConfig::parse(config) {
            // What the decoder is built from must be usable: these feed GStreamer caps and
            // timestamps, so check the invariants the ingest relies on.
            assert!(asc.sample_rate > 0 && asc.core_sample_rate > 0);
            assert!((1..=8).contains(&asc.channels));
            assert!(asc.frame_duration_ns() > 0);
        }
    }
    // The config parser also sees bytes that did not come through an FLV header.
    let _ = AudioSpecificConfig::parse(payload);
});
