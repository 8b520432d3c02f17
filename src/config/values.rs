//! How one setting's value is read, and how a refused one is reported.
//!
//! Every setting is typed where clap reads it: the parsers here check one value at a time
//! (its syntax and its range), so a bad value stops start-up before anything is built. Rules
//! that relate several settings stay in [`super::Config::from_cli`].
//!
//! Whatever refuses a value, the operator sees one line naming the environment variable (the
//! setting's name in every deployment file), the value and what is allowed:
//! `PORT="eighty" is not allowed: a whole number from 0 to 65535`. clap's own multi-line
//! errors are folded into that line by [`ConfigError::from_clap`].

use std::ffi::OsStr;
use std::fmt::Display;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use clap::builder::{PossibleValue, TypedValueParser};
use clap::error::{ContextKind, ContextValue};
use clap::{Arg, Command, ValueEnum};

use crate::rtmp::TrustedProxies;

/// One line: `VARIABLE="value" is not allowed: what is`.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A value, or a combination of settings, is refused.
    #[error("{variable}={value:?} is not allowed: {allowed}")]
    NotAllowed {
        variable: String,
        value: String,
        allowed: String,
    },
    /// The command line itself is wrong (an unknown flag, a flag without its value): clap's
    /// own first line.
    #[error("{0}")]
    CommandLine(String),
}

/// A refused value. `value` is echoed: never pass a secret.
pub(crate) fn bad(variable: &str, value: &str, allowed: impl Into<String>) -> ConfigError {
    ConfigError::NotAllowed {
        variable: variable.to_owned(),
        value: value.to_owned(),
        allowed: allowed.into(),
    }
}

impl ConfigError {
    /// Folds one of clap's errors for `command` (the settings' command) into one line.
    pub fn from_clap(error: clap::Error, mut command: Command) -> Self {
        // Built, as when it parsed: an argument only renders as `--port <PORT>` (the form
        // the error names it by) once its command is built.
        command.build();
        let setting = match error.get(ContextKind::InvalidArg) {
            Some(ContextValue::String(flag)) => {
                command.get_arguments().find(|arg| arg.to_string() == *flag)
            }
            _ => None,
        };
        let value = match error.get(ContextKind::InvalidValue) {
            Some(ContextValue::String(value)) => Some(value.as_str()),
            _ => None,
        };
        match (setting, value) {
            (Some(setting), Some(value)) => ConfigError::NotAllowed {
                variable: variable_of(setting),
                value: loggable_value(setting, value),
                allowed: allowed(&error),
            },
            _ => ConfigError::CommandLine(first_line(&error)),
        }
    }
}

/// The environment variable of a setting: every setting has one (a unit test checks), and
/// it is the name operators know from the deployment files.
fn variable_of(setting: &Arg) -> String {
    setting.get_env().map_or_else(
        || setting.get_id().to_string(),
        |variable| variable.to_string_lossy().into_owned(),
    )
}

/// The value as an error may show it: a secret setting's value never (it may be a key or a
/// URL with a password), a URL's credentials and query never.
fn loggable_value(setting: &Arg, value: &str) -> String {
    if setting.is_hide_env_values_set() {
        "<hidden>".to_owned()
    } else if value.contains("://") {
        ::actors::relay::loggable_url(value)
    } else {
        value.to_owned()
    }
}

/// What is allowed: the parser's own words, or the choices of a closed set.
fn allowed(error: &clap::Error) -> String {
    if let Some(ContextValue::Strings(choices)) = error.get(ContextKind::ValidValue) {
        if !choices.is_empty() {
            return one_of(choices);
        }
    }
    match std::error::Error::source(error) {
        Some(reason) => reason.to_string(),
        None => first_line(error),
    }
}

/// `a or b`, `a, b or c`.
fn one_of(choices: &[String]) -> String {
    match choices.split_last() {
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
        None => String::new(),
    }
}

/// clap's message without its `error: ` prefix, usage and tips.
fn first_line(error: &clap::Error) -> String {
    let rendered = error.render().to_string();
    let line = rendered.lines().next().unwrap_or_default();
    line.strip_prefix("error: ").unwrap_or(line).to_owned()
}

