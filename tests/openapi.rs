//! The admin API's OpenAPI document against the live binary: schemathesis (every check) finds no
//! drift between the document and the handlers; the document lists exactly the routes the
//! router serves; and each drift schemathesis once found stays fixed (limits refused, not
//! clamped; `null` refused where the document says non-nullable; a deleted account is 404).

mod common;
use common::*;

use std::path::PathBuf;
use std::process::Command;

use serde_json::{json, Value};

const A: &str = "/admin/v1";
const SCHEMATHESIS_VERSION: &str = "4.32.5";

/// `target/venv/bin/schemathesis`, which `.ci/run` installs.
fn schemathesis() -> PathBuf {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/venv/bin/schemathesis");
    assert!(
        path.exists(),
        "schemathesis is needed at {}; install it with: python3 -m venv target/venv && \
         target/venv/bin/pip install schemathesis=={SCHEMATHESIS_VERSION}",
        path.display()
    );
    path
}

fn start_with_plans() -> (Echo, Keygate) {
    let echo = Echo::start();
    let mut opts = Options::new(echo.addr);
    opts.extra_toml =
        "[plans.pro]\nkey = { requests = 100, per_seconds = 1, burst = 200 }\n".into();
    let kg = Keygate::start(&opts);
    (echo, kg)
}

fn document(kg: &Keygate) -> Value {
    let r = kg.admin("GET", &format!("{A}/openapi.json"), None);
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()
}

#[test]
fn schemathesis_finds_no_drift_between_the_document_and_the_api() {
    let tool = schemathesis();
    let (_echo, kg) = start_with_plans();
    // A little data, so the operations on one account, key and user reach their handlers'
    // logic instead of 404 (schemathesis also links creations to later calls by itself).
    let account = kg.create_account("seed");
    kg.create_key(&account, json!({"scopes": ["leads:read"]}));
    let work = tempfile::tempdir().expect("tempdir");
    let out = Command::new(&tool)
        .current_dir(work.path())
        .env("NO_COLOR", "1")
        .args([
            "run",
            &format!("{}{A}/openapi.json", kg.admin_url()),
            "--checks",
            "all",
            "--header",
            &format!("Authorization: Bearer {ADMIN_TOKEN}"),
            // Bounded and reproducible: a fixed seed, no example database carried between
            // runs, 40 cases per operation (about 30 s here, well under 2 min on a loaded
            // 2-core machine), two workers.
            "--max-examples",
            "40",
            "--seed",
            "1",
            "--generation-database",
            "none",
            "--workers",
            "2",
            "--request-timeout",
            "30",
            "--no-color",
        ])
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e}", tool.display()));
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "schemathesis found drift ({}):\n{report}",
        out.status
    );
    // It ran every operation (a document that failed to load would test none).
    assert!(report.contains("Tested: 26"), "{report}");
    // keygate kept serving (schemathesis may have deleted the seeded account itself) and
    // logged no secret.
    assert_eq!(kg.admin("GET", &format!("{A}/accounts"), None).status, 200);
    assert!(!kg.log().contains(ADMIN_TOKEN));
}

/// Every operation the document lists is served (not the fallback's 404 or 405), and on a
/// documented path every other method is 405: the document and the router name the same
/// routes. (The router registers handlers only through `utoipa_axum::routes!`, which takes
/// documented handlers only; `admin::tests` keeps it that way.)
#[test]
fn the_document_lists_exactly_the_served_routes() {
    let (_echo, kg) = start();
    let doc = document(&kg);
    let paths = doc["paths"].as_object().expect("paths");
    let mut operations: Vec<(String, String)> = Vec::new();
    for (path, item) in paths {
        let concrete = path.replace("{id}", "acc_nope");
        for method in ["get", "post", "put", "patch", "delete"] {
            let upper = method.to_ascii_uppercase();
            // An empty object body: enough to reach the handler (its answer may be 404/422).
            let body = (method != "get" && method != "delete").then(|| json!({}));
            let r = kg.admin(&upper, &concrete, body);
            if item.get(method).is_some() {
                operations.push((method.to_string(), path.clone()));
                assert_ne!(r.status, 405, "{upper} {path} is documented: {}", r.body);
                assert!(
                    !r.body.contains("no such admin endpoint"),
                    "{upper} {path} is documented but not served"
                );
            } else {
                assert_eq!(r.status, 405, "{upper} {path} is served but not documented");
            }
        }
    }
    operations.sort();
    let mut expected: Vec<(String, String)> = [
        ("post", "/accounts"),
        ("get", "/accounts"),
        ("get", "/accounts/{id}"),
        ("patch", "/accounts/{id}"),
        ("delete", "/accounts/{id}"),
        ("get", "/accounts/{id}/credits"),
        ("post", "/accounts/{id}/credits"),
        ("put", "/accounts/{id}/credits"),
        ("get", "/accounts/{id}/transactions"),
        ("post", "/accounts/{id}/suspend"),
        ("post", "/accounts/{id}/reactivate"),
        ("post", "/keys"),
        ("get", "/keys"),
        ("get", "/keys/{id}"),
        ("patch", "/keys/{id}"),
        ("post", "/keys/{id}/disable"),
        ("post", "/keys/{id}/enable"),
        ("post", "/keys/{id}/revoke"),
        ("post", "/keys/{id}/rotate"),
        ("post", "/keys/import"),
        ("post", "/users"),
        ("get", "/users"),
        ("get", "/users/{id}"),
        ("patch", "/users/{id}"),
        ("post", "/users/{id}/password"),
        ("get", "/audit"),
        ("get", "/openapi.json"),
    ]
    .iter()
    .map(|(m, p)| (m.to_string(), format!("{A}{p}")))
    .collect();
    expected.sort();
    assert_eq!(operations, expected);
}

