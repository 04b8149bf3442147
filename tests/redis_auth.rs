//! A Redis that requires a password, as the Kubernetes manifests run it: an ACL user `keygate`,
//! the `default` user off. keygate takes the password from `[store] password` (an environment
//! variable here, a Secret there) and authenticates every connection with it: the store, the
//! global rate limiter and the invalidation listener.

mod common;

use std::process::Command;
use std::time::Duration;

use common::redis_server::RedisServer;
use common::*;
use serde_json::json;

/// Characters a URL would need escaped, so a password that is not hex still works.
const PASSWORD: &str = "p@ss:w/rd%20?#x";

/// The rules deploy/kubernetes/base/redis.yaml gives the `keygate` user (after its password).
const RULES: [&str; 4] = ["~*", "&*", "+@all", "-@dangerous"];

/// A redis-server where only `keygate` with [`PASSWORD`] may do anything, and only what the
/// shipped manifest lets it.
fn redis_with_acl() -> RedisServer {
    let manifest = include_str!("../deploy/kubernetes/base/redis.yaml");
    assert!(
        manifest.contains(&format!("user keygate on >%s {}", RULES.join(" "))),
        "the manifest's ACL differs from the one tested here"
    );
    let redis = RedisServer::start();
    let password = format!(">{PASSWORD}");
    let mut args = vec!["ACL", "SETUSER", "keygate", "on", &password];
    args.extend(RULES);
    let set = redis.cli(&args);
    assert_eq!(set.trim(), "OK", "ACL SETUSER keygate: {set}");
    let off = redis.cli(&["ACL", "SETUSER", "default", "off"]);
    assert_eq!(off.trim(), "OK", "ACL SETUSER default off: {off}");
    // Unauthenticated clients are now refused.
    assert_ne!(redis.cli(&["PING"]).trim(), "PONG");
    redis
}

fn options(echo: &Echo, redis: &RedisServer, password: &str) -> Options {
    let mut opts = Options::new(echo.addr);
    opts.store_toml = format!(
        "[store]\nbackend = \"redis\"\nurl = \"redis://keygate@127.0.0.1:{}/0\"\n\
         password = {{ env = \"KEYGATE_TEST_REDIS_PASSWORD\" }}\n\n\
         [rate_limits]\nmode = \"redis\"\n",
        redis.port
    );
    opts.env = vec![("KEYGATE_TEST_REDIS_PASSWORD".into(), password.into())];
    opts
}

#[test]
fn keygate_authenticates_to_redis_as_its_acl_user() {
    let redis = redis_with_acl();
    let echo = Echo::start();
    let a = Keygate::start(&options(&echo, &redis, PASSWORD));
    let b = Keygate::start(&options(&echo, &redis, PASSWORD));
    wait_until("replica A ready", Duration::from_secs(20), || {
        get(&a.ops_url("/readyz"), &[]).status == 200
    });
    // The invalidation listener authenticated too: a revoke through A reaches B.
    wait_until(
        "B's invalidation subscription",
        Duration::from_secs(20),
        || metric(&b, "keygate_invalidation_connected", &[]) == 1.0,
    );
    let account = a.create_account("acme");
    let (id, key) = a.create_key(&account, json!({}));
    assert_eq!(call(&b, "/v1/x", &key).status, 200);
    let r = a.admin("POST", &format!("/admin/v1/keys/{id}/revoke"), None);
    assert_eq!(r.status, 200, "{}", r.body);
    wait_until(
        "B to refuse the revoked key",
        Duration::from_secs(10),
        || call(&b, "/v1/x", &key).status == 401,
    );
    // What keygate wrote is in Redis, under the ACL user.
    let keys = Command::new("redis-cli")
        .args([
            "-p",
            &redis.port.to_string(),
            "--user",
            "keygate",
            "--no-auth-warning",
        ])
        .args(["--pass", PASSWORD, "DBSIZE"])
        .output()
        .expect("redis-cli");
    let size: u64 = String::from_utf8_lossy(&keys.stdout)
        .trim()
        .parse()
        .unwrap_or(0);
    assert!(size > 0, "nothing stored in Redis");

    for kg in [&a, &b] {
        assert!(
            !kg.log().contains("p@ss") && !kg.log().contains("p%40ss"),
            "the Redis password reached the log:\n{}",
            kg.log()
        );
    }
}

#[test]
fn a_wrong_redis_password_is_not_ready_and_never_logged() {
    let redis = redis_with_acl();
    let echo = Echo::start();
    let wrong = "not-the-redis-password-42";
    let kg = Keygate::start(&options(&echo, &redis, wrong));
    let ready = get(&kg.ops_url("/readyz"), &[]);
    assert_eq!(ready.status, 503, "{}", ready.body);
    assert!(!ready.body.contains(wrong), "{}", ready.body);
    // Keys need the store: refused with 503, never let through.
    let r = call(
        &kg,
        "/v1/x",
        "kg_test_00000000000000000000000000000000000000",
    );
    assert_ne!(r.status, 200, "{}", r.body);
    assert!(!r.body.contains(wrong), "{}", r.body);
    assert!(
        !kg.log().contains(wrong),
        "the password reached the log:\n{}",
        kg.log()
    );
}

#[test]
fn check_config_names_a_missing_redis_password() {
    let redis = redis_with_acl();
    let echo = Echo::start();
    let kg = Keygate::start(&options(&echo, &redis, PASSWORD));
    let out = Command::new(env!("CARGO_BIN_EXE_keygate"))
        .arg("check-config")
        .arg(&kg.config_path)
        .env("KEYGATE_TEST_PEPPER", "a-pepper-value-0123456789abcdef")
        .env("KEYGATE_TEST_ADMIN_TOKEN", "an-admin-token-0123456789")
        .env_remove("KEYGATE_TEST_REDIS_PASSWORD")
        .output()
        .expect("run keygate check-config");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("store.password") && stderr.contains("KEYGATE_TEST_REDIS_PASSWORD"),
        "{stderr}"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_keygate"))
        .arg("check-config")
        .arg(&kg.config_path)
        .env("KEYGATE_TEST_PEPPER", "a-pepper-value-0123456789abcdef")
        .env("KEYGATE_TEST_ADMIN_TOKEN", "an-admin-token-0123456789")
        .env("KEYGATE_TEST_REDIS_PASSWORD", PASSWORD)
        .output()
        .expect("run keygate check-config");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
