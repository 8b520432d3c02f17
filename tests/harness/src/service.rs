//! The real `realtime-core` binary as a child process: a clean environment with free ports,
//! the wait for its ready line, its captured log, HTTP helpers and its end (SIGTERM or kill).

use std::collections::{BTreeMap, VecDeque};
use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use serde_json::Value;

/// Variables of the developer's shell that would change what the service does: removed, so a
/// run configures the service only through what it passes. (A developer's own collector
/// settings must not leak into the tests either.)
const INHERITED_SETTINGS: &[&str] = &[
    "DATABASE_URL",
    "GLADIA_API_KEY",
    "GLADIA_API_URL",
    "GLADIA_REGION",
    "STT_PROVIDER",
    "REALTIME_AUTH_SECRET",
    "RTMP_STREAM_KEY_SECRET",
    "REDIS_URL",
    "REALTIME_BROADCAST_MODE",
    "REALTIME_BROADCAST_URL",
    "REALTIME_BROADCAST_SECRET",
    "HTTP_HOST",
    "RTMP_BIND",
    "RTMP_HOST",
    "RTMP_EXTERNAL_PORT",
    "RTMP_MAX_CONNECTIONS_PER_IP",
    "RTMP_MAX_CONNECTIONS",
    "RTMP_PROXY_PROTOCOL",
    "RTMP_TRUSTED_PROXIES",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_PROTOCOL",
    "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
    "WHISPER_MODEL_DIR",
    "WHISPER_THREADS",
    "WHISPER_WORKERS",
    "WHISPER_COMPUTE_TYPE",
    "WHISPER_LANGUAGE",
    "WHISPER_MAX_SESSIONS",
];

/// What the end-to-end tests give every service unless the test names its own value.
const TEST_DEFAULTS: &[(&str, &str)] = &[
    ("TRANSCRIPT_BATCH_DELAY_MS", "200"),
    // Tests wait for a publish's end; production holds 30 s for egress reconnects.
    ("PUBLISHER_RECONNECT_GRACE_MS", "1000"),
    // A test without a Gladia key runs without a provider unless it names a model (an
    // installed default model would otherwise make it a whisper test).
    ("WHISPER_MODEL_DIR", "/nonexistent/whisper-model"),
];

/// How long the service may take to print its ready line.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// Distinct WARN/ERROR message kinds counted; past this, only the known kinds count on.
const MAX_LOG_KINDS: usize = 50;

/// How a service is launched and how much of its log is kept.
#[derive(Debug, Clone, Copy, Default)]
pub struct Launch {
    /// Echo every log line on stderr, prefixed `[service]`.
    pub show_log: bool,
    /// Keep only the last this many lines (a long load run); `None` keeps them all (a test
    /// searches its whole log).
    pub keep_lines: Option<usize>,
}

/// The service's log as it arrives, with WARN/ERROR counts.
#[derive(Default)]
struct LogState {
    lines: VecDeque<String>,
    warnings: u64,
    errors: u64,
    /// Distinct WARN/ERROR messages (target and text, fields cut) with their counts.
    kinds: BTreeMap<String, u64>,
}

impl LogState {
    fn push(&mut self, line: String, keep_lines: Option<usize>) {
        let warn = line.contains(" WARN ");
        let error = line.contains(" ERROR ");
        self.warnings += u64::from(warn);
        self.errors += u64::from(error);
        if warn || error {
            let kind = message_kind(&line);
            if self.kinds.len() < MAX_LOG_KINDS {
                *self.kinds.entry(kind).or_default() += 1;
            } else if let Some(n) = self.kinds.get_mut(&kind) {
                *n += 1;
            }
        }
        self.lines.push_back(line);
        if let Some(keep) = keep_lines {
            while self.lines.len() > keep {
                self.lines.pop_front();
            }
        }
    }
}

/// `… WARN realtime_core::x: message key=value…` → `WARN realtime_core::x: message`.
fn message_kind(line: &str) -> String {
    let start = line
        .find(" WARN ")
        .or_else(|| line.find(" ERROR "))
        .map_or(0, |i| i + 1);
    let rest = &line[start..];
    let end = rest
        .find('=')
        .and_then(|i| rest[..i].rfind(' '))
        .unwrap_or(rest.len());
    rest[..end].chars().take(160).collect()
}

/// The real `realtime-core` binary, with its log captured. Killed when dropped.
pub struct Service {
    child: Child,
    pub http: SocketAddr,
    pub rtmp: SocketAddr,
    log: Arc<Mutex<LogState>>,
    /// This instance's `TRANSCRIPT_SPILL_DIR` unless the caller names one: an instance owns
    /// its spill directory, and the PostgreSQL default (`./data/spill`) would be shared.
    _spill_dir: tempfile::TempDir,
}

impl Service {
    /// Starts `binary` (see [`crate::realtime_core_bin`]) the way the end-to-end tests do:
    /// free ports, the test defaults, the log kept whole and echoed when `E2E_SHOW_LOG` is set.
    /// Panics if it does not become ready.
    pub fn start(binary: &Path, envs: &[(&str, String)]) -> Service {
        let mut all: Vec<(&str, &str)> = TEST_DEFAULTS.to_vec();
        all.extend(envs.iter().map(|(k, v)| (*k, v.as_str())));
        let launch = Launch {
            show_log: std::env::var("E2E_SHOW_LOG").is_ok(),
            keep_lines: None,
        };
        Service::launch(binary, &all, launch).unwrap_or_else(|e| panic!("{e:#}"))
    }

