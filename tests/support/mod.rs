//! Shared helpers for the end-to-end tests: the real service binary, real publishers, the mock
//! provider, a WebSocket client, and the audio comparisons.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::sync::Notify;

/// End-to-end tests share 2 cores: run them one at a time within a test binary.
pub static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// True when the tool is installed. Missing in CI (CI=true) is a failure, never a skip.
pub fn require_tools(tools: &[&str]) -> bool {
    let missing: Vec<&str> = tools
        .iter()
        .copied()
        .filter(|t| {
            Command::new("sh")
                .arg("-c")
                .arg(format!("command -v {t}"))
                .output()
                .map(|o| !o.status.success())
                .unwrap_or(true)
        })
        .collect();
    if missing.is_empty() {
        return true;
    }
    let message = format!(
        "missing tools {missing:?}: install them with scripts/install-debian-deps.sh --test"
    );
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{message}");
    }
    eprintln!("\n*** SKIPPING (not in CI): {message} ***\n");
    false
}

/// The real `realtime-core` binary, with its log captured.
pub struct Service {
    child: Child,
    pub http: SocketAddr,
    pub rtmp: SocketAddr,
    log: Arc<Mutex<Vec<String>>>,
    /// This instance's `TRANSCRIPT_SPILL_DIR` unless the test names one: an instance owns its
    /// spill directory, and the PostgreSQL default (`./data/spill`) would be shared.
    _spill_dir: tempfile::TempDir,
}

