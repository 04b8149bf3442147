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

/// Control characters (Unicode `Cc`, what [`char::is_control`] matches), as a regex class body.
const CONTROL_CLASS: &str = r"\u0000-\u001f\u007f-\u009f";
/// Whitespace that is not a control character ([`char::is_whitespace`] minus `Cc`), spelled out
/// so the document's patterns mean exactly what the checks here do (`\s` differs by dialect).
const SPACE_CLASS: &str = r" \u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000";

/// [`name`]'s rule as an ECMA-262 pattern for the API document: no control character, at least
/// one character that is neither whitespace nor control.
pub fn name_pattern() -> String {
    format!("^[^{CONTROL_CLASS}]*[^{CONTROL_CLASS}{SPACE_CLASS}][^{CONTROL_CLASS}]*$")
}

/// The largest account or key metadata, as compact JSON: account metadata is read on every
/// local answer that places it, and key metadata rides with the key wherever it is read, so it
/// stays a small document, not a data store.
pub const MAX_METADATA_BYTES: usize = 16 * 1024;

/// Account or key metadata: any JSON object up to [`MAX_METADATA_BYTES`].
pub fn metadata(value: crate::store::Metadata) -> ServiceResult<crate::store::Metadata> {
    let size = serde_json::Value::Object(value.clone()).to_string().len();
    if size > MAX_METADATA_BYTES {
        return Err(ServiceError::invalid(
            "metadata",
            format!("`metadata` must be at most {MAX_METADATA_BYTES} bytes of JSON (is {size})"),
        ));
    }
    Ok(value)
}

