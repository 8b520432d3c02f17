//! The offline `whisper` provider: speech-to-text on this machine, no key, no network.
//!
//! A [`WhisperActor`] per provider stream segments the session's PCM into utterances
//! ([`vad`]), asks the shared [`pool`] for a partial every `partial_period` of a growing
//! utterance (Whisper does not stream: each partial re-decodes the utterance so far) and for a
//! final at its endpoint, and emits the same [`TranscriptEvent`]s as the Gladia path, so seq,
//! broadcast and storage do not know which provider ran. Finals go out in utterance order; a
//! partial that comes back after its utterance ended is dropped.
//!
//! [`WhisperProvider`] is shared by all sessions: the decode pool, the settings and the
//! admission count. It knows how many sessions this machine serves in real time (measured at
//! start-up, see [`measure`]) and admits no more.
//!
//! - `provider`: [`WhisperProvider`], [`measure`], admission.
//! - `actor`: [`WhisperActor`], one provider stream.
//! - [`pool`]: the decode threads; finals first, partials thinned under load.
//! - [`vad`]: voice-activity segmentation into utterances.

mod actor;
pub mod pool;
mod provider;
pub mod vad;

pub use actor::WhisperActor;
pub use provider::{
    measure, Admission, CapacityReached, Measurement, WhisperProvider, WhisperSettings,
    WhisperStatus,
};
