//! A client's queue of frames: where "finals before partials" and "only the newest partial
//! per utterance" are decided (docs/PROTOCOL.md#resume-and-delivery-guarantees). Pure logic, no I/O, so it can be tested exhaustively.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

use bytestring::ByteString;

/// One frame for a client, already serialised once for all clients by the broadcaster.
#[derive(Debug, Clone)]
pub enum Outbound {
    Final {
        /// Which session's numbering `seq` belongs to (a client may follow several).
        session: Arc<str>,
        seq: i64,
        utterance_id: Arc<str>,
        frame: ByteString,
    },
    Partial {
        utterance_id: Arc<str>,
        frame: ByteString,
    },
    /// Status, replies and errors: never dropped, sent in order with the finals.
    Control(ByteString),
    /// The service is shutting down: once everything delivered before this is written, the
    /// client closes with 1001. Carries no frame; the `ClientActor` acts on it.
    Goodbye,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Pushed {
    Queued,
    /// An older partial of the same utterance was replaced, or the partial came after its final.
    PartialDropped,
    /// The client has the allowed number of finals and control frames (replies, errors,
    /// statuses) waiting already: it must be disconnected. Replies count too, so a client that
    /// sends commands and never reads cannot grow its queue.
    TooManyQueued,
    /// A final this client already has (replay overlapping live delivery): sent once only.
    DuplicateFinal,
}

/// How many finalized utterance ids to remember, to refuse a late partial of each. The
/// broadcaster already refuses partials of finalized utterances for the whole session
/// (`actors/src/broadcast/mod.rs`, 4096 ids), and a client's frames reach its outbox in the
/// order the broadcaster sent them, so this guards only the last few utterances. It is per
/// client: at 4096 a long meeting made every viewer hold ~300 KB of ids (the one-hour soak,
/// docs/PERFORMANCE.md#soak), against ~17 KB for the rest of an idle client.
const FINALIZED_MEMORY: usize = 128;

#[derive(Debug)]
pub struct Outbox {
    /// Finals (in seq order) and control frames, FIFO; at most `max_queued` of them.
    reliable: VecDeque<ByteString>,
    max_queued: usize,
    /// At most one partial per utterance, oldest utterance first.
    partials: VecDeque<(Arc<str>, ByteString)>,
    finalized: HashSet<Arc<str>>,
    finalized_order: VecDeque<Arc<str>>,
    /// Highest final `seq` queued per session: finals are exactly-once and in order.
    last_final_seq: HashMap<Arc<str>, i64>,
}

impl Outbox {
    /// `max_queued`: `CLIENT_MAX_QUEUED_FINALS`, the finals and control frames one client may
    /// have waiting.
    pub fn new(max_queued: usize) -> Self {
        Outbox {
            reliable: VecDeque::new(),
            max_queued,
            partials: VecDeque::new(),
            finalized: HashSet::new(),
            finalized_order: VecDeque::new(),
            last_final_seq: HashMap::new(),
        }
    }

    pub fn push(&mut self, outbound: Outbound) -> Pushed {
        match outbound {
            Outbound::Goodbye => Pushed::Queued,
            Outbound::Control(frame) => {
                if self.reliable.len() >= self.max_queued {
                    return Pushed::TooManyQueued;
                }
                self.reliable.push_back(frame);
                Pushed::Queued
            }
            Outbound::Final {
                session,
                seq,
                utterance_id,
                frame,
            } => {
                if self
                    .last_final_seq
                    .get(&session)
                    .is_some_and(|last| seq <= *last)
                {
                    return Pushed::DuplicateFinal;
                }
                if self.reliable.len() >= self.max_queued {
                    return Pushed::TooManyQueued;
                }
                self.last_final_seq.insert(session, seq);
                // The final supersedes any pending partial of its utterance.
                self.partials.retain(|(id, _)| *id != utterance_id);
                self.remember_final(utterance_id);
                self.reliable.push_back(frame);
                Pushed::Queued
            }
            Outbound::Partial {
                utterance_id,
                frame,
            } => {
                if self.finalized.contains(&utterance_id) {
                    return Pushed::PartialDropped;
                }
                if let Some(slot) = self.partials.iter_mut().find(|(id, _)| *id == utterance_id) {
                    slot.1 = frame;
                    return Pushed::PartialDropped;
                }
                self.partials.push_back((utterance_id, frame));
                Pushed::Queued
            }
        }
    }

    /// The next frame to write: finals and control first, then partials.
    pub fn pop(&mut self) -> Option<ByteString> {
        if let Some(frame) = self.reliable.pop_front() {
            return Some(frame);
        }
        self.partials.pop_front().map(|(_, frame)| frame)
    }

