//! Measuring while the load runs: the service's CPU and memory at named phases, a progress
//! line every second, the samples of the steady window (from `--warmup-seconds` after the
//! last publisher started), and the drain of trailing finals at the end. With several
//! instances only instance 0 (the owner of every session) is sampled; all are watched for an
//! early exit.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context as _;
use tokio::time::Instant;

use crate::args::Args;
use crate::clients::ClientGauges;
use crate::instances::Instances;
use crate::load::Publishers;
use crate::process::{self, cpu_percent, ProcSample};
use crate::soak;

/// The service's sample at a named moment (`started`, `clients_connected`…).
pub struct Phase {
    pub name: &'static str,
    pub sample: ProcSample,
}

impl Phase {
    pub fn take(name: &'static str, pid: u32) -> anyhow::Result<Phase> {
        let sample =
            process::sample(pid).with_context(|| format!("service process gone ({name})"))?;
        Ok(Phase { name, sample })
    }
}

/// What was sampled while the publishers ran.
pub struct Watch {
    /// The service, once a second over the steady window.
    pub steady: Vec<ProcSample>,
    /// The load generator itself, over the same window.
    pub loadgen_steady: Vec<ProcSample>,
    /// % of one core per thread kind over the steady window.
    pub thread_cpu: BTreeMap<String, f64>,
    /// The first instance that exited during the run.
    pub died: Option<usize>,
    /// Every `--sample-every` seconds from the first publish (`crate::soak`).
    pub series: Vec<soak::Point>,
}

/// Lets connection set-up work (actors, buffers) finish before RSS is read.
pub async fn settle() {
    actix_rt::time::sleep(Duration::from_secs(2)).await;
}

/// Prints progress every second until the publishers stop (or the service dies), sampling
/// the service and this process over the steady window.
pub async fn watch(
    args: &Args,
    instances: &mut Instances,
    gauges: &ClientGauges,
    publishers: &Publishers,
) -> anyhow::Result<Watch> {
    let pid = instances.owner().pid();
    let self_pid = std::process::id();
    let sample =
        |what: &str| process::sample(pid).with_context(|| format!("service process gone ({what})"));
    let window_start = publishers.last_start + Duration::from_secs(args.warmup_seconds);
    let mut steady: Vec<ProcSample> = Vec::new();
    let mut loadgen_steady: Vec<ProcSample> = Vec::new();
    let mut previous = sample("publishing")?;
    let mut previous_self = process::sample(self_pid);
    let mut previous_messages = 0;
    let mut died = None;
    let mut threads_at_window_start = BTreeMap::new();
    let mut threads_at_window_end = BTreeMap::new();
    let mut series = Vec::new();
    let mut tick = tokio::time::interval_at(
        publishers.first_start + Duration::from_secs(1),
        Duration::from_secs(1),
    );
    while Instant::now() < publishers.until {
        tick.tick().await;
        if let Some(instance) = instances.first_exited() {
            died = Some(instance);
            break;
        }
        let now = sample("progress")?;
        let me = process::sample(self_pid);
        let at_s = publishers.first_start.elapsed().as_secs_f64();
        if (at_s.round() as u64).is_multiple_of(args.sample_every) {
            series.push(soak::Point {
                at_s,
                rss_kb: now.rss_kb,
                threads: now.threads,
                fds: soak::open_fds(pid).unwrap_or(0),
            });
        }
        let messages = gauges.messages.get();
        let loadgen_cpu = match (&previous_self, &me) {
            (Some(a), Some(b)) => cpu_percent(a, b),
            _ => f64::NAN,
        };
        eprintln!(
            "[{:>4.0}s] publishing {}/{} (failed {}), clients {} (lost {}), msgs {} (+{}/s), \
             service cpu {:.0}% rss {:.1} MB threads {}, loadgen cpu {:.0}%, load {:.2}",
            publishers.first_start.elapsed().as_secs_f64(),
            publishers.gauges.publishing.get(),
            args.sessions,
            publishers.gauges.failed.get(),
            gauges.connected.get(),
            gauges.unexpected_disconnects.get(),
            messages,
            messages - previous_messages,
            cpu_percent(&previous, &now),
            now.rss_kb as f64 / 1024.0,
            now.threads,
            loadgen_cpu,
            process::load_average().unwrap_or(f64::NAN),
        );
        if Instant::now() >= window_start {
            if steady.is_empty() {
                threads_at_window_start = process::thread_cpu(pid);
            }
            threads_at_window_end = process::thread_cpu(pid);
            steady.push(now);
            if let Some(me) = me {
                loadgen_steady.push(me);
            }
        }
        previous = now;
        previous_self = me;
        previous_messages = messages;
    }
    let window = match (steady.first(), steady.last()) {
        (Some(a), Some(b)) => b.at.duration_since(a.at).as_secs_f64(),
        _ => 0.0,
    };
    let thread_cpu = threads_at_window_end
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
    Ok(Watch {
        steady,
        loadgen_steady,
        thread_cpu,
        died,
        series,
    })
}

/// Waits for the trailing finals (they come after the reconnect grace of 1 s and
/// stop_recording): until no client message arrived for 3 s, at most 20 s.
pub async fn drain(gauges: &ClientGauges) {
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
}