/// The name a value has on the command line and in the environment (`int8_float32`).
pub fn name_of<E: ValueEnum>(value: &E) -> String {
    value
        .to_possible_value()
        .map(|v| v.get_name().to_owned())
        .unwrap_or_default()
}

/// A whole number in `min..=max` (surrounding spaces tolerated, as env files have them).
pub(crate) fn whole<T>(min: T, max: T) -> impl Fn(&str) -> Result<T, String> + Clone + Send + Sync
where
    T: FromStr + PartialOrd + Display + Copy + Send + Sync + 'static,
{
    move |value| match value.trim().parse::<T>() {
        Ok(n) if n >= min && n <= max => Ok(n),
        _ => Err(format!("a whole number from {min} to {max}")),
    }
}

/// A duration given in whole milliseconds, in `min..=max` ms.
pub(crate) fn millis(
    min: u64,
    max: u64,
) -> impl Fn(&str) -> Result<Duration, String> + Clone + Send + Sync {
    whole_duration("milliseconds", Duration::from_millis, min, max)
}

/// A duration given in whole seconds, in `min..=max` s.
pub(crate) fn seconds(
    min: u64,
    max: u64,
) -> impl Fn(&str) -> Result<Duration, String> + Clone + Send + Sync {
    whole_duration("seconds", Duration::from_secs, min, max)
}

/// A whole number of `unit`s in `min..=max`, as a duration.
fn whole_duration(
    unit: &'static str,
    from: fn(u64) -> Duration,
    min: u64,
    max: u64,
) -> impl Fn(&str) -> Result<Duration, String> + Clone + Send + Sync {
    move |value| match value.trim().parse::<u64>() {
        Ok(n) if n >= min && n <= max => Ok(from(n)),
        _ => Err(format!("a whole number of {unit} from {min} to {max}")),
    }
}

/// An IP address to listen on; `localhost` is 127.0.0.1 (never a name lookup at start-up).
pub(crate) fn address(value: &str) -> Result<IpAddr, String> {
    match value.trim() {
        "localhost" => Ok(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        other => other
            .parse()
            .map_err(|_| "an IP address such as 127.0.0.1 or 0.0.0.0".to_owned()),
    }
}

/// A host written into `rtmp://HOST:PORT/live/…`: nothing that would break that URL.
pub(crate) fn host(value: &str) -> Result<String, String> {
    if value.trim().is_empty() || value.contains(['/', ' ', '?', '#']) {
        Err("a host name or address, without scheme or path".to_owned())
    } else {
        Ok(value.to_owned())
    }
}

/// A base URL the service calls; the trailing `/` is dropped so paths can be appended.
pub(crate) fn http_url(value: &str) -> Result<String, String> {
    let url = value.trim().trim_end_matches('/');
    if url.starts_with("http://") || url.starts_with("https://") {
        Ok(url.to_owned())
    } else {
        Err("an http:// or https:// URL".to_owned())
    }
}

/// The receiving instance of the broadcast relay: a base URL or the endpoint itself, kept as
/// the full endpoint URL.
pub(crate) fn relay_url(value: &str) -> Result<String, String> {
    if value.starts_with("http://") || value.starts_with("https://") {
        Ok(::actors::relay::endpoint_url(value))
    } else {
        Err("an http:// or https:// URL of the receiving instance".to_owned())
    }
}

/// The storage: SQLite or PostgreSQL (the value is never echoed: it may carry a password).
pub(crate) fn database_url(value: &str) -> Result<String, String> {
    if ["sqlite:", "postgres://", "postgresql://"]
        .iter()
        .any(|scheme| value.starts_with(scheme))
    {
        Ok(value.to_owned())
    } else {
        Err("a sqlite://PATH or postgres://… URL".to_owned())
    }
}

/// Cluster mode's Redis (the value is never echoed: it may carry a password).
pub(crate) fn redis_url(value: &str) -> Result<String, String> {
    if ["redis://", "rediss://", "redis+unix://", "unix://"]
        .iter()
        .any(|scheme| value.starts_with(scheme))
    {
        Ok(value.to_owned())
    } else {
        Err("a redis://HOST:PORT[/DB] URL".to_owned())
    }
}

/// A language code for a multilingual Whisper model.
pub(crate) fn language(value: &str) -> Result<String, String> {
    if (2..=3).contains(&value.len()) && value.chars().all(|c| c.is_ascii_lowercase()) {
        Ok(value.to_owned())
    } else {
        Err("a language code such as en or de".to_owned())
    }
}

/// Comma-separated IP addresses and CIDR blocks, IPv4 and IPv6 (`RTMP_TRUSTED_PROXIES`).
pub(crate) fn trusted_proxies(value: &str) -> Result<TrustedProxies, String> {
    value.parse().map_err(|error| {
        format!("comma-separated CIDR blocks such as 10.0.0.0/8,2001:db8::/32 ({error})")
    })
}

/// A filesystem path (spaces around it are an env file's, not the path's).
pub(crate) fn path(value: &str) -> Result<PathBuf, String> {
    Ok(PathBuf::from(value.trim()))
}

/// Any text; for secrets, whose value is only checked by whoever receives it.
pub(crate) fn text(value: &str) -> Result<String, String> {
    Ok(value.to_owned())
}

/// A yes/no setting: `true`, `1`, `yes` or `false`, `0`, `no` (any case); blank is no.
pub(crate) fn boolean(value: &str) -> Result<bool, String> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" => Ok(true),
        "false" | "0" | "no" | "" => Ok(false),
        _ => Err("true or false".to_owned()),
    }
}

