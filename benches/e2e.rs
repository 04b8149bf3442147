//! End-to-end load run: a bare upstream, driven directly, through keygate on an `auth = "none"`
//! route (the pass-through baseline), through keygate with a cached API key, and the same keyed
//! route over keygate's TLS listener (kept-alive connections, so handshakes are not what it
//! measures). Then forward-auth: plain nginx in front of the upstream, and nginx with the
//! README's `auth_request` config asking keygate's verify route (cached key). Prints req/s, p50
//! and p99 for each, and the ratios that say what authentication, TLS and forward-auth cost.
//!
//! Run: `cargo bench --bench e2e`. Needs `wrk` (`apt-get install -y wrk`); without it the run
//! prints how to install it and exits successfully. Without nginx the forward-auth pair is left
//! out and the run says how to install it.
//!
//! Environment: `KEYGATE_BENCH_SECONDS` (per target, default 5), `KEYGATE_BENCH_CONNECTIONS`
//! (default 32), `KEYGATE_BENCH_ROUNDS` (default 1; with more, the targets run in rotated order
//! each round and the table shows each column's median, which steadies a noisy machine).

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

const PEPPER: &str = "bench-pepper-0123456789abcdef";
const ADMIN_TOKEN: &str = "bench-admin-token-0123456789";

