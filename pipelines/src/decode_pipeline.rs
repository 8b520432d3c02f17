//! In-process GStreamer decoding of AAC frames to PCM S16LE 16 kHz mono:
//!
//! ```text
//! (our src pad) ! aacparse ! avdec_aac ! audioconvert ! capsfilter(F32LE, interleaved)
//!               ! appsink(sync=false, async=false)
//!   → appsink callback: downmix + polyphase resampler (crate::resampler) → S16LE 16 kHz mono
//! ```
//!
//! **No thread of its own.** There is no `appsrc` (whose streaming task is a thread per
//! pipeline) and no queue: frames are pushed through a source pad that belongs to no
//! element, so `aacparse`, the decoder, the converter and the resampler all run *in the
//! caller's thread, inside [`DecodePipeline::push_frame`]*, and `on_event` is called there
//! before `push_frame` returns. The caller (the ingest actor) is already on one of the
//! service's per-core session threads, so a thousand sessions cost no thread each and a
//! frame crosses no thread between the RTMP reader and the PCM chunker but the one hop into
//! the ingest actor's mailbox. `appsink async=false` lets the pipeline reach Playing without
//! a preroll, which would otherwise block the first push until a state change that only
//! another thread could make. No glib main loop runs in the service, so the bus is read by a
//! *sync handler*, which GStreamer calls on the thread that posts the message: here, the
//! caller's.
//!
//! **Resampling** (44.1 or 48 kHz → 16 kHz) was the largest decode cost under load, and
//! `audioresample`'s cheaper qualities, though their envelope matches, changed the offline
//! provider's words on the e2e_whisper sentences (WER 0.28 → 0.40–0.44; whisper-tiny is
//! sensitive to small differences). The service therefore resamples in Rust with a fixed
//! polyphase filter ([`crate::resampler`]): closer to a reference decode than
//! `audioresample` at its best quality (waveform correlation 1.000 against 0.994 at the
//! default), the same words, one filter table shared by every session of a rate, and two
//! elements fewer per buffer. The [`Resampling`] variants stay so that
//! `benches/decode_cost.rs` and `tests/resample_fidelity.rs` can compare them; see
//! docs/PERFORMANCE.md#decoding.

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
use crate::resampler::Resampler;

/// Consecutive undecodable frames tolerated before `avdec_aac` raises an error.
/// One corrupt frame costs ~23 ms of audio and is skipped; 50 in a row (~1.2 s)
/// means the stream is garbage and the caller should know. (GStreamer's default,
/// -1, would ignore errors forever.)
const MAX_CONSECUTIVE_DECODE_ERRORS: i32 = 50;

/// How the resampler runs. [`Default`] (`Polyphase`) is what the service uses; the others
/// exist so the benchmark and the fidelity test can compare against them (module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Resampling {
    /// `audioconvert` to F32 interleaved, then downmix and a fixed polyphase filter in Rust
    /// ([`crate::resampler`]), in the appsink callback.
    #[default]
    Polyphase,
    /// `audioconvert` to S16 mono, then `audioresample` in its integer path.
    S16 { quality: u32 },
    /// Downmix to F32 mono, resample in the float path, convert to S16 (no dither) last.
    MonoFloat { quality: u32 },
}

/// How the pipeline is built; [`Default`] is the service's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DecodeOptions {
    pub resampling: Resampling,
}

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

/// State shared with the element callbacks (appsink callbacks, bus sync handler).
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

/// A decode pipeline for one RTMP stream, run by whoever calls [`push_frame`](Self::push_frame)
/// and [`finish`](Self::finish) (it has no thread). Dropping it sets the elements to Null
/// and releases their memory; do not drop it from inside `on_event`.
pub struct DecodePipeline {
    pipeline: gst::Pipeline,
    /// The pad frames enter by: it belongs to no element, so pushing on it runs the whole
    /// chain in the pushing thread.
    src: gst::Pad,
    shared: Arc<Shared>,
    clock: Mutex<FrameClock>,
    finish_requested: AtomicBool,
}

