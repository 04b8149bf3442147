//! A store that times every call and counts its failures, by operation, whatever the backend.
//!
//! It wraps the opened store once at startup, so every consumer (the cache's misses, the credit
//! charge, the admin API, the last-used writer, `/readyz`) is measured the same way and no call
//! site counts anything itself. `NotFound` and `Conflict` are answers, not failures: only
//! `Unavailable` and `TimedOut` count as errors.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;

use super::{
    Account, AccountStatus, Audit, AuditEntry, ChargeOutcome, Credential, CredentialReads, Credits,
    Directory, ImportOutcome, KeyPatch, KeyRecord, LedgerEntry, Metadata, NewAccount, NewAudit,
    NewKey, NewUser, Page, Store, StoreError, StoreResult, User, UserPatch,
};
use crate::keys::KeyHash;
use crate::metrics::Metrics;

pub struct MeteredStore {
    inner: Arc<dyn Store>,
    metrics: Arc<Metrics>,
}

impl MeteredStore {
    pub fn wrap(inner: Arc<dyn Store>, metrics: Arc<Metrics>) -> Arc<dyn Store> {
        Arc::new(Self { inner, metrics })
    }

    async fn timed<T>(
        &self,
        op: &'static str,
        call: impl Future<Output = StoreResult<T>>,
    ) -> StoreResult<T> {
        let started = Instant::now();
        let result = call.await;
        let failed = matches!(
            result,
            Err(StoreError::Unavailable(_) | StoreError::TimedOut)
        );
        self.metrics
            .store_call(op, started.elapsed().as_secs_f64(), !failed);
        result
    }
}

#[async_trait]
impl CredentialReads for MeteredStore {
    async fn find_credential(&self, hash: &KeyHash) -> StoreResult<Option<Credential>> {
        self.timed("find_credential", self.inner.find_credential(hash))
            .await
    }
    async fn set_token_cutoff(&self, subject: &str, at: i64) -> StoreResult<()> {
        self.timed("set_token_cutoff", self.inner.set_token_cutoff(subject, at))
            .await
    }
    async fn token_cutoffs(&self, since: i64) -> StoreResult<Vec<(String, i64)>> {
        self.timed("token_cutoffs", self.inner.token_cutoffs(since))
            .await
    }
}

#[async_trait]
impl Credits for MeteredStore {
    async fn charge_credits(
        &self,
        account_id: &str,
        amount: i64,
        key_id: Option<&str>,
        reason: &str,
    ) -> StoreResult<ChargeOutcome> {
        let call = self
            .inner
            .charge_credits(account_id, amount, key_id, reason);
        self.timed("charge_credits", call).await
    }
    async fn adjust_credits(
        &self,
        account_id: &str,
        delta: i64,
        key_id: Option<&str>,
        reason: &str,
    ) -> StoreResult<i64> {
        let call = self.inner.adjust_credits(account_id, delta, key_id, reason);
        self.timed("adjust_credits", call).await
    }
    async fn set_credits(&self, account_id: &str, balance: i64, reason: &str) -> StoreResult<i64> {
        let call = self.inner.set_credits(account_id, balance, reason);
        self.timed("set_credits", call).await
    }
    async fn list_ledger(&self, account_id: &str, page: &Page) -> StoreResult<Vec<LedgerEntry>> {
        self.timed("list_ledger", self.inner.list_ledger(account_id, page))
            .await
    }
}

#[async_trait]
impl Directory for MeteredStore {
    async fn ping(&self) -> StoreResult<()> {
        self.timed("ping", self.inner.ping()).await
    }
    async fn create_account(&self, new: NewAccount) -> StoreResult<Account> {
        self.timed("create_account", self.inner.create_account(new))
            .await
    }
    async fn get_account(&self, id: &str) -> StoreResult<Option<Account>> {
        self.timed("get_account", self.inner.get_account(id)).await
    }
    async fn list_accounts(&self, page: &Page) -> StoreResult<Vec<Account>> {
        self.timed("list_accounts", self.inner.list_accounts(page))
            .await
    }
    async fn set_account_status(&self, id: &str, status: AccountStatus) -> StoreResult<Account> {
        let call = self.inner.set_account_status(id, status);
        self.timed("set_account_status", call).await
    }
    async fn set_account_plan(&self, id: &str, plan: Option<String>) -> StoreResult<Account> {
        self.timed("set_account_plan", self.inner.set_account_plan(id, plan))
            .await
    }

    async fn set_account_metadata(&self, id: &str, metadata: Metadata) -> StoreResult<Account> {
        self.timed(
            "set_account_metadata",
            self.inner.set_account_metadata(id, metadata),
        )
        .await
    }
    async fn create_key(&self, new: NewKey) -> StoreResult<KeyRecord> {
        self.timed("create_key", self.inner.create_key(new)).await
    }
    async fn get_key(&self, id: &str) -> StoreResult<Option<KeyRecord>> {
        self.timed("get_key", self.inner.get_key(id)).await
    }
    async fn import_keys(&self, keys: Vec<NewKey>) -> StoreResult<Vec<ImportOutcome>> {
        self.timed("import_keys", self.inner.import_keys(keys))
            .await
    }
    async fn list_keys(
        &self,
        account_id: Option<&str>,
        page: &Page,
    ) -> StoreResult<Vec<KeyRecord>> {
        self.timed("list_keys", self.inner.list_keys(account_id, page))
            .await
    }
    async fn update_key(&self, id: &str, patch: KeyPatch) -> StoreResult<KeyRecord> {
        self.timed("update_key", self.inner.update_key(id, patch))
            .await
    }
    async fn rotate_key(
        &self,
        id: &str,
        new: NewKey,
        old_expires_at: Option<i64>,
    ) -> StoreResult<(KeyRecord, KeyRecord)> {
        let call = self.inner.rotate_key(id, new, old_expires_at);
        self.timed("rotate_key", call).await
    }
    async fn create_user(&self, new: NewUser) -> StoreResult<User> {
        self.timed("create_user", self.inner.create_user(new)).await
    }
    async fn get_user(&self, id: &str) -> StoreResult<Option<User>> {
        self.timed("get_user", self.inner.get_user(id)).await
    }
    async fn find_user_by_email(&self, email: &str) -> StoreResult<Option<(User, String)>> {
        self.timed("find_user_by_email", self.inner.find_user_by_email(email))
            .await
    }
    async fn list_users(&self, account_id: Option<&str>, page: &Page) -> StoreResult<Vec<User>> {
        self.timed("list_users", self.inner.list_users(account_id, page))
            .await
    }
    async fn update_user(&self, id: &str, patch: UserPatch) -> StoreResult<User> {
        self.timed("update_user", self.inner.update_user(id, patch))
            .await
    }
    async fn record_last_used(&self, batch: &[(String, i64)]) -> StoreResult<()> {
        self.timed("record_last_used", self.inner.record_last_used(batch))
            .await
    }
}

#[async_trait]
impl Audit for MeteredStore {
    async fn append_audit(&self, entry: NewAudit) -> StoreResult<()> {
        self.timed("append_audit", self.inner.append_audit(entry))
            .await
    }
    async fn list_audit(&self, target: Option<&str>, limit: u32) -> StoreResult<Vec<AuditEntry>> {
        self.timed("list_audit", self.inner.list_audit(target, limit))
            .await
    }
}
