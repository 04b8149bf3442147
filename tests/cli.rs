//! The `keygate accounts|keys|credits` subcommands against a running keygate, through the real binary.

mod common;
use common::*;

use std::io::Write;
use std::process::{Command, Output, Stdio};

use serde_json::{json, Value};

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

fn run_with(url: &str, token: Option<&str>, args: &[&str]) -> Run {
    run_full(url, token, args, &[], None)
}

/// Runs keygate with extra environment variables and, optionally, text on standard input.
fn run_full(
    url: &str,
    token: Option<&str>,
    args: &[&str],
    env: &[(&str, &str)],
    stdin: Option<&str>,
) -> Run {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_keygate"));
    cmd.args(args)
        .env("KEYGATE_ADMIN_URL", url)
        .env_remove("KEYGATE_ADMIN_TOKEN")
        .env_remove("KEYGATE_USER_PASSWORD");
    if let Some(t) = token {
        cmd.env("KEYGATE_ADMIN_TOKEN", t);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("run keygate");
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes()).expect("write stdin");
    }
    let Output {
        status,
        stdout,
        stderr,
    } = child.wait_with_output().expect("run keygate");
    let run = Run {
        code: status.code(),
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    };
    assert!(
        !run.stdout.contains(ADMIN_TOKEN) && !run.stderr.contains(ADMIN_TOKEN),
        "the admin token was printed"
    );
    run
}

/// Runs a subcommand with the right token and expects success.
fn ok(kg: &Keygate, args: &[&str]) -> String {
    let r = run_with(&kg.admin_url(), Some(ADMIN_TOKEN), args);
    assert_eq!(
        r.code,
        Some(0),
        "{args:?}\nstdout: {}\nstderr: {}",
        r.stdout,
        r.stderr
    );
    r.stdout
}

fn ok_json(kg: &Keygate, args: &[&str]) -> Value {
    let mut args = args.to_vec();
    args.push("--json");
    let out = ok(kg, &args);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

#[test]
fn accounts_create_list_and_status() {
    let (_echo, kg) = start();
    let out = ok(&kg, &["accounts", "create", "Acme Widgets"]);
    assert!(out.starts_with("ID "), "{out}");
    assert!(
        out.contains("Acme Widgets") && out.contains("active"),
        "{out}"
    );

    let created = ok_json(&kg, &["accounts", "create", "Second Co"]);
    let id = created["id"].as_str().expect("id").to_string();
    assert_eq!(created["status"], "active");

    let table = ok(&kg, &["accounts", "list"]);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 3, "{table}");
    let header: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(
        header,
        ["ID", "NAME", "STATUS", "PLAN", "CREDITS", "CREATED"]
    );
    assert!(lines[1].contains("Acme Widgets"), "{table}");
    assert!(lines[2].starts_with(&id), "{table}");
    // Columns line up: every row's NAME starts where the heading does.
    let name_col = lines[0].find("NAME").expect("NAME");
    assert_eq!(lines[1].find("Acme Widgets"), Some(name_col), "{table}");

    let listed = ok_json(&kg, &["accounts", "list", "--limit", "1"]);
    assert_eq!(listed["accounts"].as_array().map(Vec::len), Some(1));
    assert!(listed["next"].is_string());

    assert!(ok(&kg, &["accounts", "suspend", &id]).contains("suspended"));
    assert!(ok(&kg, &["accounts", "reactivate", &id]).contains("active"));
    assert!(ok(&kg, &["accounts", "delete", &id]).contains("deleted"));
    // A deleted account is gone: reading or reactivating it is not found.
    for verb in ["get", "reactivate"] {
        let r = run_with(&kg.admin_url(), Some(ADMIN_TOKEN), &["accounts", verb, &id]);
        assert_eq!(r.code, Some(1));
        assert_eq!(r.stderr.trim(), "error: 404 not_found: account not found");
    }
    let r = run_with(
        &kg.admin_url(),
        Some(ADMIN_TOKEN),
        &["accounts", "get", "acc_nope"],
    );
    assert_eq!(r.code, Some(1));
    assert_eq!(r.stderr.trim(), "error: 404 not_found: account not found");
}

