//! Bad input and misuse: corrupted frames, garbage streams, a stuck consumer,
//! finishing without data, pushing after the end. Never a panic, always exactly
//! one terminal event.

mod support;

use std::sync::{mpsc, Arc, Condvar, Mutex};
use std::time::Duration;

use bytes::Bytes;
use pipelines::decode_pipeline::MAX_QUEUED_BYTES;
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
            Ok(_) | Err(DecodeError::QueueFull { .. }) => {}
            Err(DecodeError::Stopped) => break,
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

/// A consumer that stops draining must not make `push_frame` block or the queue grow:
/// the streaming thread is held inside `on_event` (simulating a stuck downstream).
#[test]
fn a_stuck_consumer_fills_the_bounded_queue_and_push_fails_fast() {
    if !tools_available() {
        return;
    }
    let stream = tone_stream("stuck");
    let gate = Arc::new((Mutex::new(false), Condvar::new()));
    let (tx, rx) = mpsc::channel();
    let pipeline = DecodePipeline::start(&stream.config, {
        let gate = Arc::clone(&gate);
        move |event| {
            let (open, cvar) = &*gate;
            let mut open = open.lock().unwrap_or_else(|e| e.into_inner());
            while !*open {
                open = cvar.wait(open).unwrap_or_else(|e| e.into_inner());
            }
            let _ = tx.send(event);
        }
    })
    .expect("start");

    let mut pushed = 0usize;
    let full = loop {
        let (frame, ts) = &stream.frames[pushed % stream.frames.len()];
        let before = std::time::Instant::now();
        let result = pipeline.push_frame(
            frame.clone(),
            *ts + (pushed / stream.frames.len()) as u32 * 3_000,
        );
        assert!(
            before.elapsed() < Duration::from_millis(50),
            "push_frame blocked"
        );
        match result {
            Ok(_) => pushed += 1,
            Err(err) => break err,
        }
        assert!(pushed < 10_000, "queue never filled");
    };
    println!("stuck: QueueFull after {pushed} frames: {full}");
    assert!(matches!(full, DecodeError::QueueFull { .. }), "{full}");
    assert!(pipeline.queued_bytes() <= MAX_QUEUED_BYTES);

    // Release the consumer: everything queued drains and the stream finishes.
    {
        let (open, cvar) = &*gate;
        *open.lock().unwrap_or_else(|e| e.into_inner()) = true;
        cvar.notify_all();
    }
    pipeline.finish();
    let terminal = std::iter::from_fn(|| rx.recv_timeout(Duration::from_secs(10)).ok())
        .find(|e| !matches!(e, DecoderEvent::Pcm(_)));
    assert_eq!(terminal, Some(DecoderEvent::Finished));
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
        loop {
            match pipeline.push_frame(frame.clone(), shifted) {
                Ok(Timing::Continuous) => break,
                Ok(Timing::Discontinuity { .. }) => {
                    discontinuities.push(i);
                    break;
                }
                Err(DecodeError::QueueFull { .. }) => std::thread::sleep(Duration::from_millis(1)),
                Err(other) => panic!("frame {i}: {other}"),
            }
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
