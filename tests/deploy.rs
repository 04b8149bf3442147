//! What ships under `deploy/` stays in step with the code: every keygate config there passes
//! `keygate check-config` with the real binary, and every metric an alert or dashboard names is
//! one keygate defines.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

mod common;
use common::*;

fn files_under(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(files_under(&path, ext));
        } else if path.extension().is_some_and(|e| e == ext) {
            out.push(path);
        }
    }
    out.sort();
    out
}

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy")
}

#[test]
fn every_shipped_config_passes_check_config() {
    let configs = files_under(&deploy_dir(), "toml");
    assert!(!configs.is_empty(), "no keygate config under deploy/");
    for config in configs {
        // Their secrets live on the machines they are deployed to, not here.
        let out = Command::new(env!("CARGO_BIN_EXE_keygate"))
            .arg("check-config")
            .arg("--skip-secrets")
            .arg(&config)
            .output()
            .expect("run keygate check-config");
        assert!(
            out.status.success(),
            "{} is not a valid keygate config:\n{}{}",
            config.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn alerts_name_only_metrics_keygate_defines() {
    let defined = include_str!("../src/metrics.rs");
    let files = files_under(&deploy_dir().join("prometheus"), "yml");
    assert!(
        !files.is_empty(),
        "no Prometheus files under deploy/prometheus"
    );
    let mut named = 0;
    for file in files {
        let text = std::fs::read_to_string(&file).expect("read");
        for (at, _) in text.match_indices("keygate_") {
            let name: String = text[at..]
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                .collect();
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| name.strip_suffix(suffix))
                .unwrap_or(&name);
            assert!(
                defined.contains(&format!("\"{family}\"")),
                "{} names {name}, which src/metrics.rs does not define",
                file.display()
            );
            named += 1;
        }
    }
    assert!(named >= 5, "expected the alerts to name keygate's metrics");
}

/// `check-config` resolves every secret the file names, says which cannot be read, and only then
/// says ok (systemd's `ExecStartPre` relies on it): the shipped Kubernetes config, with its
/// secret files moved to a temporary directory.
#[test]
fn check_config_resolves_every_secret_and_names_each_missing_one() {
    use std::os::unix::fs::PermissionsExt;

    let dir = tempfile::tempdir().expect("tempdir");
    let shipped = std::fs::read_to_string(deploy_dir().join("kubernetes/keygate.toml"))
        .expect("shipped config");
    let secrets = dir.path().join("secrets");
    std::fs::create_dir(&secrets).expect("mkdir");
    let config = dir.path().join("keygate.toml");
    std::fs::write(
        &config,
        shipped.replace("/run/secrets/keygate", &secrets.display().to_string()),
    )
    .expect("write config");
    let check = || {
        let out = Command::new(env!("CARGO_BIN_EXE_keygate"))
            .arg("check-config")
            .arg(&config)
            .output()
            .expect("run keygate check-config");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };

    // None of the three files exists: each is named, in one report.
    let (code, stderr) = check();
    assert_eq!(code, Some(2), "{stderr}");
    for field in ["secrets.pepper", "secrets.admin_token", "tokens.secret"] {
        assert!(stderr.contains(field), "{field} not reported: {stderr}");
    }

    let write = |name: &str, text: &str, mode: u32| {
        let path = secrets.join(name);
        std::fs::write(&path, text).expect("write secret");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
    };
    write("pepper", "a-pepper-value-0123456789abcdef", 0o600);
    write("admin-token", "", 0o600);
    write(
        "jwt-secret",
        "a-jwt-secret-0123456789abcdef0123456789",
        0o644,
    );
    let (code, stderr) = check();
    assert_eq!(code, Some(2), "{stderr}");
    assert!(!stderr.contains("secrets.pepper"), "{stderr}");
    assert!(
        stderr.contains("secrets.admin_token") && stderr.contains("empty"),
        "{stderr}"
    );
    assert!(
        stderr.contains("tokens.secret") && stderr.contains("every user"),
        "{stderr}"
    );
    for value in ["a-pepper-value", "a-jwt-secret"] {
        assert!(
            !stderr.contains(value),
            "a secret's value was printed: {stderr}"
        );
    }

    write("admin-token", "an-admin-token-0123456789", 0o600);
    write(
        "jwt-secret",
        "a-jwt-secret-0123456789abcdef0123456789",
        0o600,
    );
    let (code, stderr) = check();
    assert_eq!(code, Some(0), "{stderr}");
}

/// promtool, from Debian's `prometheus` package; a test that needs it fails with the install
/// line when it is missing, never skips.
fn promtool(args: &[&str], stdin: Option<&str>) -> (bool, String) {
    use std::io::Write;
    let child = Command::new("promtool")
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn();
    let mut child = child.unwrap_or_else(|e| {
        panic!("promtool is needed ({e}); install it with: apt-get install -y prometheus")
    });
    if let Some(text) = stdin {
        if let Some(mut pipe) = child.stdin.take() {
            pipe.write_all(text.as_bytes()).expect("write to promtool");
        }
    }
    drop(child.stdin.take());
    let out = child.wait_with_output().expect("run promtool");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn alert_rules_are_valid_and_their_unit_tests_pass() {
    let dir = deploy_dir().join("prometheus");
    let rules = dir.join("alerts.yml");
    let (ok, out) = promtool(&["check", "rules", &rules.display().to_string()], None);
    assert!(ok, "promtool check rules: {out}");
    let tests = dir.join("alerts_test.yml");
    let (ok, out) = promtool(&["test", "rules", &tests.display().to_string()], None);
    assert!(ok, "promtool test rules: {out}");
}

/// Every alert name in alerts.yml.
fn alert_names() -> Vec<String> {
    let text = std::fs::read_to_string(deploy_dir().join("prometheus/alerts.yml")).expect("read");
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("- alert:"))
        .map(|n| n.trim().to_string())
        .collect()
}

/// A `promtool test rules` file holding `scrape` as series that stay as scraped for 30 minutes,
/// and expecting no alert at the end.
fn quiet_rules_test(scrape: &str) -> String {
    let mut series = String::new();
    for line in scrape
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let Some((name, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let name = name.replace('\'', "\\'");
        series.push_str(&format!(
            "      - series: '{name}'\n        values: '{value}x30'\n"
        ));
    }
    let mut expectations = String::new();
    for alert in alert_names() {
        expectations.push_str(&format!(
            "      - {{ eval_time: 30m, alertname: {alert}, exp_alerts: [] }}\n"
        ));
    }
    format!(
        "rule_files:\n  - {rules}\nevaluation_interval: 1m\ntests:\n  - interval: 1m\n    input_series:\n{series}    alert_rule_test:\n{expectations}",
        rules = deploy_dir().join("prometheus/alerts.yml").display()
    )
}

/// A healthy keygate, on the embedded store and on Redis, after some traffic: its real scrape
/// passes `promtool check metrics`, and no alert fires on it.
#[test]
fn a_healthy_keygate_scrape_passes_promtool_and_fires_no_alert() {
    let echo = Echo::start();
    let redis = common::redis_server::RedisServer::start();
    for (what, opts) in [
        ("sqlite", Options::new(echo.addr)),
        ("redis", Options::redis(echo.addr, &redis.url())),
    ] {
        let kg = Keygate::start(&opts);
        let account = kg.create_account("acme");
        let (_, key) = kg.create_key(&account, serde_json::json!({}));
        for _ in 0..5 {
            assert_eq!(call(&kg, "/v1/x", &key).status, 200);
        }
        assert_eq!(call(&kg, "/v1/x", "kg_test_nope").status, 401);
        if what == "redis" {
            // The subscription comes up just after start.
            wait_until(
                "the invalidation subscription",
                Duration::from_secs(10),
                || metric(&kg, "keygate_invalidation_connected", &[]) == 1.0,
            );
        }
        let scrape = get(&kg.ops_url("/metrics"), &[]).body;

        let (ok, out) = promtool(&["check", "metrics"], Some(&scrape));
        assert!(ok, "{what}: promtool check metrics: {out}");

        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("quiet_test.yml");
        std::fs::write(&file, quiet_rules_test(&scrape)).expect("write rules test");
        let (ok, out) = promtool(&["test", "rules", &file.display().to_string()], None);
        assert!(ok, "{what}: an alert fires on a healthy keygate: {out}");
    }
}

/// The first ```toml block under the README heading `heading` (up to the next `## ` heading).
fn readme_toml_under(heading: &str) -> String {
    let readme = include_str!("../README.md");
    let start = readme
        .find(&format!("\n{heading}\n"))
        .unwrap_or_else(|| panic!("README has no `{heading}` section"));
    let section = &readme[start + 1..];
    let section = match section[heading.len()..].find("\n## ") {
        Some(end) => &section[..heading.len() + end],
        None => section,
    };
    section
        .split("```toml\n")
        .nth(1)
        .and_then(|block| block.split("```").next())
        .unwrap_or_else(|| panic!("no ```toml block under `{heading}`"))
        .to_string()
}

#[test]
fn the_readme_upstreams_example_passes_check_config() {
    let toml = readme_toml_under("## Upstreams");
    assert!(toml.contains("health_check"), "{toml}");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("upstreams.toml");
    std::fs::write(&path, &toml).expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_keygate"))
        .arg("check-config")
        .arg("--skip-secrets")
        .arg(&path)
        .output()
        .expect("run keygate check-config");
    assert!(
        out.status.success(),
        "the README's Upstreams example is not a valid config:\n{toml}\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
