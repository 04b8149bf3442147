//! What the admin API returns: stored records as JSON with RFC 3339 times. No view carries a key
//! hash; only [`CreatedKey`] carries a plaintext, once.

use chrono::{DateTime, SecondsFormat};
use serde::Serialize;
use utoipa::ToSchema;

use crate::store::{
    Account, AccountStatus, AuditEntry, KeyRecord, KeyStatus, LedgerEntry, Page, Permission,
    RateLimit, Resources, Role, User, UserStatus,
};

/// Unix seconds as RFC 3339 UTC (`2025-01-02T03:04:05Z`).
pub fn rfc3339(secs: i64) -> Option<String> {
    DateTime::from_timestamp(secs, 0).map(|t| t.to_rfc3339_opts(SecondsFormat::Secs, true))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AccountView {
    pub id: String,
    pub name: String,
    pub status: AccountStatus,
    pub plan: Option<String>,
    pub credits: i64,
    #[schema(format = DateTime)]
    pub created_at: Option<String>,
    /// The operator's JSON object for local endpoints' templates; `{}` when never set.
    #[schema(value_type = Object)]
    pub metadata: crate::store::Metadata,
}

impl From<Account> for AccountView {
    fn from(a: Account) -> Self {
        Self {
            id: a.id,
            name: a.name,
            status: a.status,
            plan: a.plan,
            credits: a.credits,
            created_at: rfc3339(a.created_at),
            metadata: a.metadata,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct KeyView {
    pub id: String,
    pub account_id: String,
    pub user_id: Option<String>,
    pub name: String,
    pub display_prefix: String,
    pub scopes: Vec<String>,
    pub permission: Permission,
    pub status: KeyStatus,
    /// The key's own limit (`{"requests","per_seconds","burst"}`), or null.
    pub rate_limit: Option<RateLimit>,
    /// Resource kind -> allowed ids, or null (unrestricted).
    pub resources: Option<Resources>,
    /// The key this one replaced, for a key made by a rotation.
    pub rotated_from: Option<String>,
    #[schema(format = DateTime)]
    pub created_at: Option<String>,
    #[schema(format = DateTime)]
    pub expires_at: Option<String>,
    #[schema(format = DateTime)]
    pub last_used_at: Option<String>,
    /// The operator's JSON object about the key; `{}` when never set.
    #[schema(value_type = Object)]
    pub metadata: crate::store::Metadata,
}

impl From<KeyRecord> for KeyView {
    fn from(k: KeyRecord) -> Self {
        Self {
            id: k.id,
            account_id: k.account_id,
            user_id: k.user_id,
            name: k.name,
            display_prefix: k.display_prefix,
            scopes: k.scopes,
            permission: k.permission,
            status: k.status,
            rate_limit: k.rate_limit,
            resources: k.resources,
            rotated_from: k.rotated_from,
            created_at: rfc3339(k.created_at),
            expires_at: k.expires_at.and_then(rfc3339),
            last_used_at: k.last_used_at.and_then(rfc3339),
            metadata: k.metadata,
        }
    }
}

/// The create-key response: the plaintext, shown this once, then the key view.
#[derive(Serialize, ToSchema)]
pub struct CreatedKey {
    /// The plaintext key, shown this once.
    pub key: String,
    #[serde(flatten)]
    pub view: KeyView,
}

/// The rotate-key response: the new key's plaintext (shown this once) and view, and the old key
/// as the rotation left it.
#[derive(Serialize, ToSchema)]
pub struct RotatedKey {
    /// The new key's plaintext, shown this once.
    pub key: String,
    #[serde(flatten)]
    pub view: KeyView,
    pub old: KeyView,
}

/// A user; never its password or hash.
#[derive(Debug, Serialize, ToSchema)]
pub struct UserView {
    pub id: String,
    pub account_id: String,
    pub email: String,
    pub role: Role,
    pub status: UserStatus,
    #[schema(format = DateTime)]
    pub created_at: Option<String>,
}

impl From<User> for UserView {
    fn from(u: User) -> Self {
        Self {
            id: u.id,
            account_id: u.account_id,
            email: u.email,
            role: u.role,
            status: u.status,
            created_at: rfc3339(u.created_at),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UserList {
    pub users: Vec<UserView>,
    /// Pass as `after` for the next page; null on the last page.
    pub next: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AuditView {
    pub id: i64,
    #[schema(format = DateTime)]
    pub at: Option<String>,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub detail: String,
}

impl From<AuditEntry> for AuditView {
    fn from(e: AuditEntry) -> Self {
        Self {
            id: e.id,
            at: rfc3339(e.at),
            actor: e.actor,
            action: e.action,
            target: e.target,
            detail: e.detail,
        }
    }
}

/// `{"balance": n}`: the credits endpoints' answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct Balance {
    #[schema(minimum = 0, maximum = 9_007_199_254_740_991_i64)]
    pub balance: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TransactionView {
    pub id: i64,
    pub delta: i64,
    pub reason: String,
    pub key_id: Option<String>,
    pub balance_after: i64,
    #[schema(format = DateTime)]
    pub created_at: Option<String>,
}

impl From<LedgerEntry> for TransactionView {
    fn from(e: LedgerEntry) -> Self {
        Self {
            id: e.id,
            delta: e.delta,
            reason: e.reason,
            key_id: e.key_id,
            balance_after: e.balance_after,
            created_at: rfc3339(e.at),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TransactionList {
    pub transactions: Vec<TransactionView>,
    /// Pass as `after` for the next page; null on the last page.
    pub next: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AccountList {
    pub accounts: Vec<AccountView>,
    /// Pass as `after` for the next page; null on the last page.
    pub next: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct KeyList {
    pub keys: Vec<KeyView>,
    /// Pass as `after` for the next page; null on the last page.
    pub next: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AuditList {
    pub entries: Vec<AuditView>,
}

/// The cursor for the next page: the last id when the page came back full.
pub fn next_cursor(page: &Page, len: usize, last_id: Option<&str>) -> Option<String> {
    if len >= page.limit() as usize {
        last_id.map(str::to_string)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_utc_rfc3339() {
        assert_eq!(rfc3339(0).as_deref(), Some("1970-01-01T00:00:00Z"));
        assert_eq!(
            rfc3339(1_700_000_000).as_deref(),
            Some("2023-11-14T22:13:20Z")
        );
    }

    #[test]
    fn next_is_set_only_for_a_full_page() {
        let page = Page {
            after: None,
            limit: 2,
        };
        assert_eq!(next_cursor(&page, 2, Some("b")), Some("b".into()));
        assert_eq!(next_cursor(&page, 1, Some("a")), None);
    }
}
