//! Users and key rotation through the admin API of the real binary: CRUD, validation, that no
//! password ever comes back or reaches the log, that user changes reach the very next proxied
//! request, and that a rotated key and its successor both work until the old one ends.

mod common;
use common::*;

use std::time::Duration;

use serde_json::{json, Value};

const A: &str = "/admin/v1";
const PASSWORD: &str = "Sup3r-Secret-Passw0rd!";
const NEW_PASSWORD: &str = "An0ther-Secret-Passw0rd?";

fn proxied(kg: &Keygate, method: &str, path: &str, key: &str) -> Resp {
    call_with(kg, method, path, Some(key), None)
}

/// Creates a user and returns its view.
fn create_user(kg: &Keygate, account: &str, email: &str, role: Option<&str>) -> Value {
    let mut body = json!({ "account_id": account, "email": email, "password": PASSWORD });
    if let Some(r) = role {
        body["role"] = json!(r);
    }
    let r = kg.admin("POST", &format!("{A}/users"), Some(body));
    assert_eq!(r.status, 201, "create user: {}", r.body);
    assert!(!r.body.contains(PASSWORD));
    r.json()
}

fn no_secret_anywhere(kg: &Keygate, bodies: &[&str]) {
    for body in bodies {
        for secret in [PASSWORD, NEW_PASSWORD, "$argon2"] {
            assert!(!body.contains(secret), "{secret} in {body}");
        }
    }
    let audit = kg.admin("GET", &format!("{A}/audit?limit=1000"), None).body;
    let log = kg.log();
    for secret in [PASSWORD, NEW_PASSWORD, "$argon2", "argon2id"] {
        assert!(!audit.contains(secret), "{secret} in the audit log");
        assert!(!log.contains(secret), "{secret} in the keygate log");
    }
}

#[test]
fn users_crud() {
    let (_echo, kg) = start();
    let account = kg.create_account("acme");
    let mut seen: Vec<String> = Vec::new();

    let r = kg.admin(
        "POST",
        &format!("{A}/users"),
        Some(
            json!({"account_id": account, "email": "  Ann.Lee@Example.COM ", "password": PASSWORD}),
        ),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    seen.push(r.body.clone());
    let ann = r.json();
    let keys: Vec<&str> = ann
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    let mut sorted = keys.clone();
    sorted.sort_unstable();
    assert_eq!(
        sorted,
        ["account_id", "created_at", "email", "id", "role", "status"],
        "the view and nothing else: {ann}"
    );
    let ann_id = ann["id"].as_str().expect("id").to_string();
    assert!(ann_id.starts_with("usr_"), "{ann_id}");
    assert_eq!(ann["account_id"], account);
    assert_eq!(
        ann["email"], "ann.lee@example.com",
        "trimmed and lower-cased"
    );
    assert_eq!(ann["role"], "member", "the default role");
    assert_eq!(ann["status"], "active");
    assert!(is_rfc3339_utc(&ann["created_at"]), "{ann}");

    let r = kg.admin("GET", &format!("{A}/users/{ann_id}"), None);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json(), ann);
    seen.push(r.body);

    let bob = create_user(&kg, &account, "bob@example.com", Some("owner"));
    assert_eq!(bob["role"], "owner");
    let other = kg.create_account("other");
    let carol = create_user(&kg, &other, "carol@example.com", Some("read_only"));
    assert_eq!(carol["role"], "read_only");

    // Lists: by account, all, and paged.
    let r = kg.admin("GET", &format!("{A}/users?account_id={account}"), None);
    assert_eq!(r.status, 200, "{}", r.body);
    seen.push(r.body.clone());
    let list = r.json();
    assert_eq!(list["users"], json!([ann, bob]));
    assert_eq!(list["next"], Value::Null);
    let r = kg.admin("GET", &format!("{A}/users"), None);
    assert_eq!(r.json()["users"].as_array().map(Vec::len), Some(3));
    let r = kg.admin("GET", &format!("{A}/users?limit=2"), None);
    let page1 = r.json();
    assert_eq!(page1["users"].as_array().map(Vec::len), Some(2));
    assert_eq!(page1["next"], bob["id"]);
    let r = kg.admin(
        "GET",
        &format!(
            "{A}/users?limit=2&after={}",
            bob["id"].as_str().unwrap_or("")
        ),
        None,
    );
    assert_eq!(r.json()["users"], json!([carol]));
    assert_eq!(r.json()["next"], Value::Null);

    // Role and status changes.
    let path = format!("{A}/users/{ann_id}");
    let r = kg.admin("PATCH", &path, Some(json!({"role": "admin"})));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["role"], "admin");
    assert_eq!(r.json()["status"], "active");
    let r = kg.admin("PATCH", &path, Some(json!({"status": "disabled"})));
    assert_eq!(r.json()["status"], "disabled");
    assert_eq!(r.json()["role"], "admin");
    let r = kg.admin(
        "PATCH",
        &path,
        Some(json!({"status": "active", "role": "read_only"})),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        (r.json()["status"].clone(), r.json()["role"].clone()),
        (json!("active"), json!("read_only"))
    );
    assert_eq!(kg.admin("GET", &path, None).json()["role"], "read_only");

    // Password: 200 with the view.
    let r = kg.admin(
        "POST",
        &format!("{path}/password"),
        Some(json!({"password": NEW_PASSWORD})),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["id"], ann_id.as_str());
    assert_eq!(r.json()["email"], "ann.lee@example.com");
    seen.push(r.body);

    // Audited, without secrets.
    let r = kg.admin("GET", &format!("{A}/audit?target={ann_id}"), None);
    let actions: Vec<String> = r.json()["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .map(|e| e["action"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(
        actions,
        [
            "user.password",
            "user.update",
            "user.update",
            "user.update",
            "user.create"
        ]
    );
    let details = r.body;
    assert!(details.contains("role admin -> read_only"), "{details}");
    assert!(details.contains("status disabled -> active"), "{details}");

    let refs: Vec<&str> = seen.iter().map(String::as_str).collect();
    no_secret_anywhere(&kg, &refs);
}

