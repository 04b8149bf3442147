//! SIGTERM drains without dropping a request: `/readyz` fails at once, the listener keeps
//! accepting and serving for `drain_seconds` (answers close their connections so keep-alive
//! clients move on), then keygate stops and exits 0. SIGINT stops at once.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;

/// One request on a fresh connection: whether a whole 200 came back.
fn fresh_connection_ok(to: SocketAddr) -> bool {
    let Ok(mut s) = TcpStream::connect(to) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let sent = s.write_all(b"GET /open/new HTTP/1.1\r\nHost: kg\r\nConnection: close\r\n\r\n");
    let mut answer = Vec::new();
    sent.is_ok() && s.read_to_end(&mut answer).is_ok() && answer.starts_with(b"HTTP/1.1 200")
}

struct Tally {
    ok: AtomicUsize,
    failed: AtomicUsize,
    closed_by_server: AtomicUsize,
}

#[test]
fn sigterm_drains_without_a_failed_request_then_exits_zero() {
    let echo = Echo::start();
    let mut opts = Options::new(echo.addr);
    opts.server_toml = "drain_seconds = 2\n".into();
    let mut kg = Keygate::start(&opts);
    let public = kg.public;
    let drain = Duration::from_secs(2);

    let stop = Arc::new(AtomicBool::new(false));
    let fresh = Arc::new(Tally {
        ok: AtomicUsize::new(0),
        failed: AtomicUsize::new(0),
        closed_by_server: AtomicUsize::new(0),
    });
    let kept = Arc::new(Tally {
        ok: AtomicUsize::new(0),
        failed: AtomicUsize::new(0),
        closed_by_server: AtomicUsize::new(0),
    });
    let new_connections = {
        let (stop, tally) = (stop.clone(), fresh.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let slot = if fresh_connection_ok(public) {
                    &tally.ok
                } else {
                    &tally.failed
                };
                slot.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };
    let keep_alive = {
        let (stop, tally) = (stop.clone(), kept.clone());
        let url = kg.url("/open/kept");
        std::thread::spawn(move || {
            // One agent: its connection is reused until the server closes it.
            let agent: ureq::Agent = ureq::Agent::config_builder()
                .http_status_as_error(false)
                .timeout_global(Some(Duration::from_secs(5)))
                .build()
                .into();
            while !stop.load(Ordering::Relaxed) {
                match agent.get(&url).call() {
                    Ok(r) if r.status() == 200 => {
                        tally.ok.fetch_add(1, Ordering::Relaxed);
                        let close = r
                            .headers()
                            .get("connection")
                            .and_then(|v| v.to_str().ok())
                            .is_some_and(|v| v.eq_ignore_ascii_case("close"));
                        if close {
                            tally.closed_by_server.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    _ => {
                        tally.failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };

    wait_until("traffic before the signal", Duration::from_secs(10), || {
        fresh.ok.load(Ordering::Relaxed) > 5 && kept.ok.load(Ordering::Relaxed) > 5
    });
    assert_eq!(get(&kg.ops_url("/readyz"), &[]).status, 200);
    let before = (
        fresh.ok.load(Ordering::Relaxed),
        kept.ok.load(Ordering::Relaxed),
    );
    kg.signal("-TERM");
    let signalled = Instant::now();
    wait_until("/readyz to fail", Duration::from_secs(1), || {
        get(&kg.ops_url("/readyz"), &[]).status == 503
    });

    // Both clients keep going until just before the drain ends.
    while signalled.elapsed() < drain - Duration::from_millis(400) {
        std::thread::sleep(Duration::from_millis(20));
    }
    stop.store(true, Ordering::Relaxed);
    new_connections.join().expect("new-connection client");
    keep_alive.join().expect("keep-alive client");

    for (what, tally, was) in [
        ("new connections", &fresh, before.0),
        ("keep-alive", &kept, before.1),
    ] {
        assert_eq!(
            tally.failed.load(Ordering::Relaxed),
            0,
            "{what}: failed requests"
        );
        assert!(
            tally.ok.load(Ordering::Relaxed) > was + 10,
            "{what}: served during the drain"
        );
    }
    assert!(
        kept.closed_by_server.load(Ordering::Relaxed) > 0,
        "answers during the drain close their connection"
    );

    // Then it stops by itself and exits 0, within the drain plus the in-flight timeout (1 s in
    // the harness), with slack for a loaded machine.
    let status = kg
        .wait_exit(Duration::from_secs(10))
        .unwrap_or_else(|| panic!("still running 10 s after SIGTERM:\n{}", kg.log()));
    assert!(status.success(), "exit status {status}:\n{}", kg.log());
    assert!(
        signalled.elapsed() >= drain,
        "stopped before the drain was over"
    );
    assert!(TcpStream::connect(public).is_err(), "still accepting");
}

#[test]
fn sigint_stops_at_once_even_while_draining() {
    let echo = Echo::start();
    let mut opts = Options::new(echo.addr);
    opts.server_toml = "drain_seconds = 60\n".into();
    let mut kg = Keygate::start(&opts);
    kg.signal("-TERM");
    wait_until("/readyz to fail", Duration::from_secs(2), || {
        get(&kg.ops_url("/readyz"), &[]).status == 503
    });
    // Still serving during the drain.
    assert_eq!(get(&kg.url("/open/x"), &[]).status, 200);
    let signalled = Instant::now();
    kg.signal("-INT");
    let status = kg
        .wait_exit(Duration::from_secs(10))
        .unwrap_or_else(|| panic!("SIGINT did not stop keygate:\n{}", kg.log()));
    assert!(
        signalled.elapsed() < Duration::from_secs(10),
        "{:?}",
        signalled.elapsed()
    );
    let _ = status;
}
