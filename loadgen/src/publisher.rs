//! One RTMP publisher: rml_rtmp client session over a tokio socket, publishing on `live/{key}`
//! the FLV's AAC tags paced by their timestamps in real time (like `ffmpeg -re -c copy`).

use std::cell::Cell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, SystemTime};

use anyhow::{bail, Context as _};
use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};
use rml_rtmp::sessions::{
    ClientSession, ClientSessionConfig, ClientSessionEvent, ClientSessionResult, PublishRequestType,
};
use rml_rtmp::time::RtmpTimestamp;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{timeout, Instant};

use crate::flv::AacTrack;

const SETUP_TIMEOUT: Duration = Duration::from_secs(20);

/// What one publisher did: for every audio message, when it was sent and how much PCM
/// (16 kHz mono S16LE bytes) the stream amounts to once that frame is decoded.
#[derive(Debug, Default)]
pub struct PublishLog {
    pub sends: Vec<(SystemTime, u64)>,
    /// Set when the publish failed (connection refused, closed by the server…).
    pub error: Option<String>,
}

/// Shared live counters for the progress line.
#[derive(Default)]
pub struct PublisherGauges {
    pub publishing: Cell<u32>,
    pub messages: Cell<u64>,
    pub failed: Cell<u32>,
}

/// Publishes until `until`; never panics on what the server sends.
pub async fn publish(
    addr: SocketAddr,
    source: std::net::Ipv4Addr,
    key: String,
    track: Rc<AacTrack>,
    until: Instant,
    gauges: Rc<PublisherGauges>,
) -> PublishLog {
    let mut log = PublishLog::default();
    let mut publishing = false;
    if let Err(e) = run(
        addr,
        source,
        &key,
        &track,
        until,
        &gauges,
        &mut log,
        &mut publishing,
    )
    .await
    {
        gauges.failed.set(gauges.failed.get() + 1);
        log.error = Some(format!("{e:#}"));
    }
    if publishing {
        gauges.publishing.set(gauges.publishing.get() - 1);
    }
    log
}

#[allow(clippy::too_many_arguments)]
async fn run(
    addr: SocketAddr,
    source: std::net::Ipv4Addr,
    key: &str,
    track: &AacTrack,
    until: Instant,
    gauges: &PublisherGauges,
    log: &mut PublishLog,
    publishing: &mut bool,
) -> anyhow::Result<()> {
    // From `source` (a 127.x.y.z address): the service accepts a bounded number of RTMP
    // connections per peer IP, as from one egress node.
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket
        .bind(SocketAddr::from((source, 0)))
        .with_context(|| format!("cannot bind {source}"))?;
    let mut stream: TcpStream = timeout(SETUP_TIMEOUT, socket.connect(addr))
        .await
        .context("RTMP connect timed out")?
        .context("RTMP connect")?;
    stream.set_nodelay(true)?;
    let mut pending = timeout(SETUP_TIMEOUT, handshake(&mut stream))
        .await
        .context("RTMP handshake timed out")??;
    let (mut session, initial) = ClientSession::new(ClientSessionConfig::new())
        .map_err(|e| anyhow::anyhow!("client session: {e:?}"))?;
    let mut out = Vec::new();
    collect(initial, &mut out);
    collect(
        vec![session
            .request_connection("live".into())
            .map_err(|e| anyhow::anyhow!("connect request: {e:?}"))?],
        &mut out,
    );
    stream.write_all(&out).await?;
    timeout(
        SETUP_TIMEOUT,
        pump_until(&mut stream, &mut session, &mut pending, |e| {
            matches!(e, ClientSessionEvent::ConnectionRequestAccepted)
        }),
    )
    .await
    .context("RTMP connect not accepted in time")??;
    let request = session
        .request_publishing(key.to_owned(), PublishRequestType::Live)
        .map_err(|e| anyhow::anyhow!("publish request: {e:?}"))?;
    let mut out = Vec::new();
    collect(vec![request], &mut out);
    stream.write_all(&out).await?;
    timeout(
        SETUP_TIMEOUT,
        pump_until(&mut stream, &mut session, &mut pending, |e| {
            matches!(e, ClientSessionEvent::PublishRequestAccepted)
        }),
    )
    .await
    .context("RTMP publish not accepted in time")??;
    *publishing = true;
    gauges.publishing.set(gauges.publishing.get() + 1);

    let send = |session: &mut ClientSession, data: bytes::Bytes, ts: u32| match session
        .publish_audio_data(data, RtmpTimestamp::new(ts), false)
    {
        Ok(ClientSessionResult::OutboundResponse(packet)) => Ok(packet.bytes),
        Ok(_) => Ok(Vec::new()),
        Err(e) => Err(anyhow::anyhow!("publish audio: {e:?}")),
    };
    let bytes = send(&mut session, track.sequence_header.clone(), 0)?;
    stream.write_all(&bytes).await?;

    let start = Instant::now();
    let mut sent_frames: u64 = 0;
    let mut buf = vec![0_u8; 4096];
    'publish: for pass in 0u32.. {
        for frame in &track.frames {
            let ts = pass * track.loop_ms + frame.timestamp_ms;
            let due = start + Duration::from_millis(u64::from(ts));
            if due >= until {
                break 'publish;
            }
            // Read whatever the server sends (acks, pings) while waiting for the frame's time.
            loop {
                tokio::select! {
                    biased;
                    () = tokio::time::sleep_until(due) => break,
                    read = stream.read(&mut buf) => {
                        let n = read?;
                        if n == 0 {
                            bail!("server closed the RTMP connection after {sent_frames} frames");
                        }
                        let mut out = Vec::new();
                        let results = session
                            .handle_input(&buf[..n])
                            .map_err(|e| anyhow::anyhow!("server bytes: {e:?}"))?;
                        collect(results, &mut out);
                        if !out.is_empty() {
                            stream.write_all(&out).await?;
                        }
                    }
                }
            }
            let bytes = send(&mut session, frame.data.clone(), ts)?;
            sent_frames += 1;
            log.sends
                .push((SystemTime::now(), track.pcm_bytes_for_frames(sent_frames)));
            stream.write_all(&bytes).await?;
            gauges.messages.set(gauges.messages.get() + 1);
        }
    }
    // Like an encoder that stops: close the stream, then the socket.
    if let Ok(results) = session.stop_publishing() {
        let mut out = Vec::new();
        collect(results, &mut out);
        let _ = stream.write_all(&out).await;
    }
    let _ = stream.shutdown().await;
    Ok(())
}