#[test]
fn user_requests_are_validated() {
    let (_echo, kg) = start();
    let account = kg.create_account("acme");
    let users = format!("{A}/users");
    let mut seen = Vec::new();

    let cases: Vec<(Value, &str)> = vec![
        (json!({"account_id": account, "email": "x@y.z"}), "password"),
        (
            json!({"account_id": account, "password": PASSWORD}),
            "email",
        ),
        (
            json!({"email": "x@y.z", "password": PASSWORD}),
            "account_id",
        ),
        (
            json!({"account_id": account, "email": "not-an-email", "password": PASSWORD}),
            "email",
        ),
        (
            json!({"account_id": account, "email": "a b@y.z", "password": PASSWORD}),
            "email",
        ),
        (
            json!({"account_id": account, "email": "", "password": PASSWORD}),
            "email",
        ),
        (
            json!({"account_id": account, "email": "x@y.z", "password": "short"}),
            "password",
        ),
        (
            json!({"account_id": account, "email": "x@y.z", "password": "x".repeat(257)}),
            "password",
        ),
        (
            json!({"account_id": account, "email": "x@y.z", "password": 12345678}),
            "password",
        ),
        (
            json!({"account_id": account, "email": "x@y.z", "password": PASSWORD, "role": "boss"}),
            "role",
        ),
        (
            json!({"account_id": account, "email": "x@y.z", "password": PASSWORD, "admin": true}),
            "admin",
        ),
    ];
    for (body, field) in cases {
        let r = kg.admin("POST", &users, Some(body.clone()));
        let message = assert_error(&r, 422, "invalid_body");
        assert!(message.contains(field), "{body}: {message}");
        assert!(
            !message.contains("12345678"),
            "a mistyped password is not echoed: {message}"
        );
        seen.push(r.body);
    }
    // Nothing was created.
    assert_eq!(kg.admin("GET", &users, None).json()["users"], json!([]));

    let r = kg.admin(
        "POST",
        &users,
        Some(json!({"account_id": "acc_missing", "email": "x@y.z", "password": PASSWORD})),
    );
    assert_eq!(assert_error(&r, 404, "not_found"), "account not found");

    // Duplicate emails, in any case and any account.
    create_user(&kg, &account, "dup@example.com", None);
    let other = kg.create_account("other");
    for (acc, email) in [
        (&account, "dup@example.com"),
        (&account, "DUP@Example.com"),
        (&other, " dup@EXAMPLE.COM"),
    ] {
        let r = kg.admin(
            "POST",
            &users,
            Some(json!({"account_id": acc, "email": email, "password": PASSWORD})),
        );
        assert_error(&r, 409, "conflict");
        seen.push(r.body);
    }
    assert_eq!(
        kg.admin("GET", &users, None).json()["users"]
            .as_array()
            .map(Vec::len),
        Some(1)
    );

    // A deleted account gets no users.
    kg.admin("DELETE", &format!("{A}/accounts/{other}"), None);
    let r = kg.admin(
        "POST",
        &users,
        Some(json!({"account_id": other, "email": "new@example.com", "password": PASSWORD})),
    );
    assert_error(&r, 409, "conflict");

    // Unknown users.
    for (method, path, body) in [
        ("GET", format!("{users}/usr_missing"), None),
        (
            "PATCH",
            format!("{users}/usr_missing"),
            Some(json!({"role": "admin"})),
        ),
        (
            "POST",
            format!("{users}/usr_missing/password"),
            Some(json!({"password": PASSWORD})),
        ),
    ] {
        let r = kg.admin(method, &path, body);
        assert_eq!(
            assert_error(&r, 404, "not_found"),
            "user not found",
            "{method} {path}"
        );
    }

    // Bad patches and passwords.
    let user = create_user(&kg, &account, "p@example.com", None);
    let path = format!("{users}/{}", user["id"].as_str().unwrap_or(""));
    for (body, field) in [
        (json!({}), "role"),
        (json!({"role": "boss"}), "role"),
        (json!({"status": "gone"}), "status"),
        (json!({"email": "new@example.com"}), "email"),
        (json!({"password": PASSWORD}), "password"),
    ] {
        let r = kg.admin("PATCH", &path, Some(body.clone()));
        let message = assert_error(&r, 422, "invalid_body");
        assert!(message.contains(field), "{body}: {message}");
        seen.push(r.body);
    }
    for (body, field) in [
        (json!({}), "password"),
        (json!({"password": "short"}), "password"),
        (json!({"password": 123456789}), "password"),
        (json!({"password": PASSWORD, "x": 1}), "x"),
    ] {
        let r = kg.admin("POST", &format!("{path}/password"), Some(body.clone()));
        let message = assert_error(&r, 422, "invalid_body");
        assert!(message.contains(field), "{body}: {message}");
        assert!(!message.contains("123456789"), "{message}");
    }
    let refs: Vec<&str> = seen.iter().map(String::as_str).collect();
    no_secret_anywhere(&kg, &refs);
}

