//! The settings as an operator meets them: defaults, one-line errors naming the variable,
//! and the rules across settings.

use std::path::PathBuf;

use clap::{CommandFactory as _, Parser as _, ValueEnum as _};

use super::*;

/// Parses like the binary does, with `args` on the command line.
fn parse(args: &[&str]) -> Result<Config, ConfigError> {
    let argv = std::iter::once("realtime-core").chain(args.iter().copied());
    Config::from_cli(Cli::try_parse_from(argv)?)
}

/// The error of `args`, checked to be one line.
fn error(args: &[&str]) -> String {
    let message = match parse(args) {
        Ok(_) => panic!("{args:?} was accepted"),
        Err(e) => e.to_string(),
    };
    assert!(!message.contains('\n'), "not one line: {message}");
    message
}

#[test]
fn defaults_are_valid_and_local() {
    let c = parse(&[]).unwrap();
    assert!(c.http_host.is_loopback());
    assert_eq!(c.port, 8080);
    assert_eq!(c.pcm_chunk_ms, 100);
    assert_eq!(c.database_url, DEFAULT_DATABASE_URL);
    assert_eq!(c.transcript_max_queued, 100_000);
    assert_eq!(c.transcript_spill_dir, PathBuf::from("./data/spill"));
    assert_eq!(c.transcript_spill_max_bytes, 1 << 30);
    let c = parse(&["--database-url", "postgres://h/db"]).unwrap();
    assert_eq!(c.transcript_spill_dir, PathBuf::from("./data/spill"));
    let c = parse(&["--transcript-spill-dir", "/var/spool/rt"]).unwrap();
    assert_eq!(c.transcript_spill_dir, PathBuf::from("/var/spool/rt"));
}

#[test]
fn bad_values_name_the_variable() {
    let e = parse(&["--port", "http"]).unwrap_err().to_string();
    assert!(e.starts_with("PORT=\"http\""), "{e}");
    let e = parse(&["--gladia-region", "mars"]).unwrap_err().to_string();
    assert!(
        e.contains("GLADIA_REGION") && e.contains("eu-west or us-west"),
        "{e}"
    );
    let e = parse(&["--pcm-chunk-size-ms", "0"])
        .unwrap_err()
        .to_string();
    assert!(e.contains("PCM_CHUNK_SIZE_MS"), "{e}");
    assert!(!e.contains('\n'));
}

#[test]
fn public_bind_needs_secrets() {
    let e = parse(&["--http-host", "0.0.0.0"]).unwrap_err().to_string();
    assert!(e.contains("REALTIME_AUTH_SECRET"), "{e}");
    assert!(parse(&["--http-host", "0.0.0.0", "--realtime-insecure", "true"]).is_ok());
}

#[test]
fn http_broadcast_mode_needs_url_and_secret() {
    let c = parse(&[]).unwrap();
    assert!(!c.broadcast_http() && c.realtime_broadcast_url.is_none());
    let e = parse(&["--realtime-broadcast-mode", "kafka"])
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("REALTIME_BROADCAST_MODE=\"kafka\"") && e.contains("direct or http"),
        "{e}"
    );
    let e = parse(&["--realtime-broadcast-mode", "http"])
        .unwrap_err()
        .to_string();
    assert!(e.contains("REALTIME_BROADCAST_URL"), "{e}");
    let e = parse(&[
        "--realtime-broadcast-mode",
        "http",
        "--realtime-broadcast-url",
        "http://10.0.0.2:8080",
    ])
    .unwrap_err()
    .to_string();
    assert!(e.contains("REALTIME_BROADCAST_SECRET"), "{e}");
    let e = parse(&["--realtime-broadcast-url", "ftp://x"])
        .unwrap_err()
        .to_string();
    assert!(e.contains("REALTIME_BROADCAST_URL"), "{e}");
    let c = parse(&[
        "--realtime-broadcast-mode",
        "http",
        "--realtime-broadcast-url",
        "http://10.0.0.2:8080/",
        "--realtime-broadcast-secret",
        "s3cret",
    ])
    .unwrap();
    assert!(c.broadcast_http());
    assert_eq!(
        c.realtime_broadcast_url.as_deref(),
        Some("http://10.0.0.2:8080/api/realtime/transcribe/broadcast")
    );
}

