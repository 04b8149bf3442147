//! What the load runs share: the real keygate binary on free ports with a generated config, a
//! bare upstream, a small HTTP client for the admin API, and wrk driven and parsed.
#![allow(dead_code)]

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

pub const PEPPER: &str = "bench-pepper-0123456789abcdef";
pub const ADMIN_TOKEN: &str = "bench-admin-token-0123456789";

/// One wrk target: a URL and the API key it sends, if any.
#[derive(Clone)]
pub struct Target {
    pub name: String,
    pub url: String,
    pub key: Option<String>,
    /// A wrk Lua script (`-s`) that shapes the requests, e.g. a different key each time.
    pub script: Option<PathBuf>,
    /// The status every answer should have: 200, or 401 for the refused-key targets (wrk
    /// counts those as non-2xx, which for them is the expected answer, not an error).
    pub status: u16,
}

impl Target {
    pub fn new(name: &str, url: String, key: Option<&str>) -> Target {
        Target {
            name: name.to_string(),
            url,
            key: key.map(str::to_string),
            script: None,
            status: 200,
        }
    }

    /// The same target, expecting `status` on every answer.
    pub fn expecting(mut self, status: u16) -> Target {
        self.status = status;
        self
    }

    /// Answers in `r` that were not the expected status. wrk reports only the non-2xx/3xx count
    /// and the total, so for a refused-key target every 2xx/3xx answer is one.
    pub fn unexpected(&self, r: &WrkResult) -> u64 {
        if self.status < 300 {
            r.non_2xx
        } else {
            r.requests.saturating_sub(r.non_2xx)
        }
    }
}

/// Each column's median over the rounds (independently), and the total of non-2xx answers.
pub fn median(runs: &[WrkResult]) -> WrkResult {
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
        requests: runs.iter().map(|r| r.requests).sum(),
    }
}

