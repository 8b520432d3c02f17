//! Clients over instances (`--instances N`): which instance each WebSocket client connects to,
//! what the clients of each instance got, and how much later the clients of the other
//! instances got their finals than those of instance 0, which owns every session.

use serde::Serialize;

use crate::clients::ClientTally;
use crate::delivery::ClientDelivery;
use crate::stats::{summarize, FanOut};

/// The instance of client `client` of session `session`: round-robin within the session,
/// starting one further for each session, so that every instance gets clients even when a
/// session has fewer clients than there are instances, and the totals stay even.
pub fn instance_of(session: usize, client: u32, instances: u32) -> usize {
    if instances <= 1 {
        return 0;
    }
    (session + client as usize) % instances as usize
}

/// What the clients of one instance got, over every session.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct InstanceTally {
    pub clients: u32,
    pub clients_connected: u32,
    /// Closed by the server or broken before the run asked them to go.
    pub clients_lost: u32,
    pub finals_received: u64,
    pub partials_received: u64,
    pub finals_missing: u64,
    pub finals_duplicated: u64,
    pub final_latencies_ms: Vec<f64>,
    pub partial_latencies_ms: Vec<f64>,
}

/// Adds one session to `per_instance` (one entry per instance): its fan-out latencies, and
/// per client (`deliveries` and `clients` are indexed like [`crate::clients::Arrival::client`])
/// what it got.
pub fn add_session(
    per_instance: &mut [InstanceTally],
    session: usize,
    fanout: &FanOut,
    deliveries: &[ClientDelivery],
    clients: &[ClientTally],
) {
    fn at(
        per_instance: &mut [InstanceTally],
        session: usize,
        client: u32,
    ) -> Option<&mut InstanceTally> {
        let instances = per_instance.len() as u32;
        per_instance.get_mut(instance_of(session, client, instances))
    }
    for latency in &fanout.finals {
        if let Some(t) = at(per_instance, session, latency.client) {
            t.final_latencies_ms.push(latency.ms);
        }
    }
    for latency in &fanout.partials {
        if let Some(t) = at(per_instance, session, latency.client) {
            t.partial_latencies_ms.push(latency.ms);
        }
    }
    for (client, delivery) in (0u32..).zip(deliveries) {
        if let Some(t) = at(per_instance, session, client) {
            t.finals_missing += delivery.missing;
            t.finals_duplicated += delivery.duplicated;
        }
    }
    for (client, tally) in (0u32..).zip(clients) {
        if let Some(t) = at(per_instance, session, client) {
            t.clients += 1;
            t.clients_connected += u32::from(tally.connected);
            t.clients_lost += u32::from(tally.lost);
            t.finals_received += tally.finals;
            t.partials_received += tally.partials;
        }
    }
}

/// How much later clients on the other instances got a transcript than clients on instance 0:
/// each percentile over every latency of the other instances, minus the same percentile over
/// instance 0's. A difference of percentiles, not a percentile of differences (the two sides
/// are different clients).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct RemoteExtra {
    pub p50_ms: f64,
    pub p99_ms: f64,
}

/// `None` when either side has no latency (one instance, or no transcript arrived).
pub fn remote_extra<'a>(
    owner: &[f64],
    others: impl IntoIterator<Item = &'a [f64]>,
) -> Option<RemoteExtra> {
    let remote: Vec<f64> = others.into_iter().flatten().copied().collect();
    if owner.is_empty() || remote.is_empty() {
        return None;
    }
    let (local, remote) = (summarize(owner.to_vec()), summarize(remote));
    let round = |v: f64| (v * 1000.0).round() / 1000.0;
    Some(RemoteExtra {
        p50_ms: round(remote.p50_ms - local.p50_ms),
        p99_ms: round(remote.p99_ms - local.p99_ms),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::ClientLatency;

    #[test]
    fn each_session_spreads_its_clients_round_robin_starting_one_further() {
        let of = |session, clients: u32, n| {
            (0..clients)
                .map(|c| instance_of(session, c, n))
                .collect::<Vec<_>>()
        };
        assert_eq!(of(0, 4, 1), vec![0, 0, 0, 0], "one instance: all on it");
        assert_eq!(of(0, 4, 3), vec![0, 1, 2, 0]);
        assert_eq!(of(1, 4, 3), vec![1, 2, 0, 1]);
        // Two clients per session over three instances: every instance still gets clients.
        let mut totals = [0; 3];
        for session in 0..3 {
            for i in of(session, 2, 3) {
                totals[i] += 1;
            }
        }
        assert_eq!(totals, [2, 2, 2]);
    }

    #[test]
    fn a_session_is_split_by_the_instance_of_each_client() {
        let mut per_instance = vec![InstanceTally::default(); 2];
        let latency = |ms, client| ClientLatency { ms, client };
        let fanout = FanOut {
            finals: vec![latency(1.0, 0), latency(5.0, 1), latency(2.0, 2)],
            partials: vec![latency(0.5, 1)],
            unmatched: 0,
        };
        let deliveries = [
            ClientDelivery::default(),
            ClientDelivery {
                missing: 1,
                duplicated: 2,
            },
            ClientDelivery::default(),
        ];
        let tally = |finals, lost| ClientTally {
            finals,
            connected: true,
            lost,
            ..ClientTally::default()
        };
        let clients = [tally(1, false), tally(1, true), tally(1, false)];
        // Session 1: clients 0, 1, 2 go to instances 1, 0, 1.
        add_session(&mut per_instance, 1, &fanout, &deliveries, &clients);
        let (owner, other) = (&per_instance[0], &per_instance[1]);
        assert_eq!(owner.final_latencies_ms, vec![5.0]);
        assert_eq!(owner.partial_latencies_ms, vec![0.5]);
        assert_eq!((owner.clients, owner.clients_lost), (1, 1));
        assert_eq!((owner.finals_missing, owner.finals_duplicated), (1, 2));
        assert_eq!(other.final_latencies_ms, vec![1.0, 2.0]);
        assert_eq!((other.clients, other.clients_connected), (2, 2));
        assert_eq!((other.finals_received, other.finals_missing), (2, 0));
    }

    #[test]
    fn the_remote_extra_is_a_difference_of_percentiles() {
        let owner: Vec<f64> = (1..=100).map(f64::from).collect();
        // Two other instances: 3 ms later at every rank, together.
        let a: Vec<f64> = (1..=50).map(|v| f64::from(v * 2 - 1) + 3.0).collect();
        let b: Vec<f64> = (1..=50).map(|v| f64::from(v * 2) + 3.0).collect();
        let extra = remote_extra(&owner, [a.as_slice(), b.as_slice()]);
        assert_eq!(
            extra,
            Some(RemoteExtra {
                p50_ms: 3.0,
                p99_ms: 3.0
            })
        );
        // Each side's own percentile: remote clients later at the median but with a shorter
        // tail than the owner's give a negative p99.
        let fast_tail = [1.0, 2.0, 60.0];
        let slow_tail = [1.5, 2.5, 10.0];
        let extra = remote_extra(&fast_tail, [slow_tail.as_slice()]);
        assert_eq!(
            extra,
            Some(RemoteExtra {
                p50_ms: 0.5,
                p99_ms: -50.0
            })
        );
        assert_eq!(remote_extra(&owner, []), None, "one instance");
        assert_eq!(remote_extra(&[], [a.as_slice()]), None);
    }
}
