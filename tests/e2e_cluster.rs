//! Cluster mode against the real binary (docs/ARCHITECTURE.md#cluster-mode): three instances on
//! loopback ports sharing one real Redis and one fresh PostgreSQL database, a real FFmpeg
//! publish, the mock provider, and a WebSocket client on every instance.

use std::time::{Duration, Instant};

use serde_json::Value;
use test_harness::*;

/// The Redis the test command starts (or finds) on loopback.
fn redis_url() -> Option<String> {
    let url = std::env::var("REDIS_URL_TEST").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let address = url
        .trim_start_matches("redis://")
        .split('/')
        .next()
        .unwrap_or("127.0.0.1:6379")
        .to_owned();
    match std::net::TcpStream::connect_timeout(
        &address
            .parse()
            .expect("REDIS_URL_TEST is redis://HOST:PORT"),
        Duration::from_secs(2),
    ) {
        Ok(_) => Some(url),
        Err(e) => {
            unavailable(&format!("Redis is not reachable at {url}: {e}"));
            None
        }
    }
}

/// What a cluster test with a publisher needs: its tools, the shared Redis, a fresh database
/// and a directory for its audio.
struct Fixture {
    redis: String,
    database_url: String,
    dir: tempfile::TempDir,
}

fn fixture() -> Option<Fixture> {
    if !require_tools(&["ffmpeg", "espeak-ng", "sox"]) {
        return None;
    }
    Some(Fixture {
        redis: redis_url()?,
        database_url: fresh_postgres_database("rtcore_cluster")?,
        dir: tempfile::tempdir().ok()?,
    })
}

/// A session slug no other test (or earlier run against the same Redis) has used.
fn fresh_slug(prefix: &str) -> String {
    format!(
        "{prefix}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..10]
    )
}

/// `count` instances of one cluster.
fn start_cluster(
    mock: &MockProvider,
    database_url: &str,
    redis: &str,
    count: usize,
) -> Vec<Service> {
    (0..count)
        .map(|_| {
            Service::start(
                realtime_core_bin!(),
                &mock.service_env_with(database_url, &[("REDIS_URL", redis)]),
            )
        })
        .collect()
}

/// The finals' `seq`s, in the order the client got them.
fn seqs(finals: &[Value]) -> Vec<i64> {
    finals.iter().filter_map(|f| f["seq"].as_i64()).collect()
}