    /// Starts `binary` with `PORT=0`/`RTMP_INTERNAL_PORT=0`, a private spill directory,
    /// `RUST_LOG=info` and then `envs` (later entries win), and waits for its ready line.
    pub fn launch<K: AsRef<OsStr>, V: AsRef<OsStr>>(
        binary: &Path,
        envs: &[(K, V)],
        launch: Launch,
    ) -> anyhow::Result<Service> {
        let mut command = Command::new(binary);
        for var in INHERITED_SETTINGS {
            command.env_remove(var);
        }
        let spill_dir = tempfile::tempdir().context("spill directory")?;
        command
            .env("TRANSCRIPT_SPILL_DIR", spill_dir.path())
            .env("PORT", "0")
            .env("RTMP_INTERNAL_PORT", "0")
            .env("RUST_LOG", "info");
        for (k, v) in envs {
            command.env(k, v);
        }
        let mut child = command
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot start {}", binary.display()))?;
        let Some(stderr) = child.stderr.take() else {
            bail!("no stderr pipe");
        };
        let log = Arc::new(Mutex::new(LogState::default()));
        let (ready_tx, ready_rx) = mpsc::channel::<String>();
        let sink = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if launch.show_log {
                    eprintln!("[service] {line}");
                }
                let ready = line.contains("realtime-core ready").then(|| line.clone());
                // Into the log first: a caller woken by the ready line finds it there.
                lock(&sink).push(line, launch.keep_lines);
                if let Some(ready) = ready {
                    let _ = ready_tx.send(ready);
                }
            }
        });
        let Ok(ready) = ready_rx.recv_timeout(READY_TIMEOUT) else {
            let _ = child.kill();
            let _ = child.wait();
            let lines = lock(&log).lines.iter().cloned().collect::<Vec<_>>();
            bail!("service did not become ready; log:\n{}", lines.join("\n"));
        };
        let field = |name: &str| -> anyhow::Result<SocketAddr> {
            let start = ready
                .find(&format!("{name}="))
                .with_context(|| format!("no {name}= in the ready line: {ready}"))?
                + name.len()
                + 1;
            ready[start..]
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .parse()
                .with_context(|| format!("bad {name} address in: {ready}"))
        };
        Ok(Service {
            http: field("http")?,
            rtmp: field("rtmp")?,
            child,
            log,
            _spill_dir: spill_dir,
        })
    }

    /// The log kept so far, one line a line.
    pub fn log(&self) -> String {
        let state = lock(&self.log);
        state.lines.iter().cloned().collect::<Vec<_>>().join("\n")
    }

    /// The last `lines` lines of the log.
    pub fn log_tail(&self, lines: usize) -> String {
        let state = lock(&self.log);
        let skip = state.lines.len().saturating_sub(lines);
        let tail: Vec<String> = state.lines.iter().skip(skip).cloned().collect();
        tail.join("\n")
    }

    /// WARN and ERROR lines so far.
    pub fn log_counts(&self) -> (u64, u64) {
        let state = lock(&self.log);
        (state.warnings, state.errors)
    }

    /// Distinct warning and error messages with their counts.
    pub fn log_kinds(&self) -> BTreeMap<String, u64> {
        lock(&self.log).kinds.clone()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.http, path)
    }

    pub fn rtmp_url(&self, key: &str) -> String {
        format!("rtmp://{}/live/{key}", self.rtmp)
    }

    pub async fn get_json(&self, path: &str) -> (u16, Value) {
        let mut response = awc::Client::new()
            .get(self.url(path))
            .send()
            .await
            .expect("http get");
        let status = response.status().as_u16();
        let body = response
            .json::<Value>()
            .limit(16 << 20)
            .await
            .unwrap_or(Value::Null);
        (status, body)
    }

    pub async fn post_json(&self, path: &str, body: Value) -> (u16, Value) {
        let mut response = awc::Client::new()
            .post(self.url(path))
            .send_json(&body)
            .await
            .expect("http post");
        let status = response.status().as_u16();
        let body = response.json::<Value>().await.unwrap_or(Value::Null);
        (status, body)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident memory of the service process in KiB (`VmRSS`), 0 when it cannot be read.
    pub fn rss_kb(&self) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .ok()
            .and_then(|status| {
                status
                    .lines()
                    .find_map(|l| l.strip_prefix("VmRSS:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            })
            .unwrap_or(0)
    }

    /// Threads and open file descriptors of the service process (for leak checks).
    pub fn threads_and_fds(&self) -> (usize, usize) {
        let count = |dir: String| std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0);
        let pid = self.pid();
        (
            count(format!("/proc/{pid}/task")),
            count(format!("/proc/{pid}/fd")),
        )
    }

    /// `Some(status)` once the process has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Sends `signal` (e.g. "TERM") without waiting.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -{signal} failed");
    }

    /// Waits (without blocking the test's runtime) for the process to exit.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if tokio::time::Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Sends SIGTERM and waits up to 30 s for the exit code.
    pub fn terminate(&mut self) -> Option<i32> {
        self.terminate_within(Duration::from_secs(30))
    }

    /// Sends SIGTERM and waits up to `timeout` for the exit code; `None` (and killed) after.
    /// Blocks the thread: a caller on an async runtime runs it with `spawn_blocking`.
    pub fn terminate_within(&mut self, timeout: Duration) -> Option<i32> {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        None
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The log state even if the reader thread panicked while holding it: a log line lost is
/// better than a second panic hiding the first.
fn lock(log: &Mutex<LogState>) -> MutexGuard<'_, LogState> {
    log.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
