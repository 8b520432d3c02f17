//! A resuming client pulls the finals it missed from its session, one page at a time
//! (docs/PROTOCOL.md#resume-and-delivery-guarantees): it asks with [`NextReplayPage`] only when
//! its outbox has room, and the session answers with a [`ReplayPage`]. The client holds the
//! `Recipient<NextReplayPage>` its subscription returned, never the broadcaster's address.

use actix::prelude::*;

use crate::messages::client::ClientId;
use crate::outbox::Outbound;

/// The most finals one page carries, whatever the client asks for: a page is built in one
/// go (cloned from memory or read from the database), so it must stay cheap.
pub const MAX_REPLAY_PAGE: usize = 100;

/// "Send me at most `limit` finals with `seq > after`."
#[derive(Message, Debug, Clone)]
#[rtype(result = "ReplayPage")]
pub struct NextReplayPage {
    pub client: ClientId,
    pub after: i64,
    pub limit: usize,
}

/// The session's answer to [`NextReplayPage`].
#[derive(MessageResponse, Debug)]
pub enum ReplayPage {
    /// The next finals in `seq` order (possibly none, when finals that can never be read were
    /// skipped); the client has everything up to `through` once it has queued them.
    Finals { frames: Vec<Outbound>, through: i64 },
    /// The client has every final: the session now sends it finals live, after this answer.
    Live,
    /// The next finals are not readable yet (still on their way to the database, or the
    /// session's numbering is still loading): ask again shortly.
    NotYet,
    /// The database could not be read: ask again later.
    Unavailable,
}
