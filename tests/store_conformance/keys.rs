//! Keys: create, read, list, update, the hash unique.

use std::sync::Arc;

use keygate::store::*;

use crate::helpers::*;

pub async fn keys_create_get(store: Arc<dyn Store>) {
    let a = account(&store, "k").await;
    let h = hash(1);
    let before = now();
    let k = store
        .create_key(new_key(&a.id, "primary", h))
        .await
        .expect("create key");
    assert!(k.id.starts_with("key_"), "{}", k.id);
    assert_eq!(k.account_id, a.id);
    assert_eq!(k.user_id, None);
    assert_eq!(k.name, "primary");
    assert_eq!(k.display_prefix, "kg_test_abc123");
    assert_eq!(k.hash, h);
    assert_eq!(k.scopes, vec!["leads:read", "emails:write"]);
    assert_eq!(k.permission, Permission::ReadWrite);
    assert_eq!(k.status, KeyStatus::Active);
    assert!(k.created_at >= before);
    assert!(k.expires_at.is_some());
    assert_eq!(k.last_used_at, None);
    assert_eq!(store.get_key(&k.id).await.expect("get"), Some(k.clone()));
    assert_eq!(store.get_key("key_missing").await.expect("get"), None);

    // A read-only key with a user, no scopes and no expiry round-trips too.
    let mut nk = new_key(&a.id, "ro", hash(2));
    nk.permission = Permission::Read;
    nk.scopes = Vec::new();
    nk.expires_at = None;
    nk.user_id = Some("usr_1".into());
    let k2 = store.create_key(nk).await.expect("create");
    let got = store.get_key(&k2.id).await.expect("get").expect("found");
    assert_eq!(got, k2);
    assert_eq!(got.permission, Permission::Read);
    assert!(got.scopes.is_empty());
    assert_eq!(got.expires_at, None);
    assert_eq!(got.user_id.as_deref(), Some("usr_1"));
}

pub async fn key_needs_an_account(store: Arc<dyn Store>) {
    assert!(matches!(
        store.create_key(new_key("acc_missing", "x", hash(3))).await,
        Err(StoreError::NotFound(_))
    ));
}

pub async fn key_hash_is_unique(store: Arc<dyn Store>) {
    let a = account(&store, "dup").await;
    let h = hash(4);
    store
        .create_key(new_key(&a.id, "one", h))
        .await
        .expect("first");
    assert!(matches!(
        store.create_key(new_key(&a.id, "two", h)).await,
        Err(StoreError::Conflict(_))
    ));
    let keys = store
        .list_keys(Some(&a.id), &Page::default())
        .await
        .expect("list");
    assert_eq!(keys.len(), 1);
}

pub async fn keys_list_and_paging(store: Arc<dyn Store>) {
    let a = account(&store, "list-a").await;
    let b = account(&store, "list-b").await;
    let mut mine = Vec::new();
    for i in 0..5 {
        let k = store
            .create_key(new_key(&a.id, &format!("k{i}"), hash(10 + i)))
            .await
            .expect("create");
        mine.push(k.id);
    }
    let other = store
        .create_key(new_key(&b.id, "other", hash(20)))
        .await
        .expect("create");

    let listed = store
        .list_keys(Some(&a.id), &Page::default())
        .await
        .expect("list");
    let ids: Vec<String> = listed.iter().map(|k| k.id.clone()).collect();
    assert_eq!(ids, mine, "only this account's keys, in creation order");
    assert!(listed.iter().all(|k| k.account_id == a.id));

    // Paging two at a time.
    let mut paged = Vec::new();
    let mut after = None;
    loop {
        let page = store
            .list_keys(
                Some(&a.id),
                &Page {
                    after: after.clone(),
                    limit: 2,
                },
            )
            .await
            .expect("page");
        assert!(page.len() <= 2);
        let Some(last) = page.last() else { break };
        after = Some(last.id.clone());
        paged.extend(page.into_iter().map(|k| k.id));
        assert!(paged.len() <= 5, "paging does not end: {paged:?}");
    }
    assert_eq!(paged, mine);

    // Unfiltered lists include both accounts' keys.
    let mut all = Vec::new();
    let mut after = None;
    loop {
        let page = store
            .list_keys(
                None,
                &Page {
                    after: after.clone(),
                    limit: 3,
                },
            )
            .await
            .expect("page");
        let Some(last) = page.last() else { break };
        after = Some(last.id.clone());
        all.extend(page.into_iter().map(|k| k.id));
        assert!(all.len() < 100_000);
    }
    assert!(all.contains(&other.id));
    assert!(mine.iter().all(|id| all.contains(id)));

    let empty = account(&store, "none").await;
    assert!(store
        .list_keys(Some(&empty.id), &Page::default())
        .await
        .expect("list")
        .is_empty());
}