impl std::fmt::Debug for DecodePipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DecodePipeline")
            .field("pipeline", &self.pipeline.name())
            .field("finish_requested", &self.finish_requested)
            .finish()
    }
}

impl DecodePipeline {
    /// [`start_with`](Self::start_with) the service's [`DecodeOptions`].
    pub fn start(
        config: &AudioSpecificConfig,
        on_event: impl Fn(DecoderEvent) + Send + Sync + 'static,
    ) -> Result<Self, DecodeError> {
        Self::start_with(config, DecodeOptions::default(), on_event)
    }

    /// Builds the elements for the stream described by `config` (rate and channels come
    /// from the `AudioSpecificConfig`, never from `onMetaData`) and sets them to Playing.
    ///
    /// `on_event` is called on the caller's thread, from inside `push_frame` and `finish`:
    /// `Pcm` events, then exactly one terminal event, `Finished` (before `finish` returns)
    /// or `Error` on failure. It must not call back into this pipeline.
    pub fn start_with(
        config: &AudioSpecificConfig,
        options: DecodeOptions,
        on_event: impl Fn(DecoderEvent) + Send + Sync + 'static,
    ) -> Result<Self, DecodeError> {
        gst_init::init()?;

        let shared = Arc::new(Shared {
            on_event: Box::new(on_event),
            terminated: AtomicBool::new(false),
        });

        let input_caps = aac_input_caps(config);
        let output_caps = gst::Caps::builder("audio/x-raw")
            .field("format", "S16LE")
            .field("rate", PCM_SAMPLE_RATE as i32)
            .field("channels", 1i32)
            .field("layout", "interleaved")
            .build();

        let aacparse = make_element("aacparse")?;
        let decoder = make_element("avdec_aac")?;
        decoder.set_property("max-errors", MAX_CONSECUTIVE_DECODE_ERRORS);
        let mut conversion = vec![make_element("audioconvert")?];
        let mut output_caps = output_caps;
        match options.resampling {
            Resampling::Polyphase => {
                // Rate and channels as decoded; the callback downmixes and resamples.
                output_caps = gst::Caps::builder("audio/x-raw")
                    .field("format", "F32LE")
                    .field("layout", "interleaved")
                    .build();
            }
            Resampling::S16 { quality } => {
                let resample = make_element("audioresample")?;
                resample.set_property("quality", quality.min(10) as i32);
                conversion.push(resample);
            }
            Resampling::MonoFloat { quality } => {
                conversion.push(make_capsfilter(
                    &gst::Caps::builder("audio/x-raw")
                        .field("format", "F32LE")
                        .field("channels", 1i32)
                        .field("layout", "interleaved")
                        .build(),
                )?);
                let resample = make_element("audioresample")?;
                resample.set_property("quality", quality.min(10) as i32);
                conversion.push(resample);
                conversion.push(make_capsfilter(
                    &gst::Caps::builder("audio/x-raw")
                        .field("rate", PCM_SAMPLE_RATE as i32)
                        .build(),
                )?);
                let to_s16 = make_element("audioconvert")?;
                to_s16.set_property_from_str("dithering", "none");
                conversion.push(to_s16);
            }
        }
        let output = make_capsfilter(&output_caps)?;
        let appsink = gst_app::AppSink::builder()
            // Deliver as fast as decoded: no clock, no preroll (a preroll would block
            // the first push), no retained last sample.
            .sync(false)
            .enable_last_sample(false)
            .build();
        appsink.set_property("async", false);

        let pipeline = gst::Pipeline::new();
        let mut elements = vec![&aacparse, &decoder];
        elements.extend(conversion.iter());
        elements.extend([&output, appsink.upcast_ref()]);
        pipeline
            .add_many(elements.iter().copied())
            .map_err(|err| build_error("add", err))?;
        gst::Element::link_many(elements.iter().copied())
            .map_err(|err| build_error("link", err))?;

        // Used only with `Resampling::Polyphase`: built from the first buffer's caps (the
        // decoder's real output; HE-AAC doubles the configured rate).
        let polyphase = (options.resampling == Resampling::Polyphase)
            .then(|| Arc::new(Mutex::new(Polyphase::default())));
        appsink.set_callbacks(
            gst_app::AppSinkCallbacks::builder()
                .new_sample({
                    let shared = Arc::clone(&shared);
                    let polyphase = polyphase.clone();
                    move |sink| {
                        let sample = sink.pull_sample().map_err(|_| gst::FlowError::Flushing)?;
                        if let Some(polyphase) = &polyphase {
                            let pcm = polyphase
                                .lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .take(&sample)?;
                            if !pcm.is_empty() {
                                (shared.on_event)(DecoderEvent::Pcm(Bytes::from(pcm)));
                            }
                            return Ok(gst::FlowSuccess::Ok);
                        }
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
                    move |_| {
                        if let Some(polyphase) = &polyphase {
                            let rest = polyphase.lock().unwrap_or_else(|e| e.into_inner()).finish();
                            if !rest.is_empty() && !shared.terminated.load(Ordering::SeqCst) {
                                (shared.on_event)(DecoderEvent::Pcm(Bytes::from(rest)));
                            }
                        }
                        shared.terminate(DecoderEvent::Finished)
                    }
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

        let src = gst::Pad::builder(gst::PadDirection::Src)
            .name("frames")
            .build();
        let parser_sink = aacparse.static_pad("sink").ok_or(DecodeError::Build {
            stage: "link",
            message: "aacparse has no sink pad".into(),
        })?;
        src.link(&parser_sink)
            .map_err(|err| build_error("link", format!("{err:?}")))?;

        let frame_duration = gst::ClockTime::from_nseconds(config.frame_duration_ns());
        let this = Self {
            pipeline,
            src,
            shared,
            clock: Mutex::new(FrameClock::new(frame_duration)),
            finish_requested: AtomicBool::new(false),
        };
        // On failure `this` is dropped, which sets the pipeline back to Null.
        match this.pipeline.set_state(gst::State::Playing) {
            Ok(gst::StateChangeSuccess::Success | gst::StateChangeSuccess::NoPreroll) => {}
            // Nothing here is asynchronous (no source, appsink async=false): waiting for
            // a state change would wait for a thread that does not exist.
            Ok(gst::StateChangeSuccess::Async) => {
                return Err(DecodeError::Start(
                    "the pipeline's state change would be asynchronous".into(),
                ))
            }
            Err(err) => return Err(DecodeError::Start(err.to_string())),
        }
        this.src
            .set_active(true)
            .map_err(|err| DecodeError::Start(err.to_string()))?;
        // The sticky events every stream starts with: stream start, caps, a time segment.
        let stream_id = format!("{}/frames", this.pipeline.name());
        let segment = gst::FormattedSegment::<gst::ClockTime>::new();
        let started = this
            .src
            .push_event(gst::event::StreamStart::new(&stream_id))
            && this.src.push_event(gst::event::Caps::new(&input_caps))
            && this.src.push_event(gst::event::Segment::new(&segment));
        if !started {
            return Err(DecodeError::Start(
                "the decoder refused the stream's caps".into(),
            ));
        }
        Ok(this)
    }

    /// Decodes one raw AAC frame with its RTMP timestamp (ms), in the caller's thread: the
    /// PCM it completes has gone to `on_event` when this returns (the resampler may keep
    /// the last few samples until the next frame). Says whether the timestamp followed the
    /// previous one or was a discontinuity (see `frame_clock`).
    pub fn push_frame(&self, frame: Bytes, timestamp_ms: u32) -> Result<Timing, DecodeError> {
        if self.finish_requested.load(Ordering::SeqCst)
            || self.shared.terminated.load(Ordering::SeqCst)
        {
            return Err(DecodeError::Stopped);
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
        self.src
            .push(buffer)
            .map(|_| tick.timing)
            .map_err(|flow| match flow {
                gst::FlowError::Flushing | gst::FlowError::Eos => DecodeError::Stopped,
                other => DecodeError::Push(format!("{other:?}")),
            })
    }

    /// Signals end of stream and drains the elements in the caller's thread: the last PCM
    /// and then `Finished` have gone to `on_event` when this returns (or `Error`, if the
    /// pipeline had failed). Later calls and later pushes are ignored/refused.
    pub fn finish(&self) {
        if self.finish_requested.swap(true, Ordering::SeqCst) {
            return;
        }
        if !self.src.push_event(gst::event::Eos::new()) {
            // Only happens when the pipeline already failed: it said so with `Error`.
            tracing::debug!("end of stream refused by the decode pipeline");
        }
        if !self.shared.terminated.load(Ordering::SeqCst) {
            // An EOS that did not reach the sink (an element in error) still ends the
            // stream exactly once.
            self.shared.terminate(DecoderEvent::Error(
                "end of stream did not reach the end of the decode pipeline".into(),
            ));
        }
    }
}

impl Drop for DecodePipeline {
    fn drop(&mut self) {
        if let Err(err) = self.src.set_active(false) {
            tracing::debug!(%err, "decode pipeline source pad did not deactivate");
        }
        if let Err(err) = self.pipeline.set_state(gst::State::Null) {
            tracing::warn!(%err, "decode pipeline did not stop cleanly");
        }
        if let Some(bus) = self.pipeline.bus() {
            bus.unset_sync_handler();
        }
    }
}

/// The Rust resampler of `Resampling::Polyphase`, and the format it was built for.
#[derive(Default)]
struct Polyphase {
    current: Option<((i32, i32), Resampler)>,
    scratch: Vec<f32>,
}

impl Polyphase {
    /// Downmixes and resamples one decoded F32 buffer; returns the S16LE it completes.
    fn take(&mut self, sample: &gst::Sample) -> Result<Vec<u8>, gst::FlowError> {
        let format = sample
            .caps()
            .and_then(|caps| caps.structure(0))
            .and_then(|s| Some((s.get::<i32>("rate").ok()?, s.get::<i32>("channels").ok()?)))
            .ok_or(gst::FlowError::NotNegotiated)?;
        let mut out = Vec::new();
        if self.current.as_ref().map(|(f, _)| *f) != Some(format) {
            // A new format (never within one AAC configuration, but cheap to honour).
            if let Some((_, mut old)) = self.current.take() {
                old.finish(&mut out);
            }
            let (rate, channels) = format;
            let resampler = Resampler::new(
                u32::try_from(rate).unwrap_or(0),
                u32::try_from(channels).unwrap_or(0),
                PCM_SAMPLE_RATE,
            )
            .map_err(|err| {
                tracing::warn!(%err, "decoded audio cannot be resampled");
                gst::FlowError::NotNegotiated
            })?;
            self.current = Some((format, resampler));
        }
        let Some(buffer) = sample.buffer() else {
            return Ok(out);
        };
        let mapped = buffer.map_readable().map_err(|_| gst::FlowError::Error)?;
        self.scratch.clear();
        self.scratch.extend(
            mapped
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
        );
        if let Some((_, resampler)) = self.current.as_mut() {
            resampler.push(&self.scratch, &mut out);
        }
        Ok(out)
    }

    /// End of stream: the samples the filter still holds.
    fn finish(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        if let Some((_, resampler)) = self.current.as_mut() {
            resampler.finish(&mut out);
        }
        out
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

/// The caps of raw AAC frames (one access unit per buffer, as RTMP carries them) described
/// by `config`: what the decoder's input is negotiated with (also used by the benchmarks'
/// reference pipelines).
pub fn aac_input_caps(config: &AudioSpecificConfig) -> gst::Caps {
    gst::Caps::builder("audio/mpeg")
        .field("mpegversion", 4i32)
        .field("stream-format", "raw")
        .field("framed", true)
        .field("codec_data", gst::Buffer::from_slice(config.raw.clone()))
        .field(
            "rate",
            i32::try_from(config.sample_rate).unwrap_or(i32::MAX),
        )
        .field("channels", i32::from(config.channels))
        .build()
}

fn make_capsfilter(caps: &gst::Caps) -> Result<gst::Element, DecodeError> {
    gst::ElementFactory::make("capsfilter")
        .property("caps", caps)
        .build()
        .map_err(|err| build_error("capsfilter", err))
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
