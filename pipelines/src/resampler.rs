//! Downmix and resample decoded audio to the provider's 16 kHz mono S16LE, in plain Rust.
//!
//! Why not GStreamer's `audioconvert ! audioresample`: at a thousand live sessions the
//! resampler was the largest single cost of the service (a fifth of its CPU in the profile of
//! docs/PERFORMANCE.md#decoding), because `audioresample` interpolates its filter for every
//! output sample and runs as two more elements per buffer. Here the ratio is fixed for the
//! stream (16 000 / input rate, reduced: 160/441 for 44.1 kHz, 1/3 for 48 kHz), so each of the
//! `L` output phases gets its own precomputed windowed-sinc filter (a polyphase table) and an
//! output sample is one dot product of `taps` input samples: no interpolation, no per-buffer
//! negotiation.
//!
//! The filter: cutoff at 95 % of the output Nyquist (7.6 kHz for 16 kHz out, or of the input's
//! when upsampling), [`ZERO_CROSSINGS`] lobes each side, Kaiser window (β = [`KAISER_BETA`]),
//! every phase normalised to unit DC gain. Its delay is half the filter (about 1 ms at
//! 44.1 kHz); [`Resampler::finish`] pads the end with silence so the output has exactly
//! ⌈input · L / M⌉ samples, as a direct decode of the same audio has.
//!
//! Time-free: samples in, samples out (the only shared state is the cache of filter tables). Fidelity against a reference decode:
//! `tests/resample_fidelity.rs`; cost: `benches/decode_cost.rs`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

/// Lobes of the sinc kept on each side of the centre.
pub const ZERO_CROSSINGS: usize = 24;
/// Kaiser window shape: about 80 dB of stop-band attenuation.
pub const KAISER_BETA: f64 = 8.0;
/// Cutoff as a fraction of the lower of the two Nyquist frequencies.
const CUTOFF: f64 = 0.95;

/// Input rates accepted (AAC's range; `AudioSpecificConfig` already refuses others).
pub const MIN_INPUT_RATE: u32 = 7_350;
pub const MAX_INPUT_RATE: u32 = 96_000;

/// Why a resampler cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResamplerError {
    #[error("input rate {0} Hz is outside {MIN_INPUT_RATE}..={MAX_INPUT_RATE}")]
    Rate(u32),
    #[error("{0} channels: between 1 and 8 are accepted")]
    Channels(u32),
}

/// One stream's downmix and resampler state.
#[derive(Debug, Clone)]
pub struct Resampler {
    channels: usize,
    /// Output samples per `down` input samples.
    up: u64,
    down: u64,
    taps: usize,
    /// `up` rows of `taps` coefficients, shared by every stream of the same rates (90 KB for
    /// 44.1 kHz: one copy stays in cache however many sessions run).
    table: Arc<[f32]>,
    /// Mono input not yet consumed; `history[0]` is input sample number `base`.
    history: Vec<f32>,
    base: u64,
    /// Input samples received so far (mono frames).
    received: u64,
    /// Number of the next output sample.
    next_out: u64,
    /// An interleaved frame split across two pushes.
    partial_frame: Vec<f32>,
}

/// Filter tables already built, by (input rate, output rate).
type Tables = Mutex<HashMap<(u32, u32), Arc<[f32]>>>;
static TABLES: OnceLock<Tables> = OnceLock::new();

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// Modified Bessel function of the first kind, order 0 (series; converges fast for β ≤ 20).
fn bessel_i0(x: f64) -> f64 {
    let mut sum = 1.0;
    let mut term = 1.0;
    let half = x / 2.0;
    for k in 1..64 {
        term *= half / k as f64;
        let add = term * term;
        sum += add;
        if add < sum * 1e-17 {
            break;
        }
    }
    sum
}

