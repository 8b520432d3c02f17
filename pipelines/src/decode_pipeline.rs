//! In-process GStreamer decoding of AAC frames to PCM S16LE 16 kHz mono:
//!
//! ```text
//! appsrc ! aacparse ! avdec_aac ! audioconvert ! audioresample
//!        ! capsfilter(audio/x-raw,format=S16LE,rate=16000,channels=1,layout=interleaved)
//!        ! appsink(sync=false)
//! ```
//!
//! There is no queue: everything after `appsrc` runs in appsrc's single streaming
//! thread, so a frame is decoded as soon as it is pushed (first PCM arrives a few ms
//! after the first frame, see the integration tests). No glib main loop runs in the
//! service, so the bus is read by a *sync handler*: GStreamer calls it on the thread
//! that posts the message, and no watcher thread exists that could leak.
//!
//! Timestamps: buffers carry PTS from the RTMP timestamps (relative to the first
//! frame, kept monotonic, jumps bounded: `frame_clock`) and the exact frame duration
//! from the `AudioSpecificConfig`.
//! The PCM *length* never depends on them: nothing downstream (no `audiorate`, no
//! clock sync) inserts or drops samples because of timestamps, so millisecond jitter
//! of RTMP timestamps causes neither drift nor gaps. A real jump (a publisher pause)
//! makes `audioresample` restart its filter, which costs well under 1 ms of audio.
//!
//! AAC encoder priming: encoders prepend a delay (FFmpeg's `aac`: 1024 samples,
//! 23.2 ms at 44.1 kHz) that MP4 signals in an edit list but FLV cannot carry. It is
//! therefore decoded and delivered as ~23 ms of near-silence at the start (tests see
//! the content delayed by exactly 23 ms). It is deliberately not trimmed: the amount
//! depends on the publisher's encoder (faac for LiveKit, FFmpeg, OBS...) and is not
//! signalled, so trimming a guess could cut real speech; 23 ms of silence is harmless
//! for speech-to-text. Corrupted frames that the decoder rejects produce no PCM (a
//! ~23 ms gap each), they are not concealed with silence.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;

use crate::aac_config::AudioSpecificConfig;
pub use crate::decode_error::DecodeError;
use crate::frame_clock::FrameClock;
pub use crate::frame_clock::Timing;
use crate::gst_init;
use crate::pcm_format::PCM_SAMPLE_RATE;

/// Upper bound of AAC bytes waiting in appsrc. At 128 kb/s this is ~8 s of audio:
/// the decoder runs hundreds of times faster than real time, so reaching it means
/// the pipeline is stuck, and the caller should drop (and count) frames rather than
/// buffer without bound while the RTMP connection keeps reading.
pub const MAX_QUEUED_BYTES: u64 = 128 * 1024;

/// Consecutive undecodable frames tolerated before `avdec_aac` raises an error.
/// One corrupt frame costs ~23 ms of audio and is skipped; 50 in a row (~1.2 s)
/// means the stream is garbage and the caller should know. (GStreamer's default,
/// -1, would ignore errors forever.)
const MAX_CONSECUTIVE_DECODE_ERRORS: i32 = 50;

/// What the pipeline reports through the `on_event` callback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecoderEvent {
    /// Decoded PCM, S16LE 16 kHz mono interleaved, any length (sample-aligned).
    Pcm(Bytes),
    /// End of stream: everything pushed before [`DecodePipeline::finish`] has been
    /// delivered as `Pcm`. Terminal.
    Finished,
    /// A GStreamer error (element, message, debug detail). Terminal.
    Error(String),
}

type EventCallback = dyn Fn(DecoderEvent) + Send + Sync;

/// State shared with the GStreamer threads (appsink callbacks, bus sync handler).
struct Shared {
    on_event: Box<EventCallback>,
    /// Set once `Finished` or `Error` has been reported; guarantees exactly one.
    terminated: AtomicBool,
}

impl Shared {
    fn terminate(&self, event: DecoderEvent) {
        if !self.terminated.swap(true, Ordering::SeqCst) {
            (self.on_event)(event);
        }
    }
}

/// A running decode pipeline for one RTMP stream. Dropping it stops the pipeline
/// (state Null) and releases its threads and file descriptors; do not drop it from
/// inside `on_event` (that runs on the pipeline's own streaming thread).
pub struct DecodePipeline {
    pipeline: gst::Pipeline,
    appsrc: gst_app::AppSrc,
    shared: Arc<Shared>,
    clock: Mutex<FrameClock>,
    finish_requested: AtomicBool,
}

