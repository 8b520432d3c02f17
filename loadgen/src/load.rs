//! The load itself: WebSocket clients connected to every session before it publishes (like
//! viewers waiting; with several instances, spread over them by [`spread::instance_of`]), then
//! one real RTMP publisher per session, all stopping together.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use futures_util::StreamExt as _;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::args::Args;
use crate::clients::{self, ClientGauges, ClientTally, SessionInbox};
use crate::flv::AacTrack;
use crate::publisher::{self, PublishLog, PublisherGauges};
use crate::spread;

/// The sessions under load, their clients' inboxes and tallies, in the same order.
pub struct Sessions {
    pub slugs: Vec<String>,
    pub inboxes: Vec<Rc<RefCell<SessionInbox>>>,
    pub tallies: Vec<Vec<Rc<RefCell<ClientTally>>>>,
}

/// Connects `--idle-clients` to a session nobody publishes to: the memory they add is that
/// of an idle client.
pub async fn connect_idle_clients(
    http: &Rc<awc::Client>,
    addr: SocketAddr,
    count: u32,
    gauges: &Rc<ClientGauges>,
) {
    let inbox = Rc::new(RefCell::new(SessionInbox::default()));
    let targets = vec![addr; count as usize];
    connect_clients(http, &targets, "lg-idle", &inbox, gauges).await;
}

/// Connects `--clients` clients to each of the `--sessions` sessions, client `j` of session `i`
/// to the instance at `addrs[spread::instance_of(i, j, …)]`.
pub async fn connect_session_clients(
    args: &Args,
    http: &Rc<awc::Client>,
    addrs: &[SocketAddr],
    gauges: &Rc<ClientGauges>,
) -> Sessions {
    // A cluster keeps a session's numbering and log in Redis for days after it ended, and the
    // Redis outlives the run: slugs of their own keep one run from continuing another's.
    let prefix = if addrs.len() > 1 {
        format!("lg-{}", &uuid::Uuid::new_v4().simple().to_string()[..8])
    } else {
        "lg".to_owned()
    };
    let slugs: Vec<String> = (0..args.sessions)
        .map(|i| format!("{prefix}-{i}"))
        .collect();
    let inboxes: Vec<Rc<RefCell<SessionInbox>>> = slugs
        .iter()
        .map(|_| Rc::new(RefCell::new(SessionInbox::default())))
        .collect();
    let mut tallies = Vec::new();
    let connect_started = Instant::now();
    for (session, (slug, inbox)) in slugs.iter().zip(&inboxes).enumerate() {
        let targets: Vec<SocketAddr> = (0..args.clients)
            .map(|client| addrs[spread::instance_of(session, client, addrs.len() as u32)])
            .collect();
        tallies.push(connect_clients(http, &targets, slug, inbox, gauges).await);
    }
    eprintln!(
        "loadgen: {} clients connected in {:.1} s ({} failed)",
        gauges.connected.get(),
        connect_started.elapsed().as_secs_f64(),
        gauges.connect_failures.get()
    );
    Sessions {
        slugs,
        inboxes,
        tallies,
    }
}

/// Connects one client to `slug` at each of `targets` (client `j` to `targets[j]`), at most 50
/// handshakes in flight.
async fn connect_clients(
    http: &Rc<awc::Client>,
    targets: &[SocketAddr],
    slug: &str,
    inbox: &Rc<RefCell<SessionInbox>>,
    gauges: &Rc<ClientGauges>,
) -> Vec<Rc<RefCell<ClientTally>>> {
    let tallies: Vec<_> = targets
        .iter()
        .map(|_| Rc::new(RefCell::new(ClientTally::default())))
        .collect();
    futures_util::stream::iter((0u32..).zip(targets.iter().copied().zip(tallies.iter().cloned())))
        .map(|(index, (addr, tally))| {
            let (http, inbox, gauges) = (Rc::clone(http), Rc::clone(inbox), Rc::clone(gauges));
            let slug = slug.to_owned();
            async move {
                let connected =
                    clients::connect(&http, addr, &slug, index, inbox, tally, gauges).await;
                if let Err(e) = connected {
                    eprintln!("loadgen: client of {slug}: {e:#}");
                }
            }
        })
        .buffer_unordered(50)
        .collect::<Vec<()>>()
        .await;
    tallies
}

/// The publishers under way and when they start and stop.
pub struct Publishers {
    handles: Vec<JoinHandle<PublishLog>>,
    pub gauges: Rc<PublisherGauges>,
    pub first_start: Instant,
    pub last_start: Instant,
    pub until: Instant,
}

/// Starts one publisher per session, spread over up to 2 s so 300 pipelines do not start in
/// one instant; all stop together, `--seconds` after the last one started.
pub fn start_publishers(
    args: &Args,
    rtmp: SocketAddr,
    slugs: &[String],
    track: &Rc<AacTrack>,
) -> Publishers {
    let gauges = Rc::new(PublisherGauges::default());
    let step = Duration::from_millis((2000 / u64::from(args.sessions)).min(20));
    let first_start = Instant::now();
    let last_start = first_start + step * (args.sessions - 1);
    let until = last_start + Duration::from_secs(args.seconds);
    let mut handles = Vec::new();
    for (i, slug) in slugs.iter().enumerate() {
        let start_at = first_start + step * i as u32;
        let (key, track, gauges) = (slug.clone(), Rc::clone(track), Rc::clone(&gauges));
        // Ten publishers per loopback source address (the service's per-peer limit is 16).
        let source =
            std::net::Ipv4Addr::new(127, 0, 1 + (i / 2500) as u8, 1 + (i / 10 % 250) as u8);
        handles.push(actix_rt::spawn(async move {
            tokio::time::sleep_until(start_at).await;
            publisher::publish(rtmp, source, key, track, until, gauges).await
        }));
    }
    Publishers {
        handles,
        gauges,
        first_start,
        last_start,
        until,
    }
}

impl Publishers {
    /// Waits for every publisher; a task that failed counts as a failed publish.
    pub async fn finish(self) -> Vec<PublishLog> {
        let mut logs = Vec::new();
        for handle in self.handles {
            logs.push(handle.await.unwrap_or_else(|e| PublishLog {
                sends: Vec::new(),
                error: Some(format!("publisher task failed: {e}")),
            }));
        }
        logs
    }
}