impl Service {
    /// Starts the binary with PORT=0/RTMP_INTERNAL_PORT=0 and waits for its ready line.
    pub fn start(envs: &[(&str, String)]) -> Service {
        let mut command = Command::new(env!("CARGO_BIN_EXE_realtime-core"));
        for var in [
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
            // A developer's own collector settings must not leak into the tests.
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
        ] {
            command.env_remove(var);
        }
        let spill_dir = tempfile::tempdir().expect("spill dir");
        command
            .env("TRANSCRIPT_SPILL_DIR", spill_dir.path())
            .env("PORT", "0")
            .env("RTMP_INTERNAL_PORT", "0")
            .env("RUST_LOG", "info")
            .env("TRANSCRIPT_BATCH_DELAY_MS", "200")
            // Tests wait for a publish's end; production holds 30 s for egress reconnects.
            .env("PUBLISHER_RECONNECT_GRACE_MS", "1000")
            // A test without a Gladia key runs without a provider unless it names a model (an
            // installed default model would otherwise make it a whisper test).
            .env("WHISPER_MODEL_DIR", "/nonexistent/whisper-model");
        for (k, v) in envs {
            command.env(k, v);
        }
        let mut child = command
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("service starts");
        let stderr = child.stderr.take().expect("stderr piped");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (ready_tx, ready_rx) = mpsc::channel::<String>();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("realtime-core ready") {
                    let _ = ready_tx.send(line.clone());
                }
                if std::env::var("E2E_SHOW_LOG").is_ok() {
                    eprintln!("[service] {line}");
                }
                sink.lock().unwrap().push(line);
            }
        });
        let ready = match ready_rx.recv_timeout(Duration::from_secs(60)) {
            Ok(line) => line,
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "service did not become ready; log:\n{}",
                    log.lock().unwrap().join("\n")
                );
            }
        };
        let field = |name: &str| -> SocketAddr {
            let start = ready
                .find(&format!("{name}="))
                .expect("address in ready line")
                + name.len()
                + 1;
            ready[start..]
                .split_whitespace()
                .next()
                .unwrap()
                .parse()
                .expect("socket address")
        };
        Service {
            http: field("http"),
            rtmp: field("rtmp"),
            child,
            log,
            _spill_dir: spill_dir,
        }
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
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

    pub fn pid(&self) -> u32 {
        self.child.id()
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
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
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

    /// Sends SIGTERM and waits for the exit code.
    pub fn terminate(&mut self) -> Option<i32> {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A WebSocket client of the service, collecting every JSON message it receives.
pub struct WsClient {
    pub messages: Arc<Mutex<Vec<Value>>>,
    /// The server's close frame: code and reason.
    closed: Arc<Mutex<Option<(u16, String)>>>,
    changed: Arc<Notify>,
    sender: tokio::sync::mpsc::UnboundedSender<String>,
    /// Tells the connection task to close the socket (see [`WsClient::close`]).
    closer: Arc<Notify>,
}

impl WsClient {
    pub async fn connect(service: &Service, query: &str) -> WsClient {
        let url = format!("ws://{}/api/realtime/transcribe?{query}", service.http);
        let (_response, framed) = awc::Client::new()
            .ws(url)
            .connect()
            .await
            .expect("websocket connects");
        let (mut sink, mut stream) = framed.split();
        let messages = Arc::new(Mutex::new(Vec::new()));
        let changed = Arc::new(Notify::new());
        let (sender, mut outgoing) = tokio::sync::mpsc::unbounded_channel::<String>();
        let closed = Arc::new(Mutex::new(None));
        let (m, c, closed_by_server) = (messages.clone(), changed.clone(), closed.clone());
        let closer = Arc::new(Notify::new());
        let close_requested = closer.clone();
        actix_rt::spawn(async move {
            loop {
                tokio::select! {
                    frame = stream.next() => match frame {
                        Some(Ok(awc::ws::Frame::Text(text))) => {
                            let value: Value = serde_json::from_slice(&text).expect("server sends JSON");
                            m.lock().unwrap().push(value);
                            c.notify_waiters();
                        }
                        Some(Ok(awc::ws::Frame::Ping(p))) => { let _ = sink.send(awc::ws::Message::Pong(p)).await; }
                        Some(Ok(awc::ws::Frame::Close(reason))) => {
                            let (code, text) = reason
                                .map(|r| (u16::from(r.code), r.description.unwrap_or_default()))
                                .unwrap_or((1005, String::new()));
                            *closed_by_server.lock().unwrap() = Some((code, text));
                            c.notify_waiters();
                            break;
                        }
                        Some(Ok(_)) => {}
                        _ => { c.notify_waiters(); break; }
                    },
                    Some(text) = outgoing.recv() => {
                        let _ = sink.send(awc::ws::Message::Text(text.into())).await;
                    }
                    _ = close_requested.notified() => {
                        let reason = awc::ws::CloseReason::from(awc::ws::CloseCode::Normal);
                        let _ = sink.send(awc::ws::Message::Close(Some(reason))).await;
                        let _ = sink.close().await;
                        c.notify_waiters();
                        break;
                    }
                }
            }
        });
        WsClient {
            messages,
            closed,
            changed,
            sender,
            closer,
        }
    }

    /// Closes the socket with 1000, as a browser leaving the page does.
    pub fn close(&self) {
        self.closer.notify_one();
    }

    /// Waits for the server's close frame; returns its code and reason.
    pub async fn wait_closed(&self, timeout: Duration) -> Option<(u16, String)> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.changed.notified();
            if let Some(close) = self.closed.lock().unwrap().clone() {
                return Some(close);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.closed.lock().unwrap().clone();
            }
        }
    }

    pub fn send(&self, value: Value) {
        let _ = self.sender.send(value.to_string());
    }

    pub fn snapshot(&self) -> Vec<Value> {
        self.messages.lock().unwrap().clone()
    }

    /// Waits until `pred` holds over the messages received so far.
    pub async fn wait_until(&self, timeout: Duration, pred: impl Fn(&[Value]) -> bool) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.changed.notified();
            if pred(&self.messages.lock().unwrap()) {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return pred(&self.messages.lock().unwrap());
            }
        }
    }

    pub fn transcripts(&self) -> Vec<Value> {
        self.snapshot()
            .into_iter()
            .filter(|m| m["type"] == "transcript")
            .collect()
    }

    pub fn finals(&self) -> Vec<Value> {
        self.transcripts()
            .into_iter()
            .filter(|m| m["isFinal"] == true)
            .collect()
    }
}

/// Speech made with espeak-ng: sentences separated by pauses, so the provider sees several
/// utterances. Returns the WAV path (22.05 kHz mono).
pub fn make_speech(dir: &Path) -> PathBuf {
    let wav = dir.join("speech.wav");
    let ssml = "<speak>The weekly sync starts now.<break time=\"900ms\"/>\
        Revenue grew by twelve percent this quarter.<break time=\"900ms\"/>\
        Please send the report before Friday.<break time=\"900ms\"/>\
        Thank you everyone, see you next week.</speak>";
    let status = Command::new("espeak-ng")
        .args(["-m", "-s", "150", "-w"])
        .arg(&wav)
        .arg(ssml)
        .status()
        .expect("espeak-ng runs");
    assert!(status.success(), "espeak-ng failed");
    wav
}

