//! Fuzz harness for the admin API's JSON bodies.
//!
//! Shared by the cargo-fuzz target `admin_json` and by `tests/fuzz_replay.rs`. Input: one
//! selector byte naming the body type (create/update key, rotate, create/update account,
//! create/update user, set password, credit adjust/set), then the body. It is parsed exactly as
//! the `Body` extractor does (`axum::Json::from_bytes` into the handler's own request type);
//! when that succeeds, the fields go through the same `keyservice::validate` checks the
//! handlers' `KeyService` calls run, and whatever they accept must meet the documented bounds.

use std::collections::{BTreeMap, HashMap};

use axum::Json;
use keygate::admin::{accounts, credits, keys, users};
use keygate::config::{valid_scope, Plan};
use keygate::keyservice::validate::{self, RateLimitBody, MAX_NAME_CHARS, MAX_SCOPES};
use keygate::store::MAX_CREDITS;
use serde::de::DeserializeOwned;
use serde_json::Value;

pub fn run(data: &[u8]) {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let parsed = match selector % 10 {
        0 => parses::<keys::CreateKey>(body),
        1 => parses::<keys::UpdateKey>(body),
        // `OptionalBody`: an all-whitespace body is the default.
        2 => body.trim_ascii().is_empty() || parses::<keys::RotateKey>(body),
        3 => parses::<accounts::CreateAccount>(body),
        4 => parses::<accounts::UpdateAccount>(body),
        5 => parses::<users::CreateUser>(body),
        6 => parses::<users::UpdateUser>(body),
        7 => parses::<users::SetPassword>(body),
        8 => parses::<credits::Adjust>(body),
        _ => parses::<credits::SetBalance>(body),
    };
    if !parsed {
        return;
    }
    let Ok(Value::Object(fields)) = serde_json::from_slice::<Value>(body) else {
        return;
    };
    for (field, value) in &fields {
        validate_field(field, value);
    }
}

fn parses<T: DeserializeOwned>(body: &[u8]) -> bool {
    match Json::<T>::from_bytes(body) {
        Ok(_) => true,
        Err(e) => {
            // The 422 message names the field; it must render.
            let _ = e.body_text();
            false
        }
    }
}

fn validate_field(field: &str, value: &Value) {
    match (field, value) {
        ("name" | "user_id", Value::String(s)) => {
            if let Ok(name) = validate::name(field, s) {
                assert_eq!(name, s.trim());
                assert!(!name.is_empty());
                assert!(name.chars().count() <= MAX_NAME_CHARS);
                assert!(!name.chars().any(char::is_control));
            }
        }
        ("scopes", Value::Array(_)) => {
            let Ok(scopes) = serde_json::from_value::<Vec<String>>(value.clone()) else {
                return;
            };
            if let Ok(kept) = validate::scopes(scopes.clone()) {
                assert!(kept.len() <= MAX_SCOPES);
                assert!(kept.iter().all(|s| valid_scope(s)));
                for (i, s) in kept.iter().enumerate() {
                    assert!(!kept[..i].contains(s), "duplicate scope kept");
                }
                assert!(scopes.iter().all(|s| kept.contains(s)), "a scope was lost");
            }
        }
        ("email", Value::String(s)) => {
            if let Ok(email) = validate::email(s) {
                assert_eq!(email.matches('@').count(), 1);
                assert!(!email.chars().any(char::is_whitespace));
                assert_eq!(
                    validate::email(&email).ok().as_deref(),
                    Some(email.as_str())
                );
            }
        }
        ("expires_at", Value::String(s)) => {
            let _ = validate::time(field, s);
        }
        ("rate_limit", _) => {
            let Ok(body) = serde_json::from_value::<RateLimitBody>(value.clone()) else {
                return;
            };
            if let Ok(limit) = validate::rate_limit(field, body) {
                assert!((1..=1_000_000_000).contains(&limit.requests));
                assert!((1..=86_400 * 366).contains(&limit.per_seconds));
                assert!((1..=u64::from(u32::MAX)).contains(&limit.burst));
            }
        }
        ("resources", _) => {
            let Ok(map) = serde_json::from_value::<BTreeMap<String, Vec<String>>>(value.clone())
            else {
                return;
            };
            if let Ok(resources) = validate::resources(map) {
                for (kind, ids) in &resources {
                    assert!(validate::valid_resource_name(kind));
                    for (i, id) in ids.iter().enumerate() {
                        assert!(validate::valid_resource_name(id));
                        assert!(!ids[..i].contains(id), "duplicate id kept");
                    }
                }
            }
        }
        ("plan", Value::String(s)) => {
            let mut plans = HashMap::new();
            plans.insert("pro".to_string(), Plan::default());
            assert_eq!(validate::plan(&plans, s).is_ok(), s == "pro");
        }
        ("balance" | "delta", Value::Number(n)) => {
            if let Some(v) = n.as_i64() {
                if let Ok(b) = validate::balance(field, v) {
                    assert!((0..=MAX_CREDITS).contains(&b));
                }
            }
        }
        _ => {}
    }
}
