//! Media code for realtime-core: from RTMP audio messages to PCM chunks for the
//! speech-to-text provider. Nothing here knows about actix; the actors drive it.
//!
//! The data path, one module per step:
//!
//! - [`flv`]: split an RTMP audio message (an FLV `AUDIODATA` body) into an AAC
//!   sequence header or one raw AAC frame, zero-copy.
//! - [`aac_config`]: parse the AAC `AudioSpecificConfig` from the sequence header;
//!   it, not `onMetaData`, is the truth about sample rate and channels.
//! - [`frame_clock`]: RTMP timestamps to monotonic stream time, jumps bounded.
//! - [`decode_pipeline`]: an in-process GStreamer pipeline
//!   (`aacparse ! avdec_aac ! audioconvert ! appsink`, run in the caller's thread: no
//!   thread of its own) turning AAC frames into S16LE 16 kHz mono PCM, reported through a
//!   callback.
//! - [`resampler`]: the downmix and fixed-ratio polyphase filter from the decoder's rate
//!   to 16 kHz, called from that pipeline's sink.
//! - [`chunker`]: cut that PCM into fixed-size chunks (~100 ms) for the provider,
//!   flushing a partial chunk when audio trickles in too slowly.
//!
//! Call [`init`] once at startup to fail fast when a GStreamer plugin is missing.

pub mod aac_config;
pub mod chunker;
mod decode_error;
pub mod decode_pipeline;
pub mod flv;
pub mod frame_clock;
mod gst_init;
pub mod pcm_format;
pub mod resampler;

pub use aac_config::{AacConfigError, AudioSpecificConfig};
pub use chunker::PcmChunker;
pub use decode_pipeline::{DecodeError, DecodePipeline, DecoderEvent};
pub use flv::{parse_audio_tag, AudioTag, FlvError};
pub use frame_clock::{Timing, MAX_TIMESTAMP_STEP_MS};
pub use gst_init::init;
pub use pcm_format::{PCM_BYTES_PER_MS, PCM_SAMPLE_RATE};
