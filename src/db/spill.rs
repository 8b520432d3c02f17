//! The spill file: where finals wait when the in-memory queue of the [`super::TranscriptBatcher`]
//! is full during a database outage, and where the queue goes at shutdown if the database is
//! still away (issue #4: "nothing is dropped, nothing written twice").
//!
//! Format: one final per line, `<checksum> <json>\n`, where `<checksum>` is the first 16 hex
//! digits of the SHA-256 of `<json>`. The file is append-only while the service runs; a line
//! is written with a single `write`, so a process crash leaves at worst one torn last line,
//! which is detected (no newline, bad checksum or bad JSON), skipped with a warning and cut off.
//!
//! Durability: every append reaches the OS at once (it survives a crash of the process); the
//! batcher calls [`SpillFile::sync`] at most once a second, so a power cut can lose up to the
//! last second of spilled finals. A rewrite (shutdown) is synced before it replaces the file.
//!
//! Reading does not change the file: the records read are handed to the queue and
//! `read_offset` moves past them. The file is removed only once every record has been read
//! *and* written to the database (the batcher decides), so a crash in between replays some
//! finals a second time: harmless, the database upsert is keyed on (session, utterance).
//!
//! One instance per directory: [`SpillFile::open`] takes an exclusive lock on
//! `transcripts.spill.lock` next to the file for as long as the `SpillFile` lives, so a second
//! instance pointed at the same `TRANSCRIPT_SPILL_DIR` fails at start-up instead of replaying,
//! truncating or removing the other's finals.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use ::actors::persistence::FinalRecord;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tracing::warn;

use super::connection::DatabaseTarget;

/// The file's name inside the spill directory.
pub const SPILL_FILE_NAME: &str = "transcripts.spill.jsonl";

/// Default bound of the file (`TRANSCRIPT_SPILL_MAX_BYTES`): 1 GiB, ~3.5 million finals.
pub const DEFAULT_SPILL_MAX_BYTES: u64 = 1 << 30;

/// Hex digits of the SHA-256 kept per line.
const CHECKSUM_HEX: usize = 16;

/// `TRANSCRIPT_SPILL_DIR` when not set: a `spill` folder next to the SQLite file, or the
/// default data folder (`./data/spill`) for PostgreSQL and in-memory SQLite.
pub fn default_spill_dir(database_url: &str) -> PathBuf {
    if let Ok(DatabaseTarget::Sqlite(path)) = DatabaseTarget::parse(database_url) {
        if path != ":memory:" && !path.starts_with("file:") {
            let parent = Path::new(&path).parent().unwrap_or(Path::new(""));
            let parent = if parent.as_os_str().is_empty() {
                Path::new(".")
            } else {
                parent
            };
            return parent.join("spill");
        }
    }
    PathBuf::from("./data/spill")
}

/// A final as one line of the file (field names are the file format: do not rename).
#[derive(Serialize, Deserialize)]
struct Line {
    session_slug: String,
    seq: i64,
    utterance_id: String,
    text: String,
    speaker: String,
    speaker_id: String,
    started_at_ms: i64,
    ended_at_ms: i64,
    language: Option<String>,
}

impl From<&FinalRecord> for Line {
    fn from(r: &FinalRecord) -> Self {
        Self {
            session_slug: r.session_slug.clone(),
            seq: r.seq,
            utterance_id: r.utterance_id.clone(),
            text: r.text.clone(),
            speaker: r.speaker.clone(),
            speaker_id: r.speaker_id.clone(),
            started_at_ms: r.started_at_ms,
            ended_at_ms: r.ended_at_ms,
            language: r.language.clone(),
        }
    }
}

impl From<Line> for FinalRecord {
    fn from(l: Line) -> Self {
        Self {
            session_slug: l.session_slug,
            seq: l.seq,
            utterance_id: l.utterance_id,
            text: l.text,
            speaker: l.speaker,
            speaker_id: l.speaker_id,
            started_at_ms: l.started_at_ms,
            ended_at_ms: l.ended_at_ms,
            language: l.language,
        }
    }
}

