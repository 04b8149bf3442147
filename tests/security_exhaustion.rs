//! Resource exhaustion through the real binary (issue 10, items 5 and 6): a login flood must not
//! exhaust memory or starve the proxy, and slow clients must not hold connections (and file
//! descriptors) forever.
//!
//! Clients bind distinct loopback source addresses (127.0.0.x) so keygate sees distinct client
//! IPs, as it would from the network.

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// The login flood saturates every core on purpose; the slow-client test measures whether real
/// requests still get answers. Run side by side (the harness runs a file's tests in parallel)
/// the first would starve the second, so they take turns.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

const JWT_SECRET: &str = "test-jwt-secret-0123456789abcdefghijklmnop";

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

async fn connect_from(from: Ipv4Addr, to: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(IpAddr::V4(from), 0))?;
    socket.connect(to).await
}

/// A response read off a raw connection: status, lower-cased header lines, body.
#[derive(Debug)]
struct RawResp {
    status: u16,
    head: String,
    body: String,
}

impl RawResp {
    fn header(&self, name: &str) -> Option<&str> {
        let prefix = format!("{}:", name.to_ascii_lowercase());
        self.head.lines().find_map(|l| {
            l.to_ascii_lowercase()
                .starts_with(&prefix)
                .then(|| l[prefix.len()..].trim())
        })
    }
}

/// One HTTP/1.1 request from the client address `from`, `Connection: close`, read to the end.
async fn http_from(
    from: Ipv4Addr,
    to: SocketAddr,
    method: &str,
    path: &str,
    body: &str,
) -> std::io::Result<RawResp> {
    let mut s = connect_from(from, to).await?;
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await?;
    let text = String::from_utf8_lossy(&buf).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("no status line in {text:?}")))?;
    Ok(RawResp {
        status,
        head: head.to_string(),
        body: body.to_string(),
    })
}

/// A number from `/proc/<pid>/status` (`VmHWM` in kB, `Threads`...).
fn proc_status(pid: u32, field: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|rest| rest.trim_start_matches(':').split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no {field} in {status}"))
}

fn login_routes(secret: &std::path::Path) -> String {
    format!(
        r#"
[tokens]
secret = {{ file = "{secret}" }}

[[routes]]
name = "login"
path = "/api/auth/login"
methods = ["POST"]
local = "login"
auth = "none"
ip_rate_limit = {{ requests = 100000, per_seconds = 1 }}

[[routes]]
name = "open"
path = "/open/{{*rest}}"
upstream = "api"
auth = "none"
"#,
        secret = secret.display()
    )
}

/// 256 concurrent logins (distinct emails, 64 client IPs), each client logging in `ROUNDS` times
/// in a row so the flood lasts long enough to measure, are bounded by the password hasher:
/// keygate's memory stays low, an open route keeps answering fast, the excess gets 503
/// `overloaded` with `Retry-After`, and a login afterwards works.
const ROUNDS: u32 = 8;

