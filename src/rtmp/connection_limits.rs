//! How many RTMP connections may be open at once: on the whole listener
//! (`RTMP_MAX_CONNECTIONS`) and from one publisher address (`RTMP_MAX_CONNECTIONS_PER_IP`),
//! docs/PROTOCOL.md#hostile-input-and-limits.
//!
//! Each admitted connection holds a slot that gives its place back when dropped, so however a
//! connection task ends (close, error, panic) the counts stay true. The two are taken apart:
//! the listener's slot at accept, before a byte is read; the address's slot once the address is
//! known, which behind a PROXY-protocol load balancer is only after its header.

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

/// The live counts and their limits, shared by the accept loop and the connection tasks; the
/// lock is held for a counter update only.
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

    /// A place among the listener's `RTMP_MAX_CONNECTIONS`, or the refusal when all are taken.
    pub(crate) fn admit(&self) -> Result<ListenerSlot, LimitRefusal> {
        let mut live = self.live();
        if live.total >= self.max_total {
            return Err(LimitRefusal::Listener {
                limit: self.max_total,
            });
        }
        live.total += 1;
        Ok(ListenerSlot {
            limits: self.clone(),
        })
    }

    /// A place among `ip`'s `RTMP_MAX_CONNECTIONS_PER_IP`, or the refusal when all are taken.
    /// An IPv4 address seen as IPv4-mapped IPv6 counts as that IPv4 address.
    pub(crate) fn admit_address(&self, ip: IpAddr) -> Result<AddressSlot, LimitRefusal> {
        let ip = ip.to_canonical();
        let mut live = self.live();
        let count = live.per_address.get(&ip).copied().unwrap_or(0);
        if count >= self.max_per_address {
            return Err(LimitRefusal::Address {
                limit: self.max_per_address,
            });
        }
        live.per_address.insert(ip, count + 1);
        Ok(AddressSlot {
            ip,
            limits: self.clone(),
        })
    }

    #[cfg(test)]
    pub(crate) fn counts(&self, ip: IpAddr) -> (usize, usize) {
        let live = self.live();
        let at = live.per_address.get(&ip.to_canonical()).copied();
        (live.total, at.unwrap_or(0))
    }
}

/// One connection counted against `RTMP_MAX_CONNECTIONS`; released when dropped.
pub(crate) struct ListenerSlot {
    limits: ConnectionLimits,
}

impl Drop for ListenerSlot {
    fn drop(&mut self) {
        let mut live = self.limits.live();
        live.total = live.total.saturating_sub(1);
    }
}

/// One connection counted against its address's `RTMP_MAX_CONNECTIONS_PER_IP`; released when
/// dropped, and the address forgotten with its last connection.
pub(crate) struct AddressSlot {
    ip: IpAddr,
    limits: ConnectionLimits,
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut live = self.limits.live();
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
        let first = limits.admit_address(ip(1)).expect("first slot");
        let second = limits.admit_address(ip(1)).expect("second slot");
        assert_eq!(
            limits.admit_address(ip(1)).err(),
            Some(LimitRefusal::Address { limit: 2 }),
            "third from the same address"
        );
        let other = limits
            .admit_address(ip(2))
            .expect("another address is not affected");
        drop(first);
        assert_eq!(limits.counts(ip(1)), (0, 1));
        let again = limits
            .admit_address(ip(1))
            .expect("a freed slot is reusable");
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
        let _held = limits.admit_address(ip(7)).expect("slot");
        let mapped = "::ffff:10.0.0.7".parse().expect("address");
        assert!(limits.admit_address(mapped).is_err());
    }

    #[test]
    fn the_listener_total_is_capped_whatever_the_addresses() {
        let limits = ConnectionLimits::new(3, 16);
        let held: Vec<ListenerSlot> = (0..3).map(|_| limits.admit().expect("slot")).collect();
        assert_eq!(
            limits.admit().err(),
            Some(LimitRefusal::Listener { limit: 3 })
        );
        assert_eq!(limits.counts(ip(1)).0, 3);
        drop(held);
        assert_eq!(limits.counts(ip(1)).0, 0);
        assert!(limits.admit().is_ok());
    }
}
