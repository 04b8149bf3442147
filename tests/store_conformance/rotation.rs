//! Key rotation.

use std::sync::Arc;

use keygate::store::*;

use crate::helpers::*;

pub async fn rotate_key_keeps_the_old_key(store: Arc<dyn Store>) {
    let a = account(&store, "rot").await;
    let mut nk = new_key(&a.id, "rotating", hash(120));
    nk.resources = Some(Resources::from([(
        "projects".to_string(),
        vec!["p1".to_string()],
    )]));
    let old = store.create_key(nk).await.expect("create");
    let mut successor = new_key(&a.id, "rotating", hash(121));
    successor.resources = old.resources.clone();
    // Whatever the caller says, the successor points at the key it replaced.
    successor.rotated_from = None;
    let (new, old_after) = store
        .rotate_key(&old.id, successor, None)
        .await
        .expect("rotate");
    assert_ne!(new.id, old.id);
    assert_eq!(new.rotated_from.as_deref(), Some(old.id.as_str()));
    assert_eq!(new.account_id, old.account_id);
    assert_eq!(new.status, KeyStatus::Active);
    assert_eq!(new.resources, old.resources);
    assert_eq!(
        old_after, old,
        "without a grace period the old key is untouched"
    );
    assert_eq!(
        store.get_key(&new.id).await.expect("get"),
        Some(new.clone())
    );
    assert_eq!(
        store.get_key(&old.id).await.expect("get"),
        Some(old.clone())
    );
    // Both are found by their hashes.
    let c = store
        .find_credential(&new.hash)
        .await
        .expect("find")
        .expect("new found");
    assert_eq!(c.key, new);
    let c = store
        .find_credential(&old.hash)
        .await
        .expect("find")
        .expect("old found");
    assert_eq!(c.key, old);
    let listed: Vec<String> = store
        .list_keys(Some(&a.id), &Page::default())
        .await
        .expect("list")
        .into_iter()
        .map(|k| k.id)
        .collect();
    assert_eq!(listed, vec![old.id.clone(), new.id.clone()]);

    // A successor can itself be rotated, and a disabled key too.
    store
        .update_key(&new.id, status(KeyStatus::Disabled))
        .await
        .expect("disable");
    let (third, _) = store
        .rotate_key(&new.id, new_key(&a.id, "third", hash(122)), None)
        .await
        .expect("rotate again");
    assert_eq!(third.rotated_from.as_deref(), Some(new.id.as_str()));
    assert_eq!(third.status, KeyStatus::Active);
}

pub async fn rotate_key_with_grace(store: Arc<dyn Store>) {
    let a = account(&store, "grace").await;
    let t = now();

    // No expiry: the grace end becomes it.
    let mut nk = new_key(&a.id, "forever", hash(130));
    nk.expires_at = None;
    let old = store.create_key(nk).await.expect("create");
    let (_, after) = store
        .rotate_key(&old.id, new_key(&a.id, "n", hash(131)), Some(t + 60))
        .await
        .expect("rotate");
    assert_eq!(after.expires_at, Some(t + 60));
    assert_eq!(after.status, KeyStatus::Active);
    assert_eq!(store.get_key(&old.id).await.expect("get"), Some(after));

    // A later expiry is brought forward.
    let mut nk = new_key(&a.id, "later", hash(132));
    nk.expires_at = Some(t + 7200);
    let old = store.create_key(nk).await.expect("create");
    let (_, after) = store
        .rotate_key(&old.id, new_key(&a.id, "n", hash(133)), Some(t + 30))
        .await
        .expect("rotate");
    assert_eq!(after.expires_at, Some(t + 30));

    // An earlier expiry is kept.
    let mut nk = new_key(&a.id, "sooner", hash(134));
    nk.expires_at = Some(t + 10);
    let old = store.create_key(nk).await.expect("create");
    let (_, after) = store
        .rotate_key(&old.id, new_key(&a.id, "n", hash(135)), Some(t + 3600))
        .await
        .expect("rotate");
    assert_eq!(after.expires_at, Some(t + 10));
    let c = store
        .find_credential(&old.hash)
        .await
        .expect("find")
        .expect("found");
    assert_eq!(c.key.expires_at, Some(t + 10));
}

pub async fn rotate_key_refusals(store: Arc<dyn Store>) {
    let a = account(&store, "refuse").await;
    let b = account(&store, "refuse-other").await;
    let count = |store: Arc<dyn Store>, id: String| async move {
        store
            .list_keys(Some(&id), &Page::default())
            .await
            .expect("list")
            .len()
    };
    assert!(matches!(
        store
            .rotate_key("key_missing", new_key(&a.id, "n", hash(140)), None)
            .await,
        Err(StoreError::NotFound(_))
    ));

    let old = store
        .create_key(new_key(&a.id, "old", hash(141)))
        .await
        .expect("create");
    // Another account's successor.
    assert!(matches!(
        store
            .rotate_key(&old.id, new_key(&b.id, "n", hash(142)), Some(now()))
            .await,
        Err(StoreError::Conflict(_))
    ));
    // A hash already in use.
    assert!(matches!(
        store
            .rotate_key(&old.id, new_key(&a.id, "n", old.hash), Some(now()))
            .await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(count(store.clone(), a.id.clone()).await, 1);
    assert_eq!(count(store.clone(), b.id.clone()).await, 0);
    assert_eq!(
        store.get_key(&old.id).await.expect("get"),
        Some(old.clone()),
        "a refused rotation leaves the old key alone"
    );

    store
        .update_key(&old.id, status(KeyStatus::Revoked))
        .await
        .expect("revoke");
    assert!(matches!(
        store
            .rotate_key(&old.id, new_key(&a.id, "n", hash(143)), Some(now() + 60))
            .await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(count(store.clone(), a.id.clone()).await, 1, "no successor");
    assert_eq!(
        store
            .get_key(&old.id)
            .await
            .expect("get")
            .map(|k| k.expires_at),
        Some(old.expires_at)
    );
}
