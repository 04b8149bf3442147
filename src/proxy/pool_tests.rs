//! Selection without sockets: passive ejection, the backends a request already tried, and the
//! fallback when every backend is out.

use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::config::{PoolPolicy, UpstreamTimeouts};

fn pool(balance: Balance, ejection: Option<Duration>) -> Pool {
    let addrs: Vec<SocketAddr> = (1..=3)
        .map(|i| format!("10.0.0.{i}:80").parse().expect("addr"))
        .collect();
    let upstream = Arc::new(Upstream {
        name: "api".into(),
        addresses: addrs.iter().map(ToString::to_string).collect(),
        tls: false,
        sni: String::new(),
        timeouts: UpstreamTimeouts {
            connect: Duration::from_secs(5),
            read: Duration::from_secs(60),
            write: Duration::from_secs(60),
            idle: Duration::from_secs(60),
            total: None,
        },
        retries: 1,
        pool: PoolPolicy {
            balance,
            health_check: None,
            passive_ejection: ejection,
        },
        verify: true,
        ca: None,
        protocol: crate::config::UpstreamProtocol::H1,
    });
    let metrics = crate::metrics::Metrics::new(&[]);
    Pool::new(
        upstream,
        &addrs,
        |a| HttpPeer::new(a, false, String::new()),
        &metrics,
    )
    .expect("pool")
}

fn refused() -> Box<Error> {
    Error::explain(ErrorType::ConnectRefused, "test")
}

#[test]
fn round_robin_visits_every_backend() {
    let p = pool(Balance::RoundRobin, None);
    let mut seen: Vec<usize> = (0..6).filter_map(|_| p.select(b"", 0)).collect();
    seen.sort_unstable();
    assert_eq!(seen, [0, 0, 1, 1, 2, 2]);
}

#[test]
fn a_key_keeps_its_backend_and_a_retry_takes_another() {
    let p = pool(Balance::ConsistentHash, None);
    let first = p.select(b"key_1", 0).expect("backend");
    for _ in 0..10 {
        assert_eq!(p.select(b"key_1", 0), Some(first));
    }
    let retry = p.select(b"key_1", 1 << first).expect("another backend");
    assert_ne!(retry, first);
    assert_eq!(p.select(b"key_1", 0b111), None, "every backend was tried");
}

#[test]
fn an_ejected_backend_is_skipped_until_every_other_is_out() {
    let p = pool(Balance::ConsistentHash, Some(Duration::from_secs(60)));
    let first = p.select(b"key_1", 0).expect("backend");
    p.eject(first, &refused());
    let moved = p.select(b"key_1", 0).expect("backend");
    assert_ne!(moved, first, "an ejected backend is skipped");
    for i in 0..3 {
        p.eject(i, &refused());
    }
    // All out: one is tried anyway rather than none.
    assert!(p.select(b"key_1", 0).is_some());
}

#[test]
fn without_passive_ejection_a_failure_changes_nothing() {
    let p = pool(Balance::ConsistentHash, None);
    let first = p.select(b"key_1", 0).expect("backend");
    p.eject(first, &refused());
    assert_eq!(p.select(b"key_1", 0), Some(first));
}

#[test]
fn an_ejection_ends() {
    let p = pool(Balance::ConsistentHash, Some(Duration::from_millis(1)));
    let first = p.select(b"key_1", 0).expect("backend");
    p.eject(first, &refused());
    // Polled: the 1 ms ejection is over at the latest a few polls later.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while p.select(b"key_1", 0) != Some(first) {
        assert!(
            std::time::Instant::now() < deadline,
            "the backend returns once its ejection is over"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}
