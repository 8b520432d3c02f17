//! Arbitrary bytes into one RTMP connection, exactly as the listener handles a TCP peer:
//! handshake, `WireInspector`, rml_rtmp `ServerSession` under our `catch_unwind`, event handling
//! up to the actor tree (a stub registry that accepts publishes and drops the audio).
//!
//! Input: the first byte picks how the bytes are split into reads (a real socket splits them
//! anywhere, and the handshake/session hand-over depends on it); the rest is what the peer
//! sends, from C0 on. Seeds are recordings of FFmpeg, rtmp2sink and librtmp publishers.
//!
//! A panic inside `isolation::guarded` is the designed behaviour (the connection closes); a
//! panic anywhere else, or an abort, is a crash. libfuzzer-sys' panic hook aborts on *every*
//! panic, caught or not, so it is replaced: the hook only remembers the message, and a panic
//! that escapes `run_connection` is reported and aborted on here.
#![no_main]

use std::cell::RefCell;
use std::panic::{self, AssertUnwindSafe};

use libfuzzer_sys::fuzz_target;
use realtime_core::rtmp::fuzz_entry::run_connection;

/// Read sizes: whole buffers like a fast socket, byte by byte, and sizes around the handshake
/// packet (1 + 1536) and the default chunk size (128).
const READ_SIZES: [usize; 8] = [64 * 1024, 1, 2, 13, 128, 1537, 3073, 4096];

thread_local! {
    static LAST_PANIC: RefCell<String> = const { RefCell::new(String::new()) };
}

fuzz_target!(
    init: {
        panic::set_hook(Box::new(|info| {
            let text = info.to_string();
            LAST_PANIC.with(|last| *last.borrow_mut() = text);
        }));
    },
    |data: &[u8]| {
        let Some((&split, input)) = data.split_first() else {
            return;
        };
        let max_read = READ_SIZES[usize::from(split) % READ_SIZES.len()];
        if panic::catch_unwind(AssertUnwindSafe(|| run_connection(input, max_read))).is_err() {
            LAST_PANIC.with(|last| eprintln!("panic outside catch_unwind: {}", last.borrow()));
            std::process::abort();
        }
    }
);
