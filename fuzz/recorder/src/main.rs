//! `rtmp-recorder PORT OUT_FILE`: accepts one RTMP publisher on 127.0.0.1:PORT, plays a
//! minimal server (rml_rtmp handshake + `ServerSession`, accepting connect and publish) so the
//! client goes all the way through its publish and stop sequence, and writes every byte the
//! client sent, in order, to OUT_FILE. Those bytes replay through
//! `realtime_core::rtmp::fuzz_entry::run_connection` because rml_rtmp does not check C2 against
//! our S1 (random per run).
//!
//! `rtmp-recorder --extract RECORDING DIR PREFIX`: replays a recording through a `ServerSession`
//! and writes its first audio messages (FLV AUDIODATA bodies: the AAC sequence header and a few
//! raw frames) as `DIR/PREFIX-N.bin`, the seeds of the `flv_aac` target.
//!
//! Keep the publish short (a couple of seconds of low-bitrate audio): a seed should stay well
//! under 64 KiB. Recording stops at `MAX_RECORD` bytes in any case.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpListener;
use std::time::Duration;

use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};
use rml_rtmp::sessions::{
    ServerSession, ServerSessionConfig, ServerSessionEvent, ServerSessionResult,
};

/// Hard cap on one recording, so a publisher left running cannot write a huge seed.
const MAX_RECORD: usize = 256 * 1024;

/// A publisher that goes quiet this long is done (or waiting for something we do not send).
const IDLE: Duration = Duration::from_secs(3);

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if let [_, flag, recording, dir, prefix] = args.as_slice() {
        if flag == "--extract" {
            return extract_audio(recording, dir, prefix);
        }
    }
    let [_, port, out_path] = args.as_slice() else {
        return Err("usage: rtmp-recorder PORT OUT_FILE".into());
    };
    let listener = TcpListener::bind(("127.0.0.1", port.parse::<u16>()?))?;
    eprintln!("rtmp-recorder: listening on {}", listener.local_addr()?);
    let (mut socket, peer) = listener.accept()?;
    eprintln!("rtmp-recorder: {peer} connected");
    socket.set_read_timeout(Some(IDLE))?;

    let mut recorded = Vec::new();
    let mut handshake = Handshake::new(PeerType::Server);
    let mut session: Option<ServerSession> = None;
    let mut buffer = vec![0_u8; 64 * 1024];
    loop {
        let n = match socket.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => break,
            Err(e) => return Err(e.into()),
        };
        let bytes = &buffer[..n];
        recorded.extend_from_slice(bytes);
        if recorded.len() > MAX_RECORD {
            eprintln!("rtmp-recorder: {MAX_RECORD} bytes reached, stopping");
            break;
        }
        let mut out = Vec::new();
        match session.as_mut() {
            None => match handshake.process_bytes(bytes)? {
                HandshakeProcessResult::InProgress { response_bytes } => out.extend(response_bytes),
                HandshakeProcessResult::Completed {
                    response_bytes,
                    remaining_bytes,
                } => {
                    out.extend(response_bytes);
                    let (mut new_session, greeting) =
                        ServerSession::new(ServerSessionConfig::new())?;
                    handle_results(&mut new_session, greeting, &mut out)?;
                    let results = new_session.handle_input(&remaining_bytes)?;
                    handle_results(&mut new_session, results, &mut out)?;
                    session = Some(new_session);
                }
            },
            Some(session) => {
                let results = session.handle_input(bytes)?;
                handle_results(session, results, &mut out)?;
            }
        }
        socket.write_all(&out)?;
    }
    std::fs::write(out_path, &recorded)?;
    eprintln!(
        "rtmp-recorder: wrote {} bytes to {out_path}",
        recorded.len()
    );
    Ok(())
}

/// Writes the session's packets and accepts connect and publish; everything else needs no reply.
fn handle_results(
    session: &mut ServerSession,
    results: Vec<ServerSessionResult>,
    out: &mut Vec<u8>,
) -> Result<(), Box<dyn std::error::Error>> {
    for result in results {
        match result {
            ServerSessionResult::OutboundResponse(packet) => out.extend(packet.bytes),
            ServerSessionResult::RaisedEvent(
                ServerSessionEvent::ConnectionRequested { request_id, .. }
                | ServerSessionEvent::PublishStreamRequested { request_id, .. },
            ) => {
                let more = session.accept_request(request_id)?;
                handle_results(session, more, out)?;
            }
            _ => {}
        }
    }
    Ok(())
}

/// Audio messages written by `--extract`: the sequence header and the first raw frames.
const EXTRACTED_AUDIO: usize = 4;

fn extract_audio(
    recording: &str,
    dir: &str,
    prefix: &str,
) -> Result<(), Box<dyn std::error::Error>> {
    let bytes = std::fs::read(recording)?;
    // C0 + C1 + C2: rml_rtmp does not look at C2, so the session starts right after.
    let session_bytes = bytes
        .get(1 + 2 * 1536..)
        .ok_or("recording shorter than a handshake")?;
    let (mut session, _) = ServerSession::new(ServerSessionConfig::new())?;
    let mut audio = Vec::new();
    // Small slices, so connect is accepted before the session sees publish (it refuses a
    // publish on a connection that is not connected yet).
    for slice in session_bytes.chunks(64) {
        let mut pending = session.handle_input(slice)?;
        while let Some(result) = pending.pop() {
            match result {
                ServerSessionResult::RaisedEvent(
                    ServerSessionEvent::ConnectionRequested { request_id, .. }
                    | ServerSessionEvent::PublishStreamRequested { request_id, .. },
                ) => pending.extend(session.accept_request(request_id)?),
                ServerSessionResult::RaisedEvent(ServerSessionEvent::AudioDataReceived {
                    data,
                    ..
                }) => audio.push(data),
                _ => {}
            }
        }
    }
    for (index, payload) in audio.iter().take(EXTRACTED_AUDIO).enumerate() {
        std::fs::write(format!("{dir}/{prefix}-{index}.bin"), payload)?;
    }
    eprintln!(
        "rtmp-recorder: {} audio messages, wrote {}",
        audio.len(),
        audio.len().min(EXTRACTED_AUDIO)
    );
    Ok(())
}