#[test]
fn account_metadata_from_the_cli() {
    let (_echo, kg) = start();
    let created = ok_json(
        &kg,
        &[
            "accounts",
            "create",
            "Hooked",
            "--metadata",
            r#"{"webhooks":["https://a.example/h"]}"#,
        ],
    );
    let id = created["id"].as_str().expect("id").to_string();
    assert_eq!(
        created["metadata"],
        serde_json::json!({ "webhooks": ["https://a.example/h"] })
    );
    let set = ok_json(
        &kg,
        &["accounts", "set-metadata", &id, r#"{"tier":"gold"}"#],
    );
    assert_eq!(set["metadata"], serde_json::json!({ "tier": "gold" }));
    let got = ok_json(&kg, &["accounts", "get", &id]);
    assert_eq!(got["metadata"], serde_json::json!({ "tier": "gold" }));
    // Not an object, or not JSON: a usage error before any request, naming the problem.
    for bad in ["[1]", "{nope"] {
        let r = run_with(
            &kg.admin_url(),
            Some(ADMIN_TOKEN),
            &["accounts", "set-metadata", &id, bad],
        );
        assert_eq!(r.code, Some(2), "{bad}: {}", r.stderr);
        assert!(r.stderr.contains("metadata"), "{}", r.stderr);
    }
    let got = ok_json(&kg, &["accounts", "get", &id]);
    assert_eq!(got["metadata"], serde_json::json!({ "tier": "gold" }));
}

#[test]
fn key_metadata_from_the_cli() {
    let (_echo, kg) = start();
    let account = kg.create_account("acme");
    let created = ok_json(
        &kg,
        &[
            "keys",
            "create",
            "--account",
            &account,
            "--name",
            "tagged",
            "--metadata",
            r#"{"customer":"c_42"}"#,
        ],
    );
    let id = created["id"].as_str().expect("id").to_string();
    assert_eq!(created["metadata"], json!({ "customer": "c_42" }));
    let set = ok_json(&kg, &["keys", "set-metadata", &id, r#"{"tier":"gold"}"#]);
    assert_eq!(set["metadata"], json!({ "tier": "gold" }));
    let r = run_with(
        &kg.admin_url(),
        Some(ADMIN_TOKEN),
        &["keys", "set-metadata", &id, "[1]"],
    );
    assert_eq!(r.code, Some(2), "{}", r.stderr);
    assert!(r.stderr.contains("metadata"), "{}", r.stderr);
    let got = ok_json(&kg, &["keys", "get", &id]);
    assert_eq!(got["metadata"], json!({ "tier": "gold" }));
}

#[test]
fn keys_created_by_the_cli_work_on_the_proxy_until_revoked() {
    let (_echo, kg) = start();
    let account = kg.create_account("acme");

    let created = ok_json(
        &kg,
        &[
            "keys",
            "create",
            "--account",
            &account,
            "--name",
            "cli key",
            "--scope",
            "leads:read",
            "--permission",
            "read",
        ],
    );
    let key = created["key"].as_str().expect("key").to_string();
    let id = created["id"].as_str().expect("id").to_string();
    let prefix = created["display_prefix"]
        .as_str()
        .expect("prefix")
        .to_string();
    assert_eq!(created["scopes"], json!(["leads:read"]));
    assert_eq!(created["permission"], "read");
    let r = call(&kg, "/leads/1", &key);
    assert_eq!(r.status, 200, "{}", r.body);

    // The list shows the display prefix, never the plaintext.
    let table = ok(&kg, &["keys", "list", "--account", &account]);
    let header: Vec<&str> = table
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    assert_eq!(
        header,
        [
            "ID",
            "NAME",
            "PREFIX",
            "SCOPES",
            "PERMISSION",
            "RATE_LIMIT",
            "STATUS",
            "CREATED",
            "EXPIRES",
            "LAST_USED"
        ]
    );
    assert!(table.contains(&prefix), "{table}");
    assert!(
        table.contains(&id) && table.contains("leads:read"),
        "{table}"
    );
    assert!(!table.contains(&key), "{table}");
    let listed = ok_json(&kg, &["keys", "list", "--account", &account]);
    assert!(!listed.to_string().contains(&key));

    // The human create output labels the plaintext and the id.
    let out = ok(
        &kg,
        &["keys", "create", "--account", &account, "--name", "second"],
    );
    assert!(out.contains("API key (shown only now"), "{out}");
    let plaintext = out
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("kg_test_"))
        .expect("plaintext line")
        .to_string();
    assert!(out.contains("id:"), "{out}");
    assert_eq!(call(&kg, "/v1/x", &plaintext).status, 200);

    // Updates.
    let renamed = ok_json(&kg, &["keys", "rename", &id, "renamed"]);
    assert_eq!(renamed["name"], "renamed");
    let scoped = ok_json(&kg, &["keys", "set-scopes", &id, "a:read", "b"]);
    assert_eq!(scoped["scopes"], json!(["a:read", "b"]));
    let expiring = ok_json(&kg, &["keys", "set-expiry", &id, "2090-01-01T00:00:00Z"]);
    assert_eq!(expiring["expires_at"], "2090-01-01T00:00:00Z");
    let never = ok_json(&kg, &["keys", "set-expiry", &id, "never"]);
    assert_eq!(never["expires_at"], Value::Null);
    let cleared = ok_json(&kg, &["keys", "set-scopes", &id]);
    assert_eq!(cleared["scopes"], json!([]));
    assert_eq!(ok_json(&kg, &["keys", "get", &id])["name"], "renamed");

    assert!(ok(&kg, &["keys", "disable", &id]).contains("disabled"));
    assert!(ok(&kg, &["keys", "enable", &id]).contains("active"));
    assert_eq!(call(&kg, "/v1/x", &key).status, 200);

    // Revoke: the very next proxied request is refused.
    let out = ok(&kg, &["keys", "revoke", &id]);
    assert!(out.contains("revoked"), "{out}");
    let r = call(&kg, "/v1/x", &key);
    assert_eq!(r.status, 401, "{}", r.body);
    assert_eq!(r.json()["error"]["code"], "key_revoked");

    let r = run_with(&kg.admin_url(), Some(ADMIN_TOKEN), &["keys", "enable", &id]);
    assert_eq!(r.code, Some(1));
    assert!(
        r.stderr.starts_with("error: 409 conflict: "),
        "{}",
        r.stderr
    );
    let r = run_with(
        &kg.admin_url(),
        Some(ADMIN_TOKEN),
        &[
            "keys",
            "create",
            "--account",
            &account,
            "--name",
            "x",
            "--scope",
            "bad scope",
        ],
    );
    assert_eq!(r.code, Some(1));
    assert!(
        r.stderr.starts_with("error: 422 invalid_body: "),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("bad scope"), "{}", r.stderr);
}

#[test]
fn a_wrong_admin_token_exits_1_with_the_api_error() {
    let (_echo, kg) = start();
    let r = run_with(
        &kg.admin_url(),
        Some("not-the-token"),
        &["accounts", "list"],
    );
    assert_eq!(r.code, Some(1));
    assert_eq!(
        r.stderr.trim(),
        "error: 401 unauthorized: missing or invalid admin token"
    );
    assert_eq!(r.stdout, "");
    assert!(!r.stderr.contains("not-the-token"));
    // --admin-token overrides the environment.
    let r = run_with(
        &kg.admin_url(),
        Some("not-the-token"),
        &["keys", "list", "--admin-token", ADMIN_TOKEN],
    );
    assert_eq!(r.code, Some(0), "{}", r.stderr);
}

#[test]
fn an_unreachable_admin_url_exits_1_naming_it() {
    let url = format!("http://127.0.0.1:{}", free_port());
    let r = run_with(&url, Some("any"), &["keys", "list"]);
    assert_eq!(r.code, Some(1));
    assert!(
        r.stderr
            .starts_with("error: cannot reach the admin API at "),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains(&url), "{}", r.stderr);
    assert_eq!(r.stdout, "");
}

#[test]
fn a_missing_admin_token_is_a_usage_error() {
    let r = run_with("http://127.0.0.1:9", None, &["accounts", "list"]);
    assert_eq!(r.code, Some(2));
    assert!(r.stderr.contains("KEYGATE_ADMIN_TOKEN"), "{}", r.stderr);
    // --help never shows the token's value.
    let r = run_with("http://127.0.0.1:9", Some(ADMIN_TOKEN), &["keys", "--help"]);
    assert_eq!(r.code, Some(0));
    assert!(r.stdout.contains("--admin-token"), "{}", r.stdout);
}

#[test]
fn credits_top_up_balance_and_transactions() {
    let (_echo, kg) = start();
    let account = kg.create_account("acme");

    let out = ok(&kg, &["credits", "balance", &account]);
    let lines: Vec<Vec<&str>> = out
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        lines,
        [vec!["ACCOUNT", "BALANCE"], vec![account.as_str(), "0"]],
        "{out}"
    );

    let out = ok(
        &kg,
        &["credits", "top-up", &account, "100", "--reason", "initial"],
    );
    assert!(
        out.lines().nth(1).is_some_and(|l| l.ends_with(" 100")),
        "{out}"
    );
    let deducted = ok_json(&kg, &["credits", "top-up", &account, "-30"]);
    assert_eq!(deducted, json!({"balance": 70}));
    let set = ok_json(&kg, &["credits", "set", &account, "5", "--reason", "reset"]);
    assert_eq!(set, json!({"balance": 5}));
    assert_eq!(
        ok_json(&kg, &["credits", "balance", &account]),
        json!({"balance": 5})
    );
    // The account table shows the balance as well.
    assert!(ok(&kg, &["accounts", "get", &account]).contains(" 5 "));

    let table = ok(&kg, &["credits", "transactions", &account]);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 4, "{table}");
    let header: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(
        header,
        ["ID", "DELTA", "BALANCE", "REASON", "KEY", "CREATED"]
    );
    let rows: Vec<Vec<&str>> = lines[1..]
        .iter()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows[0][1..5], ["100", "100", "initial", "-"], "{table}");
    assert_eq!(rows[1][1..5], ["-30", "70", "deduction", "-"], "{table}");
    assert_eq!(rows[2][1..5], ["-65", "5", "reset", "-"], "{table}");
    let reason_col = lines[0].find("REASON").expect("REASON");
    assert_eq!(lines[1].find("initial"), Some(reason_col), "{table}");

    // Paging: a hint on stderr while there is more.
    let r = run_with(
        &kg.admin_url(),
        Some(ADMIN_TOKEN),
        &["credits", "transactions", &account, "--limit", "2"],
    );
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert_eq!(r.stdout.lines().count(), 3, "{}", r.stdout);
    let second_id = rows[1][0];
    assert!(
        r.stderr.contains(&format!("--after {second_id}")),
        "{}",
        r.stderr
    );
    let rest = ok_json(
        &kg,
        &[
            "credits",
            "transactions",
            &account,
            "--limit",
            "2",
            "--after",
            second_id,
        ],
    );
    assert_eq!(rest["transactions"].as_array().map(Vec::len), Some(1));
    assert_eq!(rest["transactions"][0]["reason"], "reset");
    assert_eq!(rest["next"], Value::Null);

    // Below zero is refused by the API.
    let r = run_with(
        &kg.admin_url(),
        Some(ADMIN_TOKEN),
        &["credits", "top-up", &account, "-6"],
    );
    assert_eq!(r.code, Some(1));
    assert!(
        r.stderr.starts_with("error: 409 conflict: "),
        "{}",
        r.stderr
    );
    let r = run_with(
        &kg.admin_url(),
        Some(ADMIN_TOKEN),
        &["credits", "balance", "acc_nope"],
    );
    assert_eq!(r.code, Some(1));
    assert_eq!(r.stderr.trim(), "error: 404 not_found: account not found");
}

