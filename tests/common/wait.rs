//! Waiting for something to happen by polling it, never by sleeping a fixed time: a slower
//! machine only makes the wait longer, not the test flaky.

use std::time::{Duration, Instant};

/// How often a condition is polled: short, so a test waits little past the moment it holds.
const POLL: Duration = Duration::from_millis(10);

/// Polls `f` until it is true (then `true`) or `timeout` passes (then `false`), for callers
/// that report the failure themselves (with the last response, say).
pub fn eventually(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(POLL);
    }
}

/// Polls `f` until it is true; panics naming `what` if `timeout` passes first.
#[track_caller]
pub fn wait_until(what: &str, timeout: Duration, f: impl FnMut() -> bool) {
    assert!(eventually(timeout, f), "timed out waiting for {what}");
}
