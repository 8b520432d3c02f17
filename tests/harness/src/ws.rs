//! A WebSocket client of the service's transcript endpoint, collecting every JSON message.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::sync::Notify;

use crate::service::Service;

/// A WebSocket client of the service, collecting every JSON message it receives.
pub struct WsClient {
    pub messages: Arc<Mutex<Vec<Value>>>,
    /// The server's close frame: code and reason.
    closed: Arc<Mutex<Option<(u16, String)>>>,
    changed: Arc<Notify>,
    sender: tokio::sync::mpsc::UnboundedSender<String>,
    /// Tells the connection task to close the socket (see [`WsClient::close`]).
    closer: Arc<Notify>,
}

impl WsClient {
    pub async fn connect(service: &Service, query: &str) -> WsClient {
        let url = format!("ws://{}/api/realtime/transcribe?{query}", service.http);
        let (_response, framed) = awc::Client::new()
            .ws(url)
            .connect()
            .await
            .expect("websocket connects");
        let (mut sink, mut stream) = framed.split();
        let messages = Arc::new(Mutex::new(Vec::new()));
        let changed = Arc::new(Notify::new());
        let (sender, mut outgoing) = tokio::sync::mpsc::unbounded_channel::<String>();
        let closed = Arc::new(Mutex::new(None));
        let (m, c, closed_by_server) = (messages.clone(), changed.clone(), closed.clone());
        let closer = Arc::new(Notify::new());
        let close_requested = closer.clone();
        actix_rt::spawn(async move {
            loop {
                tokio::select! {
                    frame = stream.next() => match frame {
                        Some(Ok(awc::ws::Frame::Text(text))) => {
                            let value: Value = serde_json::from_slice(&text).expect("server sends JSON");
                            m.lock().unwrap().push(value);
                            c.notify_waiters();
                        }
                        Some(Ok(awc::ws::Frame::Ping(p))) => { let _ = sink.send(awc::ws::Message::Pong(p)).await; }
                        Some(Ok(awc::ws::Frame::Close(reason))) => {
                            let (code, text) = reason
                                .map(|r| (u16::from(r.code), r.description.unwrap_or_default()))
                                .unwrap_or((1005, String::new()));
                            *closed_by_server.lock().unwrap() = Some((code, text));
                            c.notify_waiters();
                            break;
                        }
                        Some(Ok(_)) => {}
                        _ => { c.notify_waiters(); break; }
                    },
                    Some(text) = outgoing.recv() => {
                        let _ = sink.send(awc::ws::Message::Text(text.into())).await;
                    }
                    _ = close_requested.notified() => {
                        let reason = awc::ws::CloseReason::from(awc::ws::CloseCode::Normal);
                        let _ = sink.send(awc::ws::Message::Close(Some(reason))).await;
                        let _ = sink.close().await;
                        c.notify_waiters();
                        break;
                    }
                }
            }
        });
        WsClient {
            messages,
            closed,
            changed,
            sender,
            closer,
        }
    }

    /// Closes the socket with 1000, as a browser leaving the page does.
    pub fn close(&self) {
        self.closer.notify_one();
    }

    /// Waits for the server's close frame; returns its code and reason.
    pub async fn wait_closed(&self, timeout: Duration) -> Option<(u16, String)> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.changed.notified();
            if let Some(close) = self.closed.lock().unwrap().clone() {
                return Some(close);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.closed.lock().unwrap().clone();
            }
        }
    }

    pub fn send(&self, value: Value) {
        let _ = self.sender.send(value.to_string());
    }

    pub fn snapshot(&self) -> Vec<Value> {
        self.messages.lock().unwrap().clone()
    }

    /// Waits until `pred` holds over the messages received so far.
    pub async fn wait_until(&self, timeout: Duration, pred: impl Fn(&[Value]) -> bool) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.changed.notified();
            if pred(&self.messages.lock().unwrap()) {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return pred(&self.messages.lock().unwrap());
            }
        }
    }

    pub fn transcripts(&self) -> Vec<Value> {
        self.snapshot()
            .into_iter()
            .filter(|m| m["type"] == "transcript")
            .collect()
    }

    pub fn finals(&self) -> Vec<Value> {
        self.transcripts()
            .into_iter()
            .filter(|m| m["isFinal"] == true)
            .collect()
    }

    /// Waits (up to `timeout`) for at least `expected` finals, then asserts they are numbered
    /// `1..=expected`: none missing, none twice, in order.
    pub async fn assert_finals_numbered(&self, expected: usize, timeout: Duration) {
        let all = self
            .wait_until(timeout, |m| {
                m.iter().filter(|m| m["isFinal"] == true).count() >= expected
            })
            .await;
        assert!(all, "finals missing at the client");
        let seqs: Vec<Option<i64>> = self.finals().iter().map(|f| f["seq"].as_i64()).collect();
        let numbered: Vec<Option<i64>> = (1..=expected as i64).map(Some).collect();
        assert_eq!(seqs, numbered);
    }
}
