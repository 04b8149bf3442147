//! Unit tests for [`crate::authz`]: every rule, and the order they are reported in.

use std::sync::Arc;

use super::*;
use crate::cache::Facts;
use crate::config::{AuthMode, Upstream};
use crate::store::{Account, Credential, KeyRecord};

const NOW: i64 = 1_700_000_000;

fn route(scopes: &[&str], permission: Option<RoutePermission>) -> Route {
    Route {
        name: "r".into(),
        path: "/r".into(),
        methods: Vec::new(),
        upstream: Some(Arc::new(Upstream {
            name: "api".into(),
            addresses: vec!["127.0.0.1:1".into()],
            tls: false,
            sni: String::new(),
            timeouts: crate::config::UpstreamTimeouts {
                connect: std::time::Duration::from_secs(5),
                read: std::time::Duration::from_secs(60),
                write: std::time::Duration::from_secs(60),
                idle: std::time::Duration::from_secs(60),
                total: None,
            },
            retries: 1,
            pool: crate::config::PoolPolicy {
                balance: crate::config::Balance::RoundRobin,
                health_check: None,
                passive_ejection: None,
            },
            verify: true,
            ca: None,
            protocol: crate::config::UpstreamProtocol::H1,
        })),
        local: None,
        auth: AuthMode::ApiKey,
        scopes: scopes.iter().map(|s| s.to_string()).collect(),
        permission,
        key_limit: None,
        account_limit: None,
        ip_limit: None,
        max_body_bytes: None,
        body_schema: None,
        cost: 0,
        charge_on: Default::default(),
        resources: Vec::new(),
    }
}

fn cred() -> Credential {
    Credential {
        key: KeyRecord {
            id: "key_1".into(),
            account_id: "acc_1".into(),
            user_id: None,
            name: "k".into(),
            display_prefix: "kg_test_abcdef".into(),
            hash: [0u8; 32],
            scopes: vec!["leads:read".into(), "emails:read".into()],
            permission: Permission::ReadWrite,
            status: KeyStatus::Active,
            created_at: NOW - 100,
            expires_at: None,
            last_used_at: None,
            rate_limit: None,
            resources: None,
            rotated_from: None,
            metadata: Default::default(),
        },
        account: Account {
            id: "acc_1".into(),
            name: "a".into(),
            status: AccountStatus::Active,
            created_at: NOW - 100,
            plan: None,
            credits: 0,
            metadata: Default::default(),
        },
        user: None,
    }
}

/// The rules read the cache's compact facts; these tests write the store's record.
fn authorize(c: &Credential, route: &Route, method: &str, now: i64) -> Result<(), Rejection> {
    super::authorize(&Facts::of(c), route, method, now)
}

fn check_method_parameter(c: &Credential, query: Option<&str>) -> Result<(), Rejection> {
    super::check_method_parameter(&Facts::of(c), query)
}

fn reason(r: Result<(), Rejection>) -> Option<Reason> {
    r.err().map(|e| e.reason)
}

#[test]
fn active_key_on_active_account_is_allowed() {
    let c = cred();
    assert_eq!(authorize(&c, &route(&[], None), "GET", NOW), Ok(()));
    assert_eq!(authorize(&c, &route(&[], None), "POST", NOW), Ok(()));
    assert_eq!(
        authorize(&c, &route(&["leads:read", "emails:read"], None), "GET", NOW),
        Ok(())
    );
}

#[test]
fn key_status_rules() {
    let mut c = cred();
    c.key.status = KeyStatus::Revoked;
    assert_eq!(
        reason(authorize(&c, &route(&[], None), "GET", NOW)),
        Some(Reason::KeyRevoked)
    );
    c.key.status = KeyStatus::Disabled;
    assert_eq!(
        reason(authorize(&c, &route(&[], None), "GET", NOW)),
        Some(Reason::KeyDisabled)
    );
}

