//! Reloading the configuration on SIGHUP.
//!
//! Routes, upstreams, limits, plans, credits, error templates, credential sources and the TLS
//! listener's certificates (re-read from the same files) change
//! without a restart and without dropping a connection: a request already decided finishes on
//! the configuration it started with, the next one sees the new one. Sections that shape the
//! process itself ([`RESTART_SECTIONS`]: listeners, store, secrets, key format, cache, identity
//! headers, tokens) need a restart. A reload that changes one of them, or that does not
//! validate, is refused as a whole and keygate keeps serving what it had: what runs is always one
//! whole, validated configuration, never a mix.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::config::{Config, ConfigError};
use crate::gate::Gate;

/// Top-level sections a reload may not change.
pub const RESTART_SECTIONS: [&str; 11] = [
    "server",
    "listeners",
    "store",
    "secrets",
    "keys",
    "cache",
    "identity",
    "tokens",
    "usage",
    "rate_limits",
    "log",
];

/// Where the running configuration came from, and its text (to tell what a reload changes).
#[derive(Debug, Clone)]
pub struct ConfigSource {
    pub path: PathBuf,
    pub text: String,
}

impl ConfigSource {
    /// Reads and validates the file, keeping its text.
    pub fn load(path: &Path) -> Result<(Config, ConfigSource), ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let config = Config::parse(&text, &path.display().to_string())?;
        let source = ConfigSource {
            path: path.to_path_buf(),
            text,
        };
        Ok((config, source))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(
        "{path}: [{}] changed, which takes a restart; nothing was reloaded",
        .sections.join("], [")
    )]
    NeedsRestart {
        path: String,
        sections: Vec<&'static str>,
    },
}

/// A validated new configuration and the gate built on it, ready to swap in.
pub struct Reloaded {
    pub config: Arc<Config>,
    pub gate: Gate,
    pub source: ConfigSource,
}

/// Re-reads `running.path` and builds the gate for it, sharing `gate`'s state (cache, limiter
/// buckets, store, tokens, metrics).
pub fn reload(running: &ConfigSource, gate: &Gate) -> Result<Reloaded, ReloadError> {
    let (config, source) = ConfigSource::load(&running.path)?;
    let origin = running.path.display().to_string();
    let sections = restart_sections_changed(&running.text, &source.text);
    if !sections.is_empty() {
        return Err(ReloadError::NeedsRestart {
            path: origin,
            sections,
        });
    }
    let config = Arc::new(config);
    let gate = gate.reconfigured(config.clone());
    Ok(Reloaded {
        config,
        gate,
        source,
    })
}

/// The restart-only sections whose parsed value differs (comments and layout do not count).
fn restart_sections_changed(old: &str, new: &str) -> Vec<&'static str> {
    // Both texts already parsed as a config, so they parse as TOML.
    let parse = |text: &str| text.parse::<toml::Table>().unwrap_or_default();
    let (old, new) = (parse(old), parse(new));
    RESTART_SECTIONS
        .iter()
        .copied()
        .filter(|section| old.get(*section) != new.get(*section))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_restart_sections_count_and_layout_does_not() {
        let old = "[listeners]\npublic = \"127.0.0.1:1\"\n\n[[routes]]\npath = \"/a\"\nupstream = \"x\"\n";
        let same = "# a comment\n[listeners]\npublic   =   \"127.0.0.1:1\"\n[[routes]]\npath = \"/b\"\nupstream = \"x\"\n";
        assert!(restart_sections_changed(old, same).is_empty());
        let moved = "[listeners]\npublic = \"127.0.0.1:2\"\n";
        assert_eq!(restart_sections_changed(old, moved), vec!["listeners"]);
        let added = format!("{old}\n[store]\nbackend = \"sqlite\"\npath = \"other.db\"\n");
        assert_eq!(restart_sections_changed(old, &added), vec!["store"]);
    }
}
