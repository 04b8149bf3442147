//! Importing keys made elsewhere (`POST /admin/v1/keys/import`, `keygate keys import`),
//! through the real binary: plaintext and SHA-256 forms, legacy prefixes authenticating on the
//! proxy, idempotence, refused entries reported by line while the rest go in.

mod common;
use common::redis_server::RedisServer;
use common::*;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use base64::Engine;
use keygate::keys::{sha256, KeyFormat, KeyHasher};
use keygate::secret::Secret;
use serde_json::{json, Value};

const A: &str = "/admin/v1";

/// `sk_` keys of 20-128 characters are accepted as imported legacy keys.
const LEGACY: &str = r#"
[[keys.legacy]]
prefix = "sk_"
min_length = 20
max_length = 128
hash = "sha256"
"#;

fn start_legacy(store_toml: Option<String>) -> (Echo, Keygate) {
    let echo = Echo::start();
    let mut opts = Options::new(echo.addr);
    opts.extra_toml = LEGACY.into();
    if let Some(s) = store_toml {
        opts.store_toml = s;
    }
    let kg = Keygate::start(&opts);
    (echo, kg)
}

/// A provider's key: `sk_` and 40 random letters and digits.
fn legacy_key(n: usize) -> String {
    let r: u64 = rand::random();
    format!("sk_{n:08}{r:016x}{:016x}", rand::random::<u64>())
}

/// An import call with a generous timeout (10,000 keys on a loaded machine).
fn import(kg: &Keygate, entries: &[Value]) -> Value {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(120)))
        .build()
        .into();
    let mut r = agent
        .post(&format!("{}{A}/keys/import", kg.admin_url()))
        .header("authorization", &bearer(ADMIN_TOKEN))
        .send_json(json!({ "keys": entries }))
        .expect("send import");
    let status = r.status().as_u16();
    let body = r.body_mut().read_to_string().expect("body");
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).expect("json")
}

fn hasher() -> KeyHasher {
    KeyHasher::new(&Secret::new(PEPPER.to_string()))
}

#[test]
fn ten_thousand_keys_in_one_call_each_authenticates_and_a_rerun_changes_nothing() {
    let (echo, kg) = start_legacy(None);
    let account = kg.create_account("bulk");
    // Plaintext legacy keys, SHA-256 digests in hex and in base64, and keygate-format keys
    // from another deployment, interleaved.
    let native = KeyFormat::new("kg_test_", 32);
    let mut plaintexts = Vec::new();
    let entries: Vec<Value> = (0..10_000)
        .map(|i| {
            let (key, entry) = match i % 4 {
                0 => {
                    let k = legacy_key(i);
                    (k.clone(), json!({ "key": k }))
                }
                1 => {
                    let k = legacy_key(i);
                    (k.clone(), json!({ "sha256": hex::encode(sha256(&k)) }))
                }
                2 => {
                    let k = legacy_key(i);
                    let b64 = base64::engine::general_purpose::STANDARD.encode(sha256(&k));
                    (k.clone(), json!({ "sha256": b64 }))
                }
                _ => {
                    let k = native.generate().expose().to_string();
                    (k.clone(), json!({ "key": k }))
                }
            };
            plaintexts.push(key);
            let mut entry = entry;
            entry["account_id"] = json!(account);
            entry["name"] = json!(format!("imported {i}"));
            entry["scopes"] = json!(["leads:read"]);
            entry
        })
        .collect();

    let started = Instant::now();
    let out = import(&kg, &entries);
    // Reported, not asserted (timing belongs to the bench): the target is under 10 s.
    eprintln!("10,000 keys imported in {:?}", started.elapsed());
    assert_eq!(out["created"], 10_000, "{}", out["errors"]);
    assert_eq!(out["existing"], 0);
    assert_eq!(out["refused"], 0);
    let keys = out["keys"].as_array().expect("keys");
    assert_eq!(keys.len(), 10_000);
    let ids: HashSet<&str> = keys.iter().map(|k| k["id"].as_str().expect("id")).collect();
    assert_eq!(ids.len(), 10_000);
    assert_eq!(keys[9_999]["line"], 10_000);
    assert!(!out.to_string().contains("sk_0"), "no key is echoed");

    // Every key is stored under the hash the proxy looks it up by.
    let db = rusqlite::Connection::open(kg.data_dir().join("keygate.db")).expect("open db");
    let h = hasher();
    let mut stmt = db
        .prepare("SELECT account_id FROM keys WHERE hash = ?1")
        .expect("prepare");
    for key in &plaintexts {
        let hash = native
            .clone()
            .with_legacy(vec![keygate::keys::LegacyFormat {
                prefix: "sk_".into(),
                min_length: 20,
                max_length: 128,
            }])
            .lookup_hash(&h, key)
            .expect("a key");
        let owner: String = stmt
            .query_row([hash.as_slice()], |r| r.get(0))
            .unwrap_or_else(|e| panic!("key {} not stored: {e}", &key[..12]));
        assert_eq!(owner, account);
    }
    // And a wide sample authenticates through the proxy, each form among them.
    for key in plaintexts.iter().step_by(37) {
        let r = call(&kg, "/leads/x", key);
        assert_eq!(r.status, 200, "{}: {}", &key[..12], r.body);
    }
    assert!(echo.hits() >= 10_000 / 37);

    // The same file again: one key per key.
    let again = import(&kg, &entries[..2_000]);
    assert_eq!(again["created"], 0);
    assert_eq!(again["existing"], 2_000);
    let count: i64 = db
        .query_row("SELECT COUNT(*) FROM keys", [], |r| r.get(0))
        .expect("count");
    assert_eq!(count, 10_000);
}

