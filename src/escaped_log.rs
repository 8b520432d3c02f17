//! The log writer: one event, one line, whatever a peer put in the values.
//!
//! Paths, query strings, RTMP app names and commands, provider messages: values that come
//! from the network end up in log fields, and a raw newline in one of them would start a line
//! of the attacker's choosing (`GET /api/x%0A2099-01-01T00:00:00Z ERROR FORGED`). Rather than
//! trust every call site to escape, the writer does: within an event, line breaks and other
//! control characters are written as `\n`, `\r`, `\x1b`, …; only the event's own final newline
//! stays. The fmt layer hands each event to the writer in one `write` call (it formats into a
//! buffer first), so "the end of the buffer" is the end of the event.

use std::io::{self, Write};

use tracing_subscriber::fmt::MakeWriter;

/// Standard error, escaped. With `ansi` (a terminal), ESC is kept for the colours.
#[derive(Debug, Clone, Copy)]
pub struct EscapedStderr {
    pub ansi: bool,
}

impl<'a> MakeWriter<'a> for EscapedStderr {
    type Writer = Escaping<io::Stderr>;

    fn make_writer(&'a self) -> Self::Writer {
        Escaping {
            inner: io::stderr(),
            ansi: self.ansi,
        }
    }
}

/// Escapes control characters of each buffer written through it, but a final newline.
pub struct Escaping<W> {
    inner: W,
    ansi: bool,
}

/// `bytes` with every control character but tab escaped, and its final `\n` kept.
pub fn escape_line(bytes: &[u8], keep_esc: bool) -> Vec<u8> {
    let (body, end) = match bytes.split_last() {
        Some((b'\n', body)) => (body, &b"\n"[..]),
        _ => (bytes, &b""[..]),
    };
    let mut out = Vec::with_capacity(bytes.len() + 8);
    for &b in body {
        match b {
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.push(b),
            0x1b if keep_esc => out.push(b),
            0x00..=0x1f | 0x7f => out.extend_from_slice(format!("\\x{b:02x}").as_bytes()),
            _ => out.push(b),
        }
    }
    out.extend_from_slice(end);
    out
}

impl<W: Write> Write for Escaping<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.inner.write_all(&escape_line(buf, self.ansi))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_cannot_start_a_line_of_its_own() {
        let event = b"2026-12-04T21:00:00Z INFO api call refused path=/api/x\n2099-01-01T00:00:00Z ERROR FORGED\n";
        let escaped = escape_line(event, false);
        let text = String::from_utf8(escaped).unwrap();
        assert_eq!(text.lines().count(), 1);
        assert!(text.ends_with("x\\n2099-01-01T00:00:00Z ERROR FORGED\n"));
    }

    #[test]
    fn control_characters_are_escaped_and_text_is_kept() {
        let escaped = escape_line("a\rb\x1b[31mc\x00d\te é\n".as_bytes(), false);
        assert_eq!(
            String::from_utf8(escaped).unwrap(),
            "a\\rb\\x1b[31mc\\x00d\te é\n"
        );
        // On a terminal the colours' ESC stays.
        assert_eq!(escape_line(b"\x1b[1mx\n", true), b"\x1b[1mx\n".to_vec());
        // No trailing newline: nothing is added.
        assert_eq!(escape_line(b"a\nb", false), b"a\\nb".to_vec());
    }

    #[test]
    fn the_writer_escapes_what_passes_through() {
        let mut writer = Escaping {
            inner: Vec::new(),
            ansi: false,
        };
        writer.write_all(b"one\ntwo\n").unwrap();
        assert_eq!(writer.inner, b"one\\ntwo\n".to_vec());
    }
}
