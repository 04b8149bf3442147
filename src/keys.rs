//! API key format, generation, checksum and hashing.
//!
//! A key is `{prefix}{body}{checksum}`: the prefix names the deployment or key class
//! (`enc_live_`, `sk_prod_`), the body is base62 from the OS CSPRNG, and the checksum is the CRC32
//! of prefix + body written as 6 base62 characters. The checksum lets keygate reject typos and
//! random guesses without a cache or store lookup, and lets secret scanners recognise leaked keys.
//!
//! Only `HMAC-SHA256(pepper, key)` is ever stored.

use hmac::{Hmac, Mac};
use rand::distr::{Alphanumeric, SampleString};
use sha2::Sha256;

use crate::secret::Secret;

/// Base62 alphabet used for the checksum. The body uses the same 62 characters (rand's
/// `Alphanumeric`), so the whole key is one alphabet after the prefix.
const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
/// 62^6 > 2^32, so any CRC32 fits in six base62 characters.
pub const CHECKSUM_LEN: usize = 6;
/// Characters of the body shown in lists next to the prefix.
const DISPLAY_BODY_CHARS: usize = 6;
pub const MIN_BODY_LEN: usize = 32;
/// The shortest body `[keys] body_length` may ask for, to match a documented key length
/// (`ee_live_` + 32 with no checksum); below [`MIN_BODY_LEN`] check-config warns.
pub const MIN_SHORT_BODY_LEN: usize = 16;

/// The lookup hash of a key: what the store and the cache are keyed by.
pub type KeyHash = [u8; 32];

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    #[error("key does not start with the expected prefix")]
    Prefix,
    #[error("key has the wrong length")]
    Length,
    #[error("key contains characters outside base62")]
    Alphabet,
    #[error("key checksum does not match")]
    Checksum,
}

/// The shape of keys for one deployment: checked on every request before any lookup.
#[derive(Debug, Clone)]
pub struct KeyFormat {
    prefix: String,
    body_len: usize,
    /// Whether keygate's keys end in the checksum (`[keys] checksum`, default on).
    checksum: bool,
    /// Formats of keys made elsewhere and imported (`[keys] legacy`); empty: keygate's only.
    legacy: Vec<LegacyFormat>,
}

/// Keys made by another system (`sk_...`) that keygate accepts after an import: a prefix and a
/// total length range, no checksum. Their lookup hash is `HMAC(pepper, SHA-256(key))`, so a
/// provider that only kept SHA-256 digests can import those and the keys still authenticate;
/// the extra SHA-256 is paid only by keys with a legacy prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LegacyFormat {
    pub prefix: String,
    /// Bounds on the whole key, prefix included.
    pub min_length: usize,
    pub max_length: usize,
}

impl LegacyFormat {
    /// Prefix, length and alphabet (`A-Z a-z 0-9 _ -`, what provider keys are written in).
    fn accepts(&self, candidate: &str) -> bool {
        candidate.starts_with(self.prefix.as_str())
            && (self.min_length..=self.max_length).contains(&candidate.len())
            && candidate
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    }
}

impl KeyFormat {
    /// `prefix` must be validated by the config layer (non-empty, `[a-z0-9_]`).
    pub fn new(prefix: impl Into<String>, body_len: usize) -> Self {
        Self {
            prefix: prefix.into(),
            body_len: body_len.max(MIN_SHORT_BODY_LEN),
            checksum: true,
            legacy: Vec::new(),
        }
    }

    /// Without the checksum, keys are `{prefix}{body}` only: a typo or a guess is refused only
    /// after a lookup (see `[keys] checksum` in the README).
    pub fn with_checksum(mut self, checksum: bool) -> Self {
        self.checksum = checksum;
        self
    }

    fn checksum_len(&self) -> usize {
        if self.checksum {
            CHECKSUM_LEN
        } else {
            0
        }
    }

    /// Also accepts keys of these imported formats (see [`LegacyFormat`]).
    pub fn with_legacy(mut self, legacy: Vec<LegacyFormat>) -> Self {
        self.legacy = legacy;
        self
    }

