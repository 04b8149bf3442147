//! An upstream with several addresses is a pool: round robin spreads requests, consistent
//! hashing keeps each key on one backend, an active health check takes a dead backend out (then
//! no request fails) and brings it back, a backend that refuses a connection is retried around
//! for idempotent methods only, and a total deadline answers 504. Each echo upstream says which
//! one answered (`"server"`), and counts what it received.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use serde_json::json;

const WAIT: Duration = Duration::from_secs(30);

/// keygate whose `[upstreams.pool]` is `pool_toml`, on route `/pool/...` (key needed) and
/// `/anon/...` (no key), with one key.
fn start(pool_toml: &str) -> (Keygate, String, String) {
    // The default `api` upstream is never called here.
    let mut opts = Options::new("127.0.0.1:9".parse().expect("addr"));
    opts.routes_toml = format!(
        r#"
[upstreams.pool]
{pool_toml}

[[routes]]
name = "pool"
path = "/pool/{{*rest}}"
upstream = "pool"

[[routes]]
name = "anon"
path = "/anon/{{*rest}}"
upstream = "pool"
auth = "none"
"#
    );
    let kg = Keygate::start(&opts);
    let account = kg.create_account("acme");
    let (id, key) = kg.create_key(&account, json!({}));
    (kg, id, key)
}

fn addresses(addrs: &[SocketAddr]) -> String {
    let list: Vec<String> = addrs.iter().map(|a| format!("\"{a}\"")).collect();
    format!("addresses = [{}]", list.join(", "))
}

/// Which echo upstream answered.
fn server(r: &Resp) -> String {
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()["server"].as_str().expect("server").to_string()
}

fn healthy(kg: &Keygate, backend: SocketAddr) -> f64 {
    metric(
        kg,
        "keygate_upstream_backend_healthy",
        &[("upstream", "pool"), ("backend", &backend.to_string())],
    )
}

#[test]
fn round_robin_spreads_requests_over_the_backends() {
    let (a, b) = (Echo::start(), Echo::start());
    let (kg, _, key) = start(&addresses(&[a.addr, b.addr]));
    let mut by_server: BTreeMap<String, usize> = BTreeMap::new();
    for i in 0..20 {
        *by_server
            .entry(server(&call(&kg, &format!("/pool/{i}"), &key)))
            .or_default() += 1;
    }
    assert_eq!(by_server.len(), 2, "{by_server:?}");
    assert!(by_server.values().all(|n| *n >= 5), "{by_server:?}");
    assert_eq!(
        a.hits() + b.hits(),
        20,
        "each request reached one backend once"
    );
}

#[test]
fn consistent_hashing_keeps_each_keys_requests_on_one_backend() {
    let (a, b) = (Echo::start(), Echo::start());
    let (kg, _, _) = start(&format!(
        "{}\nbalance = \"consistent_hash\"",
        addresses(&[a.addr, b.addr])
    ));
    let account = kg.create_account("many keys");
    let mut used = BTreeSet::new();
    // 16 keys: the chance that all land on one of two backends is 2^-15.
    for k in 0..16 {
        let (_, key) = kg.create_key(&account, json!({ "name": format!("key {k}") }));
        let servers: BTreeSet<String> = (0..5)
            .map(|i| server(&call(&kg, &format!("/pool/{i}"), &key)))
            .collect();
        assert_eq!(servers.len(), 1, "key {k} went to {servers:?}");
        used.extend(servers);
    }
    assert_eq!(used.len(), 2, "keys spread over both backends: {used:?}");
    // Anonymous callers stick by client IP.
    let anon: BTreeSet<String> = (0..5)
        .map(|i| server(&get(&kg.url(&format!("/anon/{i}")), &[])))
        .collect();
    assert_eq!(anon.len(), 1, "{anon:?}");
}

