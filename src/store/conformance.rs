//! One behaviour for every [`Store`]: this suite runs against each implementation.
//!
//! Each check is a plain `async fn` over `Arc<dyn Store>`; [`conformance!`] turns the whole list
//! into one `#[tokio::test]` per check for a backend. Adding a backend is one line:
//!
//! ```ignore
//! conformance!(redis_backend, redis_store(), tests);
//! ```
//!
//! where `redis_store()` is an `async fn` returning `(Arc<dyn Store>, Guard)`; the guard lives as
//! long as the test (a temporary directory, a child `redis-server`, ...). `tests` makes one test
//! per check on a fresh store each; `whole_suite` runs every check in turn on one store, for a
//! backend that is slow to start (the three-node Redis Cluster). Checks never assume an
//! empty store, so backends that share one database between tests still pass. The Redis backend
//! starts its own `redis-server` per test, so it must be installed.

use std::sync::Arc;

use super::*;

/// Whatever must stay alive while a store is in use.
pub type Guard = Box<dyn std::any::Any + Send>;

async fn sqlite_store() -> (Arc<dyn Store>, Guard) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store =
        crate::store::sqlite::SqliteStore::open(&dir.path().join("conformance.db")).expect("open");
    (Arc::new(store), Box::new(dir))
}

macro_rules! conformance {
    (@tests $make:expr; $($check:ident),+ $(,)?) => {
        $(
            #[tokio::test]
            async fn $check() {
                let (store, _guard) = $make.await;
                super::$check(store).await;
            }
        )+
    };
    (@whole_suite $make:expr; $($check:ident),+ $(,)?) => {
        /// Every check in turn on one store, for a backend too costly to start per check.
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn whole_suite() {
            let (store, _guard) = $make.await;
            $( super::$check(store.clone()).await; )+
        }
    };
    ($backend:ident, $make:expr, $mode:ident) => {
        mod $backend {
            use super::*;
            conformance!(@ $mode $make;
                accounts_crud,
                account_status,
                account_paging,
                keys_create_get,
                key_needs_an_account,
                key_hash_is_unique,
                keys_list_and_paging,
                key_update,
                revoked_key_cannot_come_back,
                update_missing_key,
                find_credential_by_hash,
                find_credential_sees_changes,
                last_used_never_moves_backwards,
                audit_append_and_list,
                account_plan,
                charge_credits_basic,
                charge_never_below_zero,
                adjust_and_set_credits,
                credit_conflicts,
                ledger_paging,
                key_rate_limit_override,
                users_crud,
                user_email_is_unique_case_insensitively,
                users_list_and_paging,
                user_update,
                credential_carries_the_user,
                key_resources,
                token_cutoffs_keep_the_latest,
                rotate_key_keeps_the_old_key,
                rotate_key_with_grace,
                rotate_key_refusals,
            );
        }
    };
}

conformance!(sqlite, sqlite_store(), tests);
conformance!(redis_backend, redis_store(), tests);
conformance!(redis_cluster, cluster_store(), whole_suite);

/// A `redis-server` child on a free port, killed with the guard.
struct RedisChild {
    child: std::process::Child,
    _dir: tempfile::TempDir,
}

impl Drop for RedisChild {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port below Linux's ephemeral range (32768 and up), whose cluster bus port (+10000) is free
/// too: a port from `bind(0)` can be taken as an outgoing connection's source port before
/// redis-server binds it.
fn free_port() -> u16 {
    static NEXT: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(0);
    let start = (std::process::id() % 1000) as u16 * 7;
    for _ in 0..10_000u16 {
        let step = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let port = 12_000 + start.wrapping_add(step) % 10_000;
        let free = |p: u16| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok();
        if free(port) && free(port + 10_000) {
            return port;
        }
    }
    panic!("no free port for redis-server")
}

/// Starts `redis-server` on `port` (no persistence) and waits until the port accepts.
async fn spawn_redis(port: u16, extra: &[&str]) -> RedisChild {
    let dir = tempfile::tempdir().expect("tempdir");
    let child = std::process::Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .args(extra)
        .arg("--dir")
        .arg(dir.path())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("redis-server must be installed for the Redis conformance tests");
    let guard = RedisChild { child, _dir: dir };
    // Connect only once the port answers: the client's own retries back off for seconds.
    wait_for(&format!("redis-server on port {port}"), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    })
    .await;
    guard
}

