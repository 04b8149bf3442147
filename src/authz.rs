//! The decision for a known key: status, expiry, account, permission, scopes.
//!
//! Pure functions over the cached credential and the route, so every rule is unit-tested without
//! sockets. The order is the order a user would want the reasons reported: a revoked key says
//! "revoked" even if its account is also suspended.

use crate::config::{Route, RoutePermission};
use crate::errors::{Detail, Reason};
use crate::store::{AccountStatus, Credential, KeyStatus, Permission, Role, UserStatus};

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
pub fn effective_permission(c: &Credential) -> Permission {
    match c.user.as_ref().map(|u| u.role) {
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
    c: &Credential,
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

pub fn authorize(c: &Credential, route: &Route, method: &str, now: i64) -> Result<(), Rejection> {
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
        .is_some_and(|u| u.status == UserStatus::Disabled)
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

#[cfg(test)]
#[path = "authz_tests.rs"]
mod tests;
