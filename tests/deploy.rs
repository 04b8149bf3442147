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
        let out = Command::new(env!("CARGO_BIN_EXE_keygate"))
            .arg("check-config")
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
