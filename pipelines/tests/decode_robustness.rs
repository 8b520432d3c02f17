//! Bad input and misuse: corrupted frames, garbage streams, a stuck consumer,
//! finishing without data, pushing after the end. Never a panic, always exactly
//! one terminal event.

mod support;

use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use pipelines::{AudioSpecificConfig, DecodeError, DecodePipeline, DecoderEvent, Timing};
use support::decode::{audio_stream, decode};
use support::tools::{aac_flv, tools_available};

fn tone_stream(name: &str) -> support::decode::AudioStream {
    audio_stream(&aac_flv(
        name,
        "sine=frequency=440:sample_rate=44100:duration=3",
        44_100,
        2,
        &[],
    ))
}

/// Deterministic pseudo-random bytes (LCG) so failures reproduce.
fn noise(seed: &mut u32, len: usize) -> Vec<u8> {
    (0..len)
        .map(|_| {
            *seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            (*seed >> 16) as u8
        })
        .collect()
}

#[test]
fn sparse_corrupted_and_truncated_frames_are_tolerated() {
    if !tools_available() {
        return;
    }
    let stream = tone_stream("corrupt");
    let clean = decode(&stream.config, &stream.frames);
    let mut seed = 7;
    let damaged: Vec<_> = stream
        .frames
        .iter()
        .enumerate()
        .map(|(i, (frame, ts))| {
            let frame = match i % 10 {
                // Every 10th frame: overwrite the middle with noise.
                3 => {
                    let mut f = frame.to_vec();
                    let mid = f.len() / 2;
                    let n = (f.len() / 4).max(1);
                    f[mid.saturating_sub(n)..mid].copy_from_slice(&noise(&mut seed, n.min(mid)));
                    Bytes::from(f)
                }
                // Every 10th frame (another one): truncated to a third.
                7 => frame.slice(..frame.len() / 3),
                _ => frame.clone(),
            };
            (frame, *ts)
        })
        .collect();
    let decoded = decode(&stream.config, &damaged);
    println!(
        "corrupt: {:?}, clean {} bytes, damaged {} bytes",
        decoded.terminal,
        clean.pcm.len(),
        decoded.pcm.len()
    );
    // Isolated bad frames are skipped (or concealed), the stream goes on.
    assert_eq!(decoded.terminal, DecoderEvent::Finished);
    assert!(decoded.pcm.len() >= clean.pcm.len() * 3 / 4);
}

#[test]
fn a_garbage_stream_reports_one_error_and_refuses_more_frames() {
    if !tools_available() {
        return;
    }
    let config = AudioSpecificConfig::parse(Bytes::from_static(&[0x12, 0x10])).expect("asc");
    let (tx, rx) = mpsc::channel();
    let pipeline = DecodePipeline::start(&config, move |event| {
        let _ = tx.send(event);
    })
    .expect("start");
    let mut seed = 99;
    // Well over the 50 consecutive decode errors avdec_aac is allowed.
    for i in 0..400u32 {
        match pipeline.push_frame(Bytes::from(noise(&mut seed, 300)), i * 23) {
            Ok(_) => {}
            // The frame that made the decoder give up fails in this very call (decoding
            // runs in it); later ones are refused.
            Err(DecodeError::Push(_) | DecodeError::Stopped) => break,
            Err(other) => panic!("unexpected push error {other}"),
        }
    }
    let terminal = std::iter::from_fn(|| rx.recv_timeout(Duration::from_secs(5)).ok())
        .find(|e| !matches!(e, DecoderEvent::Pcm(_)));
    println!("garbage: {terminal:?}");
    let Some(DecoderEvent::Error(message)) = terminal else {
        panic!("expected an Error event, got {terminal:?}");
    };
    assert!(message.contains("avdec_aac"), "{message}");
    // After the error: frames are refused, finish() does not add a Finished.
    assert_eq!(
        pipeline.push_frame(Bytes::from_static(&[0x21, 0x10]), 99_999),
        Err(DecodeError::Stopped)
    );
    pipeline.finish();
    drop(pipeline);
    assert!(rx.try_iter().all(|e| matches!(e, DecoderEvent::Pcm(_))));
}

#[test]
fn finish_without_frames_still_finishes() {
    if !tools_available() {
        return;
    }
    let config = AudioSpecificConfig::parse(Bytes::from_static(&[0x11, 0x88])).expect("asc");
    let decoded = decode(&config, &[]);
    assert_eq!(decoded.terminal, DecoderEvent::Finished);
    assert!(decoded.pcm.is_empty());
}

