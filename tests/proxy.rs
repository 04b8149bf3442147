//! The request path through the real binary: every reason code with its status and body,
//! custom error templates, what the upstream receives, credential sources, invalidation,
//! robustness against garbage input, and the ops endpoints.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use common::*;
use keygate::keys::KeyFormat;
use serde_json::{json, Value};

// ------------------------------------------------------------------ helpers

/// [`call_with`], with a small JSON body on a POST.
fn call(kg: &Keygate, method: &str, path: &str, key: Option<&str>) -> Resp {
    let body = (method == "POST").then(|| json!({ "q": 1 }));
    call_with(kg, method, path, key, body.as_ref())
}

/// Asserts a rejection in the default format: status and `error.code`, and that the upstream was
/// not called for it.
#[track_caller]
fn assert_rejected(echo: &Echo, send: impl FnOnce() -> Resp, status: u16, code: &str) -> Resp {
    let hits = echo.hits();
    let r = send();
    assert_eq!(r.status, status, "expected {code}: {}", r.body);
    let v = r.json();
    assert_eq!(v["error"]["code"], code, "{}", r.body);
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{}",
        r.body
    );
    assert!(
        r.header("content-type")
            .is_some_and(|c| c.contains("application/json")),
        "{:?}",
        r.headers
    );
    assert_eq!(
        echo.hits(),
        hits,
        "the upstream must not see a rejected request"
    );
    r
}

#[track_caller]
fn assert_forwarded(echo: &Echo, send: impl FnOnce() -> Resp) -> Value {
    let hits = echo.hits();
    let r = send();
    assert_eq!(r.status, 200, "expected a forwarded request: {}", r.body);
    assert_eq!(echo.hits(), hits + 1, "the upstream must see it once");
    r.json()
}

/// One character of the key body replaced by a different base62 character: well-formed except
/// for the checksum.
fn corrupt(key: &str, prefix: &str) -> String {
    let i = prefix.len() + 3;
    let c = key.as_bytes()[i];
    let replacement = if c == b'a' { 'b' } else { 'a' };
    let mut out = String::with_capacity(key.len());
    out.push_str(&key[..i]);
    out.push(replacement);
    out.push_str(&key[i + 1..]);
    assert_ne!(out, key);
    out
}

/// Sends raw bytes and returns the response status, if any came back. `half_close` ends the
/// sending side afterwards, so the server sees the end of a truncated request.
fn raw(addr: SocketAddr, bytes: &[u8], half_close: bool) -> Option<u16> {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).ok();
    s.set_write_timeout(Some(Duration::from_secs(10))).ok();
    // The server may close early on garbage; what it answered (if anything) is still readable.
    let _ = s.write_all(bytes);
    if half_close {
        let _ = s.shutdown(std::net::Shutdown::Write);
    }
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    text.strip_prefix("HTTP/1.1 ")
        .or_else(|| text.strip_prefix("HTTP/1.0 "))
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
}

// ------------------------------------------------------------------ reason codes

#[test]
fn credential_rejections_have_their_codes() {
    let (echo, kg) = start();
    let account = kg.create_account("acme");
    let (_, key) = kg.create_key(&account, json!({}));
    assert_forwarded(&echo, || call(&kg, "GET", "/v1/x", Some(&key)));

    // missing_credential: nothing, an empty bearer, another scheme.
    let r = assert_rejected(
        &echo,
        || call(&kg, "GET", "/v1/x", None),
        401,
        "missing_credential",
    );
    assert_eq!(r.header("www-authenticate"), Some("Bearer"));
    assert_rejected(
        &echo,
        || get(&kg.url("/v1/x"), &[("authorization", "Bearer ")]),
        401,
        "missing_credential",
    );
    assert_rejected(
        &echo,
        || get(&kg.url("/v1/x"), &[("authorization", "Basic dXNlcjpwYXNz")]),
        401,
        "missing_credential",
    );

    // malformed_credential: another deployment's prefix, and one changed character.
    let foreign = KeyFormat::new("kg_live_", 32).generate();
    assert_rejected(
        &echo,
        || call(&kg, "GET", "/v1/x", Some(foreign.expose())),
        401,
        "malformed_credential",
    );
    let typo = corrupt(&key, "kg_test_");
    assert_rejected(
        &echo,
        || call(&kg, "GET", "/v1/x", Some(&typo)),
        401,
        "malformed_credential",
    );
    assert_rejected(
        &echo,
        || call(&kg, "GET", "/v1/x", Some("not-a-key")),
        401,
        "malformed_credential",
    );

    // invalid_key: well-formed, never issued.
    let never = KeyFormat::new("kg_test_", 32).generate();
    assert_rejected(
        &echo,
        || call(&kg, "GET", "/v1/x", Some(never.expose())),
        401,
        "invalid_key",
    );
    // Twice: the negative cache answers the same.
    assert_rejected(
        &echo,
        || call(&kg, "GET", "/v1/x", Some(never.expose())),
        401,
        "invalid_key",
    );

    // The real key still works after all that.
    assert_forwarded(&echo, || call(&kg, "GET", "/v1/x", Some(&key)));
}

