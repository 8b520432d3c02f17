//! A resuming client's side of the paged replay (docs/PROTOCOL.md#resume-and-delivery-guarantees):
//! when to ask its session for the next page of missed finals, and what an answer means. Pure
//! logic, no I/O, time passed in: the `ClientActor` sends what a [`Step`] says and acts on an
//! [`Answer`].
//!
//! Why pulled and not pushed: a client far behind (thousands of finals) would otherwise get its
//! whole backlog in its outbox at once and be cut off as a slow consumer
//! (`CLIENT_MAX_QUEUED_FINALS`) before it could read any of it. Asking for one page only when
//! the outbox has room for it keeps the outbox, whatever the backlog, within its cap, and the
//! client's memory within the cap plus one page.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::messages::{ReplayPage, MAX_REPLAY_PAGE};
use crate::outbox::Outbound;

/// How long to wait before asking again for finals still on their way to the database (the
/// batcher writes them within `TRANSCRIPT_BATCH_DELAY_MS`, or as soon as the database is back).
pub const NOT_STORED_RETRY: Duration = Duration::from_millis(100);
/// After a failed database read: the first retry, doubled on each failure in a row up to
/// [`UNAVAILABLE_RETRY_MAX`].
pub const UNAVAILABLE_RETRY: Duration = Duration::from_secs(1);
pub const UNAVAILABLE_RETRY_MAX: Duration = Duration::from_secs(10);

/// Finals asked for per page: half the outbox, so the next page can be fetched while the
/// previous one is written, and at most [`MAX_REPLAY_PAGE`].
pub fn page_size(max_queued: usize) -> usize {
    (max_queued / 2).clamp(1, MAX_REPLAY_PAGE)
}

/// One session's catch-up on one client: from subscribing with `lastSeq` until a page finds
/// nothing left (then the session sends it finals live and this is dropped).
#[derive(Debug)]
pub struct CatchUp {
    /// Every final of the session up to this `seq` is in the outbox, written, or in `held`.
    after: i64,
    page: usize,
    /// Finals of the last page that did not fit the outbox yet (control frames took room while
    /// the page was on its way). At most one page; no new page is asked for until it is empty.
    held: VecDeque<Outbound>,
    /// Failed database reads in a row.
    failures: u32,
    phase: Phase,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// No request out: one goes once the outbox has room for a page.
    Idle,
    /// A request is out.
    Asking,
    /// The last answer said "not yet": ask again from `at`.
    Waiting { at: Instant },
}

/// What the client does now.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Ask the session for at most `limit` finals with `seq > after`.
    Ask { after: i64, limit: usize },
    /// Nothing until the outbox drains, an answer comes, or the wait is over.
    Wait,
}

/// What an answer means for the client.
#[derive(Debug, PartialEq, Eq)]
pub enum Answer {
    /// Finals to queue ([`CatchUp::take_held`]); then ask again.
    Paged,
    /// The client has every final: the session sends finals live from now on.
    Live,
    /// Ask again in `retry_in`. `tell`: the first database failure of a run, which the client
    /// is told about (`replay_unavailable`); nothing is skipped meanwhile.
    Retry { retry_in: Duration, tell: bool },
}

impl CatchUp {
    /// A client that has every final up to `after`, with an outbox of `max_queued`.
    pub fn new(after: i64, max_queued: usize) -> Self {
        CatchUp {
            after,
            page: page_size(max_queued),
            held: VecDeque::new(),
            failures: 0,
            phase: Phase::Idle,
        }
    }

    /// The held finals that fit in `room`, oldest first, to queue now.
    pub fn take_held(&mut self, room: usize) -> Vec<Outbound> {
        let n = room.min(self.held.len());
        self.held.drain(..n).collect()
    }

    /// What to do now that the outbox has `room` for more finals and control frames.
    pub fn step(&mut self, room: usize, now: Instant) -> Step {
        match self.phase {
            Phase::Asking => return Step::Wait,
            Phase::Waiting { at } if now < at => return Step::Wait,
            Phase::Idle | Phase::Waiting { .. } => {}
        }
        if !self.held.is_empty() || room < self.page {
            return Step::Wait;
        }
        self.phase = Phase::Asking;
        Step::Ask {
            after: self.after,
            limit: self.page,
        }
    }

    /// The session answered the request [`CatchUp::step`] made, at `now`.
    pub fn answered(&mut self, page: ReplayPage, now: Instant) -> Answer {
        match page {
            ReplayPage::Finals { frames, through } => {
                self.failures = 0;
                self.phase = Phase::Idle;
                // Never backwards: an answer cannot make the client ask for finals it has.
                self.after = self.after.max(through);
                self.held.extend(frames);
                Answer::Paged
            }
            ReplayPage::Live => Answer::Live,
            ReplayPage::NotYet => self.retry(NOT_STORED_RETRY, false, now),
            ReplayPage::Unavailable => {
                self.failures = self.failures.saturating_add(1);
                let doublings = self.failures.saturating_sub(1).min(8);
                let delay = UNAVAILABLE_RETRY
                    .saturating_mul(1 << doublings)
                    .min(UNAVAILABLE_RETRY_MAX);
                self.retry(delay, self.failures == 1, now)
            }
        }
    }