fn checksum(json: &[u8]) -> String {
    let digest = Sha256::digest(json);
    digest
        .iter()
        .take(CHECKSUM_HEX / 2)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The bytes of one line, newline included.
fn encode(record: &FinalRecord) -> Vec<u8> {
    // Serializing plain strings and integers cannot fail.
    let json = serde_json::to_vec(&Line::from(record)).unwrap_or_default();
    let mut line = Vec::with_capacity(json.len() + CHECKSUM_HEX + 2);
    line.extend_from_slice(checksum(&json).as_bytes());
    line.push(b' ');
    line.extend_from_slice(&json);
    line.push(b'\n');
    line
}

/// One complete line (without its newline) back to a final; `None` if it is damaged.
fn decode(line: &[u8]) -> Option<FinalRecord> {
    if line.len() <= CHECKSUM_HEX + 1 || line[CHECKSUM_HEX] != b' ' {
        return None;
    }
    let (sum, json) = (&line[..CHECKSUM_HEX], &line[CHECKSUM_HEX + 1..]);
    if sum != checksum(json).as_bytes() {
        return None;
    }
    serde_json::from_slice::<Line>(json).ok().map(Into::into)
}

/// Why a final could not be appended.
#[derive(Debug, thiserror::Error)]
pub enum SpillError {
    #[error("the spill file {path:?} reached its bound of {max_bytes} bytes (TRANSCRIPT_SPILL_MAX_BYTES)")]
    Full { path: PathBuf, max_bytes: u64 },
    #[error("cannot write the spill file {path:?}: {error}")]
    Io { path: PathBuf, error: io::Error },
}

/// What [`SpillFile::open`] found from a previous run.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct OpenReport {
    /// Intact finals waiting to be replayed.
    pub pending: usize,
    /// Damaged lines (a torn last line after a crash, or corruption), skipped: lost finals.
    pub damaged: usize,
}

/// The lock file's name inside the spill directory.
pub const LOCK_FILE_NAME: &str = "transcripts.spill.lock";

/// The spill file of one service instance. See the module documentation.
#[derive(Debug)]
pub struct SpillFile {
    path: PathBuf,
    /// Held (exclusive `flock`) while this instance owns the directory; released on drop.
    _lock: File,
    max_bytes: u64,
    /// Opened in append mode on the first append after the file was (re)created.
    appender: Option<File>,
    /// Length of the file (0 when it does not exist).
    size: u64,
    /// Where the first record not yet handed out starts.
    read_offset: u64,
    /// Intact records at or after `read_offset`.
    pending: usize,
    /// Appended since the last [`Self::sync`].
    unsynced: bool,
}

