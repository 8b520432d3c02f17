//! A connection from a PROXY-protocol load balancer (`RTMP_PROXY_PROTOCOL=true`,
//! docs/PROTOCOL.md#hostile-input-and-limits): its header read within a time bound, and the
//! stream that hands the RTMP connection what came after the header.
//!
//! The header is parsed by [`super::proxy_protocol::parse`]; this file only reads. It never
//! holds more than [`MAX_HEADER_LEN`] bytes: a peer that has not sent a whole header by then
//! has sent something else.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

use super::proxy_protocol::{parse, HeaderError, Parsed, Source, Version, MAX_HEADER_LEN};

/// Why a connection's PROXY header could not be read; `Display` is the log line's reason.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HeaderFailure {
    #[error("no complete PROXY header within {0:?}")]
    Timeout(Duration),
    #[error("closed before its PROXY header was complete ({0} bytes)")]
    Closed(usize),
    #[error("read failed before the PROXY header: {0}")]
    Read(io::Error),
    #[error("bad PROXY header: {0}")]
    Header(#[from] HeaderError),
    #[error("no PROXY header in its first {MAX_HEADER_LEN} bytes")]
    Unfinished,
}

impl HeaderFailure {
    /// A connection closed before its first byte is how load balancers run TCP health checks
    /// (no header, just connect and close): not worth a warning every few seconds.
    pub(crate) fn is_routine(&self) -> bool {
        matches!(self, HeaderFailure::Closed(0))
    }
}

/// A read PROXY header, and the client's bytes that arrived with its end.
pub(crate) struct ProxyHeader {
    pub version: Version,
    pub source: Source,
    /// Bytes after the header (the start of the RTMP handshake): see [`Rewound`].
    pub rest: Vec<u8>,
}

/// Reads the PROXY header that starts `socket`, waiting at most `within` for all of it. The
/// socket is borrowed, so the caller decides when it closes.
pub(crate) async fn read_header<S: AsyncRead + Unpin>(
    socket: &mut S,
    within: Duration,
) -> Result<ProxyHeader, HeaderFailure> {
    let mut buffer = [0_u8; MAX_HEADER_LEN];
    let read = async {
        let mut filled = 0;
        loop {
            // Never asks for more than a header can be; RTMP bytes read along with the end of
            // the header are kept for the connection.
            let Some(room) = buffer.get_mut(filled..).filter(|room| !room.is_empty()) else {
                return Err(HeaderFailure::Unfinished);
            };
            let n = socket.read(room).await.map_err(HeaderFailure::Read)?;
            if n == 0 {
                return Err(HeaderFailure::Closed(filled));
            }
            filled += n;
            let received = buffer.get(..filled).unwrap_or_default();
            if let Parsed::Complete {
                version,
                source,
                consumed,
            } = parse(received)?
            {
                return Ok(ProxyHeader {
                    version,
                    source,
                    rest: received.get(consumed..).unwrap_or_default().to_vec(),
                });
            }
        }
    };
    tokio::time::timeout(within, read)
        .await
        .map_err(|_| HeaderFailure::Timeout(within))?
}

/// `inner` with `unread` put back in front: reads return those bytes first, writes go straight
/// to `inner`.
pub(crate) struct Rewound<S> {
    unread: Vec<u8>,
    position: usize,
    inner: S,
}

impl<S> Rewound<S> {
    pub(crate) fn new(unread: Vec<u8>, inner: S) -> Self {
        Self {
            unread,
            position: 0,
            inner,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Rewound<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(unread) = this.unread.get(this.position..).filter(|u| !u.is_empty()) {
            let n = unread.len().min(buf.remaining());
            buf.put_slice(unread.get(..n).unwrap_or_default());
            this.position += n;
            if this.position == this.unread.len() {
                // Given back in full: free it.
                this.unread = Vec::new();
                this.position = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Rewound<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rtmp::proxy_protocol::{v1_header, v2_header};
    use tokio::io::{duplex, AsyncWriteExt};

    const WITHIN: Duration = Duration::from_secs(5);

    #[tokio::test]
    async fn header_then_rtmp_bytes_in_one_write_are_both_kept() {
        let (mut proxy, service) = duplex(4096);
        let mut sent = v2_header("10.0.0.9:4000".parse().unwrap(), b"\x04\x00\x01z");
        sent.extend_from_slice(b"\x03C1...");
        proxy.write_all(&sent).await.unwrap();
        let mut service = service;
        let header = read_header(&mut service, WITHIN).await.unwrap();
        assert_eq!(header.version, Version::V2);
        assert_eq!(
            header.source,
            Source::Client("10.0.0.9:4000".parse().unwrap())
        );
        proxy.write_all(b" more").await.unwrap();
        drop(proxy);
        let mut rest = Vec::new();
        let mut stream = Rewound::new(header.rest, service);
        stream.read_to_end(&mut rest).await.unwrap();
        assert_eq!(rest, b"\x03C1... more");
    }

    #[tokio::test]
    async fn a_header_split_over_many_writes_is_waited_for() {
        let (mut proxy, mut service) = duplex(4096);
        let reader = tokio::spawn(async move { read_header(&mut service, WITHIN).await });
        for byte in v1_header("[2001:db8::1]:7".parse().unwrap()) {
            proxy.write_all(&[byte]).await.unwrap();
        }
        let header = reader.await.unwrap().unwrap();
        assert!(header.rest.is_empty());
        assert_eq!(
            header.source,
            Source::Client("[2001:db8::1]:7".parse().unwrap())
        );
    }

    #[tokio::test]
    async fn garbage_silence_and_a_close_are_failures() {
        let (mut proxy, mut service) = duplex(4096);
        proxy.write_all(b"\x03\x00\x00\x00").await.unwrap();
        assert!(matches!(
            read_header(&mut service, WITHIN).await,
            Err(HeaderFailure::Header(HeaderError::NotAHeader))
        ));

        let (_proxy, mut service) = duplex(4096);
        let short = Duration::from_millis(50);
        assert!(matches!(
            read_header(&mut service, short).await,
            Err(HeaderFailure::Timeout(d)) if d == short
        ));

        let (mut proxy, mut service) = duplex(4096);
        proxy.write_all(b"PROXY TCP4 10.0").await.unwrap();
        drop(proxy);
        let failure = read_header(&mut service, WITHIN).await.err();
        assert!(matches!(failure, Some(HeaderFailure::Closed(15))));
        assert!(
            failure.is_some_and(|f| !f.is_routine()),
            "a cut header is worth a warning"
        );

        // A TCP health check: connect, close, nothing sent.
        let (proxy, mut service) = duplex(4096);
        drop(proxy);
        let failure = read_header(&mut service, WITHIN).await.err();
        assert!(
            failure.as_ref().is_some_and(HeaderFailure::is_routine),
            "{failure:?}"
        );
    }

    #[tokio::test]
    async fn rewound_bytes_fit_any_read_size() {
        let mut sent = v1_header("10.0.0.1:1".parse().unwrap());
        sent.extend_from_slice(b"abcdef");
        let (mut proxy, mut service) = duplex(4096);
        proxy.write_all(&sent).await.unwrap();
        drop(proxy);
        let header = read_header(&mut service, WITHIN).await.unwrap();
        let mut stream = Rewound::new(header.rest, service);
        let mut two = [0_u8; 2];
        let mut got = Vec::new();
        loop {
            let n = stream.read(&mut two).await.unwrap();
            if n == 0 {
                break;
            }
            got.extend_from_slice(&two[..n]);
        }
        assert_eq!(got, b"abcdef");
    }
}