impl std::fmt::Debug for DecodePipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DecodePipeline")
            .field("pipeline", &self.pipeline.name())
            .field("queued_bytes", &self.queued_bytes())
            .finish()
    }
}

impl DecodePipeline {
    /// Builds and starts
    /// `appsrc ! aacparse ! avdec_aac ! audioconvert ! audioresample ! capsfilter ! appsink`
    /// for the stream described by `config` (rate and channels come from the
    /// `AudioSpecificConfig`, never from `onMetaData`).
    ///
    /// `on_event` runs on GStreamer streaming threads: it must not block (forward with
    /// `try_send`). It receives `Pcm` events, then exactly one terminal event:
    /// `Finished` after [`finish`](Self::finish), or `Error` on failure.
    pub fn start(
        config: &AudioSpecificConfig,
        on_event: impl Fn(DecoderEvent) + Send + Sync + 'static,
    ) -> Result<Self, DecodeError> {
        gst_init::init()?;

        let shared = Arc::new(Shared {
            on_event: Box::new(on_event),
            terminated: AtomicBool::new(false),
        });

        let input_caps = gst::Caps::builder("audio/mpeg")
            .field("mpegversion", 4i32)
            .field("stream-format", "raw")
            .field("framed", true)
            .field("codec_data", gst::Buffer::from_slice(config.raw.clone()))
            .field(
                "rate",
                i32::try_from(config.sample_rate).unwrap_or(i32::MAX),
            )
            .field("channels", i32::from(config.channels))
            .build();
        let output_caps = gst::Caps::builder("audio/x-raw")
            .field("format", "S16LE")
            .field("rate", PCM_SAMPLE_RATE as i32)
            .field("channels", 1i32)
            .field("layout", "interleaved")
            .build();

        let appsrc = gst_app::AppSrc::builder()
            .caps(&input_caps)
            .format(gst::Format::Time)
            // Live: no preroll wait, and PTS are ours (from RTMP), not the clock's.
            .is_live(true)
            .do_timestamp(false)
            // Never block the RTMP reader; push_frame checks the bound itself.
            .block(false)
            .max_bytes(MAX_QUEUED_BYTES)
            .stream_type(gst_app::AppStreamType::Stream)
            .build();
        let aacparse = make_element("aacparse")?;
        let decoder = make_element("avdec_aac")?;
        decoder.set_property("max-errors", MAX_CONSECUTIVE_DECODE_ERRORS);
        let convert = make_element("audioconvert")?;
        let resample = make_element("audioresample")?;
        let capsfilter = gst::ElementFactory::make("capsfilter")
            .property("caps", &output_caps)
            .build()
            .map_err(|err| build_error("capsfilter", err))?;
        let appsink = gst_app::AppSink::builder()
            // Deliver as fast as decoded: no clock, no retained last sample.
            .sync(false)
            .enable_last_sample(false)
            .build();

        let pipeline = gst::Pipeline::new();
        let elements = [
            appsrc.upcast_ref::<gst::Element>(),
            &aacparse,
            &decoder,
            &convert,
            &resample,
            &capsfilter,
            appsink.upcast_ref(),
        ];
        pipeline
            .add_many(elements)
            .map_err(|err| build_error("add", err))?;
        gst::Element::link_many(elements).map_err(|err| build_error("link", err))?;

        appsink.set_callbacks(
            gst_app::AppSinkCallbacks::builder()
                .new_sample({
                    let shared = Arc::clone(&shared);
                    move |sink| {
                        let sample = sink.pull_sample().map_err(|_| gst::FlowError::Flushing)?;
                        let Some(buffer) = sample.buffer_owned() else {
                            return Ok(gst::FlowSuccess::Ok);
                        };
                        let mapped = buffer.map_readable().map_err(|_| gst::FlowError::Error)?;
                        if !mapped.is_empty() {
                            // Copied (~0.7 KB per AAC frame) rather than wrapping the
                            // GstBuffer: consumers may hold PCM for a minute (the
                            // provider's unacked-audio buffer), and retained GStreamer
                            // buffers could starve an upstream buffer pool.
                            (shared.on_event)(DecoderEvent::Pcm(Bytes::copy_from_slice(&mapped)));
                        }
                        Ok(gst::FlowSuccess::Ok)
                    }
                })
                .eos({
                    let shared = Arc::clone(&shared);
                    move |_| shared.terminate(DecoderEvent::Finished)
                })
                .build(),
        );

        let bus = pipeline.bus().ok_or(DecodeError::Build {
            stage: "bus",
            message: "pipeline has no bus".into(),
        })?;
        bus.set_sync_handler({
            let shared = Arc::clone(&shared);
            move |_, message| {
                handle_bus_message(&shared, message);
                // Nobody pops this bus: drop everything so it cannot grow.
                gst::BusSyncReply::Drop
            }
        });

        let frame_duration = gst::ClockTime::from_nseconds(config.frame_duration_ns());
        let this = Self {
            pipeline,
            appsrc,
            shared,
            clock: Mutex::new(FrameClock::new(frame_duration)),
            finish_requested: AtomicBool::new(false),
        };
        // On failure `this` is dropped, which sets the pipeline back to Null.
        this.pipeline
            .set_state(gst::State::Playing)
            .map_err(|err| DecodeError::Start(err.to_string()))?;
        Ok(this)
    }

