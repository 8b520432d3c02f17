//! Shared test support: FLV reading, FFmpeg fixtures, a decode driver, signal checks.
//! Each test binary uses a different subset, hence the dead_code allowance.
#![allow(dead_code)]

pub mod decode;
pub mod flv_file;
pub mod signal;
pub mod tools;
