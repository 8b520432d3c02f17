//! Property tests for the PROXY protocol header parser: the proptest half of the
//! `proxy_header` fuzz target, checking the same promises the listener's reader relies on, on
//! arbitrary bytes and on the seed headers damaged byte by byte.

use proptest::prelude::*;
use realtime_core::rtmp::proxy_protocol::{parse, Parsed, MAX_HEADER_LEN};

/// The fuzz target's seeds (fuzz/corpus/proxy_header): v1 and v2 headers as load balancers
/// send them, some with RTMP bytes behind.
const SEEDS: [&[u8]; 10] = [
    include_bytes!("../fuzz/corpus/proxy_header/v1_tcp4_then_rtmp.bin"),
    include_bytes!("../fuzz/corpus/proxy_header/v1_tcp6.bin"),
    include_bytes!("../fuzz/corpus/proxy_header/v1_unknown.bin"),
    include_bytes!("../fuzz/corpus/proxy_header/v1_longest.bin"),
    include_bytes!("../fuzz/corpus/proxy_header/v2_inet_then_rtmp.bin"),
    include_bytes!("../fuzz/corpus/proxy_header/v2_inet6.bin"),
    include_bytes!("../fuzz/corpus/proxy_header/v2_inet_aws_tlv.bin"),
    include_bytes!("../fuzz/corpus/proxy_header/v2_local_health_check.bin"),
    include_bytes!("../fuzz/corpus/proxy_header/v2_unspec.bin"),
    include_bytes!("../fuzz/corpus/proxy_header/v2_unix.bin"),
];

/// The promises: a complete header lies within the input and `MAX_HEADER_LEN`, parses the
/// same alone, and each of its prefixes needs more; "need more" is never said of
/// `MAX_HEADER_LEN` bytes. Returns whether `data` held a complete header.
fn check(data: &[u8]) -> bool {
    match parse(data) {
        Ok(Parsed::Complete {
            version,
            source,
            consumed,
        }) => {
            assert!(consumed <= data.len() && consumed <= MAX_HEADER_LEN);
            assert_eq!(
                parse(&data[..consumed]),
                Ok(Parsed::Complete {
                    version,
                    source,
                    consumed
                })
            );
            for end in 0..consumed {
                assert_eq!(parse(&data[..end]), Ok(Parsed::NeedMore), "prefix {end}");
            }
            true
        }
        Ok(Parsed::NeedMore) => {
            assert!(data.len() < MAX_HEADER_LEN);
            false
        }
        Err(_) => false,
    }
}

#[test]
fn every_seed_is_a_complete_header() {
    for seed in SEEDS {
        assert!(check(seed), "{:?}", String::from_utf8_lossy(seed));
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2_000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_keep_the_promises(data in proptest::collection::vec(any::<u8>(), 0..700)) {
        check(&data);
    }

    #[test]
    fn damaged_seeds_keep_the_promises(
        seed in 0..SEEDS.len(),
        damage in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut data = SEEDS[seed].to_vec();
        for (at, byte) in damage {
            let at = at.index(data.len());
            data[at] = byte;
        }
        data.truncate(cut.index(data.len() + 1));
        check(&data);
    }
}