#[test]
fn plans_and_key_limits_from_the_cli() {
    let echo = Echo::start();
    let mut opts = Options::new(echo.addr);
    opts.extra_toml = "[plans.pro]\nkey = { requests = 5, per_seconds = 1 }\n".into();
    let kg = Keygate::start(&opts);
    let account = kg.create_account("acme");

    let out = ok(&kg, &["accounts", "set-plan", &account, "pro"]);
    assert!(out.contains(" pro "), "{out}");
    assert_eq!(ok_json(&kg, &["accounts", "get", &account])["plan"], "pro");
    let cleared = ok_json(&kg, &["accounts", "set-plan", &account, "none"]);
    assert_eq!(cleared["plan"], Value::Null);
    let r = run_with(
        &kg.admin_url(),
        Some(ADMIN_TOKEN),
        &["accounts", "set-plan", &account, "gold"],
    );
    assert_eq!(r.code, Some(1));
    assert!(
        r.stderr.starts_with("error: 422 invalid_body: "),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("gold"), "{}", r.stderr);

    let (id, _) = kg.create_key(&account, json!({}));
    let limited = ok_json(&kg, &["keys", "set-limit", &id, "10", "60", "20"]);
    assert_eq!(
        limited["rate_limit"],
        json!({"requests": 10, "per_seconds": 60, "burst": 20})
    );
    let table = ok(&kg, &["keys", "get", &id]);
    assert!(table.contains("10/60s,burst=20"), "{table}");
    let r = run_with(
        &kg.admin_url(),
        Some(ADMIN_TOKEN),
        &["keys", "set-limit", &id, "0", "60", "20"],
    );
    assert_eq!(r.code, Some(1));
    assert!(r.stderr.contains("rate_limit.requests"), "{}", r.stderr);
    let cleared = ok_json(&kg, &["keys", "clear-limit", &id]);
    assert_eq!(cleared["rate_limit"], Value::Null);
}

