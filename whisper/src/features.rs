//! Whisper's log-mel front end, as the reference implementation computes it: the audio padded
//! with zeros to 30 s, a centred STFT (400-sample Hann window, 160-sample hop, reflect padding),
//! the power of 201 bins through 80 Slaney mel filters, `log10` clamped at 1e-10, then clamped
//! to 8 below the loudest value of the whole window and scaled as `(x + 4) / 4`.

use std::sync::Arc;

use rustfft::num_complex::Complex32;
use rustfft::{Fft, FftPlanner};

/// Shapes from `preprocessor_config.json` (the standard values for every Whisper model).
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
pub struct FeatureShape {
    pub feature_size: usize,
    pub hop_length: usize,
    pub n_fft: usize,
    pub n_samples: usize,
    pub nb_max_frames: usize,
    pub sampling_rate: usize,
}

impl Default for FeatureShape {
    fn default() -> Self {
        FeatureShape {
            feature_size: 80,
            hop_length: 160,
            n_fft: 400,
            n_samples: 480_000,
            nb_max_frames: 3000,
            sampling_rate: 16_000,
        }
    }
}

/// One mel filter: its first FFT bin and the weights from there (the filters are sparse).
struct Filter {
    first_bin: usize,
    weights: Vec<f32>,
}

pub struct LogMel {
    shape: FeatureShape,
    window: Vec<f32>,
    filters: Vec<Filter>,
    fft: Arc<dyn Fft<f32>>,
}

impl LogMel {
    pub fn new(shape: FeatureShape) -> LogMel {
        let n_fft = shape.n_fft;
        // torch.hann_window(n_fft), periodic.
        let window = (0..n_fft)
            .map(|i| {
                0.5 - 0.5 * (2.0 * std::f64::consts::PI * i as f64 / n_fft as f64).cos() as f32
            })
            .collect();
        let dense = mel_spec::mel::mel(
            shape.sampling_rate as f64,
            n_fft,
            shape.feature_size,
            None,
            None,
            false,
            true,
        );
        let filters = dense
            .rows()
            .into_iter()
            .map(|row| {
                let first_bin = row.iter().position(|&w| w > 0.0).unwrap_or(0);
                let last_bin = row.iter().rposition(|&w| w > 0.0).unwrap_or(0);
                Filter {
                    first_bin,
                    weights: (first_bin..=last_bin).map(|b| row[b] as f32).collect(),
                }
            })
            .collect();
        let fft = FftPlanner::new().plan_fft_forward(n_fft);
        LogMel {
            shape,
            window,
            filters,
            fft,
        }
    }

    pub fn shape(&self) -> &FeatureShape {
        &self.shape
    }

    /// Features of up to 30 s of 16 kHz mono audio in [-1, 1]: `feature_size × nb_max_frames`
    /// values, row-major (one row per mel bin). Longer audio is cut at 30 s.
    pub fn compute(&self, samples: &[f32]) -> Vec<f32> {
        self.compute_frames(samples, self.shape.nb_max_frames)
    }