#[actix_rt::test]
async fn clients_on_every_instance_get_every_final_once_in_order_with_one_numbering() {
    let _serial = SERIAL.lock().await;
    let Some(Fixture {
        redis,
        database_url,
        dir,
    }) = fixture()
    else {
        return;
    };
    let wav = make_speech(dir.path());
    let mock = start_mock();
    let cluster = start_cluster(&mock, &database_url, &redis, 3);
    let slug = fresh_slug("cluster-fanout");
    let mut clients = Vec::new();
    for instance in &cluster {
        clients.push(WsClient::connect(instance, &format!("sessionSlug={slug}")).await);
    }

    // The meeting's audio arrives at the second instance only.
    run_publisher(
        "ffmpeg",
        &ffmpeg_speech_args(&wav, &cluster[1].rtmp_url(&slug)),
        Duration::from_secs(90),
    )
    .await;
    mock.assert_one_session_closed(&cluster[1], Duration::from_secs(30))
        .await;
    let provider = mock.sessions().remove(0);
    let expected = provider.finals_sent.len();
    assert!(expected >= 3, "the mock found only {expected} utterances");

    for (i, client) in clients.iter().enumerate() {
        let all = client
            .wait_until(Duration::from_secs(10), |m| {
                m.iter().filter(|m| m["isFinal"] == true).count() >= expected
            })
            .await;
        assert!(
            all,
            "instance {i}: {} of {expected} finals\n{}",
            client.finals().len(),
            cluster[i].log_tail(40)
        );
    }
    // Nothing more arrives late (a duplicate would show here).
    let settled = clients[0]
        .wait_until(Duration::from_millis(500), |m| {
            m.iter().filter(|m| m["isFinal"] == true).count() > expected
        })
        .await;
    assert!(!settled, "a final arrived twice");
    let reference = clients[1].finals();
    for (i, client) in clients.iter().enumerate() {
        let finals = client.finals();
        assert_eq!(
            seqs(&finals),
            (1..=expected as i64).collect::<Vec<_>>(),
            "instance {i}: not every final once, in order"
        );
        for (got, want) in finals.iter().zip(&reference) {
            assert_eq!(
                (&got["utteranceId"], &got["text"], &got["speaker"]),
                (&want["utteranceId"], &want["text"], &want["speaker"]),
                "instance {i} got another final for seq {}",
                got["seq"]
            );
        }
        assert_transcript_stream(&client.snapshot(), &slug);
    }
    for (sent, got) in provider.finals_sent.iter().zip(&reference) {
        assert_eq!(got["text"], sent.text.trim_start());
    }
    // Followers saw the owner's state, not their own idea of it.
    let live_seen = clients[0]
        .snapshot()
        .iter()
        .any(|m| m["type"] == "status" && m["state"] == "live");
    assert!(live_seen, "a follower's client never saw the session live");

    let stored =
        wait_for_stored_finals(&database_url, &slug, expected, Duration::from_secs(10)).await;
    assert_eq!(
        stored.iter().map(|f| f.seq).collect::<Vec<_>>(),
        (1..=expected as i64).collect::<Vec<_>>(),
        "the database holds each final once"
    );
    let ids: Vec<&str> = reference
        .iter()
        .filter_map(|f| f["utteranceId"].as_str())
        .collect();
    assert_eq!(
        stored
            .iter()
            .map(|f| f.utterance_id.as_str())
            .collect::<Vec<_>>(),
        ids
    );

    // A client that resumes on the third instance gets the rest from there.
    let resumed = WsClient::connect(&cluster[2], &format!("sessionSlug={slug}&lastSeq=1")).await;
    assert!(
        resumed
            .wait_until(Duration::from_secs(10), |m| {
                m.iter().filter(|m| m["isFinal"] == true).count() >= expected - 1
            })
            .await
    );
    assert_eq!(
        seqs(&resumed.finals()),
        (2..=expected as i64).collect::<Vec<_>>()
    );
}

#[actix_rt::test]
async fn any_instance_lists_shows_and_stops_a_session_ingested_elsewhere() {
    let _serial = SERIAL.lock().await;
    let Some(Fixture {
        redis,
        database_url,
        dir,
    }) = fixture()
    else {
        return;
    };
    let wav = make_long_speech(dir.path(), 30.0);
    let mock = start_mock();
    let cluster = start_cluster(&mock, &database_url, &redis, 3);
    let slug = fresh_slug("cluster-stop");
    let watcher = WsClient::connect(&cluster[1], &format!("sessionSlug={slug}")).await;
    let _publisher = tokio::process::Command::new("ffmpeg")
        .args(ffmpeg_speech_args(&wav, &cluster[0].rtmp_url(&slug)))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("ffmpeg starts");
    assert!(
        watcher
            .wait_until(Duration::from_secs(30), |m| m
                .iter()
                .any(|m| m["isFinal"] == true))
            .await,
        "no final reached the other instance"
    );
    // The third instance has neither the publisher nor a client, and knows the session live.
    let (status, listed) = cluster[2].get_json("/api/sessions").await;
    assert_eq!(status, 200);
    let entry = listed["sessions"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["sessionSlug"] == slug.as_str()))
        .unwrap_or_else(|| panic!("not listed on another instance: {listed}"));
    assert_eq!(entry["state"], "live", "{entry}");
    assert!(entry["publisher"].is_string(), "{entry}");
    assert!(
        entry.get("rtmpUrl").is_none(),
        "the publish URL left its owner: {entry}"
    );
    // Only the owner ingests it: the autoscaling gauge counts it there alone.
    for (i, want) in [(0, 1.0), (1, 0.0), (2, 0.0)] {
        let (_, metrics) = cluster[i].get_json("/metrics").await;
        assert_eq!(
            metrics["gauges"]["ingest.live_sessions"].as_f64(),
            Some(want),
            "instance {i}: {}",
            metrics["gauges"]
        );
    }
    let (status, shown) = cluster[2].get_json(&format!("/api/sessions/{slug}")).await;
    assert_eq!(
        (status, &shown["state"]),
        (200, &Value::from("live")),
        "{shown}"
    );
    // The stop arrives there too.
    let (status, body) = service_delete(&cluster[2], &slug).await;
    assert_eq!(status, 200, "{body}");
    mock.assert_one_session_closed(&cluster[0], Duration::from_secs(15))
        .await;
    assert!(
        mock.sessions()[0].stop_received,
        "the owner sent no stop_recording"
    );
    // The owner's clients (here the other instance's) hear it end; the owner, with no client
    // of its own, retires the session.
    assert!(
        watcher
            .wait_until(Duration::from_secs(10), |m| m
                .iter()
                .any(|m| m["type"] == "status" && m["state"] == "ended"))
            .await,
        "the follower's client never saw the session end"
    );
    let (status, snapshot) = cluster[0].get_json(&format!("/api/sessions/{slug}")).await;
    assert!(
        status == 404 || snapshot["state"] == "ended",
        "{status} {snapshot}"
    );
}

