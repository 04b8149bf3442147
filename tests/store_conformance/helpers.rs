//! Fixtures the checks share.

use std::sync::Arc;

use keygate::keys::KeyHash;
use keygate::store::*;

pub fn hash(n: u8) -> KeyHash {
    let mut h = [0u8; 32];
    h[0] = n;
    // Distinct per process run as well, for backends shared between runs.
    let r: [u8; 16] = rand::random();
    h[16..].copy_from_slice(&r);
    h
}

pub async fn account(store: &Arc<dyn Store>, name: &str) -> Account {
    store
        .create_account(NewAccount {
            name: name.into(),
            metadata: Default::default(),
        })
        .await
        .expect("create account")
}

pub fn new_key(account_id: &str, name: &str, h: KeyHash) -> NewKey {
    NewKey {
        account_id: account_id.into(),
        user_id: None,
        name: name.into(),
        display_prefix: "kg_test_abc123".into(),
        hash: h,
        scopes: vec!["leads:read".into(), "emails:write".into()],
        permission: Permission::ReadWrite,
        expires_at: Some(now() + 3600),
        rate_limit: None,
        resources: None,
        rotated_from: None,
        metadata: Default::default(),
    }
}

/// A unique email per call (backends may be shared between runs), in mixed case.
pub fn email(tag: &str) -> String {
    format!(
        "{tag}.{}@Example.COM",
        hex::encode(rand::random::<[u8; 6]>())
    )
}

pub fn new_user(account_id: &str, email: &str, role: Role) -> NewUser {
    NewUser {
        account_id: account_id.into(),
        email: email.into(),
        password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2g".into(),
        role,
    }
}

pub fn status(s: KeyStatus) -> KeyPatch {
    KeyPatch {
        status: Some(s),
        ..KeyPatch::default()
    }
}

/// Every account, paging through the whole list `limit` at a time.
pub async fn all_accounts(store: &Arc<dyn Store>, limit: u32) -> Vec<Account> {
    let mut out: Vec<Account> = Vec::new();
    let mut after = None;
    loop {
        let page = store
            .list_accounts(&Page {
                after: after.clone(),
                limit,
            })
            .await
            .expect("list accounts");
        assert!(page.len() <= limit as usize, "page larger than its limit");
        let Some(last) = page.last() else { break };
        after = Some(last.id.clone());
        out.extend(page);
        assert!(out.len() < 100_000, "paging does not end");
    }
    out
}
