//! The service under test as a child process, and its CPU and memory read from `/proc`.

use std::collections::VecDeque;
use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};

/// Log lines kept for an error report.
const LOG_TAIL: usize = 200;

pub struct Service {
    child: Child,
    pub http: SocketAddr,
    pub rtmp: SocketAddr,
    log: Arc<Mutex<LogState>>,
}

#[derive(Default)]
struct LogState {
    tail: VecDeque<String>,
    warnings: u64,
    errors: u64,
    /// Distinct WARN/ERROR messages (target and text, fields cut) with their counts.
    kinds: std::collections::BTreeMap<String, u64>,
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

impl Service {
    /// Starts the binary on loopback with free ports and waits for its ready line.
    pub fn start(binary: &Path, envs: &[(String, String)], show_log: bool) -> anyhow::Result<Self> {
        let mut command = Command::new(binary);
        for var in [
            "DATABASE_URL",
            "GLADIA_API_KEY",
            "GLADIA_API_URL",
            "GLADIA_REGION",
            "STT_PROVIDER",
            "REALTIME_AUTH_SECRET",
            "RTMP_STREAM_KEY_SECRET",
            "REDIS_URL",
            "HTTP_HOST",
            "RTMP_BIND",
            "RTMP_HOST",
            "RTMP_EXTERNAL_PORT",
            "OTEL_EXPORTER_OTLP_ENDPOINT",
        ] {
            command.env_remove(var);
        }
        command
            .env("PORT", "0")
            .env("RTMP_INTERNAL_PORT", "0")
            .env("HTTP_HOST", "127.0.0.1")
            .env("RTMP_BIND", "127.0.0.1")
            .env("RUST_LOG", "info");
        for (k, v) in envs {
            command.env(k, v);
        }
        let mut child = command
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| {
                format!(
                    "cannot start {} (build it: nice cargo build --release -p realtime-core)",
                    binary.display()
                )
            })?;
        let Some(stderr) = child.stderr.take() else {
            bail!("no stderr pipe");
        };
        let log = Arc::new(Mutex::new(LogState::default()));
        let (ready_tx, ready_rx) = mpsc::channel::<String>();
        let sink = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("realtime-core ready") {
                    let _ = ready_tx.send(line.clone());
                }
                if show_log {
                    eprintln!("[service] {line}");
                }
                let mut state = sink.lock().unwrap_or_else(|p| p.into_inner());
                let warn = line.contains(" WARN ");
                let error = line.contains(" ERROR ");
                state.warnings += u64::from(warn);
                state.errors += u64::from(error);
                if (warn || error) && (state.kinds.len() < 50) {
                    *state.kinds.entry(message_kind(&line)).or_default() += 1;
                } else if warn || error {
                    if let Some(n) = state.kinds.get_mut(&message_kind(&line)) {
                        *n += 1;
                    }
                }
                state.tail.push_back(line);
                if state.tail.len() > LOG_TAIL {
                    state.tail.pop_front();
                }
            }
        });
        let ready = match ready_rx.recv_timeout(Duration::from_secs(60)) {
            Ok(line) => line,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                let tail = log
                    .lock()
                    .map(|s| s.tail.iter().cloned().collect::<Vec<_>>().join("\n"))
                    .unwrap_or_default();
                bail!("the service did not become ready; its log:\n{tail}");
            }
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
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `Some(status)` once the process has exited.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    pub fn log_counts(&self) -> (u64, u64) {
        self.log
            .lock()
            .map(|s| (s.warnings, s.errors))
            .unwrap_or_default()
    }

    /// Distinct warning and error messages with their counts.
    pub fn log_kinds(&self) -> std::collections::BTreeMap<String, u64> {
        self.log.lock().map(|s| s.kinds.clone()).unwrap_or_default()
    }

    pub fn log_tail(&self, lines: usize) -> String {
        self.log
            .lock()
            .map(|s| {
                let skip = s.tail.len().saturating_sub(lines);
                s.tail
                    .iter()
                    .skip(skip)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join("\n")
            })
            .unwrap_or_default()
    }

    /// SIGTERM, then waits (up to 60 s) for the exit code; kills it after that.
    pub fn terminate(&mut self) -> Option<i32> {
        // SAFETY: kill(2) on our own child's pid; no memory is involved.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(60);
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

/// CPU time (user + system) and resident memory of a process at one instant.
#[derive(Debug, Clone, Copy)]
pub struct ProcSample {
    pub at: Instant,
    pub cpu_seconds: f64,
    pub rss_kb: u64,
    pub threads: u64,
}

/// Reads `/proc/{pid}/stat` (utime, stime) and `/proc/{pid}/status` (VmRSS, Threads).
pub fn sample(pid: u32) -> Option<ProcSample> {
    let at = Instant::now();
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may contain spaces), closed by the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state): utime is field 14, stime 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let value = |key: &str| -> Option<u64> {
        status
            .lines()
            .find(|l| l.starts_with(key))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    };
    Some(ProcSample {
        at,
        cpu_seconds: (utime + stime) as f64 / clock_ticks(),
        rss_kb: value("VmRSS:")?,
        threads: value("Threads:").unwrap_or(0),
    })
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 {
        ticks as f64
    } else {
        100.0
    }
}

/// CPU use between two samples, in % of one core.
pub fn cpu_percent(from: &ProcSample, to: &ProcSample) -> f64 {
    let wall = to.at.duration_since(from.at).as_secs_f64();
    if wall <= 0.0 {
        return 0.0;
    }
    (to.cpu_seconds - from.cpu_seconds) / wall * 100.0
}

/// The 1-minute load average, to state how busy the machine was.
pub fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Raises the soft open-files limit to the hard one (the service inherits it): thousands of
/// sockets on both sides.
pub fn raise_fd_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
    limit.rlim_cur
}

/// CPU seconds per thread kind (`/proc/{pid}/task/*`, names with digits folded: 300
/// `appsrcN:src` decoder threads count as one kind).
pub fn thread_cpu(pid: u32) -> std::collections::BTreeMap<String, f64> {
    let mut kinds = std::collections::BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return kinds;
    };
    for task in tasks.flatten() {
        let path = task.path();
        let (Ok(stat), Ok(comm)) = (
            std::fs::read_to_string(path.join("stat")),
            std::fs::read_to_string(path.join("comm")),
        ) else {
            continue;
        };
        let Some(close) = stat.rfind(')') else {
            continue;
        };
        let fields: Vec<&str> = stat[close + 2..].split_whitespace().collect();
        let ticks = |i: usize| {
            fields
                .get(i)
                .and_then(|f| f.parse::<u64>().ok())
                .unwrap_or(0)
        };
        let kind: String = comm
            .trim()
            .chars()
            .map(|c| if c.is_ascii_digit() { 'N' } else { c })
            .collect::<String>()
            .replace("NN", "N")
            .replace("NN", "N");
        *kinds.entry(kind).or_insert(0.0) += (ticks(11) + ticks(12)) as f64 / clock_ticks();
    }
    kinds
}
