//! Did every client get every final once? Checked per client and per final, not by counting:
//! a client that got one final twice and missed another has the right count but is wrong, and
//! in a cluster run one client's instance may miss what another instance delivered.

use std::collections::HashMap;

use crate::clients::{Arrival, TranscriptKey};

/// What one client of a session got of the finals the provider sent for that session.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ClientDelivery {
    /// Finals the provider sent that this client never received.
    pub missing: u64,
    /// Receipts beyond the first of one final (each extra copy counts once).
    pub duplicated: u64,
}

/// One entry per client (`0..clients`, the index of [`Arrival::client`]): how the distinct
/// finals in `sent_finals` arrived at it. Arrivals of anything else (partials, finals the
/// provider never sent) are ignored here; the fan-out counts them as unmatched.
pub fn per_client<'a>(
    sent_finals: impl IntoIterator<Item = &'a TranscriptKey>,
    arrivals: &HashMap<TranscriptKey, Vec<Arrival>>,
    clients: u32,
) -> Vec<ClientDelivery> {
    let mut result = vec![ClientDelivery::default(); clients as usize];
    let mut copies = vec![0u64; clients as usize];
    for key in sent_finals {
        copies.iter_mut().for_each(|c| *c = 0);
        for arrival in arrivals.get(key).into_iter().flatten() {
            // An index out of range cannot come from our own clients; ignore it, not panic.
            if let Some(c) = copies.get_mut(arrival.client as usize) {
                *c += 1;
            }
        }
        for (delivery, &n) in result.iter_mut().zip(&copies) {
            match n {
                0 => delivery.missing += 1,
                n => delivery.duplicated += n - 1,
            }
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::SystemTime;

    fn key(text: &str) -> TranscriptKey {
        ("ab:00_1".to_owned(), text.to_owned(), true)
    }

    fn at(client: u32) -> Arrival {
        Arrival {
            at: SystemTime::UNIX_EPOCH,
            client,
        }
    }

    #[test]
    fn a_final_missing_at_one_client_and_doubled_at_another_is_seen_despite_right_counts() {
        let sent = [key("one"), key("two")];
        // Client 0 got both once; client 1 got "one" twice and "two" never: two finals each.
        let arrivals = HashMap::from([
            (key("one"), vec![at(0), at(1), at(1)]),
            (key("two"), vec![at(0)]),
            (key("not sent"), vec![at(0)]),
        ]);
        let got = per_client(&sent, &arrivals, 3);
        assert_eq!(
            got,
            vec![
                ClientDelivery::default(),
                ClientDelivery {
                    missing: 1,
                    duplicated: 1
                },
                // A client that got nothing (it never connected) misses everything.
                ClientDelivery {
                    missing: 2,
                    duplicated: 0
                },
            ]
        );
    }

    #[test]
    fn an_unknown_client_index_is_ignored() {
        let arrivals = HashMap::from([(key("one"), vec![at(7), at(0)])]);
        assert_eq!(
            per_client(&[key("one")], &arrivals, 1),
            vec![ClientDelivery::default()]
        );
    }
}