    fn retry(&mut self, retry_in: Duration, tell: bool, now: Instant) -> Answer {
        self.phase = Phase::Waiting { at: now + retry_in };
        Answer::Retry { retry_in, tell }
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
            frame: format!("F{seq}").into(),
        }
    }

    fn page(seqs: std::ops::RangeInclusive<i64>) -> ReplayPage {
        let through = *seqs.end();
        ReplayPage::Finals {
            frames: seqs.map(final_).collect(),
            through,
        }
    }

    fn seqs(frames: &[Outbound]) -> Vec<i64> {
        frames
            .iter()
            .filter_map(|o| match o {
                Outbound::Final { seq, .. } => Some(*seq),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_page_is_half_the_outbox_within_bounds() {
        assert_eq!(page_size(1), 1);
        assert_eq!(page_size(3), 1);
        assert_eq!(page_size(200), 100);
        assert_eq!(page_size(1_000_000), MAX_REPLAY_PAGE);
    }

    #[test]
    fn it_asks_only_with_room_for_a_page_and_one_request_at_a_time() {
        let now = Instant::now();
        let mut c = CatchUp::new(7, 200);
        assert_eq!(c.step(99, now), Step::Wait, "no room for a page");
        assert_eq!(
            c.step(100, now),
            Step::Ask {
                after: 7,
                limit: 100
            }
        );
        assert_eq!(c.step(200, now), Step::Wait, "one request at a time");
        assert_eq!(c.answered(page(8..=107), now), Answer::Paged);
        assert_eq!(c.step(100, now), Step::Wait, "the page is not queued yet");
        assert_eq!(seqs(&c.take_held(100)), (8..=107).collect::<Vec<_>>());
        assert_eq!(
            c.step(100, now),
            Step::Ask {
                after: 107,
                limit: 100
            }
        );
        assert_eq!(c.answered(ReplayPage::Live, now), Answer::Live);
    }

    #[test]
    fn a_page_that_does_not_fit_waits_in_order_and_holds_back_the_next_request() {
        let now = Instant::now();
        let mut c = CatchUp::new(0, 4);
        assert_eq!(c.step(2, now), Step::Ask { after: 0, limit: 2 });
        c.answered(page(1..=2), now);
        // A status frame took a place meanwhile: one fits now, one later.
        assert_eq!(seqs(&c.take_held(1)), vec![1]);
        assert_eq!(c.step(1, now), Step::Wait);
        assert_eq!(seqs(&c.take_held(3)), vec![2]);
        assert_eq!(c.step(2, now), Step::Ask { after: 2, limit: 2 });
    }

    #[test]
    fn finals_not_stored_yet_are_asked_for_again_shortly_without_skipping() {
        let now = Instant::now();
        let mut c = CatchUp::new(5, 200);
        c.step(200, now);
        assert_eq!(
            c.answered(ReplayPage::NotYet, now),
            Answer::Retry {
                retry_in: NOT_STORED_RETRY,
                tell: false
            }
        );
        assert_eq!(c.step(200, now), Step::Wait, "too early");
        assert_eq!(
            c.step(200, now + NOT_STORED_RETRY),
            Step::Ask {
                after: 5,
                limit: 100
            }
        );
    }

    #[test]
    fn database_failures_back_off_and_are_told_once_per_run() {
        let mut now = Instant::now();
        let mut c = CatchUp::new(5, 200);
        let mut delays = Vec::new();
        for _ in 0..6 {
            assert!(matches!(c.step(200, now), Step::Ask { after: 5, .. }));
            match c.answered(ReplayPage::Unavailable, now) {
                Answer::Retry { retry_in, tell } => {
                    delays.push((retry_in.as_secs(), tell));
                    now += retry_in;
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(
            delays,
            [
                (1, true),
                (2, false),
                (4, false),
                (8, false),
                (10, false),
                (10, false)
            ]
        );
        // A page read resets the run: the next failure is told again.
        c.step(200, now);
        c.answered(page(6..=6), now);
        c.take_held(10);
        c.step(200, now);
        assert_eq!(
            c.answered(ReplayPage::Unavailable, now),
            Answer::Retry {
                retry_in: UNAVAILABLE_RETRY,
                tell: true
            }
        );
    }

    #[test]
    fn skipped_finals_move_the_cursor_and_an_answer_never_moves_it_back() {
        let now = Instant::now();
        let mut c = CatchUp::new(5, 200);
        c.step(200, now);
        let skip = ReplayPage::Finals {
            frames: Vec::new(),
            through: 10,
        };
        assert_eq!(c.answered(skip, now), Answer::Paged);
        assert!(matches!(c.step(200, now), Step::Ask { after: 10, .. }));
        let stale = ReplayPage::Finals {
            frames: Vec::new(),
            through: 3,
        };
        c.answered(stale, now);
        assert!(matches!(c.step(200, now), Step::Ask { after: 10, .. }));
    }
}
