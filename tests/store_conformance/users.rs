//! Users: create, the email unique, list, update, on the credential.

use std::sync::Arc;

use keygate::store::*;

use crate::helpers::*;

pub async fn users_crud(store: Arc<dyn Store>) {
    let a = account(&store, "users").await;
    let mixed = email("Ann");
    let before = now();
    let u = store
        .create_user(new_user(&a.id, &mixed, Role::Admin))
        .await
        .expect("create user");
    assert!(u.id.starts_with("usr_"), "{}", u.id);
    assert_eq!(u.account_id, a.id);
    assert_eq!(u.email, mixed.to_lowercase(), "stored lower-cased");
    assert_eq!(u.role, Role::Admin);
    assert_eq!(u.status, UserStatus::Active);
    assert!(u.created_at >= before && u.created_at <= now());
    assert_eq!(store.get_user(&u.id).await.expect("get"), Some(u.clone()));
    assert_eq!(store.get_user("usr_missing").await.expect("get"), None);

    // Found by email in any case, with its hash.
    for form in [mixed.clone(), mixed.to_lowercase(), mixed.to_uppercase()] {
        let (found, hash) = store
            .find_user_by_email(&form)
            .await
            .expect("find")
            .expect("found");
        assert_eq!(found, u, "{form}");
        assert_eq!(hash, new_user("", "", Role::Member).password_hash);
    }
    assert_eq!(
        store
            .find_user_by_email(&email("nobody"))
            .await
            .expect("find"),
        None
    );

    assert!(matches!(
        store
            .create_user(new_user("acc_missing", &email("x"), Role::Member))
            .await,
        Err(StoreError::NotFound("account"))
    ));
    // Every role round-trips.
    for role in [Role::Owner, Role::Admin, Role::Member, Role::ReadOnly] {
        let u = store
            .create_user(new_user(&a.id, &email("role"), role))
            .await
            .expect("create");
        assert_eq!(
            store.get_user(&u.id).await.expect("get").map(|u| u.role),
            Some(role)
        );
    }
}

pub async fn user_email_is_unique_case_insensitively(store: Arc<dyn Store>) {
    let a = account(&store, "dup-a").await;
    let b = account(&store, "dup-b").await;
    let e = email("Dup");
    let first = store
        .create_user(new_user(&a.id, &e, Role::Member))
        .await
        .expect("first");
    for (acc, form) in [
        (&a.id, e.clone()),
        (&a.id, e.to_uppercase()),
        (&b.id, e.to_lowercase()),
    ] {
        assert!(
            matches!(
                store.create_user(new_user(acc, &form, Role::Owner)).await,
                Err(StoreError::Conflict(_))
            ),
            "{form} in {acc}"
        );
    }
    let (found, _) = store
        .find_user_by_email(&e)
        .await
        .expect("find")
        .expect("found");
    assert_eq!(found, first, "the refused creations changed nothing");
    let listed = store
        .list_users(Some(&b.id), &Page::default())
        .await
        .expect("list");
    assert!(listed.is_empty());
}

