//! The PROXY protocol header a TCP load balancer puts in front of a connection's bytes, so the
//! RTMP listener knows the publisher's real address (docs/PROTOCOL.md#hostile-input-and-limits).
//! Versions 1 (one text line) and 2 (binary), as HAProxy specifies them.
//!
//! Pure: [`parse`] looks at the bytes received so far and says whether they hold a complete
//! header, need more, or can never be one. Every length is checked before it is used, nothing
//! is indexed without a bound, and a header is never longer than [`MAX_HEADER_LEN`], so the
//! reader that feeds this never buffers more than that. Fuzzed by
//! `fuzz/fuzz_targets/proxy_header.rs`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The version 1 header's prefix.
const V1_PREFIX: &[u8] = b"PROXY ";

/// A version 1 line is at most 107 bytes, CRLF included (the specification's bound, the
/// length of a TCP6 line with the longest addresses).
pub const V1_MAX_LEN: usize = 107;

/// The version 2 header's 12-byte signature.
const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";

/// Signature, version/command, family/protocol and the 16-bit length: 16 bytes.
const V2_FIXED_LEN: usize = 16;

/// Longest version 2 address block accepted. The format allows 65,535 bytes; the addresses
/// take 36 at most and the TLVs load balancers add (AWS's VPC endpoint id, Azure's link id,
/// a unique id) a few dozen more. Beyond this a header is refused rather than buffered.
pub const V2_MAX_ADDRESS_BLOCK: usize = 512;

/// Longest header of either version: what a reader may have to hold before [`parse`] decides.
pub const MAX_HEADER_LEN: usize = V2_FIXED_LEN + V2_MAX_ADDRESS_BLOCK;

/// What the bytes received so far amount to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parsed {
    /// A whole header: the first `consumed` bytes; what follows is the client's own.
    Complete {
        version: Version,
        source: Source,
        consumed: usize,
    },
    /// Every byte so far fits a header, which is not complete yet.
    NeedMore,
}

/// Which version of the protocol the header was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V1,
    V2,
}

/// Where the connection comes from, according to the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The proxy relays a client's TCP connection from this address.
    Client(SocketAddr),
    /// The proxy speaks for itself (v2 `LOCAL`: a health check) or does not say (v1
    /// `UNKNOWN`, v2 `AF_UNSPEC` or `AF_UNIX`): the connection's own address stands.
    Proxy,
}

/// Why the bytes can never be a valid header. The texts are ours: nothing the peer sent is
/// echoed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    #[error("not a PROXY protocol header")]
    NotAHeader,
    #[error("version 1 line without CRLF in its first {V1_MAX_LEN} bytes")]
    V1TooLong,
    #[error("version 1 line malformed: {0}")]
    V1Malformed(&'static str),
    #[error("version 2 header of version {0}, not 2")]
    V2Version(u8),
    #[error("version 2 command {0} (neither LOCAL nor PROXY)")]
    V2Command(u8),
    #[error("version 2 address family {0} unknown")]
    V2Family(u8),
    #[error("version 2 transport {0} is not a TCP stream")]
    V2Transport(u8),
    #[error("version 2 address block of {0} bytes, more than {V2_MAX_ADDRESS_BLOCK}")]
    V2TooLong(usize),
    #[error("version 2 address block of {len} bytes, too short for its family ({needed})")]
    V2TooShort { len: usize, needed: usize },
}

/// Reads a header from the start of `bytes` (everything received so far).
pub fn parse(bytes: &[u8]) -> Result<Parsed, HeaderError> {
    if could_start(bytes, V1_PREFIX) {
        if bytes.len() < V1_PREFIX.len() {
            return Ok(Parsed::NeedMore);
        }
        return parse_v1(bytes);
    }
    if could_start(bytes, V2_SIGNATURE) {
        if bytes.len() < V2_SIGNATURE.len() {
            return Ok(Parsed::NeedMore);
        }
        return parse_v2(bytes);
    }
    Err(HeaderError::NotAHeader)
}

