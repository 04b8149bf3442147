//! `[keys] legacy`: the formats of keys made by another system that an import may bring in
//! (see [`crate::keys::LegacyFormat`]). Checked apart from keygate's own format so a mistake
//! here names the entry.

use toml::Spanned;

use super::file::LegacyKeySection;
use super::Validator;
use crate::keys::LegacyFormat;

/// Legacy keys shorter than this are guessable; longer than this are not keys.
const MIN_LEGACY_LENGTH: usize = 16;
const MAX_LEGACY_LENGTH: usize = 256;

impl Validator<'_> {
    pub(super) fn legacy_formats(
        &mut self,
        entries: &[Spanned<LegacyKeySection>],
        own_prefix: &str,
    ) -> Vec<LegacyFormat> {
        let mut out = Vec::with_capacity(entries.len());
        for entry in entries {
            let span = entry.span();
            let e = entry.get_ref();
            let prefix_ok = !e.prefix.is_empty()
                && e.prefix.len() <= 32
                && e.prefix
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
            if !prefix_ok {
                self.problem(
                    "keys.legacy.prefix",
                    &span,
                    "must be 1-32 characters of A-Z, a-z, 0-9, _ and - (for example `sk_`)",
                );
            }
            if e.prefix == own_prefix {
                self.problem(
                    "keys.legacy.prefix",
                    &span,
                    format!(
                        "`{}` is `keys.prefix`: keygate's own keys and imported ones need \
                         different prefixes",
                        e.prefix.escape_debug()
                    ),
                );
            }
            if e.min_length < MIN_LEGACY_LENGTH.max(e.prefix.len() + 1)
                || e.max_length > MAX_LEGACY_LENGTH
                || e.min_length > e.max_length
            {
                self.problem(
                    "keys.legacy",
                    &span,
                    format!(
                        "`min_length` and `max_length` (the whole key, prefix included) must \
                         satisfy {MIN_LEGACY_LENGTH} <= min_length <= max_length <= \
                         {MAX_LEGACY_LENGTH}, and min_length must exceed the prefix"
                    ),
                );
            }
            if e.hash != "sha256" {
                self.problem(
                    "keys.legacy.hash",
                    &span,
                    format!(
                        "`{}` is not supported: `sha256` is the one hash keygate can import",
                        e.hash.escape_debug()
                    ),
                );
            }
            out.push(LegacyFormat {
                prefix: e.prefix.clone(),
                min_length: e.min_length,
                max_length: e.max_length,
            });
        }
        out
    }
}