async fn service_delete(service: &Service, slug: &str) -> (u16, Value) {
    let mut response = awc::Client::new()
        .delete(service.url(&format!("/api/sessions/{slug}/transcription")))
        .send()
        .await
        .expect("DELETE");
    let body = response.json::<Value>().await.unwrap_or(Value::Null);
    (response.status().as_u16(), body)
}

/// A TCP proxy on loopback, as a load balancer in front of RTMP: each connection goes to the
/// instance `target` names when it is accepted.
struct TcpProxy {
    address: std::net::SocketAddr,
    target: std::sync::Arc<std::sync::Mutex<std::net::SocketAddr>>,
}

impl TcpProxy {
    async fn start(target: std::net::SocketAddr) -> TcpProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("proxy binds");
        let address = listener.local_addr().unwrap();
        let target = std::sync::Arc::new(std::sync::Mutex::new(target));
        let current = target.clone();
        actix_rt::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let to = *current.lock().unwrap();
                actix_rt::spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(to).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
        TcpProxy { address, target }
    }

    fn route_to(&self, target: std::net::SocketAddr) {
        *self.target.lock().unwrap() = target;
    }

    fn rtmp_url(&self, key: &str) -> String {
        format!("rtmp://{}/live/{key}", self.address)
    }
}

fn spawn_ffmpeg(args: Vec<String>) -> tokio::process::Child {
    tokio::process::Command::new("ffmpeg")
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("ffmpeg starts")
}

fn final_count(client: &WsClient) -> usize {
    client.finals().len()
}

#[actix_rt::test]
async fn a_killed_owner_is_taken_over_by_the_reconnecting_publisher_with_one_numbering() {
    kill_the_owner_mid_speech(3, Takeover::ContinueProviderSession).await;
}

