//! Serialised control frames shared by the broadcaster and the client actor.

use bytestring::ByteString;

use crate::messages::{now_ms, SessionState};
use crate::wire::{to_json, ErrorMessage, StatusMessage};

pub fn status_frame(session_slug: &str, state: SessionState, detail: &str) -> ByteString {
    to_json(&StatusMessage {
        kind: "status",
        session_slug,
        state,
        detail,
    })
    .into()
}

pub fn error_frame(code: &str, message: &str) -> ByteString {
    to_json(&ErrorMessage {
        kind: "error",
        code,
        message,
    })
    .into()
}

pub fn pong_frame() -> ByteString {
    format!(r#"{{"type":"pong","ts":{}}}"#, now_ms()).into()
}
