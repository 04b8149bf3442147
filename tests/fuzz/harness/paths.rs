//! Fuzz harness for path canonicalisation: [`is_canonical_path`].
//!
//! Shared by the cargo-fuzz target `paths` and by `tests/fuzz_replay.rs`. Input: the path.
//! Beyond "no panic", every path the gate accepts must be one that no upstream can resolve to a
//! different route: checked here on the decoded path, with a decoder written independently of
//! the library's.

use keygate::gate::is_canonical_path;

pub fn run(data: &[u8]) {
    let Ok(path) = std::str::from_utf8(data) else {
        return;
    };
    if !is_canonical_path(path) {
        return;
    }
    assert!(path.starts_with('/'), "{path:?}: not absolute");
    assert!(!path.contains('\\'), "{path:?}: backslash");
    let once = decode(path.as_bytes())
        .unwrap_or_else(|| panic!("{path:?}: accepted with a malformed escape"));
    let once = String::from_utf8(once)
        .unwrap_or_else(|_| panic!("{path:?}: accepted but does not decode to UTF-8"));
    assert!(!once.contains('\\'), "{path:?}: encoded backslash");
    // An encoded slash would make keygate and the upstream split segments differently.
    assert_eq!(
        once.matches('/').count(),
        path.matches('/').count(),
        "{path:?}: encoded slash"
    );
    // Dot segments, also before a `;` parameter and also when the `;` itself was encoded.
    for segment in once.split('/') {
        let before_params = segment.split(';').next().unwrap_or(segment);
        assert!(
            before_params != "." && before_params != "..",
            "{path:?}: dot segment {segment:?} after decoding"
        );
    }
    // Nothing encoded twice: after one decoding, no escape of `.`, `/` or `\` is left for a
    // second decoder to turn into a dot segment or a separator.
    let lower = once.to_ascii_lowercase();
    for escape in ["%2e", "%2f", "%5c"] {
        assert!(
            !lower.contains(escape),
            "{path:?}: decodes once to {once:?}, which still holds {escape}"
        );
    }
}

/// Percent-decodes once; `None` for a malformed escape.
fn decode(bytes: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hi = hex(*bytes.get(i + 1)?)?;
            let lo = hex(*bytes.get(i + 2)?)?;
            out.push(hi << 4 | lo);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Some(out)
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}
