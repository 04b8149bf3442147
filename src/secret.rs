//! A string that must never reach a log line, a metric label or an error body.
//!
//! `Debug` and `Display` print a redaction, so a secret that slips into a `tracing` field or a
//! formatted error is harmless. The value is only reachable through [`Secret::expose`], which makes
//! every use site greppable.

use std::fmt;

use subtle::ConstantTimeEq;

/// Deserialisable so request bodies (a login password) go straight into a `Secret`; there is
/// deliberately no `Serialize`.
#[derive(Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The plaintext. Call sites should be few: hashing, signing, and the one response that shows
    /// a new key.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Compares in constant time (for the given length), so a timing side channel cannot reveal
    /// how many leading bytes of a guess were right.
    pub fn ct_eq(&self, candidate: &[u8]) -> bool {
        self.0.as_bytes().ct_eq(candidate).into()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_redact() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?}"), "Secret(***)");
        assert_eq!(format!("{s}"), "***");
        assert!(!format!("{s:?} {s}").contains("hunter2"));
    }

    #[test]
    fn constant_time_comparison() {
        let s = Secret::new("token-abc");
        assert!(s.ct_eq(b"token-abc"));
        assert!(!s.ct_eq(b"token-abd"));
        assert!(!s.ct_eq(b"token-ab"));
    }
}
