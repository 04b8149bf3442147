//! Plans, credits and the ledger, key limits.

use std::sync::Arc;

use keygate::store::*;

use crate::helpers::*;

/// Every ledger entry of an account, paging `limit` at a time.
async fn whole_ledger(store: &Arc<dyn Store>, account_id: &str, limit: u32) -> Vec<LedgerEntry> {
    let mut out: Vec<LedgerEntry> = Vec::new();
    let mut after = None;
    loop {
        let page = store
            .list_ledger(
                account_id,
                &Page {
                    after: after.clone(),
                    limit,
                },
            )
            .await
            .expect("list ledger");
        assert!(page.len() <= limit as usize, "page larger than its limit");
        let Some(last) = page.last() else { break };
        after = Some(last.id.to_string());
        out.extend(page);
        assert!(out.len() < 100_000, "paging does not end");
    }
    out
}

async fn balance(store: &Arc<dyn Store>, account_id: &str) -> i64 {
    store
        .get_account(account_id)
        .await
        .expect("get")
        .expect("found")
        .credits
}

pub async fn account_plan(store: Arc<dyn Store>) {
    let a = account(&store, "plan").await;
    let pro = store
        .set_account_plan(&a.id, Some("pro".into()))
        .await
        .expect("set plan");
    assert_eq!(pro.plan.as_deref(), Some("pro"));
    assert_eq!(
        (pro.id.as_str(), pro.name.as_str()),
        (a.id.as_str(), "plan")
    );
    assert_eq!(pro.status, AccountStatus::Active);
    assert_eq!(
        store.get_account(&a.id).await.expect("get"),
        Some(pro.clone())
    );
    let listed = all_accounts(&store, 1000).await;
    assert!(listed.contains(&pro), "lists carry the plan");

    let team = store
        .set_account_plan(&a.id, Some("team".into()))
        .await
        .expect("change plan");
    assert_eq!(team.plan.as_deref(), Some("team"));

    // The credential read sees the plan too.
    let h = hash(80);
    store
        .create_key(new_key(&a.id, "p", h))
        .await
        .expect("create");
    let c = store
        .find_credential(&h)
        .await
        .expect("find")
        .expect("found");
    assert_eq!(c.account.plan.as_deref(), Some("team"));

    let blank = store
        .set_account_plan(&a.id, Some(String::new()))
        .await
        .expect("blank");
    assert_eq!(blank.plan, None, "an empty name is no plan");
    store
        .set_account_plan(&a.id, Some("team".into()))
        .await
        .expect("set");
    let cleared = store.set_account_plan(&a.id, None).await.expect("clear");
    assert_eq!(cleared.plan, None);
    assert_eq!(
        store.get_account(&a.id).await.expect("get").map(|x| x.plan),
        Some(None)
    );
    // Status changes leave the plan alone, and the other way round.
    store
        .set_account_plan(&a.id, Some("pro".into()))
        .await
        .expect("set");
    let suspended = store
        .set_account_status(&a.id, AccountStatus::Suspended)
        .await
        .expect("suspend");
    assert_eq!(suspended.plan.as_deref(), Some("pro"));
    assert!(matches!(
        store
            .set_account_plan("acc_missing", Some("pro".into()))
            .await,
        Err(StoreError::NotFound(_))
    ));
}

