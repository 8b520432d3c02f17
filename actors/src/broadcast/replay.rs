//! The finals a session keeps in memory for clients that resume, and where the next page of a
//! resuming client comes from (docs/PROTOCOL.md#resume-and-delivery-guarantees). Pure logic,
//! no I/O: the `BroadcastActor` does what a [`PagePlan`] says and judges what the database
//! answered with [`judge_stored`].
//!
//! A resume is paged: a client asks for at most `limit` finals after the last one it has, only
//! when its outbox has room, so a backlog of any length is delivered without ever being held
//! whole in memory. Three places hold a session's finals, newest last:
//!
//! ```text
//!   database (written in arrival order)  │ batcher queue / spill (not yet written) │ ring
//!   seq ≤ Y                              │ Y < seq ≤ floor                          │ floor < seq ≤ head
//! ```
//!
//! The ring holds *every* final after its `floor` (the newest final it evicted, or the stored
//! last `seq` when the session started), so a page after `floor` comes from memory whatever
//! gaps `seq` has (relayed finals may skip numbers). A page at or before `floor` comes from the
//! database; the finals between `Y` and `floor` are still on their way there, and the page
//! waits for them (`NotStoredYet`) rather than skipping them.

use std::collections::VecDeque;

use crate::messages::MAX_REPLAY_PAGE;
use crate::outbox::Outbound;
use crate::persistence::FinalRecord;

/// Recent finals kept in memory for replay; older ones are read from the database.
pub const REPLAY_RING: usize = 2000;

/// The most recent finals of a session, already serialised, oldest first.
#[derive(Debug)]
pub struct ReplayRing {
    /// Every final with `seq > floor` is in `finals`; none at or below it is.
    floor: i64,
    finals: VecDeque<(i64, Outbound)>,
}

/// Where the next page of a resuming client that has every final up to `after` comes from.
#[derive(Debug)]
pub enum PagePlan {
    /// It has every final there is: from now on it gets finals live.
    CaughtUp,
    /// Memory holds the next finals: these, in order (at least one, at most `limit`);
    /// `through` is the `seq` of the last one.
    Memory { frames: Vec<Outbound>, through: i64 },
    /// The next finals are older than memory: read at most `limit` stored finals with
    /// `seq > after`, and judge the answer with [`judge_stored`] against `floor`.
    Database {
        after: i64,
        floor: i64,
        limit: usize,
    },
}

/// What a database read of a [`PagePlan::Database`] yields.
#[derive(Debug, PartialEq)]
pub enum StoredPage {
    /// The next finals (at least one, in `seq` order, all at or below the floor).
    Finals(Vec<FinalRecord>),
    /// Nothing after `after` is stored yet, though the final at the floor exists: the finals
    /// in between are still in the batcher's queue (or spill file). Ask again shortly.
    NotStoredYet,
    /// Nothing between `after` and the floor is stored, yet later finals are: the database is
    /// written in arrival order, so those finals were refused by it or lost for good (logged
    /// and counted by the batcher). The page skips to `through`, the floor.
    Lost { through: i64 },
}

impl ReplayRing {
    /// An empty ring for a session whose stored finals end at `stored_last_seq`: everything up
    /// to it is only in the database.
    pub fn after(stored_last_seq: i64) -> Self {
        ReplayRing {
            floor: stored_last_seq,
            finals: VecDeque::new(),
        }
    }

    /// Keeps a final just delivered; the oldest leaves beyond [`REPLAY_RING`] and becomes the
    /// floor.
    pub fn push(&mut self, seq: i64, outbound: Outbound) {
        self.finals.push_back((seq, outbound));
        if self.finals.len() > REPLAY_RING {
            if let Some((evicted, _)) = self.finals.pop_front() {
                self.floor = evicted;
            }
        }
    }