impl SpillFile {
    /// Opens `dir/transcripts.spill.jsonl` if a previous run left it (counting its intact
    /// finals, cutting off a torn last line); creates nothing until the first append.
    /// Fails with `WouldBlock` when another instance holds the directory.
    pub fn open(dir: &Path, max_bytes: u64) -> io::Result<(SpillFile, OpenReport)> {
        let path = dir.join(SPILL_FILE_NAME);
        fs::create_dir_all(dir)?;
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join(LOCK_FILE_NAME))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                return Err(io::Error::new(
                    io::ErrorKind::WouldBlock,
                    "another realtime-core instance is using this directory (each instance needs its own TRANSCRIPT_SPILL_DIR)",
                ))
            }
            Err(fs::TryLockError::Error(e)) => return Err(e),
        }
        let mut spill = SpillFile {
            path,
            _lock: lock,
            max_bytes,
            appender: None,
            size: 0,
            read_offset: 0,
            pending: 0,
            unsynced: false,
        };
        let mut report = OpenReport::default();
        let file = match File::open(&spill.path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((spill, report)),
            Err(e) => return Err(e),
        };
        let mut reader = BufReader::new(file);
        let mut line = Vec::new();
        let mut complete_len = 0u64;
        loop {
            line.clear();
            let n = reader.read_until(b'\n', &mut line)?;
            if n == 0 {
                break;
            }
            if line.last() != Some(&b'\n') {
                // A crash in the middle of an append: cut it off so the next append starts
                // on a fresh line.
                warn!(
                    file = %spill.path.display(),
                    bytes = n,
                    "spill file ends in a torn line (crash while writing); skipping it"
                );
                report.damaged += 1;
                break;
            }
            complete_len += n as u64;
            if decode(&line[..n - 1]).is_some() {
                report.pending += 1;
            } else {
                warn!(
                    file = %spill.path.display(),
                    offset = complete_len - n as u64,
                    "damaged line in the spill file (bad checksum or JSON); skipping it"
                );
                report.damaged += 1;
            }
        }
        let file_len = reader.get_ref().metadata()?.len();
        if file_len > complete_len {
            OpenOptions::new()
                .write(true)
                .open(&spill.path)?
                .set_len(complete_len)?;
        }
        spill.size = complete_len;
        spill.pending = report.pending;
        Ok((spill, report))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Finals in the file not yet handed out by [`Self::read`].
    pub fn pending(&self) -> usize {
        self.pending
    }

    /// Bytes in the file, including records already handed out (until [`Self::remove`]).
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Appends one final. Refused beyond `max_bytes`; a failed write is rolled back so the
    /// file never keeps a torn line while the service runs.
    pub fn append(&mut self, record: &FinalRecord) -> Result<(), SpillError> {
        let line = encode(record);
        if self.size + line.len() as u64 > self.max_bytes {
            return Err(SpillError::Full {
                path: self.path.clone(),
                max_bytes: self.max_bytes,
            });
        }
        let io_error = |e: io::Error, path: &Path| SpillError::Io {
            path: path.to_owned(),
            error: e,
        };
        if self.appender.is_none() {
            if let Some(dir) = self.path.parent() {
                fs::create_dir_all(dir).map_err(|e| io_error(e, &self.path))?;
            }
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)
                .map_err(|e| io_error(e, &self.path))?;
            self.appender = Some(file);
        }
        let Some(file) = self.appender.as_mut() else {
            return Err(io_error(io::Error::other("not open"), &self.path));
        };
        if let Err(e) = file.write_all(&line) {
            // Best effort: cut a partial line off so later appends stay readable.
            let _ = file.set_len(self.size);
            return Err(io_error(e, &self.path));
        }
        self.size += line.len() as u64;
        self.pending += 1;
        self.unsynced = true;
        Ok(())
    }

    /// Hands out up to `max` finals from `read_offset` on, in file order, skipping damaged
    /// lines (already reported by [`Self::open`]).
    pub fn read(&mut self, max: usize) -> io::Result<Vec<FinalRecord>> {
        let mut records = Vec::new();
        if self.pending == 0 || max == 0 {
            return Ok(records);
        }
        let mut file = File::open(&self.path)?;
        file.seek(SeekFrom::Start(self.read_offset))?;
        let mut reader = BufReader::new(file.take(self.size - self.read_offset));
        let mut line = Vec::new();
        let mut consumed = 0u64;
        while records.len() < max {
            line.clear();
            let n = reader.read_until(b'\n', &mut line)?;
            if n == 0 || line.last() != Some(&b'\n') {
                break;
            }
            consumed += n as u64;
            if let Some(record) = decode(&line[..n - 1]) {
                records.push(record);
            }
        }
        self.read_offset += consumed;
        self.pending = self.pending.saturating_sub(records.len());
        if records.is_empty() {
            // Only damaged lines were left: nothing pending after all.
            self.pending = 0;
        }
        Ok(records)
    }

    /// Pushes appended finals to the disk (the batcher calls this at most once a second).
    pub fn sync(&mut self) -> io::Result<()> {
        if self.unsynced {
            if let Some(file) = self.appender.as_ref() {
                file.sync_data()?;
            }
            self.unsynced = false;
        }
        Ok(())
    }

    /// Deletes the file once every final in it has been read and written. No-op if absent.
    pub fn remove(&mut self) -> io::Result<()> {
        self.appender = None;
        match fs::remove_file(&self.path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        self.size = 0;
        self.read_offset = 0;
        self.pending = 0;
        self.unsynced = false;
        Ok(())
    }

    /// Shutdown with the database still away: writes `front` (the memory queue, older than
    /// anything pending in the file) followed by the file's pending records to a new file,
    /// syncs it and moves it into place. Ignores `max_bytes`: the queue is bounded already,
    /// and refusing it here would lose finals that were safe in memory.
    pub fn rewrite_with_front(&mut self, front: &[FinalRecord]) -> io::Result<()> {
        if front.is_empty() {
            return self.sync();
        }
        if let Some(dir) = self.path.parent() {
            fs::create_dir_all(dir)?;
        }
        let tmp = self.path.with_extension("jsonl.tmp");
        let mut out = io::BufWriter::new(File::create(&tmp)?);
        let mut written = 0u64;
        for record in front {
            let line = encode(record);
            out.write_all(&line)?;
            written += line.len() as u64;
        }
        if self.size > self.read_offset {
            let mut old = File::open(&self.path)?;
            old.seek(SeekFrom::Start(self.read_offset))?;
            written += io::copy(&mut old.take(self.size - self.read_offset), &mut out)?;
        }
        let file = out.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        drop(file);
        fs::rename(&tmp, &self.path)?;
        if let Some(dir) = self.path.parent() {
            // The rename itself must survive a power cut too.
            if let Ok(d) = File::open(dir) {
                let _ = d.sync_all();
            }
        }
        self.appender = None;
        self.size = written;
        self.read_offset = 0;
        self.pending += front.len();
        self.unsynced = false;
        Ok(())
    }
}

