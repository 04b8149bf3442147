//! Persistent state behind one trait, so the embedded SQLite store and the shared Redis store
//! behave the same (one conformance suite runs against every implementation).
//!
//! Times are Unix seconds (UTC). Key hashes are the 32-byte HMAC from [`crate::keys`]; no
//! plaintext key ever reaches a store.

pub mod redis;
pub mod sqlite;

use std::collections::BTreeMap;

use async_trait::async_trait;
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
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
}

/// A token-bucket limit: `requests` per `per_seconds`, with bursts up to `burst`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RateLimit {
    pub requests: u64,
    pub per_seconds: u64,
    pub burst: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyStatus {
    Active,
    Disabled,
    Revoked,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
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
    /// The key this one replaced ([`Store::rotate_key`]); `None` for ordinary keys.
    pub rotated_from: Option<String>,
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
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Owner,
    Admin,
    Member,
    ReadOnly,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum UserStatus {
    Active,
    Disabled,
}

/// A person who logs in. The password hash is deliberately not here: only
/// [`Store::find_user_by_email`] reads it, for login.
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
    /// Set by [`Store::rotate_key`] (to the old key's id) whatever is given here.
    pub rotated_from: Option<String>,
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

/// What [`Store::charge_credits`] did.
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

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Cheap reachability check for `/readyz`.
    async fn ping(&self) -> StoreResult<()>;

    async fn create_account(&self, new: NewAccount) -> StoreResult<Account>;
    async fn get_account(&self, id: &str) -> StoreResult<Option<Account>>;
    async fn list_accounts(&self, page: &Page) -> StoreResult<Vec<Account>>;
    async fn set_account_status(&self, id: &str, status: AccountStatus) -> StoreResult<Account>;
    /// Puts the account on a plan (`None`, or an empty name: no plan). NotFound if the account
    /// is missing.
    async fn set_account_plan(&self, id: &str, plan: Option<String>) -> StoreResult<Account>;

    /// Debits `amount` (> 0) if the balance covers it, with a ledger entry; otherwise changes
    /// nothing and answers `Insufficient`. Atomic: the balance never goes below zero, whatever
    /// the concurrency. NotFound if the account is missing.
    async fn charge_credits(
        &self,
        account_id: &str,
        amount: i64,
        key_id: Option<&str>,
        reason: &str,
    ) -> StoreResult<ChargeOutcome>;
    /// Adds `delta` (non-zero; top-ups and refunds are positive) with a ledger entry and returns
    /// the new balance. Conflict if it would go below zero or above [`MAX_CREDITS`].
    async fn adjust_credits(
        &self,
        account_id: &str,
        delta: i64,
        key_id: Option<&str>,
        reason: &str,
    ) -> StoreResult<i64>;
    /// Sets the balance (0..=[`MAX_CREDITS`], else Conflict); the ledger entry's delta is the
    /// difference (no entry when the balance does not change).
    async fn set_credits(&self, account_id: &str, balance: i64, reason: &str) -> StoreResult<i64>;
    /// The account's ledger, oldest first; `page.after` is the last entry id seen (as a string).
    /// NotFound if the account is missing.
    async fn list_ledger(&self, account_id: &str, page: &Page) -> StoreResult<Vec<LedgerEntry>>;

    async fn create_key(&self, new: NewKey) -> StoreResult<KeyRecord>;
    async fn get_key(&self, id: &str) -> StoreResult<Option<KeyRecord>>;
    async fn list_keys(&self, account_id: Option<&str>, page: &Page)
        -> StoreResult<Vec<KeyRecord>>;
    async fn update_key(&self, id: &str, patch: KeyPatch) -> StoreResult<KeyRecord>;
    /// Creates `new` as the successor of key `id` (its `rotated_from` is set to `id`) and, when
    /// `old_expires_at` is given, moves the old key's expiry to the earlier of its own and that
    /// time; otherwise the old key stays as it is (it works until revoked). Returns (new key,
    /// old key after). NotFound if the old key is missing, Conflict if it is revoked or `new`
    /// names another account.
    async fn rotate_key(
        &self,
        id: &str,
        new: NewKey,
        old_expires_at: Option<i64>,
    ) -> StoreResult<(KeyRecord, KeyRecord)>;

    /// NotFound("account") if the account is missing; Conflict if the email (compared
    /// case-insensitively) is taken, in any account.
    async fn create_user(&self, new: NewUser) -> StoreResult<User>;
    async fn get_user(&self, id: &str) -> StoreResult<Option<User>>;
    /// The user and its password hash, for login. The email is compared case-insensitively.
    async fn find_user_by_email(&self, email: &str) -> StoreResult<Option<(User, String)>>;
    /// Users in creation order, optionally of one account.
    async fn list_users(&self, account_id: Option<&str>, page: &Page) -> StoreResult<Vec<User>>;
    /// NotFound("user") if the user is missing.
    async fn update_user(&self, id: &str, patch: UserPatch) -> StoreResult<User>;

    /// Tokens whose subject is `subject` (a key, account or user id) issued at or before `at`
    /// are dead. A later cut-off replaces an earlier one, never the other way round.
    async fn set_token_cutoff(&self, subject: &str, at: i64) -> StoreResult<()>;
    /// Every cut-off at or after `since` (a replica starting up reads those younger than the
    /// longest token lifetime).
    async fn token_cutoffs(&self, since: i64) -> StoreResult<Vec<(String, i64)>>;

    /// The request path's only store read, on a cache miss.
    async fn find_credential(&self, hash: &KeyHash) -> StoreResult<Option<Credential>>;
    /// Writes last-used times in one batch; a later time never loses to an earlier one.
    async fn record_last_used(&self, batch: &[(String, i64)]) -> StoreResult<()>;

    async fn append_audit(&self, entry: NewAudit) -> StoreResult<()>;
    async fn list_audit(&self, target: Option<&str>, limit: u32) -> StoreResult<Vec<AuditEntry>>;
}

pub fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

#[cfg(test)]
mod conformance;