const PASSWORD: &str = "cli-Passw0rd with spaces ";

#[test]
fn users_from_the_cli_with_passwords_from_stdin_or_env() {
    let (_echo, kg) = start();
    let account = kg.create_account("acme");
    let url = kg.admin_url();

    // From standard input: one line, only the line ending stripped.
    let r = run_full(
        &url,
        Some(ADMIN_TOKEN),
        &[
            "users",
            "create",
            "--account",
            &account,
            "--email",
            "Dev@Example.com",
            "--role",
            "admin",
            "--password-stdin",
            "--json",
        ],
        &[],
        Some(&format!("{PASSWORD}\nsecond line ignored\n")),
    );
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let dev: Value = serde_json::from_str(&r.stdout).expect("json");
    assert_eq!(dev["email"], "dev@example.com");
    assert_eq!(dev["role"], "admin");
    let dev_id = dev["id"].as_str().expect("id").to_string();

    // From the environment, with the table output.
    let r = run_full(
        &url,
        Some(ADMIN_TOKEN),
        &[
            "users",
            "create",
            "--account",
            &account,
            "--email",
            "ops@example.com",
        ],
        &[("KEYGATE_USER_PASSWORD", PASSWORD)],
        None,
    );
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let header: Vec<&str> = r
        .stdout
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    assert_eq!(
        header,
        ["ID", "ACCOUNT", "EMAIL", "ROLE", "STATUS", "CREATED"]
    );
    assert!(
        r.stdout.contains("ops@example.com") && r.stdout.contains("member"),
        "{}",
        r.stdout
    );

    // No password: a usage error, nothing sent.
    let r = run_full(
        &url,
        Some(ADMIN_TOKEN),
        &[
            "users",
            "create",
            "--account",
            &account,
            "--email",
            "x@example.com",
        ],
        &[],
        None,
    );
    assert_eq!(r.code, Some(2), "{}", r.stderr);
    assert!(
        r.stderr.contains("KEYGATE_USER_PASSWORD") && r.stderr.contains("--password-stdin"),
        "{}",
        r.stderr
    );
    let r = run_full(
        &url,
        Some(ADMIN_TOKEN),
        &[
            "users",
            "create",
            "--account",
            &account,
            "--email",
            "x@example.com",
            "--password-stdin",
        ],
        &[],
        Some(""),
    );
    assert_eq!(r.code, Some(2), "{}", r.stderr);
    // Never a plain flag.
    let r = run_with(
        &url,
        Some(ADMIN_TOKEN),
        &[
            "users",
            "create",
            "--account",
            &account,
            "--email",
            "x@example.com",
            "--password",
            "abcdefgh1",
        ],
    );
    assert_eq!(r.code, Some(2), "{}", r.stderr);
    // The API's refusals come through.
    let r = run_full(
        &url,
        Some(ADMIN_TOKEN),
        &[
            "users",
            "create",
            "--account",
            &account,
            "--email",
            "DEV@example.com",
            "--password-stdin",
        ],
        &[],
        Some(&format!("{PASSWORD}\n")),
    );
    assert_eq!(r.code, Some(1));
    assert!(
        r.stderr.starts_with("error: 409 conflict: "),
        "{}",
        r.stderr
    );
    let r = run_full(
        &url,
        Some(ADMIN_TOKEN),
        &[
            "users",
            "create",
            "--account",
            &account,
            "--email",
            "short@example.com",
            "--password-stdin",
        ],
        &[],
        Some("short\n"),
    );
    assert_eq!(r.code, Some(1));
    assert!(
        r.stderr.starts_with("error: 422 invalid_body: "),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains("password") && !r.stderr.contains("short\n"),
        "{}",
        r.stderr
    );

    // List, get, role, status.
    let table = ok(&kg, &["users", "list", "--account", &account]);
    assert_eq!(table.lines().count(), 3, "{table}");
    assert!(table.contains(&dev_id), "{table}");
    let listed = ok_json(&kg, &["users", "list"]);
    assert_eq!(listed["users"].as_array().map(Vec::len), Some(2));
    assert_eq!(
        ok_json(&kg, &["users", "get", &dev_id])["email"],
        "dev@example.com"
    );
    assert_eq!(
        ok_json(&kg, &["users", "set-role", &dev_id, "read_only"])["role"],
        "read_only"
    );
    assert!(ok(&kg, &["users", "disable", &dev_id]).contains("disabled"));
    assert_eq!(
        ok_json(&kg, &["users", "enable", &dev_id])["status"],
        "active"
    );
    let r = run_with(
        &url,
        Some(ADMIN_TOKEN),
        &["users", "set-role", &dev_id, "boss"],
    );
    assert_eq!(r.code, Some(2), "{}", r.stderr);
    let r = run_with(&url, Some(ADMIN_TOKEN), &["users", "get", "usr_nope"]);
    assert_eq!(r.code, Some(1));
    assert_eq!(r.stderr.trim(), "error: 404 not_found: user not found");

    // Reset the password, from stdin and from the environment.
    let r = run_full(
        &url,
        Some(ADMIN_TOKEN),
        &[
            "users",
            "reset-password",
            &dev_id,
            "--password-stdin",
            "--json",
        ],
        &[],
        Some("a-brand-new-password\r\n"),
    );
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert_eq!(
        serde_json::from_str::<Value>(&r.stdout).expect("json")["id"],
        dev_id.as_str()
    );
    let r = run_full(
        &url,
        Some(ADMIN_TOKEN),
        &["users", "reset-password", &dev_id],
        &[("KEYGATE_USER_PASSWORD", "another-new-password")],
        None,
    );
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let r = run_with(
        &url,
        Some(ADMIN_TOKEN),
        &["users", "reset-password", &dev_id],
    );
    assert_eq!(r.code, Some(2), "{}", r.stderr);

    let log = kg.log();
    for secret in [
        PASSWORD.trim(),
        "a-brand-new-password",
        "another-new-password",
    ] {
        assert!(!log.contains(secret), "{secret} in the log");
    }
}

