//! Integration harness: the real `keygate` binary on free ports with a temporary config and data
//! directory, an echo upstream that answers with what it received, and a small HTTP client.
//! Readiness is polled, never slept for; processes are killed on drop. The helpers every test
//! file needs (calls, metrics, waiting) live here once, in submodules re-exported below, so
//! `use common::*;` brings them all.
#![allow(dead_code)]

mod calls;
mod metrics;
mod profile;
mod raw;
pub mod redis_server;
mod wait;

// A test file that uses none of a module's helpers would otherwise warn about its re-export.
#[allow(unused_imports)]
pub use calls::*;
#[allow(unused_imports)]
pub use metrics::*;
#[allow(unused_imports)]
pub use profile::*;
#[allow(unused_imports)]
pub use raw::*;
#[allow(unused_imports)]
pub use wait::*;

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";
pub const PEPPER: &str = "test-pepper-abcdefghijklmnop";

/// `kill -SIG pid` for a child process (std can only SIGKILL).
pub fn send_signal(child: &Child, which: &str) {
    let pid = child.id();
    let status = Command::new("kill")
        .args([which, &pid.to_string()])
        .status()
        .expect("kill");
    assert!(status.success(), "kill {which} {pid}");
}

/// Ports the harness hands out lie below Linux's ephemeral range (32768 and up). A port the
/// kernel picks for `bind(0)` is free only until the next outgoing connection takes it as its
/// source port, and with many tests connecting in parallel that happens: CI once saw keygate
/// fail with "Address already in use" on such a port. Ports in this range are never used as
/// source ports, so one that binds here stays free until the test's own process binds it.
pub fn free_port() -> u16 {
    pick_port(20_000..32_000, &[0])
}

/// A port for a Redis Cluster node, whose cluster bus listens on the port + 10000: both must be
/// free and below the ephemeral range, so the node's port comes from 12000..20000.
pub fn free_cluster_port() -> u16 {
    pick_port(12_000..20_000, &[0, 10_000])
}

/// A port in `range` such that it and each `port + offset` bind now.
fn pick_port(range: std::ops::Range<u16>, offsets: &[u16]) -> u16 {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let span = u32::from(range.end - range.start);
    // Test binaries may run side by side (nextest); each starts at its own place in the range.
    let start = std::process::id().wrapping_mul(7919) % span;
    for _ in 0..span {
        let step = NEXT.fetch_add(1, Ordering::Relaxed) as u32;
        let Ok(offset) = u16::try_from((start + step) % span) else {
            continue;
        };
        let port = range.start + offset;
        let free = |o: &u16| TcpListener::bind(("127.0.0.1", port + o)).is_ok();
        if offsets.iter().all(free) {
            return port;
        }
    }
    panic!("no free port in {range:?} (with offsets {offsets:?})")
}

// ---------------------------------------------------------------- HTTP client

#[derive(Debug, Clone)]
pub struct Resp {
    pub status: u16,
    pub headers: BTreeMap<String, String>,
    pub body: String,
}

impl Resp {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.body))
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into()
}

/// Sends one request; `body` is sent as JSON when present.
pub fn request(method: &str, url: &str, headers: &[(&str, &str)], body: Option<&Value>) -> Resp {
    let agent = agent();
    let mut builder = http::Request::builder().method(method).uri(url);
    for (k, v) in headers {
        builder = builder.header(*k, *v);
    }
    let result = match body {
        Some(b) => {
            let req = builder
                .header("content-type", "application/json")
                .body(b.to_string())
                .expect("request");
            agent.run(req)
        }
        None => agent.run(builder.body(()).expect("request")),
    };
    let mut resp = result.unwrap_or_else(|e| panic!("{method} {url}: {e}"));
    let status = resp.status().as_u16();
    let headers = resp
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
        .collect();
    let body = resp.body_mut().read_to_string().unwrap_or_default();
    Resp {
        status,
        headers,
        body,
    }
}

pub fn get(url: &str, headers: &[(&str, &str)]) -> Resp {
    request("GET", url, headers, None)
}

// ---------------------------------------------------------------- echo upstream

/// An upstream that answers every request with JSON describing what it received.
pub struct Echo {
    pub addr: SocketAddr,
    pub hits: Arc<AtomicUsize>,
    _shutdown: tokio::sync::oneshot::Sender<()>,
}

impl Echo {
    pub fn start() -> Echo {
        Self::start_with(TcpListener::bind("127.0.0.1:0").expect("bind echo"))
    }

