//! Forward-auth through real proxies: nginx (`auth_request`, `auth_request_set`) and Caddy
//! (`forward_auth`) in front of an echo API, each configured with the README's own snippet, with
//! keygate deciding on `local = "verify"` routes. What a client of the proxy sees (status, body
//! byte for byte, `Retry-After`, `RateLimit-*`) and what the API receives (identity headers, no
//! credential, no spoofed identity) are checked; plus the Envoy-style path form and a missing
//! original straight against keygate.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use serde_json::json;

/// The README's keygate routes for forward-auth, then routes to decide on: the defaults, a paid
/// one and a limited one.
fn routes() -> String {
    let verify = readme_block("## Forward-auth for other proxies", "toml");
    format!(
        r#"{verify}
[[routes]]
name = "paid"
path = "/paid/{{*rest}}"
upstream = "api"
cost = 1

[[routes]]
name = "limited"
path = "/limited/{{*rest}}"
upstream = "api"
rate_limit = {{ requests = 1, per_seconds = 60, burst = 2 }}
{DEFAULT_ROUTES}"#
    )
}

/// The first ```{lang} block under `heading` in the README.
fn readme_block(heading: &str, lang: &str) -> String {
    let readme = include_str!("../README.md");
    let start = readme
        .find(&format!("\n{heading}\n"))
        .unwrap_or_else(|| panic!("no {heading:?} section in the README"));
    readme[start..]
        .split(&format!("```{lang}\n"))
        .nth(1)
        .and_then(|b| b.split("```").next())
        .unwrap_or_else(|| panic!("no ```{lang} block under {heading:?}"))
        .to_string()
}

fn start_keygate(echo: &Echo) -> Keygate {
    let mut opts = Options::new(echo.addr);
    opts.routes_toml = routes();
    Keygate::start(&opts)
}

/// A proxy process, stopped (and waited for) when dropped.
struct Proxy {
    child: Child,
    addr: String,
    dir: tempfile::TempDir,
    what: &'static str,
}

