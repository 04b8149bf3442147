//! Checks on the values of a key, user or account change beyond what the JSON types enforce,
//! the same whether an operator or a user asks. Each error carries the field and a message that
//! names it.

use std::collections::{BTreeMap, HashMap};

use chrono::DateTime;
use serde::Deserialize;

use super::error::{ServiceError, ServiceResult};
use crate::config::{valid_scope, Plan};
use crate::store::{normalize_email, RateLimit, Resources, MAX_CREDITS};

pub const MAX_NAME_CHARS: usize = 200;
pub const MAX_SCOPES: usize = 100;

/// A display name: not blank, at most [`MAX_NAME_CHARS`] characters. Returns it trimmed.
pub fn name(field: &str, value: &str) -> ServiceResult<String> {
    let trimmed = value.trim();
    if trimmed.is_empty() {
        return Err(ServiceError::invalid(
            field,
            format!("`{field}` must not be empty"),
        ));
    }
    if trimmed.chars().count() > MAX_NAME_CHARS {
        return Err(ServiceError::invalid(
            field,
            format!("`{field}` must be at most {MAX_NAME_CHARS} characters"),
        ));
    }
    if trimmed.chars().any(char::is_control) {
        return Err(ServiceError::invalid(
            field,
            format!("`{field}` must not contain control characters"),
        ));
    }
    Ok(trimmed.to_string())
}

/// Scopes: each valid, duplicates dropped, order kept.
pub fn scopes(values: Vec<String>) -> ServiceResult<Vec<String>> {
    if values.len() > MAX_SCOPES {
        return Err(ServiceError::invalid(
            "scopes",
            format!("`scopes` may hold at most {MAX_SCOPES} entries"),
        ));
    }
    let mut out: Vec<String> = Vec::with_capacity(values.len());
    for s in values {
        if !valid_scope(&s) {
            return Err(ServiceError::invalid(
                "scopes",
                format!(
                    "`scopes`: `{}` is not a scope (1-64 letters, digits, and : . _ -)",
                    s.escape_debug()
                ),
            ));
        }
        if !out.contains(&s) {
            out.push(s);
        }
    }
    Ok(out)
}

pub const MAX_EMAIL_CHARS: usize = 254;
pub const MAX_RESOURCE_KINDS: usize = 32;
pub const MAX_RESOURCE_IDS: usize = 1000;

/// An email address: `local@domain`, no spaces or control characters, at most
/// [`MAX_EMAIL_CHARS`]. Returns it trimmed and lower-cased (as the store keeps it).
pub fn email(value: &str) -> ServiceResult<String> {
    let email = normalize_email(value);
    let bad = |why: &str| ServiceError::invalid("email", format!("`email` {why}"));
    if email.is_empty() {
        return Err(bad("must not be empty"));
    }
    if email.chars().count() > MAX_EMAIL_CHARS {
        return Err(bad(&format!(
            "must be at most {MAX_EMAIL_CHARS} characters"
        )));
    }
    if email
        .chars()
        .any(|c| c.is_control() || c.is_whitespace() || matches!(c, '<' | '>' | ',' | ';'))
    {
        return Err(bad("must not contain spaces, control characters or <>,;"));
    }
    let valid = match email.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && !domain.is_empty()
                && !domain.contains('@')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
                && !domain.contains("..")
        }
        None => false,
    };
    if !valid {
        return Err(bad("is not an email address (name@domain)"));
    }
    Ok(email)
}

/// A resource kind or id: 1-64 of `A-Z a-z 0-9 _ . : -`.
pub fn valid_resource_name(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-'))
}

