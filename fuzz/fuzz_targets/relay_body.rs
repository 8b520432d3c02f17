//! The body of `POST /api/realtime/transcribe/broadcast` (docs/PROTOCOL.md#http-broadcast-mode):
//! parsed and validated exactly as the route does, on arbitrary bytes. Only a holder of the
//! broadcast secret reaches this code, but a leaked secret must not crash the receiver.
#![no_main]

use actors::wire::IncomingTranscript;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|body: &[u8]| {
    if let Ok(message) = serde_json::from_slice::<IncomingTranscript>(body) {
        let _ = message.validate();
    }
});