pub fn env_u64(name: &str, default: u64) -> u64 {
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
pub fn pin_load_generator() -> bool {
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

pub fn wrk_available() -> bool {
    Command::new("wrk")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

// ---------------------------------------------------------------- bare upstream

/// A minimal HTTP/1.1 server (axum, keep-alive) answering 200 "ok" to everything, on its own
/// current-thread runtime. It lives until the process exits.
pub fn start_upstream() -> SocketAddr {
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
pub struct Keygate {
    pub public: SocketAddr,
    /// The same routes over TLS (when started with it).
    pub public_tls: Option<SocketAddr>,
    pub admin: SocketAddr,
    pub ops: SocketAddr,
    log: PathBuf,
    child: Option<Child>,
    _dir: tempfile::TempDir,
}

/// The `[server]` settings a load run varies, and the CPUs keygate runs on.
#[derive(Clone, Debug)]
pub struct ServerOpts {
    pub threads: usize,
    pub work_stealing: bool,
    /// `taskset -c` CPU list for keygate (`"0"` when pinned), or `None` to inherit this
    /// process's CPUs.
    pub cpus: Option<String>,
    /// `server.max_connections_per_ip` when set. All of a load run comes from 127.0.0.1, so
    /// the 1,000-connection run needs more than the default 256; left out otherwise, as
    /// builds from before the cap (`KEYGATE_BENCH_BASELINE_BIN`) refuse the unknown field.
    pub max_connections_per_ip: Option<usize>,
}

impl ServerOpts {
    /// What the e2e run uses: one thread, no work stealing, on CPU 0 when `pinned`.
    pub fn single(pinned: bool) -> ServerOpts {
        ServerOpts {
            threads: 1,
            work_stealing: false,
            cpus: pinned.then(|| "0".to_string()),
            max_connections_per_ip: None,
        }
    }
}

/// Every CPU of the machine as a `taskset -c` list (the load run moves itself off CPU 0, and
/// a child started without `taskset` would inherit that).
pub fn all_cpus() -> String {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    format!("0-{}", cpus.saturating_sub(1))
}

impl Keygate {
    /// Starts keygate, retrying on fresh ports when one was taken between picking and binding
    /// (other processes on the machine may grab free ports too).
    /// `extra` is TOML appended to the config (routes, sections the run needs).
    pub fn start(
        binary: &std::path::Path,
        upstream: SocketAddr,
        pinned: bool,
        tls: bool,
        extra: &str,
    ) -> Keygate {
        Self::start_with(binary, upstream, &ServerOpts::single(pinned), tls, extra)
    }

    /// [`Keygate::start`] with chosen thread settings and CPUs.
    pub fn start_with(
        binary: &std::path::Path,
        upstream: SocketAddr,
        opts: &ServerOpts,
        tls: bool,
        extra: &str,
    ) -> Keygate {
        let mut attempt = 1;
        loop {
            match Self::try_start(binary, upstream, opts, tls, extra) {
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
        opts: &ServerOpts,
        tls: bool,
        extra: &str,
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
threads = {threads}
work_stealing = {work_stealing}
{per_ip}grace_period_seconds = 0
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
{extra}"#,
            threads = opts.threads,
            work_stealing = opts.work_stealing,
            per_ip = opts
                .max_connections_per_ip
                .map(|n| format!("max_connections_per_ip = {n}\n"))
                .unwrap_or_default(),
            data = dir.path().join("data").display(),
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
        let mut command = if let Some(cpus) = &opts.cpus {
            let mut c = Command::new("taskset");
            c.args(["-c", cpus]).arg(binary);
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
            .env(
                "RUST_LOG",
                std::env::var("KEYGATE_BENCH_RUST_LOG").unwrap_or_else(|_| "warn".to_string()),
            )
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

    /// The process id (keygate's own: `taskset` execs it).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    pub fn log(&self) -> String {
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

pub fn agent() -> ureq::Agent {
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
pub fn http_get(url: &str, key: Option<&str>) -> Option<(u16, String)> {
    let mut req = agent().get(url);
    if let Some(k) = key {
        req = req.header("authorization", &format!("Bearer {k}"));
    }
    let mut resp = req.call().ok()?;
    let status = resp.status().as_u16();
    Some((status, resp.body_mut().read_to_string().unwrap_or_default()))
}

pub fn expect_status(url: &str, key: Option<&str>, want: u16) {
    match http_get(url, key) {
        Some((status, _)) if status == want => {}
        other => panic!("warm-up GET {url} did not answer {want}: {other:?}"),
    }
}

pub enum AdminReply {
    Ok(Value),
    NotFound,
}

pub fn admin_post(url: &str, body: &Value) -> AdminReply {
    admin_post_with(&agent(), url, body)
}

/// [`admin_post`] on a caller's own agent, whose connection stays open between calls (as an
/// admin client that creates many keys keeps it).
pub fn admin_post_with(agent: &ureq::Agent, url: &str, body: &Value) -> AdminReply {
    let mut resp = agent
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

pub struct WrkResult {
    pub name: String,
    pub rps: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub non_2xx: u64,
    /// All answers wrk counted (`N requests in ...`).
    pub requests: u64,
}

pub fn run_wrk(target: &Target, seconds: u64, connections: u64) -> WrkResult {
    let name = &target.name;
    let mut cmd = Command::new("wrk");
    cmd.arg("-t1")
        .arg(format!("-c{connections}"))
        .arg(format!("-d{seconds}s"))
        .arg("--latency");
    if let Some(key) = &target.key {
        cmd.arg("-H").arg(format!("Authorization: Bearer {key}"));
    }
    if let Some(script) = &target.script {
        cmd.arg("-s").arg(script);
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

/// Reads `N requests in`, `Requests/sec:`, the `50%` and `99%` lines of `--latency`, and `Non-2xx or 3xx
/// responses:` from wrk's report.
pub fn parse_wrk(name: &str, text: &str) -> Option<WrkResult> {
    let mut rps = None;
    let mut p50 = None;
    let mut p99 = None;
    let mut non_2xx = 0;
    let mut requests = None;
    for line in text.lines() {
        let line = line.trim();
        if let Some((n, _)) = line.split_once(" requests in ") {
            requests = n.trim().parse::<u64>().ok();
        } else if let Some(v) = line.strip_prefix("Requests/sec:") {
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
        requests: requests?,
    })
}

/// wrk prints `123.45us`, `1.23ms`, `1.02s` or `2.00m`.
pub fn parse_duration_us(s: &str) -> Option<f64> {
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

pub fn fmt_us(us: f64) -> String {
    if us >= 1_000.0 {
        format!("{:.2}ms", us / 1_000.0)
    } else {
        format!("{us:.0}us")
    }
}

// ---------------------------------------------------------------- keys

/// An account and a key on `kg`, through its admin API; `None` (with a message) when this
/// build has no admin API for it.
pub fn make_key(kg: &Keygate) -> Option<String> {
    let admin = format!("http://{}", kg.admin);
    let account = match admin_post(
        &format!("{admin}/admin/v1/accounts"),
        &json!({ "name": "bench" }),
    ) {
        AdminReply::NotFound => {
            println!(
                "load bench skipped: the admin API answered 404 for POST /admin/v1/accounts \
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
                "load bench skipped: the admin API answered 404 for POST /admin/v1/keys \
                 (not implemented in this build)"
            );
            None
        }
        AdminReply::Ok(v) => Some(v["key"].as_str().expect("plaintext key").to_string()),
    }
}
