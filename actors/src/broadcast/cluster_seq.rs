//! Cluster mode's numbering rules for one session's broadcaster (docs/ARCHITECTURE.md#cluster-mode).
//! Pure logic, no I/O: the `BroadcastActor` does what these say.
//!
//! The owner numbers a final and commits it to the cluster before anyone sees it; finals wait
//! in a [`CommitQueue`] while one is committed, so they are delivered in `seq` order and a
//! `seq` the cluster refused is never shown. A follower takes the owner's `seq` and judges each
//! final it hears with [`judge_remote`]: the next one is delivered, an old one ignored, and a
//! jump means it missed some, which it then reads from the cluster's log (or the database).

use std::collections::VecDeque;

/// What a follower does with a final numbered `seq` when it has every final up to `last`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Remote {
    /// Already delivered (or older): ignored.
    Duplicate,
    /// The next one: delivered now.
    Next,
    /// Finals between `last` and `seq` were missed: fill them first.
    Gap,
}

pub fn judge_remote(seq: i64, last: i64) -> Remote {
    if seq <= last {
        Remote::Duplicate
    } else if seq == last + 1 {
        Remote::Next
    } else {
        Remote::Gap
    }
}

/// The owner's numbered finals waiting for their commit, oldest first; the head may be in
/// flight. `T` is what the broadcaster keeps of each (its record and frame).
#[derive(Debug)]
pub struct CommitQueue<T> {
    waiting: VecDeque<(i64, T)>,
    in_flight: bool,
}

impl<T> Default for CommitQueue<T> {
    fn default() -> Self {
        CommitQueue {
            waiting: VecDeque::new(),
            in_flight: false,
        }
    }
}

impl<T> CommitQueue<T> {
    /// The `seq` the next final gets, given the last one delivered: finals waiting here
    /// already hold the numbers right after it.
    pub fn next_seq(&self, delivered: i64) -> i64 {
        self.waiting.back().map_or(delivered, |(seq, _)| *seq) + 1
    }

    pub fn push(&mut self, seq: i64, item: T) {
        self.waiting.push_back((seq, item));
    }

    /// The head, to commit now, unless one is already in flight or nothing waits.
    pub fn start_next(&mut self) -> Option<&(i64, T)> {
        if self.in_flight {
            return None;
        }
        let head = self.waiting.front()?;
        self.in_flight = true;
        Some(head)
    }

    /// The head's commit was answered: it leaves the queue (to be delivered, or not).
    pub fn finish_head(&mut self) -> Option<(i64, T)> {
        self.in_flight = false;
        self.waiting.pop_front()
    }

    /// Every waiting final, for a session that is no longer ours: none is delivered.
    pub fn abandon(&mut self) -> usize {
        let n = self.waiting.len();
        self.waiting.clear();
        self.in_flight = false;
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_follower_delivers_the_next_final_ignores_old_ones_and_fills_jumps() {
        assert_eq!(judge_remote(5, 4), Remote::Next);
        assert_eq!(judge_remote(4, 4), Remote::Duplicate);
        assert_eq!(judge_remote(1, 4), Remote::Duplicate);
        assert_eq!(judge_remote(7, 4), Remote::Gap);
    }

    #[test]
    fn finals_waiting_for_their_commit_hold_the_next_numbers_and_leave_in_order() {
        let mut queue = CommitQueue::default();
        assert_eq!(queue.next_seq(10), 11);
        queue.push(11, "a");
        queue.push(queue.next_seq(10), "b");
        assert_eq!(queue.next_seq(10), 13);
        assert_eq!(queue.start_next().map(|(s, _)| *s), Some(11));
        assert!(
            queue.start_next().is_none(),
            "one commit in flight at a time"
        );
        assert_eq!(queue.finish_head(), Some((11, "a")));
        assert_eq!(queue.start_next().map(|(s, _)| *s), Some(12));
        assert_eq!(queue.abandon(), 1);
        assert!(queue.start_next().is_none());
        assert_eq!(queue.next_seq(12), 13);
    }
}
