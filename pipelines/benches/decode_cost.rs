//! What decoding costs, in CPU per second of audio (issue #16 items 1 and 2): the service's
//! pipeline (no thread of its own) with its resampling and with the cheaper ones measured,
//! against the pipeline it replaced (a live `appsrc` with its own streaming thread, the same
//! S16 resampling at GStreamer's default quality 4).
//!
//!     cargo bench -p pipelines --bench decode_cost
//!
//! Each variant decodes the same five minutes of AAC-LC 44.1 kHz stereo 128 kb/s as fast as it
//! can, three times; the figure is the process's CPU time (`/proc/self/stat`, user + system)
//! divided by the audio's duration, i.e. the share of one core a live session's decode costs.
//! Fidelity of the same settings: `cargo test -p pipelines --test resample_fidelity`.

#[path = "support/app_pipeline.rs"]
mod app_pipeline;
#[path = "../tests/support/mod.rs"]
mod support;

use std::sync::mpsc;
use std::time::Duration;

use bytes::Bytes;
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use pipelines::decode_pipeline::{DecodeOptions, Resampling};
use pipelines::{AudioSpecificConfig, DecodePipeline, DecoderEvent};

const SECONDS: u32 = 300;
const RUNS: usize = 3;

/// One variant's decode of the whole stream: PCM bytes out, peak threads seen.
type Run<'a> = dyn Fn() -> (usize, usize) + 'a;

/// User + system CPU of this process, in seconds.
fn process_cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
    // Fields after the parenthesised command name; utime and stime are the 14th and 15th.
    let after = &stat[stat.rfind(')').expect("comm") + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 =
        fields[11].parse::<f64>().expect("utime") + fields[12].parse::<f64>().expect("stime");
    ticks / 100.0
}

fn threads() -> usize {
    std::fs::read_dir("/proc/self/task").map_or(0, |d| d.count())
}

/// Decodes every frame with the service's pipeline; returns PCM bytes and threads seen.
fn service(
    config: &AudioSpecificConfig,
    frames: &[(Bytes, u32)],
    resampling: Resampling,
) -> (usize, usize) {
    let (tx, rx) = mpsc::channel();
    let pipeline = DecodePipeline::start_with(config, DecodeOptions { resampling }, move |event| {
        if let DecoderEvent::Pcm(pcm) = event {
            let _ = tx.send(pcm.len());
        }
    })
    .expect("start");
    let mut peak_threads = 0;
    for (i, (frame, ts)) in frames.iter().enumerate() {
        pipeline.push_frame(frame.clone(), *ts).expect("push");
        if i % 500 == 0 {
            peak_threads = peak_threads.max(threads());
        }
    }
    pipeline.finish();
    drop(pipeline);
    (rx.try_iter().sum(), peak_threads)
}

/// The pipeline the service ran before: `appsrc` (a streaming thread), S16 resampling at
/// the default quality.
fn before(config: &AudioSpecificConfig, frames: &[(Bytes, u32)]) -> (usize, usize) {
    let (pipeline, src, sink) = app_pipeline::launch(
        "appsrc name=src is-live=true format=time do-timestamp=false max-bytes=0 ! aacparse \
         ! avdec_aac ! audioconvert ! audioresample \
         ! audio/x-raw,format=S16LE,rate=16000,channels=1,layout=interleaved \
         ! appsink name=sink sync=false",
        config,
    );
    let (tx, rx) = mpsc::channel();
    let eos_tx = tx.clone();
    sink.set_callbacks(
        gst_app::AppSinkCallbacks::builder()
            .new_sample(move |sink| {
                let sample = sink.pull_sample().map_err(|_| gst::FlowError::Flushing)?;
                let _ = tx.send(Some(sample.buffer().map_or(0, |b| b.size())));
                Ok(gst::FlowSuccess::Ok)
            })
            .eos(move |_| {
                let _ = eos_tx.send(None);
            })
            .build(),
    );
    pipeline.set_state(gst::State::Playing).expect("play");
    let duration = gst::ClockTime::from_nseconds(config.frame_duration_ns());
    let mut peak_threads = 0;
    for (i, (frame, ts)) in frames.iter().enumerate() {
        let mut buffer = gst::Buffer::from_slice(frame.clone());
        let b = buffer.make_mut();
        b.set_pts(gst::ClockTime::from_mseconds(u64::from(*ts)));
        b.set_duration(duration);
        src.push_buffer(buffer).expect("push");
        if i % 500 == 0 {
            peak_threads = peak_threads.max(threads());
        }
    }
    src.end_of_stream().expect("eos");
    let mut bytes = 0;
    while let Ok(Some(n)) = rx.recv_timeout(Duration::from_secs(30)) {
        bytes += n;
    }
    let _ = pipeline.set_state(gst::State::Null);
    (bytes, peak_threads)
}

fn main() {
    // `cargo test --benches` runs this with `--bench` absent: nothing to measure then.
    if !std::env::args().any(|a| a == "--bench") || !support::tools::tools_available() {
        return;
    }
    let flv = support::tools::aac_flv(
        "decode-cost",
        &format!(
            "aevalsrc=exprs='0.35*sin(2*PI*(200+40*mod(t\\,10))*t)*gt(sin(2*PI*2.5*t)\\,0)+0.05*(random(0)-0.5)':s=44100:d={SECONDS}"
        ),
        44_100,
        2,
        &[],
    );
    let stream = support::decode::audio_stream(&flv);
    let audio_s = stream.frames.len() as f64 * 1024.0 / f64::from(stream.config.sample_rate);
    let base_threads = threads();
    println!(
        "{} frames = {audio_s:.1} s of AAC-LC {} Hz, {} channel(s); {RUNS} runs each; \
         process threads before: {base_threads}",
        stream.frames.len(),
        stream.config.sample_rate,
        stream.config.channels
    );
    println!("| variant | CPU per second of audio (min / median / max) | % of one core per live session | PCM bytes | threads while decoding |");
    println!("|---|---|---|---|---|");
    let mut variants: Vec<(String, Box<Run<'_>>)> = vec![(
        "before: appsrc thread, S16 resample, quality 4".into(),
        Box::new(|| before(&stream.config, &stream.frames)),
    )];
    for resampling in [
        Resampling::default(),
        Resampling::S16 { quality: 4 },
        Resampling::S16 { quality: 2 },
        Resampling::S16 { quality: 0 },
        Resampling::MonoFloat { quality: 4 },
        Resampling::MonoFloat { quality: 2 },
        Resampling::MonoFloat { quality: 0 },
    ] {
        let marker = if resampling == Resampling::default() {
            " (service)"
        } else {
            ""
        };
        let stream = &stream;
        variants.push((
            format!("no thread, {resampling:?}{marker}"),
            Box::new(move || service(&stream.config, &stream.frames, resampling)),
        ));
    }
    for (name, run) in &variants {
        let mut costs = Vec::new();
        let mut bytes = 0;
        let mut peak = 0;
        for _ in 0..RUNS {
            let before = process_cpu_seconds();
            let (b, t) = run();
            costs.push((process_cpu_seconds() - before) / audio_s);
            bytes = b;
            peak = t;
        }
        costs.sort_by(f64::total_cmp);
        println!(
            "| {name} | {:.0} / {:.0} / {:.0} µs | {:.3} % | {bytes} | {peak} |",
            costs[0] * 1e6,
            costs[RUNS / 2] * 1e6,
            costs[RUNS - 1] * 1e6,
            costs[RUNS / 2] * 100.0
        );
    }
}
