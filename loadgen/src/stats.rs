//! Latency summaries and the two latency computations (ingest-added, fan-out).

use std::collections::HashMap;
use std::time::SystemTime;

use serde::Serialize;

use crate::clients::{Arrival, TranscriptKey};

/// Percentiles of a set of latencies in ms (exact: the values are sorted).
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Summary {
    pub count: usize,
    pub min_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
}

pub fn summarize(mut values: Vec<f64>) -> Summary {
    if values.is_empty() {
        return Summary::default();
    }
    values.sort_by(f64::total_cmp);
    let at = |q: f64| {
        let rank = (q * values.len() as f64).ceil() as usize;
        values[rank.clamp(1, values.len()) - 1]
    };
    let round = |v: f64| (v * 1000.0).round() / 1000.0;
    Summary {
        count: values.len(),
        min_ms: round(values[0]),
        p50_ms: round(at(0.50)),
        p90_ms: round(at(0.90)),
        p99_ms: round(at(0.99)),
        max_ms: round(values[values.len() - 1]),
        mean_ms: round(values.iter().sum::<f64>() / values.len() as f64),
    }
}

/// Signed `a - b` in ms.
pub fn ms_between(a: SystemTime, b: SystemTime) -> f64 {
    match a.duration_since(b) {
        Ok(d) => d.as_secs_f64() * 1000.0,
        Err(e) => -e.duration().as_secs_f64() * 1000.0,
    }
}

/// Ingest-added latency of one stream. `sends`: (send time, cumulative PCM bytes once that
/// frame is decoded); `arrivals`: (arrival time at the provider, cumulative PCM bytes
/// received). A frame's latency is the first arrival whose cumulative count covers the
/// frame's end, minus its send time; with `shift` bytes the frame's end is moved earlier
/// (to factor out a constant decoder/resampler delay). Frames never covered are counted.
pub fn ingest_latencies(
    sends: &[(SystemTime, u64)],
    arrivals: &[(SystemTime, u64)],
    shift: u64,
) -> (Vec<f64>, usize) {
    let mut latencies = Vec::with_capacity(sends.len());
    let mut uncovered = 0;
    for &(sent_at, end) in sends {
        let end = end.saturating_sub(shift).max(1);
        let index = arrivals.partition_point(|&(_, bytes)| bytes < end);
        match arrivals.get(index) {
            Some(&(arrived_at, _)) => latencies.push(ms_between(arrived_at, sent_at)),
            None => uncovered += 1,
        }
    }
    (latencies, uncovered)
}

/// The smallest backlog seen while publishing: at each arrival, PCM already sent (as
/// AAC) minus PCM received. Its minimum over the stream is the audio the pipeline always holds
/// back (decoder priming, resampler filter, a partly filled chunk), in bytes.
pub fn min_backlog(sends: &[(SystemTime, u64)], arrivals: &[(SystemTime, u64)]) -> Option<u64> {
    let last_send = sends.last()?.0;
    arrivals
        .iter()
        .filter(|(at, _)| *at <= last_send)
        .filter_map(|&(at, received)| {
            let index = sends.partition_point(|&(sent_at, _)| sent_at <= at);
            let sent = if index == 0 { 0 } else { sends[index - 1].1 };
            (sent > 0).then(|| sent.saturating_sub(received))
        })
        .min()
}

/// One fan-out latency, with the client it was measured at (its index in its session).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClientLatency {
    pub ms: f64,
    pub client: u32,
}

/// The fan-out latencies of one session.
#[derive(Debug, Default)]
pub struct FanOut {
    pub finals: Vec<ClientLatency>,
    pub partials: Vec<ClientLatency>,
    /// Client arrivals with no provider send to match.
    pub unmatched: usize,
}

/// Fan-out latency: each client arrival minus the time the provider sent that transcript.
/// `sent`: (utterance id as the service names it, trimmed text, is_final) → send times.
pub fn fanout_latencies(
    sent: &HashMap<TranscriptKey, Vec<SystemTime>>,
    received: &HashMap<TranscriptKey, Vec<Arrival>>,
) -> FanOut {
    let mut fanout = FanOut::default();
    for (key, arrivals) in received {
        let Some(candidates) = sent.get(key) else {
            fanout.unmatched += arrivals.len();
            continue;
        };
        for arrival in arrivals {
            // The latest send of that same text not after the arrival (texts rarely repeat).
            let best = candidates.iter().filter(|&&s| s <= arrival.at).max();
            match best {
                Some(&s) => {
                    let latency = ClientLatency {
                        ms: ms_between(arrival.at, s),
                        client: arrival.client,
                    };
                    if key.2 {
                        fanout.finals.push(latency);
                    } else {
                        fanout.partials.push(latency);
                    }
                }
                None => fanout.unmatched += 1,
            }
        }
    }
    fanout
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn t(ms: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_millis(1_000_000 + ms)
    }

    #[test]
    fn percentiles_are_exact_ranks() {
        let s = summarize((1..=100).map(f64::from).collect());
        assert_eq!(s.count, 100);
        assert_eq!(s.p50_ms, 50.0);
        assert_eq!(s.p99_ms, 99.0);
        assert_eq!(s.max_ms, 100.0);
        assert_eq!(s.min_ms, 1.0);
        assert_eq!(summarize(vec![]).count, 0);
    }

    #[test]
    fn ingest_latency_waits_for_the_chunk_that_covers_the_frame() {
        // Frames of 100 bytes every 20 ms; the service forwards 200-byte chunks 5 ms after
        // the second frame of each pair.
        let sends: Vec<_> = (1..=4).map(|i| (t(i * 20), i * 100)).collect();
        let arrivals = vec![(t(45), 200), (t(85), 400)];
        let (lat, uncovered) = ingest_latencies(&sends, &arrivals, 0);
        assert_eq!(lat, vec![25.0, 5.0, 25.0, 5.0]);
        assert_eq!(uncovered, 0);
        let (_, uncovered) = ingest_latencies(&sends, &arrivals[..1], 0);
        assert_eq!(uncovered, 2);
        assert_eq!(min_backlog(&sends, &arrivals), Some(0));
        // A pipeline that always holds 50 bytes back.
        let late = vec![(t(45), 150), (t(85), 350)];
        assert_eq!(min_backlog(&sends, &late), Some(50));
        let (lat, _) = ingest_latencies(&sends, &late, 50);
        assert_eq!(lat, vec![25.0, 5.0, 25.0, 5.0]);
    }

    #[test]
    fn fanout_matches_by_id_text_and_finality() {
        let key = |text: &str, f: bool| ("ab:00_1".to_owned(), text.to_owned(), f);
        let at = |ms: u64, client: u32| Arrival { at: t(ms), client };
        let sent = HashMap::from([
            (key("hello", false), vec![t(0)]),
            (key("hello world", true), vec![t(10)]),
        ]);
        let received = HashMap::from([
            (key("hello", false), vec![at(1, 0), at(3, 1)]),
            (key("hello world", true), vec![at(12, 1)]),
            (key("never sent", true), vec![at(20, 0)]),
        ]);
        let mut fanout = fanout_latencies(&sent, &received);
        fanout.partials.sort_by(|a, b| a.ms.total_cmp(&b.ms));
        let ms = |l: &[ClientLatency]| l.iter().map(|l| (l.ms, l.client)).collect::<Vec<_>>();
        assert_eq!(ms(&fanout.finals), vec![(2.0, 1)]);
        assert_eq!(ms(&fanout.partials), vec![(1.0, 0), (3.0, 1)]);
        assert_eq!(fanout.unmatched, 1);
    }
}
