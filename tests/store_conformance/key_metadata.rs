//! Key metadata: `{}` unless given; kept as given (nested values, unicode, quotes) by create,
//! import and rotation; read back the same by get, list and the request path's lookup; replaced
//! whole by an update that sets it and left alone by one that does not.

use std::sync::Arc;

use keygate::store::*;

use crate::helpers::*;

fn object(v: serde_json::Value) -> Metadata {
    v.as_object().cloned().expect("an object")
}

pub async fn key_metadata(store: Arc<dyn Store>) {
    let a = account(&store, "key-meta").await;
    let plain = store
        .create_key(new_key(&a.id, "plain", hash(60)))
        .await
        .expect("create");
    assert!(plain.metadata.is_empty(), "new keys have `{{}}`");

    let given = object(serde_json::json!({
        "customer": "c_42",
        "source": { "system": "legacy-billing", "ids": [1, 2, 3], "ok": true, "none": null },
        "note": "ünïcode \"quoted\"\n",
    }));
    let h = hash(61);
    let mut nk = new_key(&a.id, "with metadata", h);
    nk.metadata = given.clone();
    let k = store.create_key(nk).await.expect("create");
    assert_eq!(k.metadata, given);
    assert_eq!(store.get_key(&k.id).await.expect("get"), Some(k.clone()));
    let listed = store
        .list_keys(Some(&a.id), &Page::default())
        .await
        .expect("list");
    assert!(listed.contains(&k), "lists carry the metadata: {listed:?}");
    let found = store
        .find_credential(&h)
        .await
        .expect("read")
        .expect("found");
    assert_eq!(found.key, k);

    // An update that does not name it leaves it; one that does replaces it whole.
    let renamed = store
        .update_key(
            &k.id,
            KeyPatch {
                name: Some("renamed".into()),
                ..KeyPatch::default()
            },
        )
        .await
        .expect("rename");
    assert_eq!(renamed.metadata, given);
    let replaced = object(serde_json::json!({ "customer": "c_43" }));
    let updated = store
        .update_key(
            &k.id,
            KeyPatch {
                metadata: Some(replaced.clone()),
                ..KeyPatch::default()
            },
        )
        .await
        .expect("set metadata");
    assert_eq!(updated.metadata, replaced);
    assert_eq!(updated.name, "renamed");
    assert_eq!(updated.scopes, k.scopes);
    assert_eq!(store.get_key(&k.id).await.expect("get"), Some(updated));
    let cleared = store
        .update_key(
            &k.id,
            KeyPatch {
                metadata: Some(Metadata::new()),
                ..KeyPatch::default()
            },
        )
        .await
        .expect("clear");
    assert!(cleared.metadata.is_empty());
    assert_eq!(store.get_key(&k.id).await.expect("get"), Some(cleared));

    // A rotation's successor and an imported key keep what they are given.
    let mut successor = new_key(&a.id, "successor", hash(62));
    successor.metadata = given.clone();
    let (next, _) = store
        .rotate_key(&plain.id, successor, None)
        .await
        .expect("rotate");
    assert_eq!(next.metadata, given);
    assert_eq!(store.get_key(&next.id).await.expect("get"), Some(next));
    let mut imported = new_key(&a.id, "imported", hash(63));
    imported.metadata = given.clone();
    let out = store.import_keys(vec![imported]).await.expect("import");
    let ImportOutcome::Created(key) = &out[0] else {
        panic!("{:?}", out[0]);
    };
    assert_eq!(key.metadata, given);
    assert_eq!(
        store.get_key(&key.id).await.expect("get").as_ref(),
        Some(&**key)
    );
}
