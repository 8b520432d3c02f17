//! The GStreamer decoder's own delay (issue #5 item 5), measured on real AAC paced in real
//! time, for the pipeline the service runs and for the untuned pipeline it replaced in design:
//! the same elements with queues between them, a non-live `appsrc` and a clock-synced `appsink`
//! (GStreamer's defaults).
//!
//!     cargo bench -p pipelines --bench decoder_latency
//!
//! Per frame: time from `push` of an AAC frame to the moment the PCM delivered covers that
//! frame's audio (allowing the 64 samples `audioresample` keeps for its filter). First PCM:
//! from the first push to the first PCM. Figures go to docs/PERFORMANCE.md.

#[path = "support/app_pipeline.rs"]
mod app_pipeline;
#[path = "../tests/support/mod.rs"]
mod support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use pipelines::{AudioSpecificConfig, DecodePipeline, DecoderEvent};

/// Seconds of audio per measured run.
const SECONDS: u32 = 10;
/// Samples `audioresample` may hold back for its filter: a frame counts as out without them.
const RESAMPLER_HOLDBACK_BYTES: usize = 64 * 2;

/// When PCM arrived and how many bytes had arrived by then.
type Arrivals = Arc<Mutex<Vec<(Instant, usize)>>>;

trait Decoder {
    fn push(&self, frame: Bytes, timestamp_ms: u32);
}

impl Decoder for DecodePipeline {
    fn push(&self, frame: Bytes, timestamp_ms: u32) {
        self.push_frame(frame, timestamp_ms).expect("push");
    }
}

fn record(arrivals: &Arrivals, bytes: usize) {
    let mut arrivals = arrivals.lock().unwrap();
    let total = arrivals.last().map_or(0, |a| a.1) + bytes;
    arrivals.push((Instant::now(), total));
}

fn tuned(config: &AudioSpecificConfig, arrivals: Arrivals) -> Box<dyn Decoder> {
    let pipeline = DecodePipeline::start(config, move |event| {
        if let DecoderEvent::Pcm(pcm) = event {
            record(&arrivals, pcm.len());
        }
    })
    .expect("start the service's pipeline");
    Box::new(pipeline)
}

/// The same decode with GStreamer's defaults and a queue between each stage.
struct Untuned {
    pipeline: gst::Pipeline,
    src: gst_app::AppSrc,
    frame_duration: gst::ClockTime,
}

impl Decoder for Untuned {
    fn push(&self, frame: Bytes, timestamp_ms: u32) {
        let mut buffer = gst::Buffer::from_slice(frame);
        let b = buffer.make_mut();
        b.set_pts(gst::ClockTime::from_mseconds(u64::from(timestamp_ms)));
        b.set_duration(self.frame_duration);
        self.src.push_buffer(buffer).expect("push");
    }
}

impl Drop for Untuned {
    fn drop(&mut self) {
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}

fn untuned(config: &AudioSpecificConfig, arrivals: Arrivals) -> Box<dyn Decoder> {
    let (pipeline, src, sink) = app_pipeline::launch(
        "appsrc name=src format=time ! queue ! aacparse ! avdec_aac ! queue ! audioconvert \
         ! audioresample ! queue ! audio/x-raw,format=S16LE,rate=16000,channels=1 \
         ! appsink name=sink",
        config,
    );
    sink.set_callbacks(
        gst_app::AppSinkCallbacks::builder()
            .new_sample(move |sink| {
                let sample = sink.pull_sample().map_err(|_| gst::FlowError::Flushing)?;
                if let Some(buffer) = sample.buffer() {
                    record(&arrivals, buffer.size());
                }
                Ok(gst::FlowSuccess::Ok)
            })
            .build(),
    );
    pipeline.set_state(gst::State::Playing).expect("play");
    Box::new(Untuned {
        pipeline,
        src,
        frame_duration: gst::ClockTime::from_nseconds(config.frame_duration_ns()),
    })
}

struct Figures {
    first_pcm: Duration,
    p50: Duration,
    p99: Duration,
    max: Duration,
    frames: usize,
}

fn measure(
    stream: &support::decode::AudioStream,
    make: fn(&AudioSpecificConfig, Arrivals) -> Box<dyn Decoder>,
) -> Figures {
    let arrivals: Arrivals = Arc::default();
    let decoder = make(&stream.config, arrivals.clone());
    let frame_ms = 1024.0 * 1000.0 / f64::from(stream.config.sample_rate);
    let frames: Vec<_> = stream
        .frames
        .iter()
        .take((f64::from(SECONDS) * 1000.0 / frame_ms) as usize)
        .cloned()
        .collect();
    let start = Instant::now();
    let mut pushed_at = Vec::with_capacity(frames.len());
    for (frame, timestamp_ms) in frames {
        // Paced like a live publisher: each frame when its timestamp comes due.
        let due = start + Duration::from_millis(u64::from(timestamp_ms));
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        pushed_at.push(Instant::now());
        decoder.push(frame, timestamp_ms);
    }
    // Let the last frames come out before reading the arrivals.
    std::thread::sleep(Duration::from_millis(500));
    drop(decoder);
    let arrivals = arrivals.lock().unwrap().clone();

    let pcm_per_frame = 1024.0 * 16_000.0 / f64::from(stream.config.sample_rate) * 2.0;
    let mut latencies = Vec::new();
    for (k, pushed) in pushed_at.iter().enumerate() {
        let needed =
            (((k + 1) as f64 * pcm_per_frame) as usize).saturating_sub(RESAMPLER_HOLDBACK_BYTES);
        if let Some((at, _)) = arrivals.iter().find(|(_, total)| *total >= needed) {
            latencies.push(at.saturating_duration_since(*pushed));
        }
    }
    latencies.sort();
    let pct = |p: usize| latencies[(latencies.len() * p / 100).min(latencies.len() - 1)];
    Figures {
        first_pcm: arrivals[0].0.saturating_duration_since(pushed_at[0]),
        p50: pct(50),
        p99: pct(99),
        max: *latencies.last().expect("latencies"),
        frames: latencies.len(),
    }
}

fn main() {
    // `cargo test --benches` runs this with `--bench` absent: nothing to measure then.
    if !std::env::args().any(|a| a == "--bench") || !support::tools::tools_available() {
        return;
    }
    for (rate, channels) in [(48_000u32, 1u32), (44_100, 2)] {
        let flv = support::tools::aac_flv(
            &format!("latency-{rate}-{channels}"),
            &format!("sine=frequency=440:duration={}", SECONDS + 1),
            rate,
            channels,
            &[],
        );
        let stream = support::decode::audio_stream(&flv);
        for (name, make) in [
            (
                "service pipeline (no thread, no queues, unsynced appsink)",
                tuned as fn(&_, _) -> _,
            ),
            (
                "untuned (GStreamer defaults, queues, synced appsink)",
                untuned,
            ),
        ] {
            let f = measure(&stream, make);
            println!(
                "{rate} Hz x{channels} | {name}: first PCM {:.2} ms, per frame p50 {:.2} ms, \
                 p99 {:.2} ms, max {:.2} ms ({} frames)",
                f.first_pcm.as_secs_f64() * 1e3,
                f.p50.as_secs_f64() * 1e3,
                f.p99.as_secs_f64() * 1e3,
                f.max.as_secs_f64() * 1e3,
                f.frames
            );
        }
    }
}
