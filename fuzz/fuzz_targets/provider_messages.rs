//! Gladia Live v2 server messages (text frames from the provider's WebSocket) on arbitrary
//! UTF-8: the provider is outside our control and its shapes are partly UNCONFIRMED.
#![no_main]

use actors::gladia::protocol::parse_server_message;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let _ = parse_server_message(text);
});