    /// An echo upstream on `addr` (e.g. one brought back where a stopped one listened).
    pub fn start_on(addr: SocketAddr) -> Echo {
        Self::start_with(TcpListener::bind(addr).expect("bind echo"))
    }

    /// Every answer also says which echo upstream gave it: `"server": "ip:port"`.
    fn start_with(listener: TcpListener) -> Echo {
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("addr");
        let hits = Arc::new(AtomicUsize::new(0));
        let counter = hits.clone();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                let app = axum::Router::new().fallback(move |req: axum::extract::Request| {
                    let counter = counter.clone();
                    async move {
                        counter.fetch_add(1, Ordering::SeqCst);
                        let (parts, body) = req.into_parts();
                        let bytes = axum::body::to_bytes(body, 1 << 20)
                            .await
                            .unwrap_or_default();
                        let mut headers = serde_json::Map::new();
                        for (k, v) in &parts.headers {
                            headers.insert(
                                k.as_str().to_string(),
                                Value::String(v.to_str().unwrap_or("").to_string()),
                            );
                        }
                        let status = echo_status(parts.uri.path());
                        let body = axum::Json(json!({
                            "server": addr.to_string(),
                            "method": parts.method.as_str(),
                            "path": parts.uri.path(),
                            "query": parts.uri.query(),
                            "headers": headers,
                            "body": String::from_utf8_lossy(&bytes),
                        }));
                        (status, body)
                    }
                });
                let _ = axum::serve(listener, app)
                    .with_graceful_shutdown(async {
                        let _ = rx.await;
                    })
                    .await;
            });
        });
        Echo {
            addr,
            hits,
            _shutdown: tx,
        }
    }

    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

/// The status the echo upstream answers with: `NNN` for a path ending in `/status/NNN`
/// (`/v1/status/500` -> 500), else 200. The body is the JSON echo either way.
fn echo_status(path: &str) -> axum::http::StatusCode {
    path.rsplit_once("/status/")
        .and_then(|(_, code)| code.parse::<u16>().ok())
        .and_then(|code| axum::http::StatusCode::from_u16(code).ok())
        .unwrap_or(axum::http::StatusCode::OK)
}

// ---------------------------------------------------------------- keygate process

/// How to start keygate: the upstream, and TOML appended to the generated config
/// (routes, error templates, extra sections).
pub struct Options {
    pub upstream: SocketAddr,
    pub prefix: String,
    pub routes_toml: String,
    pub extra_toml: String,
    pub cache_ttl_seconds: u64,
    pub last_used_interval_seconds: u64,
    /// The `[store]` section; empty means the embedded SQLite default.
    pub store_toml: String,
    /// Extra lines for the `[cache]` section (e.g. `max_stale_seconds = 2`).
    pub cache_extra_toml: String,
    /// `RUST_LOG` for the process.
    pub rust_log: String,
    /// Further environment variables for the process.
    pub env: Vec<(String, String)>,
    /// Extra lines for the `[server]` section (e.g. `max_connections_per_ip = 10`).
    pub server_toml: String,
    /// Extra lines for the `[listeners]` section (e.g. `proxy_protocol = true`).
    pub listeners_toml: String,
    /// The process's open-file limit (`ulimit -n`), when the test lowers it.
    pub nofile: Option<u64>,
    /// stderr goes to a pipe the test reads when it chooses ([`Keygate::take_stderr`]), not to
    /// the log file: a log reader that stalls.
    pub stderr_pipe: bool,
}

impl Options {
    pub fn new(upstream: SocketAddr) -> Self {
        Self {
            upstream,
            prefix: "kg_test_".into(),
            routes_toml: DEFAULT_ROUTES.into(),
            extra_toml: String::new(),
            cache_ttl_seconds: 60,
            last_used_interval_seconds: 1,
            store_toml: String::new(),
            cache_extra_toml: String::new(),
            rust_log: "info".into(),
            env: Vec::new(),
            server_toml: String::new(),
            listeners_toml: String::new(),
            nofile: None,
            stderr_pipe: false,
        }
    }

    /// Options for a replica on a shared Redis.
    pub fn redis(upstream: SocketAddr, redis_url: &str) -> Self {
        let mut o = Self::new(upstream);
        o.store_toml = format!("[store]\nbackend = \"redis\"\nurl = \"{redis_url}\"\n");
        o
    }
}