#[test]
fn keys_tied_to_users_follow_the_user() {
    let (_echo, kg) = start();
    let account = kg.create_account("acme");
    let other = kg.create_account("other");
    let user = create_user(&kg, &account, "dev@example.com", None);
    let user_id = user["id"].as_str().expect("id").to_string();
    let stranger = create_user(&kg, &other, "stranger@example.com", None);

    // The user must exist and belong to the key's account.
    let r = kg.admin(
        "POST",
        &format!("{A}/keys"),
        Some(json!({"account_id": account, "name": "k", "user_id": "usr_missing"})),
    );
    assert_eq!(assert_error(&r, 404, "not_found"), "user not found");
    let r = kg.admin(
        "POST",
        &format!("{A}/keys"),
        Some(json!({"account_id": account, "name": "k", "user_id": stranger["id"]})),
    );
    let message = assert_error(&r, 422, "invalid_body");
    assert!(message.contains("user_id"), "{message}");

    let (key_id, key) = kg.create_key(&account, json!({"user_id": user_id}));
    let r = kg.admin("GET", &format!("{A}/keys/{key_id}"), None);
    assert_eq!(r.json()["user_id"], user_id.as_str());
    assert_eq!(proxied(&kg, "GET", "/v1/x", &key).status, 200);
    assert_eq!(proxied(&kg, "POST", "/v1/x", &key).status, 200);

    // Each change reaches the very next request (the cached credential carries the user).
    let path = format!("{A}/users/{user_id}");
    kg.admin("PATCH", &path, Some(json!({"status": "disabled"})));
    let r = proxied(&kg, "GET", "/v1/x", &key);
    assert_eq!(r.status, 401, "{}", r.body);
    assert_eq!(r.json()["error"]["code"], "key_disabled");
    kg.admin("PATCH", &path, Some(json!({"status": "active"})));
    assert_eq!(proxied(&kg, "GET", "/v1/x", &key).status, 200);

    kg.admin("PATCH", &path, Some(json!({"role": "read_only"})));
    let r = proxied(&kg, "POST", "/v1/x", &key);
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(r.json()["error"]["code"], "read_only_key");
    assert_eq!(proxied(&kg, "GET", "/v1/x", &key).status, 200);
    kg.admin("PATCH", &path, Some(json!({"role": "member"})));
    assert_eq!(proxied(&kg, "POST", "/v1/x", &key).status, 200);
}

