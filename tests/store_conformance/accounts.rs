//! Accounts: create, status, paging.

use std::sync::Arc;

use keygate::store::*;

use crate::helpers::*;

pub async fn accounts_crud(store: Arc<dyn Store>) {
    store.ping().await.expect("ping");
    let before = now();
    let a = account(&store, "Acme").await;
    assert!(a.id.starts_with("acc_"), "{}", a.id);
    assert_eq!(a.name, "Acme");
    assert_eq!(a.status, AccountStatus::Active);
    assert!(a.created_at >= before && a.created_at <= now());
    assert_eq!(a.plan, None, "new accounts have no plan");
    assert_eq!(a.credits, 0, "new accounts have no credits");
    assert_eq!(
        store.get_account(&a.id).await.expect("get"),
        Some(a.clone())
    );
    assert_eq!(store.get_account("acc_missing").await.expect("get"), None);
    let b = account(&store, "Acme").await;
    assert_ne!(a.id, b.id, "names are not unique, ids are");
}

pub async fn account_status(store: Arc<dyn Store>) {
    let a = account(&store, "s").await;
    for s in [
        AccountStatus::Suspended,
        AccountStatus::Active,
        AccountStatus::Deleted,
    ] {
        let updated = store.set_account_status(&a.id, s).await.expect("status");
        assert_eq!(updated.status, s);
        assert_eq!(updated.id, a.id);
        assert_eq!(updated.name, a.name);
        assert_eq!(
            store
                .get_account(&a.id)
                .await
                .expect("get")
                .map(|x| x.status),
            Some(s)
        );
    }
    assert!(matches!(
        store
            .set_account_status("acc_missing", AccountStatus::Suspended)
            .await,
        Err(StoreError::NotFound(_))
    ));
}

pub async fn account_paging(store: Arc<dyn Store>) {
    let mut mine = Vec::new();
    for i in 0..5 {
        mine.push(account(&store, &format!("page{i}")).await.id);
    }
    let listed: Vec<String> = all_accounts(&store, 2)
        .await
        .into_iter()
        .map(|a| a.id)
        .collect();
    let unique: std::collections::HashSet<&String> = listed.iter().collect();
    assert_eq!(unique.len(), listed.len(), "no account listed twice");
    let ours: Vec<String> = listed
        .iter()
        .filter(|id| mine.contains(id))
        .cloned()
        .collect();
    assert_eq!(ours, mine, "every account, in creation order");

    // A page starting after the third of ours begins with the fourth.
    let page = store
        .list_accounts(&Page {
            after: Some(mine[2].clone()),
            limit: 1,
        })
        .await
        .expect("page");
    assert_eq!(page.len(), 1);
    assert_eq!(page[0].id, mine[3]);
    // limit 0 means the default (not zero rows).
    let page = store.list_accounts(&Page::default()).await.expect("page");
    assert!(!page.is_empty());
}

pub async fn account_metadata(store: Arc<dyn Store>) {
    let plain = account(&store, "plain").await;
    assert!(plain.metadata.is_empty(), "new accounts have `{{}}`");
    let given = serde_json::json!({
        "webhooks": ["https://a.example/hook?x=\"1\""],
        "tier": { "name": "gold", "seats": 3 },
        "note": "ünïcode\n",
    });
    let metadata = given.as_object().cloned().expect("an object");
    let a = store
        .create_account(NewAccount {
            name: "with metadata".into(),
            metadata: metadata.clone(),
        })
        .await
        .expect("create");
    assert_eq!(a.metadata, metadata);
    assert_eq!(
        store.get_account(&a.id).await.expect("get"),
        Some(a.clone())
    );

    // Replaced whole, leaving everything else alone; the plan and credits survive it.
    store
        .set_account_plan(&a.id, Some("pro".into()))
        .await
        .expect("plan");
    let replaced = serde_json::json!({ "webhooks": [] });
    let updated = store
        .set_account_metadata(&a.id, replaced.as_object().cloned().expect("object"))
        .await
        .expect("set metadata");
    assert_eq!(
        serde_json::Value::Object(updated.metadata.clone()),
        replaced
    );
    assert_eq!(updated.plan.as_deref(), Some("pro"));
    assert_eq!(updated.name, "with metadata");
    assert_eq!(
        store.get_account(&a.id).await.expect("get"),
        Some(updated.clone())
    );
    let listed = all_accounts(&store, 1000).await;
    assert!(listed.contains(&updated), "lists carry the metadata");
    let cleared = store
        .set_account_metadata(&a.id, Metadata::new())
        .await
        .expect("clear");
    assert!(cleared.metadata.is_empty());
    assert!(matches!(
        store
            .set_account_metadata("acc_missing", Metadata::new())
            .await,
        Err(StoreError::NotFound(_))
    ));
}