/// `/open/...` needs no key; `/v1/...` needs a key; `/leads/...` needs `leads:read`;
/// `/lookup` is a POST that only reads.
pub const DEFAULT_ROUTES: &str = r#"
[[routes]]
name = "open"
path = "/open/{*rest}"
upstream = "api"
auth = "none"

[[routes]]
name = "leads"
path = "/leads/{*rest}"
upstream = "api"
scopes = ["leads:read"]

[[routes]]
name = "lookup"
path = "/lookup"
methods = ["POST"]
upstream = "api"
permission = "read"

[[routes]]
name = "v1"
path = "/v1/{*rest}"
upstream = "api"
"#;

pub struct Keygate {
    pub dir: tempfile::TempDir,
    pub public: SocketAddr,
    pub admin: SocketAddr,
    pub ops: SocketAddr,
    pub config_path: PathBuf,
    child: Option<Child>,
    rust_log: String,
    env: Vec<(String, String)>,
    nofile: Option<u64>,
    stderr_pipe: bool,
    stderr: Option<std::process::ChildStderr>,
}

impl Keygate {
    pub fn start(opts: &Options) -> Keygate {
        let dir = tempfile::tempdir().expect("tempdir");
        Self::start_in(dir, opts)
    }

    fn start_in(dir: tempfile::TempDir, opts: &Options) -> Keygate {
        let public: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
        let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
        let ops: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
        let config_path = dir.path().join("keygate.toml");
        let config = format!(
            r#"
[server]
threads = 1
grace_period_seconds = 0
graceful_shutdown_timeout_seconds = 1
data_dir = "{data}"
{server_extra}

[listeners]
public = "{public}"
admin = "{admin}"
ops = "{ops}"
{listeners_extra}

[secrets]
pepper = {{ env = "KEYGATE_TEST_PEPPER" }}
admin_token = {{ env = "KEYGATE_TEST_ADMIN_TOKEN" }}

[keys]
prefix = "{prefix}"

{store}

[cache]
ttl_seconds = {ttl}
{cache_extra}

[usage]
last_used_interval_seconds = {lu}

[upstreams.api]
address = "{upstream}"

{routes}

{extra}
"#,
            data = dir.path().join("data").display(),
            server_extra = opts.server_toml,
            listeners_extra = opts.listeners_toml,
            prefix = opts.prefix,
            ttl = opts.cache_ttl_seconds,
            store = opts.store_toml,
            cache_extra = opts.cache_extra_toml,
            lu = opts.last_used_interval_seconds,
            upstream = opts.upstream,
            routes = opts.routes_toml,
            extra = opts.extra_toml,
        );
        std::fs::write(&config_path, config).expect("write config");
        let mut kg = Keygate {
            dir,
            public,
            admin,
            ops,
            config_path,
            child: None,
            rust_log: opts.rust_log.clone(),
            env: opts.env.clone(),
            nofile: opts.nofile,
            stderr_pipe: opts.stderr_pipe,
            stderr: None,
        };
        kg.spawn();
        kg
    }

