//! Bulk import: outcomes in order, idempotent by hash (across calls and within one batch), a
//! missing account refused without stopping the rest, and imported keys found by hash.

use std::sync::Arc;

use keygate::store::*;

use crate::helpers::*;

pub async fn import_keys_in_bulk(store: Arc<dyn Store>) {
    let a = account(&store, "imp").await;
    let (h1, h2, h3) = (hash(41), hash(42), hash(43));
    let batch = vec![
        new_key(&a.id, "one", h1),
        new_key("acc_missing", "lost", h2),
        new_key(&a.id, "three", h3),
        // The first entry again, in the same batch.
        new_key(&a.id, "one again", h1),
    ];
    let out = store.import_keys(batch).await.expect("import");
    assert_eq!(out.len(), 4);
    let ImportOutcome::Created(one) = &out[0] else {
        panic!("first: {:?}", out[0]);
    };
    assert_eq!(one.name, "one");
    assert!(
        matches!(&out[1], ImportOutcome::Failed(StoreError::NotFound(_))),
        "{:?}",
        out[1]
    );
    let ImportOutcome::Created(three) = &out[2] else {
        panic!("third: {:?}", out[2]);
    };
    match &out[3] {
        ImportOutcome::Existing(id) => assert_eq!(id, &one.id),
        other => panic!("fourth: {other:?}"),
    }
    // Both stored keys are found the way the request path finds them.
    for (h, id) in [(h1, &one.id), (h3, &three.id)] {
        let c = store
            .find_credential(&h)
            .await
            .expect("read")
            .expect("found");
        assert_eq!(&c.key.id, id);
        assert_eq!(c.account.id, a.id);
    }
    assert!(store.find_credential(&h2).await.expect("read").is_none());

    // A second import of the same keys changes nothing.
    let again = store
        .import_keys(vec![new_key(&a.id, "renamed", h1), new_key(&a.id, "x", h3)])
        .await
        .expect("import again");
    match (&again[0], &again[1]) {
        (ImportOutcome::Existing(x), ImportOutcome::Existing(y)) => {
            assert_eq!(x, &one.id);
            assert_eq!(y, &three.id);
        }
        other => panic!("{other:?}"),
    }
    let kept = store.get_key(&one.id).await.expect("get").expect("found");
    assert_eq!(kept.name, "one");
    let keys = store
        .list_keys(
            Some(&a.id),
            &Page {
                after: None,
                limit: 100,
            },
        )
        .await
        .expect("list");
    assert_eq!(keys.len(), 2);
}