#[test]
fn key_status_rejections_have_their_codes() {
    let (echo, kg) = start();
    let account = kg.create_account("acme");

    let (revoked_id, revoked) = kg.create_key(&account, json!({ "name": "r" }));
    assert_forwarded(&echo, || call(&kg, "GET", "/v1/x", Some(&revoked)));
    admin_ok(
        &kg,
        "POST",
        &format!("/admin/v1/keys/{revoked_id}/revoke"),
        None,
    );
    let r = assert_rejected(
        &echo,
        || call(&kg, "GET", "/v1/x", Some(&revoked)),
        401,
        "key_revoked",
    );
    assert_eq!(r.header("www-authenticate"), Some("Bearer"), "every 401");
    // A revoked key cannot be enabled again.
    let r = kg.admin("POST", &format!("/admin/v1/keys/{revoked_id}/enable"), None);
    assert_eq!(r.status, 409, "{}", r.body);
    assert_rejected(
        &echo,
        || call(&kg, "GET", "/v1/x", Some(&revoked)),
        401,
        "key_revoked",
    );

    let (disabled_id, disabled) = kg.create_key(&account, json!({ "name": "d" }));
    assert_forwarded(&echo, || call(&kg, "GET", "/v1/x", Some(&disabled)));
    admin_ok(
        &kg,
        "POST",
        &format!("/admin/v1/keys/{disabled_id}/disable"),
        None,
    );
    let r = assert_rejected(
        &echo,
        || call(&kg, "GET", "/v1/x", Some(&disabled)),
        401,
        "key_disabled",
    );
    assert_eq!(r.header("www-authenticate"), Some("Bearer"), "every 401");
    admin_ok(
        &kg,
        "POST",
        &format!("/admin/v1/keys/{disabled_id}/enable"),
        None,
    );
    assert_forwarded(&echo, || call(&kg, "GET", "/v1/x", Some(&disabled)));
}

#[test]
fn an_expired_key_is_refused() {
    let (echo, kg) = start();
    let account = kg.create_account("acme");
    let (id, key) = kg.create_key(&account, json!({}));
    assert_forwarded(&echo, || call(&kg, "GET", "/v1/x", Some(&key)));

    let soon = (chrono::Utc::now() + chrono::Duration::seconds(1))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let v = admin_ok(
        &kg,
        "PATCH",
        &format!("/admin/v1/keys/{id}"),
        Some(json!({ "expires_at": soon })),
    );
    assert_eq!(v["expires_at"], soon.as_str());

    // Until the second passes the key may still work; after it, it must not.
    let mut last = None;
    wait_until("the key to expire", Duration::from_secs(5), || {
        let r = call(&kg, "GET", "/v1/x", Some(&key));
        let done = r.status == 401;
        if !done {
            assert_eq!(r.status, 200, "{}", r.body);
        }
        last = Some(r);
        done
    });
    let r = last.expect("a response");
    assert_eq!(r.json()["error"]["code"], "key_expired", "{}", r.body);
    // And stays expired.
    let r = assert_rejected(
        &echo,
        || call(&kg, "GET", "/v1/x", Some(&key)),
        401,
        "key_expired",
    );
    assert_eq!(r.header("www-authenticate"), Some("Bearer"), "every 401");

    // Clearing the expiry brings it back at once.
    admin_ok(
        &kg,
        "PATCH",
        &format!("/admin/v1/keys/{id}"),
        Some(json!({ "expires_at": null })),
    );
    assert_forwarded(&echo, || call(&kg, "GET", "/v1/x", Some(&key)));
}

