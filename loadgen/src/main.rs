//! Load generator for realtime-core (issue #5 item 3).
//!
//! Starts the mock Gladia provider in this process (so its stamps and ours share one clock),
//! spawns the service binary against it, connects `--clients` WebSocket clients to each of
//! `--sessions` sessions, then publishes one real RTMP stream per session (a pre-encoded AAC
//! FLV paced in real time) for `--seconds`. Meanwhile it prints a progress line every second;
//! at the end it reports ingest-added and fan-out latency, the service's CPU and RSS per
//! session and per client, drops and disconnects, as JSON. With `--instances N` it runs N
//! instances in cluster mode, publishes to the first, spreads the clients over all of them and
//! reports each one's fan-out. See docs/PERFORMANCE.md.
//!
//! One module per phase: [`args`], [`startup`] (with [`instances`]), [`load`] (clients and
//! publishers, spread by [`spread`]), [`sampling`] (progress and the steady window),
//! [`report`] (checking deliveries with [`delivery`]).

mod args;
mod clients;
mod delivery;
mod flv;
mod instances;
mod limits;
mod load;
mod pg;
mod process;
mod publisher;
mod report;
mod sampling;
mod soak;
mod spread;
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
        mut instances,
        counter,
        // Bound, not left to `..`: fields a pattern does not bind are dropped at the end of
        // the `let`, which would remove the databases while the service still uses them.
        cluster_db,
        load_at_start,
        db_dir: _db_dir,
    } = startup::start(&args)?;
    let owner = instances.owner();
    let (pid, owner_http, owner_rtmp) = (owner.pid(), owner.http, owner.rtmp);
    let mut phases = Vec::new();
    actix_rt::time::sleep(Duration::from_secs(1)).await;
    phases.push(Phase::take("started", pid)?);

    let http = Rc::new(clients::http_client());
    let gauges = Rc::new(ClientGauges::default());
    if args.idle_clients > 0 {
        load::connect_idle_clients(&http, owner_http, args.idle_clients, &gauges).await;
        settle().await;
        phases.push(Phase::take("idle_clients_connected", pid)?);
    }
    let addrs = instances.http_addrs();
    let sessions = load::connect_session_clients(&args, &http, &addrs, &gauges).await;
    settle().await;
    phases.push(Phase::take("clients_connected", pid)?);

    let publishers = load::start_publishers(&args, owner_rtmp, &sessions.slugs, &track);
    let watch = sampling::watch(&args, &mut instances, &gauges, &publishers).await?;
    let logs = publishers.finish().await;
    let mut died = watch.died;
    if died.is_none() {
        sampling::drain(&gauges).await;
        died = instances.first_exited();
    }
    let samples = instances.samples();
    let after = samples.first().copied().flatten();
    let metrics = if died.is_none() {
        fetch_metrics(&http, owner_http).await
    } else {
        Value::Null
    };
    let owner = instances.owner();
    let service_log = owner.log_counts();
    let log_kinds = owner.log_kinds();
    let log_tail = instances
        .get(died.unwrap_or(0))
        .map(|s| s.log_tail(30))
        .unwrap_or_default();

    gauges.finishing.set(true);
    let ends = instances.finish(Duration::from_secs(60)).await?;

    let db = match &counter {
        Some(c) => Some(c.count()?),
        None => None,
    };
    // Every instance has stopped: the databases can go.
    drop(counter);
    drop(cluster_db);

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
        instances: &report::Instances {
            http: &addrs,
            samples: &samples,
            ends: &ends,
        },
        load_at_start,
        db,
    });
    let text = serde_json::to_string_pretty(&result)?;
    println!("{text}");
    if let Some(path) = &args.json_out {
        std::fs::write(path, &text).with_context(|| format!("cannot write {}", path.display()))?;
    }
    if let Some(i) = died {
        let which = if ends.len() > 1 {
            format!("instance {i}")
        } else {
            "the service".to_owned()
        };
        eprintln!("loadgen: {which} died during the run; its last log lines:\n{log_tail}");
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
