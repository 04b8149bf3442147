//! End-to-end load run: a bare upstream, driven directly; through a bare pingora pass-through
//! (the floor: the engine with nothing of keygate's, see `bare`); through keygate on an
//! `auth = "none"` route (keygate's pass-through); through keygate with a cached API key; and the
//! same keyed route over keygate's TLS listener (kept-alive connections, so handshakes are not
//! what it measures). Prints req/s, p50 and p99 for each, and the ratios that say what keygate,
//! authentication and TLS cost.
//!
//! Run: `cargo bench --bench e2e`. Needs `wrk` (`apt-get install -y wrk`); without it the run
//! fails with that install line.
//!
//! `KEYGATE_BENCH_BASELINE_BIN=/path/to/an/older/keygate` adds that build's `auth = "none"` and
//! cached-key routes (plain HTTP) to the same run, for before/after ratios on one machine.
//!
//! Forward-auth: keygate's verify answer alone, plain nginx in front of the upstream, and nginx
//! with the README's `auth_request` config asking keygate's verify route (cached key). Without
//! nginx the run fails with its install line.
//!
//! Environment: `KEYGATE_BENCH_SECONDS` (per target, default 5), `KEYGATE_BENCH_CONNECTIONS`
//! (default 32), `KEYGATE_BENCH_ROUNDS` (default 1; with more, the targets run in rotated order
//! each round and the table shows each column's median, which steadies a noisy machine).

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

#[path = "e2e/bare.rs"]
mod bare;
#[path = "e2e/nginx.rs"]
mod nginx;

const PEPPER: &str = "bench-pepper-0123456789abcdef";
const ADMIN_TOKEN: &str = "bench-admin-token-0123456789";