#[test]
fn push_after_finish_is_refused_and_finish_is_idempotent() {
    if !tools_available() {
        return;
    }
    let stream = tone_stream("after-finish");
    let (tx, rx) = mpsc::channel();
    let pipeline = DecodePipeline::start(&stream.config, move |event| {
        let _ = tx.send(event);
    })
    .expect("start");
    for (frame, ts) in stream.frames.iter().take(20) {
        pipeline.push_frame(frame.clone(), *ts).expect("push");
    }
    pipeline.finish();
    pipeline.finish();
    let (frame, ts) = &stream.frames[20];
    assert_eq!(
        pipeline.push_frame(frame.clone(), *ts),
        Err(DecodeError::Stopped)
    );
    let finished = std::iter::from_fn(|| rx.recv_timeout(Duration::from_secs(5)).ok())
        .filter(|e| !matches!(e, DecoderEvent::Pcm(_)))
        .take(1)
        .collect::<Vec<_>>();
    assert_eq!(finished, vec![DecoderEvent::Finished]);
    drop(pipeline);
    assert!(rx.try_iter().all(|e| matches!(e, DecoderEvent::Pcm(_))));
}

/// The pipeline has no thread: every element runs in the thread that pushes, so the
/// callback sees that thread, and a frame's PCM is out before `push_frame` returns (all but
/// the few samples the resampler keeps for its filter until the next frame).
#[test]
fn decoding_runs_in_the_pushing_thread_and_is_done_when_push_returns() {
    if !tools_available() {
        return;
    }
    let stream = tone_stream("caller-thread");
    let pusher = std::thread::current().id();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let pcm_bytes = Arc::new(Mutex::new(0usize));
    let pipeline = DecodePipeline::start(&stream.config, {
        let seen = Arc::clone(&seen);
        let pcm_bytes = Arc::clone(&pcm_bytes);
        move |event| {
            seen.lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(std::thread::current().id());
            if let DecoderEvent::Pcm(pcm) = event {
                *pcm_bytes.lock().unwrap_or_else(|e| e.into_inner()) += pcm.len();
            }
        }
    })
    .expect("start");
    // 16 kHz mono S16 per 1024-sample frame at the stream's rate.
    let bytes_per_frame = 1024.0 * 16_000.0 / f64::from(stream.config.sample_rate) * 2.0;
    let mut behind_max = 0.0f64;
    for (i, (frame, ts)) in stream.frames.iter().enumerate() {
        pipeline.push_frame(frame.clone(), *ts).expect("push");
        let out = *pcm_bytes.lock().unwrap_or_else(|e| e.into_inner()) as f64;
        // How much of the pushed audio is still inside the pipeline, in bytes of output.
        behind_max = behind_max.max((i + 1) as f64 * bytes_per_frame - out);
    }
    pipeline.finish();
    let seen = seen.lock().unwrap_or_else(|e| e.into_inner()).clone();
    println!(
        "caller thread: {} events, at most {behind_max:.0} output bytes held after a push",
        seen.len()
    );
    assert!(
        seen.len() > stream.frames.len() / 2,
        "PCM events: {}",
        seen.len()
    );
    assert!(
        seen.iter().all(|id| *id == pusher),
        "an event came from another thread"
    );
    // A frame is ~743 bytes of output: nothing but filter history may stay behind.
    assert!(
        behind_max < bytes_per_frame / 2.0,
        "{behind_max:.0} bytes of output still inside the pipeline after a push"
    );
}

/// RTMP timestamps that jump by 2^31 ms (and back) mid-stream, the step that used to wrap:
/// each jump is reported as a discontinuity and costs no audio; the PCM is what the same
/// frames give with clean timestamps.
#[test]
fn timestamp_jumps_of_2_pow_31_ms_are_reported_and_cost_no_audio() {
    if !tools_available() {
        return;
    }
    let stream = tone_stream("timestamp-jumps");
    let clean = decode(&stream.config, &stream.frames);
    assert_eq!(clean.terminal, DecoderEvent::Finished);

    let (tx, rx) = mpsc::channel();
    let pipeline = DecodePipeline::start(&stream.config, move |event| {
        let _ = tx.send(event);
    })
    .expect("start");
    let third = stream.frames.len() / 3;
    let mut discontinuities = Vec::new();
    for (i, (frame, ts)) in stream.frames.iter().enumerate() {
        // The middle third of the stream 2^31 ms later, then back.
        let shifted = if (third..2 * third).contains(&i) {
            ts.wrapping_add(1 << 31)
        } else {
            *ts
        };
        match pipeline.push_frame(frame.clone(), shifted) {
            Ok(Timing::Continuous) => {}
            Ok(Timing::Discontinuity { .. }) => discontinuities.push(i),
            Err(other) => panic!("frame {i}: {other}"),
        }
    }
    pipeline.finish();
    let mut pcm = Vec::new();
    let terminal = loop {
        match rx
            .recv_timeout(Duration::from_secs(10))
            .expect("decoder event")
        {
            DecoderEvent::Pcm(bytes) => pcm.extend_from_slice(&bytes),
            other => break other,
        }
    };
    assert_eq!(terminal, DecoderEvent::Finished);
    assert_eq!(
        discontinuities,
        vec![third, 2 * third],
        "both jumps, and only them"
    );
    assert_eq!(pcm.len(), clean.pcm.len(), "a jump adds or drops no sample");
}
