//! Replays the checked-in fuzz corpus (`tests/fuzz/corpus/<target>/`) through the same harness
//! functions the cargo-fuzz targets run, on the stable toolchain, in seconds. Every crash the
//! fuzzer ever found is kept in its target's corpus, so this is also their regression test.
//! Fuzzing itself is `tests/fuzz/README.md`.

use std::path::{Path, PathBuf};

#[path = "fuzz/harness/admin_json.rs"]
mod admin_json;
#[path = "fuzz/harness/config.rs"]
mod config;
#[path = "fuzz/harness/credentials.rs"]
mod credentials;
#[path = "fuzz/harness/keys.rs"]
mod keys;
#[path = "fuzz/harness/paths.rs"]
mod paths;
#[path = "fuzz/harness/tokens.rs"]
mod tokens;

/// Runs every file of the target's corpus; fails on an empty corpus, so a mistyped directory
/// cannot pass by replaying nothing.
fn replay(target: &str, run: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fuzz/corpus")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "{}: empty corpus", dir.display());
    for file in &files {
        let data = std::fs::read(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let outcome = std::panic::catch_unwind(|| run(&data));
        assert!(outcome.is_ok(), "{target}: {} fails", file.display());
    }
}

#[test]
fn keys_corpus() {
    replay("keys", keys::run);
}

#[test]
fn credentials_corpus() {
    replay("credentials", credentials::run);
}

#[test]
fn paths_corpus() {
    replay("paths", paths::run);
}

#[test]
fn config_corpus() {
    replay("config", config::run);
}

#[test]
fn admin_json_corpus() {
    replay("admin_json", admin_json::run);
}

#[test]
fn tokens_corpus() {
    replay("tokens", tokens::run);
}