/// True when `bytes` and `prefix` agree on their common length.
fn could_start(bytes: &[u8], prefix: &[u8]) -> bool {
    let common = bytes.len().min(prefix.len());
    bytes.get(..common) == prefix.get(..common)
}

/// `PROXY TCP4 SRC DST SRCPORT DSTPORT\r\n`, `PROXY TCP6 …`, `PROXY UNKNOWN…\r\n`.
fn parse_v1(bytes: &[u8]) -> Result<Parsed, HeaderError> {
    let window = bytes.get(..V1_MAX_LEN).unwrap_or(bytes);
    let Some(end) = window.windows(2).position(|pair| pair == b"\r\n") else {
        return if bytes.len() >= V1_MAX_LEN {
            Err(HeaderError::V1TooLong)
        } else {
            Ok(Parsed::NeedMore)
        };
    };
    let consumed = end + 2;
    // "PROXY " holds no CR, so the CRLF is after it; `get` says so without a panic path.
    let line = window
        .get(V1_PREFIX.len()..end)
        .and_then(|line| std::str::from_utf8(line).ok())
        .ok_or(HeaderError::V1Malformed("not ASCII"))?;
    let complete = |source| {
        Ok(Parsed::Complete {
            version: Version::V1,
            source,
            consumed,
        })
    };
    // UNKNOWN may be followed by anything up to the CRLF; the receiver ignores it.
    if line == "UNKNOWN" || line.starts_with("UNKNOWN ") {
        return complete(Source::Proxy);
    }
    // Single spaces only, exactly five fields.
    let mut fields = line.split(' ');
    let (Some(family), Some(source), Some(destination), Some(port), Some(destination_port), None) = (
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
    ) else {
        return Err(HeaderError::V1Malformed("not five fields"));
    };
    // The destination is checked for its form only: it names this listener, already known.
    let (source, _destination) = match family {
        "TCP4" => (
            v1_address::<Ipv4Addr>(source, "source is not an IPv4 address")?,
            v1_address::<Ipv4Addr>(destination, "destination is not an IPv4 address")?,
        ),
        "TCP6" => (
            v1_address::<Ipv6Addr>(source, "source is not an IPv6 address")?,
            v1_address::<Ipv6Addr>(destination, "destination is not an IPv6 address")?,
        ),
        _ => {
            return Err(HeaderError::V1Malformed(
                "protocol is not TCP4, TCP6 or UNKNOWN",
            ))
        }
    };
    let port = v1_port(port)?;
    v1_port(destination_port)?;
    complete(Source::Client(SocketAddr::new(source, port)))
}

/// An address of a version 1 line, of the family the line names.
fn v1_address<A>(text: &str, malformed: &'static str) -> Result<IpAddr, HeaderError>
where
    A: std::str::FromStr + Into<IpAddr>,
{
    text.parse::<A>()
        .map(Into::into)
        .map_err(|_| HeaderError::V1Malformed(malformed))
}

/// A port of a version 1 line: 1 to 5 digits, at most 65535 (`u16::from_str` alone would also
/// take a `+`).
fn v1_port(text: &str) -> Result<u16, HeaderError> {
    if text.is_empty() || text.len() > 5 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(HeaderError::V1Malformed("port is not a number"));
    }
    text.parse()
        .map_err(|_| HeaderError::V1Malformed("port above 65535"))
}