impl Proxy {
    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn wait_ready(&mut self) {
        let addr = self.addr.clone();
        let ready = eventually(Duration::from_secs(20), || {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("{} exited ({status}): {}", self.what, self.log());
            }
            std::net::TcpStream::connect(&addr).is_ok()
        });
        assert!(
            ready,
            "{} did not listen on {addr}: {}",
            self.what,
            self.log()
        );
    }

    fn log(&self) -> String {
        let mut text = String::new();
        for name in ["error.log", "caddy.log"] {
            text.push_str(&std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default());
        }
        text
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        // Not `send_signal`: a proxy that already exited must not panic inside a drop.
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let gone = eventually(Duration::from_secs(5), || {
            matches!(self.child.try_wait(), Ok(Some(_)))
        });
        if !gone {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `tool` must be installed; the test says how when it is not.
fn require(tool: &str) -> PathBuf {
    let found = ["/usr/sbin", "/usr/bin", "/usr/local/bin", "/usr/local/sbin"]
        .iter()
        .map(|d| Path::new(d).join(tool))
        .find(|p| p.exists());
    found.unwrap_or_else(|| {
        panic!("`{tool}` is not installed: apt-get install -y {tool} (as .ci/run does)")
    })
}

/// nginx with the README's server block: keygate and the API at their real addresses, listening
/// on a free port, its files in a temp dir.
fn start_nginx(kg: &Keygate, api: std::net::SocketAddr) -> Proxy {
    let nginx = require("nginx");
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let server = readme_block("### nginx", "nginx")
        .replace("127.0.0.1:8080", &kg.public.to_string())
        .replace("127.0.0.1:9000", &api.to_string())
        .replace("listen 127.0.0.1:80;", &format!("listen 127.0.0.1:{port};"));
    assert!(server.contains(&format!(":{port};")), "{server}");
    let d = dir.path().display();
    let conf = format!(
        "daemon off;\nmaster_process off;\npid {d}/nginx.pid;\nerror_log {d}/error.log info;\n\
         events {{ worker_connections 256; }}\n\
         http {{\n access_log off;\n client_body_temp_path {d}/body;\n proxy_temp_path {d}/proxy;\n\
         fastcgi_temp_path {d}/fastcgi;\n uwsgi_temp_path {d}/uwsgi;\n scgi_temp_path {d}/scgi;\n\
         {server}\n}}\n"
    );
    let path = dir.path().join("nginx.conf");
    std::fs::write(&path, conf).expect("nginx.conf");
    let child = Command::new(nginx)
        .arg("-p")
        .arg(dir.path())
        .arg("-c")
        .arg(&path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start nginx");
    let mut proxy = Proxy {
        child,
        addr: format!("127.0.0.1:{port}"),
        dir,
        what: "nginx",
    };
    proxy.wait_ready();
    proxy
}

/// Caddy with the README's Caddyfile, on a free port, its admin endpoint off and its state in a
/// temp dir.
fn start_caddy(kg: &Keygate, api: std::net::SocketAddr) -> Proxy {
    let caddy = require("caddy");
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let site = readme_block("### Caddy", "caddyfile")
        .replace("127.0.0.1:8080", &kg.public.to_string())
        .replace("127.0.0.1:9000", &api.to_string())
        .replace(":80 {", &format!("http://127.0.0.1:{port} {{"));
    assert!(site.contains(&format!(":{port} {{")), "{site}");
    let conf = format!("{{\n\tadmin off\n\tauto_https off\n}}\n\n{site}");
    let path = dir.path().join("Caddyfile");
    std::fs::write(&path, conf).expect("Caddyfile");
    let log = std::fs::File::create(dir.path().join("caddy.log")).expect("log");
    let child = Command::new(caddy)
        .arg("run")
        .arg("--config")
        .arg(&path)
        .arg("--adapter")
        .arg("caddyfile")
        .env("HOME", dir.path())
        .env("XDG_DATA_HOME", dir.path())
        .env("XDG_CONFIG_HOME", dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(log))
        .spawn()
        .expect("start caddy");
    let mut proxy = Proxy {
        child,
        addr: format!("127.0.0.1:{port}"),
        dir,
        what: "caddy",
    };
    proxy.wait_ready();
    proxy
}

fn via(proxy: &Proxy, method: &str, path: &str, key: Option<&str>, extra: &[(&str, &str)]) -> Resp {
    let auth = key.map(bearer);
    let mut headers: Vec<(&str, &str)> = extra.to_vec();
    if let Some(a) = &auth {
        headers.push(("authorization", a));
    }
    let body = (method == "POST").then(|| json!({"q": 1}));
    request(method, &proxy.url(path), &headers, body.as_ref())
}

/// The same request straight to keygate (what the proxy must pass on when refused).
fn direct(kg: &Keygate, method: &str, path: &str, key: Option<&str>) -> Resp {
    let body = (method == "POST").then(|| json!({"q": 1}));
    call_with(kg, method, path, key, body.as_ref())
}

/// Everything a proxy in front must show, whichever proxy it is. `rate_headers` says whether
/// the client gets `RateLimit-*` on an allowed request (nginx's config adds them; Caddy's
/// `forward_auth` copies the check's headers onto the request only).
fn check_proxy(kg: &Keygate, echo: &Echo, proxy: &Proxy, rate_headers: bool) {
    let account = kg.create_account("acme");
    let (key_id, key) = kg.create_key(&account, json!({"name": "agent"}));
    let (_, leads) = kg.create_key(&account, json!({"scopes": ["leads:read"]}));
    let what = proxy.what;

    // Allowed: the API gets the request with keygate's identity, never the key, never a
    // client's own identity header.
    let r = via(
        proxy,
        "GET",
        "/v1/items?page=2",
        Some(&key),
        &[
            ("x-keygate-user-id", "usr_spoofed"),
            ("x-keygate-key-id", "key_spoofed"),
        ],
    );
    assert_eq!(r.status, 200, "{what}: {}", r.body);
    let v = r.json();
    assert_eq!(v["path"], "/v1/items", "{what}");
    assert_eq!(v["query"], "page=2", "{what}");
    let seen = &v["headers"];
    assert_eq!(seen["x-keygate-key-id"], key_id.as_str(), "{what}: {seen}");
    assert_eq!(
        seen["x-keygate-account-id"],
        account.as_str(),
        "{what}: {seen}"
    );
    assert_eq!(seen["x-keygate-key-name"], "agent", "{what}: {seen}");
    assert_eq!(seen["x-keygate-auth-method"], "api_key", "{what}: {seen}");
    // The key has no user: keygate answers the header empty, which replaces the client's.
    assert!(
        seen.get("x-keygate-user-id").is_none_or(|u| u == ""),
        "{what}: spoofed: {seen}"
    );
    assert!(
        seen.get("authorization").is_none(),
        "{what}: the key went upstream: {seen}"
    );
    let hits = echo.hits();

    // A POST reaches the API with its body (the check itself carries none).
    let r = via(proxy, "POST", "/lookup", Some(&key), &[]);
    assert_eq!(r.status, 200, "{what}: {}", r.body);
    assert_eq!(r.json()["method"], "POST", "{what}");
    assert_eq!(r.json()["body"], r#"{"q":1}"#, "{what}");
    assert_eq!(echo.hits(), hits + 1);

    // Refusals: keygate's own status, headers and body, byte for byte; the API never called.
    let hits = echo.hits();
    let refusals: [(&str, &str, Option<&str>, u16); 5] = [
        ("GET", "/v1/x", None, 401),
        ("GET", "/v1/x", Some("kg_test_bad"), 401),
        ("GET", "/leads/x", Some(&key), 403),
        ("GET", "/lookup", Some(&key), 405),
        ("GET", "/nowhere", Some(&key), 404),
    ];
    for (method, path, credential, status) in refusals {
        let r = via(proxy, method, path, credential, &[]);
        let d = direct(kg, method, path, credential);
        assert_eq!(d.status, status, "{}", d.body);
        assert_eq!(r.status, status, "{what} {method} {path}: {}", r.body);
        assert_eq!(r.body, d.body, "{what} {method} {path}");
        for h in ["www-authenticate", "allow", "content-type"] {
            assert_eq!(r.header(h), d.header(h), "{what} {method} {path}: {h}");
        }
    }
    assert_eq!(
        echo.hits(),
        hits,
        "{what}: a refused request reached the API"
    );
    assert_eq!(via(proxy, "GET", "/leads/x", Some(&leads), &[]).status, 200);

    // Credits: one request's worth, then 402 with keygate's body; the one allowed request was
    // charged once.
    let r = kg.admin(
        "POST",
        &format!("/admin/v1/accounts/{account}/credits"),
        Some(json!({"delta": 1})),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let r = via(proxy, "GET", "/paid/x", Some(&key), &[]);
    assert_eq!(r.status, 200, "{what}: {}", r.body);
    assert_eq!(
        r.json()["headers"]["x-keygate-credits-remaining"],
        "0",
        "{what}"
    );
    let r = via(proxy, "GET", "/paid/x", Some(&key), &[]);
    let d = direct(kg, "GET", "/paid/x", Some(&key));
    assert_eq!(d.status, 402, "{}", d.body);
    assert_eq!(r.status, 402, "{what}: {}", r.body);
    assert_eq!(r.body, d.body, "{what}");
    let balance = admin_ok(
        kg,
        "GET",
        &format!("/admin/v1/accounts/{account}/credits"),
        None,
    );
    assert_eq!(balance["balance"], 0, "{what}: {balance}");

    // Rate limits: a burst of 2 with `RateLimit-*` on the client's answer, then 429 with
    // `Retry-After` and keygate's body.
    let (_, limited) = kg.create_key(&account, json!({}));
    for remaining in ["1", "0"] {
        let r = via(proxy, "GET", "/limited/x", Some(&limited), &[]);
        assert_eq!(r.status, 200, "{what}: {}", r.body);
        if rate_headers {
            assert_eq!(
                r.header("ratelimit-limit"),
                Some("2"),
                "{what}: {:?}",
                r.headers
            );
            assert_eq!(r.header("ratelimit-remaining"), Some(remaining), "{what}");
        }
    }
    let r = via(proxy, "GET", "/limited/x", Some(&limited), &[]);
    assert_eq!(r.status, 429, "{what}: {}", r.body);
    assert_eq!(code(&r), "rate_limited", "{what}");
    let retry: u64 = r
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{what}: no Retry-After: {:?}", r.headers));
    assert!((1..=60).contains(&retry), "{what}: {retry}");
    assert_eq!(r.header("ratelimit-remaining"), Some("0"), "{what}");
}

#[test]
fn nginx_auth_request_with_the_readme_config() {
    let echo = Echo::start();
    let kg = start_keygate(&echo);
    let nginx = start_nginx(&kg, echo.addr);
    check_proxy(&kg, &echo, &nginx, true);
}

#[test]
fn caddy_forward_auth_with_the_readme_config() {
    let echo = Echo::start();
    let kg = start_keygate(&echo);
    let caddy = start_caddy(&kg, echo.addr);
    check_proxy(&kg, &echo, &caddy, false);
}

/// Straight against keygate: the headers each `original` names, the Envoy path form, a verify
/// route asked about itself, and a check without its headers.
#[test]
fn verify_routes_read_the_original_request_where_configured() {
    let echo = Echo::start();
    let kg = start_keygate(&echo);
    let account = kg.create_account("acme");
    let (key_id, key) = kg.create_key(&account, json!({}));
    let auth = bearer(&key);
    let check = |path: &str, headers: &[(&str, &str)]| {
        let mut all = headers.to_vec();
        all.push(("authorization", auth.as_str()));
        get(&kg.url(path), &all)
    };
    let allowed = [
        check(
            "/_keygate",
            &[
                ("x-original-method", "GET"),
                ("x-original-uri", "/v1/x?a=1"),
            ],
        ),
        check(
            "/_keygate/forwarded",
            &[
                ("x-forwarded-method", "POST"),
                ("x-forwarded-uri", "/lookup"),
            ],
        ),
        check("/_keygate/envoy/v1/deep/x", &[]),
    ];
    for r in allowed {
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.body, "");
        assert_eq!(r.header("x-keygate-key-id"), Some(key_id.as_str()));
        assert_eq!(r.header("x-keygate-account-id"), Some(account.as_str()));
        assert!(r.header("x-request-id").is_some());
    }
    assert_eq!(echo.hits(), 0, "a check never reaches the API");

    // The method counts: GET /lookup is 405, as it would be sent to keygate.
    let r = check(
        "/_keygate",
        &[("x-original-method", "GET"), ("x-original-uri", "/lookup")],
    );
    assert_error(&r, 405, "method_not_allowed");
    assert_eq!(r.header("allow"), Some("POST"));

    // No headers: 400 missing_original; a non-canonical original path: invalid_path.
    let r = check("/_keygate", &[]);
    assert_error(&r, 400, "missing_original");
    let r = check("/_keygate/forwarded", &[("x-forwarded-method", "GET")]);
    assert_error(&r, 400, "missing_original");
    let r = check(
        "/_keygate",
        &[
            ("x-original-method", "GET"),
            ("x-original-uri", "/open/../v1/x"),
        ],
    );
    assert_error(&r, 400, "invalid_path");

    // A verify route asked about a verify route: not a route to decide on.
    let r = check(
        "/_keygate",
        &[
            ("x-original-method", "GET"),
            ("x-original-uri", "/_keygate"),
        ],
    );
    assert_error(&r, 404, "route_not_found");
    assert_eq!(echo.hits(), 0);
}

/// `original` is checked by `check-config`: required on verify routes, refused elsewhere, and
/// `"path"` needs a catch-all.
#[test]
fn check_config_refuses_a_verify_route_it_cannot_serve() {
    let cases = [
        (
            "path = \"/v\"\nlocal = \"verify\"\nauth = \"none\"",
            "original",
        ),
        (
            "path = \"/v\"\nlocal = \"verify\"\nauth = \"none\"\noriginal = \"path\"",
            "must end in `/{*name}`",
        ),
        (
            "path = \"/v\"\nupstream = \"api\"\noriginal = \"x-original\"",
            "only `local = \"verify\"`",
        ),
        (
            "path = \"/v\"\nlocal = \"verify\"\noriginal = \"x-original\"",
            "auth",
        ),
        (
            "path = \"/v\"\nlocal = \"verify\"\nauth = \"none\"\noriginal = \"nginx\"",
            "x-original",
        ),
    ];
    for (route, expected) in cases {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("keygate.toml");
        let text = format!("[upstreams.api]\naddress = \"127.0.0.1:9\"\n\n[[routes]]\n{route}\n");
        std::fs::write(&path, &text).expect("write");
        let out = Command::new(env!("CARGO_BIN_EXE_keygate"))
            .args(["check-config", "--skip-secrets"])
            .arg(&path)
            .output()
            .expect("check-config");
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!out.status.success(), "{text} passed");
        assert!(said.contains(expected), "{text}: {said}");
    }
}
