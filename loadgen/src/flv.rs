//! The audio a publisher sends: a pre-encoded FLV's AAC tags, and how to make one.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, ensure, Context as _};
use bytes::Bytes;
use test_harness::EGRESS_AAC;

/// One FLV audio tag body (what an RTMP audio message carries), with its timestamp.
#[derive(Debug, Clone)]
pub struct AudioTag {
    pub timestamp_ms: u32,
    pub data: Bytes,
}

/// The AAC stream of an FLV file: its sequence header and its raw frames in order.
#[derive(Debug, Clone)]
pub struct AacTrack {
    pub sequence_header: Bytes,
    pub frames: Vec<AudioTag>,
    /// Source sample rate from the AudioSpecificConfig.
    pub sample_rate: u32,
    /// Duration of one pass over `frames`, in ms (last timestamp + one frame).
    pub loop_ms: u32,
}

const SAMPLE_RATES: [u32; 13] = [
    96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350,
];

impl AacTrack {
    /// Parses an FLV file and keeps its AAC audio tags.
    pub fn from_flv(path: &Path) -> anyhow::Result<AacTrack> {
        let bytes =
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        parse_flv(&bytes).with_context(|| format!("{} is not an AAC FLV", path.display()))
    }

    /// PCM bytes (16 kHz mono S16LE, what the provider receives) that `frames` AAC frames
    /// decode to: 1024 samples per frame at the source rate.
    pub fn pcm_bytes_for_frames(&self, frames: u64) -> u64 {
        frames * 1024 * 16_000 / u64::from(self.sample_rate) * 2
    }
}

fn parse_flv(bytes: &[u8]) -> anyhow::Result<AacTrack> {
    ensure!(bytes.len() >= 13 && &bytes[..3] == b"FLV", "no FLV header");
    let header_len = u32::from_be_bytes([bytes[5], bytes[6], bytes[7], bytes[8]]) as usize;
    let mut pos = header_len + 4; // header, then PreviousTagSize0
    let mut sequence_header = None;
    let mut frames = Vec::new();
    while pos + 11 <= bytes.len() {
        let tag_type = bytes[pos] & 0x1f;
        let size = u32::from_be_bytes([0, bytes[pos + 1], bytes[pos + 2], bytes[pos + 3]]) as usize;
        let timestamp = u32::from_be_bytes([
            bytes[pos + 7],
            bytes[pos + 4],
            bytes[pos + 5],
            bytes[pos + 6],
        ]);
        let start = pos + 11;
        let end = start + size;
        ensure!(end <= bytes.len(), "truncated tag at byte {pos}");
        let body = &bytes[start..end];
        // Audio tag, SoundFormat 10 (AAC).
        if tag_type == 8 && body.len() >= 2 && body[0] >> 4 == 10 {
            let data = Bytes::copy_from_slice(body);
            if body[1] == 0 {
                sequence_header.get_or_insert(data);
            } else {
                frames.push(AudioTag {
                    timestamp_ms: timestamp,
                    data,
                });
            }
        }
        pos = end + 4;
    }
    let Some(sequence_header) = sequence_header else {
        bail!("no AAC sequence header");
    };
    ensure!(sequence_header.len() >= 4, "AAC sequence header too short");
    let index = ((sequence_header[2] & 0x07) << 1) | (sequence_header[3] >> 7);
    let Some(&sample_rate) = SAMPLE_RATES.get(usize::from(index)) else {
        bail!("unsupported AAC sampling frequency index {index}");
    };
    ensure!(frames.len() > 10, "too few AAC frames");
    let first = frames[0].timestamp_ms;
    for f in &mut frames {
        f.timestamp_ms -= first.min(f.timestamp_ms);
    }
    let frame_ms = (1024_u32 * 1000).div_ceil(sample_rate);
    let loop_ms = frames.last().map_or(0, |f| f.timestamp_ms) + frame_ms;
    Ok(AacTrack {
        sequence_header,
        frames,
        sample_rate,
        loop_ms,
    })
}

