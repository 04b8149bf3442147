//! Which client headers never reach the upstream: the credential headers, every header in the
//! identity namespace, the configured `[forwarding] strip_headers`, the forwarding headers
//! keygate sets itself, and, from a peer that is not a trusted proxy, every other forwarding
//! header (`X-Forwarded-*`, `Forwarded`): that client's claims about where it came from.
//!
//! Names are compared as CGI reads them: case-insensitively and with `_` read as `-`. WSGI,
//! gunicorn before 22, Puma before its 2024 fix and PHP map `X_Keygate_Key_Id` and
//! `X-Keygate-Key-Id` to the same variable, so dropping only the exact spelling would let a
//! client forge the identity keygate vouches for.

use http::HeaderName;
use smallvec::SmallVec;

use crate::config::Config;

/// Set by keygate on every forwarded request (see `forward_headers`): whatever a client sent
/// under these names, in any spelling, is dropped first.
const SET_BY_KEYGATE: [&[u8]; 4] = [
    b"x-forwarded-for",
    b"x-forwarded-proto",
    b"x-real-ip",
    b"x-request-id",
];

/// `X-Forwarded-Host`, `-Port`, `-Prefix`...: kept from a trusted proxy (in their canonical
/// spelling only), dropped from anyone else.
const FORWARDING_PREFIX: &[u8] = b"x-forwarded-";

/// RFC 7239's header: kept (and appended to) from a trusted proxy, dropped from anyone else.
const FORWARDED: &[u8] = b"forwarded";

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

    /// Whether a client header of this name is dropped, on a request from a trusted proxy
    /// (`trusted`) or not. No allocation: bytes are compared as they are read.
    pub(super) fn drops(&self, name: &[u8], trusted: bool) -> bool {
        let exactly = |n: &[u8]| n.len() == name.len() && starts_with_normalised(name, n);
        starts_with_normalised(name, &self.namespace)
            || self.names.iter().any(|n| exactly(n))
            || SET_BY_KEYGATE.iter().any(|n| exactly(n))
            || (starts_with_normalised(name, FORWARDING_PREFIX)
                && (!trusted || name.contains(&b'_')))
            || (!trusted && exactly(FORWARDED))
    }

    /// The names among `names` that are dropped, in one pass. Up to four are kept inline (a
    /// keyed request always drops its credential header, so a heap list would be one allocation
    /// per request); more spill to the heap. One pass, not "find the first, remove it, look
    /// again": a request can carry a couple of hundred distinct names to drop, and re-scanning
    /// after each removal would cost the square of that.
    pub(super) fn dropped<'a>(
        &self,
        names: impl Iterator<Item = &'a HeaderName>,
        trusted: bool,
    ) -> SmallVec<[HeaderName; 4]> {
        names
            .filter(|n| self.drops(n.as_str().as_bytes(), trusted))
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
            assert!(r.drops(name.as_bytes(), false), "{name}");
        }
        for name in ["x-keygate", "x-keygatex", "keygate-key-id", "x-kg-key-id"] {
            assert!(!r.drops(name.as_bytes(), false), "{name}");
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
            assert!(r.drops(name.as_bytes(), false), "{name}");
        }
        for name in [
            "x-api-key2",
            "x-api",
            "authorization-extra",
            "x-http-method",
        ] {
            assert!(!r.drops(name.as_bytes(), false), "{name}");
        }
    }

    #[test]
    fn forwarding_headers_keygate_sets_are_dropped_in_any_spelling_from_anyone() {
        let r = rules();
        for trusted in [false, true] {
            for name in [
                "x-forwarded-for",
                "x_forwarded_for",
                "X_Forwarded-For",
                "x-forwarded-proto",
                "x_forwarded_proto",
                "x-real-ip",
                "x_real_ip",
                "X-Real_IP",
                "x-request-id",
                "x_request_id",
            ] {
                assert!(
                    r.drops(name.as_bytes(), trusted),
                    "{name} trusted={trusted}"
                );
            }
        }
    }

    #[test]
    fn other_forwarding_headers_only_from_a_trusted_proxy_and_spelled_right() {
        let r = rules();
        for name in ["x-forwarded-host", "x-forwarded-port", "forwarded"] {
            assert!(r.drops(name.as_bytes(), false), "{name}");
            assert!(!r.drops(name.as_bytes(), true), "{name}");
        }
        for name in ["x_forwarded_host", "x-forwarded_port", "X_FORWARDED-PREFIX"] {
            assert!(r.drops(name.as_bytes(), false), "{name}");
            assert!(r.drops(name.as_bytes(), true), "{name}");
        }
        for name in ["forwarded-for", "x-forwarded", "x-real-ipx", "x-request"] {
            assert!(!r.drops(name.as_bytes(), false), "{name}");
        }
    }
}