#[test]
fn plaintext_and_sha256_of_one_key_are_one_key_and_an_import_clears_a_cached_refusal() {
    let (_echo, kg) = start_legacy(None);
    let account = kg.create_account("one");
    let key = legacy_key(1);
    // Refused (and the refusal cached) before the import.
    assert_eq!(call(&kg, "/v1/x", &key).status, 401);

    let first = import(
        &kg,
        &[json!({ "sha256": hex::encode(sha256(&key)), "account_id": account })],
    );
    assert_eq!(first["created"], 1);
    let id = first["keys"][0]["id"].clone();
    // At once: the import dropped the cached "unknown key".
    let r = call(&kg, "/v1/x", &key);
    assert_eq!(r.status, 200, "{}", r.body);

    let second = import(
        &kg,
        &[json!({ "key": key, "account_id": account, "name": "again" })],
    );
    assert_eq!(second["created"], 0);
    assert_eq!(second["existing"], 1);
    assert_eq!(second["keys"][0]["id"], id);
    assert_eq!(second["keys"][0]["status"], "existing");

    // The key is an ordinary key afterwards: revoking it stops it.
    let id = id.as_str().expect("id");
    let listed = admin_ok(&kg, "GET", &format!("{A}/keys/{id}"), None);
    assert_eq!(listed["display_prefix"], "sk_");
    admin_ok(&kg, "POST", &format!("{A}/keys/{id}/revoke"), None);
    assert_eq!(call(&kg, "/v1/x", &key).status, 401);
}

