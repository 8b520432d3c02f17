//! The WebSocket side: `GET /v2/live/ws?token=…`, one task per connection.
//!
//! The task only moves bytes: it parses client frames, hands them to the session's
//! [`LiveSession`](crate::live_session::LiveSession) under the shared lock, and sends back the
//! messages it produced, in order. A session outlives its connections, so a client that drops
//! (any close but 1000) can reconnect to the same URL and continue.

use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use actix_ws::{AggregatedMessage, CloseCode, CloseReason, ProtocolError};
use base64::Engine as _;
use serde_json::Value;

use crate::error_body::error_response;
use crate::records::ConnectionEnd;
use crate::routes::WS_PATH;
use crate::state::{ActiveConnection, Shared};

/// Gladia closes with 1009 on frames over 1 MiB (docs/reference/gladia-live-v2.md §3.2).
const MAX_FRAME_BYTES: usize = 1024 * 1024;
/// Close code for a connection replaced by a newer one on the same URL. 44xx so the official
/// SDK does not try to reconnect the stale socket (docs/reference/gladia-live-v2.md §4.1); the exact code is the
/// mock's choice.
const SUPERSEDED_CLOSE_CODE: u16 = 4409;

/// A client text frame, decoded.
#[derive(Debug, PartialEq)]
enum ClientText {
    Audio(Vec<u8>),
    /// An `audio_chunk` whose `data.chunk` is missing or not base64.
    BadChunk(String),
    Stop,
    /// Not a message the API knows: logged and ignored, the socket stays open.
    Ignored(String),
}

fn parse_client_text(text: &str) -> ClientText {
    let value: Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) => return ClientText::Ignored(format!("not JSON: {e}")),
    };
    match value.get("type").and_then(Value::as_str) {
        Some("audio_chunk") => match value.pointer("/data/chunk").and_then(Value::as_str) {
            Some(chunk) => match base64::engine::general_purpose::STANDARD.decode(chunk) {
                Ok(bytes) => ClientText::Audio(bytes),
                Err(e) => ClientText::BadChunk(format!("data.chunk is not valid base64: {e}")),
            },
            None => ClientText::BadChunk("data.chunk must be a base64 string".to_owned()),
        },
        Some("stop_recording") => ClientText::Stop,
        Some(other) => ClientText::Ignored(format!("unknown message type {other:?}")),
        None => ClientText::Ignored("message without a string \"type\"".to_owned()),
    }
}

/// Upgrade handler. Unknown tokens and ended sessions are refused with 404 before the upgrade.
pub async fn connect(
    req: HttpRequest,
    body: web::Payload,
    shared: web::Data<Shared>,
) -> HttpResponse {
    let token =
        web::Query::<std::collections::HashMap<String, String>>::from_query(req.query_string())
            .ok()
            .and_then(|q| q.get("token").cloned())
            .unwrap_or_default();

    let found = shared.read(|inner| {
        inner
            .session_index_by_token(&token)
            .map(|i| (i, inner.sessions[i].live.record.ended))
    });
    let index = match found {
        None => {
            tracing::warn!(%token, "WebSocket refused: unknown token");
            return error_response(StatusCode::NOT_FOUND, WS_PATH, "Session not found", None);
        }
        Some((_, true)) => {
            tracing::warn!(%token, "WebSocket refused: session already ended");
            return error_response(
                StatusCode::NOT_FOUND,
                WS_PATH,
                "Session already ended",
                None,
            );
        }
        Some((index, false)) => index,
    };

    let (response, ws, stream) = match actix_ws::handle(&req, body) {
        Ok(parts) => parts,
        Err(e) => return e.error_response(),
    };

    let (inject_close, injected_close) = tokio::sync::mpsc::unbounded_channel();
    let registered = shared.update(|inner| {
        let id = inner.next_connection_id();
        let entry = &mut inner.sessions[index];
        if entry.live.record.ended {
            // Ended between the check above and now.
            return None;
        }
        entry.live.record.ws_connections += 1;
        let previous = entry.active.replace(ActiveConnection {
            id,
            ws: ws.clone(),
            inject_close,
        });
        if previous.is_some() {
            entry
                .live
                .record
                .connection_ends
                .push(ConnectionEnd::Superseded);
        }
        Some((id, previous))
    });
    let Some((connection_id, previous)) = registered else {
        actix_web::rt::spawn(ws.close(Some(CloseCode::Policy.into())));
        return response;
    };
    if let Some(previous) = previous {
        tracing::info!(%token, "new connection supersedes the previous one");
        let reason = CloseReason {
            code: CloseCode::Other(SUPERSEDED_CLOSE_CODE),
            description: Some("superseded by a new connection".to_owned()),
        };
        actix_web::rt::spawn(previous.ws.close(Some(reason)));
    }
    tracing::info!(%token, connection_id, "WebSocket connected");

    let stream = stream
        .max_frame_size(MAX_FRAME_BYTES)
        .aggregate_continuations()
        .max_continuation_size(MAX_FRAME_BYTES);
    actix_web::rt::spawn(run_connection(
        shared.into_inner(),
        index,
        connection_id,
        ws,
        stream,
        injected_close,
    ));
    response
}