#[test]
fn expiry_applies_at_and_after_now() {
    let mut c = cred();
    let r = route(&[], None);
    c.key.expires_at = Some(NOW + 1);
    assert_eq!(authorize(&c, &r, "GET", NOW), Ok(()));
    c.key.expires_at = Some(NOW);
    assert_eq!(
        reason(authorize(&c, &r, "GET", NOW)),
        Some(Reason::KeyExpired)
    );
    c.key.expires_at = Some(NOW - 1);
    assert_eq!(
        reason(authorize(&c, &r, "GET", NOW)),
        Some(Reason::KeyExpired)
    );
}

#[test]
fn account_status_rules() {
    let mut c = cred();
    let r = route(&[], None);
    c.account.status = AccountStatus::Suspended;
    assert_eq!(
        reason(authorize(&c, &r, "GET", NOW)),
        Some(Reason::AccountSuspended)
    );
    c.account.status = AccountStatus::Deleted;
    assert_eq!(
        reason(authorize(&c, &r, "GET", NOW)),
        Some(Reason::AccountMissing)
    );
}

#[test]
fn reasons_are_reported_in_order() {
    // Everything wrong at once: revoked wins.
    let mut c = cred();
    c.key.permission = Permission::Read;
    c.key.scopes.clear();
    c.key.expires_at = Some(NOW - 10);
    c.account.status = AccountStatus::Suspended;
    c.key.status = KeyStatus::Revoked;
    let r = route(&["leads:read"], None);
    assert_eq!(
        reason(authorize(&c, &r, "POST", NOW)),
        Some(Reason::KeyRevoked)
    );
    // Revoked beats disabled-style problems further down; disabled beats expiry.
    c.key.status = KeyStatus::Disabled;
    assert_eq!(
        reason(authorize(&c, &r, "POST", NOW)),
        Some(Reason::KeyDisabled)
    );
    // Expiry beats the account.
    c.key.status = KeyStatus::Active;
    assert_eq!(
        reason(authorize(&c, &r, "POST", NOW)),
        Some(Reason::KeyExpired)
    );
    // Account beats permission.
    c.key.expires_at = None;
    assert_eq!(
        reason(authorize(&c, &r, "POST", NOW)),
        Some(Reason::AccountSuspended)
    );
    c.account.status = AccountStatus::Deleted;
    assert_eq!(
        reason(authorize(&c, &r, "POST", NOW)),
        Some(Reason::AccountMissing)
    );
    // Permission beats scope.
    c.account.status = AccountStatus::Active;
    assert_eq!(
        reason(authorize(&c, &r, "POST", NOW)),
        Some(Reason::ReadOnlyKey)
    );
    // Finally the scope.
    assert_eq!(
        reason(authorize(&c, &r, "GET", NOW)),
        Some(Reason::InsufficientScope)
    );
}

#[test]
fn revoked_beats_suspended() {
    let mut c = cred();
    c.key.status = KeyStatus::Revoked;
    c.account.status = AccountStatus::Suspended;
    assert_eq!(
        reason(authorize(&c, &route(&[], None), "GET", NOW)),
        Some(Reason::KeyRevoked)
    );
}

#[test]
fn read_key_is_refused_on_write_methods_without_a_route_permission() {
    let mut c = cred();
    c.key.permission = Permission::Read;
    let r = route(&[], None);
    for m in ["GET", "HEAD", "OPTIONS"] {
        assert_eq!(authorize(&c, &r, m, NOW), Ok(()), "{m}");
    }
    for m in ["POST", "PUT", "PATCH", "DELETE"] {
        assert_eq!(
            reason(authorize(&c, &r, m, NOW)),
            Some(Reason::ReadOnlyKey),
            "{m}"
        );
    }
}