#[test]
fn keys_rotate_from_the_cli() {
    let (_echo, kg) = start();
    let account = kg.create_account("acme");
    let (old_id, old_key) = kg.create_key(&account, json!({"name": "rotating"}));

    let out = ok(&kg, &["keys", "rotate", &old_id]);
    assert!(out.contains("API key (shown only now"), "{out}");
    let new_key = out
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("kg_test_"))
        .expect("plaintext line")
        .to_string();
    assert_ne!(new_key, old_key);
    assert!(
        out.contains(&format!("replaces:    {old_id} (works until revoked)")),
        "{out}"
    );
    assert_eq!(call(&kg, "/v1/x", &old_key).status, 200);
    assert_eq!(call(&kg, "/v1/x", &new_key).status, 200);

    let rotated = ok_json(&kg, &["keys", "rotate", &old_id, "--grace-seconds", "3600"]);
    assert_eq!(rotated["rotated_from"], old_id.as_str());
    assert_eq!(rotated["old"]["id"], old_id.as_str());
    assert!(rotated["old"]["expires_at"].is_string(), "{rotated}");
    assert!(rotated["key"].is_string());
    assert_eq!(
        call(&kg, "/v1/x", &old_key).status,
        200,
        "still in its grace period"
    );

    ok(&kg, &["keys", "revoke", &old_id]);
    let r = run_with(
        &kg.admin_url(),
        Some(ADMIN_TOKEN),
        &["keys", "rotate", &old_id],
    );
    assert_eq!(r.code, Some(1));
    assert!(
        r.stderr.starts_with("error: 409 conflict: "),
        "{}",
        r.stderr
    );
    assert_eq!(call(&kg, "/v1/x", &new_key).status, 200);
}
