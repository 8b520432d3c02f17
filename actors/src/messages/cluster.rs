//! Cluster mode's contract (`REDIS_URL`, docs/ARCHITECTURE.md#cluster-mode): what a session
//! asks of the cluster and hears back from it.
//!
//! The actors never talk to Redis themselves: `src/cluster/` in the service crate answers
//! these messages (as `src/db/` answers the persistence ones), so the actor tree stays free of
//! a Redis client and tests can answer them in memory.
//!
//! One instance *owns* a session at a time: the one ingesting its audio, holding its lease
//! (a token with a fencing number). The owner numbers the session's finals and commits each
//! to the cluster before anyone sees it ([`CommitFinal`]); every other instance with clients
//! of the session *follows* it: it gets each message over the bus ([`BusFrame`]) and fills
//! any gap from the cluster's log of recent finals ([`ReadFinals`]), then the database.

use std::sync::Arc;

use actix::prelude::*;
use bytestring::ByteString;

use super::provider::ProviderResume;
use super::session::SessionInstance;

/// Why the cluster could not answer: Redis unreachable or too slow. The session carries on
/// alone (docs/ARCHITECTURE.md#cluster-mode, degradation).
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("cluster unavailable: {0}")]
pub struct ClusterUnavailable(pub String);

/// A session's lease: who owns it, with the fencing number that makes a later owner's token
/// different from every earlier one's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseToken(pub Arc<str>);

/// A session joins the cluster when it is created: it follows the bus and hears notices.
#[derive(Message)]
#[rtype(result = "()")]
pub struct JoinCluster {
    pub session_slug: String,
    pub instance: SessionInstance,
    /// The supervisor: lease lost, stop asked elsewhere, bus down or back.
    pub notices: Recipient<ClusterNotice>,
    /// The broadcaster: every frame another instance published for the session.
    pub bus: Recipient<BusFrame>,
}

/// The session retired: no more notices or frames for it, and its lease (if it holds it) is
/// released so another instance can take the session at once.
#[derive(Message)]
#[rtype(result = "()")]
pub struct LeaveCluster {
    pub session_slug: String,
    pub instance: SessionInstance,
    pub lease: Option<LeaseToken>,
}

/// Take the session's lease (a publisher arrived here): whoever held it loses it at once.
#[derive(Message)]
#[rtype(result = "Result<LeaseGrant, ClusterUnavailable>")]
pub struct TakeLease {
    pub session_slug: String,
}

#[derive(Debug, Clone)]
pub struct LeaseGrant {
    pub token: LeaseToken,
    /// The highest `seq` any owner committed for the session (0: none, or Redis lost it).
    pub committed_seq: i64,
    /// The provider session the previous owner left (see [`SaveProvider`]), read in the same
    /// step as the take: the new owner continues it rather than starting a fresh one.
    pub provider: Option<ProviderResume>,
}

/// The owner's provider session, for whoever takes the session over: written only while the
/// token holds the lease (a former owner's late write is fenced), expiring on its own a while
/// after the last write (a provider session without audio times out anyway). `None` removes
/// it: the provider session ended.
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct SaveProvider {
    pub session_slug: String,
    pub token: LeaseToken,
    pub resume: Option<ProviderResume>,
}

/// What the cluster tells a session.
#[derive(Message, Debug, Clone, PartialEq, Eq)]
#[rtype(result = "()")]
pub enum ClusterNotice {
    /// Another instance took the lease, or it could not be renewed: stop ingesting now.
    LeaseLost,
    /// A stop was asked on another instance (`DELETE …/transcription` there).
    StopAsked,
    /// The bus is unreachable: remote messages do not arrive until [`ClusterNotice::BusBack`].
    BusDown,
    /// The bus is back: fill what was missed.
    BusBack,
}

/// The owner's final, committed before anyone sees it: Redis checks the lease token, records
/// the `seq` as the session's highest, appends the final to the session's log and publishes
/// it, in one step.
#[derive(Message, Debug, Clone)]
#[rtype(result = "CommitOutcome")]
pub struct CommitFinal {
    pub session_slug: Arc<str>,
    pub token: LeaseToken,
    pub seq: i64,
    pub utterance_id: Arc<str>,
    /// The client frame, exactly as this instance's clients get it.
    pub frame: ByteString,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommitOutcome {
    /// In the log and on the bus: deliver it.
    Committed,
    /// Another instance owns the session (or numbered past this `seq`): never deliver it.
    Fenced,
    /// Redis did not answer: deliver it locally and save it; followers fill it from the
    /// database later.
    Unavailable,
}

/// A message for followers that needs no commit (a partial, a status): published as it is,
/// dropped when the bus is down or behind.
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct PublishFrame {
    pub session_slug: Arc<str>,
    pub kind: BusKind,
    /// The partial's utterance; empty for a status.
    pub utterance_id: Arc<str>,
    pub frame: ByteString,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BusKind {
    Final,
    Partial,
    Status,
}

impl BusKind {
    pub fn as_str(self) -> &'static str {
        match self {
            BusKind::Final => "final",
            BusKind::Partial => "partial",
            BusKind::Status => "status",
        }
    }
}

/// A frame another instance published for a session this instance follows.
#[derive(Message, Debug, Clone, PartialEq, Eq)]
#[rtype(result = "()")]
pub struct BusFrame {
    pub kind: BusKind,
    /// Finals only: 1..=2^53-1.
    pub seq: Option<i64>,
    pub utterance_id: Arc<str>,
    pub frame: ByteString,
}

/// Finals from the cluster's log of a session, `seq > after`, in order, at most `limit`.
/// An empty answer: the log has nothing after `after` (it may have lost older entries: the
/// caller then asks the database).
#[derive(Message, Debug, Clone)]
#[rtype(result = "Result<Vec<BusFrame>, ClusterUnavailable>")]
pub struct ReadFinals {
    pub session_slug: Arc<str>,
    pub after: i64,
    pub limit: usize,
}

/// Ask the session's owner, wherever it runs, to stop (a `DELETE` that arrived here).
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct AskStop {
    pub session_slug: String,
}

/// The owner's view of its session for the cluster's directory (`GET /api/sessions` on any
/// instance): the snapshot as JSON, never with its publish URL (a credential). Sent on every
/// state change; the cluster keeps the newest and refreshes it with the lease.
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct AnnounceSession {
    pub session_slug: String,
    pub snapshot: serde_json::Value,
}

/// The cluster endpoints a session needs, handed to every supervisor in cluster mode.
#[derive(Clone)]
pub struct ClusterLink {
    pub join: Recipient<JoinCluster>,
    pub leave: Recipient<LeaveCluster>,
    pub take_lease: Recipient<TakeLease>,
    pub commit_final: Recipient<CommitFinal>,
    pub publish: Recipient<PublishFrame>,
    pub read_finals: Recipient<ReadFinals>,
    pub ask_stop: Recipient<AskStop>,
    pub announce: Recipient<AnnounceSession>,
    pub save_provider: Recipient<SaveProvider>,
}