/// Makes (once, cached in `dir`) about 30 s of espeak-ng speech with pauses, encoded the way
/// egress sends it: AAC-LC 44.1 kHz stereo 128 kb/s in FLV. Same recipe as the e2e tests
/// (`tests/harness/src/audio.rs`: `make_speech`, `make_long_speech`, `encode_flv`), kept apart:
/// it reports errors instead of panicking, and its trailing pause (the seam where the track
/// loops) is part of the audio the published figures were measured with.
pub fn generated_speech_flv(dir: &Path) -> anyhow::Result<PathBuf> {
    let flv = dir.join("loadgen-speech.flv");
    if flv.exists() {
        return Ok(flv);
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let one = dir.join("loadgen-speech-one.wav");
    let ssml = "<speak>The weekly sync starts now.<break time=\"900ms\"/>\
        Revenue grew by twelve percent this quarter.<break time=\"900ms\"/>\
        Please send the report before Friday.<break time=\"900ms\"/>\
        Thank you everyone, see you next week.<break time=\"900ms\"/></speak>";
    run(Command::new("espeak-ng")
        .args(["-m", "-s", "150", "-w"])
        .arg(&one)
        .arg(ssml))?;
    let long = dir.join("loadgen-speech-long.wav");
    // Three copies: about 30 s, longer than any pause-free stretch the mock cares about.
    run(Command::new("sox").args([&one, &one, &one]).arg(&long))?;
    let partial = dir.join("loadgen-speech.flv.part");
    run(Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-nostdin", "-y", "-i"])
        .arg(&long)
        .args(EGRESS_AAC)
        .args(["-f", "flv"])
        .arg(&partial))?;
    std::fs::rename(&partial, &flv)?;
    Ok(flv)
}

fn run(command: &mut Command) -> anyhow::Result<()> {
    let program = command.get_program().to_string_lossy().into_owned();
    let output = command.output().with_context(|| {
        format!("cannot run {program} (scripts/install-debian-deps.sh --test installs it)")
    })?;
    ensure!(
        output.status.success(),
        "{program} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tag(kind: u8, timestamp: u32, body: &[u8]) -> Vec<u8> {
        let mut t = vec![kind];
        t.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
        t.extend_from_slice(&timestamp.to_be_bytes()[1..]);
        t.push((timestamp >> 24) as u8);
        t.extend_from_slice(&[0, 0, 0]);
        t.extend_from_slice(body);
        t.extend_from_slice(&((body.len() + 11) as u32).to_be_bytes());
        t
    }

    #[test]
    fn parses_aac_tags_and_sample_rate() {
        let mut flv = b"FLV\x01\x04\x00\x00\x00\x09\x00\x00\x00\x00".to_vec();
        // AudioSpecificConfig 0x12 0x10: AAC-LC, 44.1 kHz (index 4), stereo.
        flv.extend(tag(8, 0, &[0xaf, 0x00, 0x12, 0x10]));
        flv.extend(tag(18, 0, b"metadata"));
        for i in 0..20u32 {
            flv.extend(tag(8, 1000 + i * 23, &[0xaf, 0x01, i as u8]));
        }
        let track = parse_flv(&flv).unwrap();
        assert_eq!(track.sample_rate, 44_100);
        assert_eq!(track.frames.len(), 20);
        assert_eq!(track.frames[0].timestamp_ms, 0);
        assert_eq!(track.frames[19].timestamp_ms, 19 * 23);
        assert_eq!(track.loop_ms, 19 * 23 + 24);
        assert_eq!(&track.frames[3].data[..], &[0xaf, 0x01, 3]);
        // 1024 samples at 44.1 kHz = 371.5 samples at 16 kHz.
        assert_eq!(track.pcm_bytes_for_frames(1), 742);
        assert_eq!(
            track.pcm_bytes_for_frames(441),
            441 * 1024 * 16_000 / 44_100 * 2
        );
    }

    #[test]
    fn refuses_files_without_aac() {
        assert!(parse_flv(b"not an flv at all").is_err());
        let flv = b"FLV\x01\x04\x00\x00\x00\x09\x00\x00\x00\x00".to_vec();
        assert!(parse_flv(&flv).is_err());
    }
}
