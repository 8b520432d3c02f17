//! The highest `seq` each session has numbered, kept on local disk beside the spill file
//! (docs/PROTOCOL.md#persistence), so numbering can go on without the database.
//!
//! `max(seq)` in the database is not enough to number the next final: finals still queued in
//! the batcher or in the spill file are not in it yet, and while the database is down it
//! cannot be asked at all. So every final the batcher is handed moves its session's
//! high-water mark here first (one small file per session, replaced atomically), and the next
//! session for that slug starts after `max(database, high-water)`, or after the high-water
//! mark alone when the database does not answer in time. A `seq` is then never reused, even
//! across a stop and an immediate restart while finals wait, or a restart of the service.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Marks kept in memory; beyond it the cache is emptied (the files stay the truth).
const MAX_CACHED: usize = 10_000;

#[derive(Debug)]
pub struct SeqHighWater {
    /// `None`: no spill directory, marks live in memory only (tests, benchmarks).
    dir: Option<PathBuf>,
    cached: HashMap<String, i64>,
}

impl SeqHighWater {
    /// Marks under `dir` (created on first use).
    pub fn new(dir: Option<PathBuf>) -> SeqHighWater {
        SeqHighWater {
            dir,
            cached: HashMap::new(),
        }
    }

    /// A slug is 1-128 of `[A-Za-z0-9._-]` (validated before any session exists), so it is a
    /// safe file name once prefixed: `s-..` is not the parent directory.
    fn file(dir: &Path, session_slug: &str) -> PathBuf {
        dir.join(format!("s-{session_slug}"))
    }

    /// The highest `seq` numbered for the session (0 when none is known).
    pub fn get(&mut self, session_slug: &str) -> i64 {
        if let Some(seq) = self.cached.get(session_slug) {
            return *seq;
        }
        let stored = self
            .dir
            .as_deref()
            .and_then(|dir| std::fs::read_to_string(Self::file(dir, session_slug)).ok())
            .and_then(|text| text.trim().parse::<i64>().ok())
            .filter(|seq| *seq >= 0)
            .unwrap_or(0);
        self.remember(session_slug, stored);
        stored
    }

    /// `seq` was numbered for the session: the mark moves up to it (never down).
    pub fn record(&mut self, session_slug: &str, seq: i64) -> std::io::Result<()> {
        if seq <= self.get(session_slug) {
            return Ok(());
        }
        self.remember(session_slug, seq);
        let Some(dir) = &self.dir else {
            return Ok(());
        };
        std::fs::create_dir_all(dir)?;
        let path = Self::file(dir, session_slug);
        let temporary = path.with_extension("tmp");
        std::fs::write(&temporary, seq.to_string())?;
        // Atomic: a crash leaves the old mark or the new one, never half a number.
        std::fs::rename(&temporary, &path)
    }

    fn remember(&mut self, session_slug: &str, seq: i64) {
        if self.cached.len() >= MAX_CACHED && !self.cached.contains_key(session_slug) {
            self.cached.clear();
        }
        self.cached.insert(session_slug.to_owned(), seq);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_only_move_up_and_survive_a_new_instance() {
        let dir = tempfile::tempdir().unwrap();
        let mut marks = SeqHighWater::new(Some(dir.path().to_owned()));
        assert_eq!(marks.get("weekly"), 0);
        marks.record("weekly", 5).unwrap();
        marks.record("weekly", 3).unwrap();
        marks.record("..", 2).unwrap();
        assert_eq!(marks.get("weekly"), 5);
        // A restarted service reads them back.
        let mut again = SeqHighWater::new(Some(dir.path().to_owned()));
        assert_eq!(again.get("weekly"), 5);
        assert_eq!(again.get(".."), 2);
        assert_eq!(again.get("other"), 0);
        assert!(dir.path().join("s-..").is_file());
    }

    #[test]
    fn without_a_directory_marks_live_in_memory() {
        let mut marks = SeqHighWater::new(None);
        marks.record("weekly", 9).unwrap();
        assert_eq!(marks.get("weekly"), 9);
    }

    #[test]
    fn a_corrupt_mark_reads_as_none() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("s-weekly"), "not a number").unwrap();
        let mut marks = SeqHighWater::new(Some(dir.path().to_owned()));
        assert_eq!(marks.get("weekly"), 0);
    }
}
