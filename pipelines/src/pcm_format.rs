//! The PCM every decoder produces and the providers receive: S16LE, 16 kHz, mono.

/// Sample rate of the PCM handed to the speech-to-text provider.
pub const PCM_SAMPLE_RATE: u32 = 16_000;

/// Bytes of output PCM per millisecond: 16 kHz * 2 bytes (S16LE) * 1 channel / 1000.
pub const PCM_BYTES_PER_MS: usize = 32;