/// A key's resources (`{"projects": ["p1"]}`): kinds and ids checked, duplicate ids dropped in
/// order. An empty id list is kept (the key reaches none of that kind).
pub fn resources(value: BTreeMap<String, Vec<String>>) -> ServiceResult<Resources> {
    if value.len() > MAX_RESOURCE_KINDS {
        return Err(ServiceError::invalid(
            "resources",
            format!("`resources` may hold at most {MAX_RESOURCE_KINDS} kinds"),
        ));
    }
    let mut out = Resources::new();
    for (kind, ids) in value {
        if !valid_resource_name(&kind) {
            return Err(ServiceError::invalid(
                "resources",
                format!(
                    "`resources`: `{}` is not a resource kind (1-64 letters, digits, and _ . : -)",
                    kind.escape_debug()
                ),
            ));
        }
        if ids.len() > MAX_RESOURCE_IDS {
            return Err(ServiceError::invalid(
                format!("resources.{kind}"),
                format!("`resources.{kind}` may hold at most {MAX_RESOURCE_IDS} ids"),
            ));
        }
        let mut kept: Vec<String> = Vec::with_capacity(ids.len());
        for id in ids {
            if !valid_resource_name(&id) {
                return Err(ServiceError::invalid(format!("resources.{kind}"), format!(
                    "`resources.{kind}`: `{}` is not a resource id (1-64 letters, digits, and _ . : -)",
                    id.escape_debug()
                )));
            }
            if !kept.contains(&id) {
                kept.push(id);
            }
        }
        out.insert(kind, kept);
    }
    Ok(out)
}

/// An RFC 3339 time as Unix seconds.
pub fn time(field: &str, value: &str) -> ServiceResult<i64> {
    DateTime::parse_from_rfc3339(value)
        .map(|t| t.timestamp())
        .map_err(|e| {
            ServiceError::invalid(
                field,
                format!(
                    "`{field}`: `{}` is not an RFC 3339 time ({e})",
                    value.escape_debug()
                ),
            )
        })
}

/// A key's own limit as a request gives it; [`rate_limit`] checks it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitBody {
    pub requests: u64,
    pub per_seconds: u64,
    pub burst: u64,
}

/// The bounds the config puts on limits (`requests` 1..=10^9, `per_seconds` up to a leap year,
/// `burst` up to 2^32 - 1), so an override can express what the config can.
pub fn rate_limit(field: &str, body: RateLimitBody) -> ServiceResult<RateLimit> {
    let checks = [
        ("requests", body.requests, 1_000_000_000),
        ("per_seconds", body.per_seconds, 86_400 * 366),
        ("burst", body.burst, u64::from(u32::MAX)),
    ];
    for (name, value, max) in checks {
        if !(1..=max).contains(&value) {
            return Err(ServiceError::invalid(
                format!("{field}.{name}"),
                format!("`{field}.{name}` must be between 1 and {max}"),
            ));
        }
    }
    Ok(RateLimit {
        requests: body.requests,
        per_seconds: body.per_seconds,
        burst: body.burst,
    })
}

/// A plan name: one of the config's `[plans.*]`.
pub fn plan(plans: &HashMap<String, Plan>, value: &str) -> ServiceResult<String> {
    if plans.contains_key(value) {
        return Ok(value.to_string());
    }
    let mut known: Vec<&str> = plans.keys().map(String::as_str).collect();
    known.sort_unstable();
    let known = if known.is_empty() {
        "none are configured".to_string()
    } else {
        format!("configured: {}", known.join(", "))
    };
    Err(ServiceError::invalid(
        "plan",
        format!("`plan`: unknown plan `{}` ({known})", value.escape_debug()),
    ))
}

