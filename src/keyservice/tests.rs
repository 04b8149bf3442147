//! The service over a real SQLite store and a real cache: who may touch what, which field a
//! refusal names, and who the audit log says made a change.

use std::sync::Arc;

use super::*;
use crate::store::{KeyStatus, NewUser, Permission, Role};
use crate::test_util::TestGate;

const CONFIG: &str = r#"
[keys]
prefix = "kg_svc_"

[upstreams.api]
address = "127.0.0.1:9"

[[routes]]
path = "/v1/{*rest}"
upstream = "api"
"#;

struct Fixture {
    service: Arc<KeyService>,
    store: Arc<dyn Store>,
    account: String,
    ann: Actor,
    bob: Actor,
    _dir: tempfile::TempDir,
}

/// One account with two users, Ann and Bob (their password hashes are placeholders: nobody
/// logs in here).
async fn fixture() -> Fixture {
    fixture_with(CONFIG).await
}

async fn fixture_with(config: &str) -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let t = TestGate::new(config, &dir.path().join("svc.db")).await;
    let store: Arc<dyn Store> = t.store.clone();
    let service = t.keys.clone();
    let account = service
        .create_account(&Actor::Operator, "acme", Default::default())
        .await
        .expect("account")
        .id;
    let mut users = Vec::new();
    for email in ["ann@example.com", "bob@example.com"] {
        let user = store
            .create_user(NewUser {
                account_id: account.clone(),
                email: email.into(),
                password_hash: "unused".into(),
                role: Role::Member,
            })
            .await
            .expect("user");
        users.push(Actor::User {
            user_id: user.id,
            account_id: account.clone(),
        });
    }
    let bob = users.pop().expect("bob");
    let ann = users.pop().expect("ann");
    Fixture {
        service,
        store,
        account,
        ann,
        bob,
        _dir: dir,
    }
}

fn user_id(actor: &Actor) -> Option<String> {
    match actor {
        Actor::User { user_id, .. } => Some(user_id.clone()),
        Actor::Operator => None,
    }
}

fn input(f: &Fixture, actor: &Actor) -> NewKeyInput {
    NewKeyInput {
        account_id: f.account.clone(),
        user_id: user_id(actor),
        name: "k".into(),
        scopes: vec![],
        permission: Permission::ReadWrite,
        expires_at: None,
        rate_limit: None,
        resources: None,
        metadata: Default::default(),
    }
}

#[tokio::test]
async fn a_user_touches_only_their_own_keys() {
    let f = fixture().await;
    let anns = f
        .service
        .create_key(&f.ann, input(&f, &f.ann))
        .await
        .expect("ann's key")
        .key;
    let svc = &f.service;
    assert!(matches!(
        svc.key_for(&f.bob, &anns.id).await,
        Err(ServiceError::NotFound(_))
    ));
    assert!(matches!(
        svc.set_key_status(&f.bob, &anns.id, KeyStatus::Revoked)
            .await,
        Err(ServiceError::NotFound(_))
    ));
    assert!(matches!(
        svc.rotate_key(&f.bob, &anns.id, None).await,
        Err(ServiceError::NotFound(_))
    ));
    let rename = KeyChange {
        name: Some("mine now".into()),
        ..KeyChange::default()
    };
    assert!(matches!(
        svc.update_key(&f.bob, &anns.id, rename).await,
        Err(ServiceError::NotFound(_))
    ));
    let key = f.store.get_key(&anns.id).await.ok().flatten();
    assert!(key.is_some_and(|k| k.status == KeyStatus::Active && k.name == "k"));

    // Nor mint keys for someone else.
    let for_ann = input(&f, &f.ann);
    assert!(matches!(
        svc.create_key(&f.bob, for_ann).await,
        Err(ServiceError::NotFound(_))
    ));
}

