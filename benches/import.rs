//! `keygate keys import FILE` against a running keygate on the embedded SQLite store: the whole
//! path a provider's migration takes (the CLI reading a JSON-lines file, the admin API, the key
//! service, one SQLite transaction per batch). Prints keys per second; the target is 50,000/s.
//!
//! Run: `cargo bench --bench import` (100,000 keys; `KEYGATE_BENCH_IMPORT_KEYS` to change).
//! `cargo test --all-targets` runs it without `--bench`: 1,000 keys, as a check of the setup.

use std::net::TcpListener;
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

const PEPPER: &str = "bench-pepper-0123456789abcdef";
const ADMIN_TOKEN: &str = "bench-admin-token-0123456789";

fn main() -> ExitCode {
    let load_run = std::env::args().any(|a| a == "--bench");
    let count = if load_run {
        std::env::var("KEYGATE_BENCH_IMPORT_KEYS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(100_000usize)
    } else {
        1_000
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let port = || {
        TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port")
    };
    let (public, admin, ops, upstream) = (port(), port(), port(), port());
    let config = format!(
        r#"
[server]
threads = 1
grace_period_seconds = 0
graceful_shutdown_timeout_seconds = 1
data_dir = "{data}"

[listeners]
public = "127.0.0.1:{public}"
admin = "127.0.0.1:{admin}"
ops = "127.0.0.1:{ops}"

[secrets]
pepper = {{ env = "KEYGATE_BENCH_PEPPER" }}
admin_token = {{ env = "KEYGATE_BENCH_ADMIN_TOKEN" }}

[keys]
prefix = "kg_live_"
legacy = [{{ prefix = "sk_", min_length = 20, max_length = 128, hash = "sha256" }}]

[upstreams.api]
address = "127.0.0.1:{upstream}"

[[routes]]
name = "v1"
path = "/v1/{{*rest}}"
upstream = "api"
"#,
        data = dir.path().join("data").display(),
    );
    let config_path = dir.path().join("keygate.toml");
    std::fs::write(&config_path, config).expect("write config");
    let log = dir.path().join("keygate.log");
    let child = Command::new(env!("CARGO_BIN_EXE_keygate"))
        .args(["serve", "--config"])
        .arg(&config_path)
        .env("KEYGATE_BENCH_PEPPER", PEPPER)
        .env("KEYGATE_BENCH_ADMIN_TOKEN", ADMIN_TOKEN)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(std::fs::File::create(&log).expect("log")))
        .spawn()
        .expect("start keygate");
    let _guard = Stop(child);
    let admin_url = format!("http://127.0.0.1:{admin}");
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into();
    let deadline = Instant::now() + Duration::from_secs(30);
    let account = loop {
        let reply = agent
            .post(&format!("{admin_url}/admin/v1/accounts"))
            .header("authorization", &format!("Bearer {ADMIN_TOKEN}"))
            .send_json(json!({ "name": "bench" }));
        if let Ok(mut r) = reply {
            if r.status().as_u16() == 201 {
                let v: serde_json::Value = r.body_mut().read_json().expect("json");
                break v["id"].as_str().expect("id").to_string();
            }
        }
        assert!(
            Instant::now() < deadline,
            "keygate did not start:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    };

    let file = dir.path().join("keys.jsonl");
    let mut text = String::with_capacity(count * 100);
    for i in 0..count {
        let r: u128 = rand::random();
        text.push_str(
            &json!({ "key": format!("sk_{i:08}{r:032x}"), "account_id": account }).to_string(),
        );
        text.push('\n');
    }
    std::fs::write(&file, text).expect("write keys");

    let started = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_keygate"))
        .args(["keys", "import", "--json"])
        .arg(&file)
        .env("KEYGATE_ADMIN_URL", &admin_url)
        .env("KEYGATE_ADMIN_TOKEN", ADMIN_TOKEN)
        .output()
        .expect("run keygate keys import");
    let elapsed = started.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "import failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: serde_json::Value = serde_json::from_str(&stdout).expect("summary");
    assert_eq!(summary["created"], count, "{summary}");
    println!(
        "keygate keys import (SQLite): {count} keys in {:.2} s = {:.0} keys/s (target 50000)",
        elapsed.as_secs_f64(),
        count as f64 / elapsed.as_secs_f64()
    );
    ExitCode::SUCCESS
}

/// Stops keygate when the bench ends, however it ends.
struct Stop(Child);

impl Drop for Stop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
