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
        for family in metric_families(&text) {
            assert!(
                defined.contains(&format!("\"{family}\"")),
                "{} names {family}, which src/metrics.rs does not define",
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
    let shipped =
        std::fs::read_to_string(deploy_dir().join("kubernetes/overlays/sidecar/keygate.toml"))
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
        // The Redis password comes from an environment variable (a Secret in Kubernetes).
        let out = Command::new(env!("CARGO_BIN_EXE_keygate"))
            .arg("check-config")
            .arg(&config)
            .env("KEYGATE_REDIS_PASSWORD", "a-redis-password-0123456789")
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

/// The ```toml block under a README heading.
fn toml_under_readme_heading(heading: &str) -> String {
    let readme = include_str!("../README.md");
    let start = readme
        .find(&format!("\n{heading}\n"))
        .unwrap_or_else(|| panic!("no {heading:?} section in the README"));
    let section = &readme[start + heading.len() + 2..];
    let section = &section[..section.find("\n## ").unwrap_or(section.len())];
    let block = section
        .split("```toml\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .unwrap_or_else(|| panic!("no ```toml block under {heading:?}"));
    block.to_string()
}

/// `keygate check-config` on `text` (with `args` before the file), asserting it is accepted.
fn assert_check_config_accepts(what: &str, text: &str, args: &[&str]) {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("keygate.toml");
    std::fs::write(&config, text).expect("write config");
    let out = Command::new(env!("CARGO_BIN_EXE_keygate"))
        .arg("check-config")
        .args(args)
        .arg(&config)
        .output()
        .expect("run keygate check-config");
    assert!(
        out.status.success(),
        "{what} is not a valid config:\n{text}\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The README's route-matching example (method fall-through) is a config keygate accepts.
#[test]
fn the_readme_route_matching_example_passes_check_config() {
    let text = toml_under_readme_heading("## Configuration");
    assert!(text.contains("/v1/poll/{id}"), "{text}");
    assert_check_config_accepts("the README's route matching example", &text, &[]);
}

/// The README's forward-auth routes are a config keygate accepts (tests/forward_auth.rs runs
/// them behind real proxies).
#[test]
fn the_readme_forward_auth_example_passes_check_config() {
    let text = toml_under_readme_heading("## Forward-auth for other proxies");
    assert!(text.contains("local = \"verify\""), "{text}");
    assert_check_config_accepts("the README's forward-auth example", &text, &[]);
}

/// The README's "Behind a load balancer" example is a config keygate accepts.
#[test]
fn the_readme_load_balancer_example_passes_check_config() {
    let text = toml_under_readme_heading("## Behind a load balancer");
    assert!(text.contains("trusted_proxies") && text.contains("proxy_protocol"));
    assert_check_config_accepts("the README's load balancer example", &text, &[]);
}

/// The README's windowed-limit example is a config keygate accepts.
#[test]
fn the_readme_sliding_window_example_passes_check_config() {
    let text = toml_under_readme_heading("### Windowed limits");
    assert!(text.contains("algorithm = \"sliding_window\""));
    assert_check_config_accepts("the README's windowed-limit example", &text, &[]);
}

/// The README's local-shape example is a config keygate accepts.
#[test]
fn the_readme_local_shape_example_passes_check_config() {
    let text = toml_under_readme_heading("### Local answers in a documented shape");
    assert!(text.contains("{metadata.webhooks}") && text.contains("{cursor}"));
    assert_check_config_accepts("the README's local-shape example", &text, &[]);
}

/// The README's "Importing keys" example (a `[keys] legacy` format) is a config keygate
/// accepts.
#[test]
fn the_readme_import_example_passes_check_config() {
    let text = toml_under_readme_heading("## Importing keys");
    assert!(text.contains("legacy"));
    assert_check_config_accepts("the README's import example", &text, &[]);
}

/// The README's TLS example passes `check-config`, certificate files included: the test writes
/// them where the example names them (relative paths, from the directory keygate runs in), so
/// the files are read and checked as they would be on a server.
#[test]
fn the_readme_tls_example_passes_check_config() {
    let dir = tempfile::tempdir().expect("tempdir");
    let toml = toml_under_readme_heading("## TLS and HTTP/2");
    let tls = dir.path().join("tls");
    std::fs::create_dir(&tls).expect("mkdir");
    for name in ["api.example.com", "eu.example.com", "internal-ca"] {
        let c = rcgen::generate_simple_self_signed(vec![name.to_string()]).expect("cert");
        std::fs::write(tls.join(format!("{name}.pem")), c.cert.pem()).expect("write");
        std::fs::write(
            tls.join(format!("{name}.key")),
            c.signing_key.serialize_pem(),
        )
        .expect("write");
    }
    std::fs::write(dir.path().join("keygate.toml"), &toml).expect("write config");
    let check = || {
        Command::new(env!("CARGO_BIN_EXE_keygate"))
            .arg("check-config")
            .arg("keygate.toml")
            .current_dir(dir.path())
            .output()
            .expect("run keygate check-config")
    };
    let out = check();
    assert!(
        out.status.success(),
        "the README's TLS example:\n{toml}\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // The files are really read: without one, the same example is refused, naming it.
    std::fs::remove_file(tls.join("eu.example.com.key")).expect("remove");
    let out = check();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("eu.example.com.key"), "{stderr}");
}

// ---------------------------------------------------------------- Kubernetes

/// The overlays `.ci/run` renders and validates.
const OVERLAYS: [&str; 2] = ["sidecar", "gateway"];

/// The kubernetes-validate version `.ci/run` installs into `target/venv`.
const KUBERNETES_VALIDATE: &str = "kubernetes-validate==1.37.0";

fn repo_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `kubectl kustomize` of one overlay: the YAML a user would apply.
fn render(overlay: &str) -> String {
    let dir = deploy_dir().join("kubernetes/overlays").join(overlay);
    let out = Command::new("kubectl")
        .arg("kustomize")
        .arg(&dir)
        .output()
        .unwrap_or_else(|e| {
            panic!("kubectl is needed ({e}); install it with: apt-get install -y kubectl")
        });
    assert!(
        out.status.success(),
        "kubectl kustomize {}: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 YAML")
}

/// Every document of a YAML stream, as JSON values.
fn documents(yaml: &str) -> Vec<serde_json::Value> {
    use serde::Deserialize;
    serde_yaml::Deserializer::from_str(yaml)
        .map(|doc| serde_json::Value::deserialize(doc).expect("valid YAML"))
        .filter(|v| !v.is_null())
        .collect()
}

fn kind(doc: &serde_json::Value) -> &str {
    doc["kind"].as_str().unwrap_or_default()
}

fn name(doc: &serde_json::Value) -> &str {
    doc["metadata"]["name"].as_str().unwrap_or_default()
}

/// The one object of `kind` named `name`.
fn object<'a>(docs: &'a [serde_json::Value], kind_: &str, name_: &str) -> &'a serde_json::Value {
    docs.iter()
        .find(|d| kind(d) == kind_ && name(d) == name_)
        .unwrap_or_else(|| panic!("no {kind_} {name_} in the rendered overlay"))
}

/// Workloads' pod specs (Deployments, StatefulSets, ...) and bare Pods.
fn pod_specs(docs: &[serde_json::Value]) -> Vec<(String, &serde_json::Value)> {
    docs.iter()
        .filter_map(|d| {
            let spec = match kind(d) {
                "Pod" => &d["spec"],
                "CronJob" => &d["spec"]["jobTemplate"]["spec"]["template"]["spec"],
                _ => &d["spec"]["template"]["spec"],
            };
            spec.is_object()
                .then(|| (format!("{} {}", kind(d), name(d)), spec))
        })
        .collect()
}

/// Every container of a pod spec, init (sidecar) containers included.
fn containers(spec: &serde_json::Value) -> Vec<&serde_json::Value> {
    ["initContainers", "containers", "ephemeralContainers"]
        .iter()
        .filter_map(|list| spec[list].as_array())
        .flatten()
        .collect()
}

#[test]
fn both_overlays_render_and_validate_strictly() {
    let tool = repo_dir().join("target/venv/bin/kubernetes-validate");
    let dir = tempfile::tempdir().expect("tempdir");
    for overlay in OVERLAYS {
        let file = dir.path().join(format!("{overlay}.yaml"));
        std::fs::write(&file, render(overlay)).expect("write rendered overlay");
        let out = Command::new(&tool)
            .arg("--strict")
            .arg(&file)
            .output()
            .unwrap_or_else(|e| {
                panic!(
                    "{} is needed ({e}); install it with: python3 -m venv target/venv && \
                     target/venv/bin/pip install {KUBERNETES_VALIDATE}  (bash .ci/run does it)",
                    tool.display()
                )
            });
        let report = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "{overlay}: {report}");
        // Only the Prometheus Operator's kinds may go unchecked (no schema ships for them): a
        // misspelt kind or apiVersion would also be "Couldn't find schema".
        for line in report.lines().filter(|l| !l.starts_with("INFO")) {
            assert!(
                line.contains("kind PrometheusRule with api version monitoring.coreos.com/v1")
                    || line
                        .contains("kind ServiceMonitor with api version monitoring.coreos.com/v1"),
                "{overlay}: {line}"
            );
        }
        assert!(
            report.contains("passed for resource deployment/"),
            "{overlay}: {report}"
        );
    }
}

/// Pod Security "restricted", field by field, on every pod and container of both overlays, and
/// requests and limits on every container; the namespace enforces the same policy.
#[test]
fn every_pod_and_container_passes_the_restricted_policy() {
    for overlay in OVERLAYS {
        let docs = documents(&render(overlay));
        let ns = object(&docs, "Namespace", "keygate");
        assert_eq!(
            ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"], "restricted",
            "{overlay}: the namespace must enforce restricted"
        );
        let mut names = Vec::new();
        for (workload, spec) in pod_specs(&docs) {
            let pod = &spec["securityContext"];
            assert_eq!(
                pod["runAsNonRoot"], true,
                "{overlay} {workload}: pod runAsNonRoot"
            );
            assert_eq!(
                pod["seccompProfile"]["type"], "RuntimeDefault",
                "{overlay} {workload}: pod seccompProfile"
            );
            assert_ne!(pod["runAsUser"], 0, "{overlay} {workload}: pod runAsUser 0");
            for host in ["hostNetwork", "hostPID", "hostIPC"] {
                assert_ne!(spec[host], true, "{overlay} {workload}: {host}");
            }
            assert_eq!(
                spec["automountServiceAccountToken"], false,
                "{overlay} {workload}: no API token in the pod"
            );
            for volume in spec["volumes"].as_array().into_iter().flatten() {
                let allowed = [
                    "configMap",
                    "csi",
                    "downwardAPI",
                    "emptyDir",
                    "ephemeral",
                    "persistentVolumeClaim",
                    "projected",
                    "secret",
                ];
                let kinds: Vec<&String> = volume
                    .as_object()
                    .expect("volume")
                    .keys()
                    .filter(|k| *k != "name")
                    .collect();
                assert!(
                    kinds.iter().all(|k| allowed.contains(&k.as_str())),
                    "{overlay} {workload}: volume type {kinds:?} is not allowed by restricted"
                );
            }
            for c in containers(spec) {
                let what = format!("{overlay} {workload} container {}", c["name"]);
                let sc = &c["securityContext"];
                assert_eq!(sc["runAsNonRoot"], true, "{what}: runAsNonRoot");
                assert_ne!(sc["runAsUser"], 0, "{what}: runAsUser 0");
                assert_eq!(
                    sc["readOnlyRootFilesystem"], true,
                    "{what}: readOnlyRootFilesystem"
                );
                assert_eq!(
                    sc["allowPrivilegeEscalation"], false,
                    "{what}: allowPrivilegeEscalation"
                );
                assert_ne!(sc["privileged"], true, "{what}: privileged");
                assert_eq!(
                    sc["capabilities"]["drop"],
                    serde_json::json!(["ALL"]),
                    "{what}: capabilities.drop"
                );
                assert!(
                    sc["capabilities"]["add"].is_null(),
                    "{what}: capabilities.add"
                );
                assert_eq!(
                    sc["seccompProfile"]["type"], "RuntimeDefault",
                    "{what}: seccompProfile"
                );
                for port in c["ports"].as_array().into_iter().flatten() {
                    assert!(port["hostPort"].is_null(), "{what}: hostPort");
                }
                for (side, resource) in [
                    ("requests", "cpu"),
                    ("requests", "memory"),
                    ("limits", "cpu"),
                    ("limits", "memory"),
                ] {
                    assert!(
                        c["resources"][side][resource].is_string(),
                        "{what}: resources.{side}.{resource} is not set"
                    );
                }
                names.push(c["name"].as_str().unwrap_or_default().to_string());
            }
        }
        names.sort();
        assert_eq!(
            names,
            ["api", "keygate", "redis"],
            "{overlay}: containers checked"
        );
    }
}

/// keygate's `[server]` drain settings from an overlay's keygate.toml: (drain, in-flight wait).
fn drain_settings(overlay: &str) -> (u64, u64) {
    let path = deploy_dir()
        .join("kubernetes/overlays")
        .join(overlay)
        .join("keygate.toml");
    let text = std::fs::read_to_string(&path).expect("overlay keygate.toml");
    let toml: toml::Value = toml::from_str(&text).expect("toml");
    let server = &toml["server"];
    (
        server["drain_seconds"].as_integer().expect("drain_seconds") as u64,
        server["graceful_shutdown_timeout_seconds"]
            .as_integer()
            .expect("graceful_shutdown_timeout_seconds") as u64,
    )
}

/// The keygate container of an overlay's pod spec and whether it is a native sidecar.
fn keygate_container(spec: &serde_json::Value) -> &serde_json::Value {
    containers(spec)
        .into_iter()
        .find(|c| c["name"] == "keygate")
        .expect("a keygate container")
}

/// Probes on the ops endpoints keygate serves, the Redis password from the Secret through the
/// variable keygate.toml names, and a grace period the whole shutdown fits in.
fn check_keygate_pod(overlay: &str, spec: &serde_json::Value, before_keygate_seconds: u64) {
    let ops = include_str!("../src/admin/ops.rs");
    let kg = keygate_container(spec);
    for (probe, path) in [("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")] {
        assert_eq!(kg[probe]["httpGet"]["path"], path, "{overlay}: {probe}");
        assert!(
            ops.contains(&format!("\"{path}\"")),
            "keygate serves no {path}"
        );
    }
    let password = kg["env"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|e| e["name"] == "KEYGATE_REDIS_PASSWORD")
        .unwrap_or_else(|| panic!("{overlay}: no KEYGATE_REDIS_PASSWORD"));
    assert_eq!(
        password["valueFrom"]["secretKeyRef"],
        serde_json::json!({ "name": "keygate-secrets", "key": "redis-password" })
    );
    let toml = std::fs::read_to_string(
        deploy_dir()
            .join("kubernetes/overlays")
            .join(overlay)
            .join("keygate.toml"),
    )
    .expect("keygate.toml");
    assert!(
        toml.contains("password = { env = \"KEYGATE_REDIS_PASSWORD\" }"),
        "{overlay}: keygate.toml must read the Redis password from KEYGATE_REDIS_PASSWORD"
    );
    let (drain, in_flight) = drain_settings(overlay);
    let grace = spec["terminationGracePeriodSeconds"]
        .as_u64()
        .unwrap_or_else(|| panic!("{overlay}: terminationGracePeriodSeconds"));
    assert!(
        grace > before_keygate_seconds + drain + in_flight,
        "{overlay}: terminationGracePeriodSeconds {grace} must be above \
         {before_keygate_seconds} (before keygate's SIGTERM) + {drain} (drain) + {in_flight} (in flight)"
    );
}

#[test]
fn the_sidecar_is_native_and_the_api_is_reachable_only_through_it() {
    let docs = documents(&render("sidecar"));
    let api = object(&docs, "Deployment", "api");
    let spec = &api["spec"]["template"]["spec"];
    let kg = spec["initContainers"]
        .as_array()
        .and_then(|list| list.iter().find(|c| c["name"] == "keygate"))
        .expect("keygate among the init containers");
    assert_eq!(kg["restartPolicy"], "Always", "a native sidecar");
    assert!(
        kg["startupProbe"].is_object(),
        "the API starts once keygate is up"
    );
    let app = &spec["containers"][0];
    let args = app["args"].to_string();
    assert!(
        args.contains("127.0.0.1:8000"),
        "the API binds to localhost: {args}"
    );
    assert!(
        app["ports"].is_null(),
        "the API exposes no port: {}",
        app["ports"]
    );
    // The API is stopped first (native sidecars stop last): its preStop sleep comes before
    // keygate's SIGTERM, and the API's own shutdown is budgeted at 10 s.
    let pre_stop = app["lifecycle"]["preStop"]["sleep"]["seconds"]
        .as_u64()
        .expect("the API's preStop sleep");
    check_keygate_pod("sidecar", spec, pre_stop + 10);

    // From outside the pod, only keygate's ports are admitted.
    let policy = object(&docs, "NetworkPolicy", "api-only-through-keygate");
    assert_eq!(
        policy["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/name"],
        "api"
    );
    let mut ports: Vec<u64> = policy["spec"]["ingress"]
        .as_array()
        .expect("ingress rules")
        .iter()
        .flat_map(|rule| {
            let ports = rule["ports"].as_array().cloned();
            assert!(
                ports.is_some(),
                "a rule without ports admits every port: {rule}"
            );
            ports.into_iter().flatten()
        })
        .map(|p| p["port"].as_u64().expect("numeric port"))
        .collect();
    ports.sort();
    assert_eq!(ports, [8080, 9090]);
    let deny = object(&docs, "NetworkPolicy", "default-deny-ingress");
    assert_eq!(deny["spec"]["podSelector"], serde_json::json!({}));
    assert!(deny["spec"]["ingress"].is_null());
    let service = object(&docs, "Service", "api");
    assert_eq!(service["spec"]["ports"][0]["targetPort"], 8080);
}

#[test]
fn the_gateway_has_its_deployment_service_autoscaler_budget_and_policy() {
    let docs = documents(&render("gateway"));
    let deployment = object(&docs, "Deployment", "keygate");
    let spec = &deployment["spec"]["template"]["spec"];
    assert!(
        deployment["spec"]["replicas"].is_null(),
        "the autoscaler owns the replica count"
    );
    check_keygate_pod("gateway", spec, 0);
    let labels = &deployment["spec"]["template"]["metadata"]["labels"];
    let selects = |selector: &serde_json::Value| {
        selector
            .as_object()
            .expect("matchLabels")
            .iter()
            .all(|(k, v)| &labels[k] == v)
    };
    let service = object(&docs, "Service", "keygate");
    assert!(selects(&service["spec"]["selector"]), "{service}");
    let hpa = object(&docs, "HorizontalPodAutoscaler", "keygate");
    assert_eq!(hpa["spec"]["scaleTargetRef"]["name"], "keygate");
    assert!(hpa["spec"]["minReplicas"].as_u64() >= Some(2));
    let pdb = object(&docs, "PodDisruptionBudget", "keygate");
    assert!(selects(&pdb["spec"]["selector"]["matchLabels"]), "{pdb}");
    let policy = object(&docs, "NetworkPolicy", "keygate-gateway");
    assert!(selects(&policy["spec"]["podSelector"]["matchLabels"]));
    // The API behind it admits only keygate's pods.
    let api_policy = object(&docs, "NetworkPolicy", "lookup-api-only-from-keygate");
    let from = &api_policy["spec"]["ingress"][0]["from"];
    assert_eq!(from.as_array().map(Vec::len), Some(1), "{from}");
    assert!(selects(&from[0]["podSelector"]["matchLabels"]), "{from}");
    assert_eq!(
        api_policy["spec"]["ingress"].as_array().map(Vec::len),
        Some(1)
    );
}

/// Redis refuses the default user and admits only keygate pods; what keygate sends is allowed by
/// the ACL the manifest writes (tests/redis_auth.rs runs keygate against the same rules).
#[test]
fn redis_needs_a_password_and_admits_only_keygate_pods() {
    for overlay in OVERLAYS {
        let docs = documents(&render(overlay));
        let redis = object(&docs, "StatefulSet", "redis");
        let script = redis["spec"]["template"]["spec"]["containers"][0]["args"].to_string();
        assert!(script.contains("user default off"), "{overlay}: {script}");
        assert!(
            script.contains("user keygate on >%s ~* &* +@all -@dangerous"),
            "{overlay}: {script}"
        );
        let policy = object(&docs, "NetworkPolicy", "redis-only-from-keygate");
        let rules = policy["spec"]["ingress"].as_array().expect("rules");
        assert_eq!(rules.len(), 1, "{overlay}");
        let label = &rules[0]["from"][0]["podSelector"]["matchLabels"];
        assert_eq!(
            label,
            &serde_json::json!({ "keygate.dev/redis-client": "true" })
        );
        assert_eq!(rules[0]["from"].as_array().map(Vec::len), Some(1));
        // Exactly the pods that run keygate carry the label.
        for d in &docs {
            let template = &d["spec"]["template"];
            if !template.is_object() || kind(d) == "StatefulSet" {
                continue;
            }
            let runs_keygate = containers(&template["spec"])
                .iter()
                .any(|c| c["name"] == "keygate");
            let labelled = template["metadata"]["labels"]["keygate.dev/redis-client"] == "true";
            assert_eq!(runs_keygate, labelled, "{overlay}: {} {}", kind(d), name(d));
        }
    }
}

/// The ServiceMonitor finds the metrics Service's ops port in both overlays, and the
/// PrometheusRule holds exactly the rules of deploy/prometheus/alerts.yml.
#[test]
fn monitoring_scrapes_keygate_and_the_prometheus_rule_is_alerts_yml() {
    let alerts: serde_json::Value = serde_yaml::from_str(
        &std::fs::read_to_string(deploy_dir().join("prometheus/alerts.yml")).expect("alerts.yml"),
    )
    .expect("alerts.yml is YAML");
    assert!(alerts["groups"][0]["rules"].as_array().map(Vec::len) > Some(3));
    for overlay in OVERLAYS {
        let docs = documents(&render(overlay));
        let rule = object(&docs, "PrometheusRule", "keygate");
        assert!(
            rule["spec"] == alerts,
            "{overlay}: the PrometheusRule differs from deploy/prometheus/alerts.yml; regenerate \
             deploy/kubernetes/base/prometheusrule.yaml with the command at its top"
        );
        let monitor = object(&docs, "ServiceMonitor", "keygate");
        let wanted = monitor["spec"]["selector"]["matchLabels"]
            .as_object()
            .expect("matchLabels");
        let services: Vec<&serde_json::Value> = docs
            .iter()
            .filter(|d| kind(d) == "Service")
            .filter(|d| wanted.iter().all(|(k, v)| &d["metadata"]["labels"][k] == v))
            .collect();
        assert_eq!(
            services.len(),
            1,
            "{overlay}: the ServiceMonitor selects one Service"
        );
        let port = &monitor["spec"]["endpoints"][0]["port"];
        assert!(
            services[0]["spec"]["ports"]
                .as_array()
                .expect("ports")
                .iter()
                .any(
                    |p| &p["name"] == port && (p["targetPort"] == 9090 || p["targetPort"] == "ops")
                ),
            "{overlay}: no port {port} to keygate's ops listener"
        );
    }
}

/// The README's Kubernetes commands, as written: the namespace exists before the Secret is
/// created in it, the Secret has every key the manifests read, and the paths exist.
#[test]
fn the_readme_kubernetes_steps_work_in_order() {
    let readme = std::fs::read_to_string(repo_dir().join("README.md")).expect("README");
    let section = readme
        .split("\n### Kubernetes\n")
        .nth(1)
        .and_then(|rest| rest.split("\n```sh\n").nth(1))
        .and_then(|block| block.split("\n```").next())
        .expect("a ```sh block under ### Kubernetes in README.md");
    let commands: Vec<String> = section
        .replace("\\\n", " ")
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("kubectl"))
        .map(String::from)
        .collect();
    let position = |needle: &str| {
        commands
            .iter()
            .position(|c| c.contains(needle))
            .unwrap_or_else(|| panic!("no `{needle}` among {commands:#?}"))
    };
    let namespace = position("kubectl apply -f deploy/kubernetes/base/namespace.yaml");
    let secret = position("create secret generic keygate-secrets");
    assert!(
        commands[secret].contains("-n keygate"),
        "{}",
        commands[secret]
    );
    let apply = position("kubectl apply -k deploy/kubernetes/overlays/");
    assert!(namespace < secret && secret < apply, "{commands:#?}");
    for command in &commands {
        let command = command.split(" #").next().unwrap_or_default();
        let words: Vec<&str> = command.split_whitespace().collect();
        for pair in words.windows(2).filter(|w| w[0] == "-f" || w[0] == "-k") {
            assert!(
                repo_dir().join(pair[1]).exists(),
                "{} does not exist",
                pair[1]
            );
        }
    }
    for overlay in OVERLAYS {
        assert!(
            commands
                .iter()
                .any(|c| c.contains(&format!("overlays/{overlay}"))),
            "README does not apply the {overlay} overlay"
        );
        let yaml = render(overlay);
        for d in documents(&yaml) {
            let Some(spec) = pod_specs(std::slice::from_ref(&d)).first().map(|(_, s)| *s) else {
                continue;
            };
            let mut keys: Vec<String> = Vec::new();
            for c in containers(spec) {
                for e in c["env"].as_array().into_iter().flatten() {
                    if let Some(k) = e["valueFrom"]["secretKeyRef"]["key"].as_str() {
                        keys.push(k.into());
                    }
                }
            }
            for v in spec["volumes"].as_array().into_iter().flatten() {
                for item in v["secret"]["items"].as_array().into_iter().flatten() {
                    keys.push(item["key"].as_str().unwrap_or_default().into());
                }
            }
            for key in keys {
                assert!(
                    commands[secret].contains(&format!("--from-literal={key}=")),
                    "{overlay}: the README's Secret lacks `{key}`: {}",
                    commands[secret]
                );
            }
        }
    }
}

// ---------------------------------------------------------------- Docker

/// The Dockerfile's instructions, continuation lines joined, comments dropped.
fn dockerfile_instructions() -> Vec<String> {
    let text = std::fs::read_to_string(deploy_dir().join("Dockerfile")).expect("Dockerfile");
    let mut out: Vec<String> = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || trimmed.is_empty() && current.is_empty() {
            continue;
        }
        match trimmed.strip_suffix('\\') {
            Some(head) => {
                current.push_str(head);
                current.push(' ');
            }
            None => {
                current.push_str(trimmed);
                out.push(std::mem::take(&mut current));
            }
        }
    }
    out
}

#[test]
fn the_dockerfile_pins_its_images_and_packages_and_ships_the_dist_build() {
    let instructions = dockerfile_instructions();
    let froms: Vec<&String> = instructions
        .iter()
        .filter(|i| i.starts_with("FROM "))
        .collect();
    assert!(froms.len() >= 2, "a build and a runtime stage: {froms:?}");
    for from in &froms {
        let image = from.split_whitespace().nth(1).unwrap_or_default();
        let digest = image
            .split_once("@sha256:")
            .map(|(_, d)| d)
            .unwrap_or_default();
        assert!(
            digest.len() == 64 && digest.bytes().all(|b| b.is_ascii_hexdigit()),
            "not pinned by digest: {from}"
        );
    }
    let mut installs = 0;
    for run in instructions.iter().filter(|i| i.starts_with("RUN ")) {
        for command in run.split("&&") {
            let words: Vec<&str> = command.split_whitespace().collect();
            let Some(at) = words.windows(2).position(|w| w == ["apt-get", "install"]) else {
                continue;
            };
            for package in words[at + 2..].iter().filter(|w| !w.starts_with('-')) {
                let version = package.split_once('=').map(|(_, v)| v).unwrap_or_default();
                assert!(
                    !version.is_empty(),
                    "apt package without a version: {package}"
                );
                installs += 1;
            }
        }
    }
    assert!(installs > 0, "expected the build's apt packages");
    let builds: Vec<&String> = instructions
        .iter()
        .filter(|i| i.contains("cargo build"))
        .collect();
    assert_eq!(
        builds.len(),
        2,
        "a dependency layer and keygate's own: {builds:?}"
    );
    for build in &builds {
        assert!(
            build.contains("--profile dist") && build.contains("--locked"),
            "{build}"
        );
    }
    // The dependency layer comes before the sources are copied in.
    let first_build = instructions.iter().position(|i| i.contains("cargo build"));
    let copy_src = instructions.iter().position(|i| i.starts_with("COPY src"));
    assert!(first_build < copy_src, "{instructions:#?}");
    assert!(
        instructions
            .iter()
            .any(|i| i.contains("target/dist/keygate")),
        "the image must ship the dist binary"
    );
    let user = instructions
        .iter()
        .rfind(|i| i.starts_with("USER "))
        .expect("a USER");
    assert!(!user.contains(" 0") && !user.contains("root"), "{user}");
    let health = instructions
        .iter()
        .find(|i| i.starts_with("HEALTHCHECK"))
        .expect("a HEALTHCHECK");
    assert!(
        health.contains("\"keygate\"") || health.contains("/keygate\""),
        "{health}"
    );
    assert!(health.contains("\"health\""), "{health}");

    // The dist profile: release without debug info, fat LTO, one codegen unit, stripped.
    let cargo: toml::Value = toml::from_str(
        &std::fs::read_to_string(repo_dir().join("Cargo.toml")).expect("Cargo.toml"),
    )
    .expect("Cargo.toml");
    let dist = &cargo["profile"]["dist"];
    assert_eq!(dist["inherits"].as_str(), Some("release"));
    assert_eq!(dist["lto"].as_str(), Some("fat"));
    assert_eq!(dist["codegen-units"].as_integer(), Some(1));
    assert_eq!(dist["strip"].as_bool(), Some(true));
    assert_eq!(dist["debug"].as_bool(), Some(false));

    // The build context keeps out everything the build does not copy (target/ above all).
    let ignore = std::fs::read_to_string(deploy_dir().join("Dockerfile.dockerignore"))
        .expect("deploy/Dockerfile.dockerignore");
    let rules: Vec<&str> = ignore
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    assert_eq!(
        rules.first(),
        Some(&"*"),
        "exclude everything first: {rules:?}"
    );
    for copied in instructions
        .iter()
        .filter(|i| i.starts_with("COPY ") && !i.contains("--from"))
    {
        for source in copied
            .split_whitespace()
            .skip(1)
            .collect::<Vec<_>>()
            .split_last()
            .map(|(_, s)| s.to_vec())
            .unwrap_or_default()
        {
            let source = source.trim_end_matches('/');
            assert!(
                rules
                    .iter()
                    .any(|r| r.trim_start_matches('!').trim_end_matches('/') == source),
                "COPY {source} is not let into the context by Dockerfile.dockerignore"
            );
        }
    }
}

/// `keygate health` (the image's HEALTHCHECK): exit 0 while the ops listener answers 2xx, 1 with
/// a reason when it answers otherwise or not at all.
#[test]
fn keygate_health_answers_for_the_container_health_check() {
    let health = |url: &str| {
        let out = Command::new(env!("CARGO_BIN_EXE_keygate"))
            .args(["health", "--url", url, "--timeout-seconds", "10"])
            .output()
            .expect("run keygate health");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let echo = Echo::start();
    let mut kg = Keygate::start(&Options::new(echo.addr));
    assert_eq!(health(&kg.ops_url("/healthz")), (Some(0), String::new()));
    assert_eq!(health(&kg.ops_url("/readyz")).0, Some(0));
    let (code, stderr) = health(&kg.ops_url("/nope"));
    assert_eq!(code, Some(1));
    assert!(stderr.contains("404"), "{stderr}");
    let url = kg.ops_url("/healthz");
    kg.kill();
    let (code, stderr) = health(&url);
    assert_eq!(code, Some(1));
    assert!(stderr.contains(&url), "{stderr}");
}

/// The README's Redis-with-a-password example passes `check-config`, secrets included.
#[test]
fn the_readme_redis_password_example_passes_check_config() {
    let block = toml_under_readme_heading("### Many replicas on one Redis");
    assert!(
        block.contains("password = { env = \"KEYGATE_REDIS_PASSWORD\" }"),
        "{block}"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("keygate.toml");
    std::fs::write(&file, block).expect("write");
    let check = |password: Option<&str>| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_keygate"));
        command
            .arg("check-config")
            .arg(&file)
            .env("KEYGATE_PEPPER", "a-pepper-value-0123456789abcdef")
            .env_remove("KEYGATE_REDIS_PASSWORD");
        if let Some(p) = password {
            command.env("KEYGATE_REDIS_PASSWORD", p);
        }
        let out = command.output().expect("run keygate check-config");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let (code, stderr) = check(Some("a-redis-password"));
    assert_eq!(code, Some(0), "{stderr}");
    let (code, stderr) = check(None);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("store.password"), "{stderr}");
}

// ---------------------------------------------------------------- Grafana

/// The metric names a PromQL expression reads (`keygate_*` and `process_*`), histogram suffixes
/// folded into their family.
fn metric_families(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    for prefix in ["keygate_", "process_"] {
        for (at, _) in expr.match_indices(prefix) {
            let name: String = expr[at..]
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                .collect();
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| name.strip_suffix(suffix))
                .unwrap_or(&name)
                .to_string();
            names.push(family);
        }
    }
    names
}

/// The dashboard is valid JSON, every query is valid PromQL (promtool checks them as recording
/// rules) and names only metrics keygate exports, and it covers what an operator looks at.
#[test]
fn the_grafana_dashboard_queries_only_metrics_keygate_exports() {
    let path = deploy_dir().join("grafana/keygate.json");
    let text = std::fs::read_to_string(&path).expect("deploy/grafana/keygate.json");
    let dashboard: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
    let defined = include_str!("../src/metrics.rs");
    // What the prometheus crate's process collector exports.
    let process = [
        "process_cpu_seconds_total",
        "process_open_fds",
        "process_max_fds",
        "process_virtual_memory_bytes",
        "process_resident_memory_bytes",
        "process_start_time_seconds",
        "process_threads",
    ];
    let panels = dashboard["panels"].as_array().expect("panels");
    let mut exprs = Vec::new();
    for panel in panels {
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "panel {} has no query", panel["title"]);
        for target in targets {
            let expr = target["expr"].as_str().expect("expr").to_string();
            let families = metric_families(&expr);
            assert!(!families.is_empty(), "{expr} names no metric");
            for family in families {
                assert!(
                    defined.contains(&format!("\"{family}\""))
                        || process.contains(&family.as_str()),
                    "the dashboard queries {family}, which keygate does not export ({expr})"
                );
            }
            exprs.push(expr);
        }
    }
    let all = exprs.join("\n");
    for needed in [
        "keygate_requests_total",
        "keygate_auth_decision_seconds_bucket",
        "keygate_request_duration_seconds_bucket",
        "keygate_cache_lookups_total",
        "keygate_store_errors_total",
        "rate_limited",
        "insufficient_credits",
        "keygate_invalidation_lag_seconds_bucket",
    ] {
        assert!(all.contains(needed), "no panel shows {needed}");
    }
    // Valid PromQL: each query as a recording rule, Grafana's variables given values.
    let rules: String = exprs
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let e = e
                .replace("$__rate_interval", "5m")
                .replace("$instance", ".*");
            format!(
                "      - record: dashboard_query_{i}\n        expr: {}\n",
                serde_json::Value::String(e)
            )
        })
        .collect();
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("dashboard_rules.yml");
    std::fs::write(
        &file,
        format!("groups:\n  - name: dashboard\n    rules:\n{rules}"),
    )
    .expect("write rules");
    let (ok, out) = promtool(&["check", "rules", &file.display().to_string()], None);
    assert!(ok, "a dashboard query is not valid PromQL: {out}");
}

#[test]
fn the_readme_upstreams_example_passes_check_config() {
    let toml = toml_under_readme_heading("## Upstreams");
    assert!(toml.contains("health_check"), "{toml}");
    assert_check_config_accepts("the README's Upstreams example", &toml, &["--skip-secrets"]);
}