#[test]
fn provider_defaults_to_whisper_only_when_its_model_is_there() {
    let empty = tempfile::tempdir().unwrap();
    let dir = empty.path().to_str().unwrap();
    let c = parse(&["--whisper-model-dir", dir]).unwrap();
    assert_eq!(c.stt_provider, SttProvider::None);
    assert!(c.stt_provider_reason.contains("install-whisper-model.sh"));
    for f in ["model.bin", "config.json", "tokenizer.json"] {
        std::fs::write(empty.path().join(f), b"x").unwrap();
    }
    let c = parse(&["--whisper-model-dir", dir]).unwrap();
    assert_eq!(c.stt_provider, SttProvider::Whisper);
    let c = parse(&["--whisper-model-dir", dir, "--gladia-api-key", "k"]).unwrap();
    assert_eq!(c.stt_provider, SttProvider::Gladia);
    let c = parse(&[
        "--whisper-model-dir",
        dir,
        "--gladia-api-key",
        "k",
        "--stt-provider",
        "whisper",
    ])
    .unwrap();
    assert_eq!(c.stt_provider, SttProvider::Whisper);
    assert_eq!(c.stt_provider_reason, "STT_PROVIDER=whisper");
}

#[test]
fn whisper_settings_are_validated() {
    let e = parse(&["--whisper-max-utterance-ms", "30000"])
        .unwrap_err()
        .to_string();
    assert!(e.contains("WHISPER_MAX_UTTERANCE_MS"), "{e}");
    let e = parse(&["--whisper-compute-type", "int4"])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("WHISPER_COMPUTE_TYPE") && e.contains("int8"),
        "{e}"
    );
    let e = parse(&["--whisper-max-sessions", "0"])
        .unwrap_err()
        .to_string();
    assert!(e.contains("WHISPER_MAX_SESSIONS"), "{e}");
    let c = parse(&["--whisper-threads", "2", "--whisper-workers", "3"]).unwrap();
    assert_eq!((c.whisper.threads, c.whisper.workers), (2, 3));
    assert_eq!(c.whisper.max_sessions, None);
}

#[test]
fn database_url_is_never_echoed() {
    let e = parse(&["--database-url", "mysql://user:hunter2@db/x"])
        .unwrap_err()
        .to_string();
    assert!(!e.contains("hunter2"), "{e}");
}

#[test]
fn each_kind_of_bad_value_is_one_line_naming_the_variable() {
    // Not a number at all.
    let e = error(&["--port", "eighty"]);
    assert_eq!(
        e,
        "PORT=\"eighty\" is not allowed: a whole number from 0 to 65535"
    );
    // A number out of its range.
    let e = error(&["--pcm-chunk-size-ms", "0"]);
    assert_eq!(
        e,
        "PCM_CHUNK_SIZE_MS=\"0\" is not allowed: a whole number from 10 to 1000"
    );
    let e = error(&["--rtmp-internal-port", "65536"]);
    assert!(e.starts_with("RTMP_INTERNAL_PORT=\"65536\""), "{e}");
    // A duration, which says its unit.
    let e = error(&["--ws-ping-interval-ms", "10"]);
    assert_eq!(
        e,
        "WS_PING_INTERVAL_MS=\"10\" is not allowed: a whole number of milliseconds from 100 to 3600000"
    );
    // A value outside a closed set lists the set.
    let e = error(&["--stt-provider", "azure"]);
    assert_eq!(
        e,
        "STT_PROVIDER=\"azure\" is not allowed: gladia or whisper"
    );
    // An address, a URL, a filter.
    let e = error(&["--rtmp-bind", "my-host"]);
    assert!(
        e.starts_with("RTMP_BIND=\"my-host\"") && e.contains("IP address"),
        "{e}"
    );
    let e = error(&["--gladia-api-url", "api.gladia.io"]);
    assert!(
        e.starts_with("GLADIA_API_URL=") && e.contains("https://"),
        "{e}"
    );
    let e = error(&["--rust-log", "info,=["]);
    assert!(e.starts_with("RUST_LOG="), "{e}");
    let e = error(&["--realtime-insecure", "maybe"]);
    assert!(e.ends_with("true or false"), "{e}");
    // A blank setting that has no "unset".
    let e = error(&["--port", ""]);
    assert!(
        e.starts_with("PORT=\"\" is not allowed: a whole number"),
        "{e}"
    );
    let e = error(&["--realtime-broadcast-mode", ""]);
    assert!(e.ends_with("direct or http"), "{e}");
    // Not a setting at all: clap's first line, still one line.
    let e = error(&["--nats-url", "nats://localhost"]);
    assert!(e.contains("--nats-url"), "{e}");
}

