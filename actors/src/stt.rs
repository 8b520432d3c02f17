//! The speech-to-text provider behind one interface (docs/PROTOCOL.md#speech-to-text-providers).
//!
//! [`SttBackend`] is the provider the service runs, chosen at start-up; for each provider
//! stream the `SessionSupervisor` asks it to [`admit`](SttBackend::admit) the session and
//! [`start`](SttBackend::start) an actor, then talks to that actor only through
//! [`SttStream`]: PCM in, `EndOfAudio` and `PublisherGap` as signals; transcripts, status and
//! the end come back as `TranscriptEvent`, `ProviderStatus` and `ProviderFinished`. A new
//! provider is one more variant and one more actor module.

use std::sync::Arc;

use actix::prelude::*;

use crate::gladia::{GladiaActor, GladiaConfig};
use crate::messages::{EndOfAudio, HandOver, PcmChunk, ProviderResume, PublisherGap, StreamSinks};
use crate::whisper::{Admission, CapacityReached, WhisperActor, WhisperProvider};

#[derive(Clone)]
pub enum SttBackend {
    /// Gladia Live v2 over the network.
    Gladia(Arc<GladiaConfig>),
    /// Whisper on this machine.
    Whisper(Arc<WhisperProvider>),
}

impl std::fmt::Debug for SttBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A place for one provider stream, which starts it. Gladia has no local limit; a whisper
/// stream holds its share of this machine's capacity until the stream ends.
pub enum SttAdmission {
    Gladia(Arc<GladiaConfig>),
    Whisper(Arc<WhisperProvider>, Admission),
}

/// One running provider stream, as the supervisor uses it.
#[derive(Clone)]
pub struct SttStream {
    pub audio: Recipient<PcmChunk>,
    end: Recipient<EndOfAudio>,
    gap: Recipient<PublisherGap>,
    hand_over: Recipient<HandOver>,
}

impl SttStream {
    /// The stream of a provider actor: every provider handles the same four messages.
    fn of<A>(addr: Addr<A>) -> SttStream
    where
        A: Actor<Context = Context<A>>
            + Handler<PcmChunk>
            + Handler<EndOfAudio>
            + Handler<PublisherGap>
            + Handler<HandOver>,
    {
        SttStream {
            audio: addr.clone().recipient(),
            end: addr.clone().recipient(),
            gap: addr.clone().recipient(),
            hand_over: addr.recipient(),
        }
    }

    /// Another instance took the session: leave the provider session for it to continue.
    pub fn hand_over(&self) {
        self.hand_over.do_send(HandOver);
    }

    /// No more audio: the provider delivers its trailing finals, then `ProviderFinished`.
    pub fn end_of_audio(&self) {
        self.end.do_send(EndOfAudio);
    }

    /// The publisher left and may come back.
    pub fn publisher_gap(&self) {
        self.gap.do_send(PublisherGap);
    }
}

impl SttBackend {
    /// `gladia` or `whisper`, as the API shows it.
    pub fn name(&self) -> &'static str {
        match self {
            SttBackend::Gladia(_) => "gladia",
            SttBackend::Whisper(_) => "whisper",
        }
    }

    /// Takes a place for one stream, or says why there is none.
    pub fn admit(&self) -> Result<SttAdmission, CapacityReached> {
        match self {
            SttBackend::Gladia(config) => Ok(SttAdmission::Gladia(config.clone())),
            SttBackend::Whisper(provider) => provider
                .admit()
                .map(|admission| SttAdmission::Whisper(provider.clone(), admission)),
        }
    }

    /// True when [`admit`](Self::admit) would succeed now.
    pub fn has_room(&self) -> bool {
        match self {
            SttBackend::Gladia(_) => true,
            SttBackend::Whisper(provider) => provider.has_room(),
        }
    }
}

impl SttAdmission {
    /// The provider this place belongs to, as traces name it.
    pub fn provider_name(&self) -> &'static str {
        match self {
            SttAdmission::Gladia(_) => "gladia",
            SttAdmission::Whisper(..) => "whisper",
        }
    }

    /// Starts the actor of provider stream `stream` of `session_slug`, continuing the
    /// provider session `resume` (another instance's, taken over) where the provider can.
    pub fn start(
        self,
        session_slug: String,
        stream: u64,
        sinks: StreamSinks,
        resume: Option<ProviderResume>,
    ) -> SttStream {
        match self {
            SttAdmission::Whisper(provider, admission) => SttStream::of(
                WhisperActor::new(session_slug, stream, provider, admission, sinks).start(),
            ),
            SttAdmission::Gladia(config) => SttStream::of(
                GladiaActor::new(session_slug, stream, config, sinks)
                    .resuming(resume)
                    .start(),
            ),
        }
    }
}
