//! Audit entries: who changed what. An operator is recorded as [`OPERATOR`], a user by their id.

use super::Actor;
use crate::store::{
    AccountStatus, KeyStatus, Metadata, NewAudit, Permission, RateLimit, Resources, Role, Store,
    UserStatus,
};

/// The actor name of the admin token (the only identity it represents).
pub const OPERATOR: &str = "admin";

impl Actor {
    /// The `actor` of the audit entries this actor's changes write.
    pub fn audit_name(&self) -> &str {
        match self {
            Actor::Operator => OPERATOR,
            Actor::User { user_id, .. } => user_id,
        }
    }
}

pub(super) async fn record(
    store: &dyn Store,
    actor: &Actor,
    action: &str,
    target: &str,
    detail: String,
) {
    let entry = NewAudit {
        actor: actor.audit_name().to_string(),
        action: action.to_string(),
        target: target.to_string(),
        detail,
    };
    if let Err(e) = store.append_audit(entry).await {
        tracing::error!(error = %e, actor = actor.audit_name(), action, target, "audit entry was not written");
    }
}

// How values read in audit details (stable text: operators grep the log for it).

/// An RFC 3339 time, or `never`.
pub(super) fn time_str(t: Option<i64>) -> String {
    t.and_then(|t| chrono::DateTime::from_timestamp(t, 0))
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_else(|| "never".into())
}

/// `10/60s burst=20`, or `none`.
pub(super) fn limit_str(l: Option<RateLimit>) -> String {
    match l {
        Some(l) => format!("{}/{}s burst={}", l.requests, l.per_seconds, l.burst),
        None => "none".to_string(),
    }
}

/// `projects=[p1,p2] envs=[]`, `{}` for no resources at all, or `none` (unrestricted).
pub(super) fn resources_str(r: Option<&Resources>) -> String {
    match r {
        Some(r) if r.is_empty() => "{}".to_string(),
        Some(r) => r
            .iter()
            .map(|(kind, ids)| format!("{kind}=[{}]", ids.join(",")))
            .collect::<Vec<_>>()
            .join(" "),
        None => "none".to_string(),
    }
}

/// The metadata's field names, `[customer,source]` (`[]` for none): its values are the
/// operator's business, kept out of the audit log.
pub(super) fn metadata_str(m: &Metadata) -> String {
    format!(
        "[{}]",
        m.keys().map(String::as_str).collect::<Vec<_>>().join(",")
    )
}

pub(super) fn permission_str(p: Permission) -> &'static str {
    match p {
        Permission::Read => "read",
        Permission::ReadWrite => "read_write",
    }
}

pub(super) fn key_status_str(s: KeyStatus) -> &'static str {
    match s {
        KeyStatus::Active => "active",
        KeyStatus::Disabled => "disabled",
        KeyStatus::Revoked => "revoked",
    }
}

pub(super) fn role_str(r: Role) -> &'static str {
    match r {
        Role::Owner => "owner",
        Role::Admin => "admin",
        Role::Member => "member",
        Role::ReadOnly => "read_only",
    }
}

pub(super) fn user_status_str(s: UserStatus) -> &'static str {
    match s {
        UserStatus::Active => "active",
        UserStatus::Disabled => "disabled",
    }
}

pub(super) fn account_status_str(s: AccountStatus) -> &'static str {
    match s {
        AccountStatus::Active => "active",
        AccountStatus::Suspended => "suspended",
        AccountStatus::Deleted => "deleted",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn details_read_as_before() {
        assert_eq!(
            resources_str(Some(&Resources::from([(
                "projects".to_string(),
                vec!["a".to_string(), "b".to_string()]
            )]))),
            "projects=[a,b]"
        );
        assert_eq!(resources_str(Some(&Resources::new())), "{}");
        assert_eq!(resources_str(None), "none");
        assert_eq!(time_str(Some(60)), "1970-01-01T00:01:00Z");
        assert_eq!(time_str(None), "never");
        let user = Actor::User {
            user_id: "usr_1".into(),
            account_id: "acc_1".into(),
        };
        assert_eq!(user.audit_name(), "usr_1");
        assert_eq!(Actor::Operator.audit_name(), OPERATOR);
    }
}
