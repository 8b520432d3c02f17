//! RTMP behind a PROXY-protocol TCP load balancer (issue #11 item 8,
//! docs/PROTOCOL.md#hostile-input-and-limits): the real binary with `RTMP_PROXY_PROTOCOL=true`,
//! `RTMP_TRUSTED_PROXIES=127.0.0.1/32`, `RTMP_MAX_CONNECTIONS_PER_IP=2` and
//! `RTMP_MAX_CONNECTIONS=42`, and a load balancer written here.
//!
//! Every connection reaches the service from one address, the balancer's (127.0.0.1). The
//! balancer opens one port per client address it stands for (a real one reads the address
//! from the client's packets; every client here is on 127.0.0.1, so the port a client picks
//! says who it is), and for each connection writes a v1 (odd addresses) or v2 (even, with a
//! TLV) header naming that address before piping the bytes both ways. The headers are written
//! from the HAProxy specification here, not with the service's own code.
//!
//! Shown: 40 concurrent publishers from 10.0.0.1-40 all publish (`live`, with their own
//! address as the session's publisher and in the log); a second connection from 10.0.0.1 is
//! accepted and a third refused by the per-address limit; a publisher that skips the balancer
//! (RTMP straight to the port) is closed; the 42nd connection fills `RTMP_MAX_CONNECTIONS` and
//! the 43rd is refused; the refusals name the real address; nobody else is disturbed.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use futures_util::future::join_all;
use serde_json::Value;
use test_harness::rtmp_client::{start_publishing, Publishing};
use test_harness::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const PUBLISHERS: u8 = 40;
const MAX_PER_IP: usize = 2;
const MAX_CONNECTIONS: usize = 42;
/// Each step of an RTMP publish (handshake, connect, publish) normally takes milliseconds;
/// 40 at once on 2 shared cores get this long.
const STEP_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a log line may take from the service's stderr to the test.
const LOG_TIMEOUT: Duration = Duration::from_secs(10);

/// The client address the balancer claims for address number `n`: 10.0.0.n, port 40000 + n.
fn claimed(n: u8) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::new(10, 0, 0, n), 40_000 + u16::from(n)))
}

/// A v1 header: `PROXY TCP4 SRC DST SRCPORT DSTPORT\r\n`.
fn v1_header(source: SocketAddr, destination: SocketAddr) -> Vec<u8> {
    format!(
        "PROXY TCP4 {} {} {} {}\r\n",
        source.ip(),
        destination.ip(),
        source.port(),
        destination.port()
    )
    .into_bytes()
}

/// A v2 header: signature, PROXY over TCP/IPv4, addresses, ports, and a unique-id TLV
/// (type 0x05) the service must skip.
fn v2_header(source: SocketAddr, destination: SocketAddr) -> Vec<u8> {
    let (SocketAddr::V4(source), SocketAddr::V4(destination)) = (source, destination) else {
        panic!("IPv4 only here");
    };
    let tlv = [0x05, 0x00, 0x04, b'l', b'b', b'-', b'1'];
    let mut header = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    header.extend_from_slice(&[0x21, 0x11]);
    header.extend_from_slice(&(12 + tlv.len() as u16).to_be_bytes());
    header.extend_from_slice(&source.ip().octets());
    header.extend_from_slice(&destination.ip().octets());
    header.extend_from_slice(&source.port().to_be_bytes());
    header.extend_from_slice(&destination.port().to_be_bytes());
    header.extend_from_slice(&tlv);
    header
}

/// One port of the balancer, standing for client address number `n`: returns where clients
/// connect. Each connection is piped to `upstream` behind a header naming [`claimed`]`(n)`.
async fn balancer_port(upstream: SocketAddr, n: u8) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let front = listener.local_addr().expect("front address");
    let header = if n % 2 == 1 {
        v1_header(claimed(n), upstream)
    } else {
        v2_header(claimed(n), upstream)
    };
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let header = header.clone();
            tokio::spawn(async move {
                let Ok(mut service) = TcpStream::connect(upstream).await else {
                    return;
                };
                if service.write_all(&header).await.is_ok() {
                    // Ends when both sides are closed; a refusal closes the client's too.
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut service).await;
                }
            });
        }
    });
    front
}