pub async fn users_list_and_paging(store: Arc<dyn Store>) {
    let a = account(&store, "ulist-a").await;
    let b = account(&store, "ulist-b").await;
    let mut mine = Vec::new();
    for i in 0..5 {
        let u = store
            .create_user(new_user(&a.id, &email(&format!("u{i}")), Role::Member))
            .await
            .expect("create");
        mine.push(u.id);
    }
    let other = store
        .create_user(new_user(&b.id, &email("other"), Role::Member))
        .await
        .expect("create");

    let listed = store
        .list_users(Some(&a.id), &Page::default())
        .await
        .expect("list");
    assert_eq!(
        listed.iter().map(|u| u.id.clone()).collect::<Vec<_>>(),
        mine,
        "only this account's users, in creation order"
    );
    let mut paged = Vec::new();
    let mut after = None;
    loop {
        let page = store
            .list_users(
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
        paged.extend(page.into_iter().map(|u| u.id));
        assert!(paged.len() <= 5, "paging does not end: {paged:?}");
    }
    assert_eq!(paged, mine);

    let mut all = Vec::new();
    let mut after = None;
    loop {
        let page = store
            .list_users(
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
        all.extend(page.into_iter().map(|u| u.id));
        assert!(all.len() < 100_000);
    }
    assert!(all.contains(&other.id));
    assert!(mine.iter().all(|id| all.contains(id)));
    let empty = account(&store, "no users").await;
    assert!(store
        .list_users(Some(&empty.id), &Page::default())
        .await
        .expect("list")
        .is_empty());
}

pub async fn user_update(store: Arc<dyn Store>) {
    let a = account(&store, "uupd").await;
    let e = email("upd");
    let u = store
        .create_user(new_user(&a.id, &e, Role::Member))
        .await
        .expect("create");
    let same = store
        .update_user(&u.id, UserPatch::default())
        .await
        .expect("noop");
    assert_eq!(same, u);

    let promoted = store
        .update_user(
            &u.id,
            UserPatch {
                role: Some(Role::Owner),
                ..UserPatch::default()
            },
        )
        .await
        .expect("role");
    assert_eq!(promoted.role, Role::Owner);
    assert_eq!(promoted.status, UserStatus::Active);
    assert_eq!(promoted.email, u.email);

    let disabled = store
        .update_user(
            &u.id,
            UserPatch {
                status: Some(UserStatus::Disabled),
                ..UserPatch::default()
            },
        )
        .await
        .expect("status");
    assert_eq!(disabled.status, UserStatus::Disabled);
    assert_eq!(disabled.role, Role::Owner, "other fields untouched");
    assert_eq!(
        store.get_user(&u.id).await.expect("get"),
        Some(disabled.clone())
    );

    let old_hash = new_user("", "", Role::Member).password_hash;
    let (_, hash) = store
        .find_user_by_email(&e)
        .await
        .expect("find")
        .expect("found");
    assert_eq!(hash, old_hash, "role and status leave the hash");
    let new_hash = "$argon2id$v=19$m=19456,t=2,p=1$bmV3c2FsdA$bmV3aGFzaA".to_string();
    let after = store
        .update_user(
            &u.id,
            UserPatch {
                password_hash: Some(new_hash.clone()),
                ..UserPatch::default()
            },
        )
        .await
        .expect("password");
    assert_eq!(after, disabled, "the hash is not part of the user");
    let (found, hash) = store
        .find_user_by_email(&e)
        .await
        .expect("find")
        .expect("found");
    assert_eq!(hash, new_hash);
    assert_eq!(found, disabled);

    let both = store
        .update_user(
            &u.id,
            UserPatch {
                role: Some(Role::ReadOnly),
                status: Some(UserStatus::Active),
                password_hash: None,
            },
        )
        .await
        .expect("both");
    assert_eq!(
        (both.role, both.status),
        (Role::ReadOnly, UserStatus::Active)
    );
    assert!(matches!(
        store
            .update_user(
                "usr_missing",
                UserPatch {
                    role: Some(Role::Admin),
                    ..UserPatch::default()
                }
            )
            .await,
        Err(StoreError::NotFound("user"))
    ));
}

pub async fn credential_carries_the_user(store: Arc<dyn Store>) {
    let a = account(&store, "cred-user").await;
    let u = store
        .create_user(new_user(&a.id, &email("cred"), Role::ReadOnly))
        .await
        .expect("user");
    let h = hash(100);
    let mut nk = new_key(&a.id, "users key", h);
    nk.user_id = Some(u.id.clone());
    store.create_key(nk).await.expect("key");
    let c = store
        .find_credential(&h)
        .await
        .expect("find")
        .expect("found");
    assert_eq!(c.user, Some(u.clone()));
    assert_eq!(c.key.user_id.as_deref(), Some(u.id.as_str()));

    // Role and status changes show on the next read.
    let changed = store
        .update_user(
            &u.id,
            UserPatch {
                role: Some(Role::Admin),
                status: Some(UserStatus::Disabled),
                password_hash: None,
            },
        )
        .await
        .expect("update");
    let c = store
        .find_credential(&h)
        .await
        .expect("find")
        .expect("found");
    assert_eq!(c.user, Some(changed));

    // A user id naming nobody leaves the user empty.
    let h2 = hash(101);
    let mut nk = new_key(&a.id, "ghost", h2);
    nk.user_id = Some("usr_missing".into());
    store.create_key(nk).await.expect("key");
    let c = store
        .find_credential(&h2)
        .await
        .expect("find")
        .expect("found");
    assert_eq!(c.user, None);
}
