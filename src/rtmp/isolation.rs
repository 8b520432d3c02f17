//! Panic isolation for rml_rtmp. The library panics on some peer input (`@setDataFrame` with
//! too few values: sessions/server/mod.rs:938 and :967), so every call that parses peer bytes
//! goes through [`guarded`]: a panic becomes an error that closes that one connection.
//!
//! The process panic hook is left alone on purpose (other code relies on it), so the default
//! hook still prints its message on stderr; the connection logs its own line with the peer.

use std::any::Any;
use std::panic::{catch_unwind, AssertUnwindSafe};

/// A panic caught inside rml_rtmp, with its message when it was a string.
#[derive(Debug, thiserror::Error)]
#[error("rml_rtmp panicked: {message}")]
pub(crate) struct LibraryPanic {
    pub message: String,
}

/// Runs `f`, turning a panic into [`LibraryPanic`].
///
/// `AssertUnwindSafe` is sound here because the state `f` touches (the handshake, the session,
/// the inspector) is never used again after a panic: the connection closes.
pub(crate) fn guarded<T>(f: impl FnOnce() -> T) -> Result<T, LibraryPanic> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|payload| LibraryPanic {
        message: panic_message(payload.as_ref()),
    })
}

fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_string()
    }
}
