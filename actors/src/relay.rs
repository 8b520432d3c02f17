//! `RelayPoster`: HTTP broadcast mode (docs/PROTOCOL.md#http-broadcast-mode, `REALTIME_BROADCAST_MODE=http`).
//!
//! An ingest-only instance hands every docs/PROTOCOL.md#transcript-messages message its `BroadcastActor`s emit (partials
//! and finals, finals with their `seq`) to this one actor, which POSTs them one at a time, in
//! order, to another instance's `/api/realtime/transcribe/broadcast` with the shared secret in
//! `x-broadcast-secret`. One poster per process, with one lane per session: each session's
//! messages go one at a time, in order; sessions do not wait for each other.
//!
//! - Connection errors, timeouts, 5xx and 429 are retried with back-off (100 ms doubling to
//!   5 s); the message stays at the head of the queue, so nothing overtakes it.
//! - Other 4xx mean the receiver will never take this message: it is dropped and counted, and
//!   the first refusal of each status is logged (never the secret).
//! - Each session's queue is bounded: when full, the oldest partial goes first; finals are
//!   dropped only when the queue holds nothing but finals. Every drop is counted.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use bytestring::ByteString;

use crate::metrics::names::{
    RELAY_DROPPED_FINALS_TOTAL, RELAY_DROPPED_PARTIALS_TOTAL, RELAY_POSTED_TOTAL,
    RELAY_RETRIES_TOTAL,
};

/// The path of the receiving endpoint (docs/PROTOCOL.md#http-broadcast-mode).
pub const BROADCAST_PATH: &str = "/api/realtime/transcribe/broadcast";
/// The header carrying the shared secret.
pub const SECRET_HEADER: &str = "x-broadcast-secret";
/// Default bound of one session's queue of messages waiting to be posted.
pub const DEFAULT_QUEUE_LIMIT: usize = 10_000;

const POST_TIMEOUT: Duration = Duration::from_secs(10);
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Where and how to relay. `Debug` never shows the secret.
#[derive(Clone)]
pub struct RelayConfig {
    /// The full URL of the receiver's broadcast endpoint.
    pub url: String,
    pub secret: Arc<str>,
    /// Per session.
    pub queue_limit: usize,
}

impl std::fmt::Debug for RelayConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelayConfig")
            .field("url", &loggable_url(&self.url))
            .field("secret", &"<hidden>")
            .field("queue_limit", &self.queue_limit)
            .finish()
    }
}

/// `REALTIME_BROADCAST_URL` as given (a base URL or the endpoint itself) → the endpoint URL.
pub fn endpoint_url(configured: &str) -> String {
    let base = configured.trim().trim_end_matches('/');
    if base.ends_with(BROADCAST_PATH) {
        base.to_owned()
    } else {
        format!("{base}{BROADCAST_PATH}")
    }
}

