//! The result, as JSON: ingest-added and fan-out latency (matched against the mock's own
//! stamps), the service's CPU and memory per session and per client, drops and disconnects,
//! and with several instances the fan-out of each and what the followers add to it.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::SystemTime;

use serde_json::{json, Value};

use crate::args::Args;
use crate::clients::{ClientGauges, ClientTally, SessionInbox};
use crate::delivery;
use crate::flv;
use crate::instances::InstanceEnd;
use crate::pg;
use crate::process::{self, cpu_percent, ProcSample};
use crate::publisher::PublishLog;
use crate::sampling::Phase;
use crate::spread::{self, InstanceTally};
use crate::stats::{self, summarize};

/// What the run knows of each instance (index 0 is the owner), in instance order.
pub struct Instances<'a> {
    pub http: &'a [std::net::SocketAddr],
    /// CPU time and memory after the drain (`None`: gone).
    pub samples: &'a [Option<ProcSample>],
    pub ends: &'a [InstanceEnd],
}

pub struct ReportInput<'a> {
    pub args: &'a Args,
    pub track: &'a flv::AacTrack,
    pub slugs: &'a [String],
    pub mock: &'a mock_gladia::MockGladia,
    pub logs: &'a [PublishLog],
    pub inboxes: &'a [Rc<RefCell<SessionInbox>>],
    pub tallies: &'a [Vec<Rc<RefCell<ClientTally>>>],
    pub gauges: &'a ClientGauges,
    pub phases: &'a [Phase],
    pub steady: &'a [ProcSample],
    pub loadgen_steady: &'a [ProcSample],
    pub series: &'a [crate::soak::Point],
    pub after: Option<ProcSample>,
    pub metrics: Value,
    pub service_log: (u64, u64),
    pub log_kinds: std::collections::BTreeMap<String, u64>,
    pub thread_cpu: std::collections::BTreeMap<String, f64>,
    pub instances: &'a Instances<'a>,
    pub load_at_start: Option<f64>,
    pub db: Option<pg::StatementCounts>,
}

pub fn report(input: ReportInput<'_>) -> Value {
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
    let (mut finals_missing, mut finals_duplicated, mut partials_missing) = (0u64, 0u64, 0i64);
    let (mut finals_sent_total, mut partials_sent_total) = (0usize, 0usize);
    let mut per_instance = vec![InstanceTally::default(); input.instances.ends.len().max(1)];
    let sessions_in_order = input.slugs.iter().zip(input.inboxes).zip(input.tallies);
    for (session, ((slug, inbox), tallies)) in sessions_in_order.enumerate() {
        let mut sent: HashMap<(String, String, bool), Vec<SystemTime>> = HashMap::new();
        let mut partials_sent = 0;
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
            finals_sent_total += session.finals_sent.len();
            partials_sent += session.partials_sent.len();
        }
        partials_sent_total += partials_sent;
        let inbox = inbox.borrow();
        let fanout = stats::fanout_latencies(&sent, &inbox.arrivals);
        finals_latency.extend(fanout.finals.iter().map(|l| l.ms));
        partials_latency.extend(fanout.partials.iter().map(|l| l.ms));
        unmatched += fanout.unmatched;
        let sent_finals = sent.keys().filter(|key| key.2);
        let deliveries = delivery::per_client(sent_finals, &inbox.arrivals, tallies.len() as u32);
        for delivery in &deliveries {
            finals_missing += delivery.missing;
            finals_duplicated += delivery.duplicated;
        }
        let tallies: Vec<ClientTally> = tallies.iter().map(|t| t.borrow().clone()).collect();
        // Partials may be replaced or dropped for a slow client by design: only counted.
        for tally in &tallies {
            partials_missing += (partials_sent as i64 - tally.partials as i64).max(0);
        }
        spread::add_session(&mut per_instance, session, &fanout, &deliveries, &tallies);
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
            "load_average_at_end": process::load_average(),
            "database": if args.postgres || args.instances > 1 { "postgres" } else { "sqlite" },
            "instances": args.instances,
            "sampled_instance": (args.instances > 1).then_some(
                "service.* (CPU, RSS, threads, thread kinds, log kinds, metrics) and soak are of \
                 instance 0, the owner of every session; instances[] has every instance's fan-out, \
                 deliveries, log counts and CPU seconds"),
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
            "finals_duplicated_at_clients": finals_duplicated,
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
            "exit_code_after_sigterm": input.instances.ends.first().and_then(|e| e.exit_code),
            "died_during_run": input.instances.ends.first().is_some_and(|e| e.died),
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
        "soak": crate::soak::summary(input.series, input.args.sample_every),
        "instances": instances_section(input.instances, &per_instance),
        "remote_extra_latency_ms": remote_extra_section(&per_instance),
    })
}

/// One entry per instance: where it listened, what its clients got and how fast, how it ended.
fn instances_section(instances: &Instances<'_>, per_instance: &[InstanceTally]) -> Value {
    let entries: Vec<Value> = per_instance
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let end = instances.ends.get(i);
            let sample = instances.samples.get(i).copied().flatten();
            json!({
                "instance": i,
                "role": if i == 0 { "owner: every publish" } else { "follower: clients only" },
                "http": instances.http.get(i).map(ToString::to_string),
                "clients": t.clients,
                "clients_connected": t.clients_connected,
                "clients_lost": t.clients_lost,
                "fanout_final_latency_ms": summarize(t.final_latencies_ms.clone()),
                "fanout_partial_latency_ms": summarize(t.partial_latencies_ms.clone()),
                "finals_received": t.finals_received,
                "partials_received": t.partials_received,
                "finals_missing_at_clients": t.finals_missing,
                "finals_duplicated_at_clients": t.finals_duplicated,
                "cpu_seconds_total": sample.map(|s| (s.cpu_seconds * 10.0).round() / 10.0),
                "rss_kb_after_drain": sample.map(|s| s.rss_kb),
                "log_warnings": end.map(|e| e.log_warnings),
                "log_errors": end.map(|e| e.log_errors),
                "exit_code_after_sigterm": end.and_then(|e| e.exit_code),
                "died_during_run": end.map(|e| e.died),
            })
        })
        .collect();
    Value::Array(entries)
}

/// `null` with one instance; otherwise p50/p99 of the followers' clients minus those of the
/// owner's clients, for finals and for partials.
fn remote_extra_section(per_instance: &[InstanceTally]) -> Value {
    let Some((owner, others)) = per_instance.split_first() else {
        return Value::Null;
    };
    if others.is_empty() {
        return Value::Null;
    }
    let finals = spread::remote_extra(
        &owner.final_latencies_ms,
        others.iter().map(|t| t.final_latencies_ms.as_slice()),
    );
    let partials = spread::remote_extra(
        &owner.partial_latencies_ms,
        others.iter().map(|t| t.partial_latencies_ms.as_slice()),
    );
    json!({
        "p50_ms": finals.map(|f| f.p50_ms),
        "p99_ms": finals.map(|f| f.p99_ms),
        "partials_p50_ms": partials.map(|p| p.p50_ms),
        "partials_p99_ms": partials.map(|p| p.p99_ms),
        "is": "a difference of percentiles, not a percentile of differences: the p50 (p99) \
               fan-out latency of finals (partials) at the clients of instances 1.., all \
               together, minus the p50 (p99) at the clients of instance 0",
    })
}