#[test]
fn a_login_flood_cannot_exhaust_memory_or_starve_the_proxy() {
    let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let echo = Echo::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let secret = dir.path().join("jwt_secret");
    std::fs::write(&secret, JWT_SECRET).expect("secret");
    let mut o = Options::new(echo.addr);
    o.routes_toml = login_routes(&secret);
    let kg = Keygate::start(&o);
    let pid = kg.pid();
    let account = kg.create_account("acme");
    admin_ok(
        &kg,
        "POST",
        "/admin/v1/users",
        Some(
            json!({"account_id": account, "email": "real@example.com", "password": "password123"}),
        ),
    );

    let public = kg.public;
    let rt = runtime();
    let (logins, latencies) = rt.block_on(async move {
        // 0: before the flood (the baseline), 1: during it, 2: over.
        let phase = std::sync::Arc::new(std::sync::atomic::AtomicU8::new(0));
        // The prober has its own thread and runtime, so the flood's client tasks cannot delay
        // it: what it measures is keygate.
        let prober = {
            let phase = phase.clone();
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("prober runtime");
                rt.block_on(async move {
                    let mut latencies = (Vec::new(), Vec::new());
                    loop {
                        let now = phase.load(std::sync::atomic::Ordering::SeqCst);
                        if now == 2 {
                            break;
                        }
                        let start = Instant::now();
                        let from = Ipv4Addr::new(127, 0, 0, 2);
                        let r = http_from(from, public, "GET", "/open/ping", "")
                            .await
                            .expect("open route answers during the flood");
                        assert_eq!(r.status, 200, "{r:?}");
                        if now == 0 {
                            latencies.0.push(start.elapsed());
                        } else {
                            latencies.1.push(start.elapsed());
                        }
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                    latencies
                })
            })
        };
        // Let the prober measure the idle baseline first.
        tokio::time::sleep(Duration::from_millis(500)).await;
        phase.store(1, std::sync::atomic::Ordering::SeqCst);
        let tasks: Vec<_> = (0..256u32)
            .map(|i| {
                tokio::spawn(async move {
                    let from = Ipv4Addr::new(127, 0, 1, 10 + (i % 64) as u8);
                    let mut answers = Vec::new();
                    for round in 0..ROUNDS {
                        // Spread over 40 ms, so keygate sees 256 clients at once, not 256
                        // connections in the same microsecond (a debug build's single proxy
                        // thread takes a few hundred ms to parse such a burst on a loaded box).
                        let jitter = (i * 7919 + round * 104_729) % 40;
                        tokio::time::sleep(Duration::from_millis(u64::from(jitter))).await;
                        let body = json!({"email": format!("nobody-{i}-{round}@example.com"),
                                          "password": format!("wrong-password-{i}")});
                        let path = "/api/auth/login";
                        answers
                            .push(http_from(from, public, "POST", path, &body.to_string()).await);
                    }
                    answers
                })
            })
            .collect();
        let mut logins = Vec::new();
        for t in tasks {
            for answer in t.await.expect("task") {
                logins.push(answer.expect("login gets an answer"));
            }
        }
        phase.store(2, std::sync::atomic::Ordering::SeqCst);
        (logins, prober.join().expect("prober"))
    });

    let hwm = proc_status(pid, "VmHWM") / 1024.0;
    assert!(hwm < 200.0, "keygate's peak RSS was {hwm:.0} MiB");

    let (mut baseline, mut latencies) = latencies;
    baseline.sort();
    latencies.sort();
    assert!(latencies.len() >= 5, "{latencies:?}");
    let p99 = |l: &[Duration]| l[(l.len() * 99).div_ceil(100) - 1];
    // The issue's bound, p99 under 50 ms, holds for a release build. A debug build spends about
    // a millisecond of its single proxy thread on each login connection, and on the project's
    // shared 2-core box (load ~12) the flood's 2,000 connections queue the probes behind them
    // for a few hundred ms; the debug bound still catches a starved proxy (seconds).
    let bound = if cfg!(debug_assertions) {
        Duration::from_secs(2)
    } else {
        Duration::from_millis(50)
    };
    assert!(
        p99(&latencies) < bound,
        "open route p99 {:?} (idle: {:?}) over {} probes: {latencies:?}",
        p99(&latencies),
        baseline.last(),
        latencies.len()
    );
    let threads = proc_status(pid, "Threads");
    eprintln!(
        "peak RSS {hwm:.0} MiB, {threads} threads, open route p99 {:?} (idle max {:?}), {} of {} logins 503",
        p99(&latencies),
        baseline.last(),
        logins.iter().filter(|r| r.status == 503).count(),
        logins.len()
    );
    assert!(
        threads < 64.0,
        "keygate runs {threads} threads after the flood"
    );

    let overloaded: Vec<_> = logins.iter().filter(|r| r.status == 503).collect();
    assert!(!overloaded.is_empty(), "no login was refused as overloaded");
    for r in &overloaded {
        assert!(r.body.contains("overloaded"), "{r:?}");
        let retry: u64 = r
            .header("retry-after")
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("503 without Retry-After: {r:?}"));
        assert!(retry >= 1, "{r:?}");
    }
    for r in &logins {
        assert!(matches!(r.status, 401 | 503), "{r:?}");
    }
    assert!(
        metric(
            &kg,
            "keygate_requests_total",
            &[("route", "login"), ("outcome", "overloaded")]
        ) >= overloaded.len() as f64
    );
    assert!(!kg.log().contains("panicked"), "{}", kg.log());

    let r = request(
        "POST",
        &kg.url("/api/auth/login"),
        &[],
        Some(&json!({"email": "real@example.com", "password": "password123"})),
    );
    assert_eq!(r.status, 200, "{}", r.body);
}