/// `url` as logs may show it: credentials in the authority (`user:pass@`) and the query (which
/// may carry a token) replaced by `***`, so a secret put in the URL never reaches a log.
pub fn loggable_url(url: &str) -> String {
    let (scheme, rest) = match url.find("://") {
        Some(i) => url.split_at(i + 3),
        None => ("", url),
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    let host = match authority.rfind('@') {
        Some(at) => format!("***@{}", &authority[at + 1..]),
        None => authority.to_owned(),
    };
    let path = match path.find(['?', '#']) {
        Some(q) if path[q..].starts_with('?') => format!("{}?***", &path[..q]),
        Some(q) => path[..q].to_owned(),
        None => path.to_owned(),
    };
    format!("{scheme}{host}{path}")
}

/// One docs/PROTOCOL.md#transcript-messages message to post, already serialised exactly as a local client gets it.
#[derive(Message, Clone, Debug)]
#[rtype(result = "()")]
pub struct RelayMessage {
    /// Messages of one session are posted in order; sessions do not wait for each other.
    pub session_slug: Arc<str>,
    pub is_final: bool,
    pub frame: ByteString,
}

/// Completes once every message queued before it has been posted (or dropped); the caller
/// bounds the wait (graceful shutdown).
#[derive(Message)]
#[rtype(result = "usize")]
pub struct FlushRelay;

/// The bounded queue and its drop policy, apart from the network so it can be tested alone.
#[derive(Debug)]
pub struct RelayQueue {
    items: VecDeque<RelayMessage>,
    limit: usize,
}

/// What [`RelayQueue::push`] had to give up to stay bounded.
#[derive(Debug, PartialEq, Eq)]
pub enum Dropped {
    Nothing,
    Partial,
    Final,
}

impl RelayQueue {
    pub fn new(limit: usize) -> RelayQueue {
        RelayQueue {
            items: VecDeque::new(),
            limit: limit.max(1),
        }
    }

    /// Appends `message`; when full, the oldest partial is dropped first, else the oldest final.
    pub fn push(&mut self, message: RelayMessage) -> Dropped {
        let mut dropped = Dropped::Nothing;
        if self.items.len() >= self.limit {
            if let Some(i) = self.items.iter().position(|m| !m.is_final) {
                self.items.remove(i);
                dropped = Dropped::Partial;
            } else if !message.is_final {
                // Only finals are waiting: the new partial is the one that goes.
                return Dropped::Partial;
            } else {
                self.items.pop_front();
                dropped = Dropped::Final;
            }
        }
        self.items.push_back(message);
        dropped
    }

    pub fn front(&self) -> Option<&RelayMessage> {
        self.items.front()
    }

    pub fn pop_front(&mut self) -> Option<RelayMessage> {
        self.items.pop_front()
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

/// One session's messages: posted one at a time, in order, independently of other sessions
/// (a receiver refusing or failing one session does not hold up the others).
struct Lane {
    queue: RelayQueue,
    /// A post is under way, or a retry is waiting for its back-off.
    busy: bool,
    backoff: Duration,
}

pub struct RelayPoster {
    config: RelayConfig,
    lanes: HashMap<Arc<str>, Lane>,
    client: Option<awc::Client>,
    /// Statuses already logged, so a misconfigured receiver does not flood the log.
    refusals_logged: HashSet<u16>,
    flush_waiters: Vec<tokio::sync::oneshot::Sender<()>>,
}

enum PostOutcome {
    Accepted,
    Retry(String),
    Refused(u16, String),
}

impl RelayPoster {
    pub fn new(config: RelayConfig) -> RelayPoster {
        RelayPoster {
            config,
            lanes: HashMap::new(),
            client: None,
            refusals_logged: HashSet::new(),
            flush_waiters: Vec::new(),
        }
    }

    fn queued(&self) -> usize {
        self.lanes.values().map(|l| l.queue.len()).sum()
    }

    /// Posts the head of `session`'s lane unless a post or back-off is under way there.
    fn pump(&mut self, session: Arc<str>, ctx: &mut Context<Self>) {
        let Some(lane) = self.lanes.get_mut(&session) else {
            return;
        };
        if lane.busy {
            return;
        }
        let Some(message) = lane.queue.front().cloned() else {
            // Drained: forget the lane (the session may be over), tell flush waiters if all are.
            self.lanes.remove(&session);
            if self.lanes.is_empty() {
                for waiter in self.flush_waiters.drain(..) {
                    let _ = waiter.send(());
                }
            }
            return;
        };
        lane.busy = true;
        let client = self
            .client
            .get_or_insert_with(|| awc::Client::builder().timeout(POST_TIMEOUT).finish())
            .clone();
        let request = client
            .post(self.config.url.as_str())
            .insert_header((SECRET_HEADER, &*self.config.secret))
            .insert_header(("content-type", "application/json"))
            .send_body(message.frame.as_bytes().clone());
        async move {
            match request.await {
                Ok(mut response) => {
                    let status = response.status();
                    // Read the (small) answer so the connection can be reused.
                    let body = response.body().limit(4096).await.unwrap_or_default();
                    let body = String::from_utf8_lossy(&body).chars().take(300).collect();
                    if status.is_success() {
                        PostOutcome::Accepted
                    } else if status.is_server_error() || status.as_u16() == 429 {
                        PostOutcome::Retry(format!("HTTP {status}: {body}"))
                    } else {
                        PostOutcome::Refused(status.as_u16(), body)
                    }
                }
                // Connection errors and timeouts: awc's errors carry no headers or body.
                Err(error) => PostOutcome::Retry(error.to_string()),
            }
        }
        .into_actor(self)
        .map(move |outcome, act, ctx| {
            let url = loggable_url(&act.config.url);
            let Some(lane) = act.lanes.get_mut(&session) else {
                return;
            };
            lane.busy = false;
            match outcome {
                PostOutcome::Accepted => {
                    lane.queue.pop_front();
                    lane.backoff = FIRST_BACKOFF;
                    ::metrics::counter!(RELAY_POSTED_TOTAL).increment(1);
                    act.pump(session, ctx);
                }
                PostOutcome::Retry(why) => {
                    ::metrics::counter!(RELAY_RETRIES_TOTAL).increment(1);
                    let wait = lane.backoff;
                    lane.backoff = (lane.backoff * 2).min(MAX_BACKOFF);
                    // Nothing overtakes the failed message, and new ones do not cut the wait short.
                    lane.busy = true;
                    tracing::warn!(session = %session, %url, error = %why, retry_in_ms = wait.as_millis() as u64, queued = lane.queue.len(), "broadcast relay post failed; retrying");
                    ctx.run_later(wait, move |act, ctx| {
                        if let Some(lane) = act.lanes.get_mut(&session) {
                            lane.busy = false;
                        }
                        act.pump(session, ctx);
                    });
                }
                PostOutcome::Refused(status, body) => {
                    if let Some(dropped) = lane.queue.pop_front() {
                        count_drop(dropped.is_final);
                    }
                    lane.backoff = FIRST_BACKOFF;
                    if act.refusals_logged.insert(status) {
                        tracing::error!(session = %session, %url, status, answer = %body, "broadcast relay refused a message; dropping it (further refusals with this status are not logged)");
                    }
                    act.pump(session, ctx);
                }
            }
        })
        .spawn(ctx);
    }
}

fn count_drop(is_final: bool) {
    if is_final {
        ::metrics::counter!(RELAY_DROPPED_FINALS_TOTAL).increment(1);
    } else {
        ::metrics::counter!(RELAY_DROPPED_PARTIALS_TOTAL).increment(1);
    }
}

impl Actor for RelayPoster {
    type Context = Context<Self>;
}

impl Handler<RelayMessage> for RelayPoster {
    type Result = ();

    fn handle(&mut self, message: RelayMessage, ctx: &mut Self::Context) {
        let session = message.session_slug.clone();
        let limit = self.config.queue_limit;
        let lane = self.lanes.entry(session.clone()).or_insert_with(|| Lane {
            queue: RelayQueue::new(limit),
            busy: false,
            backoff: FIRST_BACKOFF,
        });
        match lane.queue.push(message) {
            Dropped::Nothing => {}
            Dropped::Partial => count_drop(false),
            Dropped::Final => {
                count_drop(true);
                tracing::error!(session = %session, limit, "broadcast relay queue full of finals: dropped the oldest");
            }
        }
        self.pump(session, ctx);
    }
}

impl Handler<FlushRelay> for RelayPoster {
    type Result = ResponseFuture<usize>;

    fn handle(&mut self, _: FlushRelay, ctx: &mut Self::Context) -> Self::Result {
        let (done, wait) = tokio::sync::oneshot::channel();
        if self.lanes.is_empty() {
            let _ = done.send(());
        } else {
            self.flush_waiters.push(done);
        }
        // After the wait, report what could not be posted (0 when flushed).
        let me = ctx.address();
        Box::pin(async move {
            let _ = wait.await;
            me.send(QueueLength).await.unwrap_or(0)
        })
    }
}

#[derive(Message)]
#[rtype(result = "usize")]
struct QueueLength;

impl Handler<QueueLength> for RelayPoster {
    type Result = usize;

    fn handle(&mut self, _: QueueLength, _: &mut Self::Context) -> usize {
        self.queued()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(is_final: bool, text: &str) -> RelayMessage {
        RelayMessage {
            session_slug: "s".into(),
            is_final,
            frame: ByteString::from(text.to_owned()),
        }
    }

    fn texts(q: &RelayQueue) -> Vec<String> {
        q.items.iter().map(|m| m.frame.to_string()).collect()
    }

    #[test]
    fn a_full_queue_drops_the_oldest_partial_first() {
        let mut q = RelayQueue::new(3);
        assert_eq!(q.push(msg(true, "f1")), Dropped::Nothing);
        assert_eq!(q.push(msg(false, "p1")), Dropped::Nothing);
        assert_eq!(q.push(msg(false, "p2")), Dropped::Nothing);
        assert_eq!(q.push(msg(true, "f2")), Dropped::Partial);
        assert_eq!(texts(&q), ["f1", "p2", "f2"]);
        assert_eq!(q.push(msg(true, "f3")), Dropped::Partial);
        assert_eq!(texts(&q), ["f1", "f2", "f3"]);
    }

    #[test]
    fn finals_only_a_new_partial_is_dropped_and_a_new_final_pushes_out_the_oldest() {
        let mut q = RelayQueue::new(2);
        q.push(msg(true, "f1"));
        q.push(msg(true, "f2"));
        assert_eq!(q.push(msg(false, "p")), Dropped::Partial);
        assert_eq!(texts(&q), ["f1", "f2"]);
        assert_eq!(q.push(msg(true, "f3")), Dropped::Final);
        assert_eq!(texts(&q), ["f2", "f3"]);
        assert_eq!(q.len(), 2);
    }

    #[test]
    fn logged_urls_carry_no_credentials() {
        assert_eq!(
            loggable_url(
                "https://relay:s3cret@10.0.0.2:8443/api/realtime/transcribe/broadcast?token=t0k#x"
            ),
            "https://***@10.0.0.2:8443/api/realtime/transcribe/broadcast?***"
        );
        assert_eq!(
            loggable_url("http://10.0.0.2:8080/api/realtime/transcribe/broadcast"),
            "http://10.0.0.2:8080/api/realtime/transcribe/broadcast"
        );
        assert_eq!(loggable_url("http://u:p@h"), "http://***@h");
        let config = RelayConfig {
            url: "http://u:pw@h/x?k=v".into(),
            secret: "shh".into(),
            queue_limit: 1,
        };
        let shown = format!("{config:?}");
        assert!(
            !shown.contains("pw") && !shown.contains("k=v") && !shown.contains("shh"),
            "{shown}"
        );
    }

    #[test]
    fn endpoint_url_accepts_a_base_or_the_endpoint() {
        assert_eq!(
            endpoint_url("http://10.0.0.2:8080/"),
            "http://10.0.0.2:8080/api/realtime/transcribe/broadcast"
        );
        assert_eq!(
            endpoint_url("http://h/api/realtime/transcribe/broadcast"),
            "http://h/api/realtime/transcribe/broadcast"
        );
    }

    #[test]
    fn debug_hides_the_secret() {
        let c = RelayConfig {
            url: "http://h".into(),
            secret: "hunter2".into(),
            queue_limit: 1,
        };
        assert!(!format!("{c:?}").contains("hunter2"));
    }

    /// A receiver that answers from a script: first unreachable, then 503, then whatever
    /// each body asks for. The poster must keep order, retry, and drop only the refused one.
    #[actix_rt::test]
    async fn retries_in_order_and_drops_only_refused_messages() {
        use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
        use std::sync::Mutex;

        // As the binary does at start-up; Err only means a provider is installed already.
        let _ = rustls::crypto::ring::default_provider().install_default();
        // A port with nothing listening yet: the first attempts fail to connect.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("free port");
        let poster = RelayPoster::new(RelayConfig {
            url: format!("http://127.0.0.1:{port}{BROADCAST_PATH}"),
            secret: "s3cret".into(),
            queue_limit: 100,
        })
        .start();
        crate::metrics::install();
        let retries_before = crate::metrics::counter_value(RELAY_RETRIES_TOTAL);
        for (is_final, text) in [(true, "f1"), (false, "refuse-me"), (true, "f2")] {
            poster.do_send(RelayMessage {
                session_slug: "s".into(),
                is_final,
                frame: ByteString::from(text.to_owned()),
            });
        }
        let first_failure = std::time::Instant::now();
        while crate::metrics::counter_value(RELAY_RETRIES_TOTAL) == retries_before {
            assert!(
                first_failure.elapsed() < Duration::from_secs(10),
                "no retry"
            );
            actix_rt::time::sleep(Duration::from_millis(10)).await;
        }

        let seen: web::Data<Mutex<Vec<(String, String)>>> = web::Data::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let server = HttpServer::new(move || {
            App::new().app_data(log.clone()).route(
                BROADCAST_PATH,
                web::post().to(
                    |req: HttpRequest,
                     body: web::Bytes,
                     seen: web::Data<Mutex<Vec<(String, String)>>>| async move {
                        let secret = req
                            .headers()
                            .get(SECRET_HEADER)
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or_default()
                            .to_owned();
                        let text = String::from_utf8_lossy(&body).into_owned();
                        let mut seen = seen.lock().unwrap();
                        seen.push((secret, text.clone()));
                        if seen.len() == 1 {
                            HttpResponse::ServiceUnavailable().finish()
                        } else if text == "refuse-me" {
                            HttpResponse::BadRequest().finish()
                        } else {
                            HttpResponse::Ok().finish()
                        }
                    },
                ),
            )
        })
        .workers(1)
        .disable_signals()
        .bind(("127.0.0.1", port))
        .expect("bind the receiver")
        .run();
        let handle = server.handle();
        actix_rt::spawn(server);

        let left = tokio::time::timeout(Duration::from_secs(20), poster.send(FlushRelay))
            .await
            .expect("flushed in time")
            .expect("poster alive");
        assert_eq!(left, 0);
        let seen = seen.lock().unwrap().clone();
        let texts: Vec<&str> = seen.iter().map(|(_, t)| t.as_str()).collect();
        assert_eq!(texts, ["f1", "f1", "refuse-me", "f2"]);
        assert!(seen.iter().all(|(secret, _)| secret == "s3cret"));
        handle.stop(false).await;
    }

    /// A session whose messages the receiver keeps failing does not hold up another session.
    #[actix_rt::test]
    async fn a_failing_session_does_not_block_the_others() {
        use actix_web::{web, App, HttpResponse, HttpServer};

        let _ = rustls::crypto::ring::default_provider().install_default();
        let (seen_tx, mut seen) = tokio::sync::mpsc::unbounded_channel::<String>();
        let server = HttpServer::new(move || {
            let seen_tx = seen_tx.clone();
            App::new().route(
                BROADCAST_PATH,
                web::post().to(move |body: web::Bytes| {
                    let seen_tx = seen_tx.clone();
                    async move {
                        let text = String::from_utf8_lossy(&body).into_owned();
                        let stuck = text == "stuck";
                        let _ = seen_tx.send(text);
                        if stuck {
                            HttpResponse::ServiceUnavailable().finish()
                        } else {
                            HttpResponse::Ok().finish()
                        }
                    }
                }),
            )
        })
        .workers(1)
        .disable_signals()
        .bind(("127.0.0.1", 0))
        .expect("bind the receiver");
        let addr = server.addrs()[0];
        let server = server.run();
        let handle = server.handle();
        actix_rt::spawn(server);

        let poster = RelayPoster::new(RelayConfig {
            url: format!("http://{addr}{BROADCAST_PATH}"),
            secret: "s3cret".into(),
            queue_limit: 100,
        })
        .start();
        for (session, text) in [("a", "stuck"), ("a", "a2"), ("b", "b1")] {
            poster.do_send(RelayMessage {
                session_slug: session.into(),
                is_final: true,
                frame: ByteString::from(text.to_owned()),
            });
        }
        let mut got = Vec::new();
        let wait = tokio::time::timeout(Duration::from_secs(10), async {
            while let Some(text) = seen.recv().await {
                got.push(text);
                let stuck = got.iter().filter(|t| *t == "stuck").count();
                if got.iter().any(|t| t == "b1") && stuck >= 2 {
                    break;
                }
            }
        })
        .await;
        assert!(wait.is_ok(), "session b waited for session a: {got:?}");
        assert!(
            !got.contains(&"a2".to_owned()),
            "a2 overtook the failing message: {got:?}"
        );
        handle.stop(false).await;
    }
}