fn main() -> ExitCode {
    // `cargo bench` passes `--bench`; `cargo test --all-targets` runs this without it, and then
    // only the setup is checked (upstream, keygate, admin API, a keyed request), with no load.
    let load_run = std::env::args().any(|a| a == "--bench");
    if load_run && !wrk_available() {
        println!(
            "e2e bench skipped: `wrk` is not on PATH. Install it with: apt-get install -y wrk"
        );
        return ExitCode::SUCCESS;
    }
    let seconds = env_u64("KEYGATE_BENCH_SECONDS", 5).max(1);
    let connections = env_u64("KEYGATE_BENCH_CONNECTIONS", 32).max(1);
    let rounds = env_u64("KEYGATE_BENCH_ROUNDS", 1).max(1);
    // Before any thread starts, so the upstream's threads and wrk inherit the load CPUs.
    let pinned = load_run && pin_load_generator();

    let upstream = start_upstream();
    let kg = Keygate::start(upstream, pinned);

    let admin = format!("http://{}", kg.admin);
    let created = admin_post(
        &format!("{admin}/admin/v1/accounts"),
        &json!({ "name": "bench" }),
    );
    let account = match created {
        AdminReply::NotFound => {
            println!(
                "e2e bench skipped: the admin API answered 404 for POST /admin/v1/accounts \
                 (not implemented in this build)"
            );
            return ExitCode::SUCCESS;
        }
        AdminReply::Ok(v) => v["id"].as_str().expect("account id").to_string(),
    };
    let key = match admin_post(
        &format!("{admin}/admin/v1/keys"),
        &json!({ "account_id": account, "name": "bench key" }),
    ) {
        AdminReply::NotFound => {
            println!(
                "e2e bench skipped: the admin API answered 404 for POST /admin/v1/keys \
                 (not implemented in this build)"
            );
            return ExitCode::SUCCESS;
        }
        AdminReply::Ok(v) => v["key"].as_str().expect("plaintext key").to_string(),
    };
    let auth = format!("Authorization: Bearer {key}");

    // Check each target answers as expected; the keyed request also loads the key into the cache.
    let direct_url = format!("http://{upstream}/x");
    let open_url = format!("http://{}/open/x", kg.public);
    let v1_url = format!("http://{}/v1/x", kg.public);
    let tls_url = format!("https://{}/v1/x", kg.public_tls);
    expect_status(&direct_url, None, 200);
    expect_status(&open_url, None, 200);
    expect_status(&v1_url, None, 401);
    expect_status(&v1_url, Some(&key), 200);
    // nginx in front: plain, and with auth_request to keygate (the README's config).
    let nginx = Nginx::start(kg.public, upstream);
    let nginx_urls = nginx.as_ref().map(|n| {
        (
            format!("http://{}/v1/x", n.plain),
            format!("http://{}/v1/x", n.auth),
        )
    });
    match &nginx_urls {
        Some((plain, auth)) => {
            expect_status(plain, None, 200);
            expect_status(auth, None, 401);
            expect_status(auth, Some(&key), 200);
        }
        None => println!(
            "e2e: nginx is not installed, the forward-auth targets are left out \
             (apt-get install -y nginx)"
        ),
    }
    if !load_run {
        println!("e2e: setup checked (no load in test mode; `cargo bench --bench e2e` runs it)");
        return ExitCode::SUCCESS;
    }

    println!(
        "e2e: wrk -t1 -c{connections} -d{seconds}s per target, {rounds} round(s); keygate \
         threads=1, work_stealing=false; upstream {upstream}; {}",
        if pinned {
            "keygate pinned to CPU 0, upstream and wrk to the others"
        } else {
            "not pinned (KEYGATE_BENCH_PIN=0, one CPU, or no taskset): all share the CPUs"
        }
    );
    let auth = auth.as_str();
    let mut targets: Vec<(&'static str, &str, Option<&str>)> = vec![
        ("direct upstream", &direct_url, None),
        ("keygate /open (auth=none)", &open_url, None),
        ("keygate /v1 (cached key)", &v1_url, Some(auth)),
        ("keygate /v1 TLS (cached key)", &tls_url, Some(auth)),
    ];
    // The verify answer alone (the request in its path, as Envoy sends it): what one check
    // costs keygate, next to a forwarded request.
    let verify_url = format!("http://{}/_keygate/path/v1/x", kg.public);
    expect_status(&verify_url, Some(&key), 200);
    targets.push(("keygate verify (cached key)", &verify_url, Some(auth)));
    if let Some((plain, with_auth)) = &nginx_urls {
        targets.push(("nginx (plain)", plain, None));
        targets.push(("nginx + auth_request", with_auth, Some(auth)));
    }
    // Round r starts at target r mod n, so no target always runs first or last.
    let mut runs: Vec<Vec<WrkResult>> = vec![Vec::new(); targets.len()];
    for round in 0..rounds {
        for i in 0..targets.len() {
            let t = (i + round as usize) % targets.len();
            let (name, url, header) = targets[t];
            let r = run_wrk(name, url, header, seconds, connections);
            if rounds > 1 {
                println!(
                    "  round {}: {:<28} {:>10.0} req/s  p50 {:>9}  p99 {:>9}",
                    round + 1,
                    name,
                    r.rps,
                    fmt_us(r.p50_us),
                    fmt_us(r.p99_us)
                );
            }
            runs[t].push(r);
        }
    }
    let medians: Vec<WrkResult> = runs.iter().map(|r| median(r)).collect();
    let [direct, open, keyed, tls] = [0, 1, 2, 3].map(|i| medians[i].clone());

    println!();
    if rounds > 1 {
        println!("median of {rounds} rounds per column");
    }
    println!(
        "{:<28} {:>12} {:>11} {:>11} {:>10}",
        "target", "req/s", "p50", "p99", "non-2xx"
    );
    for r in &medians {
        println!(
            "{:<28} {:>12.0} {:>11} {:>11} {:>10}",
            r.name,
            r.rps,
            fmt_us(r.p50_us),
            fmt_us(r.p99_us),
            r.non_2xx
        );
    }
    println!();
    println!(
        "authenticated / pass-through: throughput {:.3}, p50 {:.3}, p99 {:.3}",
        keyed.rps / open.rps,
        keyed.p50_us / open.p50_us,
        keyed.p99_us / open.p99_us
    );
    println!(
        "pass-through / direct:        throughput {:.3}, p50 {:.3}, p99 {:.3}",
        open.rps / direct.rps,
        open.p50_us / direct.p50_us,
        open.p99_us / direct.p99_us
    );
    println!(
        "TLS / plain (cached key):     throughput {:.3}, p50 {:.3}, p99 {:.3}",
        tls.rps / keyed.rps,
        tls.p50_us / keyed.p50_us,
        tls.p99_us / keyed.p99_us
    );
    if let [.., plain, with_auth] = medians.as_slice() {
        if nginx_urls.is_some() {
            let ratio = with_auth.rps / plain.rps;
            println!(
                "nginx + auth_request / nginx:  throughput {ratio:.3} (target >= 0.5: {}), \
                 p50 {:.3}, p99 {:.3}",
                if ratio >= 0.5 { "met" } else { "NOT met" },
                with_auth.p50_us / plain.p50_us,
                with_auth.p99_us / plain.p99_us
            );
        }
    }
    let errors: u64 = medians.iter().map(|r| r.non_2xx).sum();
    if errors > 0 {
        println!("warning: {errors} non-2xx responses: the numbers above are not comparable");
    }
    drop(nginx);
    drop(kg);
    ExitCode::SUCCESS
}

