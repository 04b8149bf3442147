//! The store's operations, split by who needs them. A consumer holds the narrowest trait that
//! covers its calls (the key cache holds a [`CredentialReads`]), so its test double implements
//! that trait alone; [`Store`] is every trait at once, for the wiring and the admin side.

use async_trait::async_trait;

use super::{
    Account, AccountStatus, AuditEntry, ChargeOutcome, Credential, ImportOutcome, KeyPatch,
    KeyRecord, LedgerEntry, Metadata, NewAccount, NewAudit, NewKey, NewUser, Page, StoreResult,
    User, UserPatch,
};
use crate::keys::KeyHash;

/// What the request path's cache reads: the credential behind a key hash on a miss, and the
/// token cut-offs it checks access tokens against (with the write that records a new one, so a
/// replica started later sees it).
#[async_trait]
pub trait CredentialReads: Send + Sync + 'static {
    /// The request path's only store read, on a cache miss.
    async fn find_credential(&self, hash: &KeyHash) -> StoreResult<Option<Credential>>;

    /// Tokens whose subject is `subject` (a key, account or user id) issued at or before `at`
    /// (milliseconds since the Unix epoch) are dead. A later cut-off replaces an earlier one,
    /// never the other way round. A cut-off stored in whole seconds by an older version reads
    /// as the last millisecond of its second.
    async fn set_token_cutoff(&self, subject: &str, at: i64) -> StoreResult<()>;
    /// Every cut-off at or after `since` (milliseconds; a replica starting up reads those
    /// younger than the longest token lifetime).
    async fn token_cutoffs(&self, since: i64) -> StoreResult<Vec<(String, i64)>>;
}

/// Account credit balances and their ledger: the charge on the request path, the top-ups and
/// corrections on the admin side.
#[async_trait]
pub trait Credits: Send + Sync + 'static {
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
    /// the new balance. Conflict if it would go below zero or above [`MAX_CREDITS`](super::MAX_CREDITS).
    async fn adjust_credits(
        &self,
        account_id: &str,
        delta: i64,
        key_id: Option<&str>,
        reason: &str,
    ) -> StoreResult<i64>;
    /// Sets the balance (0..=[`MAX_CREDITS`](super::MAX_CREDITS), else Conflict); the ledger entry's delta is the
    /// difference (no entry when the balance does not change).
    async fn set_credits(&self, account_id: &str, balance: i64, reason: &str) -> StoreResult<i64>;
    /// The account's ledger, oldest first; `page.after` is the last entry id seen (as a string).
    /// NotFound if the account is missing.
    async fn list_ledger(&self, account_id: &str, page: &Page) -> StoreResult<Vec<LedgerEntry>>;
}

/// Who exists and what they may do: accounts, users and keys, as the admin API, self-service
/// and the CLI manage them, plus the last-used times the usage flusher writes back.
#[async_trait]
pub trait Directory: Send + Sync + 'static {
    /// Cheap reachability check for `/readyz`.
    async fn ping(&self) -> StoreResult<()>;

    async fn create_account(&self, new: NewAccount) -> StoreResult<Account>;
    async fn get_account(&self, id: &str) -> StoreResult<Option<Account>>;
    async fn list_accounts(&self, page: &Page) -> StoreResult<Vec<Account>>;
    async fn set_account_status(&self, id: &str, status: AccountStatus) -> StoreResult<Account>;
    /// Puts the account on a plan (`None`, or an empty name: no plan). NotFound if the account
    /// is missing.
    async fn set_account_plan(&self, id: &str, plan: Option<String>) -> StoreResult<Account>;
    /// Replaces the account's metadata. NotFound if the account is missing.
    async fn set_account_metadata(&self, id: &str, metadata: Metadata) -> StoreResult<Account>;

    /// The key with its indexes, all or nothing: a failure leaves no part of it behind.
    /// NotFound("account") if the account is missing; Conflict if a key has the same hash.
    async fn create_key(&self, new: NewKey) -> StoreResult<KeyRecord>;
    async fn get_key(&self, id: &str) -> StoreResult<Option<KeyRecord>>;
    /// Stores keys made elsewhere, one outcome per entry in order: a hash already stored is
    /// `Existing` (idempotent), a missing account `Failed(NotFound("account"))`; the others
    /// are stored together (one transaction on SQLite, pipelined on Redis). Err only when the
    /// backend fails as a whole.
    async fn import_keys(&self, keys: Vec<NewKey>) -> StoreResult<Vec<ImportOutcome>>;
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

    /// The user with its indexes, all or nothing. NotFound("account") if the account is
    /// missing; Conflict if the email (compared case-insensitively) is taken, in any account.
    async fn create_user(&self, new: NewUser) -> StoreResult<User>;
    async fn get_user(&self, id: &str) -> StoreResult<Option<User>>;
    /// The user and its password hash, for login. The email is compared case-insensitively.
    async fn find_user_by_email(&self, email: &str) -> StoreResult<Option<(User, String)>>;
    /// Users in creation order, optionally of one account.
    async fn list_users(&self, account_id: Option<&str>, page: &Page) -> StoreResult<Vec<User>>;
    /// NotFound("user") if the user is missing.
    async fn update_user(&self, id: &str, patch: UserPatch) -> StoreResult<User>;

    /// Writes last-used times in one batch; a later time never loses to an earlier one.
    async fn record_last_used(&self, batch: &[(String, i64)]) -> StoreResult<()>;
}

/// The audit trail of admin and self-service changes.
#[async_trait]
pub trait Audit: Send + Sync + 'static {
    async fn append_audit(&self, entry: NewAudit) -> StoreResult<()>;
    async fn list_audit(&self, target: Option<&str>, limit: u32) -> StoreResult<Vec<AuditEntry>>;
}

/// Every store operation: what a backend implements (through the four traits) and what the
/// wiring passes around as `Arc<dyn Store>`. An `Arc<dyn Store>` coerces to any of the narrow
/// traits (`Arc<dyn CredentialReads>`) where a consumer wants less.
pub trait Store: CredentialReads + Credits + Directory + Audit {}

impl<T: CredentialReads + Credits + Directory + Audit + ?Sized> Store for T {}