pub async fn key_update(store: Arc<dyn Store>) {
    let a = account(&store, "upd").await;
    let k = store
        .create_key(new_key(&a.id, "before", hash(30)))
        .await
        .expect("create");

    // An empty patch changes nothing.
    let same = store
        .update_key(&k.id, KeyPatch::default())
        .await
        .expect("noop");
    assert_eq!(same, k);

    let renamed = store
        .update_key(
            &k.id,
            KeyPatch {
                name: Some("after".into()),
                ..KeyPatch::default()
            },
        )
        .await
        .expect("rename");
    assert_eq!(renamed.name, "after");
    assert_eq!(renamed.scopes, k.scopes, "other fields untouched");
    assert_eq!(renamed.expires_at, k.expires_at);

    let scoped = store
        .update_key(
            &k.id,
            KeyPatch {
                scopes: Some(vec!["x:y".into()]),
                expires_at: Some(Some(12345)),
                ..KeyPatch::default()
            },
        )
        .await
        .expect("scopes");
    assert_eq!(scoped.scopes, vec!["x:y"]);
    assert_eq!(scoped.expires_at, Some(12345));
    assert_eq!(scoped.name, "after");

    let cleared = store
        .update_key(
            &k.id,
            KeyPatch {
                expires_at: Some(None),
                scopes: Some(Vec::new()),
                ..KeyPatch::default()
            },
        )
        .await
        .expect("clear");
    assert_eq!(cleared.expires_at, None);
    assert!(cleared.scopes.is_empty());

    let disabled = store
        .update_key(&k.id, status(KeyStatus::Disabled))
        .await
        .expect("disable");
    assert_eq!(disabled.status, KeyStatus::Disabled);
    let enabled = store
        .update_key(&k.id, status(KeyStatus::Active))
        .await
        .expect("enable");
    assert_eq!(enabled.status, KeyStatus::Active);

    // What update returns is what get reads.
    assert_eq!(store.get_key(&k.id).await.expect("get"), Some(enabled));
}

pub async fn revoked_key_cannot_come_back(store: Arc<dyn Store>) {
    let a = account(&store, "rev").await;
    let k = store
        .create_key(new_key(&a.id, "r", hash(40)))
        .await
        .expect("create");
    let revoked = store
        .update_key(&k.id, status(KeyStatus::Revoked))
        .await
        .expect("revoke");
    assert_eq!(revoked.status, KeyStatus::Revoked);
    for s in [KeyStatus::Active, KeyStatus::Disabled] {
        assert!(
            matches!(
                store.update_key(&k.id, status(s)).await,
                Err(StoreError::Conflict(_))
            ),
            "revoked -> {s:?} must conflict"
        );
        assert_eq!(
            store.get_key(&k.id).await.expect("get").map(|k| k.status),
            Some(KeyStatus::Revoked)
        );
    }
    // Revoking again, and renaming, are fine.
    store
        .update_key(&k.id, status(KeyStatus::Revoked))
        .await
        .expect("revoke twice");
    let renamed = store
        .update_key(
            &k.id,
            KeyPatch {
                name: Some("old".into()),
                ..KeyPatch::default()
            },
        )
        .await
        .expect("rename revoked");
    assert_eq!(renamed.status, KeyStatus::Revoked);
    assert_eq!(renamed.name, "old");
}

pub async fn update_missing_key(store: Arc<dyn Store>) {
    assert!(matches!(
        store
            .update_key("key_missing", status(KeyStatus::Revoked))
            .await,
        Err(StoreError::NotFound(_))
    ));
}
