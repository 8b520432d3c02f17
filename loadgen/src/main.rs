//! Load generator for realtime-core (issue #5 item 3).
//!
//! Starts the mock Gladia provider in this process (so its stamps and ours share one clock),
//! spawns the service binary against it, connects `--clients` WebSocket clients to each of
//! `--sessions` sessions, then publishes one real RTMP stream per session (a pre-encoded AAC
//! FLV paced in real time) for `--seconds`. Meanwhile it prints a progress line every second;
//! at the end it reports ingest-added and fan-out latency, the service's CPU and RSS per
//! session and per client, drops and disconnects, as JSON. See docs/PERFORMANCE.md.
//!
//! One module per phase: [`args`], [`startup`], [`load`] (clients and publishers),
//! [`sampling`] (progress and the steady window), [`report`].

mod args;
mod clients;
mod delivery;
mod flv;
mod limits;
mod load;
mod pg;
mod process;
mod publisher;
mod report;
mod sampling;
mod soak;
mod startup;
mod stats;

use std::rc::Rc;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use serde_json::Value;

use crate::args::Args;
use crate::clients::ClientGauges;
use crate::report::{report, ReportInput};
use crate::sampling::{settle, Phase};

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

async fn run(args: Args) -> anyhow::Result<i32> {
    let startup::Started {
        track,
        mock,
        mut service,
        counter,
        load_at_start,
        // Bound, not left to `..`: fields a pattern does not bind are dropped at the end of
        // the `let`, which removed the SQLite directory while the service was still using it.
        db_dir: _db_dir,
    } = startup::start(&args)?;
    let pid = service.pid();
    let mut phases = Vec::new();
    actix_rt::time::sleep(Duration::from_secs(1)).await;
    phases.push(Phase::take("started", pid)?);

    let http = Rc::new(clients::http_client());
    let gauges = Rc::new(ClientGauges::default());
    if args.idle_clients > 0 {
        load::connect_idle_clients(&http, service.http, args.idle_clients, &gauges).await;
        settle().await;
        phases.push(Phase::take("idle_clients_connected", pid)?);
    }
    let sessions = load::connect_session_clients(&args, &http, service.http, &gauges).await;
    settle().await;
    phases.push(Phase::take("clients_connected", pid)?);

    let publishers = load::start_publishers(&args, service.rtmp, &sessions.slugs, &track);
    let watch = sampling::watch(&args, &mut service, &gauges, &publishers).await?;
    let logs = publishers.finish().await;
    let mut died = watch.died;
    if died.is_none() {
        sampling::drain(&gauges).await;
        died = service.exited();
    }
    let after = process::sample(pid);
    let metrics = if died.is_none() {
        fetch_metrics(&http, service.http).await
    } else {
        Value::Null
    };
    let service_log = service.log_counts();
    let log_kinds = service.log_kinds();
    let log_tail = service.log_tail(30);

    gauges.finishing.set(true);
    let exit_code = if died.is_none() {
        // SIGTERM and the wait for the exit block: off the runtime the clients still run on.
        let (service_back, code) = actix_rt::task::spawn_blocking(move || {
            let code = service.terminate_within(Duration::from_secs(60));
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
        Some(c) => Some(c.count()?),
        None => None,
    };
    // The service has stopped: the database can go.
    drop(counter);

    let result = report(ReportInput {
        args: &args,
        track: &track,
        slugs: &sessions.slugs,
        mock: &mock,
        logs: &logs,
        inboxes: &sessions.inboxes,
        tallies: &sessions.tallies,
        gauges: &gauges,
        phases: &phases,
        steady: &watch.steady,
        loadgen_steady: &watch.loadgen_steady,
        series: &watch.series,
        after,
        metrics,
        service_log,
        log_kinds,
        thread_cpu: watch.thread_cpu,
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
    let broken = limits::broken(args.limits(), &result);
    if !broken.is_empty() {
        eprintln!("loadgen: the run broke its bounds: {}", broken.join("; "));
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

/// The service's `/metrics` at the end of the run (`null` if it does not answer).
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