    /// The hash a presented key is looked up by, or why it cannot be a key: keygate's own
    /// format (checksum included) hashes the key; a legacy format hashes its SHA-256.
    pub fn lookup_hash(&self, hasher: &KeyHasher, candidate: &str) -> Result<KeyHash, FormatError> {
        match self.validate(candidate) {
            Ok(()) => Ok(hasher.hash(candidate)),
            Err(native) => {
                if self.legacy.iter().any(|l| l.accepts(candidate)) {
                    Ok(hasher.hash_legacy_digest(&sha256(candidate)))
                } else {
                    Err(native)
                }
            }
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub fn total_len(&self) -> usize {
        self.prefix.len() + self.body_len + self.checksum_len()
    }

    /// A fresh key from the OS CSPRNG (rand's `OsRng`-seeded thread RNG is a CSPRNG).
    pub fn generate(&self) -> Secret {
        let body = Alphanumeric.sample_string(&mut rand::rng(), self.body_len);
        let mut key = String::with_capacity(self.total_len());
        key.push_str(&self.prefix);
        key.push_str(&body);
        if self.checksum {
            push_checksum(&mut key);
        }
        Secret::new(key)
    }

    /// Checks prefix, length, alphabet and checksum. Costs no allocation.
    pub fn validate(&self, candidate: &str) -> Result<(), FormatError> {
        let rest = candidate
            .strip_prefix(self.prefix.as_str())
            .ok_or(FormatError::Prefix)?;
        if rest.len() != self.body_len + self.checksum_len() {
            return Err(FormatError::Length);
        }
        if !rest.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(FormatError::Alphabet);
        }
        if !self.checksum {
            return Ok(());
        }
        let (signed, checksum) = candidate.split_at(candidate.len() - CHECKSUM_LEN);
        if encode_checksum(crc32fast::hash(signed.as_bytes())) != checksum.as_bytes() {
            return Err(FormatError::Checksum);
        }
        Ok(())
    }

    /// The legacy format `candidate` fits, if it is not a keygate key (see [`LegacyFormat`]).
    pub fn legacy_for(&self, candidate: &str) -> Option<&LegacyFormat> {
        if self.validate(candidate).is_ok() {
            return None;
        }
        self.legacy.iter().find(|l| l.accepts(candidate))
    }

    /// The `[keys] legacy` formats, in configuration order.
    pub fn legacy(&self) -> &[LegacyFormat] {
        &self.legacy
    }

    /// What lists show: the prefix and the first characters of the body (`ee_live_abc123`).
    pub fn display_prefix(&self, key: &str) -> String {
        let end = (self.prefix.len() + DISPLAY_BODY_CHARS).min(key.len());
        key.get(..end).unwrap_or(&self.prefix).to_string()
    }
}

fn push_checksum(key: &mut String) {
    let encoded = encode_checksum(crc32fast::hash(key.as_bytes()));
    for b in encoded {
        key.push(b as char);
    }
}

/// Fixed-width base62 of a u32. Written here because the base62 crates produce variable-width
/// output and allocate; this is six divisions on the hot path.
fn encode_checksum(mut value: u32) -> [u8; CHECKSUM_LEN] {
    let mut out = [b'0'; CHECKSUM_LEN];
    for slot in out.iter_mut().rev() {
        *slot = BASE62[(value % 62) as usize];
        value /= 62;
    }
    out
}

/// HMAC-SHA256 keyed with the deployment pepper. The keyed state is computed once and cloned per
/// hash, which skips re-deriving the inner and outer pads on every request.
#[derive(Clone)]
pub struct KeyHasher {
    mac: Hmac<Sha256>,
}

impl std::fmt::Debug for KeyHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyHasher(***)")
    }
}

impl KeyHasher {
    pub fn new(pepper: &Secret) -> Self {
        // HMAC accepts keys of any length, so this cannot fail.
        let mac = <Hmac<Sha256> as Mac>::new_from_slice(pepper.expose().as_bytes())
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        Self { mac }
    }

    pub fn hash(&self, key: &str) -> KeyHash {
        let mut mac = self.mac.clone();
        mac.update(key.as_bytes());
        mac.finalize().into_bytes().into()
    }

    /// The lookup hash of a legacy key from its SHA-256 digest (see [`LegacyFormat`]).
    pub fn hash_legacy_digest(&self, digest: &[u8; 32]) -> KeyHash {
        let mut mac = self.mac.clone();
        mac.update(digest);
        mac.finalize().into_bytes().into()
    }
}

/// SHA-256 of a legacy key: what providers store and what its lookup hash is keyed on.
pub fn sha256(key: &str) -> [u8; 32] {
    use sha2::Digest;
    Sha256::digest(key.as_bytes()).into()
}

/// Characters of an id after `<kind>_`.
const ID_CHARS: usize = 20;
/// Leading characters of an id that hold its creation time in milliseconds, big-endian base62:
/// 62^8 ms is about 6,900 years, so the width is fixed for good.
const ID_TIME_CHARS: usize = 8;

