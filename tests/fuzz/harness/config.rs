//! Fuzz harness for config parsing: [`Config::parse`] (TOML, then every validation rule).
//!
//! Shared by the cargo-fuzz target `config` and by `tests/fuzz_replay.rs`. Input: the file text.
//! Parsing is pure (no file or environment reads: secrets are resolved later), so besides "no
//! panic" the outcome must be deterministic and errors must render.

use keygate::config::Config;

pub fn run(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Config::parse(text, "fuzz.toml") {
        Ok(config) => {
            let again = Config::parse(text, "fuzz.toml");
            assert!(again.is_ok(), "accepted once, refused the second time");
            let names = config.route_names();
            assert_eq!(names.len(), config.route_names().len());
            let _ = format!("{config:?}");
        }
        Err(e) => {
            let message = e.to_string();
            assert!(!message.is_empty());
            assert!(Config::parse(text, "fuzz.toml").is_err());
        }
    }
}