async fn redis_store() -> (Arc<dyn Store>, Guard) {
    let port = free_port();
    let guard = spawn_redis(port, &[]).await;
    let url = format!("redis://127.0.0.1:{port}");
    let store = redis::RedisStore::connect(&url, TIMEOUT)
        .await
        .expect("connect to redis-server");
    store.ping().await.expect("ping redis-server");
    (Arc::new(store), Box::new(guard))
}

const TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// A three-master Redis Cluster of `redis-server` children (`redis-cli --cluster create`),
/// killed with the guard.
async fn cluster_store() -> (Arc<dyn Store>, Guard) {
    let mut nodes = Vec::new();
    let mut urls = Vec::new();
    for _ in 0..3 {
        let port = free_port();
        let cluster = ["--cluster-enabled", "yes", "--cluster-node-timeout", "2000"];
        nodes.push(spawn_redis(port, &cluster).await);
        urls.push(format!("redis://127.0.0.1:{port}"));
    }
    let addrs: Vec<String> = urls
        .iter()
        .map(|u| u["redis://".len()..].to_string())
        .collect();
    let out = std::process::Command::new("redis-cli")
        .args(["--cluster", "create"])
        .args(&addrs)
        .args(["--cluster-replicas", "0", "--cluster-yes"])
        .output()
        .expect("redis-cli must be installed for the Redis Cluster conformance test");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("All 16384 slots covered"),
        "cluster create: {text}"
    );
    for addr in &addrs {
        let (host, port) = addr.split_once(':').expect("host:port");
        wait_for("cluster_state:ok", || {
            std::process::Command::new("redis-cli")
                .args(["-h", host, "-p", port, "CLUSTER", "INFO"])
                .output()
                .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("cluster_state:ok"))
        })
        .await;
    }
    let store = redis::RedisStore::connect_cluster(&urls, TIMEOUT)
        .await
        .expect("connect to the cluster");
    store.ping().await.expect("ping the cluster");
    (Arc::new(store), Box::new(nodes))
}