/// A `RUST_LOG` filter, checked here so a typo stops start-up instead of silencing the logs.
pub(crate) fn log_filter(value: &str) -> Result<String, String> {
    match tracing_subscriber::EnvFilter::try_new(value) {
        Ok(_) => Ok(value.to_owned()),
        Err(_) => Err("a tracing filter such as info or realtime_core=debug".to_owned()),
    }
}

/// An optional setting: unset when its variable is absent *or blank*, because env files and
/// compose files write `KEY=` or `${KEY:-}` for "not set". Otherwise `P` reads the value.
///
/// A field using it is declared `std::option::Option<T>` with `default_value = ""`: clap then
/// hands every value, the empty default included, to this parser (a bare `Option<T>` would
/// make clap parse `T` itself and refuse a blank variable).
#[derive(Clone)]
pub(crate) struct BlankIsUnset<P>(pub P);

impl<P> TypedValueParser for BlankIsUnset<P>
where
    P: TypedValueParser,
{
    type Value = Option<P::Value>;

    fn parse_ref(
        &self,
        command: &Command,
        arg: Option<&Arg>,
        value: &OsStr,
    ) -> Result<Self::Value, clap::Error> {
        if value.to_str().is_some_and(|v| v.trim().is_empty()) {
            return Ok(None);
        }
        self.0.parse_ref(command, arg, value).map(Some)
    }

    /// The choices of a closed set still show in `--help`.
    fn possible_values(&self) -> Option<Box<dyn Iterator<Item = PossibleValue> + '_>> {
        self.0.possible_values()
    }
}

/// Reads the value without the spaces around it, which are an env file's, not the value's
/// (`WHISPER_COMPUTE_TYPE=int8 ` is int8).
#[derive(Clone)]
pub(crate) struct Trimmed<P>(pub P);

impl<P> TypedValueParser for Trimmed<P>
where
    P: TypedValueParser,
{
    type Value = P::Value;

    fn parse_ref(
        &self,
        command: &Command,
        arg: Option<&Arg>,
        value: &OsStr,
    ) -> Result<Self::Value, clap::Error> {
        match value.to_str() {
            Some(text) => self.0.parse_ref(command, arg, OsStr::new(text.trim())),
            None => self.0.parse_ref(command, arg, value),
        }
    }

    fn possible_values(&self) -> Option<Box<dyn Iterator<Item = PossibleValue> + '_>> {
        self.0.possible_values()
    }
}