    /// The next page for a client that has every final up to `after`, when the session's last
    /// `seq` is `head`. Only comparisons on `after` (no arithmetic), so any `i64` is safe; the
    /// routes refuse a negative `lastSeq` before it gets here.
    pub fn page(&self, after: i64, head: i64, limit: usize) -> PagePlan {
        // The client says how much room it has; the session bounds what one page may cost.
        let limit = limit.clamp(1, MAX_REPLAY_PAGE);
        if after >= head {
            return PagePlan::CaughtUp;
        }
        if after < self.floor {
            return PagePlan::Database {
                after,
                floor: self.floor,
                limit,
            };
        }
        // Sorted by seq: skip what the client has without walking it.
        let start = self.finals.partition_point(|(seq, _)| *seq <= after);
        let page = self.finals.range(start..).take(limit);
        let through = page.clone().last().map(|(seq, _)| *seq);
        let Some(through) = through else {
            // `head` is always the ring's newest final, so this means `head` was not pushed:
            // nothing to send, and nothing will be lost by going live.
            return PagePlan::CaughtUp;
        };
        PagePlan::Memory {
            frames: page.map(|(_, o)| o.clone()).collect(),
            through,
        }
    }
}

/// Judges the answer to a [`PagePlan::Database`] read: stored finals with `seq > after`, in
/// `seq` order, as the storage returns them.
pub fn judge_stored(after: i64, floor: i64, mut records: Vec<FinalRecord>) -> StoredPage {
    // The storage promises seq order; a page out of order would break the client's order.
    records.sort_by_key(|r| r.seq);
    let beyond_floor = records.last().is_some_and(|r| r.seq > floor);
    records.retain(|r| r.seq > after && r.seq <= floor);
    if !records.is_empty() {
        return StoredPage::Finals(records);
    }
    if beyond_floor {
        return StoredPage::Lost { through: floor };
    }
    StoredPage::NotStoredYet
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

    fn record(seq: i64) -> FinalRecord {
        FinalRecord {
            session_slug: "s".into(),
            seq,
            utterance_id: format!("u{seq}"),
            text: "t".into(),
            speaker: "room".into(),
            speaker_id: "room".into(),
            started_at_ms: 0,
            ended_at_ms: 0,
            language: None,
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

    fn ring(stored: i64, seqs: impl IntoIterator<Item = i64>) -> ReplayRing {
        let mut ring = ReplayRing::after(stored);
        for seq in seqs {
            ring.push(seq, final_(seq));
        }
        ring
    }

    fn memory(plan: PagePlan) -> Vec<i64> {
        match plan {
            PagePlan::Memory { frames, through } => {
                let seqs = seqs(&frames);
                assert_eq!(seqs.last(), Some(&through));
                seqs
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_client_up_to_date_is_caught_up() {
        let ring = ring(0, 1..=5);
        for after in [5, 9, i64::MAX] {
            assert!(
                matches!(ring.page(after, 5, 100), PagePlan::CaughtUp),
                "{after}"
            );
        }
        // A session with nothing yet: every client is caught up.
        assert!(matches!(
            ReplayRing::after(0).page(0, 0, 100),
            PagePlan::CaughtUp
        ));
    }

    #[test]
    fn memory_pages_are_in_order_and_at_most_the_limit() {
        let five = ring(0, 1..=5);
        assert_eq!(memory(five.page(0, 5, 2)), vec![1, 2]);
        assert_eq!(memory(five.page(2, 5, 2)), vec![3, 4]);
        assert_eq!(memory(five.page(4, 5, 2)), vec![5]);
        // A limit of 0 would never make progress: it is one. A huge one is one page.
        assert_eq!(memory(five.page(0, 5, 0)), vec![1]);
        let many = ring(0, 1..=500);
        assert_eq!(memory(many.page(0, 500, usize::MAX)).len(), MAX_REPLAY_PAGE);
    }

    #[test]
    fn gaps_in_seq_inside_memory_are_skipped_not_waited_for() {
        // Relayed finals may skip numbers (the sender dropped some).
        let ring = ring(0, [1, 2, 7, 8]);
        assert_eq!(memory(ring.page(2, 8, 10)), vec![7, 8]);
        assert_eq!(memory(ring.page(4, 8, 10)), vec![7, 8]);
    }

    #[test]
    fn finals_older_than_memory_come_from_the_database() {
        let last = REPLAY_RING as i64 + 10;
        let ring = ring(0, 1..=last);
        // The first ten were evicted: the floor is 10.
        match ring.page(3, last, 100) {
            PagePlan::Database {
                after,
                floor,
                limit,
            } => assert_eq!((after, floor, limit), (3, 10, 100)),
            other => panic!("{other:?}"),
        }
        // At the floor, memory takes over.
        assert_eq!(memory(ring.page(10, last, 3)), vec![11, 12, 13]);
        // A restarted session has nothing in memory: all of it is in the database.
        match ReplayRing::after(40).page(0, 40, 100) {
            PagePlan::Database { after, floor, .. } => assert_eq!((after, floor), (0, 40)),
            other => panic!("{other:?}"),
        }
        // ... and what came after the restart is in memory.
        assert_eq!(memory(ring_after_restart().page(40, 42, 100)), vec![41, 42]);
    }

    fn ring_after_restart() -> ReplayRing {
        ring(40, [41, 42])
    }

    #[test]
    fn a_stored_page_keeps_what_lies_between_the_client_and_the_floor() {
        let page = judge_stored(3, 10, (4..=12).map(record).collect());
        assert_eq!(page, StoredPage::Finals((4..=10).map(record).collect()));
        // Out of order from the storage: still in order to the client.
        let page = judge_stored(0, 10, vec![record(3), record(1), record(2)]);
        assert_eq!(
            page,
            StoredPage::Finals(vec![record(1), record(2), record(3)])
        );
    }

    #[test]
    fn finals_still_on_their_way_to_the_database_are_waited_for() {
        // The database has up to 5, memory starts after 10: 6..=10 are in the batcher's queue.
        assert_eq!(judge_stored(5, 10, vec![]), StoredPage::NotStoredYet);
        // Finals at or below `after` (a storage ignoring the bound) do not count as progress.
        assert_eq!(
            judge_stored(5, 10, vec![record(4), record(5)]),
            StoredPage::NotStoredYet
        );
    }

    #[test]
    fn finals_the_database_will_never_have_are_skipped_to_the_floor() {
        // 6..=10 are missing, yet 11 is stored: the database is written in order, so they are
        // lost for good. Waiting would stall the client forever.
        assert_eq!(
            judge_stored(5, 10, vec![record(11), record(12)]),
            StoredPage::Lost { through: 10 }
        );
    }

    /// A whole resume driven through the plan, as the broadcaster and the client do it: the
    /// database holds `1..=stored`, the batcher the rest up to the floor, the ring after it.
    #[test]
    fn paging_from_the_database_then_memory_yields_every_final_once_in_order() {
        let head = REPLAY_RING as i64 + 750;
        let ring = ring(0, 1..=head);
        let mut stored = 700;
        let mut after = 0;
        let mut got = Vec::new();
        let mut waits = 0;
        loop {
            match ring.page(after, head, 100) {
                PagePlan::CaughtUp => break,
                PagePlan::Memory { frames, through } => {
                    got.extend(seqs(&frames));
                    after = through;
                }
                PagePlan::Database {
                    after: from,
                    floor,
                    limit,
                } => {
                    let records = (from + 1..=stored).take(limit).map(record).collect();
                    match judge_stored(from, floor, records) {
                        StoredPage::Finals(records) => {
                            after = records.last().unwrap().seq;
                            got.extend(records.iter().map(|r| r.seq));
                        }
                        StoredPage::NotStoredYet => {
                            // The batcher writes the next batch meanwhile.
                            waits += 1;
                            stored += 50;
                        }
                        StoredPage::Lost { .. } => panic!("nothing was lost"),
                    }
                }
            }
        }
        assert_eq!(got, (1..=head).collect::<Vec<_>>());
        assert!(waits > 0, "the batcher's gap was never met");
    }
}
