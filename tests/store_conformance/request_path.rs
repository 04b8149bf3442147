//! What the request path reads: the credential by hash, last-used times.

use std::sync::Arc;

use keygate::store::*;

use crate::helpers::*;

pub async fn find_credential_by_hash(store: Arc<dyn Store>) {
    let a = account(&store, "find").await;
    let h = hash(50);
    let k = store
        .create_key(new_key(&a.id, "f", h))
        .await
        .expect("create");
    let c = store
        .find_credential(&h)
        .await
        .expect("find")
        .expect("found");
    assert_eq!(c.key, k);
    assert_eq!(c.account, a);
    assert_eq!(c.user, None, "a key without a user");
    assert_eq!(store.find_credential(&hash(51)).await.expect("find"), None);
}

pub async fn find_credential_sees_changes(store: Arc<dyn Store>) {
    let a = account(&store, "changes").await;
    let h = hash(60);
    let k = store
        .create_key(new_key(&a.id, "c", h))
        .await
        .expect("create");
    store
        .update_key(&k.id, status(KeyStatus::Disabled))
        .await
        .expect("disable");
    store
        .set_account_status(&a.id, AccountStatus::Deleted)
        .await
        .expect("delete");
    let c = store
        .find_credential(&h)
        .await
        .expect("find")
        .expect("a deleted account's key is still found");
    assert_eq!(c.key.status, KeyStatus::Disabled);
    assert_eq!(c.account.status, AccountStatus::Deleted);
}

pub async fn last_used_never_moves_backwards(store: Arc<dyn Store>) {
    let a = account(&store, "lu").await;
    let k1 = store
        .create_key(new_key(&a.id, "1", hash(70)))
        .await
        .expect("create");
    let k2 = store
        .create_key(new_key(&a.id, "2", hash(71)))
        .await
        .expect("create");
    let last = |store: Arc<dyn Store>, id: String| async move {
        store
            .get_key(&id)
            .await
            .expect("get")
            .expect("found")
            .last_used_at
    };

    store
        .record_last_used(&[(k1.id.clone(), 1000), (k2.id.clone(), 500)])
        .await
        .expect("record");
    assert_eq!(last(store.clone(), k1.id.clone()).await, Some(1000));
    assert_eq!(last(store.clone(), k2.id.clone()).await, Some(500));

    store
        .record_last_used(&[(k1.id.clone(), 900), (k2.id.clone(), 600)])
        .await
        .expect("record");
    assert_eq!(
        last(store.clone(), k1.id.clone()).await,
        Some(1000),
        "older time ignored"
    );
    assert_eq!(last(store.clone(), k2.id.clone()).await, Some(600));

    // Unknown ids in a batch are ignored, and do not stop the rest.
    store
        .record_last_used(&[("key_missing".into(), 5000), (k1.id.clone(), 2000)])
        .await
        .expect("record with unknown id");
    assert_eq!(last(store.clone(), k1.id.clone()).await, Some(2000));
    assert_eq!(store.get_key("key_missing").await.expect("get"), None);

    // find_credential reports it too.
    let c = store
        .find_credential(&k1.hash)
        .await
        .expect("find")
        .expect("found");
    assert_eq!(c.key.last_used_at, Some(2000));

    // Other updates leave it alone.
    let renamed = store
        .update_key(
            &k1.id,
            KeyPatch {
                name: Some("x".into()),
                ..KeyPatch::default()
            },
        )
        .await
        .expect("rename");
    assert_eq!(renamed.last_used_at, Some(2000));
    store.record_last_used(&[]).await.expect("empty batch");
}