/// An identifier such as `key_0WZ3kQpa4fT9...` for accounts, keys and users. Not secret.
///
/// The first [`ID_TIME_CHARS`] characters are the creation millisecond in base62 (whose ASCII
/// order is numeric order), the other 12 are random (71 bits: a collision needs billions of ids
/// in one millisecond). Ids made later sort later, so inserting one appends to the store's id
/// index instead of landing on a random page of it: with a million keys that index outgrows
/// SQLite's page cache, and random ids made every import batch rewrite pages all over it.
/// Lists are ordered by insertion, never by id; nothing reads the time back out of an id.
pub fn new_id(kind: &str) -> String {
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let mut id = String::with_capacity(kind.len() + 1 + ID_CHARS);
    id.push_str(kind);
    id.push('_');
    id.push_str(&time_prefix(millis));
    Alphanumeric.append_string(&mut rand::rng(), &mut id, ID_CHARS - ID_TIME_CHARS);
    id
}

/// `millis` as [`ID_TIME_CHARS`] base62 digits, most significant first (a time past the width
/// keeps its low digits; that is thousands of years away).
fn time_prefix(millis: u128) -> String {
    let mut digits = [BASE62[0]; ID_TIME_CHARS];
    let mut rest = millis;
    for digit in digits.iter_mut().rev() {
        *digit = BASE62[(rest % 62) as usize];
        rest /= 62;
    }
    digits.iter().map(|&b| char::from(b)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn format() -> KeyFormat {
        KeyFormat::new("ee_live_", 32)
    }

    #[test]
    fn generated_key_has_the_documented_shape() {
        let f = format();
        let key = f.generate();
        let k = key.expose();
        assert!(k.starts_with("ee_live_"));
        assert_eq!(k.len(), 8 + 32 + 6);
        assert_eq!(f.validate(k), Ok(()));
        assert_eq!(f.display_prefix(k), &k[..14]);
    }

    #[test]
    fn rejects_each_kind_of_malformation() {
        let f = format();
        let key = f.generate();
        let k = key.expose();
        assert_eq!(
            f.validate(&k.replacen("ee_live_", "ek_live_", 1)),
            Err(FormatError::Prefix)
        );
        assert_eq!(f.validate(&k[..k.len() - 1]), Err(FormatError::Length));
        let mut bad = k.to_string();
        bad.replace_range(10..11, "-");
        assert_eq!(f.validate(&bad), Err(FormatError::Alphabet));
        assert_eq!(f.validate(""), Err(FormatError::Prefix));
    }

    #[test]
    fn checksum_is_fixed_width() {
        assert_eq!(&encode_checksum(0), b"000000");
        assert_eq!(&encode_checksum(u32::MAX), b"4gfFC3");
    }

    #[test]
    fn ids_keep_their_shape_and_sort_by_creation_time() {
        let id = new_id("key");
        assert_eq!(id.len(), 4 + ID_CHARS, "{id}");
        assert!(id.starts_with("key_"), "{id}");
        assert!(id[4..].bytes().all(|b| b.is_ascii_alphanumeric()), "{id}");
        assert_ne!(new_id("key"), new_id("key"));

        assert_eq!(time_prefix(0), "00000000");
        assert_eq!(time_prefix(61), "0000000z");
        assert_eq!(time_prefix(62), "00000010");
        // Numeric order is string order, across digit boundaries and at today's times.
        let times = [
            0u128,
            9,
            10,
            35,
            36,
            61,
            62,
            3843,
            3844,
            1_764_892_800_000,
            1_764_892_800_001,
        ];
        for pair in times.windows(2) {
            assert!(time_prefix(pair[0]) < time_prefix(pair[1]), "{pair:?}");
        }
        let earlier = new_id("key");
        std::thread::sleep(std::time::Duration::from_millis(2));
        assert!(earlier < new_id("key"));
    }

    #[test]
    fn hash_depends_on_pepper_and_key() {
        let a = KeyHasher::new(&Secret::new("pepper-a"));
        let b = KeyHasher::new(&Secret::new("pepper-b"));
        assert_eq!(a.hash("k1"), a.hash("k1"));
        assert_ne!(a.hash("k1"), a.hash("k2"));
        assert_ne!(a.hash("k1"), b.hash("k1"));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Every generated key validates, and every single-character substitution anywhere in it
        /// is rejected (by prefix, alphabet or checksum).
        #[test]
        fn every_single_character_change_is_rejected(
            body_len in 32usize..48,
            replacement in proptest::char::range(' ', '~'),
        ) {
            let f = KeyFormat::new("sk_prod_", body_len);
            let key = f.generate();
            let k = key.expose();
            prop_assert_eq!(f.validate(k), Ok(()));
            for i in 0..k.len() {
                let original = k.as_bytes()[i] as char;
                if original == replacement {
                    continue;
                }
                let mut changed = String::with_capacity(k.len());
                changed.push_str(&k[..i]);
                changed.push(replacement);
                changed.push_str(&k[i + 1..]);
                prop_assert!(f.validate(&changed).is_err(), "accepted {} (changed at {})", changed, i);
            }
        }
    }
}
