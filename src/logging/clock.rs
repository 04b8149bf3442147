//! The time at the start of each log line, as tracing-subscriber's default writes it
//! (`2026-12-05T01:33:42.051020Z`, RFC 3339, UTC, microseconds).
//!
//! Why by hand: the default converts the time to a calendar date and formats seven numbers through
//! `fmt` for every line, about 2,400 instructions on each access line. Here the date and time to
//! the second are formatted once per second per thread (by chrono) and reused; each line adds
//! only its microseconds.

use std::cell::RefCell;
use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::FormatTime;

/// The line timer: UTC, microseconds, the second's text cached per thread.
pub struct CachedSecondClock;

thread_local! {
    /// The last second formatted on this thread, and its text up to the seconds.
    static SECOND: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
}

impl FormatTime for CachedSecondClock {
    fn format_time(&self, w: &mut Writer<'_>) -> fmt::Result {
        write_time(w, SystemTime::now())
    }
}

/// Writes `now` as `YYYY-MM-DDTHH:MM:SS.ffffffZ`.
fn write_time(w: &mut impl fmt::Write, now: SystemTime) -> fmt::Result {
    // A clock before 1970 is written as 1970: log lines are not where to find that out.
    let since_epoch = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let seconds = since_epoch.as_secs();
    SECOND.with(|cached| {
        let mut cached = cached.borrow_mut();
        if cached.0 != seconds {
            cached.1.clear();
            let when = i64::try_from(seconds)
                .ok()
                .and_then(|s| chrono::DateTime::from_timestamp(s, 0))
                .unwrap_or_default();
            fmt::Write::write_fmt(
                &mut cached.1,
                format_args!("{}", when.format("%Y-%m-%dT%H:%M:%S")),
            )?;
            cached.0 = seconds;
        }
        w.write_str(&cached.1)
    })?;
    // `.` and six digits, zero-padded, then `Z`.
    let mut frac = *b".000000Z";
    let mut micros = since_epoch.subsec_micros();
    for digit in frac[1..7].iter_mut().rev() {
        *digit = b'0' + (micros % 10) as u8;
        micros /= 10;
    }
    // ASCII digits, a dot and a letter: always UTF-8.
    w.write_str(std::str::from_utf8(&frac).map_err(|_| fmt::Error)?)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn text(since_epoch: Duration) -> String {
        let mut s = String::new();
        write_time(&mut s, UNIX_EPOCH + since_epoch).expect("write");
        s
    }

    #[test]
    fn times_read_as_rfc3339_with_microseconds() {
        assert_eq!(text(Duration::ZERO), "1970-01-01T00:00:00.000000Z");
        assert_eq!(
            text(Duration::new(1_796_434_422, 51_020_999)),
            "2026-12-05T01:33:42.051020Z"
        );
        // The next second on the same thread is formatted again, not reused.
        assert_eq!(
            text(Duration::new(1_796_434_423, 7_000)),
            "2026-12-05T01:33:43.000007Z"
        );
        // A leap day.
        assert_eq!(
            text(Duration::new(1_709_208_000, 999_999_000)),
            "2024-02-29T12:00:00.999999Z"
        );
    }
}