#[test]
fn cluster_mode_needs_a_redis_url_and_a_shared_postgres_and_never_echoes_them() {
    let e = error(&["--redis-url", "http://user:hunter2@cache:6379"]);
    assert!(e.starts_with("REDIS_URL=") && e.contains("redis://"), "{e}");
    assert!(!e.contains("hunter2"), "{e}");
    let e = error(&["--redis-url", "redis://:hunter2@cache:6379"]);
    assert!(
        e.starts_with("DATABASE_URL=\"sqlite:…\"") && e.contains("REDIS_URL is set"),
        "{e}"
    );
    assert!(!e.contains("hunter2"), "{e}");
    let c = parse(&[
        "--redis-url",
        "redis://cache:6379/2",
        "--database-url",
        "postgres://u:p@db/x",
        "--cluster-lease-ms",
        "3000",
    ])
    .unwrap();
    assert_eq!(c.redis_url.as_deref(), Some("redis://cache:6379/2"));
    assert_eq!(c.cluster_lease, std::time::Duration::from_millis(3000));
    assert!(error(&["--cluster-lease-ms", "100"]).starts_with("CLUSTER_LEASE_MS=\"100\""));
    assert_eq!(parse(&[]).unwrap().redis_url, None);
}

#[test]
fn a_blank_optional_setting_is_unset() {
    let c = parse(&[
        "--rtmp-external-port",
        "",
        "--gladia-api-key",
        "  ",
        "--gladia-region",
        "",
        "--whisper-threads",
        " ",
        "--realtime-broadcast-url",
        "",
        "--realtime-insecure",
        "",
    ])
    .unwrap();
    assert_eq!(c.rtmp_external_port, None);
    assert_eq!(c.gladia_api_key, None);
    assert_eq!(c.gladia_region, None);
    assert_eq!(c.realtime_broadcast_url, None);
    assert!(!c.insecure);
    assert_eq!(c.whisper.threads, parse(&[]).unwrap().whisper.threads);
    // Numbers tolerate the spaces an env file leaves around them.
    let c = parse(&[
        "--rtmp-external-port",
        " 1935 ",
        "--gladia-region",
        "us-west",
    ])
    .unwrap();
    assert_eq!(c.rtmp_external_port, Some(1935));
    assert_eq!(c.gladia_region, Some(GladiaRegion::UsWest));
    assert_eq!(c.rtmp_url_base(1), "rtmp://localhost:1935/live/");
    // So do the names of a closed set.
    let c = parse(&[
        "--whisper-compute-type",
        "int8_float32 ",
        "--stt-provider",
        " whisper",
    ])
    .unwrap();
    assert_eq!(c.whisper.compute_type, ComputeType::Int8Float32);
    assert_eq!(c.stt_provider, SttProvider::Whisper);
}

#[test]
fn secrets_and_url_credentials_are_never_echoed() {
    let e = error(&[
        "--realtime-broadcast-url",
        "ftp://relay:hunter2@10.0.0.2/?t=tok",
    ]);
    assert!(e.starts_with("REALTIME_BROADCAST_URL="), "{e}");
    assert!(!e.contains("hunter2") && !e.contains("tok"), "{e}");
    let e = error(&["--database-url", "mysql://user:hunter2@db/x"]);
    assert_eq!(
        e,
        "DATABASE_URL=\"<hidden>\" is not allowed: a sqlite://PATH or postgres://… URL"
    );
}

#[test]
fn every_setting_is_a_variable_and_redis_url_is_gone() {
    let command = Cli::command();
    for arg in command.get_arguments() {
        let id = arg.get_id().as_str();
        if id == "help" || id == "version" {
            continue;
        }
        assert!(
            arg.get_env().is_some(),
            "--{id} has no environment variable"
        );
    }
    let help = Cli::command().render_long_help().to_string();
    assert!(help.contains("[env: PORT="), "{help}");
    assert!(help.contains("[default: 8080]"), "{help}");
    assert!(
        help.contains("[possible values: gladia, whisper]"),
        "{help}"
    );
    assert!(help.contains("[env: REDIS_URL"), "{help}");
}

