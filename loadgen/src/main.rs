//! Load generator for realtime-core (issue #5 item 3).
//!
//! Starts the mock Gladia provider in this process (so its stamps and ours share one clock),
//! spawns the service binary against it, connects `--clients` WebSocket clients to each of
//! `--sessions` sessions, then publishes one real RTMP stream per session (a pre-encoded AAC
//! FLV paced in real time) for `--seconds`. Meanwhile it prints a progress line every second;
//! at the end it reports ingest-added and fan-out latency, the service's CPU and RSS per
//! session and per client, drops and disconnects, as JSON. See docs/PERFORMANCE.md.

mod clients;
mod flv;
mod pg;
mod publisher;
mod service;
mod stats;

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::{Duration, SystemTime};

use anyhow::{bail, Context as _};
use clap::Parser;
use futures_util::StreamExt as _;
use serde_json::{json, Value};
use tokio::time::Instant;

use crate::clients::{ClientGauges, ClientTally, SessionInbox};
use crate::publisher::{PublishLog, PublisherGauges};
use crate::service::{cpu_percent, ProcSample, Service};
use crate::stats::summarize;

const MOCK_KEY: &str = "loadgen-key";

#[derive(Parser, Debug, Clone)]
#[command(
    about = "Publishes N real RTMP streams and opens M WebSocket clients per session \
                   against realtime-core with the mock provider; reports latency, CPU, RSS."
)]
struct Args {
    /// Concurrent sessions, each with its own RTMP publisher.
    #[arg(long, default_value_t = 1)]
    sessions: u32,
    /// WebSocket clients per session.
    #[arg(long, default_value_t = 10)]
    clients: u32,
    /// How long each stream publishes (keep runs bounded on shared machines).
    #[arg(long, default_value_t = 30)]
    seconds: u64,
    /// Extra clients connected, before any load, to a session nobody publishes to: the RSS
    /// they add is the memory of an idle client.
    #[arg(long, default_value_t = 0)]
    idle_clients: u32,
    /// The service binary (a release build: `cargo build --release -p realtime-core`).
    #[arg(long, default_value = "target/release/realtime-core")]
    service_bin: PathBuf,
    /// An FLV with AAC audio to publish (looped); default: espeak-ng speech generated once
    /// into --work-dir with espeak-ng, sox and ffmpeg.
    #[arg(long)]
    flv: Option<PathBuf>,
    /// Where the generated FLV is cached.
    #[arg(long, default_value = "target/loadgen")]
    work_dir: PathBuf,
    /// Write the result here as well as on stdout.
    #[arg(long)]
    json_out: Option<PathBuf>,
    /// PCM_CHUNK_SIZE_MS given to the service.
    #[arg(long, default_value_t = 100)]
    pcm_chunk_ms: u32,
    /// Seconds after the last publisher started before CPU and RSS are averaged.
    #[arg(long, default_value_t = 3)]
    warmup_seconds: u64,
    /// Store finals in a fresh PostgreSQL database that logs every statement, and count the
    /// statements per final (needs psql and read access to --pg-log).
    #[arg(long)]
    postgres: bool,
    #[arg(
        long,
        env = "DATABASE_URL_PG_ADMIN",
        default_value = "postgres://postgres:postgres@127.0.0.1:5432/postgres",
        hide_env_values = true
    )]
    pg_admin: String,
    #[arg(long, default_value = "/var/log/postgresql/postgresql-15-main.log")]
    pg_log: PathBuf,
    /// Extra KEY=VALUE environment for the service (repeatable).
    #[arg(long = "service-env")]
    service_env: Vec<String>,
    /// Echo the service's log on stderr.
    #[arg(long)]
    show_service_log: bool,
}

fn main() {
    let args = Args::parse();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let code = match actix_rt::System::new().block_on(run(args)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("loadgen: {e:#}");
            2
        }
    };
    std::process::exit(code);
}

struct Phase {
    name: &'static str,
    sample: ProcSample,
}