fn main() -> ExitCode {
    // Re-executed by the load run as the bare pingora floor (see `bare`).
    let args: Vec<String> = std::env::args().collect();
    if let [_, flag, listen, upstream, ..] = args.as_slice() {
        if flag == bare::FLAG {
            return bare::serve(listen, upstream);
        }
    }
    // `cargo bench` passes `--bench`; `cargo test --all-targets` runs this without it, and then
    // only the setup is checked (upstream, keygate, admin API, a keyed request), with no load.
    let load_run = args.iter().any(|a| a == "--bench");
    if load_run && !wrk_available() {
        eprintln!("e2e bench: `wrk` is not on PATH. Install it with: apt-get install -y wrk");
        return ExitCode::FAILURE;
    }
    let seconds = env_u64("KEYGATE_BENCH_SECONDS", 5).max(1);
    let connections = env_u64("KEYGATE_BENCH_CONNECTIONS", 32).max(1);
    let rounds = env_u64("KEYGATE_BENCH_ROUNDS", 1).max(1);
    // Before any thread starts, so the upstream's threads and wrk inherit the load CPUs.
    let pinned = load_run && pin_load_generator();

    let upstream = start_upstream();
    let kg = Keygate::start(
        env!("CARGO_BIN_EXE_keygate").as_ref(),
        upstream,
        pinned,
        true,
    );
    let Some(key) = make_key(&kg) else {
        return ExitCode::SUCCESS;
    };
    // An earlier build of keygate (KEYGATE_BENCH_BASELINE_BIN) on the same upstream, for
    // before/after comparisons in one run; plain HTTP only, as older builds had no TLS listener.
    let baseline = std::env::var_os("KEYGATE_BENCH_BASELINE_BIN").map(|bin| {
        let base = Keygate::start(std::path::Path::new(&bin), upstream, pinned, false);
        let key = make_key(&base).expect("the baseline build has the admin API");
        (base, key)
    });
    let bare = bare::Bare::start(upstream, pinned);
    let Some(nginx) = nginx::Nginx::start(kg.public, upstream) else {
        eprintln!("e2e bench: nginx is not installed. Install it with: apt-get install -y nginx");
        return ExitCode::FAILURE;
    };

    let mut targets = vec![
        Target::new("direct upstream", format!("http://{upstream}/x"), None),
        Target::new(BARE, format!("http://{}/x", bare.addr), None),
    ];
    targets.extend([
        Target::new(OPEN, format!("http://{}/open/x", kg.public), None),
        Target::new(KEYED, format!("http://{}/v1/x", kg.public), Some(&key)),
        Target::new(
            TLS,
            format!("https://{}/v1/x", kg.public_tls.expect("TLS listener")),
            Some(&key),
        ),
    ]);
    // The verify answer alone (the request in its path, as Envoy sends it): what one check
    // costs keygate, next to a forwarded request.
    targets.extend([
        Target::new(
            VERIFY,
            format!("http://{}/_keygate/path/v1/x", kg.public),
            Some(&key),
        ),
        Target::new(NGINX, format!("http://{}/v1/x", nginx.plain), None),
        Target::new(
            NGINX_AUTH,
            format!("http://{}/v1/x", nginx.auth),
            Some(&key),
        ),
    ]);
    if let Some((base, key)) = &baseline {
        targets.extend([
            Target::new(BASE_OPEN, format!("http://{}/open/x", base.public), None),
            Target::new(
                BASE_KEYED,
                format!("http://{}/v1/x", base.public),
                Some(key),
            ),
        ]);
    }
    // Check each target answers as expected; the keyed requests also load the keys into the
    // caches. Without a key the keyed routes refuse.
    for t in &targets {
        expect_status(&t.url, t.key.as_deref(), 200);
        if t.key.is_some() {
            expect_status(&t.url, None, 401);
        }
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
    // Round r starts at target r mod n, so no target always runs first or last.
    let mut runs: Vec<Vec<WrkResult>> = targets.iter().map(|_| Vec::new()).collect();
    for round in 0..rounds {
        for i in 0..targets.len() {
            let t = (i + round as usize) % targets.len();
            let target = &targets[t];
            let r = run_wrk(target, seconds, connections);
            if rounds > 1 {
                println!(
                    "  round {}: {:<32} {:>10.0} req/s  p50 {:>9}  p99 {:>9}",
                    round + 1,
                    target.name,
                    r.rps,
                    fmt_us(r.p50_us),
                    fmt_us(r.p99_us)
                );
            }
            runs[t].push(r);
        }
    }
    let results: Vec<WrkResult> = runs.iter().map(|r| median(r)).collect();

    println!();
    if rounds > 1 {
        println!("median of {rounds} rounds per column");
    }
    println!(
        "{:<32} {:>12} {:>11} {:>11} {:>10}",
        "target", "req/s", "p50", "p99", "non-2xx"
    );
    for r in &results {
        println!(
            "{:<32} {:>12.0} {:>11} {:>11} {:>10}",
            r.name,
            r.rps,
            fmt_us(r.p50_us),
            fmt_us(r.p99_us),
            r.non_2xx
        );
    }
    println!();
    let ratio = |label: &str, num: &str, den: &str| {
        let find = |name: &str| results.iter().find(|r| r.name == name);
        if let (Some(n), Some(d)) = (find(num), find(den)) {
            println!(
                "{label:<34} throughput {:.3}, p50 {:.3}, p99 {:.3}",
                n.rps / d.rps,
                n.p50_us / d.p50_us,
                n.p99_us / d.p99_us
            );
        }
    };
    ratio("authenticated / pass-through:", KEYED, OPEN);
    ratio("pass-through / bare pingora:", OPEN, BARE);
    ratio("pass-through / direct:", OPEN, "direct upstream");
    ratio("TLS / plain (cached key):", TLS, KEYED);
    ratio("verify answer / pass-through:", VERIFY, OPEN);
    ratio("nginx + auth_request / nginx:", NGINX_AUTH, NGINX);
    ratio("this build / baseline (cached key):", KEYED, BASE_KEYED);
    ratio("this build / baseline (auth=none):", OPEN, BASE_OPEN);
    let errors: u64 = results.iter().map(|r| r.non_2xx).sum();
    if errors > 0 {
        println!("warning: {errors} non-2xx responses: the numbers above are not comparable");
    }
    drop(nginx);
    drop(kg);
    ExitCode::SUCCESS
}

const VERIFY_ROUTES: &str = r#"
[[routes]]
name = "verify"
path = "/_keygate"
local = "verify"
auth = "none"
original = "x-original"

[[routes]]
name = "verify_path"
path = "/_keygate/path/{*path}"
local = "verify"
auth = "none"
original = "path"
"#;

const BARE: &str = "bare pingora (floor)";
const OPEN: &str = "keygate /open (auth=none)";
const KEYED: &str = "keygate /v1 (cached key)";
const TLS: &str = "keygate /v1 TLS (cached key)";
const VERIFY: &str = "keygate verify (cached key)";
const NGINX: &str = "nginx (plain)";
const NGINX_AUTH: &str = "nginx + auth_request";
const BASE_OPEN: &str = "baseline /open (auth=none)";
const BASE_KEYED: &str = "baseline /v1 (cached key)";

/// One wrk target: a URL and the API key it sends, if any.
struct Target {
    name: String,
    url: String,
    key: Option<String>,
}

impl Target {
    fn new(name: &str, url: String, key: Option<&str>) -> Target {
        Target {
            name: name.to_string(),
            url,
            key: key.map(str::to_string),
        }
    }
}

/// An account and a key on `kg`, through its admin API; `None` (with a message) when this
/// build has no admin API for it.
fn make_key(kg: &Keygate) -> Option<String> {
    let admin = format!("http://{}", kg.admin);
    let account = match admin_post(
        &format!("{admin}/admin/v1/accounts"),
        &json!({ "name": "bench" }),
    ) {
        AdminReply::NotFound => {
            println!(
                "e2e bench skipped: the admin API answered 404 for POST /admin/v1/accounts \
                 (not implemented in this build)"
            );
            return None;
        }
        AdminReply::Ok(v) => v["id"].as_str().expect("account id").to_string(),
    };
    match admin_post(
        &format!("{admin}/admin/v1/keys"),
        &json!({ "account_id": account, "name": "bench key" }),
    ) {
        AdminReply::NotFound => {
            println!(
                "e2e bench skipped: the admin API answered 404 for POST /admin/v1/keys \
                 (not implemented in this build)"
            );
            None
        }
        AdminReply::Ok(v) => Some(v["key"].as_str().expect("plaintext key").to_string()),
    }
}

/// Each column's median over the rounds (independently), and the total of non-2xx answers.
fn median(runs: &[WrkResult]) -> WrkResult {
    let mid = |f: fn(&WrkResult) -> f64| {
        let mut v: Vec<f64> = runs.iter().map(f).collect();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    WrkResult {
        name: runs[0].name.clone(),
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
    /// The same routes over TLS (when started with it).
    public_tls: Option<SocketAddr>,
    admin: SocketAddr,
    ops: SocketAddr,
    log: PathBuf,
    child: Option<Child>,
    _dir: tempfile::TempDir,
}

impl Keygate {
    /// Starts keygate, retrying on fresh ports when one was taken between picking and binding
    /// (other processes on the machine may grab free ports too).
    fn start(binary: &std::path::Path, upstream: SocketAddr, pinned: bool, tls: bool) -> Keygate {
        let mut attempt = 1;
        loop {
            match Self::try_start(binary, upstream, pinned, tls) {
                Ok(kg) => return kg,
                Err(log) if attempt < 5 && log.contains("Address already in use") => attempt += 1,
                Err(log) => panic!("keygate did not start:\n{log}"),
            }
        }
    }

    /// `Err` carries keygate's log when it exited before becoming ready.
    fn try_start(
        binary: &std::path::Path,
        upstream: SocketAddr,
        pinned: bool,
        tls: bool,
    ) -> Result<Keygate, String> {
        let dir = tempfile::tempdir().expect("tempdir");
        let addr = |p: u16| -> SocketAddr { format!("127.0.0.1:{p}").parse().expect("addr") };
        let (public, admin, ops) = (addr(free_port()), addr(free_port()), addr(free_port()));
        let public_tls = tls.then(|| addr(free_port()));
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

{tls_section}
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
{verify_routes}"#,
            data = dir.path().join("data").display(),
            // Forward-auth routes (this build only: older ones have no `verify`).
            verify_routes = if tls { VERIFY_ROUTES } else { "" },
            tls_section = match public_tls {
                Some(address) => format!(
                    "[listeners.tls]\naddress = \"{address}\"\n\
                     certs = [{{ cert = \"{}\", key = \"{}\" }}]\n",
                    cert_path.display(),
                    key_path.display()
                ),
                None => String::new(),
            },
        );
        let config_path = dir.path().join("keygate.toml");
        std::fs::write(&config_path, config).expect("write config");
        let log = dir.path().join("keygate.log");
        let mut command = if pinned {
            let mut c = Command::new("taskset");
            c.args(["-c", "0"]).arg(binary);
            c
        } else {
            Command::new(binary)
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
                && self
                    .public_tls
                    .is_none_or(|a| std::net::TcpStream::connect(a).is_ok())
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

// ---------------------------------------------------------------- HTTP helpers

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        // The TLS listener's certificate is self-signed (wrk does not check it either).
        .tls_config(
            ureq::tls::TlsConfig::builder()
                .disable_verification(true)
                .build(),
        )
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

struct WrkResult {
    name: String,
    rps: f64,
    p50_us: f64,
    p99_us: f64,
    non_2xx: u64,
}

fn run_wrk(target: &Target, seconds: u64, connections: u64) -> WrkResult {
    let name = &target.name;
    let mut cmd = Command::new("wrk");
    cmd.arg("-t1")
        .arg(format!("-c{connections}"))
        .arg(format!("-d{seconds}s"))
        .arg("--latency");
    if let Some(key) = &target.key {
        cmd.arg("-H").arg(format!("Authorization: Bearer {key}"));
    }
    cmd.arg(&target.url);
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
fn parse_wrk(name: &str, text: &str) -> Option<WrkResult> {
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
        name: name.to_string(),
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
