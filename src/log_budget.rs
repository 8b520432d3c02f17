//! Rate-limited logging for refusals (docs/PROTOCOL.md#logs): anyone can make the service refuse
//! something as fast as they can send, and each refusal's log line would cost disk and bury
//! the lines that matter. A [`LogBudget`] lets a few lines per second through and counts the
//! rest, which the next line that gets through reports.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How many lines of one kind a second may have.
const WINDOW: Duration = Duration::from_secs(1);

/// Whether to write this line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Budget {
    /// Write it, with how many lines of its kind were left out before it.
    Log { suppressed: u64 },
    /// Leave it out (counted).
    Suppress,
}

#[derive(Debug, Default)]
struct Window {
    started: Option<Instant>,
    used: u32,
    suppressed: u64,
}

/// One kind of refusal's budget; a `static` per call site.
#[derive(Debug)]
pub struct LogBudget {
    per_window: u32,
    window: Mutex<Window>,
}

impl LogBudget {
    pub const fn new(per_second: u32) -> LogBudget {
        LogBudget {
            per_window: per_second,
            window: Mutex::new(Window {
                started: None,
                used: 0,
                suppressed: 0,
            }),
        }
    }

    /// Takes one line from the budget at `now`.
    pub fn take(&self, now: Instant) -> Budget {
        // A poisoned lock only means a panic elsewhere while holding it; the counts are
        // still usable.
        let mut window = self
            .window
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let expired = window
            .started
            .is_none_or(|started| now.saturating_duration_since(started) >= WINDOW);
        if expired {
            window.started = Some(now);
            window.used = 0;
        }
        if window.used < self.per_window {
            window.used += 1;
            Budget::Log {
                suppressed: std::mem::take(&mut window.suppressed),
            }
        } else {
            window.suppressed = window.suppressed.saturating_add(1);
            Budget::Suppress
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_few_lines_a_second_get_through_and_the_rest_are_counted() {
        let budget = LogBudget::new(3);
        let t0 = Instant::now();
        let first: Vec<Budget> = (0..10).map(|_| budget.take(t0)).collect();
        assert_eq!(first[..3], [Budget::Log { suppressed: 0 }; 3]);
        assert!(first[3..].iter().all(|b| *b == Budget::Suppress));
        // Still the same second: nothing more.
        assert_eq!(
            budget.take(t0 + Duration::from_millis(999)),
            Budget::Suppress
        );
        // The next second's first line reports the 8 left out.
        assert_eq!(
            budget.take(t0 + Duration::from_secs(1)),
            Budget::Log { suppressed: 8 }
        );
        assert_eq!(
            budget.take(t0 + Duration::from_secs(1)),
            Budget::Log { suppressed: 0 }
        );
    }
}