/// A credit balance an operator sets: 0..=[`MAX_CREDITS`].
pub fn balance(field: &str, value: i64) -> ServiceResult<i64> {
    if value < 0 {
        return Err(ServiceError::invalid(
            field,
            format!("`{field}` must be at least 0"),
        ));
    }
    if value > MAX_CREDITS {
        return Err(ServiceError::invalid(
            field,
            format!("`{field}` must be at most {MAX_CREDITS}"),
        ));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(name("name", "  ok ").ok().as_deref(), Some("ok"));
        assert!(name("name", "   ").is_err());
        assert!(name("name", &"x".repeat(201)).is_err());
        assert!(name("name", &"é".repeat(200)).is_ok());
    }

    #[test]
    fn scopes_are_checked_and_deduplicated() {
        let ok = scopes(vec!["a:read".into(), "b".into(), "a:read".into()]);
        assert_eq!(ok.ok(), Some(vec!["a:read".to_string(), "b".to_string()]));
        let err = scopes(vec!["bad scope".into()])
            .err()
            .map(|e| e.to_string());
        assert!(err.is_some_and(|m| m.contains("bad scope") && m.contains("scopes")));
    }

    #[test]
    fn times() {
        assert_eq!(time("expires_at", "1970-01-01T00:01:00Z").ok(), Some(60));
        assert_eq!(
            time("expires_at", "1970-01-01T01:01:00+01:00").ok(),
            Some(60)
        );
        assert!(time("expires_at", "tomorrow").is_err());
    }

    #[test]
    fn rate_limits_name_the_bad_field() {
        let ok = RateLimitBody {
            requests: 10,
            per_seconds: 60,
            burst: 5,
        };
        assert_eq!(
            rate_limit("rate_limit", ok).ok(),
            Some(RateLimit {
                requests: 10,
                per_seconds: 60,
                burst: 5
            })
        );
        for (body, field) in [
            (RateLimitBody { requests: 0, ..ok }, "rate_limit.requests"),
            (
                RateLimitBody {
                    per_seconds: 0,
                    ..ok
                },
                "rate_limit.per_seconds",
            ),
            (RateLimitBody { burst: 0, ..ok }, "rate_limit.burst"),
            (
                RateLimitBody {
                    per_seconds: 86_400 * 400,
                    ..ok
                },
                "rate_limit.per_seconds",
            ),
        ] {
            let err = rate_limit("rate_limit", body).err().map(|e| e.to_string());
            assert!(err.is_some_and(|m| m.contains(field)), "{body:?}");
        }
    }

    #[test]
    fn plans_must_be_configured() {
        let mut plans = HashMap::new();
        plans.insert("pro".to_string(), Plan::default());
        assert_eq!(plan(&plans, "pro").ok().as_deref(), Some("pro"));
        let err = plan(&plans, "gold").err().map(|e| e.to_string());
        assert!(err.is_some_and(|m| m.contains("gold") && m.contains("pro")));
        assert!(plan(&HashMap::new(), "pro").is_err());
    }

    #[test]
    fn emails() {
        assert_eq!(
            email("  Ann.Lee+x@Example.COM ").ok().as_deref(),
            Some("ann.lee+x@example.com")
        );
        for bad in [
            "",
            "ann",
            "@x.com",
            "ann@",
            "a b@x.com",
            "ann@x..com",
            "ann@.x",
            "ann@x@y",
            "a\u{7}@x.com",
        ] {
            let e = email(bad).err().map(|e| e.to_string());
            assert!(e.is_some_and(|m| m.contains("`email`")), "{bad:?}");
        }
        assert!(email(&format!("{}@x.com", "a".repeat(250))).is_err());
    }

    #[test]
    fn resources_are_checked() {
        let mut ok = BTreeMap::new();
        ok.insert(
            "projects".to_string(),
            vec!["p1".into(), "p:2".into(), "p1".into()],
        );
        ok.insert("envs".to_string(), vec![]);
        let r = resources(ok).ok().unwrap_or_default();
        assert_eq!(r["projects"], ["p1", "p:2"]);
        assert!(r["envs"].is_empty());

        let mut bad_kind = BTreeMap::new();
        bad_kind.insert("my projects".to_string(), vec!["p1".to_string()]);
        let e = resources(bad_kind).err().map(|e| e.to_string());
        assert!(e.is_some_and(|m| m.contains("resources") && m.contains("my projects")));

        let mut bad_id = BTreeMap::new();
        bad_id.insert("projects".to_string(), vec!["p/1".to_string()]);
        let e = resources(bad_id).err().map(|e| e.to_string());
        assert!(e.is_some_and(|m| m.contains("resources.projects") && m.contains("p/1")));

        let mut long = BTreeMap::new();
        long.insert("k".to_string(), vec!["x".repeat(65)]);
        assert!(resources(long).is_err());
    }

    #[test]
    fn balances() {
        assert_eq!(balance("balance", 0).ok(), Some(0));
        assert!(balance("balance", -1).is_err());
        assert!(balance("balance", MAX_CREDITS + 1).is_err());
    }
}
