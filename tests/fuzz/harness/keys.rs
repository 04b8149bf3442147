//! Fuzz harness for API key parsing: [`KeyFormat::validate`], `display_prefix` and the hasher.
//!
//! Shared by the cargo-fuzz target `keys` and by `tests/fuzz_replay.rs`. Input: one selector
//! byte, then the candidate key. The selector picks the key format and whether the harness
//! completes the candidate with a checksum it computes itself (CRC32 in fixed-width base62,
//! written here independently of the library), so the fuzzer also reaches the accepting path
//! that a random string almost never hits.

use keygate::keys::{KeyFormat, KeyHasher, CHECKSUM_LEN};
use keygate::secret::Secret;

const FORMATS: [(&str, usize); 3] = [("kg_live_", 32), ("sk_prod_", 40), ("x_", 32)];

pub fn run(data: &[u8]) {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let (prefix, body_len) = FORMATS[usize::from(selector & 0x7f) % FORMATS.len()];
    let format = KeyFormat::new(prefix, body_len);
    if selector & 0x80 == 0 {
        check(&format, text);
    } else {
        // The fuzzer writes prefix + body; the checksum is ours.
        let mut key = text.to_string();
        key.push_str(&checksum(text.as_bytes()));
        let well_formed = key.strip_prefix(prefix).is_some_and(|rest| {
            rest.len() == body_len + CHECKSUM_LEN && rest.bytes().all(|b| b.is_ascii_alphanumeric())
        });
        assert_eq!(
            format.validate(&key).is_ok(),
            well_formed,
            "a key with a correct checksum is valid exactly when prefix, length and alphabet are"
        );
        check(&format, &key);
    }
}

/// Invariants for any candidate: an accepted key has the format's shape and its checksum, and
/// any one-character change to it is refused; nothing panics.
fn check(format: &KeyFormat, candidate: &str) {
    let shown = format.display_prefix(candidate);
    assert!(candidate.starts_with(&shown) || shown == format.prefix());

    let hasher = KeyHasher::new(&Secret::new("fuzz-pepper"));
    assert_eq!(hasher.hash(candidate), hasher.hash(candidate));

    if format.validate(candidate).is_err() {
        return;
    }
    let rest = &candidate[format.prefix().len()..];
    assert_eq!(candidate.len(), format.total_len());
    assert!(rest.bytes().all(|b| b.is_ascii_alphanumeric()));
    let (signed, sum) = candidate.split_at(candidate.len() - CHECKSUM_LEN);
    assert_eq!(sum, checksum(signed.as_bytes()));
    // CRC32 detects every single-character substitution.
    let mut bytes = candidate.as_bytes().to_vec();
    for i in format.prefix().len()..bytes.len() {
        let original = bytes[i];
        bytes[i] = if original == b'a' { b'b' } else { b'a' };
        if let Ok(changed) = std::str::from_utf8(&bytes) {
            assert!(
                format.validate(changed).is_err(),
                "changed at {i} still valid"
            );
        }
        bytes[i] = original;
    }
    assert_ne!(
        hasher.hash(candidate),
        KeyHasher::new(&Secret::new("another-pepper")).hash(candidate)
    );
}

/// CRC32 of `signed` as six base62 digits, most significant first.
fn checksum(signed: &[u8]) -> String {
    const BASE62: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut value = crc32fast::hash(signed);
    let mut out = [b'0'; CHECKSUM_LEN];
    for slot in out.iter_mut().rev() {
        *slot = BASE62[(value % 62) as usize];
        value /= 62;
    }
    out.iter().map(|&b| char::from(b)).collect()
}