/// Steady load through keygate while one backend dies and comes back: once its health check
/// took it out, no request fails (retries and passive ejection are off, so it is the health
/// check alone that protects); once it passes again, it gets traffic.
#[test]
fn a_dead_backend_leaves_after_its_health_check_and_comes_back() {
    let a = Echo::start();
    let b = Echo::start();
    let b_addr = b.addr;
    let (kg, _, key) = start(&format!(
        "{}\nretries = 0\npassive_ejection_ms = 0\n\
         health_check = {{ path = \"/healthz\", interval_ms = 100, timeout_ms = 1000, \
         healthy_threshold = 2, unhealthy_threshold = 2 }}",
        addresses(&[a.addr, b_addr])
    ));
    assert_eq!(healthy(&kg, b_addr), 1.0);

    // Phases: 0 both up, 1 b killed, 2 keygate saw it, 3 b restarted, 4 keygate saw it back.
    let phase = Arc::new(AtomicU8::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicUsize::new(0));
    let results: Arc<Mutex<Vec<(u8, u16, String)>>> = Arc::default();
    let load = {
        let (phase, stop, done, results) =
            (phase.clone(), stop.clone(), done.clone(), results.clone());
        let url = kg.url("/pool/load");
        let auth = bearer(&key);
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                let at = phase.load(Ordering::SeqCst);
                let r = get(&url, &[("authorization", &auth)]);
                let who = serde_json::from_str::<serde_json::Value>(&r.body)
                    .ok()
                    .and_then(|v| v["server"].as_str().map(str::to_string))
                    .unwrap_or_default();
                results.lock().expect("results").push((at, r.status, who));
                done.fetch_add(1, Ordering::SeqCst);
            }
        })
    };
    let served_by_b = || {
        let b = b_addr.to_string();
        results
            .lock()
            .expect("results")
            .iter()
            .filter(|(_, _, who)| *who == b)
            .count()
    };
    wait_until("b serves some of the load", WAIT, || served_by_b() > 0);

    drop(b);
    phase.store(1, Ordering::SeqCst);
    wait_until("the health check takes b out", WAIT, || {
        healthy(&kg, b_addr) == 0.0
    });
    phase.store(2, Ordering::SeqCst);
    let mark = done.load(Ordering::SeqCst);
    wait_until("50 requests while b is out", WAIT, || {
        done.load(Ordering::SeqCst) >= mark + 50
    });

    let mut back = None;
    wait_until("b's port to bind again", WAIT, || {
        back = TcpListener::bind(b_addr).ok().map(drop);
        back.is_some()
    });
    let b = Echo::start_on(b_addr);
    phase.store(3, Ordering::SeqCst);
    wait_until("the health check brings b back", WAIT, || {
        healthy(&kg, b_addr) == 1.0
    });
    phase.store(4, Ordering::SeqCst);
    let before = served_by_b();
    wait_until("b gets traffic again", WAIT, || served_by_b() > before);
    stop.store(true, Ordering::SeqCst);
    load.join().expect("load thread");

    let results = results.lock().expect("results");
    let failed_after_noticed: Vec<_> = results
        .iter()
        .filter(|(at, status, _)| *at >= 2 && *status != 200)
        .collect();
    assert!(
        failed_after_noticed.is_empty(),
        "requests failed after the health check took b out: {failed_after_noticed:?}"
    );
    let b_while_out = results
        .iter()
        .filter(|(at, _, who)| *at == 2 && *who == b_addr.to_string())
        .count();
    assert_eq!(b_while_out, 0, "b served while out of rotation");
    assert!(b.hits() > 0);
}

/// A backend that accepts a connection, reads one request, counts it and closes without an
/// answer: the request was sent, so it must not be retried.
struct Closer {
    addr: SocketAddr,
    received: Arc<AtomicUsize>,
}

impl Closer {
    fn start() -> Closer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let received = Arc::new(AtomicUsize::new(0));
        let counter = received.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                let mut buf = Vec::new();
                let mut chunk = [0u8; 1024];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut chunk) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                if buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    counter.fetch_add(1, Ordering::SeqCst);
                }
                drop(stream);
            }
        });
        Closer { addr, received }
    }
}

