//! Persistent state behind one [`Store`], so the embedded SQLite store and the shared Redis store
//! behave the same (one conformance suite, `tests/store_conformance/`, runs against every
//! implementation). `Store` is the sum of narrow traits split by consumer (see [`Store`]), so a
//! consumer that needs three methods, and its test double, name only those three.
//!
//! Times are Unix seconds (UTC). Key hashes are the 32-byte HMAC from [`crate::keys`]; no
//! plaintext key ever reaches a store.

mod import;
mod metered;
pub mod redis;
pub mod sqlite;
mod sqlite_pool;
mod traits;

pub use import::ImportOutcome;
pub use metered::MeteredStore;

pub use traits::{Audit, CredentialReads, Credits, Directory, Store};

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::keys::KeyHash;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The backend could not be reached or failed; callers answer 503, never fail open.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The backend did not answer within its configured timeout. Like `Unavailable`, but not
    /// worth an immediate retry: a hung backend would only cost the caller the timeout twice.
    #[error("store did not answer in time")]
    TimedOut,
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("conflict: {0}")]
    Conflict(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AccountStatus {
    Active,
    Suspended,
    /// Soft-deleted: kept so its keys answer `account_missing` rather than `invalid_key`.
    Deleted,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    pub id: String,
    pub name: String,
    pub status: AccountStatus,
    pub created_at: i64,
    /// The config plan whose limits apply (`None`: the routes' own limits).
    pub plan: Option<String>,
    /// The credit balance; never below zero, at most [`MAX_CREDITS`].
    pub credits: i64,
    /// The operator's JSON object about the account (webhooks, ...), placed by local endpoints'
    /// body templates (`{metadata.webhooks}`). Empty when never set.
    #[serde(default)]
    pub metadata: Metadata,
}

/// An account's or a key's metadata: a JSON object.
pub type Metadata = serde_json::Map<String, serde_json::Value>;

/// A token-bucket limit: `requests` per `per_seconds`, with bursts up to `burst`. (Its schema
/// is the admin API's; the bounds are checked in `keyservice::validate::rate_limit`.)
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RateLimit {
    pub requests: u64,
    pub per_seconds: u64,
    pub burst: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum KeyStatus {
    Active,
    Disabled,
    Revoked,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Permission {
    Read,
    ReadWrite,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRecord {
    pub id: String,
    pub account_id: String,
    pub user_id: Option<String>,
    pub name: String,
    /// Prefix plus the first body characters, for lists (`ee_live_abc123`).
    pub display_prefix: String,
    #[serde(skip)]
    pub hash: KeyHash,
    pub scopes: Vec<String>,
    pub permission: Permission,
    pub status: KeyStatus,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub last_used_at: Option<i64>,
    /// The key's own limit, over its account's plan and the route's.
    pub rate_limit: Option<RateLimit>,
    /// The resources the key may reach, by kind (`{"projects": ["p1"]}`); `None`: unrestricted.
    pub resources: Option<Resources>,
    /// The key this one replaced ([`Directory::rotate_key`]); `None` for ordinary keys.
    pub rotated_from: Option<String>,
    /// The operator's JSON object about the key (a customer reference, where it came from...);
    /// keygate stores and returns it, and decides nothing by it. Empty when never set.
    #[serde(default)]
    pub metadata: Metadata,
}

/// Resource kind -> the ids of that kind a key may reach.
pub type Resources = BTreeMap<String, Vec<String>>;

/// What the request path needs to decide: the key, its account and (for a key that belongs to
/// a user) the user, read together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential {
    pub key: KeyRecord,
    pub account: Account,
    /// Filled when the key has a `user_id` and that user exists; `None` otherwise (also for a
    /// `user_id` that names no stored user).
    pub user: Option<User>,
}

/// A user's role in its account; a key's effective permission is the key's ∩ its user's role.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Owner,
    Admin,
    Member,
    ReadOnly,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum UserStatus {
    Active,
    Disabled,
}

/// A person who logs in. The password hash is deliberately not here: only
/// [`Directory::find_user_by_email`] reads it, for login.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    pub id: String,
    pub account_id: String,
    /// Stored lower-cased; unique across all accounts.
    pub email: String,
    pub role: Role,
    pub status: UserStatus,
    pub created_at: i64,
}

#[derive(Clone)]
pub struct NewUser {
    pub account_id: String,
    /// Lower-cased by the store.
    pub email: String,
    /// An argon2id PHC string from [`crate::passwords::hash`].
    pub password_hash: String,
    pub role: Role,
}

impl std::fmt::Debug for NewUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewUser")
            .field("account_id", &self.account_id)
            .field("email", &self.email)
            .field("password_hash", &"***")
            .field("role", &self.role)
            .finish()
    }
}

/// A partial update of a user; `None` leaves a field as it is.
#[derive(Clone, Default)]
pub struct UserPatch {
    pub role: Option<Role>,
    pub status: Option<UserStatus>,
    /// A new argon2id PHC string.
    pub password_hash: Option<String>,
}

impl std::fmt::Debug for UserPatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserPatch")
            .field("role", &self.role)
            .field("status", &self.status)
            .field("password_hash", &self.password_hash.as_ref().map(|_| "***"))
            .finish()
    }
}

/// Emails are compared and stored lower-cased (and trimmed).
pub fn normalize_email(email: &str) -> String {
    email.trim().to_lowercase()
}