#[test]
fn route_permission_overrides_the_method_default() {
    let mut c = cred();
    c.key.permission = Permission::Read;
    // A POST that only reads (a lookup) is open to read keys.
    let read_post = route(&[], Some(RoutePermission::Read));
    assert_eq!(authorize(&c, &read_post, "POST", NOW), Ok(()));
    // A GET marked as write is not.
    let write_get = route(&[], Some(RoutePermission::Write));
    assert_eq!(
        reason(authorize(&c, &write_get, "GET", NOW)),
        Some(Reason::ReadOnlyKey)
    );
    // A read_write key passes both.
    c.key.permission = Permission::ReadWrite;
    assert_eq!(authorize(&c, &write_get, "GET", NOW), Ok(()));
    assert_eq!(authorize(&c, &read_post, "POST", NOW), Ok(()));
}

#[test]
fn required_permission_defaults() {
    let r = route(&[], None);
    assert_eq!(required_permission(&r, "GET"), RoutePermission::Read);
    assert_eq!(required_permission(&r, "HEAD"), RoutePermission::Read);
    assert_eq!(required_permission(&r, "OPTIONS"), RoutePermission::Read);
    assert_eq!(required_permission(&r, "POST"), RoutePermission::Write);
    assert_eq!(required_permission(&r, "DELETE"), RoutePermission::Write);
    let r = route(&[], Some(RoutePermission::Read));
    assert_eq!(required_permission(&r, "DELETE"), RoutePermission::Read);
}

#[test]
fn missing_scope_names_the_first_missing_one() {
    let mut c = cred();
    c.key.scopes = vec!["b".into()];
    let r = route(&["b", "c", "d"], None);
    let err = authorize(&c, &r, "GET", NOW).expect_err("missing scopes");
    assert_eq!(err.reason, Reason::InsufficientScope);
    assert_eq!(err.detail.scope.as_deref(), Some("c"));

    c.key.scopes.clear();
    let err = authorize(&c, &r, "GET", NOW).expect_err("missing scopes");
    assert_eq!(err.detail.scope.as_deref(), Some("b"));
}

#[test]
fn scopes_match_exactly() {
    let mut c = cred();
    c.key.scopes = vec!["leads:read:extra".into(), "LEADS:READ".into()];
    let err = authorize(&c, &route(&["leads:read"], None), "GET", NOW).expect_err("no match");
    assert_eq!(err.reason, Reason::InsufficientScope);
    assert_eq!(err.detail.scope.as_deref(), Some("leads:read"));
}

#[test]
fn other_rejections_carry_no_detail() {
    let mut c = cred();
    c.key.status = KeyStatus::Revoked;
    let err = authorize(&c, &route(&["x"], None), "GET", NOW).expect_err("revoked");
    assert_eq!(err.detail, Detail::default());
}

#[test]
fn method_parameter_in_any_spelling_a_framework_reads() {
    for query in [
        "_method=DELETE",
        "a=1&_method=put",
        "a=1;_method=put",
        "%5Fmethod=DELETE",
        "%5fMETHOD=x",
        "_%6Dethod=x",
        "_METHOD=delete",
        ".method=delete",
        "+method=delete",
        "%20method=delete",
        "[method=delete",
        "_method",
        "_method=",
    ] {
        assert!(has_method_parameter(query), "{query}");
    }
    for query in [
        "",
        "method=DELETE",
        "my_method=DELETE",
        "_methods=1",
        "__method=1",
        "x=_method",
        "_method%",
        "%5",
        "%zz",
    ] {
        assert!(!has_method_parameter(query), "{query}");
    }
}

#[test]
fn method_parameter_is_refused_only_on_read_only_credentials() {
    let mut c = cred();
    c.key.permission = Permission::Read;
    let err = check_method_parameter(&c, Some("_method=DELETE")).expect_err("read-only");
    assert_eq!(err.reason, Reason::ReadOnlyKey);
    assert!(check_method_parameter(&c, Some("a=1")).is_ok());
    assert!(check_method_parameter(&c, None).is_ok());
    c.key.permission = Permission::ReadWrite;
    assert!(check_method_parameter(&c, Some("_method=DELETE")).is_ok());
}