    /// Pushes one raw AAC frame with its RTMP timestamp (ms); says whether the timestamp
    /// followed the previous one or was a discontinuity (see `frame_clock`). Never blocks:
    /// when [`MAX_QUEUED_BYTES`] are already waiting, returns [`DecodeError::QueueFull`]
    /// and the frame is dropped.
    pub fn push_frame(&self, frame: Bytes, timestamp_ms: u32) -> Result<Timing, DecodeError> {
        if self.finish_requested.load(Ordering::SeqCst)
            || self.shared.terminated.load(Ordering::SeqCst)
        {
            return Err(DecodeError::Stopped);
        }
        let queued_bytes = self.appsrc.current_level_bytes();
        if queued_bytes + frame.len() as u64 > MAX_QUEUED_BYTES {
            return Err(DecodeError::QueueFull {
                queued_bytes,
                max_bytes: MAX_QUEUED_BYTES,
            });
        }

        let (tick, duration) = {
            let mut clock = self.clock.lock().unwrap_or_else(|e| e.into_inner());
            (clock.tick(timestamp_ms), clock.frame_duration)
        };
        let mut buffer = gst::Buffer::from_slice(frame);
        {
            let buffer = buffer.make_mut();
            buffer.set_pts(tick.pts);
            buffer.set_duration(duration);
        }
        self.appsrc
            .push_buffer(buffer)
            .map(|_| tick.timing)
            .map_err(|flow| match flow {
                gst::FlowError::Flushing | gst::FlowError::Eos => DecodeError::Stopped,
                other => DecodeError::Push(format!("{other:?}")),
            })
    }

    /// Signals end of stream. Once the last PCM has been delivered, `on_event`
    /// receives `Finished` (once). Later calls and later pushes are ignored/refused.
    pub fn finish(&self) {
        if self.finish_requested.swap(true, Ordering::SeqCst) {
            return;
        }
        if let Err(flow) = self.appsrc.end_of_stream() {
            // Only happens when the pipeline already failed or is shutting down.
            tracing::debug!(?flow, "end_of_stream refused by appsrc");
        }
    }

    /// AAC bytes waiting in appsrc (for metrics; bounded by [`MAX_QUEUED_BYTES`]).
    pub fn queued_bytes(&self) -> u64 {
        self.appsrc.current_level_bytes()
    }
}

impl Drop for DecodePipeline {
    fn drop(&mut self) {
        // Null stops and joins the streaming thread and closes every element.
        if let Err(err) = self.pipeline.set_state(gst::State::Null) {
            tracing::warn!(%err, "decode pipeline did not stop cleanly");
        }
        if let Some(bus) = self.pipeline.bus() {
            bus.unset_sync_handler();
        }
    }
}

fn handle_bus_message(shared: &Shared, message: &gst::Message) {
    use gst::MessageView;
    match message.view() {
        MessageView::Error(err) => {
            let source = message
                .src()
                .map(|s| s.path_string().to_string())
                .unwrap_or_else(|| "unknown element".into());
            let detail = err.debug().map(|d| format!(" ({d})")).unwrap_or_default();
            shared.terminate(DecoderEvent::Error(format!(
                "{source}: {}{detail}",
                err.error()
            )));
        }
        MessageView::Warning(warning) => {
            tracing::warn!(
                source = ?message.src().map(|s| s.path_string()),
                error = %warning.error(),
                debug = ?warning.debug(),
                "decode pipeline warning"
            );
        }
        _ => {}
    }
}

fn make_element(factory: &'static str) -> Result<gst::Element, DecodeError> {
    gst::ElementFactory::make(factory)
        .build()
        .map_err(|err| build_error(factory, err))
}

fn build_error(stage: &'static str, err: impl std::fmt::Display) -> DecodeError {
    DecodeError::Build {
        stage,
        message: err.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pipeline_can_move_between_threads_and_be_shared() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<DecodePipeline>();
    }
}