#[test]
fn account_rejections_have_their_codes() {
    let (echo, kg) = start();

    let suspended = kg.create_account("suspended");
    let (_, key) = kg.create_key(&suspended, json!({}));
    assert_forwarded(&echo, || call(&kg, "GET", "/v1/x", Some(&key)));
    admin_ok(
        &kg,
        "POST",
        &format!("/admin/v1/accounts/{suspended}/suspend"),
        None,
    );
    assert_rejected(
        &echo,
        || call(&kg, "GET", "/v1/x", Some(&key)),
        403,
        "account_suspended",
    );
    admin_ok(
        &kg,
        "POST",
        &format!("/admin/v1/accounts/{suspended}/reactivate"),
        None,
    );
    assert_forwarded(&echo, || call(&kg, "GET", "/v1/x", Some(&key)));

    let deleted = kg.create_account("deleted");
    let (_, key) = kg.create_key(&deleted, json!({}));
    assert_forwarded(&echo, || call(&kg, "GET", "/v1/x", Some(&key)));
    admin_ok(
        &kg,
        "DELETE",
        &format!("/admin/v1/accounts/{deleted}"),
        None,
    );
    assert_rejected(
        &echo,
        || call(&kg, "GET", "/v1/x", Some(&key)),
        403,
        "account_missing",
    );
}

#[test]
fn scope_and_permission_rejections_have_their_codes() {
    let (echo, kg) = start();
    let account = kg.create_account("acme");

    let (id, no_scope) = kg.create_key(&account, json!({ "scopes": ["emails:read"] }));
    let r = assert_rejected(
        &echo,
        || call(&kg, "GET", "/leads/x", Some(&no_scope)),
        403,
        "insufficient_scope",
    );
    let message = r.json()["error"]["message"]
        .as_str()
        .unwrap_or("")
        .to_string();
    assert!(message.contains("leads:read"), "{message}");
    // Granting the scope takes effect on the next request.
    admin_ok(
        &kg,
        "PATCH",
        &format!("/admin/v1/keys/{id}"),
        Some(json!({ "scopes": ["emails:read", "leads:read"] })),
    );
    assert_forwarded(&echo, || call(&kg, "GET", "/leads/x", Some(&no_scope)));

    let (_, read) = kg.create_key(&account, json!({ "permission": "read" }));
    assert_forwarded(&echo, || call(&kg, "GET", "/v1/x", Some(&read)));
    for method in ["POST", "PUT", "DELETE"] {
        assert_rejected(
            &echo,
            || call(&kg, method, "/v1/x", Some(&read)),
            403,
            "read_only_key",
        );
    }
    // A POST route that only reads is open to read keys.
    let v = assert_forwarded(&echo, || call(&kg, "POST", "/lookup", Some(&read)));
    assert_eq!(v["method"], "POST");
    assert_eq!(v["path"], "/lookup");

    let (_, rw) = kg.create_key(&account, json!({ "permission": "read_write" }));
    assert_forwarded(&echo, || call(&kg, "POST", "/v1/x", Some(&rw)));
}

#[test]
fn unmatched_requests_are_route_not_found() {
    let (echo, kg) = start();
    let account = kg.create_account("acme");
    let (_, key) = kg.create_key(&account, json!({}));
    assert_rejected(
        &echo,
        || call(&kg, "GET", "/nothing", None),
        404,
        "route_not_found",
    );
    assert_rejected(
        &echo,
        || call(&kg, "GET", "/nothing", Some(&key)),
        404,
        "route_not_found",
    );
    // /lookup only takes POST: the path exists, the method does not (told only to a caller
    // with a key).
    let r = assert_rejected(
        &echo,
        || call(&kg, "GET", "/lookup", Some(&key)),
        405,
        "method_not_allowed",
    );
    assert_eq!(r.header("allow"), Some("POST"));
    assert_rejected(
        &echo,
        || call(&kg, "GET", "/lookup", None),
        401,
        "missing_credential",
    );
}

// ------------------------------------------------------------------ error templates

