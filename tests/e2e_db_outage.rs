//! Database outages lose nothing (issue #4 item 5): the database goes away in the middle of
//! a publish, finals beyond the (deliberately tiny) memory queue go to the spill file, and
//! after recovery every final the WebSocket client received is in the database exactly once,
//! in order. Also: SIGTERM while the database is still away spills the queue, and the next
//! start writes it.
//!
//! PostgreSQL: a private cluster (initdb + pg_ctl in a temp dir, on a free loopback port), so
//! stopping it for 60 s does not disturb the shared server the other tests use.
//! SQLite: another connection holds `BEGIN EXCLUSIVE`, the database's write lock. Unlike file
//! modes (`chmod 444`), which root ignores (CI runs as root), a lock binds every process
//! whatever its user: the service's writes really fail (`database is locked` after the busy
//! timeout) until the lock is released.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use diesel::connection::SimpleConnection;
use diesel::Connection;
use realtime_core::db::spill::SPILL_FILE_NAME;
use realtime_core::db::SpillFile;
use test_harness::*;

/// The figure: PostgreSQL down for a minute.
const PG_OUTAGE: Duration = Duration::from_secs(60);
/// Long enough for several write attempts (each waits out the 5 s busy timeout).
const SQLITE_OUTAGE: Duration = Duration::from_secs(25);
/// Tiny on purpose: a handful of finals fills it and the spill file must take the rest.
const MAX_QUEUED: &str = "3";

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

// ---------------------------------------------------------------------------------------
// A private PostgreSQL cluster

/// A throw-away PostgreSQL cluster on a free loopback port, stopped and deleted on drop.
struct PrivatePostgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    /// Running as root: PostgreSQL refuses to, so its tools run as the `postgres` user.
    as_postgres_user: bool,
}

