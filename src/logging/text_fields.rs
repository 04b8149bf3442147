//! The fields of a text line (`name=value ...`) when stderr is not a terminal, written the way
//! tracing-subscriber's default writes them without colour, at a fraction of the cost.
//!
//! Why by hand: the default field formatter paints every field name through `nu_ansi_term` even
//! with colour off, and writes every value through `Debug`. On the access line (a dozen fields,
//! once per request) that was about 20,000 instructions per request, as much as everything else
//! keygate does for a forwarded request. Here a string with nothing to escape is copied as it
//! is, floats go through `ryu`, integers through `itoa`, so lines read as before.
//!
//! Escaping is kept where it matters, and is stricter than the default's: a string value is
//! quoted, and one holding a quote, a backslash or any control or non-ASCII character is written
//! with `Debug` (`\"`, `\n`, `\u{1b}`), so a client-chosen path can neither start a new line
//! nor send terminal escapes. The message and `Display`/`Debug` values are written unquoted,
//! their control and invisible characters escaped the same way (the default escapes only the
//! message's ANSI sequences).

use std::fmt;

use tracing::field::{Field, Visit};
use tracing_subscriber::field::{MakeVisitor, VisitFmt, VisitOutput};
use tracing_subscriber::fmt::format::Writer;

/// The field formatter for text lines without colour.
pub struct TextFields;

impl<'a> MakeVisitor<Writer<'a>> for TextFields {
    type Visitor = TextVisitor<'a>;

    fn make_visitor(&self, target: Writer<'a>) -> Self::Visitor {
        TextVisitor {
            writer: target,
            first: true,
            result: Ok(()),
        }
    }
}

/// Writes one event's (or span's) fields.
pub struct TextVisitor<'a> {
    writer: Writer<'a>,
    first: bool,
    result: fmt::Result,
}

impl TextVisitor<'_> {
    /// The separator and `name=`, or `None` when the field is not written (metadata that
    /// `tracing-log` carries for records from the `log` crate, already in the line's target).
    fn start(&mut self, field: &Field) -> Option<&'static str> {
        let name = field.name();
        if self.result.is_err() || name.starts_with("log.") {
            return None;
        }
        if !self.first {
            self.result = self.writer.write_char(' ');
        }
        self.first = false;
        if name == "message" {
            return Some("message");
        }
        let name = name.strip_prefix("r#").unwrap_or(name);
        self.result = self
            .result
            .and_then(|()| self.writer.write_str(name))
            .and_then(|()| self.writer.write_char('='));
        Some(name)
    }
}

impl TextVisitor<'_> {
    fn record_integer(&mut self, field: &Field, value: impl itoa::Integer) {
        if self.start(field).is_none() {
            return;
        }
        let mut buf = itoa::Buffer::new();
        self.result = self
            .result
            .and_then(|()| self.writer.write_str(buf.format(value)));
    }
}

/// Whether `s` can be written between quotes as it is: printable ASCII without a quote or a
/// backslash (what `Debug` would write unchanged).
fn plain(s: &str) -> bool {
    s.bytes()
        .all(|b| (b' '..=b'~').contains(&b) && b != b'"' && b != b'\\')
}

/// Writes through to a line, passing each character that is not printable ASCII through
/// `char::escape_debug` (controls and invisible characters become `\n`, `\u{1b}`, `\u{85}`;
/// printable letters stay): text that cannot break a line or reach a terminal as a control
/// sequence, without an intermediate `String`.
struct Escaping<'a, 'w>(&'a mut Writer<'w>);

impl fmt::Write for Escaping<'_, '_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let mut rest = s;
        while let Some(at) = rest.find(|c: char| !(' '..='~').contains(&c)) {
            self.0.write_str(&rest[..at])?;
            let mut chars = rest[at..].chars();
            if let Some(c) = chars.next() {
                for e in c.escape_debug() {
                    self.0.write_char(e)?;
                }
            }
            rest = chars.as_str();
        }
        self.0.write_str(rest)
    }
}