#[test]
fn custom_error_templates_are_returned_exactly() {
    let echo = Echo::start();
    let mut opts = Options::new(echo.addr);
    opts.extra_toml = r#"
[errors.invalid_key]
status = 401
body = '{"message":"This apikey is not valid"}'

[errors.missing_credential]
body = '{"message":"No apikey found in the x-api-key headers"}'
"#
    .into();
    let kg = Keygate::start(&opts);

    let never = KeyFormat::new("kg_test_", 32).generate();
    let r = get(&kg.url("/v1/x"), &[("x-api-key", never.expose())]);
    assert_eq!(r.status, 401);
    assert_eq!(r.body, r#"{"message":"This apikey is not valid"}"#);
    assert!(r
        .header("content-type")
        .is_some_and(|c| c.contains("application/json")));

    let r = get(&kg.url("/v1/x"), &[]);
    assert_eq!(r.status, 401);
    assert_eq!(
        r.body,
        r#"{"message":"No apikey found in the x-api-key headers"}"#
    );

    // Reasons left out keep the default format.
    let r = get(&kg.url("/nothing"), &[]);
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"]["code"], "route_not_found");
    assert_eq!(echo.hits(), 0);
}

// ------------------------------------------------------------------ forwarding

#[test]
fn the_upstream_gets_identity_not_credentials() {
    let (echo, kg) = start();
    let account = kg.create_account("acme");
    let (key_id, key) = kg.create_key(
        &account,
        json!({ "name": "billing job", "scopes": ["leads:read", "emails:read"] }),
    );
    let body = json!({ "email": "a@example.com", "n": [1, 2, 3] });
    let auth = bearer(&key);
    let hits = echo.hits();
    let r = request(
        "POST",
        &kg.url("/v1/items/42?x=1&y=two%20words"),
        &[
            ("authorization", &auth),
            ("X-Keygate-Account-Id", "acc_spoofed"),
            ("X-KEYGATE-KEY-ID", "key_spoofed"),
            ("x-keygate-anything", "boo"),
            ("x-keygate-user-id", "usr_spoofed"),
            ("x-custom", "kept"),
        ],
        Some(&body),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(echo.hits(), hits + 1);
    let v = r.json();
    assert_eq!(v["method"], "POST");
    assert_eq!(v["path"], "/v1/items/42");
    assert_eq!(v["query"], "x=1&y=two%20words");
    assert_eq!(
        serde_json::from_str::<Value>(v["body"].as_str().expect("body")).expect("json body"),
        body
    );
    let h = &v["headers"];
    assert!(h.get("authorization").is_none(), "{h}");
    assert!(h.get("x-api-key").is_none(), "{h}");
    assert_eq!(h["x-keygate-key-id"], key_id.as_str());
    assert_eq!(h["x-keygate-key-name"], "billing job");
    assert_eq!(h["x-keygate-account-id"], account.as_str());
    assert_eq!(h["x-keygate-scopes"], "leads:read emails:read");
    assert_eq!(h["x-keygate-auth-method"], "api_key");
    assert!(h.get("x-keygate-anything").is_none(), "{h}");
    assert!(
        h.get("x-keygate-user-id").is_none(),
        "a key without a user has no user header: {h}"
    );
    assert_eq!(h["x-custom"], "kept");
    assert_eq!(h["content-type"], "application/json");
    let identity: Vec<&String> = h
        .as_object()
        .expect("headers")
        .keys()
        .filter(|k| k.starts_with("x-keygate-"))
        .collect();
    assert_eq!(
        identity.len(),
        5,
        "only keygate's own identity headers: {identity:?}"
    );

    // Through x-api-key too: that header is removed as well.
    let r = request(
        "GET",
        &kg.url("/v1/other?only=1"),
        &[("x-api-key", &key), ("x-keygate-account-id", "acc_spoofed")],
        None,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    assert_eq!(v["method"], "GET");
    assert_eq!(v["query"], "only=1");
    assert!(v["headers"].get("x-api-key").is_none(), "{}", v["headers"]);
    assert_eq!(v["headers"]["x-keygate-account-id"], account.as_str());

    // Repeated headers: every copy of a credential or identity header is dropped or replaced.
    let r = request(
        "GET",
        &kg.url("/v1/repeated"),
        &[
            ("authorization", &auth),
            ("authorization", "Basic dXNlcjpwYXNz"),
            ("x-api-key", &key),
            ("x-api-key", "second"),
            ("x-keygate-account-id", "acc_spoofed_1"),
            ("x-keygate-account-id", "acc_spoofed_2"),
            ("x-keygate-key-id", "key_spoofed_1"),
            ("x-keygate-key-id", "key_spoofed_2"),
        ],
        None,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let h = &r.json()["headers"];
    assert!(h.get("authorization").is_none(), "{h}");
    assert!(h.get("x-api-key").is_none(), "{h}");
    assert_eq!(h["x-keygate-account-id"], account.as_str());
    assert_eq!(h["x-keygate-key-id"], key_id.as_str());
}

#[test]
fn spoofed_identity_never_reaches_an_open_route() {
    let (echo, kg) = start();
    let v = assert_forwarded(&echo, || {
        get(
            &kg.url("/open/ping?a=b"),
            &[
                ("X-Keygate-Account-Id", "acc_spoofed"),
                ("x-keygate-anything", "boo"),
                ("X-KEYGATE-AUTH-METHOD", "api_key"),
                ("x-other", "kept"),
            ],
        )
    });
    assert_eq!(v["path"], "/open/ping");
    assert_eq!(v["query"], "a=b");
    let h = v["headers"].as_object().expect("headers");
    let leaked: Vec<&String> = h.keys().filter(|k| k.starts_with("x-keygate-")).collect();
    assert!(leaked.is_empty(), "{leaked:?}");
    assert_eq!(h["x-other"], "kept");
}

#[test]
fn both_credential_sources_work() {
    let (echo, kg) = start();
    let account = kg.create_account("acme");
    let (key_id, key) = kg.create_key(&account, json!({}));
    let check = |headers: &[(&str, &str)]| {
        let v = assert_forwarded(&echo, || get(&kg.url("/v1/x"), headers));
        assert_eq!(
            v["headers"]["x-keygate-key-id"],
            key_id.as_str(),
            "{headers:?}"
        );
    };
    let lower = format!("bearer {key}");
    let upper = format!("BEARER {key}");
    let normal = bearer(&key);
    check(&[("authorization", &normal)]);
    check(&[("Authorization", &lower)]);
    check(&[("AUTHORIZATION", &upper)]);
    check(&[("x-api-key", &key)]);
    check(&[("X-API-Key", &key)]);
    check(&[("X-API-KEY", &key)]);
    // Basic auth next to an x-api-key: the key is found.
    check(&[("authorization", "Basic dXNlcjpwYXNz"), ("x-api-key", &key)]);
    // Bearer comes first: a bad bearer is not rescued by a good x-api-key.
    let never = KeyFormat::new("kg_test_", 32).generate();
    let bad = bearer(never.expose());
    assert_rejected(
        &echo,
        || {
            get(
                &kg.url("/v1/x"),
                &[("authorization", &bad), ("x-api-key", &key)],
            )
        },
        401,
        "invalid_key",
    );
}

#[test]
fn revoke_takes_effect_on_the_very_next_request() {
    let (echo, kg) = start();
    let account = kg.create_account("acme");
    for _ in 0..3 {
        let (id, key) = kg.create_key(&account, json!({}));
        // Cached by a few successful requests first.
        for _ in 0..3 {
            assert_forwarded(&echo, || call(&kg, "GET", "/v1/x", Some(&key)));
        }
        admin_ok(&kg, "POST", &format!("/admin/v1/keys/{id}/revoke"), None);
        assert_rejected(
            &echo,
            || call(&kg, "GET", "/v1/x", Some(&key)),
            401,
            "key_revoked",
        );
    }
    // Suspending an account applies to all its cached keys at once.
    let other = kg.create_account("other");
    let keys: Vec<String> = (0..3).map(|_| kg.create_key(&other, json!({})).1).collect();
    for k in &keys {
        assert_forwarded(&echo, || call(&kg, "GET", "/v1/x", Some(k)));
    }
    admin_ok(
        &kg,
        "POST",
        &format!("/admin/v1/accounts/{other}/suspend"),
        None,
    );
    for k in &keys {
        assert_rejected(
            &echo,
            || call(&kg, "GET", "/v1/x", Some(k)),
            403,
            "account_suspended",
        );
    }
}

// ------------------------------------------------------------------ robustness

#[test]
fn garbage_input_does_not_stop_the_process() {
    let (echo, kg) = start();
    let account = kg.create_account("acme");
    let (_, key) = kg.create_key(&account, json!({}));
    let alive = |what: &str| {
        let r = call(&kg, "GET", "/v1/alive", Some(&key));
        assert_eq!(r.status, 200, "not serving after {what}: {}", r.body);
    };
    alive("start");

    // A 10 kB key: malformed, not a crash, never forwarded.
    let huge_key = format!("kg_test_{}", "A".repeat(10 * 1024));
    assert_rejected(
        &echo,
        || get(&kg.url("/v1/x"), &[("x-api-key", &huge_key)]),
        401,
        "malformed_credential",
    );
    alive("a 10 kB key");

    // A very long header (64 kB), and one far beyond any sane limit (2 MB).
    let hits = echo.hits();
    for size in [64 * 1024, 2 * 1024 * 1024] {
        let req = format!(
            "GET /v1/x HTTP/1.1\r\nHost: x\r\nx-long: {}\r\nConnection: close\r\n\r\n",
            "b".repeat(size)
        );
        let status = raw(kg.public, req.as_bytes(), false);
        assert_ne!(status, Some(200), "{size} byte header");
        alive(&format!("a {size} byte header"));
    }

    // Header values that are not UTF-8, as credentials and elsewhere.
    for header in [
        &b"x-api-key: kg_test_\xff\xfe\xfd"[..],
        &b"authorization: Bearer \xc3\x28\xa0\xa1"[..],
        &b"x-other: \x80\x81\x82"[..],
    ] {
        let mut req = b"GET /v1/x HTTP/1.1\r\nHost: x\r\n".to_vec();
        req.extend_from_slice(header);
        req.extend_from_slice(b"\r\nConnection: close\r\n\r\n");
        let status = raw(kg.public, &req, false);
        assert!(
            matches!(status, Some(400) | Some(401)),
            "{:?}: {status:?}",
            String::from_utf8_lossy(header)
        );
        alive("a non-UTF-8 header");
    }

    // Not HTTP at all, a truncated request, and too many headers.
    let _ = raw(
        kg.public,
        b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03garbage\r\n\r\n",
        true,
    );
    alive("binary garbage");
    let _ = raw(
        kg.public,
        b"GET /v1/x HTTP/1.1\r\nHost: x\r\nx-api-key: kg_te",
        true,
    );
    alive("a truncated request");
    let mut many = b"GET /v1/x HTTP/1.1\r\nHost: x\r\n".to_vec();
    for i in 0..1000 {
        many.extend_from_slice(format!("x-h{i}: v\r\n").as_bytes());
    }
    many.extend_from_slice(b"Connection: close\r\n\r\n");
    let status = raw(kg.public, &many, false);
    assert_ne!(status, Some(200));
    alive("a thousand headers");
    // None of the garbage without a key reached the upstream (the alive checks did).
    assert_eq!(
        echo.hits(),
        hits + 8,
        "only the eight alive checks were forwarded"
    );
}

// ------------------------------------------------------------------ ops

#[test]
fn metrics_and_readiness() {
    let (echo, kg) = start();
    let ready = get(&kg.ops_url("/readyz"), &[]);
    assert_eq!(ready.status, 200, "{}", ready.body);
    assert_eq!(get(&kg.ops_url("/healthz"), &[]).status, 200);

    let account = kg.create_account("acme");
    let (_, key) = kg.create_key(&account, json!({}));
    // Five uses of one key: at least three are cache hits (creating a key drops its cache entry
    // twice: at once and once more shortly after).
    for _ in 0..5 {
        assert_forwarded(&echo, || call(&kg, "GET", "/v1/x", Some(&key)));
    }
    assert_rejected(
        &echo,
        || call(&kg, "GET", "/v1/x", None),
        401,
        "missing_credential",
    );
    assert_rejected(
        &echo,
        || call(&kg, "GET", "/nothing", None),
        404,
        "route_not_found",
    );
    assert_forwarded(&echo, || get(&kg.url("/open/x"), &[]));

    // Requests are counted when they finish logging, just after the response: poll.
    let mut text = String::new();
    wait_until("request metrics", Duration::from_secs(5), || {
        let r = get(&kg.ops_url("/metrics"), &[]);
        assert_eq!(r.status, 200);
        text = r.body;
        let forwarded = sample(
            &text,
            "keygate_requests_total",
            &[("route", "v1"), ("outcome", "forwarded")],
        );
        let missing = sample(
            &text,
            "keygate_requests_total",
            &[("route", "v1"), ("outcome", "missing_credential")],
        );
        let unmatched = sample(
            &text,
            "keygate_requests_total",
            &[("outcome", "route_not_found")],
        );
        let open = sample(
            &text,
            "keygate_requests_total",
            &[("route", "open"), ("outcome", "forwarded")],
        );
        forwarded == Some(5.0)
            && missing == Some(1.0)
            && unmatched == Some(1.0)
            && open == Some(1.0)
    });
    let hits = sample(&text, "keygate_cache_lookups_total", &[("result", "hit")]);
    assert!(hits.is_some_and(|h| h >= 3.0), "{text}");
    let misses = sample(&text, "keygate_cache_lookups_total", &[("result", "miss")]);
    assert!(misses.is_some_and(|m| m >= 1.0), "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("keygate_auth_decision_seconds_bucket{")),
        "{text}"
    );
    let decisions = sample(&text, "keygate_auth_decision_seconds_count", &[]);
    assert!(decisions.is_some_and(|n| n >= 8.0), "{text}");
    // No key material in the metrics.
    assert!(!text.contains(&key), "the key leaked into /metrics");
}

/// Reads one response (head and a `Content-Length` body) from a kept-alive connection.
fn read_one(s: &mut TcpStream) -> (u16, String) {
    let mut data = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = s.read(&mut buf).expect("read a response");
        assert!(
            n > 0,
            "connection closed: {}",
            String::from_utf8_lossy(&data)
        );
        data.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&data).to_string();
        let Some(end) = text.find("\r\n\r\n") else {
            continue;
        };
        let length = text[..end]
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse::<usize>().ok())?
            })
            .unwrap_or(0);
        if data.len() >= end + 4 + length {
            let status = text.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
            return (status, text[end + 4..end + 4 + length].to_string());
        }
    }
}