async fn wait_for(what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while !ready() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

// ------------------------------------------------------------------ helpers

fn hash(n: u8) -> KeyHash {
    let mut h = [0u8; 32];
    h[0] = n;
    // Distinct per process run as well, for backends shared between runs.
    let r: [u8; 16] = rand::random();
    h[16..].copy_from_slice(&r);
    h
}

async fn account(store: &Arc<dyn Store>, name: &str) -> Account {
    store
        .create_account(NewAccount { name: name.into() })
        .await
        .expect("create account")
}

fn new_key(account_id: &str, name: &str, h: KeyHash) -> NewKey {
    NewKey {
        account_id: account_id.into(),
        user_id: None,
        name: name.into(),
        display_prefix: "kg_test_abc123".into(),
        hash: h,
        scopes: vec!["leads:read".into(), "emails:write".into()],
        permission: Permission::ReadWrite,
        expires_at: Some(now() + 3600),
        rate_limit: None,
        resources: None,
        rotated_from: None,
    }
}

/// A unique email per call (backends may be shared between runs), in mixed case.
fn email(tag: &str) -> String {
    format!(
        "{tag}.{}@Example.COM",
        hex::encode(rand::random::<[u8; 6]>())
    )
}

fn new_user(account_id: &str, email: &str, role: Role) -> NewUser {
    NewUser {
        account_id: account_id.into(),
        email: email.into(),
        password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2g".into(),
        role,
    }
}

fn status(s: KeyStatus) -> KeyPatch {
    KeyPatch {
        status: Some(s),
        ..KeyPatch::default()
    }
}

/// Every account, paging through the whole list `limit` at a time.
async fn all_accounts(store: &Arc<dyn Store>, limit: u32) -> Vec<Account> {
    let mut out: Vec<Account> = Vec::new();
    let mut after = None;
    loop {
        let page = store
            .list_accounts(&Page {
                after: after.clone(),
                limit,
            })
            .await
            .expect("list accounts");
        assert!(page.len() <= limit as usize, "page larger than its limit");
        let Some(last) = page.last() else { break };
        after = Some(last.id.clone());
        out.extend(page);
        assert!(out.len() < 100_000, "paging does not end");
    }
    out
}

// ------------------------------------------------------------------ accounts

async fn accounts_crud(store: Arc<dyn Store>) {
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

async fn account_status(store: Arc<dyn Store>) {
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

async fn account_paging(store: Arc<dyn Store>) {
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

// ------------------------------------------------------------------ keys

async fn keys_create_get(store: Arc<dyn Store>) {
    let a = account(&store, "k").await;
    let h = hash(1);
    let before = now();
    let k = store
        .create_key(new_key(&a.id, "primary", h))
        .await
        .expect("create key");
    assert!(k.id.starts_with("key_"), "{}", k.id);
    assert_eq!(k.account_id, a.id);
    assert_eq!(k.user_id, None);
    assert_eq!(k.name, "primary");
    assert_eq!(k.display_prefix, "kg_test_abc123");
    assert_eq!(k.hash, h);
    assert_eq!(k.scopes, vec!["leads:read", "emails:write"]);
    assert_eq!(k.permission, Permission::ReadWrite);
    assert_eq!(k.status, KeyStatus::Active);
    assert!(k.created_at >= before);
    assert!(k.expires_at.is_some());
    assert_eq!(k.last_used_at, None);
    assert_eq!(store.get_key(&k.id).await.expect("get"), Some(k.clone()));
    assert_eq!(store.get_key("key_missing").await.expect("get"), None);

    // A read-only key with a user, no scopes and no expiry round-trips too.
    let mut nk = new_key(&a.id, "ro", hash(2));
    nk.permission = Permission::Read;
    nk.scopes = Vec::new();
    nk.expires_at = None;
    nk.user_id = Some("usr_1".into());
    let k2 = store.create_key(nk).await.expect("create");
    let got = store.get_key(&k2.id).await.expect("get").expect("found");
    assert_eq!(got, k2);
    assert_eq!(got.permission, Permission::Read);
    assert!(got.scopes.is_empty());
    assert_eq!(got.expires_at, None);
    assert_eq!(got.user_id.as_deref(), Some("usr_1"));
}

async fn key_needs_an_account(store: Arc<dyn Store>) {
    assert!(matches!(
        store.create_key(new_key("acc_missing", "x", hash(3))).await,
        Err(StoreError::NotFound(_))
    ));
}

async fn key_hash_is_unique(store: Arc<dyn Store>) {
    let a = account(&store, "dup").await;
    let h = hash(4);
    store
        .create_key(new_key(&a.id, "one", h))
        .await
        .expect("first");
    assert!(matches!(
        store.create_key(new_key(&a.id, "two", h)).await,
        Err(StoreError::Conflict(_))
    ));
    let keys = store
        .list_keys(Some(&a.id), &Page::default())
        .await
        .expect("list");
    assert_eq!(keys.len(), 1);
}

async fn keys_list_and_paging(store: Arc<dyn Store>) {
    let a = account(&store, "list-a").await;
    let b = account(&store, "list-b").await;
    let mut mine = Vec::new();
    for i in 0..5 {
        let k = store
            .create_key(new_key(&a.id, &format!("k{i}"), hash(10 + i)))
            .await
            .expect("create");
        mine.push(k.id);
    }
    let other = store
        .create_key(new_key(&b.id, "other", hash(20)))
        .await
        .expect("create");

    let listed = store
        .list_keys(Some(&a.id), &Page::default())
        .await
        .expect("list");
    let ids: Vec<String> = listed.iter().map(|k| k.id.clone()).collect();
    assert_eq!(ids, mine, "only this account's keys, in creation order");
    assert!(listed.iter().all(|k| k.account_id == a.id));

    // Paging two at a time.
    let mut paged = Vec::new();
    let mut after = None;
    loop {
        let page = store
            .list_keys(
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
        paged.extend(page.into_iter().map(|k| k.id));
        assert!(paged.len() <= 5, "paging does not end: {paged:?}");
    }
    assert_eq!(paged, mine);

    // Unfiltered lists include both accounts' keys.
    let mut all = Vec::new();
    let mut after = None;
    loop {
        let page = store
            .list_keys(
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
        all.extend(page.into_iter().map(|k| k.id));
        assert!(all.len() < 100_000);
    }
    assert!(all.contains(&other.id));
    assert!(mine.iter().all(|id| all.contains(id)));

    let empty = account(&store, "none").await;
    assert!(store
        .list_keys(Some(&empty.id), &Page::default())
        .await
        .expect("list")
        .is_empty());
}

async fn key_update(store: Arc<dyn Store>) {
    let a = account(&store, "upd").await;
    let k = store
        .create_key(new_key(&a.id, "before", hash(30)))
        .await
        .expect("create");

    // An empty patch changes nothing.
    let same = store
        .update_key(&k.id, KeyPatch::default())
        .await
        .expect("noop");
    assert_eq!(same, k);

    let renamed = store
        .update_key(
            &k.id,
            KeyPatch {
                name: Some("after".into()),
                ..KeyPatch::default()
            },
        )
        .await
        .expect("rename");
    assert_eq!(renamed.name, "after");
    assert_eq!(renamed.scopes, k.scopes, "other fields untouched");
    assert_eq!(renamed.expires_at, k.expires_at);

    let scoped = store
        .update_key(
            &k.id,
            KeyPatch {
                scopes: Some(vec!["x:y".into()]),
                expires_at: Some(Some(12345)),
                ..KeyPatch::default()
            },
        )
        .await
        .expect("scopes");
    assert_eq!(scoped.scopes, vec!["x:y"]);
    assert_eq!(scoped.expires_at, Some(12345));
    assert_eq!(scoped.name, "after");

    let cleared = store
        .update_key(
            &k.id,
            KeyPatch {
                expires_at: Some(None),
                scopes: Some(Vec::new()),
                ..KeyPatch::default()
            },
        )
        .await
        .expect("clear");
    assert_eq!(cleared.expires_at, None);
    assert!(cleared.scopes.is_empty());

    let disabled = store
        .update_key(&k.id, status(KeyStatus::Disabled))
        .await
        .expect("disable");
    assert_eq!(disabled.status, KeyStatus::Disabled);
    let enabled = store
        .update_key(&k.id, status(KeyStatus::Active))
        .await
        .expect("enable");
    assert_eq!(enabled.status, KeyStatus::Active);

    // What update returns is what get reads.
    assert_eq!(store.get_key(&k.id).await.expect("get"), Some(enabled));
}

async fn revoked_key_cannot_come_back(store: Arc<dyn Store>) {
    let a = account(&store, "rev").await;
    let k = store
        .create_key(new_key(&a.id, "r", hash(40)))
        .await
        .expect("create");
    let revoked = store
        .update_key(&k.id, status(KeyStatus::Revoked))
        .await
        .expect("revoke");
    assert_eq!(revoked.status, KeyStatus::Revoked);
    for s in [KeyStatus::Active, KeyStatus::Disabled] {
        assert!(
            matches!(
                store.update_key(&k.id, status(s)).await,
                Err(StoreError::Conflict(_))
            ),
            "revoked -> {s:?} must conflict"
        );
        assert_eq!(
            store.get_key(&k.id).await.expect("get").map(|k| k.status),
            Some(KeyStatus::Revoked)
        );
    }
    // Revoking again, and renaming, are fine.
    store
        .update_key(&k.id, status(KeyStatus::Revoked))
        .await
        .expect("revoke twice");
    let renamed = store
        .update_key(
            &k.id,
            KeyPatch {
                name: Some("old".into()),
                ..KeyPatch::default()
            },
        )
        .await
        .expect("rename revoked");
    assert_eq!(renamed.status, KeyStatus::Revoked);
    assert_eq!(renamed.name, "old");
}

async fn update_missing_key(store: Arc<dyn Store>) {
    assert!(matches!(
        store
            .update_key("key_missing", status(KeyStatus::Revoked))
            .await,
        Err(StoreError::NotFound(_))
    ));
}

// ------------------------------------------------------------------ request path

async fn find_credential_by_hash(store: Arc<dyn Store>) {
    let a = account(&store, "find").await;
    let h = hash(50);
    let k = store
        .create_key(new_key(&a.id, "f", h))
        .await
        .expect("create");
    let c = store
        .find_credential(&h)
        .await
        .expect("find")
        .expect("found");
    assert_eq!(c.key, k);
    assert_eq!(c.account, a);
    assert_eq!(c.user, None, "a key without a user");
    assert_eq!(store.find_credential(&hash(51)).await.expect("find"), None);
}

async fn find_credential_sees_changes(store: Arc<dyn Store>) {
    let a = account(&store, "changes").await;
    let h = hash(60);
    let k = store
        .create_key(new_key(&a.id, "c", h))
        .await
        .expect("create");
    store
        .update_key(&k.id, status(KeyStatus::Disabled))
        .await
        .expect("disable");
    store
        .set_account_status(&a.id, AccountStatus::Deleted)
        .await
        .expect("delete");
    let c = store
        .find_credential(&h)
        .await
        .expect("find")
        .expect("a deleted account's key is still found");
    assert_eq!(c.key.status, KeyStatus::Disabled);
    assert_eq!(c.account.status, AccountStatus::Deleted);
}

async fn last_used_never_moves_backwards(store: Arc<dyn Store>) {
    let a = account(&store, "lu").await;
    let k1 = store
        .create_key(new_key(&a.id, "1", hash(70)))
        .await
        .expect("create");
    let k2 = store
        .create_key(new_key(&a.id, "2", hash(71)))
        .await
        .expect("create");
    let last = |store: Arc<dyn Store>, id: String| async move {
        store
            .get_key(&id)
            .await
            .expect("get")
            .expect("found")
            .last_used_at
    };

    store
        .record_last_used(&[(k1.id.clone(), 1000), (k2.id.clone(), 500)])
        .await
        .expect("record");
    assert_eq!(last(store.clone(), k1.id.clone()).await, Some(1000));
    assert_eq!(last(store.clone(), k2.id.clone()).await, Some(500));

    store
        .record_last_used(&[(k1.id.clone(), 900), (k2.id.clone(), 600)])
        .await
        .expect("record");
    assert_eq!(
        last(store.clone(), k1.id.clone()).await,
        Some(1000),
        "older time ignored"
    );
    assert_eq!(last(store.clone(), k2.id.clone()).await, Some(600));

    // Unknown ids in a batch are ignored, and do not stop the rest.
    store
        .record_last_used(&[("key_missing".into(), 5000), (k1.id.clone(), 2000)])
        .await
        .expect("record with unknown id");
    assert_eq!(last(store.clone(), k1.id.clone()).await, Some(2000));
    assert_eq!(store.get_key("key_missing").await.expect("get"), None);

    // find_credential reports it too.
    let c = store
        .find_credential(&k1.hash)
        .await
        .expect("find")
        .expect("found");
    assert_eq!(c.key.last_used_at, Some(2000));

    // Other updates leave it alone.
    let renamed = store
        .update_key(
            &k1.id,
            KeyPatch {
                name: Some("x".into()),
                ..KeyPatch::default()
            },
        )
        .await
        .expect("rename");
    assert_eq!(renamed.last_used_at, Some(2000));
    store.record_last_used(&[]).await.expect("empty batch");
}

// ------------------------------------------------------------------ audit

async fn audit_append_and_list(store: Arc<dyn Store>) {
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

// ------------------------------------------------------------------ plans, credits, limits

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

async fn account_plan(store: Arc<dyn Store>) {
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

async fn charge_credits_basic(store: Arc<dyn Store>) {
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

async fn charge_never_below_zero(store: Arc<dyn Store>) {
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

async fn adjust_and_set_credits(store: Arc<dyn Store>) {
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

async fn credit_conflicts(store: Arc<dyn Store>) {
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

async fn ledger_paging(store: Arc<dyn Store>) {
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

async fn key_rate_limit_override(store: Arc<dyn Store>) {
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

// ------------------------------------------------------------------ users

async fn users_crud(store: Arc<dyn Store>) {
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

async fn user_email_is_unique_case_insensitively(store: Arc<dyn Store>) {
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

async fn users_list_and_paging(store: Arc<dyn Store>) {
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

async fn user_update(store: Arc<dyn Store>) {
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

async fn credential_carries_the_user(store: Arc<dyn Store>) {
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

// ------------------------------------------------------------------ resources

async fn key_resources(store: Arc<dyn Store>) {
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

// ------------------------------------------------------------------ token cut-offs

async fn token_cutoffs_keep_the_latest(store: Arc<dyn Store>) {
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

// ------------------------------------------------------------------ rotation

async fn rotate_key_keeps_the_old_key(store: Arc<dyn Store>) {
    let a = account(&store, "rot").await;
    let mut nk = new_key(&a.id, "rotating", hash(120));
    nk.resources = Some(Resources::from([(
        "projects".to_string(),
        vec!["p1".to_string()],
    )]));
    let old = store.create_key(nk).await.expect("create");
    let mut successor = new_key(&a.id, "rotating", hash(121));
    successor.resources = old.resources.clone();
    // Whatever the caller says, the successor points at the key it replaced.
    successor.rotated_from = None;
    let (new, old_after) = store
        .rotate_key(&old.id, successor, None)
        .await
        .expect("rotate");
    assert_ne!(new.id, old.id);
    assert_eq!(new.rotated_from.as_deref(), Some(old.id.as_str()));
    assert_eq!(new.account_id, old.account_id);
    assert_eq!(new.status, KeyStatus::Active);
    assert_eq!(new.resources, old.resources);
    assert_eq!(
        old_after, old,
        "without a grace period the old key is untouched"
    );
    assert_eq!(
        store.get_key(&new.id).await.expect("get"),
        Some(new.clone())
    );
    assert_eq!(
        store.get_key(&old.id).await.expect("get"),
        Some(old.clone())
    );
    // Both are found by their hashes.
    let c = store
        .find_credential(&new.hash)
        .await
        .expect("find")
        .expect("new found");
    assert_eq!(c.key, new);
    let c = store
        .find_credential(&old.hash)
        .await
        .expect("find")
        .expect("old found");
    assert_eq!(c.key, old);
    let listed: Vec<String> = store
        .list_keys(Some(&a.id), &Page::default())
        .await
        .expect("list")
        .into_iter()
        .map(|k| k.id)
        .collect();
    assert_eq!(listed, vec![old.id.clone(), new.id.clone()]);

    // A successor can itself be rotated, and a disabled key too.
    store
        .update_key(&new.id, status(KeyStatus::Disabled))
        .await
        .expect("disable");
    let (third, _) = store
        .rotate_key(&new.id, new_key(&a.id, "third", hash(122)), None)
        .await
        .expect("rotate again");
    assert_eq!(third.rotated_from.as_deref(), Some(new.id.as_str()));
    assert_eq!(third.status, KeyStatus::Active);
}

async fn rotate_key_with_grace(store: Arc<dyn Store>) {
    let a = account(&store, "grace").await;
    let t = now();

    // No expiry: the grace end becomes it.
    let mut nk = new_key(&a.id, "forever", hash(130));
    nk.expires_at = None;
    let old = store.create_key(nk).await.expect("create");
    let (_, after) = store
        .rotate_key(&old.id, new_key(&a.id, "n", hash(131)), Some(t + 60))
        .await
        .expect("rotate");
    assert_eq!(after.expires_at, Some(t + 60));
    assert_eq!(after.status, KeyStatus::Active);
    assert_eq!(store.get_key(&old.id).await.expect("get"), Some(after));

    // A later expiry is brought forward.
    let mut nk = new_key(&a.id, "later", hash(132));
    nk.expires_at = Some(t + 7200);
    let old = store.create_key(nk).await.expect("create");
    let (_, after) = store
        .rotate_key(&old.id, new_key(&a.id, "n", hash(133)), Some(t + 30))
        .await
        .expect("rotate");
    assert_eq!(after.expires_at, Some(t + 30));

    // An earlier expiry is kept.
    let mut nk = new_key(&a.id, "sooner", hash(134));
    nk.expires_at = Some(t + 10);
    let old = store.create_key(nk).await.expect("create");
    let (_, after) = store
        .rotate_key(&old.id, new_key(&a.id, "n", hash(135)), Some(t + 3600))
        .await
        .expect("rotate");
    assert_eq!(after.expires_at, Some(t + 10));
    let c = store
        .find_credential(&old.hash)
        .await
        .expect("find")
        .expect("found");
    assert_eq!(c.key.expires_at, Some(t + 10));
}

async fn rotate_key_refusals(store: Arc<dyn Store>) {
    let a = account(&store, "refuse").await;
    let b = account(&store, "refuse-other").await;
    let count = |store: Arc<dyn Store>, id: String| async move {
        store
            .list_keys(Some(&id), &Page::default())
            .await
            .expect("list")
            .len()
    };
    assert!(matches!(
        store
            .rotate_key("key_missing", new_key(&a.id, "n", hash(140)), None)
            .await,
        Err(StoreError::NotFound(_))
    ));

    let old = store
        .create_key(new_key(&a.id, "old", hash(141)))
        .await
        .expect("create");
    // Another account's successor.
    assert!(matches!(
        store
            .rotate_key(&old.id, new_key(&b.id, "n", hash(142)), Some(now()))
            .await,
        Err(StoreError::Conflict(_))
    ));
    // A hash already in use.
    assert!(matches!(
        store
            .rotate_key(&old.id, new_key(&a.id, "n", old.hash), Some(now()))
            .await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(count(store.clone(), a.id.clone()).await, 1);
    assert_eq!(count(store.clone(), b.id.clone()).await, 0);
    assert_eq!(
        store.get_key(&old.id).await.expect("get"),
        Some(old.clone()),
        "a refused rotation leaves the old key alone"
    );

    store
        .update_key(&old.id, status(KeyStatus::Revoked))
        .await
        .expect("revoke");
    assert!(matches!(
        store
            .rotate_key(&old.id, new_key(&a.id, "n", hash(143)), Some(now() + 60))
            .await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(count(store.clone(), a.id.clone()).await, 1, "no successor");
    assert_eq!(
        store
            .get_key(&old.id)
            .await
            .expect("get")
            .map(|k| k.expires_at),
        Some(old.expires_at)
    );
}
