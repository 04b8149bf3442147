//! Accounts: create, set the plan, suspend, reactivate, delete (soft). Cached credentials carry
//! their account (status and plan), so every change drops them; stopping an account also cuts
//! off every token of it (keys' exchange tokens and users' sessions alike).

use std::collections::HashMap;

use super::audit::account_status_str;
use super::validate;
use super::{Actor, KeyService, ServiceError, ServiceResult};
use crate::config::Plan;
use crate::invalidation::Invalidation;
use crate::store::{Account, AccountStatus, KeyStatus, Metadata, NewAccount, Page};

fn account_not_found() -> ServiceError {
    ServiceError::NotFound("account not found".to_string())
}

/// An account that exists and is not deleted: to the admin API a deleted account is gone (its
/// record stays so its keys answer `account_missing`).
pub(super) fn live(account: Option<Account>) -> ServiceResult<Account> {
    match account {
        Some(a) if a.status != AccountStatus::Deleted => Ok(a),
        _ => Err(account_not_found()),
    }
}

impl KeyService {
    pub async fn create_account(
        &self,
        actor: &Actor,
        name: &str,
        metadata: Metadata,
    ) -> ServiceResult<Account> {
        let name = validate::name("name", name)?;
        let metadata = validate::metadata(metadata)?;
        let account = self
            .store
            .create_account(NewAccount { name, metadata })
            .await?;
        self.record(
            actor,
            "account.create",
            &account.id,
            format!("name={:?}", account.name),
        )
        .await;
        Ok(account)
    }

    /// Replaces the account's metadata. Nothing cached needs it: the local endpoints that place
    /// it read the account fresh.
    pub async fn set_account_metadata(
        &self,
        actor: &Actor,
        id: &str,
        metadata: Metadata,
    ) -> ServiceResult<Account> {
        let metadata = validate::metadata(metadata)?;
        live(self.store.get_account(id).await?)?;
        let account = self.store.set_account_metadata(id, metadata).await?;
        self.record(
            actor,
            "account.metadata",
            &account.id,
            format!("fields {:?}", account.metadata.keys().collect::<Vec<_>>()),
        )
        .await;
        Ok(account)
    }

    /// Puts the account on a plan (`None` takes it off). `plans` are the running config's: they
    /// change on reload, so the caller passes the ones it serves with.
    pub async fn set_account_plan(
        &self,
        actor: &Actor,
        id: &str,
        plan: Option<String>,
        plans: &HashMap<String, Plan>,
    ) -> ServiceResult<Account> {
        let plan = plan.map(|p| validate::plan(plans, &p)).transpose()?;
        let current = live(self.store.get_account(id).await?)?;
        let account = self.store.set_account_plan(id, plan).await?;
        self.invalidate(Invalidation::Account(account.id.clone()))
            .await;
        self.record(
            actor,
            "account.plan",
            &account.id,
            format!(
                "plan {} -> {}",
                current.plan.as_deref().unwrap_or("none"),
                account.plan.as_deref().unwrap_or("none")
            ),
        )
        .await;
        Ok(account)
    }

    /// Suspend, reactivate or delete. A deleted account stays deleted and is gone: any change to
    /// it, deleting it again too, is not found.
    pub async fn set_account_status(
        &self,
        actor: &Actor,
        id: &str,
        to: AccountStatus,
    ) -> ServiceResult<Account> {
        let current = live(self.store.get_account(id).await?)?;
        let account = self.store.set_account_status(id, to).await?;
        self.invalidate(Invalidation::Account(account.id.clone()))
            .await;
        let action = match to {
            AccountStatus::Active => "account.reactivate",
            AccountStatus::Suspended => "account.suspend",
            AccountStatus::Deleted => "account.delete",
        };
        let detail = format!(
            "status {} -> {}",
            account_status_str(current.status),
            account_status_str(account.status)
        );
        if to == AccountStatus::Active {
            self.record(actor, action, &account.id, detail).await;
        } else {
            self.cut_then_record(&account.id, actor, action, &account.id, detail)
                .await?;
        }
        Ok(account)
    }

    /// Suspends the account and, with `revoke_keys`, revokes every key of it: the account first
    /// (that alone stops every key and cuts every token of the account, so nothing gets through
    /// while the keys are revoked one by one), then each key not yet revoked, with its own audit
    /// entry. Reactivating the account later brings none of the keys back. A failure part-way
    /// leaves the account suspended; calling again finishes the job (revoked keys are skipped).
    pub async fn suspend_account(
        &self,
        actor: &Actor,
        id: &str,
        revoke_keys: bool,
    ) -> ServiceResult<Account> {
        let account = self
            .set_account_status(actor, id, AccountStatus::Suspended)
            .await?;
        if revoke_keys {
            for key_id in self.live_key_ids(&account.id).await? {
                self.set_key_status(actor, &key_id, KeyStatus::Revoked)
                    .await?;
            }
        }
        Ok(account)
    }

    /// The ids of the account's keys that are not revoked, every page of them.
    async fn live_key_ids(&self, account_id: &str) -> ServiceResult<Vec<String>> {
        const PAGE: u32 = 1000;
        let mut ids = Vec::new();
        let mut after = None;
        loop {
            let page = Page { after, limit: PAGE };
            let keys = self.store.list_keys(Some(account_id), &page).await?;
            let full = keys.len() >= PAGE as usize;
            after = keys.last().map(|k| k.id.clone());
            ids.extend(
                keys.into_iter()
                    .filter(|k| k.status != KeyStatus::Revoked)
                    .map(|k| k.id),
            );
            if !full || after.is_none() {
                return Ok(ids);
            }
        }
    }
}
