//! The README's quickstart shows what the binary prints today: every JSON answer it documents
//! has the live answer's field names, and every error body it quotes is the live body.

mod common;

use std::collections::BTreeSet;

use common::*;
use serde_json::{json, Value};

/// The quickstart section of the README (up to the CLI part).
fn quickstart() -> String {
    let readme = include_str!("../README.md");
    let start = readme
        .find("## Five-minute quickstart")
        .expect("a quickstart section");
    let end = readme[start..]
        .find("### The same with the CLI")
        .map(|e| start + e)
        .expect("the CLI part after the quickstart");
    readme[start..end].to_string()
}

/// The ```json blocks of `text`, parsed.
fn json_blocks(text: &str) -> Vec<Value> {
    text.split("```json\n")
        .skip(1)
        .filter_map(|block| block.split("```").next())
        .map(|block| {
            serde_json::from_str(block.trim())
                .unwrap_or_else(|e| panic!("README JSON does not parse ({e}): {block}"))
        })
        .collect()
}

fn fields(v: &Value) -> BTreeSet<String> {
    v.as_object()
        .unwrap_or_else(|| panic!("not an object: {v}"))
        .keys()
        .cloned()
        .collect()
}

/// The error bodies quoted in the quickstart (`{"error":{...}}` anywhere in it).
fn quoted_errors(text: &str) -> Vec<Value> {
    text.match_indices("{\"error\":")
        .filter_map(|(at, _)| {
            let rest = &text[at..];
            let end = rest.find("}}")?;
            serde_json::from_str(&rest[..end + 2]).ok()
        })
        .collect()
}

#[test]
fn the_quickstart_shows_what_the_binary_answers() {
    let text = quickstart();
    let blocks = json_blocks(&text);
    assert_eq!(blocks.len(), 2, "an account and a key answer: {blocks:?}");

    let echo = Echo::start();
    let kg = Keygate::start(&Options::new(echo.addr));
    let account = kg.admin("POST", "/admin/v1/accounts", Some(json!({"name": "acme"})));
    assert_eq!(account.status, 201, "{}", account.body);
    assert_eq!(
        fields(&blocks[0]),
        fields(&account.json()),
        "account answer"
    );

    let id = account.json()["id"].as_str().expect("id").to_string();
    let key = kg.admin(
        "POST",
        "/admin/v1/keys",
        Some(json!({"account_id": id, "name": "my-agent-key", "scopes": ["leads:read"]})),
    );
    assert_eq!(key.status, 201, "{}", key.body);
    assert_eq!(fields(&blocks[1]), fields(&key.json()), "key answer");
    let plaintext = key.json()["key"].as_str().expect("key").to_string();
    let key_id = key.json()["id"].as_str().expect("key id").to_string();

    // The error bodies, byte for byte with the default templates.
    let errors = quoted_errors(&text);
    let live = |code: &str| -> Value {
        let r = match code {
            "missing_credential" => get(&kg.url("/v1/x"), &[]),
            "malformed_credential" => get(
                &kg.url("/v1/x"),
                &[("authorization", &bearer(&format!("{plaintext}x")))],
            ),
            "key_revoked" => {
                let r = kg.admin("POST", &format!("/admin/v1/keys/{key_id}/revoke"), None);
                assert_eq!(r.status, 200, "{}", r.body);
                get(&kg.url("/v1/x"), &[("authorization", &bearer(&plaintext))])
            }
            other => panic!("the README quotes {other}; teach this test to provoke it"),
        };
        r.json()
    };
    let codes: Vec<String> = errors
        .iter()
        .map(|e| e["error"]["code"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(
        codes,
        ["missing_credential", "malformed_credential", "key_revoked"],
        "the quoted errors, in order"
    );
    for quoted in &errors {
        let code = quoted["error"]["code"].as_str().unwrap_or("");
        assert_eq!(quoted, &live(code), "{code}");
    }
}

/// The CLI lines of the README run as written against a live keygate (with the documented ids
/// replaced by live ones), each exiting 0.
#[test]
fn the_cli_examples_run_as_written() {
    let readme = include_str!("../README.md");
    let start = readme
        .find("### The same with the CLI")
        .expect("the CLI part");
    let section = &readme[start..];
    let section = &section[..section.find("\n## ").unwrap_or(section.len())];
    let lines: Vec<&str> = section
        .lines()
        .filter_map(|l| l.trim().strip_prefix("./target/release/keygate "))
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .collect();
    assert!(lines.len() >= 5, "{lines:?}");

    let echo = Echo::start();
    let kg = Keygate::start(&Options::new(echo.addr));
    let doc_account = "acc_khuxeb4tJUiKf9oSR2ak";
    let doc_key = "key_UpMLtmta2GImGxQ6c8gs";
    let mut account = String::new();
    let mut key = String::new();
    for line in lines {
        let line = line.replace(doc_account, &account).replace(doc_key, &key);
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_keygate"))
            .args(line.split_whitespace())
            .env("KEYGATE_ADMIN_URL", kg.admin_url())
            .env("KEYGATE_ADMIN_TOKEN", ADMIN_TOKEN)
            .output()
            .expect("run keygate");
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            out.status.success(),
            "`keygate {line}` failed: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        // The ids the later lines need, from the answers as printed.
        let id_after = |label: &str| {
            stdout
                .lines()
                .find_map(|l| l.trim().strip_prefix(label))
                .map(|rest| rest.trim().to_string())
        };
        if line.starts_with("accounts create") {
            account = stdout
                .split_whitespace()
                .find(|w| w.starts_with("acc_"))
                .unwrap_or_else(|| panic!("no account id in: {stdout}"))
                .to_string();
        }
        if line.starts_with("keys create") {
            key = id_after("id:").unwrap_or_else(|| panic!("no key id in: {stdout}"));
        }
    }
    assert!(!account.is_empty() && !key.is_empty());
}

/// Every metric keygate defines is in the README's metrics table, so an operator can look any of
/// them up.
#[test]
fn every_metric_is_documented_in_the_readme() {
    let readme = include_str!("../README.md");
    let table = readme
        .split("\n### Metrics\n")
        .nth(1)
        .and_then(|rest| rest.split("\n### ").next())
        .expect("a ### Metrics section in the README");
    let defined = include_str!("../src/metrics.rs");
    let mut names: Vec<&str> = defined
        .match_indices("\"keygate_")
        .filter_map(|(at, _)| defined[at + 1..].split('"').next())
        .filter(|n| n.chars().all(|c| c.is_ascii_lowercase() || c == '_'))
        .collect();
    names.sort_unstable();
    names.dedup();
    assert!(names.len() >= 20, "{names:?}");
    for name in names {
        assert!(
            table.contains(&format!("| `{name}` |")),
            "{name} is not in the README's metrics table"
        );
    }
}
