//! The service processes of a run: one, or with `--instances N` N of them in cluster mode on
//! one Redis and one PostgreSQL database. Instance 0 receives every publish, so it owns every
//! session; the others serve WebSocket clients with what the owner publishes on Redis.

use std::ffi::OsStr;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs as _};
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context as _};
use test_harness::{Launch, Service};

use crate::process::{self, ProcSample};

pub struct Instances {
    /// Never empty: [`Instances::launch`] starts at least one.
    services: Vec<Service>,
}

/// How one instance ended, for the report.
#[derive(Debug, Clone, Copy)]
pub struct InstanceEnd {
    pub log_warnings: u64,
    pub log_errors: u64,
    /// Its exit code after SIGTERM, or the one it died with.
    pub exit_code: Option<i32>,
    /// It exited before the run asked it to.
    pub died: bool,
}

impl Instances {
    /// Starts `count` instances of `binary` with `envs`, one after the other (each waits for
    /// its ready line); an instance that does not start stops the ones before it.
    pub fn launch<K: AsRef<OsStr>, V: AsRef<OsStr>>(
        binary: &Path,
        envs: &[(K, V)],
        launch: Launch,
        count: u32,
    ) -> anyhow::Result<Instances> {
        if count == 0 {
            bail!("at least one instance");
        }
        let mut services = Vec::new();
        for i in 0..count {
            let service = Service::launch(binary, envs, launch)
                .with_context(|| format!("instance {i} of {count}"))?;
            services.push(service);
        }
        Ok(Instances { services })
    }

    /// Instance 0: the one publishers go to, the one whose CPU and memory are sampled.
    pub fn owner(&self) -> &Service {
        &self.services[0]
    }

    pub fn get(&self, i: usize) -> Option<&Service> {
        self.services.get(i)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Service> {
        self.services.iter()
    }

    pub fn http_addrs(&self) -> Vec<SocketAddr> {
        self.services.iter().map(|s| s.http).collect()
    }

    /// The first instance that has exited, if any.
    pub fn first_exited(&mut self) -> Option<usize> {
        self.services.iter_mut().position(|s| s.exited().is_some())
    }

    /// Every instance's CPU time and memory now (`None` for one that is gone).
    pub fn samples(&self) -> Vec<Option<ProcSample>> {
        self.services
            .iter()
            .map(|s| process::sample(s.pid()))
            .collect()
    }

    /// Sends SIGTERM to every instance still running and waits for all of them at once, up
    /// to `timeout` each; one that already exited keeps the code it died with (and gets no
    /// signal: its pid may be another process's by now).
    pub async fn finish(mut self, timeout: Duration) -> anyhow::Result<Vec<InstanceEnd>> {
        let mut ends = Vec::new();
        let mut waits = Vec::new();
        for service in &mut self.services {
            let (log_warnings, log_errors) = service.log_counts();
            let exited = service.exited();
            ends.push(InstanceEnd {
                log_warnings,
                log_errors,
                exit_code: exited.and_then(|s| s.code()),
                died: exited.is_some(),
            });
        }
        for (i, mut service) in self.services.into_iter().enumerate() {
            if ends[i].died {
                continue;
            }
            // SIGTERM and the wait block: off the runtime the clients still run on.
            waits.push((
                i,
                actix_rt::task::spawn_blocking(move || service.terminate_within(timeout)),
            ));
        }
        for (i, wait) in waits {
            ends[i].exit_code = wait.await.context("terminate task")?;
        }
        Ok(ends)
    }
}

/// Refuses a cluster run early, with the reason, when nothing answers at the Redis of
/// `url` (`redis://[user:password@]host:port[/db]`); the message names only host and port,
/// since the URL may carry a password.
pub fn check_redis(url: &str) -> anyhow::Result<()> {
    let Some(address) = redis_address(url) else {
        bail!("--redis-url wants redis://HOST:PORT");
    };
    let reachable = address
        .to_socket_addrs()
        .ok()
        .and_then(|mut addrs| addrs.next())
        .map(|addr| TcpStream::connect_timeout(&addr, Duration::from_secs(2)));
    match reachable {
        Some(Ok(_)) => Ok(()),
        Some(Err(e)) => bail!("cluster mode needs Redis, but {address} does not answer: {e}"),
        None => bail!("cluster mode needs Redis, but {address} does not resolve"),
    }
}

/// `host:port` of a Redis URL (port 6379 when none is given).
fn redis_address(url: &str) -> Option<String> {
    let rest = url
        .strip_prefix("redis://")
        .or_else(|| url.strip_prefix("rediss://"))?;
    let authority = rest.split('/').next()?;
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if host_port.is_empty() {
        return None;
    }
    let has_port = host_port
        .rsplit_once(':')
        .is_some_and(|(_, port)| port.parse::<u16>().is_ok());
    Some(if has_port {
        host_port.to_owned()
    } else {
        format!("{host_port}:6379")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_redis_address_drops_credentials_and_database() {
        assert_eq!(
            redis_address("redis://127.0.0.1:6379").as_deref(),
            Some("127.0.0.1:6379")
        );
        assert_eq!(
            redis_address("redis://user:secret@cache:6380/2").as_deref(),
            Some("cache:6380")
        );
        assert_eq!(
            redis_address("redis://localhost").as_deref(),
            Some("localhost:6379")
        );
        assert_eq!(redis_address("http://127.0.0.1:6379"), None);
        assert_eq!(redis_address("redis://"), None);
    }
}
