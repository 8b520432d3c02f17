//! How many RTMP connections may be open at once: on the whole listener
//! (`RTMP_MAX_CONNECTIONS`) and from one publisher address (`RTMP_MAX_CONNECTIONS_PER_IP`),
//! docs/PROTOCOL.md#hostile-input-and-limits.
//!
//! A connection is admitted once its publisher's address is known (behind a PROXY-protocol
//! load balancer, after the header), under both limits at once, and holds a [`Slot`] that gives
//! both places back when dropped, so however a connection task ends (close, error, panic) the
//! counts stay true.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// A connection refused by one of the limits; `Display` is the log line's reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum LimitRefusal {
    #[error("the listener holds RTMP_MAX_CONNECTIONS ({limit}) connections")]
    Listener { limit: usize },
    #[error("this address holds RTMP_MAX_CONNECTIONS_PER_IP ({limit}) connections")]
    Address { limit: usize },
}

/// The live counts and their limits, shared by the connection tasks; the lock is held for a
/// counter update only.
#[derive(Clone)]
pub(crate) struct ConnectionLimits {
    max_total: usize,
    max_per_address: usize,
    live: Arc<Mutex<Live>>,
}

#[derive(Default)]
struct Live {
    total: usize,
    /// Only addresses with a live connection have an entry.
    per_address: HashMap<IpAddr, usize>,
}

impl ConnectionLimits {
    pub(crate) fn new(max_total: usize, max_per_address: usize) -> Self {
        Self {
            max_total,
            max_per_address,
            live: Arc::default(),
        }
    }

    fn live(&self) -> MutexGuard<'_, Live> {
        // A poisoned lock only means a task panicked mid-update of a counter; keep counting.
        self.live.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A place for one more connection from `ip`, or the limit it would exceed (the
    /// listener's first). An IPv4 address seen as IPv4-mapped IPv6 counts as that address.
    pub(crate) fn admit(&self, ip: IpAddr) -> Result<Slot, LimitRefusal> {
        let ip = ip.to_canonical();
        let mut live = self.live();
        if live.total >= self.max_total {
            return Err(LimitRefusal::Listener {
                limit: self.max_total,
            });
        }
        let from_ip = live.per_address.get(&ip).copied().unwrap_or(0);
        if from_ip >= self.max_per_address {
            return Err(LimitRefusal::Address {
                limit: self.max_per_address,
            });
        }
        live.total += 1;
        live.per_address.insert(ip, from_ip + 1);
        Ok(Slot {
            ip,
            limits: self.clone(),
        })
    }

    /// Live connections in all and from `ip`.
    #[cfg(test)]
    pub(crate) fn counts(&self, ip: IpAddr) -> (usize, usize) {
        let live = self.live();
        let from_ip = live.per_address.get(&ip.to_canonical()).copied();
        (live.total, from_ip.unwrap_or(0))
    }
}

/// One admitted connection; gives its places back when dropped, and the address is forgotten
/// with its last connection.
pub(crate) struct Slot {
    ip: IpAddr,
    limits: ConnectionLimits,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut live = self.limits.live();
        live.total = live.total.saturating_sub(1);
        if let Some(count) = live.per_address.get_mut(&self.ip) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                live.per_address.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from(Ipv4Addr::new(10, 0, 0, last))
    }

    #[test]
    fn addresses_are_counted_apart_and_released_on_drop() {
        let limits = ConnectionLimits::new(100, 2);
        let first = limits.admit(ip(1)).expect("first slot");
        let second = limits.admit(ip(1)).expect("second slot");
        assert_eq!(
            limits.admit(ip(1)).err(),
            Some(LimitRefusal::Address { limit: 2 }),
            "third from the same address"
        );
        let other = limits
            .admit(ip(2))
            .expect("another address is not affected");
        assert_eq!(limits.counts(ip(1)), (3, 2), "the refusal took no place");
        drop(first);
        assert_eq!(limits.counts(ip(1)), (2, 1));
        let again = limits.admit(ip(1)).expect("a freed slot is reusable");
        drop((second, again, other));
        assert_eq!(limits.counts(ip(1)), (0, 0));
        assert!(
            limits.live().per_address.is_empty(),
            "no entries left behind"
        );
    }

    #[test]
    fn mapped_ipv4_counts_as_ipv4() {
        let limits = ConnectionLimits::new(100, 1);
        let _held = limits.admit(ip(7)).expect("slot");
        let mapped = "::ffff:10.0.0.7".parse().expect("address");
        assert_eq!(
            limits.admit(mapped).err(),
            Some(LimitRefusal::Address { limit: 1 })
        );
    }

    #[test]
    fn the_listener_total_is_capped_whatever_the_addresses() {
        let limits = ConnectionLimits::new(3, 16);
        let held: Vec<Slot> = (1..=3)
            .map(|n| limits.admit(ip(n)).expect("slot"))
            .collect();
        assert_eq!(
            limits.admit(ip(4)).err(),
            Some(LimitRefusal::Listener { limit: 3 })
        );
        assert_eq!(limits.counts(ip(4)), (3, 0), "the refusal took no place");
        drop(held);
        assert_eq!(limits.counts(ip(1)), (0, 0));
        assert!(limits.admit(ip(4)).is_ok());
    }
}