/// What `[keys]` settings that match a provider's documented key shape give up.
pub(super) fn key_warnings(body_len: usize, checksum: bool) -> Vec<String> {
    let mut out = Vec::new();
    if !checksum {
        out.push(
            "`keys.checksum = false`: keygate's keys carry no checksum, so a mistyped or guessed \
             key is refused only after a cache or store lookup (random keys cost store reads), \
             and secret scanners cannot tell a leaked key from random text"
                .to_string(),
        );
    }
    if body_len < crate::keys::MIN_BODY_LEN {
        // log2(62) = 5.95 bits a base62 character.
        let bits = (body_len as f64 * 62f64.log2()).floor();
        out.push(format!(
            "`keys.body_length = {body_len}`: keys have {bits} bits of randomness instead of the \
             {}+ of {} characters; still beyond guessing, but less margin",
            (crate::keys::MIN_BODY_LEN as f64 * 62f64.log2()).floor(),
            crate::keys::MIN_BODY_LEN
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use crate::config::{Config, ConfigError};
    use crate::keys::{sha256, KeyHasher};
    use crate::secret::Secret;

    const REST: &str = "[upstreams.api]\naddress = \"127.0.0.1:3000\"\n\n[[routes]]\nname = \"v1\"\npath = \"/v1/{*rest}\"\nupstream = \"api\"\n";

    fn config(keys: &str) -> Result<Config, ConfigError> {
        Config::parse(
            &format!("[keys]\nprefix = \"kg_live_\"\n{keys}\n{REST}"),
            "t.toml",
        )
    }

    #[test]
    fn a_legacy_key_is_looked_up_by_the_hmac_of_its_sha256() {
        let c = config(
            "legacy = [{ prefix = \"sk_\", min_length = 20, max_length = 128, hash = \"sha256\" }]",
        )
        .expect("valid");
        let hasher = KeyHasher::new(&Secret::new("pepper".to_string()));
        let key = "sk_4eC39HqLyjWDarjtT1zdp7dc";
        assert_eq!(
            c.key_format.lookup_hash(&hasher, key),
            Ok(hasher.hash_legacy_digest(&sha256(key)))
        );
        // keygate's own keys keep their checksum and their plain HMAC.
        let own = c.key_format.generate();
        assert_eq!(
            c.key_format.lookup_hash(&hasher, own.expose()),
            Ok(hasher.hash(own.expose()))
        );
        let mut typo = own.expose().to_string();
        typo.pop();
        typo.push('!');
        assert!(c.key_format.lookup_hash(&hasher, &typo).is_err());
        // Outside the length range, another prefix or another alphabet: not a key.
        for bad in [
            "sk_short",
            &format!("sk_{}", "a".repeat(200)),
            "pk_4eC39HqLyjWDarjtT1zdp7dc",
            "sk_4eC39HqLyjWDarjtT1zd p7dc",
        ] {
            assert!(c.key_format.lookup_hash(&hasher, bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_documented_length_without_checksum_is_allowed_with_warnings() {
        let c = config("body_length = 32\nchecksum = false").expect("valid");
        let key = c.key_format.generate();
        // `kg_live_` + 32: the length a provider documents, no checksum.
        assert_eq!(key.expose().len(), 8 + 32);
        assert!(c.key_format.validate(key.expose()).is_ok());
        assert_eq!(c.warnings.len(), 1, "{:?}", c.warnings);
        assert!(c.warnings[0].contains("no checksum"), "{:?}", c.warnings);

        let c = config("body_length = 20\nchecksum = false").expect("valid");
        assert_eq!(c.key_format.generate().expose().len(), 8 + 20);
        assert_eq!(c.warnings.len(), 2, "{:?}", c.warnings);
        assert!(c.warnings[1].contains("119 bits"), "{:?}", c.warnings);

        let c = config("").expect("valid");
        assert!(c.warnings.is_empty());
        assert!(matches!(
            config("body_length = 15"),
            Err(ConfigError::Invalid { .. })
        ));
    }

    #[test]
    fn bad_legacy_entries_are_named() {
        let problems = |keys: &str| match config(keys) {
            Err(ConfigError::Invalid { problems, .. }) => problems.join("\n"),
            other => panic!("expected problems, got {other:?}"),
        };
        let p = problems(
            "legacy = [{ prefix = \"sk_\", min_length = 20, max_length = 128, hash = \"md5\" }]",
        );
        assert!(p.contains("keys.legacy.hash") && p.contains("md5"), "{p}");
        let p = problems(
            "legacy = [{ prefix = \"sk_\", min_length = 64, max_length = 32, hash = \"sha256\" }]",
        );
        assert!(p.contains("min_length"), "{p}");
        let p = problems("legacy = [{ prefix = \"kg_live_\", min_length = 20, max_length = 64, hash = \"sha256\" }]");
        assert!(p.contains("different prefixes"), "{p}");
        let p = problems(
            "legacy = [{ prefix = \"s k\", min_length = 20, max_length = 64, hash = \"sha256\" }]",
        );
        assert!(p.contains("keys.legacy.prefix"), "{p}");
        assert!(matches!(
            config("legacy = [{ prefix = \"sk_\", min_length = 20, max_length = 64, hash = \"sha256\", x = 1 }]"),
            Err(ConfigError::Parse { .. })
        ));
    }
}
