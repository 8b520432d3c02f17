//! [`MockGladia`]: the test-facing handle that runs the server on its own thread.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use actix_web::dev::ServerHandle;
use actix_web::{web, App, HttpServer};
use anyhow::Context as _;

use crate::config::MockConfig;
use crate::http_api;
use crate::records::{InitRecord, SessionRecord};
use crate::state::Shared;
use crate::ws_session;

/// A running mock Gladia Live v2 server. Dropping it stops the server.
pub struct MockGladia {
    shared: Arc<Shared>,
    addr: SocketAddr,
    handle: ServerHandle,
    thread: Option<JoinHandle<()>>,
}

impl MockGladia {
    /// Starts the HTTP+WS server on its own thread, with its own actix System, so it works from
    /// any test (sync, tokio or actix). Returns once the socket is bound.
    pub fn start(config: MockConfig) -> anyhow::Result<MockGladia> {
        let bind = config.bind;
        let shared = Arc::new(Shared::new(config));
        let data = web::Data::from(Arc::clone(&shared));
        let (tx, rx) = std::sync::mpsc::channel::<anyhow::Result<(SocketAddr, ServerHandle)>>();

        let thread = std::thread::Builder::new()
            .name("mock-gladia".to_owned())
            .spawn(move || {
                let system = actix_rt::System::new();
                system.block_on(async move {
                    let server = HttpServer::new(move || {
                        App::new()
                            .app_data(data.clone())
                            .configure(http_api::configure)
                    })
                    // One worker is plenty for tests and keeps thread count low on small CI boxes.
                    .workers(1)
                    // The embedding process owns signals; the bin handles Ctrl-C itself.
                    .disable_signals()
                    // Open WebSockets must not hold up `stop()`.
                    .shutdown_timeout(1)
                    .bind(bind);
                    let server = match server {
                        Ok(server) => server,
                        Err(e) => {
                            let _ = tx.send(Err(anyhow::Error::new(e)
                                .context(format!("mock-gladia cannot bind {bind}"))));
                            return;
                        }
                    };
                    let Some(addr) = server.addrs().first().copied() else {
                        let _ = tx.send(Err(anyhow::anyhow!("mock-gladia bound no address")));
                        return;
                    };
                    let server = server.run();
                    if tx.send(Ok((addr, server.handle()))).is_err() {
                        return;
                    }
                    if let Err(e) = server.await {
                        tracing::error!(error = %e, "mock-gladia server failed");
                    }
                });
            })
            .context("cannot spawn the mock-gladia thread")?;

        let (addr, handle) = rx
            .recv()
            .context("mock-gladia thread exited during start")??;
        Ok(MockGladia {
            shared,
            addr,
            handle,
            thread: Some(thread),
        })
    }

    /// `http://127.0.0.1:PORT` (an unspecified bind address is reported as 127.0.0.1).
    pub fn base_url(&self) -> String {
        format!("http://{}", self.connect_addr())
    }

    /// The address clients should connect to.
    pub fn local_addr(&self) -> SocketAddr {
        self.connect_addr()
    }

    fn connect_addr(&self) -> SocketAddr {
        if self.addr.ip().is_unspecified() {
            SocketAddr::from((Ipv4Addr::LOCALHOST, self.addr.port()))
        } else {
            self.addr
        }
    }

    /// Fault injection: the next init calls answer these statuses in order (with Gladia's error
    /// body), then init works normally again. Appends to any statuses still queued.
    pub fn fail_next_inits(&self, statuses: &[u16]) {
        self.shared
            .update(|inner| inner.fail_next.extend(statuses.iter().copied()));
    }

    /// Every `POST /v2/live` so far, in arrival order.
    pub fn init_requests(&self) -> Vec<InitRecord> {
        self.shared.read(|inner| inner.init_requests.clone())
    }

    /// Snapshot of every session created, in creation order.
    pub fn sessions(&self) -> Vec<SessionRecord> {
        self.shared.session_snapshots()
    }

    /// The session with this init `id`, if any.
    pub fn session(&self, id: &str) -> Option<SessionRecord> {
        self.shared.read(|inner| {
            inner
                .sessions
                .iter()
                .find(|s| s.live.record.id == id)
                .map(|s| s.live.record.clone())
        })
    }

    /// Waits until `pred` holds over the sessions, re-checking on every state change (no
    /// polling). Returns false if `timeout` elapses first.
    pub async fn wait_for(
        &self,
        timeout: Duration,
        pred: impl Fn(&[SessionRecord]) -> bool,
    ) -> bool {
        // Subscribe before the first check so no change can slip in between.
        let mut changes = self.shared.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if pred(&self.sessions()) {
                return true;
            }
            match tokio::time::timeout_at(deadline, changes.changed()).await {
                Ok(Ok(())) => {}
                // Sender gone (cannot happen while `self` lives) or deadline: one last look.
                Ok(Err(_)) | Err(_) => return pred(&self.sessions()),
            }
        }
    }

    /// Fault injection: closes the WebSocket currently attached to session `id` with `code`
    /// (e.g. 1011 or 4500) while keeping the session resumable, like a network or server
    /// hiccup. Returns false if no socket was attached. A 1000 code still leaves the session
    /// open; use it only to test how the client reacts.
    pub async fn drop_connection(&self, id: &str, code: u16) -> bool {
        let index = self
            .shared
            .read(|inner| inner.sessions.iter().position(|s| s.live.record.id == id));
        match index {
            Some(index) => ws_session::drop_connection(&self.shared, index, code).await,
            None => false,
        }
    }

    /// Stops the server and waits for its thread (same as dropping the handle).
    pub fn stop(self) {}
}

impl Drop for MockGladia {
    fn drop(&mut self) {
        // `stop` sends the command eagerly; the returned future only reports completion, which
        // joining the thread below also covers.
        drop(self.handle.stop(false));
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                tracing::error!("mock-gladia server thread panicked");
            }
        }
    }
}