#[tokio::test]
async fn refusals_name_the_field() {
    let f = fixture().await;
    let too_many = NewKeyInput {
        scopes: (0..=validate::MAX_SCOPES)
            .map(|i| format!("s{i}"))
            .collect(),
        ..input(&f, &f.ann)
    };
    let bad_id = NewKeyInput {
        resources: Some([("projects".to_string(), vec!["p/1".to_string()])].into()),
        ..input(&f, &f.ann)
    };
    let limit = NewKeyInput {
        rate_limit: Some(validate::RateLimitBody {
            requests: 1,
            per_seconds: 1,
            burst: 1,
        }),
        ..input(&f, &f.ann)
    };
    let metadata = NewKeyInput {
        metadata: serde_json::json!({ "customer": "c_1" })
            .as_object()
            .cloned()
            .unwrap_or_default(),
        ..input(&f, &f.ann)
    };
    for (req, field) in [
        (too_many, "scopes"),
        (bad_id, "resources.projects"),
        // Limits and metadata are an operator's call.
        (limit, "rate_limit"),
        (metadata, "metadata"),
    ] {
        let e = f.service.create_key(&f.ann, req).await.err();
        assert_eq!(
            e.as_ref().and_then(ServiceError::field),
            Some(field),
            "{e:?}"
        );
    }
    let none = f
        .store
        .list_keys(Some(&f.account), &crate::store::Page::default())
        .await
        .expect("list");
    assert!(none.is_empty(), "nothing refused was written");
}

#[tokio::test]
async fn the_audit_log_names_who_made_each_change() {
    let f = fixture().await;
    let key = f
        .service
        .create_key(&f.ann, input(&f, &f.ann))
        .await
        .expect("key")
        .key;
    f.service
        .set_key_status(&Actor::Operator, &key.id, KeyStatus::Disabled)
        .await
        .expect("disable");
    f.service
        .set_key_status(&f.ann, &key.id, KeyStatus::Revoked)
        .await
        .expect("revoke");
    let mut seen: Vec<(String, String)> = f
        .store
        .list_audit(Some(&key.id), 100)
        .await
        .expect("audit")
        .into_iter()
        .map(|e| (e.actor, e.action))
        .collect();
    seen.sort();
    let ann = user_id(&f.ann).unwrap_or_default();
    let mut want = vec![
        (ann.clone(), "key.create".to_string()),
        (OPERATOR.to_string(), "key.disable".to_string()),
        (ann, "key.revoke".to_string()),
    ];
    want.sort();
    assert_eq!(seen, want);
}

#[tokio::test]
async fn concurrent_self_service_creations_stop_at_the_cap() {
    let config = CONFIG.replace(
        "prefix = \"kg_svc_\"",
        "prefix = \"kg_svc_\"\nmax_per_user = 3\nself_service_scopes = [\"leads:read\"]",
    );
    let f = Arc::new(fixture_with(&config).await);
    let attempts: Vec<_> = (0..10)
        .map(|_| {
            let f = f.clone();
            tokio::spawn(async move { f.service.create_key(&f.ann, input(&f, &f.ann)).await })
        })
        .collect();
    let mut made = 0;
    for a in attempts {
        match a.await.expect("task") {
            Ok(_) => made += 1,
            Err(ServiceError::Conflict(m)) => assert!(m.contains("3 keys"), "{m}"),
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(made, 3, "the count and the creation happen under one lock");
    // Bob has his own count; an operator is not capped, and grants any scope.
    assert!(f
        .service
        .create_key(&f.bob, input(&f, &f.bob))
        .await
        .is_ok());
    let mut ops = input(&f, &f.ann);
    ops.scopes = vec!["admin:all".into()];
    assert!(f.service.create_key(&Actor::Operator, ops).await.is_ok());
    // A user grants only the configured scopes, on creation and on update.
    let mut wide = input(&f, &f.bob);
    wide.scopes = vec!["admin:all".into()];
    let e = f.service.create_key(&f.bob, wide).await.err();
    assert_eq!(e.as_ref().and_then(ServiceError::field), Some("scopes"));
    let mut ok = input(&f, &f.bob);
    ok.scopes = vec!["leads:read".into()];
    let key = f
        .service
        .create_key(&f.bob, ok)
        .await
        .expect("allowed scope")
        .key;
    let change = KeyChange {
        scopes: Some(vec!["admin:all".into()]),
        ..KeyChange::default()
    };
    let e = f.service.update_key(&f.bob, &key.id, change).await.err();
    assert_eq!(e.as_ref().and_then(ServiceError::field), Some("scopes"));
}
