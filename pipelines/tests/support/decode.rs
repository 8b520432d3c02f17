//! Drives a real `DecodePipeline` with the audio of an FLV file and collects what
//! comes out, timing the first PCM.

use std::path::Path;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use pipelines::{
    parse_audio_tag, AudioSpecificConfig, AudioTag, DecodeError, DecodePipeline, DecoderEvent,
};

use super::flv_file::{read_flv, TAG_AUDIO, TAG_SCRIPT, TAG_VIDEO};

/// The audio of an FLV file as the RTMP server would see it.
pub struct AudioStream {
    pub config: AudioSpecificConfig,
    /// Raw AAC frames with their timestamps (ms).
    pub frames: Vec<(Bytes, u32)>,
    pub video_tags: usize,
    pub script_tags: usize,
}

pub fn audio_stream(path: &Path) -> AudioStream {
    let file = std::fs::read(path).expect("read flv");
    let tags = read_flv(&file).expect("parse flv");
    let mut config = None;
    let mut frames = Vec::new();
    let (mut video_tags, mut script_tags) = (0, 0);
    for tag in tags {
        match tag.tag_type {
            TAG_AUDIO => match parse_audio_tag(&tag.data).expect("valid audio tag") {
                AudioTag::AacSequenceHeader(asc) => {
                    config = Some(AudioSpecificConfig::parse(asc).expect("valid ASC"));
                }
                AudioTag::AacRaw(frame) => frames.push((frame, tag.timestamp_ms)),
                AudioTag::Unsupported { sound_format } => {
                    panic!("unexpected format {sound_format}")
                }
            },
            TAG_VIDEO => video_tags += 1,
            TAG_SCRIPT => script_tags += 1,
            other => panic!("unexpected FLV tag type {other}"),
        }
    }
    AudioStream {
        config: config.expect("FLV has an AAC sequence header"),
        frames,
        video_tags,
        script_tags,
    }
}

/// Everything a decode run produced.
pub struct Decoded {
    pub pcm: Vec<u8>,
    /// The terminal event (`Finished` or `Error`).
    pub terminal: DecoderEvent,
    /// From the first `push_frame` call to the first `Pcm` event.
    pub first_pcm_latency: Option<Duration>,
    pub pcm_events: usize,
    /// Push errors (the first one ends the feeding).
    pub push_errors: Vec<DecodeError>,
}

impl Decoded {
    pub fn duration_s(&self) -> f64 {
        self.pcm.len() as f64 / pipelines::PCM_BYTES_PER_MS as f64 / 1000.0
    }
}

/// Pushes all frames, calls `finish`, and waits (10 s
/// max) for the terminal event. Also checks that no second terminal event follows.
pub fn decode(config: &AudioSpecificConfig, frames: &[(Bytes, u32)]) -> Decoded {
    let (tx, rx) = mpsc::channel::<(Instant, DecoderEvent)>();
    let pipeline = DecodePipeline::start(config, move |event| {
        let _ = tx.send((Instant::now(), event));
    })
    .expect("start pipeline");

    let started = Instant::now();
    let mut push_errors = Vec::new();
    'frames: for (frame, ts) in frames {
        if let Err(err) = pipeline.push_frame(frame.clone(), *ts) {
            push_errors.push(err);
            break 'frames;
        }
    }
    pipeline.finish();

    let mut pcm = Vec::new();
    let mut first_pcm = None;
    let mut pcm_events = 0;
    let terminal = loop {
        let (at, event) = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("no terminal event within 10 s");
        match event {
            DecoderEvent::Pcm(bytes) => {
                first_pcm.get_or_insert(at);
                pcm_events += 1;
                pcm.extend_from_slice(&bytes);
            }
            terminal => break terminal,
        }
    };
    drop(pipeline);
    let extra: Vec<_> = rx.try_iter().map(|(_, e)| e).collect();
    assert!(
        extra.iter().all(|e| matches!(e, DecoderEvent::Pcm(_))),
        "a second terminal event followed {terminal:?}: {extra:?}"
    );
    Decoded {
        pcm,
        terminal,
        first_pcm_latency: first_pcm.map(|at| at - started),
        pcm_events,
        push_errors,
    }
}
