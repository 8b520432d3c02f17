//! WebSocket clients of the service (docs/PROTOCOL.md#websocket-connection): each stamps every transcript on arrival.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, SystemTime};

use futures_util::{SinkExt as _, StreamExt as _};
use serde::Deserialize;

/// A transcript as the service numbers it: (`utteranceId`, `text`, `isFinal`).
pub type TranscriptKey = (String, String, bool);

/// What the clients of one session received: every transcript with each client's arrival.
#[derive(Default)]
pub struct SessionInbox {
    pub arrivals: HashMap<TranscriptKey, Vec<Arrival>>,
}

/// One client's receipt of a transcript. The client is named so that a final can be checked
/// per client (missing at one, twice at another) and not only counted over the session.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Arrival {
    pub at: SystemTime,
    /// The client's index among its session's clients (its place in the session's tallies).
    pub client: u32,
}

/// Per-client tallies.
#[derive(Debug, Default, Clone)]
pub struct ClientTally {
    pub finals: u64,
    pub partials: u64,
    pub other: u64,
    /// The upgrade succeeded.
    pub connected: bool,
    /// Closed by the server or broken before the run asked it to go.
    pub lost: bool,
}

/// Counters over all clients, for the progress line and the result.
#[derive(Default)]
pub struct ClientGauges {
    pub connected: Cell<u32>,
    pub connect_failures: Cell<u32>,
    /// Closed by the server or broken before the run asked them to go.
    pub unexpected_disconnects: Cell<u32>,
    pub close_codes: RefCell<HashMap<u16, u32>>,
    pub messages: Cell<u64>,
    pub unparsable: Cell<u64>,
    /// Set once the run is over: closes after this are expected.
    pub finishing: Cell<bool>,
}

#[derive(Deserialize)]
struct Incoming<'a> {
    #[serde(rename = "type", borrow)]
    kind: &'a str,
    #[serde(rename = "utteranceId", default)]
    utterance_id: Option<String>,
    #[serde(default)]
    text: Option<String>,
    #[serde(rename = "isFinal", default)]
    is_final: Option<bool>,
}

/// Connects one client to `slug`; returns once the upgrade is done (or failed), leaving a task
/// that reads until the socket closes.
pub async fn connect(
    client: &awc::Client,
    http: SocketAddr,
    slug: &str,
    index: u32,
    inbox: Rc<RefCell<SessionInbox>>,
    tally: Rc<RefCell<ClientTally>>,
    gauges: Rc<ClientGauges>,
) -> anyhow::Result<()> {
    let url = format!("ws://{http}/api/realtime/transcribe?sessionSlug={slug}");
    let connected = client
        .ws(url)
        .max_frame_size(1 << 20)
        .connect()
        .await
        .map_err(|e| anyhow::anyhow!("WebSocket connect: {e}"));
    let (_response, framed) = match connected {
        Ok(c) => c,
        Err(e) => {
            gauges
                .connect_failures
                .set(gauges.connect_failures.get() + 1);
            return Err(e);
        }
    };
    gauges.connected.set(gauges.connected.get() + 1);
    tally.borrow_mut().connected = true;
    actix_rt::spawn(async move {
        let (mut sink, mut stream) = framed.split();
        let mut close_code = None;
        while let Some(frame) = stream.next().await {
            match frame {
                Ok(awc::ws::Frame::Text(text)) => {
                    let arrival = Arrival {
                        at: SystemTime::now(),
                        client: index,
                    };
                    gauges.messages.set(gauges.messages.get() + 1);
                    record(&text, arrival, &inbox, &tally, &gauges);
                }
                Ok(awc::ws::Frame::Ping(payload)) => {
                    let _ = sink.send(awc::ws::Message::Pong(payload)).await;
                }
                Ok(awc::ws::Frame::Close(reason)) => {
                    close_code = Some(reason.map_or(1005, |r| u16::from(r.code)));
                    break;
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
        gauges.connected.set(gauges.connected.get() - 1);
        if !gauges.finishing.get() {
            gauges
                .unexpected_disconnects
                .set(gauges.unexpected_disconnects.get() + 1);
            tally.borrow_mut().lost = true;
        }
        let code = close_code.unwrap_or(1006);
        *gauges.close_codes.borrow_mut().entry(code).or_default() += 1;
    });
    Ok(())
}

fn record(
    text: &[u8],
    arrival: Arrival,
    inbox: &RefCell<SessionInbox>,
    tally: &RefCell<ClientTally>,
    gauges: &ClientGauges,
) {
    let Ok(message) = serde_json::from_slice::<Incoming<'_>>(text) else {
        gauges.unparsable.set(gauges.unparsable.get() + 1);
        return;
    };
    let (Some(id), Some(text), Some(is_final)) =
        (message.utterance_id, message.text, message.is_final)
    else {
        tally.borrow_mut().other += 1;
        return;
    };
    if message.kind != "transcript" {
        tally.borrow_mut().other += 1;
        return;
    }
    {
        let mut tally = tally.borrow_mut();
        if is_final {
            tally.finals += 1;
        } else {
            tally.partials += 1;
        }
    }
    inbox
        .borrow_mut()
        .arrivals
        .entry((id, text, is_final))
        .or_default()
        .push(arrival);
}

/// The awc client every WebSocket shares: no pool limit (awc's default is 100 connections).
pub fn http_client() -> awc::Client {
    awc::Client::builder()
        .connector(
            awc::Connector::new()
                .limit(0)
                .timeout(Duration::from_secs(20)),
        )
        .timeout(Duration::from_secs(20))
        .finish()
}
