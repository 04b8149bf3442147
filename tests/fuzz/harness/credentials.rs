//! Fuzz harness for credential extraction: [`keygate::gate::extract`] over a header map built
//! from raw (name, value) byte pairs, as a client could send them.
//!
//! Shared by the cargo-fuzz target `credentials` and by `tests/fuzz_replay.rs`. Input: lines
//! `name:value` separated by `\n`; a line whose name or value `http` refuses is skipped, as the
//! HTTP parser in front of the gate would refuse it. The result is checked against a reference
//! written here from the documented rule: the first configured source, in order, whose header
//! (in arrival order) carries a non-empty credential after trimming and, for a scheme source, a
//! case-insensitive scheme word.

use http::header::{HeaderMap, HeaderName, HeaderValue};
use keygate::config::CredentialSource;

pub fn run(data: &[u8]) {
    let mut headers = HeaderMap::new();
    for line in data.split(|&b| b == b'\n') {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (name, value) = (&line[..colon], &line[colon + 1..]);
        let (Ok(name), Ok(value)) = (HeaderName::from_bytes(name), HeaderValue::from_bytes(value))
        else {
            continue;
        };
        headers.append(name, value);
    }
    let sources = sources();
    let got = keygate::gate::extract(&sources, &headers);
    assert_eq!(got, reference(&sources, &headers), "{headers:?}");
    if let Some(credential) = got {
        assert!(!credential.is_empty());
        assert_eq!(credential, credential.trim(), "credential not trimmed");
    }
}

/// As the config layer prepares them: lower-case header names, schemes lower-cased with their
/// space.
fn sources() -> Vec<CredentialSource> {
    let source = |header: &'static str, scheme: Option<&str>| CredentialSource {
        header: HeaderName::from_static(header),
        scheme: scheme.map(|s| format!("{s} ")),
    };
    vec![
        source("authorization", Some("bearer")),
        source("x-api-key", None),
        source("authorization", Some("apikey")),
    ]
}

fn reference<'h>(sources: &[CredentialSource], headers: &'h HeaderMap) -> Option<&'h str> {
    sources.iter().find_map(|source| {
        headers.get_all(&source.header).iter().find_map(|value| {
            let text = value.to_str().ok()?.trim();
            let credential = match &source.scheme {
                None => text,
                Some(scheme) => {
                    let word = scheme.trim_end();
                    // The scheme word, then at least one space (the value was trimmed, so a
                    // bare scheme word has none).
                    let rest = strip_prefix_ignore_case(text, word)?;
                    if !rest.starts_with(' ') {
                        return None;
                    }
                    rest.trim()
                }
            };
            (!credential.is_empty()).then_some(credential)
        })
    })
}

fn strip_prefix_ignore_case<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    let head = text.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &text[prefix.len()..])
}