async fn run(args: Args) -> anyhow::Result<i32> {
    if args.sessions == 0 {
        bail!("--sessions must be at least 1");
    }
    let fd_limit = service::raise_fd_limit();
    let sockets_needed = u64::from(args.sessions) * (u64::from(args.clients) + 2)
        + u64::from(args.idle_clients)
        + 64;
    if sockets_needed > fd_limit {
        bail!("{sockets_needed} sockets needed but the open-files limit is {fd_limit}");
    }
    let flv_path = match &args.flv {
        Some(p) => p.clone(),
        None => flv::generated_speech_flv(&args.work_dir)?,
    };
    let track = Rc::new(flv::AacTrack::from_flv(&flv_path)?);
    eprintln!(
        "loadgen: {} ({} AAC frames, {} Hz, {:.1} s loop); {} sessions x {} clients for {} s",
        flv_path.display(),
        track.frames.len(),
        track.sample_rate,
        f64::from(track.loop_ms) / 1000.0,
        args.sessions,
        args.clients,
        args.seconds
    );

    let mock = mock_gladia::MockGladia::start(mock_gladia::MockConfig {
        api_key: MOCK_KEY.to_owned(),
        ..mock_gladia::MockConfig::default()
    })?;
    let db_dir = tempfile::tempdir()?;
    let counter = if args.postgres {
        Some(pg::StatementCounter::create(&args.pg_admin, &args.pg_log)?)
    } else {
        None
    };
    let database_url = match &counter {
        Some(c) => c.url.clone(),
        None => format!("sqlite://{}/loadgen.db", db_dir.path().display()),
    };
    let mut envs: Vec<(String, String)> = vec![
        ("GLADIA_API_URL".into(), mock.base_url()),
        ("GLADIA_API_KEY".into(), MOCK_KEY.into()),
        ("DATABASE_URL".into(), database_url),
        ("PCM_CHUNK_SIZE_MS".into(), args.pcm_chunk_ms.to_string()),
        // Sessions end soon after their publisher (production waits 30 s for egress).
        ("PUBLISHER_RECONNECT_GRACE_MS".into(), "1000".into()),
        (
            "MAX_SESSIONS".into(),
            (args.sessions + 10).max(500).to_string(),
        ),
        (
            "MAX_CLIENTS_PER_SESSION".into(),
            args.clients.max(args.idle_clients).max(2000).to_string(),
        ),
    ];
    for kv in &args.service_env {
        let Some((k, v)) = kv.split_once('=') else {
            bail!("--service-env wants KEY=VALUE, got {kv:?}");
        };
        envs.push((k.to_owned(), v.to_owned()));
    }
    let load_at_start = service::load_average();
    let mut service = Service::start(&args.service_bin, &envs, args.show_service_log)?;
    let pid = service.pid();
    let self_pid = std::process::id();
    eprintln!(
        "loadgen: service pid {pid} http={} rtmp={}; machine load {:.2}",
        service.http,
        service.rtmp,
        load_at_start.unwrap_or(f64::NAN)
    );
    let sample =
        |what: &str| service::sample(pid).with_context(|| format!("service process gone ({what})"));
    let mut phases = Vec::new();
    actix_rt::time::sleep(Duration::from_secs(1)).await;
    phases.push(Phase {
        name: "started",
        sample: sample("started")?,
    });

    let http = Rc::new(clients::http_client());
    let gauges = Rc::new(ClientGauges::default());

    // Idle clients on a session without a publisher.
    if args.idle_clients > 0 {
        let inbox = Rc::new(RefCell::new(SessionInbox::default()));
        let tallies = connect_clients(
            &http,
            service.http,
            "lg-idle",
            args.idle_clients,
            &inbox,
            &gauges,
        )
        .await;
        drop(tallies);
        settle().await;
        phases.push(Phase {
            name: "idle_clients_connected",
            sample: sample("idle clients")?,
        });
    }

    // Load clients, connected before their sessions publish (like viewers waiting).
    let slugs: Vec<String> = (0..args.sessions).map(|i| format!("lg-{i}")).collect();
    let inboxes: Vec<Rc<RefCell<SessionInbox>>> = slugs
        .iter()
        .map(|_| Rc::new(RefCell::new(SessionInbox::default())))
        .collect();
    let mut tallies: Vec<Vec<Rc<RefCell<ClientTally>>>> = Vec::new();
    let connect_started = Instant::now();
    for (slug, inbox) in slugs.iter().zip(&inboxes) {
        tallies
            .push(connect_clients(&http, service.http, slug, args.clients, inbox, &gauges).await);
    }
    eprintln!(
        "loadgen: {} clients connected in {:.1} s ({} failed)",
        gauges.connected.get(),
        connect_started.elapsed().as_secs_f64(),
        gauges.connect_failures.get()
    );
    settle().await;
    phases.push(Phase {
        name: "clients_connected",
        sample: sample("clients connected")?,
    });

    // Publishers: starts spread over up to 2 s so 300 pipelines do not start in one instant;
    // all stop together.
    let pub_gauges = Rc::new(PublisherGauges::default());
    let step = Duration::from_millis((2000 / u64::from(args.sessions)).min(20));
    let first_start = Instant::now();
    let last_start = first_start + step * (args.sessions - 1);
    let until = last_start + Duration::from_secs(args.seconds);
    let mut publishers = Vec::new();
    for (i, slug) in slugs.iter().enumerate() {
        let start_at = first_start + step * i as u32;
        let (addr, key, track, gauges) = (
            service.rtmp,
            slug.clone(),
            Rc::clone(&track),
            Rc::clone(&pub_gauges),
        );
        // Ten publishers per loopback source address (the service's per-peer limit is 16).
        let source =
            std::net::Ipv4Addr::new(127, 0, 1 + (i / 2500) as u8, 1 + (i / 10 % 250) as u8);
        publishers.push(actix_rt::spawn(async move {
            tokio::time::sleep_until(start_at).await;
            publisher::publish(addr, source, key, track, until, gauges).await
        }));
    }

    // Progress, and the samples of the steady window.
    let window_start = last_start + Duration::from_secs(args.warmup_seconds);
    let mut steady: Vec<ProcSample> = Vec::new();
    let mut loadgen_steady: Vec<ProcSample> = Vec::new();
    let mut previous = sample("publishing")?;
    let mut previous_self = service::sample(self_pid);
    let mut previous_messages = 0;
    let mut died = None;
    let mut threads_at_window_start = std::collections::BTreeMap::new();
    let mut threads_at_window_end = std::collections::BTreeMap::new();
    let mut tick =
        tokio::time::interval_at(first_start + Duration::from_secs(1), Duration::from_secs(1));
    while Instant::now() < until {
        tick.tick().await;
        if let Some(status) = service.exited() {
            died = Some(status);
            break;
        }
        let now = sample("progress")?;
        let me = service::sample(self_pid);
        let messages = gauges.messages.get();
        let loadgen_cpu = match (&previous_self, &me) {
            (Some(a), Some(b)) => cpu_percent(a, b),
            _ => f64::NAN,
        };
        eprintln!(
            "[{:>4.0}s] publishing {}/{} (failed {}), clients {} (lost {}), msgs {} (+{}/s), \
             service cpu {:.0}% rss {:.1} MB threads {}, loadgen cpu {:.0}%, load {:.2}",
            first_start.elapsed().as_secs_f64(),
            pub_gauges.publishing.get(),
            args.sessions,
            pub_gauges.failed.get(),
            gauges.connected.get(),
            gauges.unexpected_disconnects.get(),
            messages,
            messages - previous_messages,
            cpu_percent(&previous, &now),
            now.rss_kb as f64 / 1024.0,
            now.threads,
            loadgen_cpu,
            service::load_average().unwrap_or(f64::NAN),
        );
        if Instant::now() >= window_start {
            if steady.is_empty() {
                threads_at_window_start = service::thread_cpu(pid);
            }
            threads_at_window_end = service::thread_cpu(pid);
            steady.push(now);
            if let Some(me) = me {
                loadgen_steady.push(me);
            }
        }
        previous = now;
        previous_self = me;
        previous_messages = messages;
    }
    let mut logs: Vec<PublishLog> = Vec::new();
    for handle in publishers {
        logs.push(handle.await.unwrap_or_else(|e| PublishLog {
            sends: Vec::new(),
            error: Some(format!("publisher task failed: {e}")),
        }));
    }
    if died.is_none() {
        // Drain: trailing finals come after the reconnect grace (1 s) and stop_recording.
        let mut last = gauges.messages.get();
        let mut quiet_since = Instant::now();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline && quiet_since.elapsed() < Duration::from_secs(3) {
            actix_rt::time::sleep(Duration::from_millis(250)).await;
            let now = gauges.messages.get();
            if now != last {
                last = now;
                quiet_since = Instant::now();
            }
        }
        died = service.exited();
    }
    let after = service::sample(pid);
    let window = match (steady.first(), steady.last()) {
        (Some(a), Some(b)) => b.at.duration_since(a.at).as_secs_f64(),
        _ => 0.0,
    };
    // % of one core per thread kind over the steady window.
    let thread_cpu: std::collections::BTreeMap<String, f64> = threads_at_window_end
        .iter()
        .map(|(kind, end)| {
            let start = threads_at_window_start.get(kind).copied().unwrap_or(0.0);
            let percent = if window > 0.0 {
                (end - start) / window * 100.0
            } else {
                0.0
            };
            (kind.clone(), (percent * 10.0).round() / 10.0)
        })
        .collect();
    let metrics = if died.is_none() {
        fetch_metrics(&http, service.http).await
    } else {
        Value::Null
    };
    let (warnings, errors) = service.log_counts();
    let log_kinds = service.log_kinds();
    let log_tail = service.log_tail(30);

    gauges.finishing.set(true);
    let exit_code = if died.is_none() {
        let (service_back, code) = actix_rt::task::spawn_blocking(move || {
            let code = service.terminate();
            (service, code)
        })
        .await
        .context("terminate task")?;
        drop(service_back);
        code
    } else {
        died.and_then(|s| s.code())
    };

    let db = match &counter {
        Some(c) => {
            let counts = c.count();
            c.drop_database();
            Some(counts?)
        }
        None => None,
    };

    let result = report(ReportInput {
        args: &args,
        track: &track,
        slugs: &slugs,
        mock: &mock,
        logs: &logs,
        inboxes: &inboxes,
        tallies: &tallies,
        gauges: &gauges,
        phases: &phases,
        steady: &steady,
        loadgen_steady: &loadgen_steady,
        after,
        metrics,
        service_log: (warnings, errors),
        log_kinds,
        thread_cpu,
        exit_code,
        died: died.is_some(),
        load_at_start,
        db,
    });
    let text = serde_json::to_string_pretty(&result)?;
    println!("{text}");
    if let Some(path) = &args.json_out {
        std::fs::write(path, &text).with_context(|| format!("cannot write {}", path.display()))?;
    }
    if died.is_some() {
        eprintln!("loadgen: the service died during the run; its last log lines:\n{log_tail}");
        return Ok(1);
    }
    let failed = logs.iter().filter(|l| l.error.is_some()).count();
    if failed > 0 {
        eprintln!(
            "loadgen: {failed} publishers failed, e.g. {}",
            logs.iter()
                .find_map(|l| l.error.clone())
                .unwrap_or_default()
        );
        return Ok(1);
    }
    Ok(0)
}

