//! Creations are all or nothing: a write that fails half-way leaves no record, index entry or
//! claim behind (on Redis a key is several Redis keys, written together), and a retry of the
//! same write succeeds once the fault is gone.

use std::collections::BTreeMap;

use keygate::store::*;

use crate::backends::Backend;
use crate::helpers::*;

/// The names whose value differs between two snapshots (added, removed or changed).
fn changed(before: &BTreeMap<String, String>, after: &BTreeMap<String, String>) -> Vec<String> {
    let mut names: Vec<&String> = before.keys().chain(after.keys()).collect();
    names.sort();
    names.dedup();
    names
        .into_iter()
        .filter(|n| before.get(*n) != after.get(*n))
        .cloned()
        .collect()
}

pub async fn failed_key_write_leaves_nothing(backend: &Backend) {
    let store = &backend.store;
    let acc = account(store, "Broken keys").await;
    let h = hash(90);
    backend.faults.break_account(&acc.id);
    let before = backend.faults.snapshot();
    let err = store
        .create_key(new_key(&acc.id, "half", h))
        .await
        .expect_err("a key write into a broken account must fail");
    let left = changed(&before, &backend.faults.snapshot());
    assert!(left.is_empty(), "the failed write ({err}) left {left:?}");
    assert!(
        store.find_credential(&h).await.expect("find").is_none(),
        "the failed key must not work"
    );

    backend.faults.repair_account(&acc.id);
    let key = store
        .create_key(new_key(&acc.id, "whole", h))
        .await
        .expect("the same key once the fault is gone (its hash was not left claimed)");
    let listed = store
        .list_keys(Some(&acc.id), &Page::default())
        .await
        .expect("list");
    assert_eq!(
        listed.iter().map(|k| k.id.as_str()).collect::<Vec<_>>(),
        [key.id.as_str()],
        "only the retried key is listed"
    );
    let found = store.find_credential(&h).await.expect("find");
    assert_eq!(found.map(|c| c.key.id), Some(key.id));
}

pub async fn failed_user_write_leaves_nothing(backend: &Backend) {
    let store = &backend.store;
    let acc = account(store, "Broken users").await;
    let address = email("half");
    backend.faults.break_account(&acc.id);
    let before = backend.faults.snapshot();
    let err = store
        .create_user(new_user(&acc.id, &address, Role::Member))
        .await
        .expect_err("a user write into a broken account must fail");
    let left = changed(&before, &backend.faults.snapshot());
    assert!(left.is_empty(), "the failed write ({err}) left {left:?}");
    assert!(
        store
            .find_user_by_email(&address)
            .await
            .expect("find")
            .is_none(),
        "the failed user must not log in"
    );

    backend.faults.repair_account(&acc.id);
    let user = store
        .create_user(new_user(&acc.id, &address, Role::Member))
        .await
        .expect("the same email once the fault is gone (it was not left claimed)");
    let listed = store
        .list_users(Some(&acc.id), &Page::default())
        .await
        .expect("list");
    assert_eq!(
        listed.iter().map(|u| u.id.as_str()).collect::<Vec<_>>(),
        [user.id.as_str()],
        "only the retried user is listed"
    );
}

pub async fn failed_rotation_leaves_nothing(backend: &Backend) {
    let store = &backend.store;
    let acc = account(store, "Broken rotation").await;
    let old = store
        .create_key(new_key(&acc.id, "old", hash(91)))
        .await
        .expect("create");
    let h = hash(92);
    backend.faults.break_account(&acc.id);
    let before = backend.faults.snapshot();
    let err = store
        .rotate_key(&old.id, new_key(&acc.id, "successor", h), Some(now() + 60))
        .await
        .expect_err("a rotation into a broken account must fail");
    let left = changed(&before, &backend.faults.snapshot());
    assert!(left.is_empty(), "the failed rotation ({err}) left {left:?}");
    assert_eq!(
        store.get_key(&old.id).await.expect("get"),
        Some(old.clone()),
        "the old key is as it was"
    );

    backend.faults.repair_account(&acc.id);
    let (new, _) = store
        .rotate_key(&old.id, new_key(&acc.id, "successor", h), Some(now() + 60))
        .await
        .expect("the same rotation once the fault is gone");
    let found = store.find_credential(&h).await.expect("find");
    assert_eq!(found.map(|c| c.key.id), Some(new.id));
}
