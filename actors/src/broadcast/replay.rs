//! The finals a session keeps in memory for clients that resume, and what a resuming client
//! needs (docs/PROTOCOL.md#resume-and-delivery-guarantees). Pure logic, no I/O: the
//! `BroadcastActor` does what the [`ReplayPlan`] says.

use std::collections::VecDeque;

use crate::outbox::Outbound;

/// Recent finals kept in memory for replay; older ones are read from the database.
pub const REPLAY_RING: usize = 2000;

/// The most recent finals of a session, already serialised, oldest first.
#[derive(Debug, Default)]
pub struct ReplayRing {
    finals: VecDeque<(i64, Outbound)>,
}

/// What a client that already has every final up to `after` must be sent before it is live.
#[derive(Debug)]
pub enum ReplayPlan {
    /// It missed nothing: it is live at once.
    Nothing,
    /// Memory holds everything it missed: these, in order.
    FromMemory(Vec<Outbound>),
    /// The oldest missing finals are only in the database: those with `after < seq <
    /// memory_start` (at most `limit` of them), then `then` from memory, then whatever
    /// arrived live meanwhile.
    FromDatabase {
        after: i64,
        memory_start: i64,
        limit: i64,
        then: Vec<Outbound>,
    },
}

impl ReplayRing {
    /// Keeps a final just delivered; the oldest leaves beyond [`REPLAY_RING`].
    pub fn push(&mut self, seq: i64, outbound: Outbound) {
        self.finals.push_back((seq, outbound));
        if self.finals.len() > REPLAY_RING {
            self.finals.pop_front();
        }
    }

    /// The replay for a client resuming with `last_seq` when the session's last `seq` is
    /// `upto`. `seq` starts at 1, so a negative `lastSeq` asks for everything, like 0;
    /// clamped, it cannot overflow the arithmetic below (`i64::MIN` once panicked here).
    pub fn plan(&self, last_seq: Option<i64>, upto: i64) -> ReplayPlan {
        let Some(after) = last_seq.map(|n| n.max(0)).filter(|n| *n < upto) else {
            return ReplayPlan::Nothing;
        };
        let from_memory: Vec<Outbound> = self
            .finals
            .iter()
            .filter(|(seq, _)| *seq > after)
            .map(|(_, o)| o.clone())
            .collect();
        let memory_start = self.finals.front().map_or(upto + 1, |(seq, _)| *seq);
        if memory_start <= after + 1 {
            return ReplayPlan::FromMemory(from_memory);
        }
        ReplayPlan::FromDatabase {
            after,
            memory_start,
            limit: memory_start - 1 - after,
            then: from_memory,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn final_(seq: i64) -> Outbound {
        Outbound::Final {
            session: "s".into(),
            seq,
            utterance_id: format!("u{seq}").into(),
            frame: format!("{{\"seq\":{seq}}}").into(),
        }
    }

    fn seqs(finals: &[Outbound]) -> Vec<i64> {
        finals
            .iter()
            .map(|o| match o {
                Outbound::Final { seq, .. } => *seq,
                _ => -1,
            })
            .collect()
    }

    fn ring(seqs: std::ops::RangeInclusive<i64>) -> ReplayRing {
        let mut ring = ReplayRing::default();
        for seq in seqs {
            ring.push(seq, final_(seq));
        }
        ring
    }

    #[test]
    fn a_client_up_to_date_or_new_needs_nothing() {
        let ring = ring(1..=5);
        for last_seq in [None, Some(5), Some(9)] {
            assert!(
                matches!(ring.plan(last_seq, 5), ReplayPlan::Nothing),
                "{last_seq:?}"
            );
        }
    }

    #[test]
    fn what_memory_holds_comes_from_memory_in_order() {
        let ring = ring(1..=5);
        match ring.plan(Some(2), 5) {
            ReplayPlan::FromMemory(finals) => assert_eq!(seqs(&finals), vec![3, 4, 5]),
            other => panic!("{other:?}"),
        }
        for last_seq in [0, -1, i64::MIN] {
            match ring.plan(Some(last_seq), 5) {
                ReplayPlan::FromMemory(finals) => assert_eq!(seqs(&finals), vec![1, 2, 3, 4, 5]),
                other => panic!("{last_seq}: {other:?}"),
            }
        }
    }

    /// `(after, memory_start, limit, seqs from memory)` of a database plan.
    fn from_database(plan: ReplayPlan) -> (i64, i64, i64, Vec<i64>) {
        match plan {
            ReplayPlan::FromDatabase {
                after,
                memory_start,
                limit,
                then,
            } => (after, memory_start, limit, seqs(&then)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn older_finals_come_from_the_database_then_memory() {
        let last = REPLAY_RING as i64 + 10;
        let (after, memory_start, limit, then) = from_database(ring(1..=last).plan(Some(3), last));
        assert_eq!((after, memory_start, limit), (3, 11, 7));
        assert_eq!(then, (11..=last).collect::<Vec<_>>());
        // A session restarted with nothing in memory reads everything from the database.
        let (after, memory_start, limit, then) =
            from_database(ReplayRing::default().plan(Some(i64::MIN), 40));
        assert_eq!((after, memory_start, limit), (0, 41, 40));
        assert!(then.is_empty());
    }
}