/// Publishes on `live/{key}` through the balancer port `front`.
async fn publish_via(front: SocketAddr, key: String) -> anyhow::Result<Publishing> {
    let stream = TcpStream::connect(front).await?;
    start_publishing(stream, &key, STEP_TIMEOUT).await
}

/// Waits until the service has logged a line containing every one of `parts`; returns it.
async fn wait_log(service: &Service, parts: &[&str]) -> String {
    let deadline = tokio::time::Instant::now() + LOG_TIMEOUT;
    loop {
        if let Some(line) = service
            .log()
            .lines()
            .find(|line| parts.iter().all(|part| line.contains(part)))
        {
            return line.to_owned();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no log line with {parts:?}; log tail:\n{}",
            service.log_tail(30)
        );
        // The log arrives through a pipe read by the harness's thread; nothing to await.
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// The session of `slug`, which must have a publisher.
async fn session(service: &Service, slug: &str) -> Value {
    let (status, body) = service.get_json(&format!("/api/sessions/{slug}")).await;
    assert_eq!(status, 200, "{slug}: {body}");
    body
}

/// A publish that the service must refuse by closing the connection.
async fn assert_refused(front: SocketAddr, key: &str, what: &str) {
    match publish_via(front, key.to_owned()).await {
        Ok(_) => panic!("{what}: the publish was accepted"),
        Err(error) => assert!(
            format!("{error:#}").contains("server closed"),
            "{what}: refused by a close, not {error:#}"
        ),
    }
}

#[actix_rt::test]
async fn publishers_behind_a_proxy_protocol_balancer_are_limited_by_their_real_address() {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let mock = start_mock();
    let database = sqlite_url(dir.path(), "proxy.db");
    let service = Service::start(
        realtime_core_bin!(),
        &mock.service_env_with(
            &database,
            &[
                ("RTMP_PROXY_PROTOCOL", "true"),
                ("RTMP_TRUSTED_PROXIES", "127.0.0.1/32"),
                ("RTMP_MAX_CONNECTIONS_PER_IP", &MAX_PER_IP.to_string()),
                ("RTMP_MAX_CONNECTIONS", &MAX_CONNECTIONS.to_string()),
            ],
        ),
    );
    wait_log(
        &service,
        &[
            "rtmp listening",
            "proxy_protocol=true",
            "trusted_proxies=127.0.0.1/32",
        ],
    )
    .await;
    let mut fronts = Vec::new();
    for n in 1..=PUBLISHERS + 2 {
        fronts.push(balancer_port(service.rtmp, n).await);
    }
    let front = |n: u8| fronts[usize::from(n - 1)];

    // 40 publishers at once, each from its own address, all through the one balancer.
    let started = tokio::time::Instant::now();
    let results =
        join_all((1..=PUBLISHERS).map(|n| publish_via(front(n), format!("pp-{n}")))).await;
    let mut publishing = Vec::new();
    for (n, result) in (1..=PUBLISHERS).zip(results) {
        publishing.push(result.unwrap_or_else(|e| panic!("publisher {}: {e:#}", claimed(n))));
    }
    eprintln!(
        "{PUBLISHERS} publishers through the balancer accepted in {:?}",
        started.elapsed()
    );
    for n in 1..=PUBLISHERS {
        let slug = format!("pp-{n}");
        let snapshot = session(&service, &slug).await;
        assert_eq!(
            snapshot["publisher"],
            claimed(n).to_string(),
            "{slug}: the session's publisher is the real address: {snapshot}"
        );
        assert_eq!(snapshot["state"], "live", "{slug}: {snapshot}");
        wait_log(
            &service,
            &[
                "rtmp publish started",
                &format!("peer={}", claimed(n)),
                &format!("slug={slug}"),
            ],
        )
        .await;
    }

    // The per-address limit counts 10.0.0.1, not the balancer: a second connection from it
    // is accepted (the balancer already has 40), a third refused.
    publishing.push(
        publish_via(front(1), "pp-1-second".to_owned())
            .await
            .unwrap_or_else(|e| panic!("second publisher from 10.0.0.1: {e:#}")),
    );
    assert_refused(front(1), "pp-1-third", "third connection from 10.0.0.1").await;
    let refusal = wait_log(
        &service,
        &[
            "rtmp connection refused",
            &format!("peer={}", claimed(1)),
            &format!("RTMP_MAX_CONNECTIONS_PER_IP ({MAX_PER_IP})"),
        ],
    )
    .await;
    assert!(refusal.contains("proxy=127.0.0.1:"), "{refusal}");

    // A publisher that skips the balancer comes from a trusted address without a header:
    // its RTMP handshake is not a header, and it is closed.
    let mut direct = TcpStream::connect(service.rtmp).await.expect("connect");
    let mut c0c1 = vec![0x03_u8];
    c0c1.resize(1 + 1536, 0);
    direct.write_all(&c0c1).await.expect("C0+C1");
    let mut byte = [0_u8; 1];
    let read = tokio::time::timeout(STEP_TIMEOUT, direct.read(&mut byte))
        .await
        .expect("the service closes a connection without a header");
    assert!(
        matches!(read, Ok(0) | Err(_)),
        "closed, not answered: {read:?}"
    );
    wait_log(
        &service,
        &[
            "rtmp connection closed",
            "bad PROXY header: not a PROXY protocol header",
        ],
    )
    .await;

    // 10.0.0.41 takes the 42nd place; 10.0.0.42 finds the listener full, whatever its own
    // address holds (nothing).
    publishing.push(
        publish_via(front(PUBLISHERS + 1), "pp-41".to_owned())
            .await
            .unwrap_or_else(|e| panic!("publisher 42 of 42: {e:#}")),
    );
    assert_refused(front(PUBLISHERS + 2), "pp-42", "connection 43 of 42").await;
    wait_log(
        &service,
        &[
            "rtmp connection refused",
            &format!("peer={}", claimed(PUBLISHERS + 2)),
            &format!("RTMP_MAX_CONNECTIONS ({MAX_CONNECTIONS})"),
        ],
    )
    .await;

    // Nobody else was disturbed: every accepted publisher is still the one of its session,
    // and no publish anywhere was logged with the balancer's address.
    assert_eq!(publishing.len(), usize::from(PUBLISHERS) + 2);
    for (slug, address) in (1..=PUBLISHERS)
        .map(|n| (format!("pp-{n}"), claimed(n)))
        .chain([
            ("pp-1-second".to_owned(), claimed(1)),
            ("pp-41".to_owned(), claimed(PUBLISHERS + 1)),
        ])
    {
        let snapshot = session(&service, &slug).await;
        assert_eq!(
            snapshot["publisher"],
            address.to_string(),
            "{slug}: {snapshot}"
        );
    }
    let log = service.log();
    let starts: Vec<&str> = log
        .lines()
        .filter(|line| line.contains("rtmp publish started"))
        .collect();
    assert_eq!(
        starts.len(),
        usize::from(PUBLISHERS) + 2,
        "one start per accepted publish"
    );
    assert!(
        starts.iter().all(|line| line.contains("peer=10.0.0.")),
        "a publish logged with the balancer's address: {starts:#?}"
    );
    let refusals = log
        .lines()
        .filter(|line| line.contains("rtmp connection refused"))
        .count();
    assert_eq!(refusals, 2, "exactly the two refusals above");
    eprintln!(
        "accepted {} publishers from {} addresses through one balancer; refused 1 over \
         RTMP_MAX_CONNECTIONS_PER_IP={MAX_PER_IP}, 1 over RTMP_MAX_CONNECTIONS={MAX_CONNECTIONS}, \
         closed 1 without a header; {:?} in all",
        publishing.len(),
        PUBLISHERS + 1,
        started.elapsed()
    );
    drop(publishing);
}
