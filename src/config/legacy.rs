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
