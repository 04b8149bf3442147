//! The audit trail.

use std::sync::Arc;

use keygate::store::*;

pub async fn audit_append_and_list(store: Arc<dyn Store>) {
    let target = format!("key_audit_{}", hex::encode(rand::random::<[u8; 8]>()));
    let other = format!("acc_audit_{}", hex::encode(rand::random::<[u8; 8]>()));
    let before = now();
    for action in ["create", "disable", "revoke"] {
        store
            .append_audit(NewAudit {
                actor: "admin".into(),
                action: action.into(),
                target: target.clone(),
                detail: format!("{action} detail"),
            })
            .await
            .expect("append");
    }
    store
        .append_audit(NewAudit {
            actor: "cli".into(),
            action: "suspend".into(),
            target: other.clone(),
            detail: String::new(),
        })
        .await
        .expect("append");

    let entries = store.list_audit(Some(&target), 0).await.expect("list");
    let actions: Vec<&str> = entries.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(actions, vec!["revoke", "disable", "create"], "newest first");
    for e in &entries {
        assert_eq!(e.target, target);
        assert_eq!(e.actor, "admin");
        assert_eq!(e.detail, format!("{} detail", e.action));
        assert!(e.at >= before && e.at <= now());
    }
    assert!(
        entries.windows(2).all(|w| w[0].id > w[1].id),
        "ids grow with time"
    );

    let limited = store.list_audit(Some(&target), 2).await.expect("list");
    assert_eq!(limited.len(), 2);
    assert_eq!(limited[0].action, "revoke");

    let all = store.list_audit(None, 1000).await.expect("list");
    assert_eq!(all.first().map(|e| e.target.as_str()), Some(other.as_str()));
    assert!(all.iter().any(|e| e.target == target));

    assert!(store
        .list_audit(Some("nobody"), 10)
        .await
        .expect("list")
        .is_empty());
}