/// Signature, `0x2?` version/command, family/transport, big-endian length, address block.
fn parse_v2(bytes: &[u8]) -> Result<Parsed, HeaderError> {
    let Some(&[.., version_command, family_transport, len_high, len_low]) =
        bytes.first_chunk::<V2_FIXED_LEN>()
    else {
        // The signature matched; check what has arrived of the rest as early as possible.
        if let Some(&version_command) = bytes.get(V2_SIGNATURE.len()) {
            check_v2_version_command(version_command)?;
        }
        return Ok(Parsed::NeedMore);
    };
    let command = check_v2_version_command(version_command)?;
    let family = family_transport >> 4;
    let transport = family_transport & 0x0f;
    let len = usize::from(u16::from_be_bytes([len_high, len_low]));
    if len > V2_MAX_ADDRESS_BLOCK {
        return Err(HeaderError::V2TooLong(len));
    }
    let consumed = V2_FIXED_LEN + len;
    let Some(block) = bytes.get(V2_FIXED_LEN..consumed) else {
        return Ok(Parsed::NeedMore);
    };
    let complete = |source| {
        Ok(Parsed::Complete {
            version: Version::V2,
            source,
            consumed,
        })
    };
    if command == V2Command::Local {
        // The proxy's own connection: the address block (if any) is to be ignored.
        return complete(Source::Proxy);
    }
    // Addresses (source, destination), then ports (source, destination); TLVs after them are
    // skipped (nothing here uses them).
    let source = match family {
        // AF_UNSPEC: the receiver uses the connection's own addresses. AF_UNIX: a path, not
        // an address a limit can count.
        0x0 | 0x3 => return complete(Source::Proxy),
        0x1 => v2_address::<4>(block, transport)?,
        0x2 => v2_address::<16>(block, transport)?,
        other => return Err(HeaderError::V2Family(other)),
    };
    complete(Source::Client(source))
}