#[test]
fn the_document_states_auth_errors_and_the_rules_the_code_enforces() {
    let (_echo, kg) = start_with_plans();
    // The document needs the token like every admin path, and says so.
    let r = get(&format!("{}{A}/openapi.json", kg.admin_url()), &[]);
    assert_error(&r, 401, "unauthorized");
    let doc = document(&kg);
    assert!(doc["openapi"]
        .as_str()
        .is_some_and(|v| v.starts_with("3.1")));
    assert_eq!(
        doc["components"]["securitySchemes"]["adminToken"],
        json!({"type": "http", "scheme": "bearer", "description": "the admin token ([secrets] admin_token)"})
    );
    assert_eq!(doc["security"], json!([{"adminToken": []}]));
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("item") {
            let responses = &op["responses"];
            for status in ["401", "503"] {
                assert_eq!(
                    responses[status]["content"]["application/json"]["schema"]["$ref"],
                    "#/components/schemas/ErrorBody",
                    "{method} {path} {status}"
                );
            }
        }
    }
    let schemas = &doc["components"]["schemas"];
    // Every $ref names a schema that exists.
    let text = doc.to_string();
    for piece in text.split("#/components/schemas/").skip(1) {
        let name: String = piece.chars().take_while(|c| c.is_alphanumeric()).collect();
        assert!(schemas.get(&name).is_some(), "dangling $ref {name}");
    }
    // Bodies refuse unknown fields, and say so.
    for name in [
        "CreateAccount",
        "UpdateAccount",
        "CreateKey",
        "UpdateKey",
        "RotateKey",
        "CreateUser",
        "UpdateUser",
        "SetPassword",
        "Adjust",
        "SetBalance",
        "RateLimitBody",
    ] {
        assert_eq!(schemas[name]["additionalProperties"], false, "{name}");
    }
    assert_eq!(schemas["UpdateKey"]["minProperties"], 1);
    assert_eq!(schemas["UpdateUser"]["minProperties"], 1);
    assert_eq!(
        schemas["CreateAccount"]["properties"]["name"]["maxLength"],
        200
    );
    assert_eq!(
        schemas["CreateUser"]["properties"]["password"]["writeOnly"],
        true
    );
    assert!(schemas["UserView"]["properties"].get("password").is_none());
    // Non-nullable optional fields are not nullable in the document.
    assert_eq!(schemas["UpdateKey"]["properties"]["name"]["type"], "string");
    assert_eq!(
        schemas["UpdateKey"]["properties"]["expires_at"]["type"],
        json!(["string", "null"])
    );
    // The configured plans are the values `plan` may take.
    assert_eq!(
        schemas["UpdateAccount"]["properties"]["plan"]["enum"],
        json!(["pro", null])
    );
    let limit = doc["paths"]["/admin/v1/keys"]["get"]["parameters"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["name"] == "limit"))
        .cloned()
        .expect("limit");
    assert_eq!(
        (&limit["schema"]["minimum"], &limit["schema"]["maximum"]),
        (&json!(1), &json!(1000))
    );
}

