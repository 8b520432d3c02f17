//! Browser commands (docs/PROTOCOL.md#websocket-connection) on arbitrary UTF-8: anyone who can open the WebSocket can send
//! these.
#![no_main]

use actors::wire::ClientCommand;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let _ = serde_json::from_str::<ClientCommand>(text);
});