/// A connection that trickles its request header is closed at the header deadline, and one
/// client IP cannot hold more than its share of connections: with keygate at 200 file
/// descriptors, 300 tricklers from one IP do not stop another client's requests.
#[test]
fn slow_clients_cannot_hold_connections_or_exhaust_file_descriptors() {
    let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let echo = Echo::start();
    let mut o = Options::new(echo.addr);
    o.nofile = Some(200);
    o.server_toml = "request_header_timeout_seconds = 3\nmax_connections_per_ip = 100\n".into();
    let kg = Keygate::start(&o);
    let public = kg.public;
    let trickler_ip = Ipv4Addr::new(127, 0, 0, 1);
    let client_ip = Ipv4Addr::new(127, 0, 0, 2);

    let rt = runtime();
    let closed_after = rt.block_on(async move {
        let started = Instant::now();
        let tricklers: Vec<_> = (0..300)
            .map(|_| {
                tokio::spawn(async move {
                    // Some connects may be refused outright; that counts as closed at once.
                    let Ok(mut s) = connect_from(trickler_ip, public).await else {
                        return Duration::ZERO;
                    };
                    let opened = Instant::now();
                    if s.write_all(b"GET /open/slow HTTP/1.1\r\nX-Slow: ")
                        .await
                        .is_err()
                    {
                        return opened.elapsed();
                    }
                    let mut buf = [0u8; 512];
                    loop {
                        tokio::select! {
                            r = s.read(&mut buf) => match r {
                                Ok(0) | Err(_) => return opened.elapsed(),
                                // A response (408/400) is fine too; wait for the close.
                                Ok(_) => {}
                            },
                            _ = tokio::time::sleep(Duration::from_millis(300)) => {
                                if s.write_all(b"x").await.is_err() {
                                    return opened.elapsed();
                                }
                            }
                        }
                        if opened.elapsed() > Duration::from_secs(20) {
                            return Duration::MAX;
                        }
                    }
                })
            })
            .collect();
        // Let every trickler connect and start trickling.
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(started.elapsed() < Duration::from_secs(3));
        for i in 0..20 {
            let r = tokio::time::timeout(
                Duration::from_secs(5),
                http_from(client_ip, public, "GET", "/open/real", ""),
            )
            .await;
            match r {
                Ok(Ok(r)) => assert_eq!(r.status, 200, "request {i}: {r:?}"),
                Ok(Err(e)) => panic!("request {i} during the trickle failed: {e}"),
                Err(_) => panic!("request {i} during the trickle got no answer in 5 s"),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let mut closed_after = Vec::new();
        for t in tricklers {
            closed_after.push(t.await.expect("trickler"));
        }
        closed_after
    });

    // Every trickler is closed: those over the per-IP cap at once, the others at the 3 s
    // header deadline (with slack for a loaded machine), never left open.
    let late: Vec<_> = closed_after
        .iter()
        .filter(|d| **d > Duration::from_secs(8))
        .collect();
    assert!(
        late.is_empty(),
        "{} tricklers held open: {late:?}",
        late.len()
    );
    let at_deadline = closed_after
        .iter()
        .filter(|d| **d >= Duration::from_millis(2500))
        .count();
    // The ones within the cap live to the deadline. (Timing alone cannot bound it from above:
    // on a loaded machine a trickler refused at accept may see its close late; the metrics
    // below count what keygate did.)
    assert!(
        at_deadline >= 90,
        "{at_deadline} tricklers lived to the header deadline"
    );
    // What keygate did: every trickler that reached it was closed, over the cap at once or at
    // the deadline. (A loaded machine may accept late, after earlier tricklers left the cap,
    // so the split between the two is not fixed; their sum is.)
    let refused = metric(
        &kg,
        "keygate_connections_closed_total",
        &[("reason", "per_ip_limit")],
    );
    let timed_out = metric(
        &kg,
        "keygate_connections_closed_total",
        &[("reason", "header_timeout")],
    );
    let reached = closed_after.iter().filter(|d| !d.is_zero()).count() as f64;
    assert!(refused >= 1.0, "the per-IP cap never acted");
    assert!(
        timed_out >= 90.0,
        "{timed_out} closed at the header deadline"
    );
    assert!(
        refused + timed_out >= reached - 5.0,
        "{refused} refused + {timed_out} timed out, but {reached} tricklers connected"
    );
    // A request still works afterwards.
    assert_eq!(get(&kg.url("/open/after"), &[]).status, 200);
}
