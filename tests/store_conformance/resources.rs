//! Key resources.

use std::sync::Arc;

use keygate::store::*;

use crate::helpers::*;

pub async fn key_resources(store: Arc<dyn Store>) {
    let a = account(&store, "res").await;
    let res = Resources::from([
        (
            "projects".to_string(),
            vec!["p1".to_string(), "p:2".to_string()],
        ),
        ("envs".to_string(), vec![]),
    ]);
    let mut nk = new_key(&a.id, "scoped", hash(110));
    nk.resources = Some(res.clone());
    let k = store.create_key(nk).await.expect("create");
    assert_eq!(k.resources, Some(res.clone()));
    assert_eq!(k.rotated_from, None);
    assert_eq!(store.get_key(&k.id).await.expect("get"), Some(k.clone()));
    let c = store
        .find_credential(&k.hash)
        .await
        .expect("find")
        .expect("found");
    assert_eq!(c.key.resources, Some(res.clone()));

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
    assert_eq!(
        renamed.resources,
        Some(res.clone()),
        "other updates leave them"
    );

    let other = Resources::from([("teams".to_string(), vec!["t1".to_string()])]);
    let updated = store
        .update_key(
            &k.id,
            KeyPatch {
                resources: Some(Some(other.clone())),
                ..KeyPatch::default()
            },
        )
        .await
        .expect("set");
    assert_eq!(updated.resources, Some(other));
    assert_eq!(updated.name, "renamed");
    assert_eq!(store.get_key(&k.id).await.expect("get"), Some(updated));

    // An empty map (restricted to nothing) differs from none (unrestricted).
    let empty = store
        .update_key(
            &k.id,
            KeyPatch {
                resources: Some(Some(Resources::new())),
                ..KeyPatch::default()
            },
        )
        .await
        .expect("empty");
    assert_eq!(empty.resources, Some(Resources::new()));
    assert_eq!(store.get_key(&k.id).await.expect("get"), Some(empty));

    let cleared = store
        .update_key(
            &k.id,
            KeyPatch {
                resources: Some(None),
                ..KeyPatch::default()
            },
        )
        .await
        .expect("clear");
    assert_eq!(cleared.resources, None);
    assert_eq!(store.get_key(&k.id).await.expect("get"), Some(cleared));

    let plain = store
        .create_key(new_key(&a.id, "plain", hash(111)))
        .await
        .expect("create");
    assert_eq!(plain.resources, None);
    let listed = store
        .list_keys(Some(&a.id), &Page::default())
        .await
        .expect("list");
    assert!(listed.iter().all(|k| k.resources.is_none()));
}
