//! Creating and dropping pipelines mid-stream must not leak threads or file
//! descriptors. Its own test binary: it counts the whole process' threads.

mod support;

use std::time::{Duration, Instant};

use pipelines::DecodePipeline;
use support::decode::audio_stream;
use support::tools::{aac_flv, tools_available};

fn count_entries(dir: &str) -> usize {
    std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
}

fn threads() -> usize {
    count_entries("/proc/self/task")
}

fn fds() -> usize {
    count_entries("/proc/self/fd")
}

#[test]
fn dropping_20_pipelines_mid_stream_leaks_no_threads_or_fds() {
    if !tools_available() {
        return;
    }
    let stream = audio_stream(&aac_flv(
        "leaks",
        "sine=frequency=440:sample_rate=44100:duration=2",
        44_100,
        2,
        &[],
    ));
    let start_and_feed = || {
        let pipeline = DecodePipeline::start(&stream.config, |_| {}).expect("start");
        for (frame, ts) in stream.frames.iter().take(40) {
            pipeline.push_frame(frame.clone(), *ts).expect("push");
        }
        pipeline
    };

    // Warm-up: GStreamer's registry, plugin loading and glib's shared thread pool
    // create process-wide state once; measure after that.
    drop(start_and_feed());
    std::thread::sleep(Duration::from_millis(200));
    let (threads_before, fds_before) = (threads(), fds());

    let pipelines: Vec<_> = (0..20).map(|_| start_and_feed()).collect();
    let threads_during = threads();
    drop(pipelines);

    // Allow a moment for anything GStreamer might have started to go.
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut threads_after = threads();
    while threads_after > threads_before && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        threads_after = threads();
    }
    let fds_after = fds();
    println!(
        "threads: before {threads_before}, with 20 pipelines {threads_during}, after drop {threads_after}; \
         fds: before {fds_before}, after {fds_after}"
    );
    // Decoding runs in the pushing thread (decode_pipeline's module doc): 20 pipelines
    // mid-stream add no thread at all.
    assert_eq!(
        threads_during, threads_before,
        "decode pipelines must not run threads of their own"
    );
    assert!(
        threads_after <= threads_before,
        "leaked {} thread(s)",
        threads_after - threads_before
    );
    assert!(
        fds_after <= fds_before,
        "leaked {} fd(s)",
        fds_after - fds_before
    );
}