/// The source of an AF_INET (`N` = 4) or AF_INET6 (`N` = 16) address block.
fn v2_address<const N: usize>(block: &[u8], transport: u8) -> Result<SocketAddr, HeaderError>
where
    IpAddr: From<[u8; N]>,
{
    // RTMP is a TCP stream; a datagram (or unspecified) transport cannot carry it.
    if transport != 0x1 {
        return Err(HeaderError::V2Transport(transport));
    }
    let needed = 2 * N + 4;
    let too_short = HeaderError::V2TooShort {
        len: block.len(),
        needed,
    };
    let source = block.first_chunk::<N>().ok_or(too_short)?;
    let port = block
        .get(2 * N..)
        .and_then(|ports| ports.first_chunk::<2>())
        .ok_or(too_short)?;
    if block.len() < needed {
        return Err(too_short);
    }
    Ok(SocketAddr::new(
        IpAddr::from(*source),
        u16::from_be_bytes(*port),
    ))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum V2Command {
    Local,
    Proxy,
}

/// The 13th byte: version 2 in the high nibble, LOCAL (0) or PROXY (1) in the low one.
fn check_v2_version_command(byte: u8) -> Result<V2Command, HeaderError> {
    if byte >> 4 != 0x2 {
        return Err(HeaderError::V2Version(byte >> 4));
    }
    match byte & 0x0f {
        0x0 => Ok(V2Command::Local),
        0x1 => Ok(V2Command::Proxy),
        other => Err(HeaderError::V2Command(other)),
    }
}

/// A version 1 header claiming `source` (to an unspecified destination of its family), as a
/// load balancer writes it. For tests and tools that stand in for a proxy.
pub fn v1_header(source: SocketAddr) -> Vec<u8> {
    match source {
        SocketAddr::V4(s) => format!("PROXY TCP4 {} 0.0.0.0 {} 0\r\n", s.ip(), s.port()),
        SocketAddr::V6(s) => format!("PROXY TCP6 {} :: {} 0\r\n", s.ip(), s.port()),
    }
    .into_bytes()
}

/// A version 2 `PROXY` header over TCP claiming `source`, followed by `tlvs` (raw TLV bytes,
/// skipped by the receiver). For tests and tools that stand in for a proxy.
pub fn v2_header(source: SocketAddr, tlvs: &[u8]) -> Vec<u8> {
    let mut out = V2_SIGNATURE.to_vec();
    out.push(0x21);
    let mut block = Vec::new();
    match source {
        SocketAddr::V4(s) => {
            out.push(0x11);
            block.extend_from_slice(&s.ip().octets());
            block.extend_from_slice(&[0; 4]);
        }
        SocketAddr::V6(s) => {
            out.push(0x21);
            block.extend_from_slice(&s.ip().octets());
            block.extend_from_slice(&[0; 16]);
        }
    }
    block.extend_from_slice(&source.port().to_be_bytes());
    block.extend_from_slice(&[0; 2]);
    block.extend_from_slice(tlvs);
    let len = u16::try_from(block.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&block);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    fn complete(bytes: &[u8]) -> (Version, Source, usize) {
        match parse(bytes) {
            Ok(Parsed::Complete {
                version,
                source,
                consumed,
            }) => (version, source, consumed),
            other => panic!("{:?}: {other:?}", String::from_utf8_lossy(bytes)),
        }
    }

    /// Every strict prefix of a header needs more; the header itself is complete.
    fn assert_prefixes_need_more(header: &[u8]) {
        for end in 0..header.len() {
            assert_eq!(
                parse(&header[..end]),
                Ok(Parsed::NeedMore),
                "prefix of {end} bytes"
            );
        }
    }

    #[test]
    fn v1_tcp4_and_tcp6_give_the_client_address() {
        let line = b"PROXY TCP4 203.0.113.7 192.0.2.1 51234 1935\r\n";
        let mut bytes = line.to_vec();
        bytes.push(0x03); // RTMP C0 right behind the header
        assert_eq!(
            complete(&bytes),
            (
                Version::V1,
                Source::Client(addr("203.0.113.7:51234")),
                line.len()
            )
        );
        assert_prefixes_need_more(line);
        let line = b"PROXY TCP6 2001:db8::7 2001:db8::1 65535 1935\r\n";
        assert_eq!(
            complete(line).1,
            Source::Client(addr("[2001:db8::7]:65535"))
        );
    }

    #[test]
    fn v1_unknown_keeps_the_proxy_address() {
        assert_eq!(complete(b"PROXY UNKNOWN\r\n").1, Source::Proxy);
        assert_eq!(
            complete(b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n").1,
            Source::Proxy
        );
    }

    #[test]
    fn v1_malformed_lines_are_refused() {
        for line in [
            &b"PROXY TCP4 203.0.113.7 192.0.2.1 51234\r\n"[..],
            b"PROXY TCP4 203.0.113.7 192.0.2.1 51234 1935 extra\r\n",
            b"PROXY TCP4  203.0.113.7 192.0.2.1 51234 1935\r\n",
            b"PROXY TCP4 2001:db8::7 192.0.2.1 51234 1935\r\n",
            b"PROXY TCP6 203.0.113.7 2001:db8::1 51234 1935\r\n",
            b"PROXY TCP4 203.0.113.7 192.0.2.1 65536 1935\r\n",
            b"PROXY TCP4 203.0.113.7 192.0.2.1 +80 1935\r\n",
            b"PROXY TCP4 203.0.113.7 192.0.2.1 80 -1\r\n",
            b"PROXY UDP4 203.0.113.7 192.0.2.1 80 1935\r\n",
            b"PROXY TCP4 203.0.113.7 192.0.2.1 80 19\xff5\r\n",
            b"PROXY \r\n",
        ] {
            assert!(
                matches!(parse(line), Err(HeaderError::V1Malformed(_))),
                "{:?} accepted",
                String::from_utf8_lossy(line)
            );
        }
    }

    #[test]
    fn v1_without_crlf_is_refused_at_107_bytes() {
        let mut line = b"PROXY UNKNOWN ".to_vec();
        line.resize(V1_MAX_LEN - 1, b'x');
        assert_eq!(parse(&line), Ok(Parsed::NeedMore));
        line.push(b'x');
        assert_eq!(parse(&line), Err(HeaderError::V1TooLong));
        // A CRLF past byte 107 does not count.
        line.extend_from_slice(b"\r\n");
        assert_eq!(parse(&line), Err(HeaderError::V1TooLong));
        // The longest allowed line is 107 bytes with its CRLF.
        let mut longest = b"PROXY UNKNOWN ".to_vec();
        longest.resize(V1_MAX_LEN - 2, b'x');
        longest.extend_from_slice(b"\r\n");
        assert_eq!(complete(&longest).2, V1_MAX_LEN);
    }

    #[test]
    fn v2_inet_and_inet6_give_the_client_address_and_skip_tlvs() {
        let header = v2_header(addr("198.51.100.20:40000"), &[]);
        assert_eq!(header.len(), 28);
        let mut bytes = header.clone();
        bytes.extend_from_slice(b"\x03rtmp");
        assert_eq!(
            complete(&bytes),
            (Version::V2, Source::Client(addr("198.51.100.20:40000")), 28)
        );
        assert_prefixes_need_more(&header);
        // An AWS-style TLV (type 0xEA, length 3) after the addresses.
        let header = v2_header(addr("[2001:db8::20]:443"), b"\xea\x00\x03abc");
        assert_eq!(
            complete(&header),
            (
                Version::V2,
                Source::Client(addr("[2001:db8::20]:443")),
                16 + 36 + 6
            )
        );
    }

    #[test]
    fn v2_local_and_unspecified_keep_the_proxy_address() {
        let mut local = V2_SIGNATURE.to_vec();
        local.extend_from_slice(&[0x20, 0x00, 0x00, 0x00]);
        assert_eq!(complete(&local), (Version::V2, Source::Proxy, 16));
        // LOCAL with an address block: the block is skipped, not read.
        let mut local = v2_header(addr("10.0.0.1:1"), &[]);
        local[12] = 0x20;
        assert_eq!(complete(&local).1, Source::Proxy);
        let mut unspec = v2_header(addr("10.0.0.1:1"), &[]);
        unspec[13] = 0x00;
        assert_eq!(complete(&unspec).1, Source::Proxy);
    }

    #[test]
    fn v2_bad_fields_are_refused() {
        let good = v2_header(addr("10.0.0.1:1"), &[]);
        let with = |index: usize, value: u8| {
            let mut bytes = good.clone();
            bytes[index] = value;
            parse(&bytes)
        };
        assert_eq!(with(12, 0x11), Err(HeaderError::V2Version(1)));
        assert_eq!(with(12, 0x22), Err(HeaderError::V2Command(2)));
        assert_eq!(with(13, 0x41), Err(HeaderError::V2Family(4)));
        assert_eq!(with(13, 0x12), Err(HeaderError::V2Transport(2)));
        // The version byte is checked as soon as it arrives.
        let mut early = good[..13].to_vec();
        early[12] = 0x31;
        assert_eq!(parse(&early), Err(HeaderError::V2Version(3)));
        // An INET6 family with an INET-sized block.
        assert_eq!(
            with(13, 0x21),
            Err(HeaderError::V2TooShort {
                len: 12,
                needed: 36
            })
        );
    }

    #[test]
    fn v2_length_is_bounded_before_anything_is_buffered() {
        let mut header = V2_SIGNATURE.to_vec();
        header.extend_from_slice(&[0x21, 0x11, 0xff, 0xff]);
        assert_eq!(parse(&header), Err(HeaderError::V2TooLong(65_535)));
        let mut header = V2_SIGNATURE.to_vec();
        let len = u16::try_from(V2_MAX_ADDRESS_BLOCK).unwrap();
        header.extend_from_slice(&[0x21, 0x11]);
        header.extend_from_slice(&len.to_be_bytes());
        header.resize(MAX_HEADER_LEN, 0);
        assert_eq!(complete(&header).2, MAX_HEADER_LEN);
        assert_eq!(parse(&header[..MAX_HEADER_LEN - 1]), Ok(Parsed::NeedMore));
    }

    #[test]
    fn anything_else_is_not_a_header() {
        // RTMP C0 (a publisher sending straight to a listener that expects a header), HTTP.
        assert_eq!(parse(b"\x03"), Err(HeaderError::NotAHeader));
        assert_eq!(parse(b"GET / HTTP/1.1\r\n"), Err(HeaderError::NotAHeader));
        assert_eq!(parse(b"PROXY\t"), Err(HeaderError::NotAHeader));
        assert_eq!(parse(b"\r\n\r\n\0\r\nQUIT\r"), Err(HeaderError::NotAHeader));
        assert_eq!(parse(b""), Ok(Parsed::NeedMore));
        assert_eq!(parse(b"PRO"), Ok(Parsed::NeedMore));
        assert_eq!(parse(b"\r\n\r\n"), Ok(Parsed::NeedMore));
    }
}