#[test]
fn compute_types_are_named_as_ctranslate2_names_them() {
    let names: Vec<String> = ComputeType::value_variants().iter().map(name_of).collect();
    assert_eq!(
        names,
        [
            "default",
            "auto",
            "float32",
            "int8",
            "int8_float32",
            "int8_float16",
            "int8_bfloat16",
            "int16",
            "float16",
            "bfloat16"
        ]
    );
    assert_eq!(parse(&[]).unwrap().whisper.compute_type, ComputeType::Int8);
    assert_eq!(name_of(&GladiaRegion::EuWest), "eu-west");
}

#[test]
fn rtmp_connection_limits_default_and_are_range_checked() {
    let c = parse(&[]).unwrap();
    assert_eq!(c.rtmp_max_connections_per_ip, 16);
    assert_eq!(c.rtmp_max_connections, 1024);
    assert_eq!(c.rtmp_proxy_protocol, ProxyProtocol::Off);
    let c = parse(&[
        "--rtmp-max-connections-per-ip",
        "2",
        "--rtmp-max-connections",
        " 40 ",
    ])
    .unwrap();
    assert_eq!(
        (c.rtmp_max_connections_per_ip, c.rtmp_max_connections),
        (2, 40)
    );
    let e = error(&["--rtmp-max-connections-per-ip", "0"]);
    assert_eq!(
        e,
        "RTMP_MAX_CONNECTIONS_PER_IP=\"0\" is not allowed: a whole number from 1 to 100000"
    );
    let e = error(&["--rtmp-max-connections", "0"]);
    assert!(e.starts_with("RTMP_MAX_CONNECTIONS=\"0\""), "{e}");
    let e = error(&["--rtmp-max-connections=-1"]);
    assert!(e.starts_with("RTMP_MAX_CONNECTIONS=\"-1\""), "{e}");
}

#[test]
fn proxy_protocol_needs_trusted_proxies_and_they_need_it() {
    let c = parse(&[
        "--rtmp-proxy-protocol",
        "true",
        "--rtmp-trusted-proxies",
        "10.0.0.0/8, 2001:db8::/32",
    ])
    .unwrap();
    match c.rtmp_proxy_protocol {
        ProxyProtocol::Required {
            trusted,
            header_timeout,
        } => {
            assert!(trusted.contains("10.1.2.3".parse().unwrap()));
            assert!(trusted.contains("2001:db8::9".parse().unwrap()));
            assert!(!trusted.contains("192.0.2.1".parse().unwrap()));
            assert_eq!(header_timeout, PROXY_HEADER_TIMEOUT);
        }
        ProxyProtocol::Off => panic!("the PROXY protocol is on"),
    }
    // On without the list, or with a blank one: refused, naming the list.
    for args in [
        &["--rtmp-proxy-protocol", "true"][..],
        &[
            "--rtmp-proxy-protocol",
            "yes",
            "--rtmp-trusted-proxies",
            " ",
        ],
    ] {
        let e = error(args);
        assert!(
            e.starts_with("RTMP_TRUSTED_PROXIES=\"\" is not allowed")
                && e.contains("RTMP_PROXY_PROTOCOL=true"),
            "{e}"
        );
    }
    // A list without the protocol would leave the limits counting the load balancer.
    let e = error(&["--rtmp-trusted-proxies", "10.0.0.0/8"]);
    assert_eq!(
        e,
        "RTMP_TRUSTED_PROXIES=\"10.0.0.0/8\" is not allowed: unset unless RTMP_PROXY_PROTOCOL=true"
    );
    for bad in ["10.0.0.0/33", "lb.internal", "10.0.0.0/8,", "::/200"] {
        let e = error(&[
            "--rtmp-proxy-protocol",
            "true",
            "--rtmp-trusted-proxies",
            bad,
        ]);
        assert!(
            e.starts_with(&format!(
                "RTMP_TRUSTED_PROXIES={bad:?} is not allowed: comma-separated CIDR blocks"
            )),
            "{e}"
        );
    }
    let e = error(&["--rtmp-proxy-protocol", "sometimes"]);
    assert!(e.starts_with("RTMP_PROXY_PROTOCOL=\"sometimes\""), "{e}");
}
