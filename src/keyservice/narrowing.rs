//! Whether a change takes rights away from tokens already issued. An access token carries its
//! key's scopes, effective permission, resources, rate limit and (as its own end) expiry, and a
//! session token its user's role, all as they were when it was issued; a change that narrows any
//! of them must cut those tokens (on every replica, as a revoke does), or they keep the old
//! rights until they expire. A change that only widens — or renames — cuts nothing, so the
//! token keeps working.
//!
//! "Narrows", precisely:
//! - **scopes**: a scope the key had is gone (added or reordered scopes widen);
//! - **resources**: a kind the key did not restrict is restricted now (including a restriction
//!   set where there was none), or an id allowed for a kind is gone (ids added, a kind
//!   unrestricted or the whole restriction lifted widen);
//! - **expiry**: set where there was none, or moved earlier (even into the past); cleared or
//!   moved later widens;
//! - **rate limit**: the key's own limit lowered — fewer requests per second or a smaller
//!   burst — or set or cleared (the limit then comes from the plan or the route, which this
//!   service cannot compare, so it counts as narrowing); raised on both counts widens;
//! - **role**: lowered (owner > admin > member > read_only); a user disabled. Raised, or a
//!   user enabled, widens.
//!
//! Concurrent updates of one key each decide against the key as they read it.

use crate::store::{KeyPatch, KeyRecord, RateLimit, Resources, Role};

/// Whether applying `patch` to `before` takes anything away from the key's tokens.
pub(super) fn key_narrows(before: &KeyRecord, patch: &KeyPatch) -> bool {
    let scopes = patch
        .scopes
        .as_ref()
        .is_some_and(|after| before.scopes.iter().any(|s| !after.contains(s)));
    let resources = patch
        .resources
        .as_ref()
        .is_some_and(|after| resources_narrow(before.resources.as_ref(), after.as_ref()));
    let expiry = patch
        .expires_at
        .is_some_and(|after| expiry_earlier(before.expires_at, after));
    let limit = patch
        .rate_limit
        .is_some_and(|after| limit_narrows(before.rate_limit, after));
    scopes || resources || expiry || limit
}

fn resources_narrow(before: Option<&Resources>, after: Option<&Resources>) -> bool {
    let Some(after) = after else {
        return false; // unrestricted now
    };
    after.iter().any(|(kind, ids)| {
        match before.and_then(|b| b.get(kind)) {
            // The kind was open: any restriction of it narrows.
            None => true,
            Some(old) => old.iter().any(|id| !ids.contains(id)),
        }
    })
}

fn expiry_earlier(before: Option<i64>, after: Option<i64>) -> bool {
    match (before, after) {
        (_, None) => false,
        (None, Some(_)) => true,
        (Some(b), Some(a)) => a < b,
    }
}

fn limit_narrows(before: Option<RateLimit>, after: Option<RateLimit>) -> bool {
    match (before, after) {
        (None, None) => false,
        (Some(b), Some(a)) => {
            // Rates compared without division: a.requests / a.per_seconds < b's.
            let slower = u128::from(a.requests) * u128::from(b.per_seconds)
                < u128::from(b.requests) * u128::from(a.per_seconds);
            slower || a.burst < b.burst
        }
        // The limit moves to or from the plan's or the route's, which may be lower.
        _ => true,
    }
}

fn rank(role: Role) -> u8 {
    match role {
        Role::Owner => 3,
        Role::Admin => 2,
        Role::Member => 1,
        Role::ReadOnly => 0,
    }
}

