//! Property test of docs/PROTOCOL.md#resume-and-delivery-guarantees over the client outbox: random interleavings of partial and
//! final events, fanned out to clients that drain at random speeds. Every client must see
//! finals in `seq` order with no gaps, no partial after its utterance's final, and no final
//! later than a partial that was produced after it.

use std::collections::{HashMap, HashSet};

use actors::outbox::{Outbound, Outbox, Pushed};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Event {
    /// A partial for utterance `u` (if it is not final yet).
    Partial(u8),
    /// The final of utterance `u` (if it is not final yet).
    Final(u8),
}

fn events() -> impl Strategy<Value = Vec<Event>> {
    prop::collection::vec(
        prop_oneof![3 => (0u8..6).prop_map(Event::Partial), 1 => (0u8..6).prop_map(Event::Final)],
        1..300,
    )
}

/// Frames are "kind:utterance:seq-or-event-index" so the checker can read them back.
fn simulate(
    events: &[Event],
    speeds: &[usize],
    max_finals: usize,
) -> (Vec<(Vec<String>, bool)>, i64) {
    let mut clients: Vec<(Outbox, Vec<String>, bool)> = speeds
        .iter()
        .map(|_| (Outbox::new(max_finals), Vec::new(), false))
        .collect();
    let mut finalized: HashSet<u8> = HashSet::new();
    // Utterance ids restart per "provider session" in real life; here each round of six finals
    // gets a new generation, like the provider-session prefix does.
    let mut generation: HashMap<u8, u32> = HashMap::new();
    let mut seq = 0i64;
    for (index, event) in events.iter().enumerate() {
        let outbound = match *event {
            Event::Partial(u) if !finalized.contains(&u) => {
                let id = format!("{}-{u}", generation.get(&u).copied().unwrap_or(0));
                Some(Outbound::Partial {
                    utterance_id: id.as_str().into(),
                    frame: format!("P:{id}:{index}").into(),
                })
            }
            Event::Final(u) if !finalized.contains(&u) => {
                seq += 1;
                let id = format!("{}-{u}", generation.get(&u).copied().unwrap_or(0));
                finalized.insert(u);
                Some(Outbound::Final {
                    session: "s".into(),
                    seq,
                    utterance_id: id.as_str().into(),
                    frame: format!("F:{id}:{seq}:{index}").into(),
                })
            }
            _ => None,
        };
        if finalized.len() == 6 {
            // Every utterance final: start a new generation of ids.
            for u in 0..6 {
                *generation.entry(u).or_default() += 1;
            }
            finalized.clear();
        }
        for (i, (outbox, seen, closed)) in clients.iter_mut().enumerate() {
            if *closed {
                continue;
            }
            if let Some(o) = outbound.clone() {
                if outbox.push(o) == Pushed::TooManyQueued {
                    *closed = true;
                    continue;
                }
            }
            for _ in 0..speeds[i] {
                match outbox.pop() {
                    Some(frame) => seen.push(frame.to_string()),
                    None => break,
                }
            }
        }
    }
    let results = clients
        .into_iter()
        .map(|(mut outbox, mut seen, closed)| {
            if !closed {
                while let Some(frame) = outbox.pop() {
                    seen.push(frame.to_string());
                }
            }
            (seen, closed)
        })
        .collect();
    (results, seq)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, .. ProptestConfig::default() })]

    #[test]
    fn every_client_sees_a_lawful_stream(events in events(), speeds in prop::collection::vec(0usize..4, 1..6)) {
        for (seen, closed) in simulate(&events, &speeds, 1_000_000).0 {
            prop_assert!(!closed);
            let mut next_seq = 1;
            let mut final_at: HashMap<String, usize> = HashMap::new();
            let mut newest_event_delivered = None::<usize>;
            for frame in &seen {
                let parts: Vec<&str> = frame.split(':').collect();
                match parts[0] {
                    "F" => {
                        let seq: i64 = parts[2].parse().unwrap();
                        let index: usize = parts[3].parse().unwrap();
                        prop_assert_eq!(seq, next_seq, "finals out of order or with a gap: {:?}", seen);
                        next_seq += 1;
                        // No partial produced after this final may have been delivered before it.
                        if let Some(newest) = newest_event_delivered {
                            prop_assert!(
                                !seen.iter().take_while(|f| *f != frame).any(|f| f.starts_with("P:") && f.rsplit(':').next().unwrap().parse::<usize>().unwrap() > index),
                                "a newer partial overtook final {} (newest delivered {}): {:?}", frame, newest, seen
                            );
                        }
                        final_at.insert(parts[1].to_owned(), index);
                    }
                    "P" => {
                        let index: usize = parts[2].parse().unwrap();
                        prop_assert!(!final_at.contains_key(parts[1]), "partial after its final: {} in {:?}", frame, seen);
                        newest_event_delivered = Some(newest_event_delivered.map_or(index, |n: usize| n.max(index)));
                    }
                    _ => unreachable!(),
                }
            }
            // Nothing lost: every final produced reached every client.
            let produced = seen.iter().filter(|f| f.starts_with("F:")).count();
            prop_assert_eq!(produced as i64, next_seq - 1);
        }
    }

    #[test]
    fn a_client_too_far_behind_is_closed_not_grown(events in events(), max in 1usize..5) {
        // Speed 0: this client never drains. It is closed once `max` finals wait, so its queue
        // never holds more than `max` finals plus one partial per open utterance.
        let (results, finals_produced) = simulate(&events, &[0], max);
        let (seen, closed) = &results[0];
        prop_assert_eq!(*closed, finals_produced > max as i64);
        if !closed {
            prop_assert_eq!(seen.iter().filter(|f| f.starts_with("F:")).count() as i64, finals_produced);
        }
    }
}
