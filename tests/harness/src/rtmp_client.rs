//! An in-process RTMP publisher on rml_rtmp's client session: the handshake, `connect` to the
//! `live` application and `publish` on a stream key, each step bounded in time. What is sent
//! after that (audio, malformed messages) is the caller's.

use std::time::Duration;

use anyhow::{bail, Context as _};
use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};
use rml_rtmp::sessions::{
    ClientSession, ClientSessionConfig, ClientSessionEvent, ClientSessionResult, PublishRequestType,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

/// A connection whose publish the server accepted.
pub struct Publishing {
    pub stream: TcpStream,
    pub session: ClientSession,
}

/// Handshakes on `stream`, connects to `live` and publishes on `key`, waiting at most
/// `step_timeout` for each of the three; an error says which step failed or was refused.
pub async fn start_publishing(
    mut stream: TcpStream,
    key: &str,
    step_timeout: Duration,
) -> anyhow::Result<Publishing> {
    let mut pending = timeout(step_timeout, handshake(&mut stream))
        .await
        .context("RTMP handshake timed out")??;
    let (mut session, initial) = ClientSession::new(ClientSessionConfig::new())
        .map_err(|e| anyhow::anyhow!("client session: {e:?}"))?;
    let mut out = outbound_bytes(initial);
    out.extend(outbound_bytes(vec![session
        .request_connection("live".into())
        .map_err(|e| anyhow::anyhow!("connect request: {e:?}"))?]));
    stream.write_all(&out).await?;
    timeout(
        step_timeout,
        pump_until(&mut stream, &mut session, &mut pending, |e| {
            matches!(e, ClientSessionEvent::ConnectionRequestAccepted)
        }),
    )
    .await
    .context("RTMP connect not accepted in time")??;
    let request = session
        .request_publishing(key.to_owned(), PublishRequestType::Live)
        .map_err(|e| anyhow::anyhow!("publish request: {e:?}"))?;
    stream.write_all(&outbound_bytes(vec![request])).await?;
    timeout(
        step_timeout,
        pump_until(&mut stream, &mut session, &mut pending, |e| {
            matches!(e, ClientSessionEvent::PublishRequestAccepted)
        }),
    )
    .await
    .context("RTMP publish not accepted in time")??;
    Ok(Publishing { stream, session })
}

/// The client side of the RTMP handshake; returns the bytes the server sent past its end.
pub async fn handshake(stream: &mut TcpStream) -> anyhow::Result<Vec<u8>> {
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

/// The bytes to send for a client session's results (its other results are dropped).
pub fn outbound_bytes(results: Vec<ClientSessionResult>) -> Vec<u8> {
    let mut out = Vec::new();
    for result in results {
        if let ClientSessionResult::OutboundResponse(packet) = result {
            out.extend_from_slice(&packet.bytes);
        }
    }
    out
}

/// Feeds what the server sends (first `pending`) to `session`, answering it, until an event
/// satisfies `done`; a rejected connect or a closed connection is an error.
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
