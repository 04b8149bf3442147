//! Token cut-offs.

use std::sync::Arc;

use keygate::store::*;

pub async fn token_cutoffs_keep_the_latest(store: Arc<dyn Store>) {
    let tag = hex::encode(rand::random::<[u8; 6]>());
    let (a, b, c) = (
        format!("key_cut_{tag}"),
        format!("acc_cut_{tag}"),
        format!("usr_cut_{tag}"),
    );
    let ours = |all: Vec<(String, i64)>| -> Vec<(String, i64)> {
        all.into_iter().filter(|(s, _)| s.ends_with(&tag)).collect()
    };
    assert!(ours(store.token_cutoffs(0).await.expect("read")).is_empty());

    store.set_token_cutoff(&a, 1_000).await.expect("set");
    store.set_token_cutoff(&b, 2_000).await.expect("set");
    store.set_token_cutoff(&a, 500).await.expect("earlier");
    let got = ours(store.token_cutoffs(0).await.expect("read"));
    assert_eq!(
        got,
        vec![(a.clone(), 1_000), (b.clone(), 2_000)],
        "an earlier one never wins"
    );

    store.set_token_cutoff(&a, 3_000).await.expect("later");
    store.set_token_cutoff(&c, 2_000).await.expect("set");
    let mut got = ours(store.token_cutoffs(2_000).await.expect("read"));
    got.sort();
    let mut want = vec![(a.clone(), 3_000), (b.clone(), 2_000), (c.clone(), 2_000)];
    want.sort();
    assert_eq!(got, want, "at or after `since`");
    assert_eq!(
        ours(store.token_cutoffs(2_001).await.expect("read")),
        vec![(a.clone(), 3_000)]
    );
    assert!(ours(store.token_cutoffs(3_001).await.expect("read")).is_empty());
    let now = now();
    store.set_token_cutoff(&b, now).await.expect("now");
    assert_eq!(
        ours(store.token_cutoffs(now).await.expect("read")),
        vec![(b, now)]
    );
}