#[test]
fn list_limits_outside_1_to_1000_are_400_not_clamped() {
    let (_echo, kg) = start();
    let account = kg.create_account("acme");
    for path in [
        format!("{A}/accounts"),
        format!("{A}/keys"),
        format!("{A}/users"),
        format!("{A}/audit"),
        format!("{A}/accounts/{account}/transactions"),
    ] {
        for bad in ["0", "1001", "-1", "many", ""] {
            let r = kg.admin("GET", &format!("{path}?limit={bad}"), None);
            let message = assert_error(&r, 400, "invalid_query");
            assert!(message.contains("limit"), "{path} {bad}: {message}");
        }
        for good in ["1", "1000"] {
            let r = kg.admin("GET", &format!("{path}?limit={good}"), None);
            assert_eq!(r.status, 200, "{path} {good}: {}", r.body);
        }
    }
    let transactions = format!("{A}/accounts/{account}/transactions");
    for bad in ["", "0", "007", "x", "1234567890123456789"] {
        let r = kg.admin("GET", &format!("{transactions}?after={bad}"), None);
        assert_error(&r, 400, "invalid_query");
    }
}

#[test]
fn null_is_refused_where_the_document_says_non_nullable() {
    let (_echo, kg) = start();
    let account = kg.create_account("acme");
    let (key, _) = kg.create_key(&account, json!({}));
    let r = kg.admin(
        "POST",
        &format!("{A}/users"),
        Some(json!({"account_id": account, "email": "ann@example.com", "password": "hunter2hunter2"})),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let user = r.json()["id"].as_str().expect("id").to_string();
    let cases = [
        (
            "PATCH",
            format!("{A}/keys/{key}"),
            json!({"name": null}),
            "name",
        ),
        (
            "PATCH",
            format!("{A}/keys/{key}"),
            json!({"scopes": null}),
            "scopes",
        ),
        (
            "PATCH",
            format!("{A}/users/{user}"),
            json!({"role": null}),
            "role",
        ),
        (
            "PATCH",
            format!("{A}/users/{user}"),
            json!({"status": null}),
            "status",
        ),
        (
            "POST",
            format!("{A}/keys/{key}/rotate"),
            json!({"grace_seconds": null}),
            "grace_seconds",
        ),
        (
            "POST",
            format!("{A}/accounts/{account}/credits"),
            json!({"delta": 5, "reason": null}),
            "reason",
        ),
        (
            "PUT",
            format!("{A}/accounts/{account}/credits"),
            json!({"balance": 5, "reason": null}),
            "reason",
        ),
        (
            "POST",
            format!("{A}/keys"),
            json!({"account_id": account, "name": "k", "permission": null}),
            "permission",
        ),
        (
            "POST",
            format!("{A}/accounts"),
            json!({"name": null}),
            "name",
        ),
    ];
    for (method, path, body, field) in cases {
        let r = kg.admin(method, &path, Some(body.clone()));
        let message = assert_error(&r, 422, "invalid_body");
        assert!(message.contains(field), "{body}: {message}");
    }
    // Where null means something, it is documented nullable and still works.
    let r = kg.admin(
        "PATCH",
        &format!("{A}/keys/{key}"),
        Some(json!({"expires_at": null, "rate_limit": null, "resources": null})),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    // Nothing was changed by the refusals.
    assert_eq!(
        kg.admin("GET", &format!("{A}/accounts/{account}/credits"), None)
            .json()["balance"],
        0
    );
}

#[test]
fn bodies_are_objects_with_values_inside_their_documented_bounds() {
    let (_echo, kg) = start();
    let account = kg.create_account("acme");
    let credits = format!("{A}/accounts/{account}/credits");
    let cases = [
        ("PATCH", format!("{A}/accounts/{account}"), json!([null])),
        ("POST", format!("{A}/accounts"), json!(["x"])),
        ("POST", credits.clone(), json!({"delta": 0})),
        (
            "POST",
            credits.clone(),
            json!({"delta": 9_007_199_254_740_992_i64}),
        ),
        ("POST", credits.clone(), json!({"delta": 1.5})),
        ("PATCH", format!("{A}/accounts/{account}"), json!({})),
        (
            "POST",
            format!("{A}/keys"),
            json!({"account_id": account, "name": "k", "rate_limit": [1, 60, 1]}),
        ),
        // Length counts what was sent; blank, control characters and padded emails are out.
        (
            "POST",
            format!("{A}/accounts"),
            json!({"name": format!(" {} ", "x".repeat(199))}),
        ),
        ("POST", format!("{A}/accounts"), json!({"name": "\u{3000}"})),
        ("POST", format!("{A}/accounts"), json!({"name": "a\u{85}b"})),
        // maxLength counts the padding the server trims, as the document does.
        (
            "POST",
            format!("{A}/users"),
            json!({"account_id": account, "email": format!("  {}@x.com", "a".repeat(247)), "password": "hunter2hunter2"}),
        ),
    ];
    for (method, path, body) in cases {
        let r = kg.admin(method, &path, Some(body.clone()));
        assert_error(&r, 422, "invalid_body");
    }
    // JSON Schema's integers include 12.0.
    let r = kg.admin("POST", &credits, Some(json!({"delta": 12.0})));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["balance"], 12);
    // A well-formed expiry in the past conflicts with the clock: 409, not a schema error.
    let r = kg.admin(
        "POST",
        &format!("{A}/keys"),
        Some(json!({"account_id": account, "name": "k", "expires_at": "2001-01-01T00:00:00Z"})),
    );
    let message = assert_error(&r, 409, "conflict");
    assert!(message.contains("expires_at"), "{message}");
}

#[test]
fn a_deleted_account_is_404_everywhere() {
    let (_echo, kg) = start();
    let account = kg.create_account("gone");
    let kept = kg.create_account("kept");
    let r = kg.admin(
        "POST",
        &format!("{A}/accounts/{account}/credits"),
        Some(json!({"delta": 5})),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let r = kg.admin("DELETE", &format!("{A}/accounts/{account}"), None);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["status"], "deleted");

    let base = format!("{A}/accounts/{account}");
    let cases = [
        ("GET", base.clone(), None),
        ("DELETE", base.clone(), None),
        ("PATCH", base.clone(), Some(json!({"plan": null}))),
        ("POST", format!("{base}/suspend"), None),
        ("POST", format!("{base}/reactivate"), None),
        ("GET", format!("{base}/credits"), None),
        ("POST", format!("{base}/credits"), Some(json!({"delta": 5}))),
        (
            "PUT",
            format!("{base}/credits"),
            Some(json!({"balance": 5})),
        ),
        ("GET", format!("{base}/transactions"), None),
    ];
    for (method, path, body) in cases {
        let r = kg.admin(method, &path, body);
        assert_eq!(
            assert_error(&r, 404, "not_found"),
            "account not found",
            "{method} {path}"
        );
    }
    // Gone from the list too; the other account is not.
    let r = kg.admin("GET", &format!("{A}/accounts"), None);
    let listed = r.json()["accounts"].clone();
    let ids: Vec<&str> = listed
        .as_array()
        .expect("accounts")
        .iter()
        .filter_map(|a| a["id"].as_str())
        .collect();
    assert_eq!(ids, [kept.as_str()]);
}

/// Account metadata is in the document where the API takes and gives it: an object on create
/// and update (an update needs `plan` or `metadata`), and always on the account.
#[test]
fn account_metadata_is_documented_as_an_object() {
    let (_echo, kg) = start_with_plans();
    let doc = document(&kg);
    let schema = |name: &str| doc["components"]["schemas"][name].clone();
    for name in ["CreateAccount", "UpdateAccount", "AccountView"] {
        assert_eq!(
            schema(name)["properties"]["metadata"]["type"],
            "object",
            "{name}: {}",
            schema(name)
        );
    }
    assert_eq!(schema("UpdateAccount")["minProperties"], 1);
    let required = |name: &str| schema(name)["required"].clone();
    assert!(
        required("AccountView")
            .as_array()
            .is_some_and(|r| r.contains(&json!("metadata"))),
        "{}",
        schema("AccountView")
    );
    assert!(
        !required("CreateAccount")
            .as_array()
            .is_some_and(|r| r.contains(&json!("metadata"))),
        "{}",
        schema("CreateAccount")
    );
}

/// Key metadata likewise: an object on create and update, never null, and always on the key.
#[test]
fn key_metadata_is_documented_as_an_object() {
    let (_echo, kg) = start();
    let doc = document(&kg);
    let schema = |name: &str| doc["components"]["schemas"][name].clone();
    for name in ["CreateKey", "UpdateKey", "KeyView"] {
        assert_eq!(
            schema(name)["properties"]["metadata"]["type"],
            "object",
            "{name}: {}",
            schema(name)
        );
    }
    let required = |name: &str| {
        schema(name)["required"]
            .as_array()
            .is_some_and(|r| r.contains(&json!("metadata")))
    };
    assert!(required("KeyView"), "{}", schema("KeyView"));
    assert!(!required("CreateKey"), "{}", schema("CreateKey"));
    assert!(!required("UpdateKey"), "{}", schema("UpdateKey"));
}