    /// How many more finals and control frames may be queued before the cap.
    pub fn room(&self) -> usize {
        self.max_queued.saturating_sub(self.reliable.len())
    }

    pub fn len(&self) -> usize {
        self.reliable.len() + self.partials.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn remember_final(&mut self, utterance_id: Arc<str>) {
        if self.finalized.insert(utterance_id.clone()) {
            self.finalized_order.push_back(utterance_id);
            if self.finalized_order.len() > FINALIZED_MEMORY {
                if let Some(old) = self.finalized_order.pop_front() {
                    self.finalized.remove(&old);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn partial(u: &str, text: &str) -> Outbound {
        Outbound::Partial {
            utterance_id: u.into(),
            frame: text.to_owned().into(),
        }
    }
    fn final_(seq: i64, u: &str) -> Outbound {
        Outbound::Final {
            session: "s".into(),
            seq,
            utterance_id: u.into(),
            frame: format!("F{seq}").into(),
        }
    }

    #[test]
    fn finals_go_before_partials_and_replace_their_partial() {
        let mut o = Outbox::new(10);
        o.push(partial("a", "a1"));
        o.push(partial("b", "b1"));
        assert_eq!(o.push(partial("a", "a2")), Pushed::PartialDropped);
        o.push(final_(1, "a"));
        assert_eq!(o.pop().as_deref(), Some("F1"));
        assert_eq!(o.pop().as_deref(), Some("b1"));
        assert_eq!(o.pop(), None);
        assert_eq!(
            o.push(partial("a", "a3")),
            Pushed::PartialDropped,
            "no partial after its final"
        );
    }

    #[test]
    fn the_finalized_memory_is_bounded_and_keeps_the_recent_utterances() {
        let mut o = Outbox::new(10);
        for seq in 1..=1000 {
            o.push(final_(seq, &format!("u{seq}")));
            o.pop();
        }
        assert_eq!(o.finalized.len(), FINALIZED_MEMORY);
        assert_eq!(o.finalized_order.len(), FINALIZED_MEMORY);
        assert_eq!(o.push(partial("u1000", "late")), Pushed::PartialDropped);
        let oldest_kept = 1000 - FINALIZED_MEMORY as i64 + 1;
        assert_eq!(
            o.push(partial(&format!("u{oldest_kept}"), "late")),
            Pushed::PartialDropped
        );
        // Long forgotten: the broadcaster's session-wide memory is what refuses it.
        assert_eq!(o.push(partial("u1", "late")), Pushed::Queued);
    }

    #[test]
    fn too_many_finals_is_reported() {
        let mut o = Outbox::new(2);
        assert_eq!(o.push(final_(1, "a")), Pushed::Queued);
        assert_eq!(o.push(final_(2, "b")), Pushed::Queued);
        assert_eq!(o.push(final_(3, "c")), Pushed::TooManyQueued);
        assert_eq!(o.room(), 0);
        o.pop();
        assert_eq!(o.room(), 1);
        assert_eq!(o.push(final_(3, "c")), Pushed::Queued);
    }

    #[test]
    fn replies_count_toward_the_cap() {
        let mut o = Outbox::new(3);
        assert_eq!(o.push(final_(1, "a")), Pushed::Queued);
        for _ in 0..2 {
            assert_eq!(o.push(Outbound::Control("{}".into())), Pushed::Queued);
        }
        assert_eq!(
            o.push(Outbound::Control("{}".into())),
            Pushed::TooManyQueued
        );
        assert_eq!(o.push(final_(2, "b")), Pushed::TooManyQueued);
        // Partials are bounded by utterance instead, and still replace each other.
        assert_eq!(o.push(partial("c", "x")), Pushed::Queued);
        o.pop();
        assert_eq!(o.push(Outbound::Control("{}".into())), Pushed::Queued);
    }

    #[test]
    fn a_final_is_queued_once() {
        let mut o = Outbox::new(10);
        assert_eq!(o.push(final_(1, "a")), Pushed::Queued);
        assert_eq!(o.push(final_(1, "a")), Pushed::DuplicateFinal);
        assert_eq!(o.push(final_(2, "b")), Pushed::Queued);
        assert_eq!(o.push(final_(1, "a")), Pushed::DuplicateFinal);
        assert_eq!(o.pop().as_deref(), Some("F1"));
        assert_eq!(o.pop().as_deref(), Some("F2"));
        assert_eq!(o.pop(), None);
    }
}