    fn spawn(&mut self) {
        let log = std::fs::File::create(self.dir.path().join("keygate.log")).expect("log file");
        // A lowered open-file limit is set by a shell that then execs keygate in its place, so
        // the child's pid is keygate's.
        let mut command = match self.nofile {
            Some(n) => {
                let mut c = Command::new("sh");
                c.arg("-c")
                    .arg(format!("ulimit -n {n} && exec \"$0\" \"$@\""))
                    .arg(env!("CARGO_BIN_EXE_keygate"));
                c
            }
            None => Command::new(env!("CARGO_BIN_EXE_keygate")),
        };
        let child = command
            .arg("serve")
            .arg("--config")
            .arg(&self.config_path)
            .env("KEYGATE_TEST_PEPPER", PEPPER)
            .env("KEYGATE_TEST_ADMIN_TOKEN", ADMIN_TOKEN)
            .env("RUST_LOG", &self.rust_log)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(if self.stderr_pipe {
                Stdio::piped()
            } else {
                Stdio::from(log)
            })
            .spawn()
            .expect("start keygate");
        let mut child = child;
        self.stderr = child.stderr.take();
        self.child = Some(child);
        self.wait_ready();
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!("keygate exited early ({status}):\n{}", self.log());
                }
            }
            let ready = std::net::TcpStream::connect(self.public).is_ok()
                && std::net::TcpStream::connect(self.ops).is_ok()
                && get(&format!("http://{}/healthz", self.ops), &[]).status == 200;
            if ready {
                return;
            }
            if Instant::now() > deadline {
                panic!("keygate did not become ready:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the process (SIGKILL: nothing may depend on a clean shutdown) and starts it again
    /// on the same ports, config and data directory.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The running process's id (for `/proc/<pid>/...`).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("keygate is running").id()
    }

    /// Waits up to `timeout` for the process to exit by itself: its status, or `None` if it is
    /// still running then (it is left running).
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            let child = self.child.as_mut()?;
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Sends a signal (`"-HUP"`, ...) to the running process.
    pub fn signal(&self, which: &str) {
        send_signal(self.child.as_ref().expect("keygate is running"), which);
    }

    /// Waits until the log has `needle` at least `times` times.
    pub fn wait_for_log(&self, needle: &str, times: usize) {
        let seen = eventually(Duration::from_secs(10), || {
            self.log().matches(needle).count() >= times
        });
        assert!(seen, "no {needle:?} (x{times}) in the log:\n{}", self.log());
    }

    /// The read end of stderr, with `Options::stderr_pipe` (once).
    pub fn take_stderr(&mut self) -> Option<std::process::ChildStderr> {
        self.stderr.take()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("keygate.log")).unwrap_or_default()
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.public, path)
    }

    pub fn admin_url(&self) -> String {
        format!("http://{}", self.admin)
    }

    pub fn ops_url(&self, path: &str) -> String {
        format!("http://{}{}", self.ops, path)
    }

    /// An admin API call with the right token.
    pub fn admin(&self, method: &str, path: &str, body: Option<Value>) -> Resp {
        let auth = format!("Bearer {ADMIN_TOKEN}");
        request(
            method,
            &format!("http://{}{}", self.admin, path),
            &[("authorization", &auth)],
            body.as_ref(),
        )
    }

    pub fn create_account(&self, name: &str) -> String {
        let r = self.admin("POST", "/admin/v1/accounts", Some(json!({ "name": name })));
        assert_eq!(r.status, 201, "create account: {}", r.body);
        r.json()["id"].as_str().expect("account id").to_string()
    }

    /// Creates a key and returns (key id, plaintext).
    pub fn create_key(&self, account: &str, body: Value) -> (String, String) {
        let mut body = body;
        body["account_id"] = json!(account);
        if body.get("name").is_none() {
            body["name"] = json!("test key");
        }
        let r = self.admin("POST", "/admin/v1/keys", Some(body));
        assert_eq!(r.status, 201, "create key: {}", r.body);
        let v = r.json();
        (
            v["id"].as_str().expect("key id").to_string(),
            v["key"].as_str().expect("plaintext key").to_string(),
        )
    }
}

impl Drop for Keygate {
    fn drop(&mut self) {
        self.kill();
    }
}

pub fn bearer(key: &str) -> String {
    format!("Bearer {key}")
}

pub fn path_exists(p: &Path) -> bool {
    p.exists()
}

// ---------------------------------------------------------------- hand-written configs

/// The addresses a hand-written config gets: the data directory and the three listeners.
pub struct ConfigSlots {
    pub data_dir: PathBuf,
    pub public: SocketAddr,
    pub admin: SocketAddr,
    pub ops: SocketAddr,
}

impl Keygate {
    /// Starts keygate on a config the caller writes, for configs [`Options`] cannot express
    /// (for example one without a `[secrets]` section). `restart`, `admin` and the other helpers
    /// work as usual; `admin` sends the harness token, which a config without `[secrets]` does
    /// not use.
    pub fn start_with_config(write: impl FnOnce(&ConfigSlots) -> String) -> Keygate {
        let dir = tempfile::tempdir().expect("tempdir");
        let slots = ConfigSlots {
            data_dir: dir.path().join("data"),
            public: format!("127.0.0.1:{}", free_port()).parse().expect("addr"),
            admin: format!("127.0.0.1:{}", free_port()).parse().expect("addr"),
            ops: format!("127.0.0.1:{}", free_port()).parse().expect("addr"),
        };
        let config_path = dir.path().join("keygate.toml");
        std::fs::write(&config_path, write(&slots)).expect("write config");
        let mut kg = Keygate {
            dir,
            public: slots.public,
            admin: slots.admin,
            ops: slots.ops,
            config_path,
            child: None,
            rust_log: "info".into(),
            env: Vec::new(),
            nofile: None,
            stderr_pipe: false,
            stderr: None,
        };
        kg.spawn();
        kg
    }
}