#[actix_rt::test]
async fn a_provider_session_that_cannot_be_continued_is_replaced_by_a_fresh_one() {
    kill_the_owner_mid_speech(2, Takeover::ProviderSessionGone).await;
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Takeover {
    /// The new owner continues the dead owner's provider session from Redis.
    ContinueProviderSession,
    /// The provider session named in Redis is unknown to the provider (as after its
    /// timeout): the new owner starts a fresh one.
    ProviderSessionGone,
}

/// kill -9 of the owner mid-speech, then the publisher reconnects through the proxy to
/// another instance.
async fn kill_the_owner_mid_speech(instances: usize, takeover: Takeover) {
    let _serial = SERIAL.lock().await;
    let Some(Fixture {
        redis,
        database_url,
        dir,
    }) = fixture()
    else {
        return;
    };
    if !require_tools(&["redis-cli"]) {
        return;
    }
    let wav = make_long_speech(dir.path(), 24.0);
    let wav_s = wav.to_str().unwrap().to_owned();
    let mock = start_mock();
    let mut cluster = start_cluster(&mock, &database_url, &redis, instances);
    let slug = fresh_slug("cluster-kill");
    let proxy = TcpProxy::start(cluster[0].rtmp).await;
    let on_owner = WsClient::connect(&cluster[0], &format!("sessionSlug={slug}")).await;
    let on_b = WsClient::connect(&cluster[1], &format!("sessionSlug={slug}")).await;
    let on_last = WsClient::connect(&cluster[instances - 1], &format!("sessionSlug={slug}")).await;

    let published_at = Instant::now();
    let mut first = spawn_ffmpeg(ffmpeg_speech_args(&wav, &proxy.rtmp_url(&slug)));
    // Mid-speech: a few finals in, and a partial of an utterance that has no final yet.
    assert!(
        on_last
            .wait_until(Duration::from_secs(30), |m| {
                let finals: Vec<&Value> = m.iter().filter(|m| m["isFinal"] == true).collect();
                finals.len() >= 2
                    && m.last().is_some_and(|last| {
                        last["isFinal"] == false
                            && !finals
                                .iter()
                                .any(|f| f["utteranceId"] == last["utteranceId"])
                    })
            })
            .await,
        "no final and open utterance reached a follower\n{}",
        cluster[0].log_tail(30)
    );
    let sent_before_kill = mock.sessions()[0].finals_sent.len();
    cluster[0].signal("KILL");
    let killed_at = published_at.elapsed();
    assert!(cluster[0].wait_exit(Duration::from_secs(5)).await.is_some());
    let heard_before_kill = mock.sessions()[0].pcm.len();
    // The utterance that had partials and no final when the owner died.
    let open_utterance = {
        let seen = on_last.transcripts();
        seen.iter()
            .rev()
            .find(|m| m["isFinal"] == false)
            .and_then(|m| m["utteranceId"].as_str())
            .filter(|id| {
                !seen
                    .iter()
                    .any(|f| f["isFinal"] == true && f["utteranceId"] == *id)
            })
            .map(str::to_owned)
    };
    let _ = first.wait().await;
    if takeover == Takeover::ProviderSessionGone {
        // What the dead owner left in Redis now names a session the provider does not know.
        let ws_base = mock.base_url().replacen("http", "ws", 1);
        let record = serde_json::json!({
            "id": "00000000-gone-0000-0000-000000000000",
            "url": format!("{ws_base}/v2/live?token=expired"),
            "acked": heard_before_kill,
        })
        .to_string();
        let set = std::process::Command::new("redis-cli")
            .args(["-u", &redis, "SET", &format!("rc:provider:{slug}"), &record])
            .output()
            .expect("redis-cli runs");
        assert_eq!(String::from_utf8_lossy(&set.stdout).trim(), "OK");
    }

    // Egress reconnects through the balancer, which now sends it to another instance: the
    // rest of the meeting, from where the first publish was cut.
    proxy.route_to(cluster[1].rtmp);
    let resume_at = published_at.elapsed();
    let offset = format!("{:.3}", resume_at.as_secs_f64());
    let second = ffmpeg_args(
        &[&["-re", "-ss", &offset, "-i", &wav_s][..], &EGRESS_AAC].concat(),
        &proxy.rtmp_url(&slug),
    );
    let reconnect_gap = resume_at - killed_at;
    assert!(
        reconnect_gap < Duration::from_secs(2),
        "reconnected after {reconnect_gap:?}"
    );
    run_publisher("ffmpeg", &second, Duration::from_secs(60)).await;
    let provider_sessions = match takeover {
        Takeover::ContinueProviderSession => 1,
        Takeover::ProviderSessionGone => 2,
    };
    assert!(
        mock.wait_for(Duration::from_secs(30), |s| s.len() == provider_sessions
            && s[provider_sessions - 1].closed_with_1000)
            .await,
        "the new owner's provider session did not end ({} sessions)\n{}",
        mock.sessions().len(),
        cluster[1].log_tail(30)
    );
    let sessions = mock.sessions();
    assert_eq!(
        mock.init_requests().len(),
        provider_sessions,
        "one init per provider session: a continued one needs none"
    );
    // Every final the provider sent, the dead owner's and the new owner's, in order.
    let sent: Vec<String> = match takeover {
        Takeover::ContinueProviderSession => {
            assert_eq!(
                sessions[0].ws_connections, 2,
                "the new owner connected to the dead owner's provider session"
            );
            sessions[0].finals_sent.iter().collect::<Vec<_>>()
        }
        Takeover::ProviderSessionGone => sessions[0].finals_sent[..sent_before_kill]
            .iter()
            .chain(&sessions[1].finals_sent)
            .collect(),
    }
    .into_iter()
    .map(|f| f.text.trim_start().to_owned())
    .collect();
    let total = sent.len();
    assert!(total > sent_before_kill, "no final after the takeover");

    // The client of the dead instance resumes on the last with the last seq it had.
    let last_on_owner = on_owner
        .finals()
        .last()
        .and_then(|f| f["seq"].as_i64())
        .unwrap_or(0);
    let resumed = WsClient::connect(
        &cluster[instances - 1],
        &format!("sessionSlug={slug}&lastSeq={last_on_owner}"),
    )
    .await;
    for (name, client) in [("B", &on_b), ("last", &on_last)] {
        assert!(
            client
                .wait_until(Duration::from_secs(10), |m| m
                    .iter()
                    .filter(|m| m["isFinal"] == true)
                    .count()
                    >= total)
                .await,
            "{name}: {} of {total} finals",
            final_count(client)
        );
        let finals = client.finals();
        assert_eq!(
            seqs(&finals),
            (1..=total as i64).collect::<Vec<_>>(),
            "{name}: one numbering, no gap, no duplicate"
        );
        let texts: Vec<&str> = finals.iter().filter_map(|f| f["text"].as_str()).collect();
        assert_eq!(texts, sent, "{name}: not the provider's finals");
        if let (Takeover::ContinueProviderSession, Some(open)) = (takeover, &open_utterance) {
            // The utterance open at the kill ends with its own final, under the same id.
            assert!(
                finals.iter().any(|f| f["utteranceId"] == open.as_str()),
                "{name}: the utterance open at the kill ({open}) got no final"
            );
        }
    }
    assert!(
        resumed
            .wait_until(Duration::from_secs(10), |m| m
                .iter()
                .filter(|m| m["isFinal"] == true)
                .count()
                >= total - last_on_owner as usize)
            .await
    );
    let mut all_seen: Vec<i64> = seqs(&on_owner.finals());
    all_seen.extend(seqs(&resumed.finals()));
    assert_eq!(
        all_seen,
        (1..=total as i64).collect::<Vec<_>>(),
        "the dead instance's client, resumed elsewhere, missed or repeated a final"
    );
    let stored = wait_for_stored_finals(&database_url, &slug, total, Duration::from_secs(10)).await;
    assert_eq!(
        stored.iter().map(|f| f.seq).collect::<Vec<_>>(),
        (1..=total as i64).collect::<Vec<_>>(),
        "the database holds each final once"
    );
    if takeover == Takeover::ProviderSessionGone {
        assert!(
            cluster[1].log().contains("cannot be continued"),
            "the new owner did not say why it started a fresh provider session"
        );
    }

    // What the kill cost: audio the publisher sent that no provider session heard.
    let heard_ms = heard_before_kill as u64 / 32;
    let killed_ms = killed_at.as_millis() as u64;
    let lost_in_owner = killed_ms - heard_ms.min(killed_ms);
    eprintln!(
        "takeover ({takeover:?}): killed at {killed_ms} ms of audio; the provider had heard {heard_ms} ms \
         ({lost_in_owner} ms lost inside the killed instance); reconnect gap {} ms (audio not published); \
         {sent_before_kill} finals before the kill, {} after",
        reconnect_gap.as_millis(),
        total - sent_before_kill
    );
    assert!(
        lost_in_owner < 1500,
        "{lost_in_owner} ms of audio lost inside the killed instance"
    );
    assert!(
        sessions[0].finals_sent.len() == sent_before_kill
            || takeover == Takeover::ContinueProviderSession,
        "the provider sent a final to the dead owner as it was killed (a race the test avoids)"
    );
}

/// A Redis of the test's own on a free loopback port, so it can be killed and started again
/// without disturbing the one other tests use.
struct PrivateRedis {
    port: u16,
    child: Option<std::process::Child>,
}

impl PrivateRedis {
    fn start() -> Option<PrivateRedis> {
        if !require_tools(&["redis-server"]) {
            return None;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let mut redis = PrivateRedis { port, child: None };
        redis.restart();
        Some(redis)
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts the server (again) on its port and waits until it answers.
    fn restart(&mut self) {
        let child = std::process::Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--save", "", "--appendonly", "no", "--dir", "/tmp"])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server starts");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not listen");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// kill -9: everything it held is gone.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.kill();
    }
}

#[actix_rt::test]
async fn redis_restarted_mid_meeting_loses_no_final_and_every_instance_catches_up() {
    let _serial = SERIAL.lock().await;
    if !require_tools(&["ffmpeg", "espeak-ng", "sox"]) {
        return;
    }
    let (Some(mut redis), Some(database_url)) = (
        PrivateRedis::start(),
        fresh_postgres_database("rtcore_cluster"),
    ) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let wav = make_long_speech(dir.path(), 24.0);
    let mock = start_mock();
    let cluster = start_cluster(&mock, &database_url, &redis.url(), 3);
    let slug = fresh_slug("cluster-redis");
    let mut clients = Vec::new();
    for instance in &cluster {
        clients.push(WsClient::connect(instance, &format!("sessionSlug={slug}")).await);
    }
    let publisher = spawn_ffmpeg(ffmpeg_speech_args(&wav, &cluster[0].rtmp_url(&slug)));

    assert!(
        clients[2]
            .wait_until(Duration::from_secs(30), |m| m
                .iter()
                .filter(|m| m["isFinal"] == true)
                .count()
                >= 2)
            .await
    );
    redis.kill();
    // The owner carries on alone: its own client gets finals while Redis is away, and the
    // followers' clients are told the bus is away.
    let before = final_count(&clients[0]);
    assert!(
        clients[0]
            .wait_until(Duration::from_secs(15), |m| m
                .iter()
                .filter(|m| m["isFinal"] == true)
                .count()
                >= before + 2)
            .await,
        "the owner stopped delivering while Redis was down\n{}",
        cluster[0].log_tail(20)
    );
    for (i, client) in clients.iter().enumerate().skip(1) {
        assert!(
            client
                .wait_until(Duration::from_secs(5), |m| m.iter().any(|m| m["type"]
                    == "status"
                    && m["detail"]
                        .as_str()
                        .is_some_and(|d| d.contains("cluster bus unavailable"))))
                .await,
            "instance {i}'s client was not told the bus is away"
        );
    }
    redis.restart();
    let mut publisher = publisher;
    let _ = publisher.wait().await;
    mock.assert_one_session_closed(&cluster[0], Duration::from_secs(30))
        .await;
    let expected = mock.sessions()[0].finals_sent.len();

    for (i, client) in clients.iter().enumerate() {
        assert!(
            client
                .wait_until(Duration::from_secs(15), |m| m
                    .iter()
                    .filter(|m| m["isFinal"] == true)
                    .count()
                    >= expected)
                .await,
            "instance {i}: {} of {expected} finals after Redis came back\n{}",
            final_count(client),
            cluster[i].log_tail(20)
        );
        assert_eq!(
            seqs(&client.finals()),
            (1..=expected as i64).collect::<Vec<_>>(),
            "instance {i}: a final missing or repeated"
        );
    }
    let stored =
        wait_for_stored_finals(&database_url, &slug, expected, Duration::from_secs(10)).await;
    assert_eq!(
        stored.iter().map(|f| f.seq).collect::<Vec<_>>(),
        (1..=expected as i64).collect::<Vec<_>>(),
        "the database lost or repeated a final across the Redis restart"
    );
}

/// One browser watching the meeting across the restarts: when its instance goes away it
/// reconnects to another with the last `seq` it has, as docs/PROTOCOL.md tells clients to.
struct Viewer {
    connection: WsClient,
    earlier: Vec<i64>,
    /// The instance it is connected to.
    at: usize,
}

impl Viewer {
    async fn connect(service: &Service, at: usize, slug: &str) -> Viewer {
        Viewer {
            connection: WsClient::connect(service, &format!("sessionSlug={slug}")).await,
            earlier: Vec::new(),
            at,
        }
    }

    fn seen(&self) -> Vec<i64> {
        let mut all = self.earlier.clone();
        all.extend(seqs(&self.connection.finals()));
        all
    }

    /// Waits for its instance's goodbye (1001), then resumes on `service`.
    async fn follow_to(&mut self, service: &Service, at: usize, slug: &str) {
        let closed = self.connection.wait_closed(Duration::from_secs(60)).await;
        assert_eq!(
            closed.map(|(code, _)| code),
            Some(1001),
            "a shutdown says goodbye with 1001"
        );
        self.earlier = self.seen();
        let last = self.earlier.last().copied().unwrap_or(0);
        self.connection =
            WsClient::connect(service, &format!("sessionSlug={slug}&lastSeq={last}")).await;
        self.at = at;
    }
}

/// SIGTERM off the test's runtime (the drain takes seconds; the clients and the proxy must
/// keep running meanwhile).
async fn terminate(service: Service) {
    let code = actix_rt::task::spawn_blocking(move || {
        let mut service = service;
        service.terminate_within(Duration::from_secs(60))
    })
    .await
    .expect("terminate task");
    assert_eq!(code, Some(0), "a SIGTERM'd instance exits 0");
}

async fn start_instance(mock: &MockProvider, database_url: &str, redis: &str) -> Service {
    let env = mock.service_env_with(database_url, &[("REDIS_URL", redis)]);
    actix_rt::task::spawn_blocking(move || Service::start(realtime_core_bin!(), &env))
        .await
        .expect("start task")
}

#[actix_rt::test]
async fn a_rolling_restart_during_a_meeting_loses_nothing_for_resuming_clients() {
    let _serial = SERIAL.lock().await;
    let Some(Fixture {
        redis,
        database_url,
        dir,
    }) = fixture()
    else {
        return;
    };
    let wav = make_long_speech(dir.path(), 60.0);
    let wav_s = wav.to_str().unwrap().to_owned();
    let mock = start_mock();
    let mut cluster: Vec<Option<Service>> = start_cluster(&mock, &database_url, &redis, 3)
        .into_iter()
        .map(Some)
        .collect();
    let slug = fresh_slug("cluster-rolling");
    let instance = |cluster: &[Option<Service>], i: usize| -> std::net::SocketAddr {
        cluster[i].as_ref().expect("running").rtmp
    };
    let proxy = TcpProxy::start(instance(&cluster, 0)).await;
    let mut viewers = Vec::new();
    for (at, service) in cluster.iter().flatten().enumerate() {
        viewers.push(Viewer::connect(service, at, &slug).await);
    }
    let started = Instant::now();
    let mut publisher = spawn_ffmpeg(ffmpeg_speech_args(&wav, &proxy.rtmp_url(&slug)));

    // Instance i is restarted while it ingests; egress then reconnects to the next one.
    for step in 0..3 {
        let next = (step + 1) % 3;
        let sent = |s: &[mock_gladia::SessionRecord]| -> usize {
            s.iter().map(|s| s.finals_sent.len()).sum()
        };
        let before = sent(&mock.sessions());
        assert!(
            mock.wait_for(Duration::from_secs(30), |s| sent(s) >= before + 2)
                .await,
            "step {step}: the provider sent no new finals\n{}",
            cluster[step]
                .as_ref()
                .map(|c| c.log_tail(20))
                .unwrap_or_default()
        );
        proxy.route_to(instance(&cluster, next));
        let leaving = cluster[step].take().expect("running");
        let terminated = terminate(leaving);
        let resume = async {
            // The old connection ends with its instance: egress reconnects at once.
            let _ = publisher.wait().await;
            let offset = format!("{:.3}", started.elapsed().as_secs_f64());
            spawn_ffmpeg(ffmpeg_args(
                &[&["-re", "-ss", &offset, "-i", &wav_s][..], &EGRESS_AAC].concat(),
                &proxy.rtmp_url(&slug),
            ))
        };
        let ((), next_publisher) = futures_util::join!(terminated, resume);
        publisher = next_publisher;
        let target = cluster[next].as_ref().expect("running");
        for viewer in viewers.iter_mut().filter(|v| v.at == step) {
            viewer.follow_to(target, next, &slug).await;
        }
        cluster[step] = Some(start_instance(&mock, &database_url, &redis).await);
    }
    // The meeting ends: the last owner stops its provider session cleanly.
    let _ = publisher.wait().await;
    let sessions = mock.sessions().len();
    assert!(
        mock.wait_for(Duration::from_secs(30), |s| s.len() == sessions
            && s.iter().all(|s| s.closed_with_1000))
            .await,
        "a provider session did not end"
    );
    let total: usize = mock.sessions().iter().map(|s| s.finals_sent.len()).sum();
    assert!(
        sessions >= 4,
        "{sessions} provider sessions for three restarts"
    );
    for (i, viewer) in viewers.iter().enumerate() {
        let complete = viewer
            .connection
            .wait_until(Duration::from_secs(15), |m| {
                m.iter().filter(|m| m["isFinal"] == true).count() + viewer.earlier.len() >= total
            })
            .await;
        assert!(
            complete,
            "viewer {i}: {} of {total} finals",
            viewer.seen().len()
        );
        assert_eq!(
            viewer.seen(),
            (1..=total as i64).collect::<Vec<_>>(),
            "viewer {i} missed or repeated a final across the restarts"
        );
    }
    let stored = wait_for_stored_finals(&database_url, &slug, total, Duration::from_secs(10)).await;
    assert_eq!(
        stored.iter().map(|f| f.seq).collect::<Vec<_>>(),
        (1..=total as i64).collect::<Vec<_>>()
    );
}

/// A lone instance and a cluster on one database would number the same sessions apart: each
/// refuses to start beside the other, in one line that names the fix and no password.
#[actix_rt::test]
async fn a_lone_instance_and_a_cluster_on_one_database_refuse_each_other() {
    let _serial = SERIAL.lock().await;
    let (Some(redis), Some(database_url)) =
        (redis_url(), fresh_postgres_database("rtcore_cluster"))
    else {
        return;
    };
    let mock = start_mock();
    let refused = |extra: &[(&str, &str)]| {
        let spill = tempfile::tempdir().unwrap();
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_realtime-core"))
            .env_remove("REDIS_URL")
            .envs(mock.service_env(&database_url))
            .envs(extra.iter().copied())
            .env("PORT", "0")
            .env("RTMP_INTERNAL_PORT", "0")
            .env("TRANSCRIPT_SPILL_DIR", spill.path())
            .env("RUST_LOG", "warn")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        let lines: Vec<String> = stderr
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(str::to_owned)
            .collect();
        assert_eq!(output.status.code(), Some(1), "it started: {stderr}");
        assert_eq!(lines.len(), 1, "one clear line, got: {stderr}");
        assert!(
            !stderr.contains("postgres:postgres@"),
            "the password reached the log"
        );
        lines[0].clone()
    };
    {
        let _clustered = start_cluster(&mock, &database_url, &redis, 2);
        let line = refused(&[]);
        assert!(
            line.contains("give it REDIS_URL too") || line.contains("run them as a cluster"),
            "{line}"
        );
    }
    let _alone = Service::start(realtime_core_bin!(), &mock.service_env(&database_url));
    let line = refused(&[("REDIS_URL", redis.as_str())]);
    assert!(line.contains("without REDIS_URL"), "{line}");
    // And cluster mode on SQLite is refused before anything starts.
    let dir = tempfile::tempdir().unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_realtime-core"))
        .envs(mock.service_env(&sqlite_url(dir.path(), "x.db")))
        .env("REDIS_URL", &redis)
        .env("PORT", "0")
        .env("RTMP_INTERNAL_PORT", "0")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "it started: {stderr}");
    assert!(
        stderr.contains("DATABASE_URL=\"sqlite:…\"") && stderr.contains("REDIS_URL is set"),
        "{stderr}"
    );
}
