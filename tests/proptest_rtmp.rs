//! Property tests for the RTMP connection handling: the proptest half of the `rtmp_connection`
//! fuzz target, through the same entry point (`rtmp::fuzz_entry::run_connection`, the
//! listener's own per-connection code over an in-memory peer). Whatever a peer sends after (or
//! instead of) a valid handshake, the connection ends by itself without a panic escaping, having
//! read no more than it was sent; recorded real publishers replay to a clean end.

use proptest::prelude::*;
use realtime_core::rtmp::fuzz_entry::run_connection;

/// Recordings of real publishers (fuzz/corpus/rtmp_connection, first byte = read split). The
/// clients waited for our answers between connect, createStream and publish; replayed in one
/// read, the session would see publish before we accepted connect (and refuse it), so small
/// reads stand in for those round trips.
const RECORDINGS: [&[u8]; 3] = [
    include_bytes!("../fuzz/corpus/rtmp_connection/ffmpeg-128-reads.bin"),
    include_bytes!("../fuzz/corpus/rtmp_connection/rtmp2sink-128-reads.bin"),
    include_bytes!("../fuzz/corpus/rtmp_connection/librtmp-128-reads.bin"),
];

/// FFmpeg publishing on a key the stub registry refuses (`refuse-1`).
const REFUSED: &[u8] =
    include_bytes!("../fuzz/corpus/rtmp_connection/ffmpeg-refused-key-128-reads.bin");

/// C0 + C1 + C2 of the original (non-digest) handshake.
const HANDSHAKE_LEN: usize = 1 + 2 * 1536;

fn handshake(c1: &[u8], c2: &[u8]) -> Vec<u8> {
    let mut bytes = vec![3_u8];
    bytes.extend_from_slice(c1);
    bytes.extend_from_slice(c2);
    bytes
}

fn read_size() -> impl Strategy<Value = usize> {
    prop_oneof![Just(64 * 1024), 1_usize..200, 1500_usize..4200]
}

#[test]
fn recorded_publishers_replay_to_a_clean_end() {
    for recording in RECORDINGS {
        let publisher = &recording[1..];
        for max_read in [128, 13, 1] {
            let run = run_connection(publisher, max_read);
            assert_eq!(
                run.close_reason, "tcp close",
                "read size {max_read}: {run:?}"
            );
            assert_eq!(run.bytes_read, publisher.len() as u64);
            // One publish, ended by the client's stop sequence.
            assert_eq!(run.detach_reasons, ["FCUnpublish"], "read size {max_read}");
        }
        // All at once: connect is still pending when publish arrives, so the session refuses
        // the publish and the connection simply runs to the end of the input.
        let run = run_connection(publisher, 64 * 1024);
        assert_eq!(run.close_reason, "tcp close", "{run:?}");
        assert!(run.detach_reasons.is_empty(), "{run:?}");
    }
}

/// Regression (found while fuzzing): a `connect` whose AMF0 command nests ~150 000 strict
/// arrays overflowed the stack in rml_amf0's recursive decoder, an abort that took the whole
/// process down. The inspector now refuses it and only this connection closes.
#[test]
fn deeply_nested_amf0_closes_only_the_connection() {
    let mut payload = vec![0x02, 0x00, 0x07];
    payload.extend_from_slice(b"connect");
    payload.push(0x00);
    payload.extend_from_slice(&1.0_f64.to_be_bytes());
    for _ in 0..150_000 {
        payload.extend_from_slice(&[0x0A, 0x00, 0x00, 0x00, 0x01]);
    }
    // One AMF0 command (type 20) on chunk stream 3, in 128-byte chunks.
    let length = (payload.len() as u32).to_be_bytes();
    let mut bytes = handshake(&[0; 1536], &[0; 1536]);
    bytes.extend_from_slice(&[
        0x03, 0, 0, 0, length[1], length[2], length[3], 20, 0, 0, 0, 0,
    ]);
    for (index, chunk) in payload.chunks(128).enumerate() {
        if index > 0 {
            bytes.push(0xC3);
        }
        bytes.extend_from_slice(chunk);
    }
    let run = run_connection(&bytes, 64 * 1024);
    assert!(run.close_reason.contains("nested deeper"), "{run:?}");
}

#[test]
fn refused_recording_ends_with_the_refusal() {
    let run = run_connection(&REFUSED[1..], 128);
    assert_eq!(
        run.close_reason, "publish refused with NetStream.Publish.BadName",
        "{run:?}"
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(
        bytes in prop::collection::vec(any::<u8>(), 0..4096),
        max_read in read_size(),
    ) {
        let run = run_connection(&bytes, max_read);
        prop_assert!(run.bytes_read <= bytes.len() as u64);
    }

    #[test]
    fn arbitrary_bytes_after_a_valid_handshake_never_panic(
        c1 in prop::collection::vec(any::<u8>(), 1536),
        c2 in prop::collection::vec(any::<u8>(), 1536),
        rest in prop::collection::vec(any::<u8>(), 0..8192),
        max_read in read_size(),
    ) {
        let mut bytes = handshake(&c1, &c2);
        bytes.extend_from_slice(&rest);
        let run = run_connection(&bytes, max_read);
        prop_assert!(run.bytes_read <= bytes.len() as u64);
        // The handshake itself always succeeds: S0+S1+S2 went out.
        prop_assert!(run.bytes_written >= HANDSHAKE_LEN as u64, "{:?}", run);
    }

    /// A real publish with a few bytes overwritten, some cut out, or cut short: closer to what
    /// a broken encoder or a hostile peer sends than uniform noise.
    #[test]
    fn damaged_recordings_never_panic(
        which in 0_usize..RECORDINGS.len(),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..8),
        hole in prop::option::of((any::<prop::sample::Index>(), 1_usize..300)),
        cut in any::<prop::sample::Index>(),
        max_read in read_size(),
    ) {
        let mut bytes = RECORDINGS[which][1..].to_vec();
        // Leave the handshake alone so the damage lands in the RTMP chunk stream.
        let session = bytes.len() - HANDSHAKE_LEN;
        for (at, value) in flips {
            bytes[HANDSHAKE_LEN + at.index(session)] = value;
        }
        if let Some((at, len)) = hole {
            let start = HANDSHAKE_LEN + at.index(session);
            let end = (start + len).min(bytes.len());
            bytes.drain(start..end);
        }
        bytes.truncate(HANDSHAKE_LEN + cut.index(bytes.len() - HANDSHAKE_LEN + 1));
        let run = run_connection(&bytes, max_read);
        prop_assert!(run.bytes_read <= bytes.len() as u64);
    }
}
