//! Arbitrary bytes as the start of a connection to an RTMP listener with
//! `RTMP_PROXY_PROTOCOL=true` (docs/PROTOCOL.md#hostile-input-and-limits): the PROXY protocol
//! v1/v2 header parser, exactly as the listener calls it on what it has received so far.
//!
//! Beyond "never panics", the parser's promises to its reader are checked: a complete header
//! lies within the input and within `MAX_HEADER_LEN`, and parses the same on its own (the
//! bytes after it are the client's and must not change it); every prefix of a complete
//! header asks for more; "need more" is never said of `MAX_HEADER_LEN` bytes, so a reader
//! bounded by it always reaches a decision. Seeds are headers as HAProxy, AWS NLB (v2 with
//! TLVs) and the health checks (`LOCAL`, `UNKNOWN`) send them.
#![no_main]

use libfuzzer_sys::fuzz_target;
use realtime_core::rtmp::proxy_protocol::{parse, Parsed, MAX_HEADER_LEN};

fuzz_target!(|data: &[u8]| {
    match parse(data) {
        Ok(Parsed::Complete {
            version,
            source,
            consumed,
        }) => {
            assert!(consumed <= data.len() && consumed <= MAX_HEADER_LEN);
            let header = &data[..consumed];
            assert_eq!(
                parse(header),
                Ok(Parsed::Complete {
                    version,
                    source,
                    consumed
                })
            );
            for end in 0..consumed {
                assert_eq!(parse(&data[..end]), Ok(Parsed::NeedMore), "prefix {end}");
            }
        }
        Ok(Parsed::NeedMore) => assert!(data.len() < MAX_HEADER_LEN),
        Err(_) => {}
    }
});
