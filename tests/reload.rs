//! SIGHUP reloads routes, limits and error templates in the running process, without dropping
//! connections; a config that does not validate, or that changes what takes a restart, is
//! refused and the previous configuration keeps serving.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::*;
use serde_json::json;

const READY: &str = "send SIGHUP to reload";
const RELOADED: &str = "configuration reloaded";
const REFUSED: &str = "configuration not reloaded";

fn edit_config(kg: &Keygate, f: impl FnOnce(String) -> String) {
    let text = std::fs::read_to_string(&kg.config_path).expect("read config");
    std::fs::write(&kg.config_path, f(text)).expect("write config");
}

/// One HTTP/1.1 request on an open connection; returns the status. The connection stays open.
fn on_connection(stream: &mut TcpStream, path: &str, key: &str) -> u16 {
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {key}\r\n\r\n"
    )
    .expect("write");
    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
    let mut status_line = String::new();
    reader.read_line(&mut status_line).expect("status line");
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).expect("header");
        if line == "\r\n" {
            break;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            length = v.trim().parse().expect("length");
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).expect("body");
    status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status")
}

/// A route only the reloaded configs have.
const V2_ROUTE: &str = "\n[[routes]]\nname = \"v2\"\npath = \"/v2/{*rest}\"\nupstream = \"api\"\n";

/// keygate with the default routes, ready for SIGHUP, and one valid key.
fn start_with_key() -> (Echo, Keygate, String) {
    let echo = Echo::start();
    let kg = Keygate::start(&Options::new(echo.addr));
    kg.wait_for_log(READY, 1);
    let account = kg.create_account("acme");
    let (_, key) = kg.create_key(&account, json!({}));
    (echo, kg, key)
}

#[test]
fn sighup_reloads_routes_limits_and_templates_and_keeps_connections() {
    let (_echo, kg, key) = start_with_key();
    assert_eq!(call(&kg, "/v1/x", &key).status, 200);
    let r = call(&kg, "/v2/x", &key);
    assert_eq!(
        (r.status, r.json()["error"]["code"].clone()),
        (404, json!("route_not_found"))
    );

    // A connection opened before the reload.
    let mut kept = TcpStream::connect(kg.public).expect("connect");
    assert_eq!(on_connection(&mut kept, "/v1/x", &key), 200);

    edit_config(&kg, |text| {
        format!(
            r#"{text}
[[routes]]
name = "v2"
path = "/v2/{{*rest}}"
upstream = "api"
rate_limit = {{ requests = 1, per_seconds = 3600, burst = 2 }}

[errors.missing_credential]
status = 401
body = '{{"message": "No apikey found"}}'
"#
        )
    });
    kg.signal("-HUP");
    kg.wait_for_log(RELOADED, 1);

    // The new route, its limit and the new template are live; the old route still works.
    for _ in 0..2 {
        let r = call(&kg, "/v2/x", &key);
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.header("ratelimit-limit"), Some("2"));
    }
    assert_eq!(call(&kg, "/v2/x", &key).status, 429);
    let r = get(&kg.url("/v1/x"), &[]);
    assert_eq!(
        (r.status, r.json()),
        (401, json!({"message": "No apikey found"}))
    );
    assert_eq!(call(&kg, "/v1/x", &key).status, 200);
    // The connection from before the reload still serves, with the new configuration.
    assert_eq!(on_connection(&mut kept, "/v1/x", &key), 200);
    assert_eq!(on_connection(&mut kept, "/v2/x", &key), 429);
    // Counted, and the new route has its own metrics row. A request is counted once its
    // answer is written, so the last one may still be on its way to the counter.
    let metrics = get(&kg.ops_url("/metrics"), &[]).body;
    assert!(
        metrics.contains(r#"keygate_config_reloads_total{result="ok"} 1"#),
        "{metrics}"
    );
    wait_until(
        "both 429s on v2 are counted",
        Duration::from_secs(10),
        || {
            metric(
                &kg,
                "keygate_requests_total",
                &[("outcome", "rate_limited"), ("route", "v2")],
            ) == 2.0
        },
    );
}

