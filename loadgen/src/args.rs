//! The command line: how much load, for how long, against which binary, and where the
//! result goes.

use std::path::PathBuf;

use clap::Parser;

#[derive(Parser, Debug, Clone)]
#[command(
    about = "Publishes N real RTMP streams and opens M WebSocket clients per session \
                   against realtime-core with the mock provider; reports latency, CPU, RSS."
)]
pub struct Args {
    /// Concurrent sessions, each with its own RTMP publisher.
    #[arg(long, default_value_t = 1)]
    pub sessions: u32,
    /// WebSocket clients per session.
    #[arg(long, default_value_t = 10)]
    pub clients: u32,
    /// How long each stream publishes (keep runs bounded on shared machines).
    #[arg(long, default_value_t = 30)]
    pub seconds: u64,
    /// Extra clients connected, before any load, to a session nobody publishes to: the RSS
    /// they add is the memory of an idle client.
    #[arg(long, default_value_t = 0)]
    pub idle_clients: u32,
    /// Instances of the service; more than one runs them in cluster mode on one Redis
    /// (--redis-url) and one fresh PostgreSQL database (--pg-admin). Every publisher goes to
    /// instance 0, so it owns every session; each session's clients are spread round-robin
    /// over all instances.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=16))]
    pub instances: u32,
    /// The Redis of cluster mode (with --instances above 1).
    #[arg(
        long,
        env = "REDIS_URL_TEST",
        default_value = "redis://127.0.0.1:6379",
        hide_env_values = true
    )]
    pub redis_url: String,
    /// The service binary (a release build: `cargo build --release -p realtime-core`).
    #[arg(long, default_value = "target/release/realtime-core")]
    pub service_bin: PathBuf,
    /// An FLV with AAC audio to publish (looped); default: espeak-ng speech generated once
    /// into --work-dir with espeak-ng, sox and ffmpeg.
    #[arg(long)]
    pub flv: Option<PathBuf>,
    /// Where the generated FLV is cached.
    #[arg(long, default_value = "target/loadgen")]
    pub work_dir: PathBuf,
    /// Write the result here as well as on stdout.
    #[arg(long)]
    pub json_out: Option<PathBuf>,
    /// PCM_CHUNK_SIZE_MS given to the service.
    #[arg(long, default_value_t = 100)]
    pub pcm_chunk_ms: u32,
    /// Seconds after the last publisher started before CPU and RSS are averaged.
    #[arg(long, default_value_t = 3)]
    pub warmup_seconds: u64,
    /// Store finals in a fresh PostgreSQL database that logs every statement, and count the
    /// statements per final (needs psql and read access to --pg-log). With --instances above
    /// 1 a fresh PostgreSQL database is used anyway; this adds the counting.
    #[arg(long)]
    pub postgres: bool,
    /// The PostgreSQL server's admin URL, where the fresh databases of --postgres and
    /// --instances are created and dropped.
    #[arg(
        long,
        env = "DATABASE_URL_PG_ADMIN",
        default_value = "postgres://postgres:postgres@127.0.0.1:5432/postgres",
        hide_env_values = true
    )]
    pub pg_admin: String,
    #[arg(long, default_value = "/var/log/postgresql/postgresql-15-main.log")]
    pub pg_log: PathBuf,
    /// Extra KEY=VALUE environment for the service (repeatable).
    #[arg(long = "service-env")]
    pub service_env: Vec<String>,
    /// Echo the service's log on stderr.
    #[arg(long)]
    pub show_service_log: bool,
    /// Fail (exit 1) when more finals than this are missing at the clients or delivered twice
    /// (checked per client and per final), or when the provider sent none.
    #[arg(long)]
    pub max_missing_finals: Option<u64>,
    /// Fail (exit 1) when the service has more threads than this in steady state.
    #[arg(long)]
    pub max_threads: Option<u64>,
    /// Record the service's RSS, threads and open file descriptors every N seconds of the run
    /// (the report's `soak` section; for long runs, e.g. `--seconds 3600 --sample-every 10`).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub sample_every: u64,
}

impl Args {
    pub fn limits(&self) -> crate::limits::Limits {
        crate::limits::Limits {
            max_missing_finals: self.max_missing_finals,
            max_threads: self.max_threads,
        }
    }
}
