//! Which client headers never reach the upstream: the credential headers, every header in the
//! identity namespace, and the configured `[forwarding] strip_headers`.
//!
//! Names are compared as CGI reads them: case-insensitively and with `_` read as `-`. WSGI,
//! gunicorn before 22, Puma before its 2024 fix and PHP map `X_Keygate_Key_Id` and
//! `X-Keygate-Key-Id` to the same variable, so dropping only the exact spelling would let a
//! client forge the identity keygate vouches for.

use http::HeaderName;

use crate::config::Config;

/// The names to drop, prepared once per configuration: lower-case, `-` for `_`.
pub(super) struct StripRules {
    /// Every header starting with this is keygate's to set.
    namespace: Box<[u8]>,
    /// Headers dropped by exact (normalised) name.
    names: Box<[Box<[u8]>]>,
}

impl StripRules {
    pub(super) fn new(config: &Config) -> Self {
        let names = config
            .credential_sources
            .iter()
            .map(|s| &s.header)
            .chain(&config.strip_headers)
            .map(|h| normalise(h.as_str().as_bytes()))
            .collect();
        Self {
            namespace: normalise(config.identity.namespace.as_bytes()),
            names,
        }
    }

    /// Whether a client header of this name is dropped. No allocation: bytes are compared as
    /// they are read.
    pub(super) fn drops(&self, name: &[u8]) -> bool {
        starts_with_normalised(name, &self.namespace)
            || self
                .names
                .iter()
                .any(|n| n.len() == name.len() && starts_with_normalised(name, n))
    }

    /// The names among `names` that are dropped; allocates only when there is one.
    pub(super) fn dropped<'a>(
        &self,
        names: impl Iterator<Item = &'a HeaderName>,
    ) -> Vec<HeaderName> {
        names
            .filter(|n| self.drops(n.as_str().as_bytes()))
            .cloned()
            .collect()
    }
}

/// How CGI-style servers read a header-name byte: upper and lower case alike, `_` as `-`.
fn fold(b: u8) -> u8 {
    match b {
        b'_' => b'-',
        b => b.to_ascii_lowercase(),
    }
}

fn normalise(name: &[u8]) -> Box<[u8]> {
    name.iter().map(|b| fold(*b)).collect()
}

/// Whether `name`, folded, starts with the already folded `prefix`.
fn starts_with_normalised(name: &[u8], prefix: &[u8]) -> bool {
    name.len() >= prefix.len() && name.iter().zip(prefix).all(|(a, b)| fold(*a) == *b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> StripRules {
        let config = crate::config::Config::parse(
            "[forwarding]\nstrip_headers = [\"X-HTTP-Method-Override\"]\n",
            "test",
        )
        .expect("config");
        StripRules::new(&config)
    }

    #[test]
    fn identity_namespace_in_any_spelling() {
        let r = rules();
        for name in [
            "x-keygate-key-id",
            "x_keygate_key_id",
            "X_Keygate-Account_Id",
            "x-keygate_anything",
            "x_keygate_",
        ] {
            assert!(r.drops(name.as_bytes()), "{name}");
        }
        for name in ["x-keygate", "x-keygatex", "keygate-key-id", "x-kg-key-id"] {
            assert!(!r.drops(name.as_bytes()), "{name}");
        }
    }

    #[test]
    fn credential_and_configured_headers_by_exact_name() {
        let r = rules();
        for name in [
            "authorization",
            "x-api-key",
            "x_api_key",
            "X_API-KEY",
            "x-http-method-override",
            "x_http_method_override",
        ] {
            assert!(r.drops(name.as_bytes()), "{name}");
        }
        for name in [
            "x-api-key2",
            "x-api",
            "authorization-extra",
            "x-http-method",
        ] {
            assert!(!r.drops(name.as_bytes()), "{name}");
        }
    }
}
