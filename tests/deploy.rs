//! What ships under `deploy/` stays in step with the code: every keygate config there passes
//! `keygate check-config` with the real binary, and every metric an alert or dashboard names is
//! one keygate defines.

use std::path::{Path, PathBuf};
use std::process::Command;

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
