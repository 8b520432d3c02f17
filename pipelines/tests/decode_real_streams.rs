//! Decodes real FLV files (made by FFmpeg, and by GStreamer's flvmux as LiveKit does) through `DecodePipeline` and checks format,
//! duration and content of the PCM against the source.
//!
//! Thresholds: duration within 2 % of the source; a 440 Hz tone measures
//! 440 Hz ± 1 % by zero crossings; a tone-burst envelope (20 ms RMS windows)
//! correlates ≥ 0.95 with the source rendered directly by FFmpeg.
//! Output format: the duration check only holds for 32 bytes/ms (16 kHz, 2-byte
//! samples, 1 channel) and the frequency check only for a 16 kHz rate.

mod support;

use std::time::Duration;

use support::decode::{audio_stream, decode};
use support::signal::{best_envelope_match, rms, samples, zero_crossing_hz};
use support::tools::{aac_flv, gst_flvmux_flv, reference_pcm, tools_available};

use pipelines::{DecoderEvent, PCM_SAMPLE_RATE};

const MAX_DURATION_ERROR: f64 = 0.02;

fn assert_duration(name: &str, decoded_s: f64, source_s: f64) {
    let error = (decoded_s - source_s).abs() / source_s;
    println!(
        "{name}: decoded {decoded_s:.4} s for a {source_s:.3} s source ({:+.2} %)",
        (decoded_s - source_s) / source_s * 100.0
    );
    assert!(
        error <= MAX_DURATION_ERROR,
        "{name}: decoded {decoded_s:.4} s, source {source_s} s: off by {:.2} % (> 2 %)",
        error * 100.0
    );
}

/// A steady tone: checks duration, frequency and level; returns the first-PCM latency.
fn check_tone(name: &str, rate: u32, channels: u32, expected_asc: (u32, u8)) -> Duration {
    let source_s = 5.0;
    let lavfi = format!("sine=frequency=440:sample_rate={rate}:duration={source_s}");
    let flv = aac_flv(name, &lavfi, rate, channels, &[]);
    let stream = audio_stream(&flv);
    assert_eq!(
        (stream.config.sample_rate, stream.config.channels),
        expected_asc,
        "{name}: ASC from FFmpeg"
    );

    let decoded = decode(&stream.config, &stream.frames);
    assert_eq!(decoded.terminal, DecoderEvent::Finished, "{name}");
    assert!(
        decoded.push_errors.is_empty(),
        "{name}: {:?}",
        decoded.push_errors
    );
    assert_eq!(decoded.pcm.len() % 2, 0, "{name}: PCM not sample-aligned");
    assert_duration(name, decoded.duration_s(), source_s);

    let s = samples(&decoded.pcm);
    // Skip the edges (encoder priming, resampler ramp, last partial frame).
    let middle = &s[PCM_SAMPLE_RATE as usize / 5..s.len() - PCM_SAMPLE_RATE as usize / 5];
    let hz = zero_crossing_hz(middle, PCM_SAMPLE_RATE);
    println!(
        "{name}: dominant frequency {hz:.2} Hz, rms {:.0}",
        rms(middle)
    );
    assert!(
        (hz - 440.0).abs() <= 4.4,
        "{name}: measured {hz} Hz, expected 440 ± 1 %"
    );
    // lavfi sine has amplitude 1/8: RMS = 32768 / 8 / sqrt(2) ≈ 2896. FFmpeg's
    // mono → stereo upmix puts it in each channel at -3 dB, and audioconvert's
    // downmix averages the two, so stereo fixtures come out at 2896 / sqrt(2) ≈ 2048.
    // ±15 % allows for AAC at 128 kb/s.
    let expected_rms = if channels == 2 { 2048.0 } else { 2896.0 };
    let level = rms(middle);
    assert!(
        (level - expected_rms).abs() <= expected_rms * 0.15,
        "{name}: rms {level}, expected {expected_rms} ± 15 %"
    );

    let latency = decoded.first_pcm_latency.expect("some PCM");
    println!(
        "{name}: {} frames in, {} PCM events out, first PCM {:.2} ms after first push",
        stream.frames.len(),
        decoded.pcm_events,
        latency.as_secs_f64() * 1000.0
    );
    latency
}

#[test]
fn aac_44100_stereo_tone() {
    if !tools_available() {
        return;
    }
    let latency = check_tone("tone-44100-stereo", 44_100, 2, (44_100, 2));
    // Generous bound for a loaded 2-core CI box; typical is a few ms.
    assert!(
        latency < Duration::from_millis(200),
        "first PCM after {latency:?}"
    );
}

#[test]
fn aac_48000_mono_tone() {
    if !tools_available() {
        return;
    }
    let latency = check_tone("tone-48000-mono", 48_000, 1, (48_000, 1));
    assert!(
        latency < Duration::from_millis(200),
        "first PCM after {latency:?}"
    );
}