/// The source resampled to 16 kHz mono S16LE by sox: what the provider should receive.
pub fn reference_pcm(wav: &Path) -> Vec<i16> {
    let out = Command::new("sox")
        .arg(wav)
        .args([
            "-r",
            "16000",
            "-c",
            "1",
            "-b",
            "16",
            "-e",
            "signed-integer",
            "-t",
            "raw",
            "-",
        ])
        .output()
        .expect("sox runs");
    assert!(
        out.status.success(),
        "sox failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    samples(&out.stdout)
}

pub fn samples(pcm: &[u8]) -> Vec<i16> {
    pcm.chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]))
        .collect()
}

/// RMS per 20 ms window at 16 kHz.
pub fn envelope(samples: &[i16]) -> Vec<f64> {
    samples
        .chunks(320)
        .map(|w| {
            (w.iter().map(|&s| f64::from(s) * f64::from(s)).sum::<f64>() / w.len() as f64).sqrt()
        })
        .collect()
}

/// Best Pearson correlation of the two envelopes with `received` delayed by 0..=max_lag windows.
pub fn best_envelope_correlation(
    reference: &[f64],
    received: &[f64],
    max_lag: usize,
) -> (f64, usize) {
    let mut best = (f64::MIN, 0);
    for lag in 0..=max_lag {
        if lag >= received.len() {
            break;
        }
        let n = reference.len().min(received.len() - lag);
        let (a, b) = (&reference[..n], &received[lag..lag + n]);
        let (ma, mb) = (
            a.iter().sum::<f64>() / n as f64,
            b.iter().sum::<f64>() / n as f64,
        );
        let cov: f64 = a.iter().zip(b).map(|(x, y)| (x - ma) * (y - mb)).sum();
        let va: f64 = a.iter().map(|x| (x - ma).powi(2)).sum();
        let vb: f64 = b.iter().map(|y| (y - mb).powi(2)).sum();
        let r = cov / (va.sqrt() * vb.sqrt()).max(f64::EPSILON);
        if r > best.0 {
            best = (r, lag);
        }
    }
    best
}

/// Asserts the received PCM is the published audio: duration within 2 %, envelope correlation
/// above 0.9 (measured values are printed so a regression shows its size).
pub fn assert_pcm_matches(source_wav: &Path, received: &[u8]) {
    let reference = reference_pcm(source_wav);
    let got = samples(received);
    let (ref_s, got_s) = (reference.len() as f64 / 16000.0, got.len() as f64 / 16000.0);
    let deviation = (got_s - ref_s).abs() / ref_s;
    let (r, lag) = best_envelope_correlation(&envelope(&reference), &envelope(&got), 25);
    eprintln!("pcm check: source {ref_s:.3} s, received {got_s:.3} s ({:.2} %), envelope r={r:.4} at lag {} ms", deviation * 100.0, lag * 20);
    assert!(
        deviation <= 0.02,
        "received {got_s:.3} s of PCM for {ref_s:.3} s of audio"
    );
    assert!(
        r > 0.9,
        "received audio does not match the source: envelope correlation {r:.3}"
    );
}

/// Runs a publisher to completion (it paces itself in real time), failing on error or timeout.
pub async fn run_publisher(program: &str, args: &[String], timeout: Duration) {
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("{program} starts: {e}"));
    let mut stderr = child.stderr.take().expect("stderr");
    let status = tokio::time::timeout(timeout, child.wait())
        .await
        .unwrap_or_else(|_| panic!("{program} did not finish in {timeout:?}"));
    let mut err = String::new();
    let _ = tokio::io::AsyncReadExt::read_to_string(&mut stderr, &mut err).await;
    assert!(status.expect("wait").success(), "{program} failed: {err}");
}