pub async fn charge_credits_basic(store: Arc<dyn Store>) {
    let a = account(&store, "charge").await;
    assert_eq!(
        store
            .charge_credits(&a.id, 1, Some("key_x"), "lookup")
            .await
            .expect("charge"),
        ChargeOutcome::Insufficient { balance: 0 },
        "a new account has nothing to charge"
    );
    assert_eq!(
        store
            .adjust_credits(&a.id, 10, None, "top-up")
            .await
            .expect("top up"),
        10
    );
    let before = now();
    assert_eq!(
        store
            .charge_credits(&a.id, 3, Some("key_x"), "lookup")
            .await
            .expect("charge"),
        ChargeOutcome::Charged { balance: 7 }
    );
    assert_eq!(
        store
            .charge_credits(&a.id, 8, Some("key_x"), "lookup")
            .await
            .expect("charge"),
        ChargeOutcome::Insufficient { balance: 7 }
    );
    assert_eq!(
        store
            .charge_credits(&a.id, i64::MAX, None, "huge")
            .await
            .expect("charge"),
        ChargeOutcome::Insufficient { balance: 7 }
    );
    assert_eq!(
        balance(&store, &a.id).await,
        7,
        "a short charge takes nothing"
    );
    assert_eq!(
        store
            .charge_credits(&a.id, 7, None, "all of it")
            .await
            .expect("charge"),
        ChargeOutcome::Charged { balance: 0 }
    );
    assert_eq!(balance(&store, &a.id).await, 0);

    let ledger = whole_ledger(&store, &a.id, 100).await;
    let summary: Vec<(i64, &str, Option<&str>, i64)> = ledger
        .iter()
        .map(|e| {
            (
                e.delta,
                e.reason.as_str(),
                e.key_id.as_deref(),
                e.balance_after,
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            (10, "top-up", None, 10),
            (-3, "lookup", Some("key_x"), 7),
            (-7, "all of it", None, 0),
        ],
        "one entry per change, none for refused charges"
    );
    for e in &ledger {
        assert_eq!(e.account_id, a.id);
        assert!(e.at >= before - 1 && e.at <= now());
    }

    assert!(matches!(
        store.charge_credits("acc_missing", 1, None, "x").await,
        Err(StoreError::NotFound(_))
    ));
    for bad in [0, -1] {
        assert!(
            matches!(
                store.charge_credits(&a.id, bad, None, "x").await,
                Err(StoreError::Conflict(_))
            ),
            "charge of {bad}"
        );
    }
}

pub async fn charge_never_below_zero(store: Arc<dyn Store>) {
    let a = account(&store, "race").await;
    store.set_credits(&a.id, 50, "start").await.expect("set");
    let mut tasks = Vec::new();
    for i in 0..200 {
        let store = store.clone();
        let id = a.id.clone();
        tasks.push(tokio::spawn(async move {
            store
                .charge_credits(&id, 1, Some(&format!("key_{i}")), "race")
                .await
        }));
    }
    let mut charged = Vec::new();
    let mut short = 0;
    for t in tasks {
        match t.await.expect("task").expect("charge") {
            ChargeOutcome::Charged { balance } => {
                assert!(balance >= 0);
                charged.push(balance);
            }
            ChargeOutcome::Insufficient { balance } => {
                assert_eq!(balance, 0, "short only once it is all spent");
                short += 1;
            }
        }
    }
    assert_eq!(charged.len(), 50, "exactly the balance is spent");
    assert_eq!(short, 150);
    charged.sort_unstable();
    assert_eq!(
        charged,
        (0..50).collect::<Vec<i64>>(),
        "each balance seen once"
    );
    assert_eq!(balance(&store, &a.id).await, 0);

    let ledger = whole_ledger(&store, &a.id, 7).await;
    assert_eq!(ledger.len(), 51, "the set and 50 charges");
    assert_eq!(
        ledger.iter().map(|e| e.delta).sum::<i64>(),
        0,
        "sums to the change"
    );
    assert!(ledger.windows(2).all(|w| w[0].id < w[1].id), "oldest first");
    // Each entry's balance follows from the one before.
    let mut running = 0;
    for e in &ledger {
        running += e.delta;
        assert_eq!(e.balance_after, running, "{e:?}");
    }
}

pub async fn adjust_and_set_credits(store: Arc<dyn Store>) {
    let a = account(&store, "adjust").await;
    assert_eq!(
        store
            .adjust_credits(&a.id, 100, None, "top-up")
            .await
            .expect("top up"),
        100
    );
    assert_eq!(
        store
            .adjust_credits(&a.id, -30, Some("key_r"), "correction")
            .await
            .expect("deduct"),
        70
    );
    assert_eq!(
        store
            .adjust_credits(&a.id, 5, Some("key_r"), "refund")
            .await
            .expect("refund"),
        75
    );
    assert_eq!(store.set_credits(&a.id, 5, "reset").await.expect("set"), 5);
    assert_eq!(
        store.set_credits(&a.id, 40, "raise").await.expect("set"),
        40
    );
    // Setting the same balance is no change: no entry.
    assert_eq!(store.set_credits(&a.id, 40, "same").await.expect("set"), 40);
    assert_eq!(
        store
            .set_credits(&a.id, MAX_CREDITS, "max")
            .await
            .expect("set max"),
        MAX_CREDITS
    );
    assert_eq!(store.set_credits(&a.id, 0, "zero").await.expect("set"), 0);
    assert_eq!(balance(&store, &a.id).await, 0);

    let ledger = whole_ledger(&store, &a.id, 100).await;
    let summary: Vec<(i64, &str, Option<&str>, i64)> = ledger
        .iter()
        .map(|e| {
            (
                e.delta,
                e.reason.as_str(),
                e.key_id.as_deref(),
                e.balance_after,
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            (100, "top-up", None, 100),
            (-30, "correction", Some("key_r"), 70),
            (5, "refund", Some("key_r"), 75),
            (-70, "reset", None, 5),
            (35, "raise", None, 40),
            (MAX_CREDITS - 40, "max", None, MAX_CREDITS),
            (-MAX_CREDITS, "zero", None, 0),
        ]
    );
    // Reasons are stored as given, quotes and all.
    store
        .adjust_credits(&a.id, 1, None, "say \"hi\" \\ é")
        .await
        .expect("odd reason");
    let last = whole_ledger(&store, &a.id, 100).await.pop().expect("entry");
    assert_eq!(last.reason, "say \"hi\" \\ é");
    assert_eq!(last.balance_after, 1);
}

pub async fn credit_conflicts(store: Arc<dyn Store>) {
    let a = account(&store, "conflicts").await;
    store
        .adjust_credits(&a.id, 10, None, "top-up")
        .await
        .expect("top up");
    let refused: Vec<(&str, StoreResult<i64>)> = vec![
        (
            "below zero",
            store.adjust_credits(&a.id, -11, None, "x").await,
        ),
        (
            "far below zero",
            store.adjust_credits(&a.id, i64::MIN, None, "x").await,
        ),
        (
            "zero delta",
            store.adjust_credits(&a.id, 0, None, "x").await,
        ),
        (
            "past the maximum",
            store.adjust_credits(&a.id, MAX_CREDITS, None, "x").await,
        ),
        (
            "far past the maximum",
            store.adjust_credits(&a.id, i64::MAX, None, "x").await,
        ),
        ("negative balance", store.set_credits(&a.id, -1, "x").await),
        (
            "balance past the maximum",
            store.set_credits(&a.id, MAX_CREDITS + 1, "x").await,
        ),
    ];
    for (what, result) in refused {
        assert!(
            matches!(result, Err(StoreError::Conflict(_))),
            "{what}: {result:?}"
        );
    }
    assert_eq!(
        balance(&store, &a.id).await,
        10,
        "refused changes change nothing"
    );
    assert_eq!(
        whole_ledger(&store, &a.id, 100).await.len(),
        1,
        "and write no entry"
    );
    // Down to exactly zero is fine.
    assert_eq!(
        store
            .adjust_credits(&a.id, -10, None, "all")
            .await
            .expect("to zero"),
        0
    );

    assert!(matches!(
        store.adjust_credits("acc_missing", 1, None, "x").await,
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        store.set_credits("acc_missing", 1, "x").await,
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        store.list_ledger("acc_missing", &Page::default()).await,
        Err(StoreError::NotFound(_))
    ));
}

pub async fn ledger_paging(store: Arc<dyn Store>) {
    let a = account(&store, "ledger-a").await;
    let b = account(&store, "ledger-b").await;
    assert!(store
        .list_ledger(&a.id, &Page::default())
        .await
        .expect("empty")
        .is_empty());
    for i in 1..=5 {
        store
            .adjust_credits(&a.id, i, None, &format!("a{i}"))
            .await
            .expect("a");
        store
            .adjust_credits(&b.id, 100 * i, None, &format!("b{i}"))
            .await
            .expect("b");
    }
    let all = store
        .list_ledger(&a.id, &Page::default())
        .await
        .expect("list");
    let reasons: Vec<&str> = all.iter().map(|e| e.reason.as_str()).collect();
    assert_eq!(
        reasons,
        ["a1", "a2", "a3", "a4", "a5"],
        "only this account's, oldest first"
    );
    assert!(all.iter().all(|e| e.account_id == a.id));
    assert!(all.windows(2).all(|w| w[0].id < w[1].id));
    assert_eq!(
        all.iter().map(|e| e.balance_after).collect::<Vec<_>>(),
        [1, 3, 6, 10, 15]
    );

    for limit in [1, 2, 3, 5, 6] {
        assert_eq!(
            whole_ledger(&store, &a.id, limit).await,
            all,
            "limit {limit}"
        );
    }
    let page = store
        .list_ledger(
            &a.id,
            &Page {
                after: Some(all[1].id.to_string()),
                limit: 2,
            },
        )
        .await
        .expect("page");
    assert_eq!(page, all[2..4].to_vec());
    let past_the_end = store
        .list_ledger(
            &a.id,
            &Page {
                after: Some(all[4].id.to_string()),
                limit: 10,
            },
        )
        .await
        .expect("page");
    assert!(past_the_end.is_empty());
    let b_ledger = whole_ledger(&store, &b.id, 2).await;
    assert_eq!(b_ledger.len(), 5);
    assert_eq!(b_ledger.last().map(|e| e.balance_after), Some(1500));
    assert!(matches!(
        store
            .list_ledger(
                &a.id,
                &Page {
                    after: Some("not-a-number".into()),
                    limit: 1,
                },
            )
            .await,
        Err(StoreError::Conflict(_))
    ));
}

pub async fn key_rate_limit_override(store: Arc<dyn Store>) {
    let a = account(&store, "limits").await;
    let limit = RateLimit {
        requests: 10,
        per_seconds: 60,
        burst: 20,
    };
    let mut nk = new_key(&a.id, "limited", hash(90));
    nk.rate_limit = Some(limit);
    let k = store.create_key(nk).await.expect("create");
    assert_eq!(k.rate_limit, Some(limit));
    assert_eq!(store.get_key(&k.id).await.expect("get"), Some(k.clone()));
    let c = store
        .find_credential(&k.hash)
        .await
        .expect("find")
        .expect("found");
    assert_eq!(c.key.rate_limit, Some(limit));

    // Other updates leave it alone.
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
    assert_eq!(renamed.rate_limit, Some(limit));

    let other = RateLimit {
        requests: 1,
        per_seconds: 1,
        burst: 1,
    };
    let updated = store
        .update_key(
            &k.id,
            KeyPatch {
                rate_limit: Some(Some(other)),
                ..KeyPatch::default()
            },
        )
        .await
        .expect("update limit");
    assert_eq!(updated.rate_limit, Some(other));
    assert_eq!(updated.name, "renamed");
    assert_eq!(store.get_key(&k.id).await.expect("get"), Some(updated));

    let cleared = store
        .update_key(
            &k.id,
            KeyPatch {
                rate_limit: Some(None),
                ..KeyPatch::default()
            },
        )
        .await
        .expect("clear limit");
    assert_eq!(cleared.rate_limit, None);
    assert_eq!(store.get_key(&k.id).await.expect("get"), Some(cleared));

    let plain = store
        .create_key(new_key(&a.id, "plain", hash(91)))
        .await
        .expect("create");
    assert_eq!(plain.rate_limit, None);
    let listed = store
        .list_keys(Some(&a.id), &Page::default())
        .await
        .expect("list");
    assert_eq!(listed.len(), 2);
    assert!(listed.iter().all(|k| k.rate_limit.is_none()));
}