#[test]
fn only_idempotent_requests_that_could_not_connect_are_tried_again() {
    let echo = Echo::start();
    let down: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    let closer = Closer::start();
    let mut opts = Options::new(echo.addr);
    // Passive ejection off, so round robin alternates down / echo and every second request
    // meets the refused backend first.
    opts.routes_toml = format!(
        r#"
[upstreams.refusing]
addresses = ["{down}", "{echo}"]
passive_ejection_ms = 0

[upstreams.closing]
addresses = ["{closer}", "{echo}"]
passive_ejection_ms = 0

[[routes]]
name = "refusing"
path = "/refusing/{{*rest}}"
upstream = "refusing"

[[routes]]
name = "closing"
path = "/closing/{{*rest}}"
upstream = "closing"
"#,
        echo = echo.addr,
        closer = closer.addr,
    );
    let kg = Keygate::start(&opts);
    let account = kg.create_account("acme");
    let (_, key) = kg.create_key(&account, json!({}));

    // GET: a refused connection is tried again on the other backend; the echo gets each
    // request once.
    for i in 0..10 {
        let r = call(&kg, &format!("/refusing/{i}"), &key);
        assert_eq!(server(&r), echo.addr.to_string());
    }
    assert_eq!(echo.hits(), 10);

    // POST: not idempotent, so a refused connection is a 502 and not tried elsewhere.
    let mut refused = 0;
    for i in 0..10 {
        let r = call_with(
            &kg,
            "POST",
            &format!("/refusing/{i}"),
            Some(&key),
            Some(&json!({})),
        );
        match r.status {
            200 => {}
            _ => {
                assert_error(&r, 502, "upstream_unavailable");
                refused += 1;
            }
        }
    }
    assert!(
        refused >= 1,
        "round robin sent some POSTs to the refusing backend"
    );
    assert_eq!(
        echo.hits(),
        10 + (10 - refused),
        "a refused POST reached no backend"
    );

    // GET that reached a backend which then closed: sent, so not tried again.
    let before = echo.hits();
    let mut failed = 0;
    for i in 0..10 {
        let r = call(&kg, &format!("/closing/{i}"), &key);
        if r.status != 200 {
            assert_error(&r, 502, "upstream_unavailable");
            failed += 1;
        }
    }
    let received = closer.received.load(Ordering::SeqCst);
    assert!(
        failed >= 1 && received == failed,
        "{failed} failed, closer got {received}"
    );
    assert_eq!(
        echo.hits() - before + received,
        10,
        "each GET reached exactly one backend once"
    );
}

#[test]
fn a_total_deadline_answers_504_before_the_read_timeout() {
    // Accepts connections and never answers.
    let silent = TcpListener::bind("127.0.0.1:0").expect("bind");
    let silent_addr = silent.local_addr().expect("addr");
    // The client gives up after 10 s: without the deadline it would see no answer at all.
    let (kg, _, key) = start(&format!(
        "address = \"{silent_addr}\"\nread_timeout_ms = 60000\ntotal_timeout_ms = 300"
    ));
    let r = call(&kg, "/pool/x", &key);
    assert_error(&r, 504, "upstream_timeout");
    drop(silent);
}

/// A reload that keeps one pool and drops another: health checks go on for the kept one (a
/// rebuilt pool is checked from the start) and stop for the dropped one.
#[test]
fn a_reload_moves_the_health_checks_to_the_new_pools() {
    let (a, b, c, d) = (Echo::start(), Echo::start(), Echo::start(), Echo::start());
    let check = "health_check = { path = \"/healthz\", interval_ms = 100 }";
    let mut opts = Options::new(a.addr);
    let kept = format!(
        "[upstreams.pool]\n{}\n{check}\n",
        addresses(&[a.addr, b.addr])
    );
    let dropped = format!(
        "[upstreams.gone]\n{}\n{check}\n\n[[routes]]\nname = \"gone\"\npath = \"/gone/{{*rest}}\"\nupstream = \"gone\"\n",
        addresses(&[c.addr, d.addr])
    );
    opts.routes_toml = format!(
        "{kept}\n[[routes]]\nname = \"pool\"\npath = \"/pool/{{*rest}}\"\nupstream = \"pool\"\n\n{dropped}"
    );
    let kg = Keygate::start(&opts);
    kg.wait_for_log("send SIGHUP to reload", 1);
    wait_until("both pools are checked", WAIT, || {
        a.hits() >= 2 && c.hits() >= 2
    });

    // The `gone` upstream and its route leave; `pool` gets another interval, so it is rebuilt.
    let text = std::fs::read_to_string(&kg.config_path).expect("read config");
    let text = text
        .replace(&dropped, "")
        .replace("interval_ms = 100", "interval_ms = 50");
    std::fs::write(&kg.config_path, text).expect("write config");
    kg.signal("-HUP");
    kg.wait_for_log("configuration reloaded", 1);

    let (c_then, d_then, a_then) = (c.hits(), d.hits(), a.hits());
    wait_until("the kept pool is checked on", WAIT, || {
        a.hits() >= a_then + 10
    });
    // One check may have been in flight when the reload stopped them.
    assert!(c.hits() <= c_then + 1, "{} -> {}", c_then, c.hits());
    assert!(d.hits() <= d_then + 1, "{} -> {}", d_then, d.hits());
    assert_eq!(
        metric(
            &kg,
            "keygate_upstream_backend_healthy",
            &[("upstream", "gone")]
        ),
        0.0,
        "the dropped pool's gauges are gone"
    );
    assert_eq!(
        metric(
            &kg,
            "keygate_upstream_backend_healthy",
            &[("upstream", "pool")]
        ),
        2.0
    );
}