/// A display name: at most [`MAX_NAME_CHARS`] characters as given, no control characters, not
/// blank. Returns it trimmed. (The length counts what was sent, as the document's `maxLength`
/// does.)
pub fn name(field: &str, value: &str) -> ServiceResult<String> {
    if value.chars().count() > MAX_NAME_CHARS {
        return Err(ServiceError::invalid(
            field,
            format!("`{field}` must be at most {MAX_NAME_CHARS} characters"),
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(ServiceError::invalid(
            field,
            format!("`{field}` must not contain control characters"),
        ));
    }
    let trimmed = value.trim();
    if trimmed.is_empty() {
        return Err(ServiceError::invalid(
            field,
            format!("`{field}` must not be empty"),
        ));
    }
    Ok(trimmed.to_string())
}

/// A scope as the document states it ([`valid_scope`]).
pub const SCOPE_PATTERN: &str = "^[A-Za-z0-9:._-]{1,64}$";
/// A resource kind or id as the document states it ([`valid_resource_name`]).
pub const RESOURCE_PATTERN: &str = "^[A-Za-z0-9_.:-]{1,64}$";

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

/// Every character [`str::trim`] removes ([`char::is_whitespace`]), as a regex class body.
const TRIMMED_CLASS: &str =
    r"\u0009-\u000d\u0085 \u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000";

/// [`email`]'s rule as an ECMA-262 pattern: `local@domain` (whitespace around it is trimmed),
/// the domain dot-separated labels, no whitespace, control characters or `<>,;` inside.
pub fn email_pattern() -> String {
    let atom = format!("[^{CONTROL_CLASS}{SPACE_CLASS}<>,;@]");
    let label = format!("[^{CONTROL_CLASS}{SPACE_CLASS}<>,;@.]");
    format!("^[{TRIMMED_CLASS}]*{atom}+@{label}+(\\.{label}+)*[{TRIMMED_CLASS}]*$")
}

/// An email address: `local@domain`, no whitespace or control characters or `<>,;` once
/// trimmed, at most [`MAX_EMAIL_CHARS`] as given (what the document's `maxLength` counts).
/// Returns it trimmed and lower-cased (as the store keeps it).
pub fn email(value: &str) -> ServiceResult<String> {
    let bad = |why: &str| ServiceError::invalid("email", format!("`email` {why}"));
    if value.chars().count() > MAX_EMAIL_CHARS {
        return Err(bad(&format!(
            "must be at most {MAX_EMAIL_CHARS} characters"
        )));
    }
    let email = value.trim();
    if email.is_empty() {
        return Err(bad("must not be empty"));
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
    Ok(normalize_email(email))
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

/// The largest integer a JSON number written with a fraction (`12.0`) stands for exactly.
const MAX_EXACT_FLOAT: f64 = 9_007_199_254_740_991.0;

/// For `#[serde(deserialize_with = "integer")]` on an integer field: JSON has one number type,
/// and JSON Schema's `integer` includes `12.0`, so an integral number written with a fraction is
/// taken (up to 2^53 - 1, where a double is exact); `12.5`, a number out of `T`'s range and
/// anything not a number are refused.
pub fn integer<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: TryFrom<i64> + TryFrom<u64>,
{
    let n = serde_json::Number::deserialize(d)?;
    let value = if let Some(i) = n.as_i64() {
        T::try_from(i).ok()
    } else if let Some(u) = n.as_u64() {
        T::try_from(u).ok()
    } else {
        n.as_f64()
            .filter(|f| f.fract() == 0.0 && f.abs() <= MAX_EXACT_FLOAT)
            .and_then(|f| T::try_from(f as i64).ok())
    };
    value.ok_or_else(|| serde::de::Error::custom(format!("expected an integer in range, got {n}")))
}

/// [`integer`] for an optional field that must not be null: absent is `None` (with
/// `#[serde(default)]`), `null` is refused.
pub fn some_integer<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: TryFrom<i64> + TryFrom<u64>,
{
    integer(d).map(Some)
}

pub const MAX_LIMIT_REQUESTS: u64 = 1_000_000_000;
pub const MAX_LIMIT_PER_SECONDS: u64 = 86_400 * 366;
pub const MAX_LIMIT_BURST: u64 = u32::MAX as u64;

/// A key's own limit as a request gives it: `requests` per `per_seconds`, bursts up to `burst`;
/// [`rate_limit`] checks the bounds its schema states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
#[serde(
    try_from = "serde_json::Map<String, serde_json::Value>",
    deny_unknown_fields
)]
pub struct RateLimitBody {
    #[schema(minimum = 1, maximum = 1_000_000_000)]
    pub requests: u64,
    #[schema(minimum = 1, maximum = 31_622_400)]
    pub per_seconds: u64,
    #[schema(minimum = 1, maximum = 4_294_967_295_u64)]
    pub burst: u64,
}

impl TryFrom<serde_json::Map<String, serde_json::Value>> for RateLimitBody {
    type Error = String;

    /// Read from a JSON object only (serde's derive would also take `[10, 60, 5]`, which the
    /// document does not allow); each field is an [`integer`], and the message names it.
    fn try_from(mut map: serde_json::Map<String, serde_json::Value>) -> Result<Self, String> {
        let mut field = |name: &str| -> Result<u64, String> {
            let value = map
                .remove(name)
                .ok_or_else(|| format!("missing field `{name}`"))?;
            integer::<_, u64>(value).map_err(|e| format!("{name}: {e}"))
        };
        let limit = Self {
            requests: field("requests")?,
            per_seconds: field("per_seconds")?,
            burst: field("burst")?,
        };
        if let Some(unknown) = map.keys().next() {
            return Err(format!(
                "unknown field `{}`, expected one of `requests`, `per_seconds`, `burst`",
                unknown.escape_debug()
            ));
        }
        Ok(limit)
    }
}

/// The bounds the config puts on limits (`requests` 1..=10^9, `per_seconds` up to a leap year,
/// `burst` up to 2^32 - 1), so an override can express what the config can.
pub fn rate_limit(field: &str, body: RateLimitBody) -> ServiceResult<RateLimit> {
    let checks = [
        ("requests", body.requests, MAX_LIMIT_REQUESTS),
        ("per_seconds", body.per_seconds, MAX_LIMIT_PER_SECONDS),
        ("burst", body.burst, MAX_LIMIT_BURST),
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

/// A credit adjustment: not zero, and no further from zero than [`MAX_CREDITS`] (no balance
/// could absorb more).
pub fn delta(field: &str, value: i64) -> ServiceResult<i64> {
    if value == 0 {
        return Err(ServiceError::invalid(
            field,
            format!("`{field}` must not be zero"),
        ));
    }
    if !(-MAX_CREDITS..=MAX_CREDITS).contains(&value) {
        return Err(ServiceError::invalid(
            field,
            format!("`{field}` must be between -{MAX_CREDITS} and {MAX_CREDITS}"),
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
        assert!(name("name", "\u{3000}\u{a0}").is_err());
        assert!(name("name", "a\u{85}b").is_err());
        assert!(name("name", &"x".repeat(201)).is_err());
        assert!(name("name", &format!(" {} ", "x".repeat(199))).is_err());
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
            email("  Ann.Lee+x@Example.COM \t").ok().as_deref(),
            Some("ann.lee+x@example.com")
        );
        for bad in [
            "",
            "  ",
            &format!(" {}@x.com", "a".repeat(248)),
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
    fn integers_may_be_written_with_a_zero_fraction() {
        #[derive(Debug, Deserialize)]
        struct N {
            #[serde(deserialize_with = "integer")]
            n: i64,
        }
        let n = |json: &str| serde_json::from_str::<N>(json).map(|v| v.n).ok();
        assert_eq!(n(r#"{"n":12}"#), Some(12));
        assert_eq!(n(r#"{"n":-12.0}"#), Some(-12));
        assert_eq!(
            n(r#"{"n":9007199254740991.0}"#),
            Some(9_007_199_254_740_991)
        );
        assert_eq!(n(r#"{"n":9223372036854775807}"#), Some(i64::MAX));
        for bad in [
            r#"{"n":12.5}"#,
            r#"{"n":1e300}"#,
            r#"{"n":9223372036854775808}"#,
            r#"{"n":"12"}"#,
            r#"{"n":null}"#,
        ] {
            assert_eq!(n(bad), None, "{bad}");
        }
        let rate = |json: &str| serde_json::from_str::<RateLimitBody>(json);
        assert!(rate(r#"{"requests":10.0,"per_seconds":60,"burst":-1}"#).is_err());
        assert!(rate(r#"[10,60,5]"#).is_err());
        assert!(rate(r#"{"requests":10,"per_seconds":60,"burst":5,"x":1}"#).is_err());
        assert_eq!(
            rate(r#"{"requests":10.0,"per_seconds":60,"burst":5}"#).ok(),
            Some(RateLimitBody {
                requests: 10,
                per_seconds: 60,
                burst: 5
            })
        );
    }

    #[test]
    fn balances() {
        assert_eq!(balance("balance", 0).ok(), Some(0));
        assert!(balance("balance", -1).is_err());
        assert!(balance("balance", MAX_CREDITS + 1).is_err());
        assert_eq!(delta("delta", -MAX_CREDITS).ok(), Some(-MAX_CREDITS));
        for bad in [0, MAX_CREDITS + 1, -MAX_CREDITS - 1, i64::MIN] {
            assert!(delta("delta", bad).is_err(), "{bad}");
        }
    }
}