pub fn ffmpeg_args(input_and_codec: &[&str], url: &str) -> Vec<String> {
    let mut args: Vec<String> = ["-hide_banner", "-loglevel", "error", "-nostdin"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    args.extend(input_and_codec.iter().map(|s| s.to_string()));
    args.extend(["-f".to_string(), "flv".to_string(), url.to_string()]);
    args
}

/// FFmpeg publishing a WAV the way a typical encoder does: paced in real time, AAC-LC
/// 44.1 kHz stereo 128 kb/s (what LiveKit Egress sends by default).
pub fn ffmpeg_speech_args(wav: &Path, url: &str) -> Vec<String> {
    let wav = wav.to_str().expect("utf-8 path");
    ffmpeg_args(
        &[
            "-re", "-i", wav, "-c:a", "aac", "-b:a", "128k", "-ar", "44100", "-ac", "2",
        ],
        url,
    )
}

/// GStreamer `rtmp2sink`, the element LiveKit Egress publishes with, fed from a WAV file.
pub fn rtmp2sink_args(wav: &Path, url: &str) -> Vec<String> {
    format!(
        "-q filesrc location={} ! wavparse ! audioconvert ! audioresample ! audio/x-raw,rate=44100,channels=2 ! \
         voaacenc bitrate=128000 ! aacparse ! flvmux streamable=true skip-backwards-streams=true ! \
         rtmp2sink location={url} async-connect=false",
        wav.display()
    )
    .split_whitespace()
    .map(str::to_owned)
    .collect()
}

/// A fresh PostgreSQL database for one test; `None` (skip) outside CI when no server answers.
pub fn fresh_postgres_database(prefix: &str) -> Option<String> {
    use diesel::{Connection, RunQueryDsl};
    let admin = std::env::var("DATABASE_URL_PG_ADMIN")
        .unwrap_or_else(|_| "postgres://postgres:postgres@127.0.0.1:5432/postgres".to_owned());
    let mut conn = match diesel::PgConnection::establish(&admin) {
        Ok(c) => c,
        Err(e) => {
            let message = format!("PostgreSQL is not reachable at DATABASE_URL_PG_ADMIN: {e}");
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("{message}");
            }
            eprintln!("\n*** SKIPPING (not in CI): {message} ***\n");
            return None;
        }
    };
    let name = format!("{prefix}_{}", uuid::Uuid::new_v4().simple());
    diesel::sql_query(format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .expect("create database");
    let base = admin
        .rsplit_once('/')
        .map(|(b, _)| b.to_owned())
        .unwrap_or(admin);
    Some(format!("{base}/{name}"))
}

#[derive(diesel::QueryableByName, Debug, Clone, PartialEq)]
pub struct StoredFinal {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    pub seq: i64,
    #[diesel(sql_type = diesel::sql_types::Text)]
    pub utterance_id: String,
    #[diesel(sql_type = diesel::sql_types::Text)]
    pub text: String,
}

/// The finals stored for a session, read straight from the database the service writes.
pub fn stored_finals(database_url: &str, slug: &str) -> Vec<StoredFinal> {
    use diesel::{Connection, RunQueryDsl};
    let sql = format!("SELECT seq, utterance_id, text FROM transcripts WHERE session_slug = '{slug}' ORDER BY seq");
    if let Some(path) = database_url.strip_prefix("sqlite://") {
        let mut conn = diesel::SqliteConnection::establish(path).expect("open sqlite");
        diesel::sql_query(sql)
            .load(&mut conn)
            .expect("query sqlite")
    } else {
        let mut conn = diesel::PgConnection::establish(database_url).expect("open postgres");
        diesel::sql_query(sql)
            .load(&mut conn)
            .expect("query postgres")
    }
}

/// Checks every transcript message against SPEC §4.3 and the delivery order of §4.4; returns
/// the finals' utterance ids in order. Every final must have had a partial before it.
pub fn assert_transcript_stream(messages: &[Value], slug: &str) -> Vec<String> {
    assert_transcript_stream_with(messages, slug, true)
}

/// [`assert_transcript_stream`]; with `partial_before_each_final` false a final may come
/// without a partial (partials are best-effort, SPEC §4.4: a short utterance may have none).
pub fn assert_transcript_stream_with(
    messages: &[Value],
    slug: &str,
    partial_before_each_final: bool,
) -> Vec<String> {
    let mut finals = Vec::new();
    let mut finalized = std::collections::HashSet::new();
    let mut partial_seen = std::collections::HashSet::new();
    for m in messages.iter().filter(|m| m["type"] == "transcript") {
        assert_eq!(m["sessionSlug"], slug);
        for field in ["utteranceId", "text", "speaker", "speakerId"] {
            assert!(m[field].is_string(), "{field} missing in {m}");
        }
        for field in ["ts", "startedAt", "endedAt"] {
            assert!(m[field].is_i64(), "{field} missing in {m}");
        }
        let text = m["text"].as_str().unwrap();
        assert_eq!(text, text.trim_start(), "leading space not trimmed: {m}");
        let id = m["utteranceId"].as_str().unwrap().to_owned();
        assert!(
            !finalized.contains(&id),
            "a message after the final of {id}: {m}"
        );
        if m["isFinal"] == true {
            assert_eq!(m["transcriptType"], "final");
            assert_eq!(
                m["seq"].as_i64(),
                Some(finals.len() as i64 + 1),
                "seq gap or reorder: {m}"
            );
            assert!(
                !partial_before_each_final || partial_seen.contains(&id),
                "final {id} came without any partial before it"
            );
            finalized.insert(id.clone());
            finals.push(id);
        } else {
            assert_eq!(m["isFinal"], false);
            assert_eq!(m["transcriptType"], "partial");
            assert!(m.get("seq").is_none(), "a partial carries seq: {m}");
            partial_seen.insert(id);
        }
    }
    finals
}

/// Runs a publisher that the service must refuse: it has to exit non-zero within `timeout`
/// (a refused publish closes the connection, so no timer stands in for the refusal). Returns
/// its stderr for the test's message.
pub async fn run_refused_publisher(program: &str, args: &[String], timeout: Duration) -> String {
    let output = tokio::time::timeout(
        timeout,
        tokio::process::Command::new(program)
            .args(args)
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .unwrap_or_else(|_| panic!("{program} was not refused within {timeout:?}"))
    .unwrap_or_else(|e| panic!("{program} starts: {e}"));
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(
        !output.status.success(),
        "{program} published although the service had to refuse it: {stderr}"
    );
    stderr
}

impl Service {
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
}

/// About `seconds` of espeak-ng speech: [`make_speech`]'s four sentences repeated (sox
/// concatenation), for tests that need a long publish. Returns the WAV path.
pub fn make_long_speech(dir: &Path, seconds: f64) -> PathBuf {
    let one = make_speech(dir);
    let one_s = reference_pcm(&one).len() as f64 / 16_000.0;
    let copies = (seconds / one_s).ceil().max(1.0) as usize;
    let long = dir.join("long-speech.wav");
    let status = Command::new("sox")
        .args(std::iter::repeat_n(&one, copies))
        .arg(&long)
        .status()
        .expect("sox runs");
    assert!(status.success(), "sox concatenation failed");
    long
}

/// Encodes a WAV to an FLV file with AAC-LC 44.1 kHz stereo (what egress sends), so a test
/// can publish the very same AAC frames it decodes for its reference (`-c copy`).
pub fn encode_flv(wav: &Path, flv: &Path) {
    let status = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-nostdin", "-y", "-i"])
        .arg(wav)
        .args([
            "-c:a", "aac", "-b:a", "128k", "-ar", "44100", "-ac", "2", "-f", "flv",
        ])
        .arg(flv)
        .status()
        .expect("ffmpeg runs");
    assert!(
        status.success(),
        "ffmpeg could not encode {}",
        wav.display()
    );
}

/// FFmpeg re-publishing an FLV file unchanged, paced in real time.
pub fn ffmpeg_copy_args(flv: &Path, url: &str) -> Vec<String> {
    let flv = flv.to_str().expect("utf-8 path");
    ffmpeg_args(&["-re", "-i", flv, "-c", "copy"], url)
}

/// Polls the database (finals are written in batches, off the hot path) until `slug` has at
/// least `count` finals or `timeout` passes; returns what is there.
pub async fn wait_for_stored_finals(
    database_url: &str,
    slug: &str,
    count: usize,
    timeout: Duration,
) -> Vec<StoredFinal> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let stored = stored_finals(database_url, slug);
        if stored.len() >= count || tokio::time::Instant::now() > deadline {
            return stored;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