/// Lets connection set-up work (actors, buffers) finish before RSS is read.
async fn settle() {
    actix_rt::time::sleep(Duration::from_secs(2)).await;
}

/// Connects `count` clients to `slug`, at most 50 handshakes in flight.
async fn connect_clients(
    http: &Rc<awc::Client>,
    addr: std::net::SocketAddr,
    slug: &str,
    count: u32,
    inbox: &Rc<RefCell<SessionInbox>>,
    gauges: &Rc<ClientGauges>,
) -> Vec<Rc<RefCell<ClientTally>>> {
    let tallies: Vec<_> = (0..count)
        .map(|_| Rc::new(RefCell::new(ClientTally::default())))
        .collect();
    futures_util::stream::iter(tallies.iter().cloned())
        .map(|tally| {
            let (http, inbox, gauges) = (Rc::clone(http), Rc::clone(inbox), Rc::clone(gauges));
            let slug = slug.to_owned();
            async move {
                if let Err(e) = clients::connect(&http, addr, &slug, inbox, tally, gauges).await {
                    eprintln!("loadgen: client of {slug}: {e:#}");
                }
            }
        })
        .buffer_unordered(50)
        .collect::<Vec<()>>()
        .await;
    tallies
}

async fn fetch_metrics(http: &awc::Client, addr: std::net::SocketAddr) -> Value {
    let response = http.get(format!("http://{addr}/metrics")).send().await;
    match response {
        Ok(mut r) => r
            .json::<Value>()
            .limit(16 << 20)
            .await
            .unwrap_or(Value::Null),
        Err(_) => Value::Null,
    }
}