/// Each column's median over the rounds (independently), and the total of non-2xx answers.
fn median(runs: &[WrkResult]) -> WrkResult {
    let mid = |f: fn(&WrkResult) -> f64| {
        let mut v: Vec<f64> = runs.iter().map(f).collect();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    WrkResult {
        name: runs[0].name,
        rps: mid(|r| r.rps),
        p50_us: mid(|r| r.p50_us),
        p99_us: mid(|r| r.p99_us),
        non_2xx: runs.iter().map(|r| r.non_2xx).sum(),
    }
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

/// Keeps the load generator off keygate's CPU: this process (the bare upstream's threads) and
/// the wrk it starts move to CPUs 1 and up, keygate goes to CPU 0. On a small shared machine the
/// three otherwise fight for the same cores, and the ratios then measure the scheduler as much
/// as keygate (pass-through and authenticated runs lose different amounts to it). Off with
/// `KEYGATE_BENCH_PIN=0`, on one CPU, or without `taskset`.
fn pin_load_generator() -> bool {
    if std::env::var("KEYGATE_BENCH_PIN").is_ok_and(|v| v == "0") {
        return false;
    }
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    if cpus < 2 {
        return false;
    }
    Command::new("taskset")
        .args(["-a", "-cp", &format!("1-{}", cpus - 1)])
        .arg(std::process::id().to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn wrk_available() -> bool {
    Command::new("wrk")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

// ---------------------------------------------------------------- bare upstream

/// A minimal HTTP/1.1 server (axum, keep-alive) answering 200 "ok" to everything, on its own
/// current-thread runtime. It lives until the process exits.
fn start_upstream() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind upstream");
    listener.set_nonblocking(true).expect("nonblocking");
    let addr = listener.local_addr().expect("upstream addr");
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("upstream runtime");
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
            let app = axum::Router::new().fallback(|| async { "ok" });
            let _ = axum::serve(listener, app).await;
        });
    });
    addr
}

// ---------------------------------------------------------------- keygate process

/// The real binary on free ports; stopped with SIGINT when dropped (also on panic).
struct Keygate {
    public: SocketAddr,
    /// The same routes over TLS.
    public_tls: SocketAddr,
    admin: SocketAddr,
    ops: SocketAddr,
    log: PathBuf,
    child: Option<Child>,
    _dir: tempfile::TempDir,
}

impl Keygate {
    /// Starts keygate, retrying on fresh ports when one was taken between picking and binding
    /// (other processes on the machine may grab free ports too).
    fn start(upstream: SocketAddr, pinned: bool) -> Keygate {
        let mut attempt = 1;
        loop {
            match Self::try_start(upstream, pinned) {
                Ok(kg) => return kg,
                Err(log) if attempt < 5 && log.contains("Address already in use") => attempt += 1,
                Err(log) => panic!("keygate did not start:\n{log}"),
            }
        }
    }