impl NewUser {
    /// The user as every backend first stores it: a fresh id, active.
    fn into_user(self) -> (User, String) {
        (
            User {
                id: crate::keys::new_id("usr"),
                account_id: self.account_id,
                email: normalize_email(&self.email),
                role: self.role,
                status: UserStatus::Active,
                created_at: now(),
            },
            self.password_hash,
        )
    }
}

#[derive(Debug, Clone)]
pub struct NewAccount {
    pub name: String,
    pub metadata: Metadata,
}

#[derive(Debug, Clone)]
pub struct NewKey {
    pub account_id: String,
    pub user_id: Option<String>,
    pub name: String,
    pub display_prefix: String,
    pub hash: KeyHash,
    pub scopes: Vec<String>,
    pub permission: Permission,
    pub expires_at: Option<i64>,
    pub rate_limit: Option<RateLimit>,
    pub resources: Option<Resources>,
    /// Set by [`Directory::rotate_key`] (to the old key's id) whatever is given here.
    pub rotated_from: Option<String>,
    pub metadata: Metadata,
}

impl NewKey {
    /// The record as every backend first stores it: a fresh id, active, never used.
    pub fn into_record(self) -> KeyRecord {
        KeyRecord {
            id: crate::keys::new_id("key"),
            account_id: self.account_id,
            user_id: self.user_id,
            name: self.name,
            display_prefix: self.display_prefix,
            hash: self.hash,
            scopes: self.scopes,
            permission: self.permission,
            status: KeyStatus::Active,
            created_at: now(),
            expires_at: self.expires_at,
            last_used_at: None,
            rate_limit: self.rate_limit,
            resources: self.resources,
            rotated_from: self.rotated_from,
            metadata: self.metadata,
        }
    }
}

/// A partial update of a key; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct KeyPatch {
    pub name: Option<String>,
    pub status: Option<KeyStatus>,
    pub scopes: Option<Vec<String>>,
    /// `Some(None)` clears the expiry.
    pub expires_at: Option<Option<i64>>,
    /// `Some(None)` clears the key's own limit.
    pub rate_limit: Option<Option<RateLimit>>,
    /// `Some(None)` lifts the resource restriction.
    pub resources: Option<Option<Resources>>,
    /// Replaces the metadata whole (`Some` of an empty object clears it).
    pub metadata: Option<Metadata>,
}

/// The old key's expiry after a rotation: the earlier of its own and the grace end.
fn rotated_expiry(current: Option<i64>, grace_end: Option<i64>) -> Option<i64> {
    match (current, grace_end) {
        (Some(c), Some(g)) => Some(c.min(g)),
        (c, None) => c,
        (None, g) => g,
    }
}

/// One change of an account's credit balance, with the balance right after it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerEntry {
    /// Grows with every entry of the account (not unique across accounts).
    pub id: i64,
    pub account_id: String,
    pub delta: i64,
    pub reason: String,
    pub key_id: Option<String>,
    pub at: i64,
    pub balance_after: i64,
}

/// What [`Credits::charge_credits`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChargeOutcome {
    /// Debited; `balance` is what is left.
    Charged { balance: i64 },
    /// Nothing was debited: the balance is short of the amount.
    Insufficient { balance: i64 },
}

/// The largest balance (2^53 - 1): every balance and delta is then exact as a JSON number and
/// in Redis' Lua (doubles). Changes that would pass it are refused.
pub const MAX_CREDITS: i64 = (1 << 53) - 1;

/// A charge amount must be positive.
fn check_charge(amount: i64) -> StoreResult<()> {
    if amount <= 0 {
        return Err(StoreError::Conflict(
            "a charge must be a positive amount".into(),
        ));
    }
    Ok(())
}

/// A delta must be non-zero and, either way, no larger than [`MAX_CREDITS`] (a larger one would
/// take any balance below zero or above the maximum).
fn check_delta(delta: i64) -> StoreResult<()> {
    if delta == 0 {
        return Err(StoreError::Conflict(
            "a credit change must not be zero".into(),
        ));
    }
    if delta > MAX_CREDITS {
        return Err(over_max());
    }
    if delta < -MAX_CREDITS {
        return Err(below_zero());
    }
    Ok(())
}

fn check_balance(balance: i64) -> StoreResult<()> {
    if balance < 0 {
        return Err(below_zero());
    }
    if balance > MAX_CREDITS {
        return Err(over_max());
    }
    Ok(())
}

fn below_zero() -> StoreError {
    StoreError::Conflict("the credit balance cannot go below zero".into())
}

fn over_max() -> StoreError {
    StoreError::Conflict(format!("the credit balance cannot exceed {MAX_CREDITS}"))
}

/// `page.after` for ledgers: the id of the last entry seen.
fn ledger_after(page: &Page) -> StoreResult<i64> {
    match page.after.as_deref() {
        None | Some("") => Ok(0),
        Some(a) => a
            .parse::<i64>()
            .map_err(|_| StoreError::Conflict(format!("`{a}` is not a ledger entry id"))),
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub id: i64,
    pub at: i64,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub detail: String,
}

#[derive(Debug, Clone)]
pub struct NewAudit {
    pub actor: String,
    pub action: String,
    pub target: String,
    pub detail: String,
}

/// Paging for lists: ids sort with creation, so `after` is the last id of the previous page.
#[derive(Debug, Clone, Default)]
pub struct Page {
    pub after: Option<String>,
    pub limit: u32,
}

impl Page {
    pub fn limit(&self) -> u32 {
        if self.limit == 0 {
            100
        } else {
            self.limit.min(1000)
        }
    }
}

/// Unix seconds. Read on every authenticated request, so straight from the system clock rather
/// than through a calendar type.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}