struct ReportInput<'a> {
    args: &'a Args,
    track: &'a flv::AacTrack,
    slugs: &'a [String],
    mock: &'a mock_gladia::MockGladia,
    logs: &'a [PublishLog],
    inboxes: &'a [Rc<RefCell<SessionInbox>>],
    tallies: &'a [Vec<Rc<RefCell<ClientTally>>>],
    gauges: &'a ClientGauges,
    phases: &'a [Phase],
    steady: &'a [ProcSample],
    loadgen_steady: &'a [ProcSample],
    after: Option<ProcSample>,
    metrics: Value,
    service_log: (u64, u64),
    log_kinds: std::collections::BTreeMap<String, u64>,
    thread_cpu: std::collections::BTreeMap<String, f64>,
    exit_code: Option<i32>,
    died: bool,
    load_at_start: Option<f64>,
    db: Option<pg::StatementCounts>,
}

fn report(input: ReportInput<'_>) -> Value {
    let args = input.args;
    let mock_sessions = input.mock.sessions();
    // The mock session of each slug: the service sends the slug in custom_metadata.
    let by_slug = |slug: &str| {
        mock_sessions
            .iter()
            .filter(|s| s.init_body["custom_metadata"]["sessionSlug"] == slug)
            .collect::<Vec<_>>()
    };

    // Ingest-added latency.
    let bytes_per_ms = 32.0;
    let mut ingest = Vec::new();
    let mut ingest_aligned = Vec::new();
    let mut uncovered = 0;
    let mut backlogs = Vec::new();
    let mut provider_sessions = 0;
    let (mut pcm_sent, mut pcm_received) = (0u64, 0u64);
    for (slug, log) in input.slugs.iter().zip(input.logs) {
        let sessions = by_slug(slug);
        provider_sessions += sessions.len();
        let Some(first) = sessions.first() else {
            uncovered += log.sends.len();
            continue;
        };
        pcm_sent += log.sends.last().map_or(0, |s| s.1);
        pcm_received += first.pcm.len() as u64;
        let (lat, missing) = stats::ingest_latencies(&log.sends, &first.pcm_arrivals, 0);
        ingest.extend(lat);
        uncovered += missing;
        if let Some(backlog) = stats::min_backlog(&log.sends, &first.pcm_arrivals) {
            backlogs.push(backlog as f64 / bytes_per_ms);
            let (lat, _) = stats::ingest_latencies(&log.sends, &first.pcm_arrivals, backlog);
            ingest_aligned.extend(lat);
        }
    }

    // Fan-out latency, and finals every client should have.
    let mut finals_latency = Vec::new();
    let mut partials_latency = Vec::new();
    let mut unmatched = 0;
    let (mut finals_missing, mut partials_missing) = (0i64, 0i64);
    let (mut finals_sent_total, mut partials_sent_total) = (0usize, 0usize);
    for ((slug, inbox), tallies) in input.slugs.iter().zip(input.inboxes).zip(input.tallies) {
        let mut sent: HashMap<(String, String, bool), Vec<SystemTime>> = HashMap::new();
        let (mut finals_sent, mut partials_sent) = (0, 0);
        for session in by_slug(slug) {
            let prefix: String = session
                .id
                .chars()
                .filter(char::is_ascii_alphanumeric)
                .take(8)
                .collect();
            for (list, is_final) in [
                (&session.finals_sent, true),
                (&session.partials_sent, false),
            ] {
                for t in list {
                    sent.entry((
                        format!("{prefix}:{}", t.id),
                        t.text.trim_start().to_owned(),
                        is_final,
                    ))
                    .or_default()
                    .push(t.sent_at);
                }
            }
            finals_sent += session.finals_sent.len();
            partials_sent += session.partials_sent.len();
        }
        finals_sent_total += finals_sent;
        partials_sent_total += partials_sent;
        let (f, p, u) = stats::fanout_latencies(&sent, &inbox.borrow().arrivals);
        finals_latency.extend(f);
        partials_latency.extend(p);
        unmatched += u;
        for tally in tallies {
            let tally = tally.borrow();
            finals_missing += (finals_sent as i64 - tally.finals as i64).max(0);
            partials_missing += (partials_sent as i64 - tally.partials as i64).max(0);
        }
    }
    let mut all_fanout = finals_latency.clone();
    all_fanout.extend(partials_latency.iter().copied());

    // CPU and memory.
    let phase = |name: &str| {
        input
            .phases
            .iter()
            .find(|p| p.name == name)
            .map(|p| p.sample)
    };
    let started = phase("started");
    let idle = phase("idle_clients_connected");
    let connected = phase("clients_connected");
    let steady_cpu = match (input.steady.first(), input.steady.last()) {
        (Some(a), Some(b)) if input.steady.len() >= 2 => Some(cpu_percent(a, b)),
        _ => None,
    };
    let loadgen_cpu = match (input.loadgen_steady.first(), input.loadgen_steady.last()) {
        (Some(a), Some(b)) if input.loadgen_steady.len() >= 2 => Some(cpu_percent(a, b)),
        _ => None,
    };
    let steady_rss = (!input.steady.is_empty()).then(|| {
        input.steady.iter().map(|s| s.rss_kb as f64).sum::<f64>() / input.steady.len() as f64
    });
    let peak_rss = input.steady.iter().map(|s| s.rss_kb).max();
    let sessions = f64::from(args.sessions);
    let clients_total = f64::from(args.sessions * args.clients);
    let before_load = idle.or(started);
    let round1 = |v: f64| (v * 10.0).round() / 10.0;
    let per = |a: Option<f64>, b: Option<f64>, n: f64| match (a, b) {
        (Some(a), Some(b)) if n > 0.0 => Some(round1((a - b) / n)),
        _ => None,
    };
    let rss = |s: Option<ProcSample>| s.map(|s| s.rss_kb as f64);
    let idle_client_kb = per(rss(idle), rss(started), f64::from(args.idle_clients));
    let load_client_kb = per(rss(connected), rss(before_load), clients_total);
    let session_kb_without_clients = per(steady_rss, rss(connected), sessions);
    let session_kb_with_clients = per(steady_rss, rss(before_load), sessions);
    let cpu_per_session = steady_cpu.map(|c| c / sessions);

    let publish_errors: Vec<String> = input.logs.iter().filter_map(|l| l.error.clone()).collect();
    let close_codes: HashMap<String, u32> = input
        .gauges
        .close_codes
        .borrow()
        .iter()
        .map(|(k, v)| (k.to_string(), *v))
        .collect();
    let db = input.db.map(|d| {
        let per_final =
            |n: u64| (n > 0).then(|| (d.finals_stored as f64 / n as f64 * 10.0).round() / 10.0);
        json!({
            "counts": d,
            "finals_per_transcript_write": per_final(d.transcript_writes),
            "finals_per_statement_any": per_final(d.total),
        })
    });

    json!({
        "config": {
            "sessions": args.sessions,
            "clients_per_session": args.clients,
            "idle_clients": args.idle_clients,
            "seconds": args.seconds,
            "pcm_chunk_ms": args.pcm_chunk_ms,
            "flv_sample_rate": input.track.sample_rate,
            "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
            "load_average_at_start": input.load_at_start,
            "load_average_at_end": service::load_average(),
            "database": if input.db.is_some() { "postgres" } else { "sqlite" },
        },
        "ingest_latency_ms": summarize(ingest),
        "ingest_latency_aligned_ms": summarize(ingest_aligned),
        "ingest": {
            "frames_never_delivered": uncovered,
            "pipeline_min_backlog_ms": summarize(backlogs),
            "pcm_sent_seconds": pcm_sent as f64 / 32_000.0,
            "pcm_received_seconds": pcm_received as f64 / 32_000.0,
            "provider_sessions": provider_sessions,
        },
        "fanout_latency_ms": summarize(all_fanout),
        "fanout_final_latency_ms": summarize(finals_latency),
        "fanout_partial_latency_ms": summarize(partials_latency),
        "fanout": {
            "finals_sent_by_provider": finals_sent_total,
            "partials_sent_by_provider": partials_sent_total,
            "client_messages_without_provider_match": unmatched,
            "finals_missing_at_clients": finals_missing,
            "partials_missing_at_clients": partials_missing,
        },
        "service": {
            "cpu_percent_of_one_core": steady_cpu.map(round1),
            "cpu_percent_of_machine": steady_cpu.map(|c| round1(c / f64::from(std::thread::available_parallelism().map(|n| n.get() as u32).unwrap_or(1)))),
            "cpu_percent_per_session": cpu_per_session.map(|c| (c * 1000.0).round() / 1000.0),
            "rss_kb_started": started.map(|s| s.rss_kb),
            "rss_kb_idle_clients_connected": idle.map(|s| s.rss_kb),
            "rss_kb_clients_connected": connected.map(|s| s.rss_kb),
            "rss_kb_steady_mean": steady_rss.map(|v| v.round()),
            "rss_kb_steady_peak": peak_rss,
            "rss_kb_after_drain": input.after.map(|s| s.rss_kb),
            "threads_steady": input.steady.last().map(|s| s.threads),
            "rss_kb_per_idle_client": idle_client_kb,
            "rss_kb_per_connected_client": load_client_kb,
            "rss_kb_per_session_without_clients": session_kb_without_clients,
            "rss_kb_per_session_with_clients": session_kb_with_clients,
            "steady_window_seconds": match (input.steady.first(), input.steady.last()) {
                (Some(a), Some(b)) => round1(b.at.duration_since(a.at).as_secs_f64()),
                _ => 0.0,
            },
            "log_warnings": input.service_log.0,
            "log_errors": input.service_log.1,
            "log_warning_and_error_kinds": input.log_kinds,
            "cpu_percent_of_one_core_by_thread_kind": input.thread_cpu,
            "exit_code_after_sigterm": input.exit_code,
            "died_during_run": input.died,
            "metrics": input.metrics,
        },
        "loadgen_cpu_percent_of_one_core": loadgen_cpu.map(round1),
        "drops": {
            "publishers_failed": publish_errors.len(),
            "publisher_errors": publish_errors.iter().take(5).collect::<Vec<_>>(),
            "client_connect_failures": input.gauges.connect_failures.get(),
            "client_unexpected_disconnects": input.gauges.unexpected_disconnects.get(),
            "client_close_codes": close_codes,
            "client_unparsable_messages": input.gauges.unparsable.get(),
        },
        "database": db,
    })
}