    /// `Err` carries keygate's log when it exited before becoming ready.
    fn try_start(upstream: SocketAddr, pinned: bool) -> Result<Keygate, String> {
        let dir = tempfile::tempdir().expect("tempdir");
        let addr = |p: u16| -> SocketAddr { format!("127.0.0.1:{p}").parse().expect("addr") };
        let (public, admin, ops) = (addr(free_port()), addr(free_port()), addr(free_port()));
        let public_tls = addr(free_port());
        // A self-signed certificate for the TLS listener (wrk does not check it).
        let cert =
            rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("certificate");
        let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        std::fs::write(&cert_path, cert.cert.pem()).expect("write certificate");
        std::fs::write(&key_path, cert.signing_key.serialize_pem()).expect("write key");
        let config = format!(
            r#"
[server]
threads = 1
work_stealing = false
grace_period_seconds = 0
graceful_shutdown_timeout_seconds = 1
data_dir = "{data}"

[listeners]
public = "{public}"
admin = "{admin}"
ops = "{ops}"

[listeners.tls]
address = "{public_tls}"
certs = [{{ cert = "{cert}", key = "{key}" }}]

[secrets]
pepper = {{ env = "KEYGATE_BENCH_PEPPER" }}
admin_token = {{ env = "KEYGATE_BENCH_ADMIN_TOKEN" }}

[upstreams.api]
address = "{upstream}"

[[routes]]
name = "open"
path = "/open/{{*rest}}"
upstream = "api"
auth = "none"

[[routes]]
name = "v1"
path = "/v1/{{*rest}}"
upstream = "api"
auth = "api_key"

[[routes]]
name = "verify"
path = "/_keygate"
local = "verify"
auth = "none"
original = "x-original"

[[routes]]
name = "verify_path"
path = "/_keygate/path/{{*path}}"
local = "verify"
auth = "none"
original = "path"
"#,
            data = dir.path().join("data").display(),
            cert = cert_path.display(),
            key = key_path.display(),
        );
        let config_path = dir.path().join("keygate.toml");
        std::fs::write(&config_path, config).expect("write config");
        let log = dir.path().join("keygate.log");
        let mut command = if pinned {
            let mut c = Command::new("taskset");
            c.args(["-c", "0", env!("CARGO_BIN_EXE_keygate")]);
            c
        } else {
            Command::new(env!("CARGO_BIN_EXE_keygate"))
        };
        let child = command
            .arg("serve")
            .arg("--config")
            .arg(&config_path)
            .env("KEYGATE_BENCH_PEPPER", PEPPER)
            .env("KEYGATE_BENCH_ADMIN_TOKEN", ADMIN_TOKEN)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(std::fs::File::create(&log).expect("log file")))
            .spawn()
            .expect("start keygate");
        let mut kg = Keygate {
            public,
            public_tls,
            admin,
            ops,
            log,
            child: Some(child),
            _dir: dir,
        };
        kg.wait_ready()?;
        Ok(kg)
    }

    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        let healthz = format!("http://{}/healthz", self.ops);
        loop {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                self.child = None;
                return Err(format!("keygate exited early ({status}):\n{}", self.log()));
            }
            if std::net::TcpStream::connect(self.public).is_ok()
                && std::net::TcpStream::connect(self.public_tls).is_ok()
                && http_get(&healthz, None).map(|(s, _)| s) == Some(200)
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                panic!("keygate did not become ready:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Keygate {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = Command::new("kill")
            .arg("-INT")
            .arg(child.id().to_string())
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

// ---------------------------------------------------------------- nginx

/// One nginx process (single process, in the foreground) with two servers: `plain` proxies to
/// the upstream, `auth` is the README's `auth_request` server block in front of keygate's
/// verify route. Stopped when dropped.
struct Nginx {
    plain: SocketAddr,
    auth: SocketAddr,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Nginx {
    /// `None` when nginx is not installed.
    fn start(keygate: SocketAddr, upstream: SocketAddr) -> Option<Nginx> {
        let binary = ["/usr/sbin/nginx", "/usr/bin/nginx", "/usr/local/sbin/nginx"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())?;
        let dir = tempfile::tempdir().expect("tempdir");
        let addr = |p: u16| -> SocketAddr { format!("127.0.0.1:{p}").parse().expect("addr") };
        let (plain, auth) = (addr(free_port()), addr(free_port()));
        let readme = include_str!("../README.md");
        let block = readme
            .split("\n### nginx\n")
            .nth(1)
            .and_then(|s| s.split("```nginx\n").nth(1))
            .and_then(|s| s.split("```").next())
            .expect("the README's nginx block");
        let server = block
            .replace("127.0.0.1:8080", &keygate.to_string())
            .replace("127.0.0.1:9000", &upstream.to_string())
            .replace("listen 127.0.0.1:80;", &format!("listen {auth};"));
        let d = dir.path().display();
        let conf = format!(
            "daemon off;\nmaster_process off;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\n\
             events {{ worker_connections 1024; }}\n\
             http {{\n access_log off;\n client_body_temp_path {d}/body;\n\
             proxy_temp_path {d}/proxy;\n fastcgi_temp_path {d}/fastcgi;\n\
             uwsgi_temp_path {d}/uwsgi;\n scgi_temp_path {d}/scgi;\n\
             {server}\n\
             server {{\n  listen {plain};\n  location / {{\n   proxy_http_version 1.1;\n\
             proxy_set_header Connection \"\";\n   proxy_pass http://api;\n  }}\n }}\n}}\n"
        );
        let path = dir.path().join("nginx.conf");
        std::fs::write(&path, conf).expect("write nginx.conf");
        let child = Command::new(binary)
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nginx");
        let mut nginx = Nginx {
            plain,
            auth,
            child,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = nginx.child.try_wait() {
                let log = std::fs::read_to_string(nginx._dir.path().join("error.log"));
                panic!("nginx exited ({status}): {}", log.unwrap_or_default());
            }
            if std::net::TcpStream::connect(plain).is_ok()
                && std::net::TcpStream::connect(auth).is_ok()
            {
                return Some(nginx);
            }
            assert!(Instant::now() < deadline, "nginx did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------- HTTP helpers

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into()
}

/// GET with an optional Bearer key; `None` when the connection failed.
fn http_get(url: &str, key: Option<&str>) -> Option<(u16, String)> {
    let mut req = agent().get(url);
    if let Some(k) = key {
        req = req.header("authorization", &format!("Bearer {k}"));
    }
    let mut resp = req.call().ok()?;
    let status = resp.status().as_u16();
    Some((status, resp.body_mut().read_to_string().unwrap_or_default()))
}

fn expect_status(url: &str, key: Option<&str>, want: u16) {
    match http_get(url, key) {
        Some((status, _)) if status == want => {}
        other => panic!("warm-up GET {url} did not answer {want}: {other:?}"),
    }
}

enum AdminReply {
    Ok(Value),
    NotFound,
}

fn admin_post(url: &str, body: &Value) -> AdminReply {
    let mut resp = agent()
        .post(url)
        .header("authorization", &format!("Bearer {ADMIN_TOKEN}"))
        .send_json(body)
        .unwrap_or_else(|e| panic!("POST {url}: {e}"));
    let status = resp.status().as_u16();
    let text = resp.body_mut().read_to_string().unwrap_or_default();
    match status {
        404 => AdminReply::NotFound,
        200 | 201 => AdminReply::Ok(
            serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("POST {url}: body is not JSON ({e}): {text}")),
        ),
        _ => panic!("POST {url} answered {status}: {text}"),
    }
}

// ---------------------------------------------------------------- wrk

#[derive(Clone)]
struct WrkResult {
    name: &'static str,
    rps: f64,
    p50_us: f64,
    p99_us: f64,
    non_2xx: u64,
}

fn run_wrk(
    name: &'static str,
    url: &str,
    header: Option<&str>,
    seconds: u64,
    connections: u64,
) -> WrkResult {
    let mut cmd = Command::new("wrk");
    cmd.arg("-t1")
        .arg(format!("-c{connections}"))
        .arg(format!("-d{seconds}s"))
        .arg("--latency");
    if let Some(h) = header {
        cmd.arg("-H").arg(h);
    }
    cmd.arg(url);
    let out = cmd.output().expect("run wrk");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    if !out.status.success() {
        panic!(
            "wrk failed for {name} ({}):\n{text}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    parse_wrk(name, &text).unwrap_or_else(|| panic!("cannot parse wrk output for {name}:\n{text}"))
}

/// Reads `Requests/sec:`, the `50%` and `99%` lines of `--latency`, and `Non-2xx or 3xx
/// responses:` from wrk's report.
fn parse_wrk(name: &'static str, text: &str) -> Option<WrkResult> {
    let mut rps = None;
    let mut p50 = None;
    let mut p99 = None;
    let mut non_2xx = 0;
    for line in text.lines() {
        let line = line.trim();
        if let Some(v) = line.strip_prefix("Requests/sec:") {
            rps = v.trim().parse::<f64>().ok();
        } else if let Some(v) = line.strip_prefix("50%") {
            p50 = parse_duration_us(v.trim());
        } else if let Some(v) = line.strip_prefix("99%") {
            p99 = parse_duration_us(v.trim());
        } else if let Some(v) = line.strip_prefix("Non-2xx or 3xx responses:") {
            non_2xx = v.trim().parse().unwrap_or(0);
        }
    }
    Some(WrkResult {
        name,
        rps: rps?,
        p50_us: p50?,
        p99_us: p99?,
        non_2xx,
    })
}

/// wrk prints `123.45us`, `1.23ms`, `1.02s` or `2.00m`.
fn parse_duration_us(s: &str) -> Option<f64> {
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
    let (num, unit) = s.split_at(split);
    let n: f64 = num.parse().ok()?;
    let factor = match unit.trim() {
        "us" => 1.0,
        "ms" => 1_000.0,
        "s" => 1_000_000.0,
        "m" => 60_000_000.0,
        _ => return None,
    };
    Some(n * factor)
}

fn fmt_us(us: f64) -> String {
    if us >= 1_000.0 {
        format!("{:.2}ms", us / 1_000.0)
    } else {
        format!("{us:.0}us")
    }
}