/// A backend that accepts connections and never answers its health check is taken out by the
/// check's timeout; requests then go to the others only.
#[test]
fn a_hung_backend_fails_its_health_check_by_timeout() {
    let echo = Echo::start();
    let silent = TcpListener::bind("127.0.0.1:0").expect("bind");
    let silent_addr = silent.local_addr().expect("addr");
    let (kg, _, key) = start(&format!(
        "{}\nretries = 0\nread_timeout_ms = 60000\n\
         health_check = {{ path = \"/healthz\", interval_ms = 100, timeout_ms = 200, \
         unhealthy_threshold = 2 }}",
        addresses(&[echo.addr, silent_addr])
    ));
    wait_until("the hung backend is out", WAIT, || {
        healthy(&kg, silent_addr) == 0.0
    });
    for i in 0..10 {
        assert_eq!(
            server(&call(&kg, &format!("/pool/{i}"), &key)),
            echo.addr.to_string()
        );
    }
    drop(silent);
}

/// A reload to an address that does not resolve is refused as a whole (pingora's
/// `HttpPeer::new` would panic on it); the running pool keeps serving.
#[test]
fn a_reload_to_an_unresolvable_address_is_refused_and_the_old_pool_serves() {
    let (a, b) = (Echo::start(), Echo::start());
    let (kg, _, key) = start(&addresses(&[a.addr, b.addr]));
    kg.wait_for_log("send SIGHUP to reload", 1);
    let text = std::fs::read_to_string(&kg.config_path).expect("read config");
    let text = text.replace(&format!("\"{}\"", b.addr), "\"no-such-host.invalid:80\"");
    std::fs::write(&kg.config_path, text).expect("write config");
    kg.signal("-HUP");
    kg.wait_for_log("configuration not reloaded", 1);
    assert!(kg.log().contains("no-such-host.invalid"), "{}", kg.log());
    let servers: BTreeSet<String> = (0..4)
        .map(|i| server(&call(&kg, &format!("/pool/{i}"), &key)))
        .collect();
    assert_eq!(servers.len(), 2, "{servers:?}");
}

/// Past the total deadline once the head went out, the body still arriving is cut off: the
/// client gets the status and a truncated body, not the whole of a slow answer.
#[test]
fn a_total_deadline_cuts_a_body_still_arriving() {
    use std::io::Write;
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let slow = listener.local_addr().expect("addr");
    // Answers at once with a 30-byte body, one byte every 100 ms (3 s in all).
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                let _ = stream.read(&mut buf);
                let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 30\r\n\r\n");
                for _ in 0..30 {
                    if stream.write_all(b"x").is_err() {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            });
        }
    });
    let (kg, _, key) = start(&format!("address = \"{slow}\"\ntotal_timeout_ms = 800"));
    let r = call(&kg, "/pool/x", &key);
    assert_eq!(r.status, 200);
    assert!(r.body.len() < 30, "the body was cut: {:?}", r.body);
}