impl Resampler {
    /// A resampler from `input_rate` Hz, `channels` interleaved, to `output_rate` Hz mono.
    pub fn new(input_rate: u32, channels: u32, output_rate: u32) -> Result<Self, ResamplerError> {
        if !(MIN_INPUT_RATE..=MAX_INPUT_RATE).contains(&input_rate) {
            return Err(ResamplerError::Rate(input_rate));
        }
        if !(1..=8).contains(&channels) {
            return Err(ResamplerError::Channels(channels));
        }
        let divisor = gcd(u64::from(output_rate), u64::from(input_rate));
        let up = u64::from(output_rate) / divisor;
        let down = u64::from(input_rate) / divisor;
        // Cutoff in cycles per input sample.
        let cutoff = CUTOFF * 0.5 * f64::from(output_rate.min(input_rate)) / f64::from(input_rate);
        // Half the filter, in input samples: ZERO_CROSSINGS lobes of the sinc.
        let half = (ZERO_CROSSINGS as f64 / (2.0 * cutoff)).ceil() as usize;
        let taps = 2 * half;
        let table = {
            let mut tables = TABLES
                .get_or_init(Tables::default)
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            Arc::clone(
                tables
                    .entry((input_rate, output_rate))
                    .or_insert_with(|| filter_table(up, taps, half, cutoff).into()),
            )
        };
        Ok(Self {
            channels: channels as usize,
            up,
            down,
            taps,
            table,
            // The filter is centred: before the first input sample there is silence.
            history: vec![0.0; half - 1],
            base: 0,
            received: 0,
            next_out: 0,
            partial_frame: Vec::new(),
        })
    }

    /// Filter taps per output sample.
    pub fn taps(&self) -> usize {
        self.taps
    }

    /// Takes interleaved F32 samples (any count; a frame split across calls is kept) and
    /// appends the 16-bit output they complete to `out`.
    pub fn push(&mut self, interleaved: &[f32], out: &mut Vec<u8>) {
        let mut input = interleaved;
        if !self.partial_frame.is_empty() {
            let need = self.channels - self.partial_frame.len();
            let take = need.min(input.len());
            self.partial_frame.extend_from_slice(&input[..take]);
            input = &input[take..];
            if self.partial_frame.len() == self.channels {
                let frame = std::mem::take(&mut self.partial_frame);
                self.take_frames(&frame);
            }
        }
        let whole = input.len() / self.channels * self.channels;
        self.take_frames(&input[..whole]);
        self.partial_frame.extend_from_slice(&input[whole..]);
        self.produce(out);
    }

    /// End of the stream: pads with silence and appends the last output samples, so the
    /// output holds ⌈input · L / M⌉ samples in all.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        let total = (self.received * self.up).div_ceil(self.down);
        let half = self.taps / 2;
        self.history.extend(std::iter::repeat_n(0.0, half + 1));
        self.produce_until(out, total);
    }

    fn take_frames(&mut self, interleaved: &[f32]) {
        if self.channels == 1 {
            self.history.extend_from_slice(interleaved);
        } else {
            let scale = 1.0 / self.channels as f32;
            self.history.extend(
                interleaved
                    .chunks_exact(self.channels)
                    .map(|frame| frame.iter().sum::<f32>() * scale),
            );
        }
        self.received += (interleaved.len() / self.channels) as u64;
    }

    fn produce(&mut self, out: &mut Vec<u8>) {
        self.produce_until(out, u64::MAX);
    }

    fn produce_until(&mut self, out: &mut Vec<u8>, limit: u64) {
        // history[k] is input sample base + k − (half − 1) (the "shifted" index base + k);
        // output n lies between input samples i and i+1, i = ⌊n·M / L⌋, and needs inputs
        // i − half + 1 ..= i + half, which are the shifted indexes i .. i + taps.
        let available = self.base + self.history.len() as u64; // in shifted index space
        while self.next_out < limit {
            let position = self.next_out * self.down;
            let i = position / self.up;
            let phase = (position % self.up) as usize;
            if i + self.taps as u64 > available {
                break;
            }
            let start = (i - self.base) as usize;
            let window = &self.history[start..start + self.taps];
            let coefficients = &self.table[phase * self.taps..(phase + 1) * self.taps];
            let value = dot(window, coefficients);
            // Round half away from zero; `as` saturates at the i16 range (no libm call: this
            // runs 16 000 times a second per session).
            let scaled = value * 32_768.0;
            let sample = (scaled + 0.5f32.copysign(scaled)) as i16;
            out.extend_from_slice(&sample.to_le_bytes());
            self.next_out += 1;
        }
        // Drop what no future output needs.
        let next_i = self.next_out * self.down / self.up;
        if next_i > self.base {
            let drop = ((next_i - self.base) as usize).min(self.history.len());
            self.history.drain(..drop);
            self.base += drop as u64;
        }
    }
}