async fn handshake(stream: &mut TcpStream) -> anyhow::Result<Vec<u8>> {
    let mut handshake = Handshake::new(PeerType::Client);
    let c0c1 = handshake
        .generate_outbound_p0_and_p1()
        .map_err(|e| anyhow::anyhow!("handshake: {e:?}"))?;
    stream.write_all(&c0c1).await?;
    let mut buf = vec![0_u8; 8192];
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            bail!("server closed during the handshake");
        }
        match handshake
            .process_bytes(&buf[..n])
            .map_err(|e| anyhow::anyhow!("handshake: {e:?}"))?
        {
            HandshakeProcessResult::InProgress { response_bytes } => {
                stream.write_all(&response_bytes).await?;
            }
            HandshakeProcessResult::Completed {
                response_bytes,
                remaining_bytes,
            } => {
                stream.write_all(&response_bytes).await?;
                return Ok(remaining_bytes);
            }
        }
    }
}

fn collect(results: Vec<ClientSessionResult>, out: &mut Vec<u8>) {
    for result in results {
        if let ClientSessionResult::OutboundResponse(packet) = result {
            out.extend_from_slice(&packet.bytes);
        }
    }
}

async fn pump_until(
    stream: &mut TcpStream,
    session: &mut ClientSession,
    pending: &mut Vec<u8>,
    done: impl Fn(&ClientSessionEvent) -> bool,
) -> anyhow::Result<()> {
    let mut buf = vec![0_u8; 8192];
    loop {
        let input = if pending.is_empty() {
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                bail!("server closed the connection (publish refused?)");
            }
            buf[..n].to_vec()
        } else {
            std::mem::take(pending)
        };
        let mut out = Vec::new();
        let mut finished = false;
        for result in session
            .handle_input(&input)
            .map_err(|e| anyhow::anyhow!("server bytes: {e:?}"))?
        {
            match result {
                ClientSessionResult::OutboundResponse(packet) => {
                    out.extend_from_slice(&packet.bytes)
                }
                ClientSessionResult::RaisedEvent(
                    ClientSessionEvent::ConnectionRequestRejected { description },
                ) => bail!("connect rejected: {description}"),
                ClientSessionResult::RaisedEvent(event) => finished |= done(&event),
                ClientSessionResult::UnhandleableMessageReceived(_) => {}
            }
        }
        if !out.is_empty() {
            stream.write_all(&out).await?;
        }
        if finished {
            return Ok(());
        }
    }
}