impl PrivatePostgres {
    /// `None` (skip) outside CI when the PostgreSQL server binaries are not installed.
    fn start() -> Option<Self> {
        let Some(bin) = pg_bin_dir() else {
            let message = "PostgreSQL server binaries (initdb, pg_ctl) not found under /usr/lib/postgresql/*/bin";
            if in_ci() {
                panic!("{message}");
            }
            eprintln!("\n*** SKIPPING (not in CI): {message} ***\n");
            return None;
        };
        let as_postgres_user = String::from_utf8_lossy(
            &Command::new("id")
                .arg("-u")
                .output()
                .expect("id runs")
                .stdout,
        )
        .trim()
            == "0";
        let dir = tempfile::tempdir().expect("temp dir");
        if as_postgres_user {
            let status = Command::new("chown")
                .arg("postgres:postgres")
                .arg(dir.path())
                .status()
                .expect("chown runs");
            assert!(
                status.success(),
                "cannot hand the temp dir to the postgres user"
            );
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let pg = Self {
            dir,
            bin,
            port,
            as_postgres_user,
        };
        let data = pg.data_dir();
        pg.run_ok(
            "initdb",
            &[
                "-D",
                data.to_str().expect("utf-8 path"),
                "-A",
                "trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--no-sync",
            ],
        );
        pg.start_server();
        Some(pg)
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    fn run(&self, program: &str, args: &[&str]) -> Output {
        let tool = self.bin.join(program);
        let mut command = if self.as_postgres_user {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(tool);
            c
        } else {
            Command::new(tool)
        };
        command
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("{program} runs: {e}"))
    }

    fn run_ok(&self, program: &str, args: &[&str]) {
        let out = self.run(program, args);
        assert!(
            out.status.success(),
            "{program} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `pg_ctl start -w`: returns once the server accepts connections.
    fn start_server(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.dir.path().display()
        );
        let data = self.data_dir();
        let log = self.dir.path().join("postgres.log");
        self.run_ok(
            "pg_ctl",
            &[
                "-D",
                data.to_str().expect("utf-8 path"),
                "-l",
                log.to_str().expect("utf-8 path"),
                "-o",
                &options,
                "-w",
                "-t",
                "60",
                "start",
            ],
        );
    }

    /// `pg_ctl stop -m fast -w`: every connection is cut, returns once the server is down.
    fn stop_server(&self) {
        let data = self.data_dir();
        self.run_ok(
            "pg_ctl",
            &[
                "-D",
                data.to_str().expect("utf-8 path"),
                "-m",
                "fast",
                "-w",
                "stop",
            ],
        );
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let data = self.data_dir();
        let _ = self.run(
            "pg_ctl",
            &[
                "-D",
                data.to_str().unwrap_or_default(),
                "-m",
                "immediate",
                "-w",
                "stop",
            ],
        );
    }
}

/// The newest `/usr/lib/postgresql/<version>/bin` that has `initdb` and `pg_ctl`.
fn pg_bin_dir() -> Option<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            (bin.join("initdb").exists() && bin.join("pg_ctl").exists()).then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

// ---------------------------------------------------------------------------------------
// Shared steps

fn service_env(
    mock: &MockProvider,
    database_url: &str,
    spill_dir: &Path,
) -> Vec<(&'static str, String)> {
    let mut env = mock.service_env(database_url);
    env.extend([
        ("TRANSCRIPT_MAX_QUEUED", MAX_QUEUED.to_owned()),
        ("TRANSCRIPT_BATCH_SIZE", "2".to_owned()),
        (
            "TRANSCRIPT_SPILL_DIR",
            spill_dir.to_str().expect("utf-8 path").to_owned(),
        ),
    ]);
    env
}

/// Complete lines in the spill file (0 when there is none). Only reads: the service may be
/// appending to it (while it is running, [`SpillFile::open`] is not for the test to call).
fn spilled(spill_dir: &Path) -> usize {
    std::fs::read(spill_dir.join(SPILL_FILE_NAME))
        .map(|bytes| bytes.iter().filter(|&&b| b == b'\n').count())
        .unwrap_or(0)
}

/// Polls until `check` holds or `timeout` passes; returns whether it held.
async fn poll(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if check() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn spawn_publisher(wav: &Path, url: &str) -> tokio::process::Child {
    tokio::process::Command::new("ffmpeg")
        .args(ffmpeg_speech_args(wav, url))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("ffmpeg starts")
}

/// The publish is over: the provider session ended and the client has every final the
/// provider sent. Returns the finals' utterance ids in order (stream checked against docs/PROTOCOL.md#transcript-messages).
async fn all_finals_delivered(
    mock: &MockProvider,
    client: &WsClient,
    service: &Service,
    slug: &str,
) -> Vec<String> {
    mock.assert_one_session_closed(service, Duration::from_secs(60))
        .await;
    let expected = mock.sessions()[0].finals_sent.len();
    let all = client
        .wait_until(Duration::from_secs(15), |m| {
            m.iter().filter(|m| m["isFinal"] == true).count() == expected
        })
        .await;
    assert!(
        all,
        "client got {} of {expected} finals",
        client.finals().len()
    );
    assert_transcript_stream(&client.snapshot(), slug)
}

/// After an outage: the publish finishes, every final reaches the client and is stored
/// exactly once, and the spill file is gone (all written). Returns the finals' ids in order.
async fn recovered_exactly_once(
    publisher: &mut tokio::process::Child,
    mock: &MockProvider,
    client: &WsClient,
    service: &Service,
    database_url: &str,
    spill_dir: &Path,
    slug: &str,
) -> Vec<String> {
    let status = tokio::time::timeout(Duration::from_secs(120), publisher.wait())
        .await
        .expect("publisher finishes")
        .expect("publisher status");
    assert!(status.success(), "ffmpeg failed: {status}");
    let finals = all_finals_delivered(mock, client, service, slug).await;
    let stored =
        wait_for_stored_finals(database_url, slug, finals.len(), Duration::from_secs(60)).await;
    assert_stored_exactly_once(&stored, &finals);
    assert!(
        poll(Duration::from_secs(30), || !spill_dir
            .join(SPILL_FILE_NAME)
            .exists())
        .await,
        "spill file still there after recovery"
    );
    finals
}

/// Every final the client received is stored exactly once, with seqs 1..=n in order.
fn assert_stored_exactly_once(stored: &[StoredFinal], client_finals: &[String]) {
    let ids: Vec<&str> = stored.iter().map(|f| f.utterance_id.as_str()).collect();
    let expected: Vec<&str> = client_finals.iter().map(String::as_str).collect();
    assert_eq!(
        ids, expected,
        "database holds other finals than the client got"
    );
    assert_eq!(
        stored.iter().map(|f| f.seq).collect::<Vec<_>>(),
        (1..=client_finals.len() as i64).collect::<Vec<_>>()
    );
}

/// Holds SQLite's write lock from another connection until [`Self::release`].
struct SqliteWriteLock(diesel::SqliteConnection);

impl SqliteWriteLock {
    fn take(path: &Path) -> Self {
        let mut conn =
            diesel::SqliteConnection::establish(path.to_str().expect("utf-8 path")).expect("open");
        // The service may be mid-write at this instant: wait for it rather than fail.
        conn.batch_execute("PRAGMA busy_timeout = 10000; BEGIN EXCLUSIVE")
            .expect("take the write lock");
        Self(conn)
    }

    fn release(mut self) {
        self.0.batch_execute("COMMIT").expect("release the lock");
    }
}

// ---------------------------------------------------------------------------------------
// Tests

#[actix_rt::test]
async fn postgres_stopped_for_60s_mid_publish_every_final_stored_exactly_once() {
    let _serial = SERIAL.lock().await;
    if !require_tools(&["ffmpeg", "espeak-ng", "sox"]) {
        return;
    }
    let Some(pg) = PrivatePostgres::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let spill_dir = dir.path().join("spill");
    // Two minutes of speech: finals before, during and after the outage.
    let wav = make_long_speech(dir.path(), 120.0);
    let mock = start_mock();
    let service = Service::start(
        realtime_core_bin!(),
        &service_env(&mock, &pg.url(), &spill_dir),
    );
    let slug = "pg-outage";
    let client = WsClient::connect(&service, &format!("sessionSlug={slug}")).await;
    let mut publisher = spawn_publisher(&wav, &service.rtmp_url(slug));

    // Up and writing before the outage.
    assert!(
        client
            .wait_until(Duration::from_secs(60), |m| m
                .iter()
                .filter(|m| m["isFinal"] == true)
                .count()
                >= 2)
            .await,
        "no finals before the outage; log:\n{}",
        service.log()
    );
    let before = wait_for_stored_finals(&pg.url(), slug, 2, Duration::from_secs(20)).await;
    assert!(before.len() >= 2, "finals not stored before the outage");

    pg.stop_server();
    let stopped = Instant::now();
    let finals_at_stop = client.finals().len();
    // The queue holds 3: the spill file must take the finals beyond them.
    assert!(
        poll(PG_OUTAGE, || spilled(&spill_dir) >= 3).await,
        "nothing spilled during the outage ({} finals since the stop); log:\n{}",
        client.finals().len() - finals_at_stop,
        service.log()
    );
    // The outage lasts its full minute whatever happens meanwhile.
    tokio::time::sleep(PG_OUTAGE.saturating_sub(stopped.elapsed())).await;
    let during = client.finals().len() - finals_at_stop;
    let spilled_at_recovery = spilled(&spill_dir);
    assert!(
        publisher.try_wait().expect("publisher status").is_none(),
        "the publish ended during the outage: make the speech longer"
    );
    pg.start_server();
    let outage = stopped.elapsed();

    let finals = recovered_exactly_once(
        &mut publisher,
        &mock,
        &client,
        &service,
        &pg.url(),
        &spill_dir,
        slug,
    )
    .await;
    let log = service.log();
    assert!(log.contains("spilling finals to disk"), "log:\n{log}");
    assert!(log.contains("transcript writes recovered"), "log:\n{log}");
    eprintln!(
        "PostgreSQL down {outage:?}: {during} finals arrived meanwhile, {spilled_at_recovery} were in the spill file at recovery; {} finals stored exactly once",
        finals.len()
    );
}

#[actix_rt::test]
async fn sqlite_write_locked_mid_publish_every_final_stored_exactly_once() {
    let _serial = SERIAL.lock().await;
    if !require_tools(&["ffmpeg", "espeak-ng", "sox"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let db_path = dir.path().join("rt.db");
    let database_url = format!("sqlite://{}", db_path.display());
    let spill_dir = dir.path().join("spill");
    let wav = make_long_speech(dir.path(), 60.0);
    let mock = start_mock();
    let service = Service::start(
        realtime_core_bin!(),
        &service_env(&mock, &database_url, &spill_dir),
    );
    let slug = "sqlite-outage";
    let client = WsClient::connect(&service, &format!("sessionSlug={slug}")).await;
    let mut publisher = spawn_publisher(&wav, &service.rtmp_url(slug));

    assert!(
        client
            .wait_until(Duration::from_secs(60), |m| m
                .iter()
                .filter(|m| m["isFinal"] == true)
                .count()
                >= 1)
            .await,
        "no finals before the outage; log:\n{}",
        service.log()
    );
    let lock = SqliteWriteLock::take(&db_path);
    let locked = Instant::now();
    assert!(
        poll(SQLITE_OUTAGE, || spilled(&spill_dir) >= 2).await,
        "nothing spilled while the database was locked; log:\n{}",
        service.log()
    );
    tokio::time::sleep(SQLITE_OUTAGE.saturating_sub(locked.elapsed())).await;
    assert!(
        publisher.try_wait().expect("publisher status").is_none(),
        "the publish ended during the outage: make the speech longer"
    );
    lock.release();

    let finals = recovered_exactly_once(
        &mut publisher,
        &mock,
        &client,
        &service,
        &database_url,
        &spill_dir,
        slug,
    )
    .await;
    let log = service.log();
    assert!(log.contains("database is locked"), "log:\n{log}");
    assert!(log.contains("spilling finals to disk"), "log:\n{log}");
    eprintln!(
        "SQLite locked {SQLITE_OUTAGE:?}: {} finals stored exactly once",
        finals.len()
    );
}

/// SIGTERM while the database is still locked: the shutdown flush times out, the queue goes to
/// the spill file, the process exits 0; the next start writes every final before it is ready.
#[actix_rt::test]
async fn sigterm_during_outage_spills_and_next_start_writes_every_final() {
    let _serial = SERIAL.lock().await;
    if !require_tools(&["ffmpeg", "espeak-ng", "sox"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let db_path = dir.path().join("rt.db");
    let database_url = format!("sqlite://{}", db_path.display());
    let spill_dir = dir.path().join("spill");
    let wav = make_speech(dir.path());
    let mock = start_mock();
    let env = service_env(&mock, &database_url, &spill_dir);
    let mut service = Service::start(realtime_core_bin!(), &env);
    let slug = "sigterm-outage";
    let client = WsClient::connect(&service, &format!("sessionSlug={slug}")).await;

    // The database is unwritable for the whole publish and the shutdown.
    let lock = SqliteWriteLock::take(&db_path);
    run_publisher(
        "ffmpeg",
        &ffmpeg_speech_args(&wav, &service.rtmp_url(slug)),
        Duration::from_secs(90),
    )
    .await;
    let finals = all_finals_delivered(&mock, &client, &service, slug).await;
    assert!(finals.len() >= 3, "only {} finals", finals.len());

    service.signal("TERM");
    let status = service
        .wait_exit(Duration::from_secs(90))
        .await
        .unwrap_or_else(|| panic!("still running 90 s after SIGTERM; log:\n{}", service.log()));
    let log = service.log();
    assert_eq!(status.code(), Some(0), "exit status {status}; log:\n{log}");
    assert!(
        log.contains("unwritten finals saved to the spill file"),
        "log:\n{log}"
    );
    // The service is gone: the file can be opened the way the next start opens it.
    let (_, report) = SpillFile::open(&spill_dir, u64::MAX).expect("spill file");
    assert_eq!(
        (report.pending, report.damaged),
        (finals.len(), 0),
        "every unsaved final must be in the spill file"
    );
    lock.release();
    assert!(
        stored_finals(&database_url, slug).is_empty(),
        "nothing could be written during the outage"
    );

    // The next start writes the spill file before it reports ready.
    let next = Service::start(realtime_core_bin!(), &env);
    assert_stored_exactly_once(&stored_finals(&database_url, slug), &finals);
    assert!(
        !spill_dir.join(SPILL_FILE_NAME).exists(),
        "spill file still there after the replay"
    );
    assert!(
        next.log()
            .contains("spilled finals of the previous run written"),
        "log:\n{}",
        next.log()
    );
}

/// One publish of `wav` to `slug` while the test watches with a fresh client: returns the
/// finals the client got as `(seq, utteranceId)` once the provider session `index` has ended
/// and every final it sent has arrived.
async fn publish_and_collect(
    service: &Service,
    mock: &MockProvider,
    wav: &Path,
    slug: &str,
    index: usize,
) -> (WsClient, Vec<(i64, String)>) {
    let client = WsClient::connect(service, &format!("sessionSlug={slug}")).await;
    let mut publisher = spawn_publisher(wav, &service.rtmp_url(slug));
    // Live at once, though the database is down: a partial, then a final.
    let live = client
        .wait_until(Duration::from_secs(60), |m| {
            m.iter().any(|m| m["isFinal"] == false) && m.iter().any(|m| m["isFinal"] == true)
        })
        .await;
    assert!(
        live,
        "no live partial and final while the database is down; log:\n{}",
        service.log()
    );
    let status = tokio::time::timeout(Duration::from_secs(120), publisher.wait())
        .await
        .expect("publisher finishes")
        .expect("publisher status");
    assert!(status.success(), "ffmpeg failed: {status}");
    let ended = poll(Duration::from_secs(60), || {
        mock.sessions().get(index).is_some_and(|s| s.ended)
    })
    .await;
    assert!(ended, "provider session {index} did not end");
    let sent = mock.sessions()[index].finals_sent.len();
    assert!(sent >= 2, "the speech gave only {sent} finals");
    let all = client
        .wait_until(Duration::from_secs(15), |m| {
            m.iter().filter(|m| m["isFinal"] == true).count() == sent
        })
        .await;
    assert!(all, "client got {} of {sent} finals", client.finals().len());
    let finals = client
        .finals()
        .iter()
        .map(|f| {
            (
                f["seq"].as_i64().expect("a final has a seq"),
                f["utteranceId"].as_str().expect("utteranceId").to_owned(),
            )
        })
        .collect();
    (client, finals)
}

/// The database is down when a session starts: its clients still get partials and finals
/// live (numbering goes on from the local high-water mark). The slug is then stopped and
/// started again at once while its finals are still queued or spilled: the new session's
/// finals continue the numbering. After recovery every final is stored exactly once, seqs
/// 1..=n with no gap and none reused.
#[actix_rt::test]
async fn postgres_down_when_a_session_starts_it_is_live_and_no_seq_is_reused() {
    let _serial = SERIAL.lock().await;
    if !require_tools(&["ffmpeg", "espeak-ng", "sox"]) {
        return;
    }
    let Some(pg) = PrivatePostgres::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let spill_dir = dir.path().join("spill");
    let wav = make_long_speech(dir.path(), 15.0);
    let mock = start_mock();
    let service = Service::start(
        realtime_core_bin!(),
        &service_env(&mock, &pg.url(), &spill_dir),
    );
    let slug = "starts-while-down";
    pg.stop_server();
    let stopped = Instant::now();

    let (client, first) = publish_and_collect(&service, &mock, &wav, slug, 0).await;
    let expected: Vec<i64> = (1..=first.len() as i64).collect();
    assert_eq!(
        first.iter().map(|(seq, _)| *seq).collect::<Vec<_>>(),
        expected
    );

    // Stop, let the session retire (no client, no publisher), then start the slug again.
    let stop = awc::Client::new()
        .delete(service.url(&format!("/api/sessions/{slug}/transcription")))
        .send()
        .await
        .expect("stop");
    assert_eq!(stop.status().as_u16(), 200);
    client.close();
    let mut retired = false;
    for _ in 0..100 {
        let response = awc::Client::new()
            .get(service.url(&format!("/api/sessions/{slug}")))
            .send()
            .await
            .expect("get session");
        if response.status().as_u16() == 404 {
            retired = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(retired, "the stopped session did not retire");
    assert!(
        spilled(&spill_dir) > 0,
        "the first run's finals should still wait in the spill file"
    );
    let (_client, second) = publish_and_collect(&service, &mock, &wav, slug, 1).await;
    let last = first.len() as i64;
    let expected: Vec<i64> = (last + 1..=last + second.len() as i64).collect();
    assert_eq!(
        second.iter().map(|(seq, _)| *seq).collect::<Vec<_>>(),
        expected,
        "the restarted session must continue the numbering"
    );
    let outage = stopped.elapsed();

    pg.start_server();
    let ids: Vec<String> = first
        .iter()
        .chain(&second)
        .map(|(_, id)| id.clone())
        .collect();
    let stored = wait_for_stored_finals(&pg.url(), slug, ids.len(), Duration::from_secs(60)).await;
    assert_stored_exactly_once(&stored, &ids);
    eprintln!(
        "PostgreSQL down {outage:?} across a session start, a stop and a restart: {} + {} finals live, all {} stored exactly once",
        first.len(),
        second.len(),
        ids.len()
    );
}

/// A stop while PostgreSQL is down still revokes the key for good: the revocation is retried
/// until stored, so after the database is back and the service restarted, FFmpeg's publish
/// with the old key is refused.
#[actix_rt::test]
async fn a_key_revoked_during_an_outage_stays_revoked_after_a_restart() {
    let _serial = SERIAL.lock().await;
    if !require_tools(&["ffmpeg", "espeak-ng", "sox"]) {
        return;
    }
    let Some(pg) = PrivatePostgres::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let spill_dir = dir.path().join("spill");
    let wav = make_speech(dir.path());
    let mock = start_mock();
    let env = [
        service_env(&mock, &pg.url(), &spill_dir),
        vec![(
            "RTMP_STREAM_KEY_SECRET",
            "outage-stream-key-secret".to_owned(),
        )],
    ]
    .concat();
    let service = Service::start(realtime_core_bin!(), &env);
    let slug = "revoked-in-outage";
    let (status, body) = service
        .post_json(
            &format!("/api/sessions/{slug}/transcription"),
            serde_json::json!({}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let rtmp_url = body["rtmpUrl"].as_str().expect("rtmpUrl").to_owned();
    let key = rtmp_url.rsplit('/').next().expect("key").to_owned();

    pg.stop_server();
    let stop = awc::Client::new()
        .delete(service.url(&format!("/api/sessions/{slug}/transcription")))
        .send()
        .await
        .expect("stop");
    assert_eq!(stop.status().as_u16(), 200);
    assert!(
        poll(Duration::from_secs(20), || service
            .log()
            .contains("stream key revocation not stored yet"))
        .await,
        "the failed write was not reported; log:\n{}",
        service.log()
    );
    pg.start_server();
    assert!(
        poll(Duration::from_secs(60), || service
            .log()
            .contains("stream key revocation stored"))
        .await,
        "the revocation was not retried into the database; log:\n{}",
        service.log()
    );
    drop(service);

    let service = Service::start(realtime_core_bin!(), &env);
    let stderr = run_refused_publisher(
        "ffmpeg",
        &ffmpeg_speech_args(&wav, &service.rtmp_url(&key)),
        Duration::from_secs(30),
    )
    .await;
    eprintln!(
        "ffmpeg with the key revoked during the outage: {}",
        stderr.lines().last().unwrap_or("")
    );
    assert!(
        mock.sessions().is_empty(),
        "the revoked key's audio reached the provider"
    );
}