impl Visit for TextVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        let Some(name) = self.start(field) else {
            return;
        };
        self.result = self.result.and_then(|()| {
            if name == "message" {
                fmt::Write::write_str(&mut Escaping(&mut self.writer), value)
            } else if plain(value) {
                self.writer.write_char('"')?;
                self.writer.write_str(value)?;
                self.writer.write_char('"')
            } else {
                write!(self.writer, "{value:?}")
            }
        });
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        if self.start(field).is_none() {
            return;
        }
        let mut buf = ryu::Buffer::new();
        self.result = self.result.and_then(|()| {
            self.writer.write_str(match value {
                v if v.is_finite() => buf.format_finite(v),
                v if v.is_nan() => "NaN",
                v if v > 0.0 => "inf",
                _ => "-inf",
            })
        });
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.record_integer(field, value);
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.record_integer(field, value);
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        if self.start(field).is_none() {
            return;
        }
        self.result = self
            .result
            .and_then(|()| self.writer.write_str(if value { "true" } else { "false" }));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if self.start(field).is_none() {
            return;
        }
        // A formatted message (`format_args!`) or a `Display`/`Debug` value: its text, with
        // control and non-ASCII characters escaped (quotes need no escape outside quotes).
        self.result = self.result.and_then(|()| {
            fmt::Write::write_fmt(&mut Escaping(&mut self.writer), format_args!("{value:?}"))
        });
    }
}

impl VisitOutput<fmt::Result> for TextVisitor<'_> {
    fn finish(self) -> fmt::Result {
        self.result
    }
}

impl VisitFmt for TextVisitor<'_> {
    fn writer(&mut self) -> &mut dyn fmt::Write {
        &mut self.writer
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use tracing_subscriber::fmt::MakeWriter;

    use super::*;

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .map_err(|_| std::io::ErrorKind::Other)?
                .write(buf)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Captured {
        type Writer = Captured;
        fn make_writer(&'a self) -> Self::Writer {
            self.clone()
        }
    }

    /// The line `emit` logs, without the time, through `TextFields` or the default fields.
    fn line(fast: bool, emit: impl FnOnce()) -> String {
        let out = Captured::default();
        let layer = tracing_subscriber::fmt()
            .with_writer(out.clone())
            .with_ansi(false)
            .without_time();
        if fast {
            tracing::subscriber::with_default(layer.fmt_fields(TextFields).finish(), emit);
        } else {
            tracing::subscriber::with_default(layer.finish(), emit);
        }
        let bytes = out.0.lock().expect("lock").clone();
        String::from_utf8(bytes).expect("utf-8")
    }

    #[test]
    fn plain_values_read_as_the_default_formatter_writes_them() {
        let emit = || {
            let ip: std::net::IpAddr = "10.1.2.3".parse().expect("ip");
            let none: Option<&str> = None;
            tracing::info!(
                target: "keygate::access",
                request_id = "0123abcd",
                client_ip = %ip,
                method = %"GET",
                path = "/v1/lookup",
                status = 200u16,
                delta = -3i64,
                ok = true,
                key_id = none,
                upstream_ms = 1.25f64,
                big = f64::INFINITY,
                small = f64::NEG_INFINITY,
                nan = f64::NAN,
                r#type = "x",
                "request"
            );
        };
        let fast = line(true, emit);
        assert_eq!(fast, line(false, emit));
        assert!(fast.contains(r#"request request_id="0123abcd" client_ip=10.1.2.3 method=GET path="/v1/lookup" status=200 delta=-3 ok=true upstream_ms=1.25 big=inf small=-inf nan=NaN type="x""#), "{fast}");
    }

    #[test]
    fn messages_with_quotes_read_as_before() {
        let emit = || tracing::warn!("config: route \"v1\" has no upstream \\ {}", 3);
        let fast = line(true, emit);
        assert_eq!(fast, line(false, emit));
        assert!(
            fast.contains(r#"config: route "v1" has no upstream \ 3"#),
            "{fast}"
        );
    }

    #[test]
    fn values_that_could_break_a_line_are_escaped() {
        let fast = line(true, || {
            tracing::info!(
                path = "/a\"b\\c\nd\u{1b}[31m\u{85}",
                error = %"bad\nthing",
                "two\nlines {}",
                "\u{1b}[2J"
            )
        });
        assert_eq!(fast.lines().count(), 1, "{fast}");
        assert!(
            !fast.contains('\u{1b}') && !fast.contains('\u{85}'),
            "{fast}"
        );
        assert!(
            fast.contains(
                r#"two\nlines \u{1b}[2J path="/a\"b\\c\nd\u{1b}[31m\u{85}" error=bad\nthing"#
            ),
            "{fast}"
        );
    }
}