#[test]
fn a_bad_or_restart_only_change_is_refused_and_the_old_config_keeps_serving() {
    let (_echo, kg, key) = start_with_key();
    let original = std::fs::read_to_string(&kg.config_path).expect("read config");

    // Not valid: an unknown field, named with its line in the log.
    edit_config(&kg, |text| format!("{text}{V2_ROUTE}bogus = 1\n"));
    kg.signal("-HUP");
    kg.wait_for_log(REFUSED, 1);
    assert!(kg.log().contains("bogus"), "{}", kg.log());
    assert_eq!(call(&kg, "/v1/x", &key).status, 200);
    assert_eq!(call(&kg, "/v2/x", &key).status, 404);

    // Valid, but it moves a listener (and adds a route): refused as a whole.
    std::fs::write(
        &kg.config_path,
        original.replace(
            &format!("ops = \"{}\"", kg.ops),
            &format!("ops = \"127.0.0.1:{}\"", free_port()),
        ) + V2_ROUTE,
    )
    .expect("write config");
    kg.signal("-HUP");
    kg.wait_for_log(REFUSED, 2);
    assert!(kg.log().contains("[listeners] changed"), "{}", kg.log());
    assert_eq!(call(&kg, "/v2/x", &key).status, 404);
    assert_eq!(get(&kg.ops_url("/healthz"), &[]).status, 200);
    let metrics = get(&kg.ops_url("/metrics"), &[]).body;
    assert!(
        metrics.contains(r#"keygate_config_reloads_total{result="error"} 2"#),
        "{metrics}"
    );

    // Put back and reload: the route-only change applies.
    std::fs::write(&kg.config_path, original + V2_ROUTE).expect("write config");
    kg.signal("-HUP");
    kg.wait_for_log(RELOADED, 1);
    assert_eq!(call(&kg, "/v2/x", &key).status, 200);
}

/// A SIGHUP that comes while keygate is still starting (before its reload listener runs, for
/// example from a config reloader as the pod starts) does not take SIGHUP's default action,
/// which ends the process: keygate starts and serves. To hold keygate at a known point of its
/// startup, its pepper is read from a named pipe that the test writes only after the signal.
#[test]
fn a_sighup_during_startup_does_not_end_keygate() {
    let echo = Echo::start();
    let mut kg = Keygate::start(&Options::new(echo.addr));
    let public = kg.public;
    let text = std::fs::read_to_string(&kg.config_path).expect("read config");
    kg.kill();
    let fifo = kg.dir.path().join("pepper.fifo");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("run mkfifo");
    assert!(made.success(), "mkfifo failed");
    let env_pepper = r#"pepper = { env = "KEYGATE_TEST_PEPPER" }"#;
    assert!(text.contains(env_pepper), "{text}");
    let config = kg.dir.path().join("fifo.toml");
    std::fs::write(
        &config,
        text.replace(
            env_pepper,
            &format!("pepper = {{ file = \"{}\" }}", fifo.display()),
        ),
    )
    .expect("write config");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_keygate"))
        .arg("serve")
        .arg("--config")
        .arg(&config)
        .env("KEYGATE_TEST_ADMIN_TOKEN", ADMIN_TOKEN)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start keygate");
    // Opening the pipe to write returns once keygate opened it to read: it is reading its
    // configuration, well before it could reload one.
    let (opened, writer) = std::sync::mpsc::channel();
    let path = fifo.clone();
    std::thread::spawn(move || {
        let _ = opened.send(std::fs::OpenOptions::new().write(true).open(path));
    });
    let Ok(Ok(mut pepper)) = writer.recv_timeout(Duration::from_secs(20)) else {
        let _ = child.kill();
        panic!("keygate never opened its pepper file");
    };
    send_signal(&child, "-HUP");
    std::thread::sleep(Duration::from_millis(200));
    let after_signal = child.try_wait().ok().flatten();
    // A keygate that died has no reader: the assertion below says so, not this write.
    let _ = pepper.write_all(PEPPER.as_bytes());
    drop(pepper);
    let serving = after_signal.is_none()
        && eventually(Duration::from_secs(20), || {
            std::net::TcpStream::connect(public).is_ok()
                && get(&format!("http://{public}/open/x"), &[]).status == 200
        });
    let exited = child.try_wait().ok().flatten();
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(after_signal, None, "SIGHUP during startup ended keygate");
    assert!(serving && exited.is_none(), "not serving; exit {exited:?}");
}