/// Whether a user's tokens lose rights when their role goes from `before` to `after`.
pub(super) fn role_lowered(before: Role, after: Role) -> bool {
    rank(after) < rank(before)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{KeyStatus, Permission};

    fn key() -> KeyRecord {
        KeyRecord {
            id: "key_1".into(),
            account_id: "acc_1".into(),
            user_id: None,
            name: "k".into(),
            display_prefix: "kg_".into(),
            hash: [0; 32],
            scopes: vec!["a".into(), "b".into()],
            permission: Permission::ReadWrite,
            status: KeyStatus::Active,
            created_at: 0,
            expires_at: Some(1_000),
            last_used_at: None,
            rate_limit: Some(limit(10, 1, 10)),
            resources: Some(res(&[("projects", &["p1", "p2"])])),
            rotated_from: None,
            metadata: Default::default(),
        }
    }

    fn limit(requests: u64, per_seconds: u64, burst: u64) -> RateLimit {
        RateLimit {
            requests,
            per_seconds,
            burst,
        }
    }

    fn res(kinds: &[(&str, &[&str])]) -> Resources {
        kinds
            .iter()
            .map(|(k, ids)| (k.to_string(), ids.iter().map(|i| i.to_string()).collect()))
            .collect()
    }

    fn narrows(patch: KeyPatch) -> bool {
        key_narrows(&key(), &patch)
    }

    #[test]
    fn scopes_narrow_when_one_is_removed() {
        let scopes = |s: &[&str]| KeyPatch {
            scopes: Some(s.iter().map(|x| x.to_string()).collect()),
            ..KeyPatch::default()
        };
        assert!(narrows(scopes(&["a"])));
        assert!(narrows(scopes(&[])));
        assert!(narrows(scopes(&["a", "c"])));
        assert!(!narrows(scopes(&["b", "a"])));
        assert!(!narrows(scopes(&["a", "b", "c"])));
    }

    #[test]
    fn resources_narrow_when_an_id_goes_or_a_kind_is_restricted() {
        let set = |r: Option<Resources>| KeyPatch {
            resources: Some(r),
            ..KeyPatch::default()
        };
        assert!(narrows(set(Some(res(&[("projects", &["p1"])])))));
        assert!(narrows(set(Some(res(&[("projects", &[])])))));
        assert!(narrows(set(Some(res(&[
            ("projects", &["p1", "p2"]),
            ("teams", &["t1"])
        ])))));
        assert!(!narrows(set(Some(res(&[(
            "projects",
            &["p2", "p1", "p3"]
        )])))));
        assert!(!narrows(set(Some(res(&[])))), "every kind unrestricted");
        assert!(!narrows(set(None)), "the restriction lifted");
        let open = KeyRecord {
            resources: None,
            ..key()
        };
        assert!(key_narrows(
            &open,
            &set(Some(res(&[("projects", &["p1"])])))
        ));
        assert!(!key_narrows(&open, &set(Some(res(&[])))));
    }

    #[test]
    fn expiry_narrows_when_set_or_moved_earlier() {
        let at = |t: Option<i64>| KeyPatch {
            expires_at: Some(t),
            ..KeyPatch::default()
        };
        assert!(narrows(at(Some(999))));
        assert!(narrows(at(Some(-5))), "into the past");
        assert!(!narrows(at(Some(1_000))));
        assert!(!narrows(at(Some(2_000))));
        assert!(!narrows(at(None)), "cleared");
        let never = KeyRecord {
            expires_at: None,
            ..key()
        };
        assert!(key_narrows(&never, &at(Some(5_000))));
    }

    #[test]
    fn a_rate_limit_narrows_when_lowered_set_or_cleared() {
        let to = |l: Option<RateLimit>| KeyPatch {
            rate_limit: Some(l),
            ..KeyPatch::default()
        };
        assert!(narrows(to(Some(limit(9, 1, 10)))), "fewer requests");
        assert!(narrows(to(Some(limit(10, 2, 10)))), "a longer period");
        assert!(narrows(to(Some(limit(100, 1, 5)))), "a smaller burst");
        assert!(narrows(to(None)), "back to the plan's or route's");
        assert!(!narrows(to(Some(limit(10, 1, 10)))));
        assert!(!narrows(to(Some(limit(600, 60, 10)))), "the same rate");
        assert!(!narrows(to(Some(limit(20, 1, 20)))));
        let none = KeyRecord {
            rate_limit: None,
            ..key()
        };
        assert!(key_narrows(&none, &to(Some(limit(1_000, 1, 1_000)))));
        assert!(!key_narrows(&none, &to(None)));
    }

    #[test]
    fn a_rename_narrows_nothing() {
        assert!(!narrows(KeyPatch {
            name: Some("other".into()),
            ..KeyPatch::default()
        }));
    }

    #[test]
    fn roles_narrow_downwards() {
        use Role::*;
        assert!(role_lowered(Owner, Admin));
        assert!(role_lowered(Admin, Member));
        assert!(role_lowered(Member, ReadOnly));
        assert!(!role_lowered(ReadOnly, Member));
        assert!(!role_lowered(Member, Member));
        assert!(!role_lowered(Admin, Owner));
    }
}
