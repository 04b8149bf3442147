//! The header deadline and the per-IP cap, over an in-memory stream with paused time.

use std::net::{IpAddr, Ipv4Addr};

use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

use super::*;

const TIMEOUT: Duration = Duration::from_millis(100);

fn limits(max_per_ip: usize) -> Arc<Limits> {
    limits_trusting(max_per_ip, &[])
}

fn limits_trusting(max_per_ip: usize, trusted: &[&str]) -> Arc<Limits> {
    Arc::new(Limits {
        open: dashmap::DashMap::new(),
        max_per_ip,
        header_timeout: TIMEOUT,
        metrics: Arc::new(Metrics::new(&[])),
        trusted: TrustedProxies::new(
            trusted
                .iter()
                .filter_map(|t| TrustedProxies::parse_entry(t))
                .collect(),
        ),
        proxy_protocol: false,
    })
}

/// keygate's side (the guarded stream) and the client's side of one connection.
fn connection() -> (DeadlineStream, DuplexStream) {
    let (server, client) = tokio::io::duplex(4096);
    let slot = limits(1).take(None).expect("slot");
    (DeadlineStream::new(Box::new(server), slot), client)
}

/// Reads until an error; the time it took.
async fn read_until_error(s: &mut DeadlineStream) -> (Duration, std::io::ErrorKind) {
    let start = Instant::now();
    let mut buf = [0u8; 64];
    loop {
        match s.read(&mut buf).await {
            Ok(0) => panic!("EOF before the deadline"),
            Ok(_) => {}
            Err(e) => return (start.elapsed(), e.kind()),
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_trickled_header_is_cut_at_the_deadline() {
    let (mut server, mut client) = connection();
    let trickle = tokio::spawn(async move {
        let _ = client.write_all(b"GET / HTTP/1.1\r\n").await;
        for _ in 0..50 {
            tokio::time::sleep(Duration::from_millis(10)).await;
            if client.write_all(b"x").await.is_err() {
                break;
            }
        }
        client
    });
    let (took, kind) = read_until_error(&mut server).await;
    assert_eq!(kind, std::io::ErrorKind::TimedOut);
    assert!((TIMEOUT..TIMEOUT * 2).contains(&took), "{took:?}");
    drop(server);
    let _ = trickle.await;
}

#[tokio::test(start_paused = true)]
async fn a_complete_header_disarms_until_the_next_request_starts() {
    let (mut server, mut client) = connection();
    client
        .write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .expect("write");
    let mut buf = [0u8; 64];
    let n = server.read(&mut buf).await.expect("read");
    assert!(n > 0);
    // Handling the request may take longer than the header deadline (a slow upstream).
    let idle = tokio::time::timeout(TIMEOUT * 3, server.read(&mut buf)).await;
    assert!(idle.is_err(), "a read while handling timed out: {idle:?}");
    // A 1xx does not end the request; the final status line does.
    server
        .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
        .await
        .expect("write");
    let idle = tokio::time::timeout(TIMEOUT * 3, server.read(&mut buf)).await;
    assert!(idle.is_err(), "a read after a 100 timed out: {idle:?}");
    server
        .write_all(b"HTTP/1.1 200 OK\r\n\r\n")
        .await
        .expect("write");
    // A kept-alive connection may idle; the next request's deadline starts at its first byte.
    tokio::time::sleep(TIMEOUT * 3).await;
    client
        .write_all(b"GET /next HTTP/1.1\r\n")
        .await
        .expect("write");
    let (took, kind) = read_until_error(&mut server).await;
    assert_eq!(kind, std::io::ErrorKind::TimedOut);
    assert!(took <= TIMEOUT + Duration::from_millis(10), "{took:?}");
}

#[tokio::test]
async fn the_header_end_is_found_across_reads() {
    let (mut server, _client) = connection();
    for part in [&b"GET / HTTP/1.1\r"[..], b"\nHost: a\r\n\r", b"\n"] {
        assert!(matches!(server.phase, Phase::Header { .. }));
        server.saw_read(part);
    }
    assert!(matches!(server.phase, Phase::Handling));
    let (mut server, _client) = connection();
    server.saw_read(b"GET / HTTP/1.1\r\n\r\r\n\n");
    assert!(matches!(server.phase, Phase::Header { .. }));
    server.saw_read(b"\r\r\n\r\n");
    assert!(matches!(server.phase, Phase::Handling));
}

#[test]
fn one_ip_holds_at_most_its_cap() {
    let limits = limits(2);
    let a = Some(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)));
    let b = Some(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)));
    let first = limits.take(a).expect("first");
    let second = limits.take(a).expect("second");
    assert!(limits.take(a).is_none(), "a third from the same IP");
    let other = limits.take(b).expect("another IP is not affected");
    drop(first);
    let again = limits.take(a).expect("a closed connection frees its slot");
    drop((second, other, again));
    assert!(limits.open.is_empty());
}

#[test]
fn trusted_proxies_are_not_capped() {
    let limits = limits_trusting(1, &["10.0.0.0/8"]);
    let proxy = Some(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 5)));
    let client = Some(IpAddr::V4(Ipv4Addr::new(198, 51, 100, 7)));
    let proxied: Vec<_> = (0..5)
        .map(|_| {
            limits
                .take(proxy)
                .expect("a trusted proxy is never at the cap")
        })
        .collect();
    assert_eq!(proxied.len(), 5);
    assert!(limits.open.is_empty(), "trusted proxies are not counted");
    let _one = limits.take(client).expect("first");
    assert!(
        limits.take(client).is_none(),
        "an untrusted client is capped"
    );
}

/// The byte-at-a-time scan `header_end` replaced: the state after each byte.
fn scan(mut matched: usize, bytes: &[u8]) -> Result<(), usize> {
    for &b in bytes {
        matched = if b == HEADER_END[matched] {
            matched + 1
        } else if b == b'\r' {
            1
        } else {
            0
        };
        if matched == HEADER_END.len() {
            return Ok(());
        }
    }
    Err(matched)
}

proptest::proptest! {
    /// However a header is cut into reads, the search finds its end where the scan does.
    #[test]
    fn header_end_agrees_with_a_byte_scan(
        data in proptest::collection::vec(
            proptest::sample::select(vec![b'\r', b'\n', b'a', b':']), 0..40),
        cuts in proptest::collection::vec(0usize..40, 0..6),
    ) {
        let mut cuts: Vec<usize> = cuts.into_iter().filter(|&c| c <= data.len()).collect();
        cuts.push(0);
        cuts.push(data.len());
        cuts.sort_unstable();
        let (mut fast, mut slow) = (Err(0), Err(0));
        for w in cuts.windows(2) {
            let chunk = &data[w[0]..w[1]];
            if let Err(m) = fast {
                fast = header_end(m, chunk);
            }
            if let Err(m) = slow {
                slow = scan(m, chunk);
            }
        }
        proptest::prop_assert_eq!(fast, slow);
    }
}
