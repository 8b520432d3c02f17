//! Signal measurements on S16LE mono PCM to check decoded content.

pub fn samples(pcm: &[u8]) -> Vec<f64> {
    pcm.chunks_exact(2)
        .map(|b| f64::from(i16::from_le_bytes([b[0], b[1]])))
        .collect()
}

/// Dominant frequency from sign changes (two per period of a pure tone).
pub fn zero_crossing_hz(samples: &[f64], rate: u32) -> f64 {
    let crossings = samples
        .windows(2)
        .filter(|w| (w[0] < 0.0) != (w[1] < 0.0))
        .count();
    crossings as f64 / 2.0 / (samples.len() as f64 / f64::from(rate))
}

pub fn rms(samples: &[f64]) -> f64 {
    (samples.iter().map(|s| s * s).sum::<f64>() / samples.len().max(1) as f64).sqrt()
}

/// RMS per window of `window` samples.
pub fn envelope(samples: &[f64], window: usize) -> Vec<f64> {
    samples.chunks_exact(window).map(rms).collect()
}

/// Pearson correlation of the overlapping parts of two series.
pub fn correlation(a: &[f64], b: &[f64]) -> f64 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mean = |x: &[f64]| x.iter().sum::<f64>() / n as f64;
    let (ma, mb) = (mean(a), mean(b));
    let cov: f64 = a.iter().zip(b).map(|(x, y)| (x - ma) * (y - mb)).sum();
    let va: f64 = a.iter().map(|x| (x - ma).powi(2)).sum();
    let vb: f64 = b.iter().map(|y| (y - mb).powi(2)).sum();
    cov / (va * vb).sqrt()
}

/// Best correlation of `decoded` against `reference` for a delay of 0..=max_lag
/// samples of `decoded` (decoders add delay, never remove it); returns
/// (correlation, lag in samples), comparing envelopes of `window` samples.
pub fn best_envelope_match(
    reference: &[f64],
    decoded: &[f64],
    window: usize,
    max_lag: usize,
    step: usize,
) -> (f64, usize) {
    let reference_env = envelope(reference, window);
    (0..=max_lag)
        .step_by(step)
        .filter(|lag| *lag < decoded.len())
        .map(|lag| {
            (
                correlation(&reference_env, &envelope(&decoded[lag..], window)),
                lag,
            )
        })
        .fold(
            (f64::MIN, 0),
            |best, cur| if cur.0 > best.0 { cur } else { best },
        )
}
