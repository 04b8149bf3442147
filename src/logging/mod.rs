//! Log lines: filtering (`RUST_LOG`, pingora's cap, the access switch), format, and the writer.
//!
//! Lines are written by a thread of their own, never by the thread serving requests: a write to
//! stderr is a system call per line, and stderr is often a pipe to a container runtime or a log
//! shipper that can stall. Written in place, every access line cost the proxy thread a `write`
//! of its own, and a stalled reader stopped the data plane (tests/access_log.rs shows both
//! pipes: one never read, one closed). Queued instead (`tracing_appender`'s non-blocking writer), lines are
//! written in batches through one buffer; when the queue is full (the reader stalled for
//! [`QUEUED_LINES`] lines), new lines are dropped and counted
//! (`keygate_log_lines_dropped_total`) rather than holding requests back.
//!
//! What is lost: lines still queued when the process is killed (SIGKILL, a crash). A SIGTERM or
//! SIGINT stop writes them all out before exiting (see [`LogWriter`]).

mod clock;
mod text_fields;

use std::io::IsTerminal;
use std::sync::OnceLock;

use tracing_appender::non_blocking::{ErrorCounter, NonBlockingBuilder, WorkerGuard};

use crate::config::{LogFormat, LogSection};

/// Set to `1` to let pingora's own debug and trace lines through. They include raw request
/// headers of malformed requests, so API keys, tokens and passwords: the name says so.
pub const LOG_PINGORA_WITH_SECRETS: &str = "KEYGATE_LOG_PINGORA_WITH_SECRETS";

/// The target of the one-line-per-request access log (see `proxy::phases`).
pub const ACCESS_TARGET: &str = "keygate::access";

/// Lines held while stderr's reader is behind: a few seconds of access lines at tens of
/// thousands of requests per second, a few tens of MB at worst.
pub const QUEUED_LINES: usize = 131_072;

/// The bytes gathered before one write: the writer thread also writes whatever it has each time
/// the queue runs empty, so a line waits for the next one only while lines keep coming.
const WRITE_BUFFER: usize = 64 * 1024;

/// Lines dropped because the queue was full, for the metric.
static DROPPED: OnceLock<ErrorCounter> = OnceLock::new();

/// The log writer's thread: dropping it writes out every line still queued, then stops it.
/// Held by `serve` until keygate has stopped.
pub struct LogWriter {
    _guard: WorkerGuard,
}

/// Lines dropped so far because stderr's reader fell [`QUEUED_LINES`] behind.
pub fn dropped_lines() -> u64 {
    DROPPED.get().map_or(0, |c| c.dropped_lines() as u64)
}

/// `RUST_LOG` (default `info`) for keygate's own lines. pingora's are capped at `info` whatever
/// the filter says, unless [`LOG_PINGORA_WITH_SECRETS`] is `1`: at `debug` pingora logs the raw
/// header bytes of requests it cannot parse, credentials included.
///
/// `[log] format` picks text (colour only when stderr is a terminal, so log files get no escape
/// codes) or one JSON object per line; `[log] access = false` drops the `keygate::access` lines.
pub fn init(log: &LogSection) -> LogWriter {
    use tracing_subscriber::prelude::*;
    use tracing_subscriber::Layer;

    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // The outermost filter's hint is what the whole layer reports, and it sets the `log`
    // crate's max level too: without it every debug and trace record pingora makes (several per
    // request) would be built and offered to the subscriber only to be dropped.
    let hint = filter
        .max_level_hint()
        .unwrap_or(tracing_subscriber::filter::LevelFilter::TRACE);
    let access = log.access;
    let access_switch =
        tracing_subscriber::filter::filter_fn(move |meta| access || meta.target() != ACCESS_TARGET)
            .with_max_level_hint(hint);
    let pingora_secrets = std::env::var(LOG_PINGORA_WITH_SECRETS).is_ok_and(|v| v == "1");
    let pingora_cap = tracing_subscriber::filter::filter_fn(move |meta| {
        pingora_secrets
            || *meta.level() <= tracing::Level::INFO
            || !meta.target().starts_with("pingora")
    });
    let ansi = std::io::stderr().is_terminal();
    let (writer, guard) = NonBlockingBuilder::default()
        .lossy(true)
        .buffered_lines_limit(QUEUED_LINES)
        .thread_name("keygate-log")
        .finish(std::io::BufWriter::with_capacity(
            WRITE_BUFFER,
            std::io::stderr(),
        ));
    let _ = DROPPED.set(writer.error_counter());
    let lines = match log.format {
        LogFormat::Text if ansi => tracing_subscriber::fmt::layer()
            .with_timer(clock::CachedSecondClock)
            .with_writer(writer)
            .with_ansi(true)
            .boxed(),
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_timer(clock::CachedSecondClock)
            .with_writer(writer)
            .with_ansi(false)
            .fmt_fields(text_fields::TextFields)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .with_timer(clock::CachedSecondClock)
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .with_writer(writer)
            .boxed(),
    };
    let _ = tracing_subscriber::registry()
        .with(
            lines
                .with_filter(filter)
                .with_filter(pingora_cap)
                .with_filter(access_switch),
        )
        .try_init();
    if pingora_secrets {
        tracing::warn!(
            "{LOG_PINGORA_WITH_SECRETS}=1: pingora's debug lines may carry API keys and tokens"
        );
    }
    LogWriter { _guard: guard }
}
