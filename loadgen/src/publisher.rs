//! One RTMP publisher: rml_rtmp client session over a tokio socket, publishing on `live/{key}`
//! the FLV's AAC tags paced by their timestamps in real time (like `ffmpeg -re -c copy`).

use std::cell::Cell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, SystemTime};

use anyhow::{bail, Context as _};
use rml_rtmp::sessions::{ClientSession, ClientSessionResult};
use rml_rtmp::time::RtmpTimestamp;
use test_harness::rtmp_client::{outbound_bytes, start_publishing, Publishing};
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
    let stream: TcpStream = timeout(SETUP_TIMEOUT, socket.connect(addr))
        .await
        .context("RTMP connect timed out")?
        .context("RTMP connect")?;
    stream.set_nodelay(true)?;
    let Publishing {
        mut stream,
        mut session,
    } = start_publishing(stream, key, SETUP_TIMEOUT).await?;
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
                        let results = session
                            .handle_input(&buf[..n])
                            .map_err(|e| anyhow::anyhow!("server bytes: {e:?}"))?;
                        let out = outbound_bytes(results);
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
        let _ = stream.write_all(&outbound_bytes(results)).await;
    }
    let _ = stream.shutdown().await;
    Ok(())
}