#[test]
fn rotated_keys_both_work_until_the_old_one_is_revoked() {
    let (_echo, kg) = start();
    let account = kg.create_account("acme");
    let (old_id, old_key) = kg.create_key(
        &account,
        json!({
            "name": "rotating",
            "scopes": ["leads:read"],
            "permission": "read",
            "resources": {"projects": ["p1"]},
            "rate_limit": {"requests": 100, "per_seconds": 1, "burst": 100}
        }),
    );
    assert_eq!(proxied(&kg, "GET", "/v1/x", &old_key).status, 200);

    // No body: the old key works until revoked.
    let r = kg.admin("POST", &format!("{A}/keys/{old_id}/rotate"), None);
    assert_eq!(r.status, 201, "{}", r.body);
    let rotated = r.json();
    let new_key = rotated["key"].as_str().expect("plaintext").to_string();
    let new_id = rotated["id"].as_str().expect("id").to_string();
    assert!(new_key.starts_with("kg_test_") && new_key != old_key);
    assert_ne!(new_id, old_id);
    assert_eq!(rotated["rotated_from"], old_id.as_str());
    assert_eq!(rotated["name"], "rotating");
    assert_eq!(rotated["scopes"], json!(["leads:read"]));
    assert_eq!(rotated["permission"], "read");
    assert_eq!(rotated["resources"], json!({"projects": ["p1"]}));
    assert_eq!(rotated["rate_limit"]["requests"], 100);
    assert_eq!(rotated["status"], "active");
    assert_eq!(rotated["old"]["id"], old_id.as_str());
    assert_eq!(rotated["old"]["status"], "active");
    assert_eq!(rotated["old"]["expires_at"], Value::Null);
    assert_eq!(rotated["old"]["rotated_from"], Value::Null);
    assert!(rotated["old"].get("key").is_none());
    assert!(!rotated["old"].to_string().contains(&old_key));

    for key in [&old_key, &new_key] {
        let r = proxied(&kg, "GET", "/v1/x", key);
        assert_eq!(r.status, 200, "{}", r.body);
    }
    // The new key is a key like any other.
    let r = kg.admin("GET", &format!("{A}/keys/{new_id}"), None);
    assert_eq!(r.json()["rotated_from"], old_id.as_str());
    assert!(!r.body.contains(&new_key));

    kg.admin("POST", &format!("{A}/keys/{old_id}/revoke"), None);
    let r = proxied(&kg, "GET", "/v1/x", &old_key);
    assert_eq!(r.status, 401, "{}", r.body);
    assert_eq!(r.json()["error"]["code"], "key_revoked");
    assert_eq!(proxied(&kg, "GET", "/v1/x", &new_key).status, 200);

    // A revoked key cannot be rotated; unknown keys are 404; bad bodies 422.
    let r = kg.admin(
        "POST",
        &format!("{A}/keys/{old_id}/rotate"),
        Some(json!({})),
    );
    assert_error(&r, 409, "conflict");
    let r = kg.admin("POST", &format!("{A}/keys/key_missing/rotate"), None);
    assert_eq!(assert_error(&r, 404, "not_found"), "key not found");
    for (body, field) in [
        (json!({"grace_seconds": -1}), "grace_seconds"),
        (json!({"grace_seconds": "soon"}), "grace_seconds"),
        (json!({"grace": 1}), "grace"),
    ] {
        let r = kg.admin(
            "POST",
            &format!("{A}/keys/{new_id}/rotate"),
            Some(body.clone()),
        );
        let message = assert_error(&r, 422, "invalid_body");
        assert!(message.contains(field), "{body}: {message}");
    }

    // Audited, without plaintexts.
    let r = kg.admin("GET", &format!("{A}/audit?target={old_id}"), None);
    assert!(
        r.body.contains("key.rotate") && r.body.contains(&new_id),
        "{}",
        r.body
    );
    let all = kg.admin("GET", &format!("{A}/audit?limit=1000"), None).body;
    assert!(!all.contains(&old_key) && !all.contains(&new_key));
    let log = kg.log();
    assert!(!log.contains(&old_key) && !log.contains(&new_key));
}

#[test]
fn a_grace_period_ends_the_old_key() {
    let (_echo, kg) = start();
    let account = kg.create_account("acme");
    let (old_id, old_key) = kg.create_key(&account, json!({}));
    assert_eq!(proxied(&kg, "GET", "/v1/x", &old_key).status, 200);

    let r = kg.admin(
        "POST",
        &format!("{A}/keys/{old_id}/rotate"),
        Some(json!({"grace_seconds": 1})),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let rotated = r.json();
    let new_key = rotated["key"].as_str().expect("plaintext").to_string();
    assert!(is_rfc3339_utc(&rotated["old"]["expires_at"]), "{rotated}");
    assert_eq!(
        rotated["expires_at"],
        Value::Null,
        "the successor keeps the old expiry"
    );
    let r = kg.admin("GET", &format!("{A}/keys/{old_id}"), None);
    assert_eq!(r.json()["expires_at"], rotated["old"]["expires_at"]);

    assert_eq!(proxied(&kg, "GET", "/v1/x", &new_key).status, 200);
    let mut last = None;
    let ended = eventually(Duration::from_secs(10), || {
        let r = proxied(&kg, "GET", "/v1/x", &old_key);
        let done = r.status == 401;
        last = Some(r);
        done
    });
    let last = last.expect("a response");
    assert!(
        ended,
        "the old key still works: {} {}",
        last.status, last.body
    );
    assert_eq!(last.json()["error"]["code"], "key_expired");
    assert_eq!(proxied(&kg, "GET", "/v1/x", &new_key).status, 200);
}