    /// As [`LogMel::compute`], but for a window of `frames` frames (at most `nb_max_frames`):
    /// the audio zero-padded to `frames × hop_length` samples instead of 30 s, so a short
    /// utterance costs the encoder less. `feature_size × frames` values, row-major; audio
    /// longer than the window is cut.
    pub fn compute_frames(&self, samples: &[f32], frames: usize) -> Vec<f32> {
        let FeatureShape {
            feature_size,
            hop_length,
            n_fft,
            nb_max_frames,
            ..
        } = self.shape;
        let nb_max_frames = frames.clamp(1, nb_max_frames);
        let n_samples = nb_max_frames * hop_length;
        let samples = &samples[..samples.len().min(n_samples)];
        let half = n_fft / 2;
        // The sample at padded position p (reflect padding around the zero-padded window).
        let padded_len = n_samples;
        let at = |p: isize| -> f32 {
            let i = if p < 0 {
                -p
            } else if p >= padded_len as isize {
                2 * (padded_len as isize - 1) - p
            } else {
                p
            };
            samples.get(i as usize).copied().unwrap_or(0.0)
        };
        // Frames past the audio (and past their window reaching into it) are pure zeros.
        let audible_frames = ((samples.len() + half) / hop_length + 1).min(nb_max_frames);
        let bins = n_fft / 2 + 1;
        let mut mel = vec![0f32; feature_size * nb_max_frames];
        let mut buffer = vec![Complex32::new(0.0, 0.0); n_fft];
        let mut scratch = vec![Complex32::new(0.0, 0.0); self.fft.get_inplace_scratch_len()];
        let mut power = vec![0f32; bins];
        for frame in 0..audible_frames {
            let start = (frame * hop_length) as isize - half as isize;
            for (k, slot) in buffer.iter_mut().enumerate() {
                *slot = Complex32::new(at(start + k as isize) * self.window[k], 0.0);
            }
            self.fft.process_with_scratch(&mut buffer, &mut scratch);
            for (p, c) in power.iter_mut().zip(&buffer[..bins]) {
                *p = c.norm_sqr();
            }
            for (m, filter) in self.filters.iter().enumerate() {
                let energy: f32 = filter
                    .weights
                    .iter()
                    .zip(&power[filter.first_bin..])
                    .map(|(w, p)| w * p)
                    .sum();
                mel[m * nb_max_frames + frame] = energy;
            }
        }
        let mut max = f32::NEG_INFINITY;
        for v in mel.iter_mut() {
            *v = v.max(1e-10).log10();
            max = max.max(*v);
        }
        let floor = max - 8.0;
        for v in mel.iter_mut() {
            *v = (v.max(floor) + 4.0) / 4.0;
        }
        mel
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn silence_is_flat_and_a_tone_lights_its_mel_bin() {
        let mel = LogMel::new(FeatureShape::default());
        let silent = mel.compute(&[]);
        assert_eq!(silent.len(), 80 * 3000);
        assert!(silent.iter().all(|&v| (v - silent[0]).abs() < 1e-6));

        // 1 s of a 1 kHz tone: energy in the frames of that second, in one band of bins.
        let tone: Vec<f32> = (0..16_000)
            .map(|i| 0.5 * (2.0 * std::f32::consts::PI * 1000.0 * i as f32 / 16_000.0).sin())
            .collect();
        let features = mel.compute(&tone);
        let at = |bin: usize, frame: usize| features[bin * 3000 + frame];
        let loudest = (0..80)
            .max_by(|&a, &b| at(a, 50).total_cmp(&at(b, 50)))
            .unwrap();
        // 1 kHz sits near mel bin 25 of 80 (Slaney scale, 0-8 kHz).
        assert!((20..=30).contains(&loudest), "loudest bin {loudest}");
        assert!(
            at(loudest, 50) > at(loudest, 200) + 1.0,
            "tone frames louder than after it"
        );
        // Normalised: nothing more than 2 (8 in log10 units / 4) below the maximum.
        let max = features.iter().copied().fold(f32::MIN, f32::max);
        assert!(features.iter().all(|&v| v >= max - 2.0 - 1e-5));
    }

    #[test]
    fn a_shorter_window_is_the_start_of_the_full_one() {
        let mel = LogMel::new(FeatureShape::default());
        // 2 s of a tone followed by nothing: a 5 s window holds all of it.
        let tone: Vec<f32> = (0..32_000)
            .map(|i| 0.3 * (2.0 * std::f32::consts::PI * 440.0 * i as f32 / 16_000.0).sin())
            .collect();
        let full = mel.compute(&tone);
        let short = mel.compute_frames(&tone, 500);
        assert_eq!(short.len(), 80 * 500);
        for bin in 0..80 {
            for frame in 0..500 {
                let (a, b) = (full[bin * 3000 + frame], short[bin * 500 + frame]);
                assert!((a - b).abs() < 1e-5, "bin {bin} frame {frame}: {a} vs {b}");
            }
        }
        // More than the model's 30 s is the full window; audio past a window is cut.
        assert_eq!(mel.compute_frames(&tone, 10_000).len(), 80 * 3000);
        assert_eq!(mel.compute_frames(&tone, 100).len(), 80 * 100);
    }
}
