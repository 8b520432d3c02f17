//! What the end-to-end tests (`tests/*.rs`) and the load generator (`loadgen/`) share: the
//! mock provider's start, the real service as a child process, RTMP publishers (FFmpeg,
//! GStreamer and an in-process rml_rtmp client), a WebSocket client, test databases and the
//! audio fixtures with their comparisons.
//!
//! A crate rather than a `mod support;` in every test binary: each binary uses a different
//! subset, and only in a library are the unused `pub` items not dead code.

pub mod audio;
pub mod database;
pub mod mock;
pub mod publishers;
pub mod rtmp_client;
pub mod service;
pub mod tools;
pub mod transcripts;
pub mod ws;

pub use audio::*;
pub use database::*;
pub use mock::*;
pub use publishers::*;
pub use service::*;
pub use tools::*;
pub use transcripts::*;
pub use ws::*;

/// End-to-end tests share 2 cores: run them one at a time within a test binary.
pub static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The `realtime-core` binary Cargo built for the calling integration test. A macro because
/// Cargo sets `CARGO_BIN_EXE_<name>` only while it compiles that test (at run time only from
/// Cargo 1.94, newer than the workspace's rust-version).
#[macro_export]
macro_rules! realtime_core_bin {
    () => {
        ::std::path::Path::new(env!("CARGO_BIN_EXE_realtime-core"))
    };
}
