//! Keeping database credentials out of logs and error messages (docs/PROTOCOL.md#security).
//!
//! `DATABASE_URL` may carry a password (`postgres://user:secret@host/db`, or libpq's
//! `?password=secret`). Anything that prints a URL or a driver message goes through here.

/// The URL with its password (userinfo and any `password=` parameter) replaced by `***`.
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return redact_params(url);
    };
    let rest_start = scheme_end + 3;
    let rest = &url[rest_start..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];

    let mut out = String::with_capacity(url.len());
    out.push_str(&url[..rest_start]);
    match authority.rfind('@') {
        Some(at) => {
            let userinfo = &authority[..at];
            match userinfo.find(':') {
                Some(colon) => {
                    out.push_str(&userinfo[..colon]);
                    out.push_str(":***");
                }
                None => out.push_str(userinfo),
            }
            out.push_str(&authority[at..]);
        }
        None => out.push_str(authority),
    }
    out.push_str(&redact_params(&rest[authority_end..]));
    out
}

/// `message` with every secret found in `url` replaced by `***`, and the URL itself redacted.
///
/// Driver messages (libpq, SQLite) are not supposed to echo passwords, but this is the one
/// place that guarantees it, whatever a driver version decides to print.
pub fn scrub(message: &str, url: &str) -> String {
    let mut out = message.replace(url, &redact_url(url));
    for secret in secrets(url) {
        if !secret.is_empty() {
            out = out.replace(&secret, "***");
        }
    }
    out
}

/// The password in the userinfo (raw and percent-decoded) and every `password=` value.
fn secrets(url: &str) -> Vec<String> {
    let mut found = Vec::new();
    if let Some(scheme_end) = url.find("://") {
        let rest = &url[scheme_end + 3..];
        let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
        if let Some(at) = authority.rfind('@') {
            if let Some((_, password)) = authority[..at].split_once(':') {
                found.push(password.to_owned());
                found.push(percent_decode(password));
            }
        }
    }
    for (key, value) in params(url) {
        if is_secret_key(key) {
            found.push(value.to_owned());
            found.push(percent_decode(value));
        }
    }
    // Longest first, so a secret that contains another is replaced whole.
    found.sort_by_key(|s| std::cmp::Reverse(s.len()));
    found.dedup();
    found
}

fn is_secret_key(key: &str) -> bool {
    key.eq_ignore_ascii_case("password") || key.eq_ignore_ascii_case("sslpassword")
}

/// `key=value` pairs of a query string or of a libpq keyword/value string.
fn params(text: &str) -> impl Iterator<Item = (&str, &str)> {
    let query = text.split_once('?').map_or(text, |(_, q)| q);
    query
        .split(['&', ' ', '\t', '\n'])
        .filter_map(|pair| pair.split_once('='))
}

fn redact_params(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut token = String::new();
    for c in text.chars() {
        if matches!(c, '&' | '?' | ' ' | '\t' | '\n' | '#') {
            out.push_str(&redact_pair(&token));
            token.clear();
            out.push(c);
        } else {
            token.push(c);
        }
    }
    out.push_str(&redact_pair(&token));
    out
}

fn redact_pair(pair: &str) -> String {
    match pair.split_once('=') {
        Some((key, _)) if is_secret_key(key) => format!("{key}=***"),
        _ => pair.to_owned(),
    }
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn userinfo_password_is_redacted() {
        assert_eq!(
            redact_url("postgres://app:s3cr%40t@db:5432/rt?sslmode=require"),
            "postgres://app:***@db:5432/rt?sslmode=require"
        );
        assert_eq!(redact_url("postgres://app@db/rt"), "postgres://app@db/rt");
        assert_eq!(redact_url("sqlite://data/x.db"), "sqlite://data/x.db");
    }

    #[test]
    fn password_parameter_is_redacted() {
        assert_eq!(
            redact_url("postgresql://db/rt?user=app&password=hunter22&sslmode=disable"),
            "postgresql://db/rt?user=app&password=***&sslmode=disable"
        );
        assert_eq!(
            redact_url("host=db password=hunter22 user=app"),
            "host=db password=*** user=app"
        );
    }

    #[test]
    fn scrub_removes_raw_and_decoded_passwords() {
        let url = "postgres://app:s3cr%40t@db/rt";
        let msg = format!("failed for {url}: password s3cr@t and s3cr%40t rejected");
        let scrubbed = scrub(&msg, url);
        assert!(!scrubbed.contains("s3cr"), "{scrubbed}");
        assert!(scrubbed.contains("postgres://app:***@db/rt"), "{scrubbed}");
    }
}
