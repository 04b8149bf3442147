//! The decision for a known key: status, expiry, account, permission, scopes.
//!
//! Pure functions over the cached credential and the route, so every rule is unit-tested without
//! sockets. The order is the order a user would want the reasons reported: a revoked key says
//! "revoked" even if its account is also suspended.

use crate::cache::Facts;
use crate::config::{Route, RoutePermission};
use crate::errors::{Detail, Reason};
use crate::store::{AccountStatus, KeyStatus, Permission, Role, UserStatus};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub reason: Reason,
    pub detail: Detail,
    /// The bucket that refused a rate-limited request (for `Retry-After` and `RateLimit-*`).
    pub rate: Option<crate::ratelimit::RateStatus>,
}

impl Rejection {
    pub fn new(reason: Reason) -> Self {
        Self {
            reason,
            detail: Detail::default(),
            rate: None,
        }
    }
}

impl Rejection {
    /// A rejection whose body says exactly what was wrong (e.g. which field).
    pub fn with_message(reason: Reason, message: impl Into<String>) -> Self {
        Self {
            reason,
            detail: Detail {
                scope: None,
                message: Some(message.into()),
            },
            rate: None,
        }
    }
}

impl From<Reason> for Rejection {
    fn from(reason: Reason) -> Self {
        Self::new(reason)
    }
}

/// What a route needs from the key for this method: its own setting, else read for safe methods
/// and write for the rest.
pub fn required_permission(route: &Route, method: &str) -> RoutePermission {
    route.permission.unwrap_or(match method {
        "GET" | "HEAD" | "OPTIONS" => RoutePermission::Read,
        _ => RoutePermission::Write,
    })
}

/// The key's permission narrowed by its user's role: a read-only user's keys only read, whatever
/// they were created with (Enkryptify: effective permission = token ∩ role).
pub fn effective_permission(c: &Facts) -> Permission {
    match c.user.as_ref().and_then(|u| u.role()) {
        Some(Role::ReadOnly) => Permission::Read,
        _ => c.key.permission,
    }
}

pub fn permission_name(p: Permission) -> &'static str {
    match p {
        Permission::Read => "read",
        Permission::ReadWrite => "read_write",
    }
}

pub fn parse_permission(s: &str) -> Option<Permission> {
    match s {
        "read" => Some(Permission::Read),
        "read_write" => Some(Permission::ReadWrite),
        _ => None,
    }
}

/// Path parameters the route names as resources must be among the key's allowed ids for that
/// kind; a kind the key does not restrict is open to it.
pub fn check_resources(
    c: &Facts,
    route: &Route,
    param: impl Fn(&str) -> Option<String>,
) -> Result<(), Rejection> {
    let Some(allowed) = c.key.resources.as_ref() else {
        return Ok(());
    };
    for (name, kind) in &route.resources {
        let Some(ids) = allowed.get(kind) else {
            continue;
        };
        match param(name) {
            Some(value) if ids.contains(&value) => {}
            _ => return Err(Reason::ResourceForbidden.into()),
        }
    }
    Ok(())
}

pub fn authorize(c: &Facts, route: &Route, method: &str, now: i64) -> Result<(), Rejection> {
    match c.key.status {
        KeyStatus::Active => {}
        KeyStatus::Revoked => return Err(Reason::KeyRevoked.into()),
        KeyStatus::Disabled => return Err(Reason::KeyDisabled.into()),
    }
    if c.key.expires_at.is_some_and(|exp| exp <= now) {
        return Err(Reason::KeyExpired.into());
    }
    match c.account.status {
        AccountStatus::Active => {}
        AccountStatus::Suspended => return Err(Reason::AccountSuspended.into()),
        AccountStatus::Deleted => return Err(Reason::AccountMissing.into()),
    }
    if c.user
        .as_ref()
        .is_some_and(|u| u.status() == Some(UserStatus::Disabled))
    {
        return Err(Reason::KeyDisabled.into());
    }
    if required_permission(route, method) == RoutePermission::Write
        && effective_permission(c) == Permission::Read
    {
        return Err(Reason::ReadOnlyKey.into());
    }
    if let Some(missing) = route.scopes.iter().find(|s| !c.key.scopes.contains(s)) {
        return Err(Rejection {
            reason: Reason::InsufficientScope,
            detail: Detail {
                scope: Some(missing.clone()),
                message: None,
            },
            rate: None,
        });
    }
    Ok(())
}

/// A read-only credential may not carry a `_method` query parameter: Rails, Laravel and Symfony
/// read it as the request's method, so `GET /x?_method=DELETE` would be a delete to them.
/// Refused rather than stripped, as rewriting the query could change what the upstream reads.
pub fn check_method_parameter(c: &Facts, query: Option<&str>) -> Result<(), Rejection> {
    if effective_permission(c) == Permission::Read && query.is_some_and(has_method_parameter) {
        return Err(Reason::ReadOnlyKey.into());
    }
    Ok(())
}

/// Whether the query has a parameter a framework could read as `_method`: the name is
/// percent-decoded (`%5Fmethod`, `+` as a space) and compared case-insensitively, and a leading
/// `.`, space or `[` counts as `_`, since PHP rewrites those to `_` in parameter names.
pub fn has_method_parameter(query: &str) -> bool {
    query.split(['&', ';']).any(|pair| {
        let name = pair.split('=').next().unwrap_or(pair);
        let mut decoded = PercentDecoded::new(name.as_bytes());
        let leading = decoded.next();
        matches!(leading, Some(b'_' | b'.' | b' ' | b'['))
            && decoded.map(|b| b.to_ascii_lowercase()).eq(*b"method")
    })
}

/// Bytes of a query component, percent-escapes and `+` decoded; a malformed escape stays as it
/// is. An iterator, so a long parameter name is never copied.
struct PercentDecoded<'a> {
    rest: &'a [u8],
}

impl<'a> PercentDecoded<'a> {
    fn new(rest: &'a [u8]) -> Self {
        Self { rest }
    }
}

impl Iterator for PercentDecoded<'_> {
    type Item = u8;

    fn next(&mut self) -> Option<u8> {
        let (&first, rest) = self.rest.split_first()?;
        self.rest = rest;
        match first {
            b'+' => Some(b' '),
            b'%' => {
                let hex = |b: u8| char::from(b).to_digit(16);
                match rest {
                    [hi, lo, tail @ ..] => match (hex(*hi), hex(*lo)) {
                        (Some(hi), Some(lo)) => {
                            self.rest = tail;
                            u8::try_from(hi * 16 + lo).ok()
                        }
                        _ => Some(b'%'),
                    },
                    _ => Some(b'%'),
                }
            }
            b => Some(b),
        }
    }
}

#[cfg(test)]
#[path = "authz_tests.rs"]
mod tests;