/// Why the receive loop stopped.
enum LoopEnd {
    /// `stop_recording` handled: close with 1000.
    Stopped,
    ClientClosed(Option<CloseReason>),
    /// The mock closes with this code.
    ServerClose(u16, &'static str),
    /// [`drop_connection`] asked for this close (already recorded there).
    Injected(u16),
    /// The stream ended without a close frame, or a send failed.
    Dropped,
}

async fn run_connection(
    shared: Arc<Shared>,
    index: usize,
    connection_id: u64,
    mut ws: actix_ws::Session,
    mut stream: actix_ws::AggregatedMessageStream,
    mut injected_close: tokio::sync::mpsc::UnboundedReceiver<u16>,
) {
    let is_active = |inner: &crate::state::Inner| {
        inner.sessions[index]
            .active
            .as_ref()
            .is_some_and(|a| a.id == connection_id)
    };

    let end = loop {
        // Both are cancel-safe; a fault-injected close is taken only between two frames.
        let received = tokio::select! {
            biased;
            Some(code) = injected_close.recv() => break LoopEnd::Injected(code),
            received = stream.recv() => received,
        };
        let message = match received {
            None => break LoopEnd::Dropped,
            Some(Ok(message)) => message,
            Some(Err(e)) if is_too_big(&e) => {
                break LoopEnd::ServerClose(1009, "frame larger than 1 MiB")
            }
            Some(Err(ProtocolError::Io(e))) => {
                // The transport failed (often a client that sent its close frame and hung up at
                // once). actix-ws reports that before frames still buffered, and yields them on
                // the next polls, so keep reading: the client's close frame may be among them.
                tracing::debug!(error = %e, "WebSocket transport error");
                continue;
            }
            Some(Err(e)) => {
                tracing::warn!(error = %e, "WebSocket protocol error");
                break LoopEnd::ServerClose(1002, "protocol error");
            }
        };
        let mut stop = false;
        let outgoing: Vec<Value> = match message {
            AggregatedMessage::Binary(bytes) => shared.update(|inner| {
                if is_active(inner) {
                    inner.sessions[index].live.on_audio(&bytes)
                } else {
                    Vec::new()
                }
            }),
            AggregatedMessage::Text(text) => {
                let parsed = parse_client_text(&text);
                if let ClientText::Ignored(why) = &parsed {
                    tracing::warn!(%why, "ignoring client text frame");
                    continue;
                }
                shared.update(|inner| {
                    if !is_active(inner) {
                        return Vec::new();
                    }
                    let live = &mut inner.sessions[index].live;
                    match parsed {
                        ClientText::Audio(bytes) => live.on_audio(&bytes),
                        ClientText::BadChunk(why) => {
                            tracing::warn!(%why, "rejecting audio_chunk");
                            live.on_bad_chunk(&why)
                        }
                        ClientText::Stop => {
                            let first = !live.record.stop_received;
                            let out = live.on_stop();
                            stop = first;
                            out
                        }
                        ClientText::Ignored(_) => Vec::new(),
                    }
                })
            }
            AggregatedMessage::Ping(payload) => {
                if ws.pong(&payload).await.is_err() {
                    break LoopEnd::Dropped;
                }
                continue;
            }
            AggregatedMessage::Pong(_) => continue,
            AggregatedMessage::Close(reason) => break LoopEnd::ClientClosed(reason),
        };
        let mut send_failed = false;
        for message in outgoing {
            if ws.text(message.to_string()).await.is_err() {
                send_failed = true;
                break;
            }
        }
        if stop {
            break LoopEnd::Stopped;
        }
        if send_failed {
            break LoopEnd::Dropped;
        }
    };

    // Only the connection still attached to the session may change its state: a superseded
    // or fault-injected connection was already accounted for by whoever detached it.
    let (end_record, close_with) = match end {
        LoopEnd::Stopped => (
            ConnectionEnd::ServerClosed(1000),
            Some(CloseReason::from(CloseCode::Normal)),
        ),
        LoopEnd::ServerClose(code, why) => (
            ConnectionEnd::ServerClosed(code),
            Some(CloseReason {
                code: CloseCode::from(code),
                description: Some(why.to_owned()),
            }),
        ),
        LoopEnd::ClientClosed(reason) => {
            let code = reason.as_ref().map(|r| u16::from(r.code));
            // Echo the client's close frame, as RFC 6455 asks.
            (ConnectionEnd::ClientClosed(code), reason)
        }
        LoopEnd::Injected(code) => (
            ConnectionEnd::ServerClosed(code),
            Some(CloseReason {
                code: CloseCode::from(code),
                description: Some("closed by mock fault injection".to_owned()),
            }),
        ),
        LoopEnd::Dropped => (ConnectionEnd::Dropped, None),
    };
    tracing::info!(connection_id, end = ?end_record, "WebSocket connection finished");
    shared.update(|inner| {
        if !is_active(inner) {
            return;
        }
        let entry = &mut inner.sessions[index];
        entry.active = None;
        entry.live.record.connection_ends.push(end_record);
        if end_record == ConnectionEnd::ClientClosed(Some(1000)) {
            entry.live.on_client_normal_close();
        }
    });
    if !matches!(end_record, ConnectionEnd::Dropped) {
        // Err only means the socket is already closed, which is the goal anyway.
        let _ = ws.close(close_with).await;
    }
}

/// A frame (or a reassembled fragmented message) over the 1 MiB limit.
fn is_too_big(e: &ProtocolError) -> bool {
    match e {
        ProtocolError::Overflow => true,
        // actix-ws reports oversized continuations only through this io::Error message.
        ProtocolError::Io(io) => io.to_string().contains("maximum continuation size"),
        _ => false,
    }
}

/// Closes the session's live socket with `code` (fault injection). Returns whether one was
/// attached. The socket is detached at once (frames arriving after are neither recorded nor
/// acknowledged, so the client resends them); its loop sends the close frame after the acks of
/// what it already recorded, as a server that acknowledged those bytes would have.
pub async fn drop_connection(shared: &Shared, index: usize, code: u16) -> bool {
    let detached = shared.update(|inner| {
        let entry = inner.sessions.get_mut(index)?;
        let active = entry.active.take()?;
        entry
            .live
            .record
            .connection_ends
            .push(ConnectionEnd::ServerClosed(code));
        Some(active)
    });
    match detached {
        Some(active) => {
            // The loop is gone only if the socket already ended; then there is nothing to close.
            let _ = active.inject_close.send(code);
            true
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_client_text_frames() {
        assert_eq!(
            parse_client_text(r#"{"type":"audio_chunk","data":{"chunk":"AAEC"}}"#),
            ClientText::Audio(vec![0, 1, 2])
        );
        assert_eq!(
            parse_client_text(r#"{"type":"stop_recording"}"#),
            ClientText::Stop
        );
        assert!(matches!(
            parse_client_text(r#"{"type":"audio_chunk","data":{"chunk":"!!"}}"#),
            ClientText::BadChunk(_)
        ));
        assert!(matches!(
            parse_client_text(r#"{"type":"audio_chunk"}"#),
            ClientText::BadChunk(_)
        ));
        assert!(matches!(
            parse_client_text("not json"),
            ClientText::Ignored(_)
        ));
        assert!(matches!(
            parse_client_text(r#"{"type":"hello"}"#),
            ClientText::Ignored(_)
        ));
    }
}