/// The polyphase table: `up` phases of `taps` windowed-sinc coefficients, each phase
/// normalised to unit DC gain.
fn filter_table(up: u64, taps: usize, half: usize, cutoff: f64) -> Vec<f32> {
    let beta_norm = bessel_i0(KAISER_BETA);
    let mut table = Vec::with_capacity(up as usize * taps);
    for phase in 0..up {
        let frac = phase as f64 / up as f64;
        let start = table.len();
        for j in 0..taps {
            // Distance from the output instant to input sample j of the window.
            let d = frac + (half as f64 - 1.0) - j as f64;
            let x = 2.0 * cutoff * d;
            let sinc = if x.abs() < 1e-12 {
                1.0
            } else {
                (std::f64::consts::PI * x).sin() / (std::f64::consts::PI * x)
            };
            let r = d / half as f64;
            let window = if r.abs() >= 1.0 {
                0.0
            } else {
                bessel_i0(KAISER_BETA * (1.0 - r * r).sqrt()) / beta_norm
            };
            table.push(sinc * window);
        }
        let sum: f64 = table[start..].iter().sum();
        for c in &mut table[start..] {
            *c /= sum;
        }
    }
    table.into_iter().map(|c| c as f32).collect()
}

/// Dot product in eight independent lanes: a single running sum is a chain of dependent
/// additions the compiler may not reorder (float addition is not associative), which made
/// the filter three times slower than GStreamer's; eight lanes become SIMD.
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0.0f32; 8];
    let mut a_chunks = a.chunks_exact(8);
    let mut b_chunks = b.chunks_exact(8);
    for (x, y) in (&mut a_chunks).zip(&mut b_chunks) {
        for k in 0..8 {
            lanes[k] += x[k] * y[k];
        }
    }
    let tail: f32 = a_chunks
        .remainder()
        .iter()
        .zip(b_chunks.remainder())
        .map(|(x, y)| x * y)
        .sum();
    lanes.iter().sum::<f32>() + tail
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(rate: u32, hz: f64, seconds: f64, channels: usize) -> Vec<f32> {
        let n = (f64::from(rate) * seconds) as usize;
        (0..n)
            .flat_map(|k| {
                let v = (0.5 * (2.0 * std::f64::consts::PI * hz * k as f64 / f64::from(rate)).sin())
                    as f32;
                std::iter::repeat_n(v, channels)
            })
            .collect()
    }

    fn samples(pcm: &[u8]) -> Vec<f64> {
        pcm.chunks_exact(2)
            .map(|b| f64::from(i16::from_le_bytes([b[0], b[1]])) / 32_768.0)
            .collect()
    }

    fn rms(x: &[f64]) -> f64 {
        (x.iter().map(|v| v * v).sum::<f64>() / x.len().max(1) as f64).sqrt()
    }

    fn run(rate: u32, channels: u32, input: &[f32], piece: usize) -> Vec<f64> {
        let mut r = Resampler::new(rate, channels, 16_000).expect("resampler");
        let mut out = Vec::new();
        for chunk in input.chunks(piece) {
            r.push(chunk, &mut out);
        }
        r.finish(&mut out);
        samples(&out)
    }

    #[test]
    fn output_length_is_the_exact_ratio_for_every_aac_rate() {
        for rate in [
            8_000u32, 11_025, 16_000, 22_050, 24_000, 32_000, 44_100, 48_000, 88_200, 96_000,
        ] {
            for frames in [0usize, 1, 1023, 1024, 44_100] {
                let input = vec![0.1f32; frames * 2];
                let out = run(rate, 2, &input, 777);
                let expected = (frames as u64 * 16_000).div_ceil(u64::from(rate));
                assert_eq!(out.len() as u64, expected, "rate {rate}, {frames} frames");
            }
        }
    }

    #[test]
    fn speech_band_tones_pass_and_tones_above_8_khz_are_removed() {
        for rate in [44_100u32, 48_000] {
            for (hz, low, high) in [
                (300.0, 0.99, 1.01),
                (3_000.0, 0.99, 1.01),
                (6_000.0, 0.98, 1.02),
            ] {
                let out = run(rate, 2, &tone(rate, hz, 1.0, 2), 2048);
                let gain = rms(&out[1_000..15_000]) / (0.5 / 2f64.sqrt());
                assert!(
                    (low..=high).contains(&gain),
                    "{rate} Hz in, {hz} Hz tone: gain {gain}"
                );
            }
            // Above the stop band (8.4 kHz): these would alias into speech at 16 kHz.
            for hz in [9_500.0, 12_000.0, 20_000.0] {
                let out = run(rate, 1, &tone(rate, hz, 1.0, 1), 1024);
                let gain = rms(&out[1_000..15_000]) / (0.5 / 2f64.sqrt());
                assert!(
                    gain < 0.001,
                    "{rate} Hz in, {hz} Hz tone aliased with gain {gain}"
                );
            }
        }
    }

    #[test]
    fn stereo_is_downmixed_to_the_mean_and_pieces_do_not_matter() {
        // Left 0.4, right 0.2: the mean is 0.3 everywhere past the start.
        let input: Vec<f32> = (0..44_100).flat_map(|_| [0.4f32, 0.2]).collect();
        let whole = run(44_100, 2, &input, input.len());
        for piece in [1, 3, 441, 4096] {
            assert_eq!(run(44_100, 2, &input, piece), whole, "piece {piece}");
        }
        let steady = &whole[100..whole.len() - 100];
        assert!(
            steady.iter().all(|v| (v - 0.3).abs() < 0.001),
            "{:?}",
            &steady[..4]
        );
    }

    #[test]
    fn streams_of_the_same_rates_share_one_filter_table() {
        let a = Resampler::new(44_100, 2, 16_000).expect("a");
        let b = Resampler::new(44_100, 1, 16_000).expect("b");
        let c = Resampler::new(48_000, 2, 16_000).expect("c");
        assert!(Arc::ptr_eq(&a.table, &b.table));
        assert!(!Arc::ptr_eq(&a.table, &c.table));
        assert_eq!(a.table.len(), 160 * a.taps());
    }

    #[test]
    fn full_scale_input_is_clamped_not_wrapped() {
        let input = vec![1.5f32; 48_000];
        let out = run(48_000, 1, &input, 4800);
        assert!(out[100..out.len() - 100].iter().all(|v| *v > 0.99));
    }

    #[test]
    fn rates_and_channels_outside_aac_are_refused() {
        assert_eq!(
            Resampler::new(0, 2, 16_000).err(),
            Some(ResamplerError::Rate(0))
        );
        assert_eq!(
            Resampler::new(192_000, 2, 16_000).err(),
            Some(ResamplerError::Rate(192_000))
        );
        assert_eq!(
            Resampler::new(44_100, 0, 16_000).err(),
            Some(ResamplerError::Channels(0))
        );
        assert_eq!(
            Resampler::new(44_100, 9, 16_000).err(),
            Some(ResamplerError::Channels(9))
        );
    }
}