/// LiveKit room composites carry H.264 video too: the audio must decode the same,
/// and the envelope of a 0.5 s on / 0.5 s off burst must match the source.
#[test]
fn tone_bursts_with_h264_video_match_source() {
    if !tools_available() {
        return;
    }
    let source_s = 4.0;
    let lavfi = format!("aevalsrc=0.5*sin(2*PI*440*t)*lt(mod(t\\,1)\\,0.5):s=44100:d={source_s}");
    let flv = aac_flv(
        "bursts-video",
        &lavfi,
        44_100,
        2,
        &[
            "-f",
            "lavfi",
            "-i",
            "testsrc=size=320x240:rate=25",
            "-t",
            "4",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-pix_fmt",
            "yuv420p",
        ],
    );
    let stream = audio_stream(&flv);
    assert!(
        stream.video_tags > 50,
        "expected H.264 tags, got {}",
        stream.video_tags
    );
    assert!(stream.script_tags >= 1, "expected onMetaData");

    let decoded = decode(&stream.config, &stream.frames);
    assert_eq!(decoded.terminal, DecoderEvent::Finished);
    assert_duration("bursts-video", decoded.duration_s(), source_s);

    let reference = samples(&reference_pcm("bursts-video-ref", &lavfi));
    let decoded_samples = samples(&decoded.pcm);
    // 20 ms windows, delay searched up to 200 ms in 1 ms steps.
    let (corr, lag) = best_envelope_match(&reference, &decoded_samples, 320, 3200, 16);
    println!(
        "bursts-video: envelope correlation {corr:.4} at a delay of {:.1} ms",
        lag as f64 / 16.0
    );
    assert!(corr >= 0.95, "envelope correlation {corr} < 0.95");
}

/// RTMP timestamps are whole milliseconds and jitter; the PCM must not change length
/// because of it, nor because of a pause (timestamp jump) in the stream.
#[test]
fn timestamp_jitter_and_jumps_do_not_change_pcm_length() {
    if !tools_available() {
        return;
    }
    let flv = aac_flv(
        "jitter",
        "sine=frequency=440:sample_rate=44100:duration=3",
        44_100,
        2,
        &[],
    );
    let stream = audio_stream(&flv);
    let clean = decode(&stream.config, &stream.frames);

    // ±4 ms deterministic jitter around the nominal timestamps.
    let mut seed: u32 = 12345;
    let jittered: Vec<_> = stream
        .frames
        .iter()
        .map(|(frame, ts)| {
            seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            let jitter = (seed >> 16) % 9;
            (frame.clone(), (ts + jitter).saturating_sub(4))
        })
        .collect();
    let with_jitter = decode(&stream.config, &jittered);

    // A 2 s pause in the middle (publisher stalled, then resumed).
    let half = stream.frames.len() / 2;
    let jumped: Vec<_> = stream
        .frames
        .iter()
        .enumerate()
        .map(|(i, (frame, ts))| (frame.clone(), if i >= half { ts + 2_000 } else { *ts }))
        .collect();
    let with_jump = decode(&stream.config, &jumped);

    println!(
        "jitter: clean {} bytes, jittered {} bytes, with 2 s jump {} bytes",
        clean.pcm.len(),
        with_jitter.pcm.len(),
        with_jump.pcm.len()
    );
    assert_eq!(with_jitter.terminal, DecoderEvent::Finished);
    assert_eq!(with_jump.terminal, DecoderEvent::Finished);
    // Jitter: identical length. Jump: the resampler restarts its filter, which may
    // cost a few samples; allow 2 ms (64 bytes).
    assert_eq!(with_jitter.pcm.len(), clean.pcm.len());
    assert!(
        clean.pcm.len().abs_diff(with_jump.pcm.len()) <= 64,
        "jump changed the PCM length by {} bytes",
        clean.pcm.len().abs_diff(with_jump.pcm.len())
    );
}

/// The LiveKit path: GStreamer's voaacenc + flvmux (what rtmp2sink sends on the wire).
#[test]
fn gstreamer_flvmux_stream_like_livekit() {
    if !tools_available() {
        return;
    }
    let Some(flv) = gst_flvmux_flv("gst-flvmux", 130) else {
        return;
    };
    let stream = audio_stream(&flv);
    assert_eq!(
        (stream.config.sample_rate, stream.config.channels),
        (44_100, 2)
    );
    let decoded = decode(&stream.config, &stream.frames);
    assert_eq!(decoded.terminal, DecoderEvent::Finished);
    let source_s = 130.0 * 1024.0 / 44_100.0;
    assert_duration("gst-flvmux", decoded.duration_s(), source_s);
    let s = samples(&decoded.pcm);
    let hz = zero_crossing_hz(&s[3200..s.len() - 3200], PCM_SAMPLE_RATE);
    println!(
        "gst-flvmux: ASC {:?}, dominant frequency {hz:.2} Hz",
        &stream.config.raw[..]
    );
    assert!((hz - 440.0).abs() <= 4.4, "measured {hz} Hz");
}
