//! Before any load: the open-files limit, the audio to publish, the mock provider in this
//! process (so its stamps and ours share one clock), the database, and the service (or with
//! `--instances`, a cluster of them) started against them.

use std::rc::Rc;

use anyhow::{bail, Context as _};
use mock_gladia::MockConfig;
use test_harness::{Launch, MockProvider};

use crate::args::Args;
use crate::flv::{self, AacTrack};
use crate::instances::{self, Instances};
use crate::pg::{FreshDatabase, StatementCounter};
use crate::process;

const MOCK_KEY: &str = "loadgen-key";

/// Service log lines kept for an error report.
const LOG_TAIL: usize = 200;

/// Everything the run needs, up and ready.
pub struct Started {
    pub track: Rc<AacTrack>,
    pub mock: MockProvider,
    pub instances: Instances,
    /// The PostgreSQL database whose statements are counted (`--postgres`).
    pub counter: Option<StatementCounter>,
    /// The PostgreSQL database a cluster run shares when it is not `--postgres`; dropped with
    /// this value, so the caller keeps it bound for the whole run.
    pub cluster_db: Option<FreshDatabase>,
    /// The machine's 1-minute load before the service started.
    pub load_at_start: Option<f64>,
    /// Holds the SQLite database when not `--postgres`; removed on drop, so the caller keeps
    /// it bound for the whole run.
    pub db_dir: tempfile::TempDir,
}

pub fn start(args: &Args) -> anyhow::Result<Started> {
    if args.sessions == 0 {
        bail!("--sessions must be at least 1");
    }
    let fd_limit = process::raise_fd_limit();
    let sockets_needed = u64::from(args.sessions) * (u64::from(args.clients) + 2)
        + u64::from(args.idle_clients)
        + 64;
    if sockets_needed > fd_limit {
        bail!("{sockets_needed} sockets needed but the open-files limit is {fd_limit}");
    }
    let flv_path = match &args.flv {
        Some(p) => p.clone(),
        None => flv::generated_speech_flv(&args.work_dir)?,
    };
    let track = Rc::new(AacTrack::from_flv(&flv_path)?);
    eprintln!(
        "loadgen: {} ({} AAC frames, {} Hz, {:.1} s loop); {} sessions x {} clients for {} s{}",
        flv_path.display(),
        track.frames.len(),
        track.sample_rate,
        f64::from(track.loop_ms) / 1000.0,
        args.sessions,
        args.clients,
        args.seconds,
        if args.instances > 1 {
            format!(" on {} instances in cluster mode", args.instances)
        } else {
            String::new()
        }
    );

    let mock = MockProvider::start(MockConfig {
        api_key: MOCK_KEY.to_owned(),
        ..MockConfig::default()
    })?;
    let db_dir = tempfile::tempdir()?;
    let cluster = args.instances > 1;
    if cluster {
        instances::check_redis(&args.redis_url)?;
    }
    let counter = if args.postgres {
        Some(StatementCounter::create(&args.pg_admin, &args.pg_log)?)
    } else {
        None
    };
    // Instances of a cluster number each session's finals together in one database: SQLite,
    // a file per instance, cannot be shared (the service refuses REDIS_URL without postgres).
    let cluster_db = if cluster && counter.is_none() {
        Some(FreshDatabase::create(&args.pg_admin).with_context(|| {
            format!(
                "--instances {} runs a cluster, which needs a PostgreSQL database (--pg-admin)",
                args.instances
            )
        })?)
    } else {
        None
    };
    let database_url = match (&counter, &cluster_db) {
        (Some(c), _) => c.db.url.clone(),
        (None, Some(db)) => db.url.clone(),
        (None, None) => format!("sqlite://{}/loadgen.db", db_dir.path().display()),
    };
    let mut envs: Vec<(String, String)> = mock
        .service_env(&database_url)
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
    envs.extend([
        // Loopback whatever the defaults: the publishers connect from 127.x.y.z addresses.
        ("HTTP_HOST".into(), "127.0.0.1".into()),
        ("RTMP_BIND".into(), "127.0.0.1".into()),
        ("PCM_CHUNK_SIZE_MS".into(), args.pcm_chunk_ms.to_string()),
        // Sessions end soon after their publisher (production waits 30 s for egress).
        ("PUBLISHER_RECONNECT_GRACE_MS".into(), "1000".into()),
        (
            "MAX_SESSIONS".into(),
            (args.sessions + 10).max(500).to_string(),
        ),
        (
            "MAX_CLIENTS_PER_SESSION".into(),
            args.clients.max(args.idle_clients).max(2000).to_string(),
        ),
    ]);
    if cluster {
        envs.push(("REDIS_URL".into(), args.redis_url.clone()));
    }
    for kv in &args.service_env {
        let Some((k, v)) = kv.split_once('=') else {
            bail!("--service-env wants KEY=VALUE, got {kv:?}");
        };
        envs.push((k.to_owned(), v.to_owned()));
    }
    let load_at_start = process::load_average();
    let launch = Launch {
        show_log: args.show_service_log,
        keep_lines: Some(LOG_TAIL),
    };
    let instances = Instances::launch(&args.service_bin, &envs, launch, args.instances)
        .with_context(|| {
            format!(
                "the service {} (a release build: nice cargo build --release -p realtime-core)",
                args.service_bin.display()
            )
        })?;
    for (i, service) in instances.iter().enumerate() {
        let name = if cluster {
            format!("instance {i}")
        } else {
            "service".to_owned()
        };
        eprintln!(
            "loadgen: {name} pid {} http={} rtmp={}; machine load {:.2}",
            service.pid(),
            service.http,
            service.rtmp,
            load_at_start.unwrap_or(f64::NAN)
        );
    }
    Ok(Started {
        track,
        mock,
        instances,
        counter,
        cluster_db,
        load_at_start,
        db_dir,
    })
}