#[test]
fn refused_entries_are_reported_by_line_and_the_rest_go_in() {
    let (_echo, kg) = start_legacy(None);
    let account = kg.create_account("lines");
    let good: Vec<String> = (0..4).map(legacy_key).collect();
    let entries = vec![
        json!({ "key": good[0], "account_id": account }),
        json!({ "key": good[1], "account_id": "acc_missing" }),
        json!({ "key": "pk_not_a_known_prefix_0123456789", "account_id": account }),
        json!({ "key": good[2], "account_id": account, "expires_at": "2001-01-01T00:00:00Z" }),
        json!({ "sha256": "zz", "account_id": account }),
        json!({ "key": good[3], "account_id": account, "colour": "red" }),
        json!({ "account_id": account }),
        json!({ "key": good[2], "sha256": hex::encode(sha256(&good[2])), "account_id": account }),
        json!({ "key": good[2], "account_id": account, "scopes": ["leads:read"] }),
    ];
    let out = import(&kg, &entries);
    assert_eq!(out["created"], 2, "{out}");
    assert_eq!(out["refused"], 7);
    let lines: Vec<u64> = out["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .map(|e| e["line"].as_u64().expect("line"))
        .collect();
    assert_eq!(lines, vec![2, 3, 4, 5, 6, 7, 8]);
    let errors = out["errors"].to_string();
    assert!(errors.contains("account not found"), "{errors}");
    assert!(errors.contains("legacy"), "{errors}");
    assert!(errors.contains("expires_at"), "{errors}");
    assert!(errors.contains("sha256"), "{errors}");
    assert!(errors.contains("colour"), "{errors}");
    for key in &good {
        assert!(!errors.contains(key.as_str()), "a key was echoed: {errors}");
    }
    let stored: Vec<u64> = out["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .map(|k| k["line"].as_u64().expect("line"))
        .collect();
    assert_eq!(stored, vec![1, 9]);
    assert_eq!(call(&kg, "/leads/x", &good[2]).status, 200);
    assert_eq!(call(&kg, "/v1/x", &good[0]).status, 200);
    assert_eq!(call(&kg, "/v1/x", &good[1]).status, 401);

    // The body itself must be an object with 1 to 10,000 entries.
    let empty = kg.admin(
        "POST",
        &format!("{A}/keys/import"),
        Some(json!({ "keys": [] })),
    );
    assert_error(&empty, 422, "invalid_body");
}

#[test]
fn the_cli_imports_a_json_lines_file_with_file_line_numbers() {
    let (_echo, kg) = start_legacy(None);
    let account = kg.create_account("cli");
    let keys: Vec<String> = (0..3).map(legacy_key).collect();
    let file = kg.dir.path().join("keys.jsonl");
    let text = format!(
        "{}\n\nnot json at all\n{}\n{}\n[1]\n",
        json!({ "key": keys[0], "account_id": account, "name": "a" }),
        json!({ "sha256": hex::encode(sha256(&keys[1])), "account_id": account }),
        json!({ "key": keys[2], "account_id": "acc_nope" }),
    );
    std::fs::write(&file, text).expect("write file");
    let run = |extra: &[&str]| {
        let mut args = vec!["keys", "import", file.to_str().expect("path")];
        args.extend_from_slice(extra);
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_keygate"))
            .args(&args)
            .env("KEYGATE_ADMIN_URL", kg.admin_url())
            .env("KEYGATE_ADMIN_TOKEN", ADMIN_TOKEN)
            .output()
            .expect("run keygate");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let text = run(&[]);
    assert!(text.contains("created 2, existing 0, refused 3"), "{text}");
    assert!(text.contains("line 3: not JSON"), "{text}");
    assert!(text.contains("line 5: account not found"), "{text}");
    assert!(text.contains("line 6: not a JSON object"), "{text}");
    assert!(!text.contains(keys[2].as_str()), "{text}");
    assert_eq!(call(&kg, "/v1/x", &keys[0]).status, 200);
    assert_eq!(call(&kg, "/v1/x", &keys[1]).status, 200);

    // Again: nothing new.
    let out: Value = serde_json::from_str(&run(&["--json"])).expect("json");
    assert_eq!(out["created"], 0);
    assert_eq!(out["existing"], 2);
    assert_eq!(out["errors"][1]["line"], 5);
}

#[test]
fn imported_keys_authenticate_on_redis_too() {
    let redis = RedisServer::start();
    let (_echo, kg) = start_legacy(Some(format!(
        "[store]\nbackend = \"redis\"\nurl = \"{}\"\n",
        redis.url()
    )));
    let account = kg.create_account("redis");
    let keys: Vec<String> = (0..300).map(legacy_key).collect();
    let entries: Vec<Value> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| match i % 2 {
            0 => json!({ "key": k, "account_id": account }),
            _ => json!({ "sha256": hex::encode(sha256(k)), "account_id": account }),
        })
        .collect();
    let out = import(&kg, &entries);
    assert_eq!(out["created"], 300, "{}", out["errors"]);
    for key in keys.iter().step_by(7) {
        assert_eq!(call(&kg, "/v1/x", key).status, 200);
    }
    let again = import(&kg, &entries);
    assert_eq!(again["existing"], 300);
}

/// A documented key length (`kg_test_` + 32, no checksum) is a config keygate takes, with a
/// check-config warning that says what is lost; keys made so authenticate.
#[test]
fn keys_without_checksum_match_a_documented_length_with_a_warning() {
    let echo = Echo::start();
    let mut opts = Options::new(echo.addr);
    opts.prefix = "kg_test_\"\nbody_length = 32\nchecksum = false\n# \"".into();
    let kg = Keygate::start(&opts);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_keygate"))
        .args(["check-config", "--skip-secrets"])
        .arg(&kg.config_path)
        .output()
        .expect("run check-config");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("warning: `keys.checksum = false`"),
        "{stderr}"
    );
    assert!(stderr.contains("no checksum"), "{stderr}");

    let account = kg.create_account("short");
    let (_, key) = kg.create_key(&account, json!({}));
    assert_eq!(key.len(), "kg_test_".len() + 32);
    assert_eq!(call(&kg, "/v1/x", &key).status, 200);
    let mut other = key.clone();
    other.pop();
    other.push(if key.ends_with('a') { 'b' } else { 'a' });
    assert_eq!(call(&kg, "/v1/x", &other).status, 401);
}

/// An import line carries everything a created key can: metadata (on a plaintext and on a
/// sha256 entry), its own limit and resources, returned by the admin API and kept over a
/// restart. A bad value is refused with its line and the field named, the rest go in.
#[test]
fn imported_keys_carry_metadata_limits_and_resources_over_a_restart() {
    let (_echo, mut kg) = start_legacy(None);
    let account = kg.create_account("meta");
    let keys: Vec<String> = (0..7).map(legacy_key).collect();
    let plain_meta = json!({ "customer": "c_1", "tags": ["gold", "eu"], "note": "ünï \"q\"" });
    let sha_meta = json!({ "source": { "system": "legacy-billing", "id": 42 } });
    let limit = json!({ "requests": 5, "per_seconds": 60, "burst": 10 });
    let resources = json!({ "projects": ["p1", "p2"] });
    let entries = vec![
        json!({ "key": keys[0], "account_id": account, "metadata": plain_meta,
                "rate_limit": limit, "resources": resources }),
        json!({ "sha256": hex::encode(sha256(&keys[1])), "account_id": account,
                "metadata": sha_meta }),
        json!({ "key": keys[2], "account_id": account, "metadata": [1, 2] }),
        json!({ "key": keys[3], "account_id": account,
                "metadata": { "blob": "x".repeat(17 * 1024) } }),
        // A key pasted where the metadata belongs is not echoed.
        json!({ "key": keys[4], "account_id": account, "metadata": keys[5] }),
        json!({ "key": keys[5], "account_id": account,
                "rate_limit": { "requests": 0, "per_seconds": 60, "burst": 1 } }),
        json!({ "key": keys[6], "account_id": account }),
    ];
    let out = import(&kg, &entries);
    assert_eq!(out["created"], 3, "{out}");
    assert_eq!(
        out["errors"],
        json!([
            { "line": 3, "error": "`metadata`: invalid type: sequence, expected a map" },
            { "line": 4,
              "error": format!("`metadata` must be at most 16384 bytes of JSON (is {})",
                  17 * 1024 + 11) },
            { "line": 5, "error": "`metadata` has the wrong type" },
            { "line": 6, "error": "`rate_limit.requests` must be between 1 and 1000000000" },
        ])
    );
    let ids: Vec<String> = out["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .map(|k| k["id"].as_str().expect("id").to_string())
        .collect();
    let expected = [
        (plain_meta.clone(), limit.clone(), resources.clone()),
        (sha_meta.clone(), Value::Null, Value::Null),
        (json!({}), Value::Null, Value::Null),
    ];
    let check = |kg: &Keygate| {
        for (id, (metadata, limit, resources)) in ids.iter().zip(&expected) {
            let got = admin_ok(kg, "GET", &format!("{A}/keys/{id}"), None);
            assert_eq!(&got["metadata"], metadata, "{got}");
            assert_eq!(&got["rate_limit"], limit, "{got}");
            assert_eq!(&got["resources"], resources, "{got}");
        }
        let listed = admin_ok(kg, "GET", &format!("{A}/keys?account_id={account}"), None);
        let metadata: Vec<&Value> = listed["keys"]
            .as_array()
            .expect("keys")
            .iter()
            .map(|k| &k["metadata"])
            .collect();
        assert_eq!(metadata, [&plain_meta, &sha_meta, &json!({})]);
    };
    check(&kg);
    kg.restart();
    check(&kg);
    // The keys still authenticate, each form.
    assert_eq!(call(&kg, "/v1/x", &keys[0]).status, 200);
    assert_eq!(call(&kg, "/v1/x", &keys[1]).status, 200);
    assert_eq!(call(&kg, "/v1/x", &keys[2]).status, 401);
}