/// The intact finals in `dir`'s spill file, read without owning the directory (tests look
/// into the file of a batcher that is running or stopping).
#[cfg(test)]
pub(crate) fn peek(dir: &Path) -> io::Result<Vec<FinalRecord>> {
    let bytes = match fs::read(dir.join(SPILL_FILE_NAME)) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    Ok(bytes
        .split_inclusive(|&b| b == b'\n')
        .filter_map(|line| line.strip_suffix(b"\n").and_then(decode))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(seq: i64) -> FinalRecord {
        FinalRecord {
            session_slug: "s".to_owned(),
            seq,
            utterance_id: format!("u{seq}"),
            text: format!("line\nwith \"quotes\" {seq}"),
            speaker: "A".to_owned(),
            speaker_id: "a".to_owned(),
            started_at_ms: seq,
            ended_at_ms: seq + 1,
            language: None,
        }
    }

    #[test]
    fn lines_round_trip_and_detect_damage() {
        let line = encode(&rec(7));
        assert_eq!(line.iter().filter(|&&b| b == b'\n').count(), 1);
        assert_eq!(decode(&line[..line.len() - 1]), Some(rec(7)));
        let mut bad = line.clone();
        bad[CHECKSUM_HEX + 5] ^= 1;
        assert_eq!(decode(&bad[..bad.len() - 1]), None);
        assert_eq!(decode(b"x"), None);
    }

    #[test]
    fn default_dir_follows_the_sqlite_file() {
        assert_eq!(
            default_spill_dir("sqlite:///var/lib/rt/rt.db"),
            PathBuf::from("/var/lib/rt/spill")
        );
        assert_eq!(
            default_spill_dir("sqlite://rt.db"),
            PathBuf::from("./spill")
        );
        assert_eq!(
            default_spill_dir("postgres://u@h/db"),
            PathBuf::from("./data/spill")
        );
        assert_eq!(
            default_spill_dir("sqlite://:memory:"),
            PathBuf::from("./data/spill")
        );
    }

    #[test]
    fn torn_last_line_is_skipped_and_cut_off() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let (mut spill, _) = SpillFile::open(dir.path(), u64::MAX).expect("open");
            spill.append(&rec(1)).expect("append");
            spill.append(&rec(2)).expect("append");
        }
        let path = dir.path().join(SPILL_FILE_NAME);
        let whole = fs::read(&path).expect("read");
        let third = encode(&rec(3));
        // A crash in the middle of the third append.
        fs::write(
            &path,
            [whole.as_slice(), &third[..third.len() / 2]].concat(),
        )
        .expect("write");
        let (mut spill, report) = SpillFile::open(dir.path(), u64::MAX).expect("reopen");
        assert_eq!((report.pending, report.damaged), (2, 1));
        assert_eq!(fs::read(&path).expect("read"), whole, "torn tail cut off");
        // The next append starts on its own line.
        spill.append(&rec(4)).expect("append");
        assert_eq!(spill.read(10).expect("read"), vec![rec(1), rec(2), rec(4)]);
    }

    #[test]
    fn one_instance_per_directory() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut first, _) = SpillFile::open(dir.path(), u64::MAX).expect("open");
        first.append(&rec(1)).expect("append");
        let refused = SpillFile::open(dir.path(), u64::MAX).expect_err("a second owner");
        assert_eq!(refused.kind(), io::ErrorKind::WouldBlock);
        assert!(
            refused.to_string().contains("TRANSCRIPT_SPILL_DIR"),
            "{refused}"
        );
        // The refused open left the first instance's file alone.
        assert_eq!(first.read(10).expect("read"), vec![rec(1)]);
        drop(first);
        let (_, report) = SpillFile::open(dir.path(), u64::MAX).expect("free again");
        assert_eq!(report.pending, 1);
    }

    #[test]
    fn append_read_bound_rewrite_remove() {
        let dir = tempfile::tempdir().expect("tempdir");
        let one = encode(&rec(1)).len() as u64;
        let (mut spill, report) = SpillFile::open(dir.path(), one * 3).expect("open");
        assert_eq!(report, OpenReport::default());
        assert!(
            !spill.path().exists(),
            "nothing created before the first append"
        );
        for seq in 1..=3 {
            spill.append(&rec(seq)).expect("append");
        }
        assert!(matches!(
            spill.append(&rec(4)),
            Err(SpillError::Full { .. })
        ));
        assert_eq!(spill.read(2).expect("read"), vec![rec(1), rec(2)]);
        assert_eq!(spill.pending(), 1);
        // Shutdown: the queue ([1, 2] handed out, still unwritten) goes in front of 3.
        spill
            .rewrite_with_front(&[rec(1), rec(2)])
            .expect("rewrite");
        drop(spill);
        let (mut again, report) = SpillFile::open(dir.path(), one * 3).expect("reopen");
        assert_eq!(report.pending, 3);
        assert_eq!(again.read(10).expect("read"), vec![rec(1), rec(2), rec(3)]);
        assert_eq!(again.pending(), 0);
        again.remove().expect("remove");
        assert!(!again.path().exists());
    }
}
