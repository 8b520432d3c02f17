//! Which peers may put a PROXY protocol header in front of their RTMP bytes
//! (`RTMP_TRUSTED_PROXIES`, docs/PROTOCOL.md#hostile-input-and-limits): a list of CIDR blocks,
//! IPv4 and IPv6.
//!
//! Written here rather than taken from a crate: a block is an address and a prefix length, and
//! matching it is one mask; nothing else of an IP address crate would be used.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// One CIDR block, `10.0.0.0/8` or `2001:db8::/32`; a bare address is its own block (`/32`,
/// `/128`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    /// The network address, host bits cleared.
    network: IpAddr,
    prefix: u8,
}

/// Why a CIDR block was refused; the text names what is allowed, never echoes the value (the
/// configuration error does that once).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CidrError {
    #[error("an IP address or CIDR block such as 10.0.0.0/8 or 2001:db8::/32")]
    Address,
    #[error("a prefix length from 0 to {max} after the /")]
    Prefix { max: u8 },
}

impl Cidr {
    /// True when `ip` is inside the block. An IPv4 address seen as IPv4-mapped IPv6
    /// (`::ffff:10.0.0.1`, what a dual-stack socket reports) is matched as the IPv4 address.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, ip.to_canonical()) {
            (IpAddr::V4(network), IpAddr::V4(ip)) => {
                mask_v4(u32::from(ip), self.prefix) == u32::from(network)
            }
            (IpAddr::V6(network), IpAddr::V6(ip)) => {
                mask_v6(u128::from(ip), self.prefix) == u128::from(network)
            }
            _ => false,
        }
    }
}

/// `bits` with everything after the first `prefix` bits cleared (`prefix` at most 32).
fn mask_v4(bits: u32, prefix: u8) -> u32 {
    // A shift by the full width (/0) is no shift at all for `checked_shl`: it is `None`, and
    // /0 keeps no bit.
    u32::MAX
        .checked_shl(32_u32.saturating_sub(u32::from(prefix)))
        .map_or(0, |mask| bits & mask)
}

/// `bits` with everything after the first `prefix` bits cleared (`prefix` at most 128).
fn mask_v6(bits: u128, prefix: u8) -> u128 {
    u128::MAX
        .checked_shl(128_u32.saturating_sub(u32::from(prefix)))
        .map_or(0, |mask| bits & mask)
}

impl FromStr for Cidr {
    type Err = CidrError;

    /// `ADDRESS` or `ADDRESS/PREFIX`. Host bits set under the prefix (`10.0.0.1/8`) are
    /// cleared, as routers read such a block.
    fn from_str(value: &str) -> Result<Self, Self::Err> {
        let (address, prefix) = match value.trim().split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (value.trim(), None),
        };
        let address: IpAddr = address.parse().map_err(|_| CidrError::Address)?;
        let max = if address.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            // Digits only: `u8::from_str` would also take `+8`.
            Some(p) if !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()) => {
                match p.parse::<u8>() {
                    Ok(n) if n <= max => n,
                    _ => return Err(CidrError::Prefix { max }),
                }
            }
            Some(_) => return Err(CidrError::Prefix { max }),
        };
        let network = match address {
            IpAddr::V4(ip) => IpAddr::V4(mask_v4(u32::from(ip), prefix).into()),
            IpAddr::V6(ip) => IpAddr::V6(mask_v6(u128::from(ip), prefix).into()),
        };
        Ok(Cidr { network, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

/// The peers allowed to send a PROXY header: a non-empty list of blocks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustedProxies(Vec<Cidr>);

impl TrustedProxies {
    /// True when `ip` is in one of the blocks.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|block| block.contains(ip))
    }
}

impl FromStr for TrustedProxies {
    type Err = CidrError;

    /// Comma-separated blocks; spaces around each are tolerated, empty entries (`a,,b`, a
    /// trailing comma) are not: they are typos, and the list guards every connection.
    fn from_str(value: &str) -> Result<Self, Self::Err> {
        value
            .split(',')
            .map(str::parse)
            .collect::<Result<Vec<Cidr>, _>>()
            .map(TrustedProxies)
    }
}

impl fmt::Display for TrustedProxies {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, block) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{block}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn ipv4_blocks_match_by_prefix() {
        let block: Cidr = "10.1.0.0/16".parse().unwrap();
        assert!(block.contains(ip("10.1.0.0")));
        assert!(block.contains(ip("10.1.255.255")));
        assert!(!block.contains(ip("10.2.0.1")));
        assert!(!block.contains(ip("::1")), "another family never matches");
        let host: Cidr = "127.0.0.1".parse().unwrap();
        assert_eq!(host.to_string(), "127.0.0.1/32");
        assert!(host.contains(ip("127.0.0.1")) && !host.contains(ip("127.0.0.2")));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(ip("203.0.113.9")));
    }

    #[test]
    fn ipv6_blocks_match_by_prefix_and_mapped_ipv4_is_ipv4() {
        let block: Cidr = "2001:db8::/32".parse().unwrap();
        assert!(block.contains(ip("2001:db8:ffff::1")));
        assert!(!block.contains(ip("2001:db9::1")));
        let host: Cidr = "::1/128".parse().unwrap();
        assert!(host.contains(ip("::1")));
        let all: Cidr = "::/0".parse().unwrap();
        assert!(all.contains(ip("fe80::1")) && !all.contains(ip("10.0.0.1")));
        let v4: Cidr = "192.168.0.0/24".parse().unwrap();
        assert!(v4.contains(ip("::ffff:192.168.0.7")));
    }

    #[test]
    fn host_bits_are_cleared() {
        let block: Cidr = "10.9.8.7/8".parse().unwrap();
        assert_eq!(block.to_string(), "10.0.0.0/8");
        assert!(block.contains(ip("10.200.0.1")));
    }

    #[test]
    fn bad_blocks_are_refused() {
        for bad in [
            "",
            "10.0.0",
            "10.0.0.0/",
            "10.0.0.0/33",
            "10.0.0.0/+8",
            "10.0.0.0/-1",
        ] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad:?} accepted");
        }
        assert!("::/129".parse::<Cidr>().is_err());
        assert!("::/0128".parse::<Cidr>().is_err(), "more than 3 digits");
        assert_eq!(
            "x".parse::<Cidr>(),
            Err(CidrError::Address),
            "the error names what is allowed"
        );
    }

    #[test]
    fn lists_are_comma_separated_without_empty_entries() {
        let list: TrustedProxies = " 10.0.0.0/8 , 2001:db8::/32".parse().unwrap();
        assert_eq!(list.to_string(), "10.0.0.0/8,2001:db8::/32");
        assert!(list.contains(ip("10.3.3.3")) && list.contains(ip("2001:db8::5")));
        assert!(!list.contains(ip("192.0.2.1")));
        assert!("10.0.0.0/8,".parse::<TrustedProxies>().is_err());
        assert!("10.0.0.0/8,,::1".parse::<TrustedProxies>().is_err());
    }
}