#[test]
fn a_rejection_keeps_the_connection_usable() {
    let (echo, kg) = start();
    let account = kg.create_account("acme");
    let (_, key) = kg.create_key(&account, json!({}));
    let mut s = TcpStream::connect(kg.public).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).ok();

    s.write_all(b"GET /v1/x HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("write");
    let (status, body) = read_one(&mut s);
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("missing_credential"), "{body}");

    s.write_all(format!("GET /v1/y HTTP/1.1\r\nHost: x\r\nx-api-key: {key}\r\n\r\n").as_bytes())
        .expect("write");
    let (status, body) = read_one(&mut s);
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"/v1/y\""), "{body}");
    assert_eq!(echo.hits(), 1);
}

/// Routing uses the path exactly as sent, and the upstream receives it unchanged. An upstream
/// that resolves dot segments (as RFC 3986 allows and many servers do) then serves a protected
/// path to a request keygate matched against an open or less-scoped route.
#[test]

fn dot_segments_cannot_escape_a_route() {
    let (echo, kg) = start();
    let hits = echo.hits();
    for path in ["/open/../v1/x", "/open/%2e%2e/v1/x", "/open/./../v1/x"] {
        let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        let status = raw(kg.public, req.as_bytes(), false);
        assert_eq!(
            echo.hits(),
            hits,
            "{path} reached the upstream without a key (status {status:?})"
        );
    }
    // A key without leads:read must not reach /leads through /v1.
    let account = kg.create_account("acme");
    let (_, key) = kg.create_key(&account, json!({ "scopes": [] }));
    let req = format!(
        "GET /v1/../leads/x HTTP/1.1\r\nHost: x\r\nx-api-key: {key}\r\nConnection: close\r\n\r\n"
    );
    let status = raw(kg.public, req.as_bytes(), false);
    assert_eq!(
        echo.hits(),
        hits,
        "/v1/../leads/x was forwarded to a key without leads:read (status {status:?})"
    );
}
