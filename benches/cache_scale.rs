//! A million cached keys (issue 13): the validation cache's memory, and a hot key's throughput
//! while other keys and accounts are written.
//!
//! Seeds a SQLite store with `KEYGATE_BENCH_KEYS` keys (default 1,000,000; ten per account,
//! `KEYGATE_BENCH_KEYS_PER_ACCOUNT`), loads every one into the key cache through its load path
//! (`KeyCache::get_or_load`, as a request's miss does) and prints the process' RSS (`VmRSS` in
//! `/proc/self/status`) before and after. Then `KEYGATE_BENCH_HOT_THREADS` threads (default 1)
//! decide requests for one hot key through the gate, as `benches/decision.rs` does, while one
//! caller makes `KEYGATE_BENCH_WRITES` writes (default 10,000) through the key service, each
//! invalidating as in production, and looks the written keys up again as their next request
//! would (so the cache stays full): first key creations and revocations, then account suspensions
//! and reactivations. The hot key's throughput during the writes and in the second right after
//! them is printed as a ratio to the throughput before them, and the RSS after each round.
//!
//! Run: `cargo bench --bench cache_scale` (about two minutes). Under `cargo test --all-targets`
//! (no `--bench` argument) it runs the same steps on 2,000 keys and 100 writes, without timing.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{HeaderMap, HeaderValue};

use keygate::cache::Lookup;
use keygate::gate::{Decision, Request};
use keygate::keys::KeyHash;
use keygate::keyservice::{Actor, NewKeyInput};
use keygate::store::{
    AccountStatus, Directory, ImportOutcome, KeyStatus, NewAccount, NewKey, Permission,
};
use keygate::test_util::TestGate;

/// The allocator the keygate binary runs with, so the RSS is the one production would see.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const CONFIG: &str = r#"
[server]
data_dir = "unused"

[keys]
prefix = "kg_bench_"

[cache]
# Longer than any run, so no entry expires mid-measurement.
ttl_seconds = 3600
max_entries = MAX_ENTRIES

[upstreams.api]
address = "127.0.0.1:8000"

[[routes]]
name = "v1"
path = "/v1/{*rest}"
upstream = "api"
auth = "api_key"
scopes = ["leads:read"]
"#;

/// A few scope sets, as a deployment's keys share a handful of them.
const SCOPE_SETS: [&[&str]; 4] = [
    &["leads:read"],
    &["leads:read", "leads:write"],
    &["leads:read", "emails:verify", "phones:lookup"],
    &["leads:read", "credits:read"],
];

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A made-up key hash: seeded keys are looked up by hash, never by plaintext.
fn hash_of(i: usize) -> KeyHash {
    let mut h = [0u8; 32];
    h[..8].copy_from_slice(&(i as u64).to_le_bytes());
    h[31] = 0xc5;
    h
}

fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1024.0)
}

struct Seeded {
    /// Account ids, in order; key `i` belongs to account `i / keys_per_account`.
    accounts: Vec<String>,
    /// Key ids by seed index, of the first keys only: the ones the write round revokes. Not all
    /// of them: a million `String`s would put ~56 MiB of the bench's own bookkeeping into the
    /// RSS it reports as the cache's.
    key_ids: Vec<String>,
}

async fn seed(t: &TestGate, keys: usize, per_account: usize, keep_ids: usize) -> Seeded {
    let store = &t.store;
    let account_count = keys.div_ceil(per_account);
    let mut accounts = Vec::with_capacity(account_count);
    // Accounts from 32 concurrent callers (the writer thread commits them in groups).
    let mut callers = tokio::task::JoinSet::new();
    for c in 0..32usize {
        let store = store.clone();
        callers.spawn(async move {
            let mut made = Vec::new();
            for i in (c..account_count).step_by(32) {
                let account = store
                    .create_account(NewAccount {
                        name: format!("bench account {i}"),
                        metadata: Default::default(),
                    })
                    .await
                    .expect("account");
                made.push((i, account.id));
            }
            made
        });
    }
    let mut made = Vec::with_capacity(account_count);
    while let Some(part) = callers.join_next().await {
        made.extend(part.expect("account caller"));
    }
    made.sort();
    accounts.extend(made.into_iter().map(|(_, id)| id));

    let mut key_ids = Vec::with_capacity(keep_ids.min(keys));
    for start in (0..keys).step_by(5000) {
        let batch: Vec<NewKey> = (start..(start + 5000).min(keys))
            .map(|i| NewKey {
                account_id: accounts[i / per_account].clone(),
                user_id: None,
                name: format!("bench key {i}"),
                display_prefix: "kg_bench_x".into(),
                hash: hash_of(i),
                scopes: SCOPE_SETS[i % SCOPE_SETS.len()]
                    .iter()
                    .map(|s| s.to_string())
                    .collect(),
                permission: Permission::ReadWrite,
                expires_at: None,
                rate_limit: None,
                resources: None,
                rotated_from: None,
                metadata: Default::default(),
            })
            .collect();
        for outcome in store.import_keys(batch).await.expect("import") {
            match outcome {
                ImportOutcome::Created(k) if key_ids.len() < keep_ids => key_ids.push(k.id),
                ImportOutcome::Created(_) => {}
                other => panic!("seeding failed: {other:?}"),
            }
        }
    }
    Seeded { accounts, key_ids }
}

/// Every seeded key through the cache's load path, from 8 concurrent callers.
async fn fill(t: &TestGate, keys: usize) {
    let mut callers = tokio::task::JoinSet::new();
    for c in 0..8usize {
        let cache = t.cache.clone();
        callers.spawn(async move {
            for i in (c..keys).step_by(8) {
                let found = cache.get_or_load(&hash_of(i)).await.expect("load");
                assert!(matches!(found, Lookup::Found(_)), "seeded key {i} found");
            }
        });
    }
    while let Some(done) = callers.join_next().await {
        done.expect("fill caller");
    }
}

/// Decisions for the hot key on their own threads, counted.
struct HotLoad {
    count: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl HotLoad {
    fn start(t: &Arc<TestGate>, plaintext: &str, threads: usize) -> Self {
        let count = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let mut headers = HeaderMap::new();
        let value = HeaderValue::from_str(&format!("Bearer {plaintext}")).expect("header");
        headers.insert(http::header::AUTHORIZATION, value);
        let threads = (0..threads)
            .map(|_| {
                let (t, count, stop, headers) =
                    (t.clone(), count.clone(), stop.clone(), headers.clone());
                std::thread::spawn(move || {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .expect("runtime");
                    rt.block_on(async {
                        while !stop.load(Ordering::Relaxed) {
                            // A batch between checks of the flag and the counter.
                            for _ in 0..64 {
                                let d = t
                                    .gate
                                    .decide(Request {
                                        method: "GET",
                                        path: "/v1/x",
                                        query: None,
                                        headers: &headers,
                                        client_ip: None,
                                    })
                                    .await;
                                assert!(
                                    matches!(
                                        d,
                                        Decision::Forward {
                                            principal: Some(_),
                                            ..
                                        }
                                    ),
                                    "the hot key was not forwarded: {d:?}"
                                );
                            }
                            count.fetch_add(64, Ordering::Relaxed);
                        }
                    });
                })
            })
            .collect();
        Self {
            count,
            stop,
            threads,
        }
    }

    /// Decisions per second over the next `window`.
    async fn rate_over(&self, window: Duration) -> f64 {
        let (before, at) = (self.count.load(Ordering::Relaxed), Instant::now());
        tokio::time::sleep(window).await;
        let done = self.count.load(Ordering::Relaxed) - before;
        done as f64 / at.elapsed().as_secs_f64()
    }

    fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            t.join().expect("hot thread");
        }
    }
}

/// One round of writes: the hot key's rate before, during and in the second after, and the RSS
/// after.
struct Round {
    before: f64,
    during: f64,
    after: f64,
    writes: usize,
    took: Duration,
    rss: f64,
}

async fn round<F, Fut>(hot: &HotLoad, settle: Duration, writes: usize, write: F) -> Round
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let before = hot.rate_over(settle).await;
    let (start_count, started) = (hot.count.load(Ordering::Relaxed), Instant::now());
    for i in 0..writes {
        write(i).await;
    }
    let took = started.elapsed();
    let during = (hot.count.load(Ordering::Relaxed) - start_count) as f64 / took.as_secs_f64();
    let after = hot.rate_over(Duration::from_secs(1)).await;
    Round {
        before,
        during,
        after,
        writes,
        took,
        rss: rss_mib(),
    }
}

fn main() {
    let load_run = std::env::args().any(|a| a == "--bench");
    let (keys, writes) = if load_run {
        (
            env_usize("KEYGATE_BENCH_KEYS", 1_000_000).max(100),
            env_usize("KEYGATE_BENCH_WRITES", 10_000),
        )
    } else {
        (2_000, 100)
    };
    let per_account = env_usize("KEYGATE_BENCH_KEYS_PER_ACCOUNT", 10).max(1);
    let hot_threads = env_usize("KEYGATE_BENCH_HOT_THREADS", 1).max(1);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(run(keys, writes, per_account, hot_threads, load_run));
}

async fn run(keys: usize, writes: usize, per_account: usize, hot_threads: usize, load_run: bool) {
    let rss_start = rss_mib();
    let dir = tempfile::tempdir().expect("tempdir");
    // Room for every seeded key, the hot one, and a few more: creations later evict.
    let config = CONFIG.replace("MAX_ENTRIES", &(keys + 1).to_string());
    let t = Arc::new(TestGate::new(&config, &dir.path().join("cache_scale.db")).await);
    let started = Instant::now();
    // Revocations take keys 0, 1, 2, ... (one per two writes).
    let seeded = seed(&t, keys, per_account, writes.div_ceil(2).max(1)).await;
    let seeding = started.elapsed();

    let rss_empty = rss_mib();
    let started = Instant::now();
    fill(&t, keys).await;
    let filling = started.elapsed();
    let rss_full = rss_mib();
    let cached = t.cache.entry_count();

    let hot_account = t.account().await;
    let (_, hot_key) = t.key_in(&hot_account.id, &["leads:read"]).await;
    let hot = HotLoad::start(&t, &hot_key, hot_threads);
    let settle = if load_run {
        Duration::from_secs(2)
    } else {
        Duration::from_millis(50)
    };
    // Warm-up: the hot key is loaded and the threads are running.
    hot.rate_over(settle).await;

    // Key writes: even ones create a key in a seeded account, odd ones revoke a seeded key;
    // each written key is looked up again, as its next request would.
    let (t_ref, seeded_ref) = (&t, &seeded);
    let keys_round = round(&hot, settle, writes, move |i| {
        let (t, seeded) = (t_ref, seeded_ref);
        async move {
            let actor = Actor::Operator;
            if i % 2 == 0 {
                let account = &seeded.accounts[(i / 2) % seeded.accounts.len()];
                let made = t
                    .keys
                    .create_key(
                        &actor,
                        NewKeyInput {
                            account_id: account.clone(),
                            user_id: None,
                            name: format!("written {i}"),
                            scopes: vec!["leads:read".into()],
                            permission: Permission::ReadWrite,
                            expires_at: None,
                            rate_limit: None,
                            resources: None,
                            metadata: Default::default(),
                        },
                    )
                    .await
                    .expect("create");
                let hash = t.hasher.hash(made.plaintext.expose());
                t.cache.get_or_load(&hash).await.expect("new key");
            } else {
                let n = (i / 2) % seeded.key_ids.len();
                t.keys
                    .set_key_status(&actor, &seeded.key_ids[n], KeyStatus::Revoked)
                    .await
                    .expect("revoke");
                t.cache.get_or_load(&hash_of(n)).await.expect("revoked key");
            }
        }
    })
    .await;

    // Account writes: suspend then reactivate seeded accounts (from the far end, untouched by
    // the key round); after the reactivation its keys are looked up again.
    let accounts_round = round(&hot, settle, writes, move |i| {
        let (t, seeded) = (t_ref, seeded_ref);
        async move {
            let actor = Actor::Operator;
            let a = seeded.accounts.len() - 1 - (i / 2) % seeded.accounts.len();
            let to = if i % 2 == 0 {
                AccountStatus::Suspended
            } else {
                AccountStatus::Active
            };
            t.keys
                .set_account_status(&actor, &seeded.accounts[a], to)
                .await
                .expect("account status");
            if to == AccountStatus::Active {
                for k in a * per_account..((a + 1) * per_account).min(keys) {
                    t.cache.get_or_load(&hash_of(k)).await.expect("account key");
                }
            }
        }
    })
    .await;
    hot.stop();
    let cached_after = t.cache.entry_count();

    if !load_run {
        println!(
            "cache_scale: setup checked (no timing in test mode; `cargo bench --bench cache_scale` runs it)"
        );
        return;
    }
    let per_key = (rss_full - rss_empty) * 1024.0 * 1024.0 / keys as f64;
    println!("| measure | value |");
    println!("| --- | --- |");
    println!(
        "| keys seeded (SQLite, {per_account} per account) | {keys} in {:.1} s |",
        seeding.as_secs_f64()
    );
    println!(
        "| keys loaded into the cache | {cached} in {:.1} s |",
        filling.as_secs_f64()
    );
    println!(
        "| RSS at start / after seeding / after filling | {rss_start:.0} MiB / {rss_empty:.0} MiB / {rss_full:.0} MiB |"
    );
    println!("| RSS growth per cached key while filling | {per_key:.0} bytes |");
    for (name, r) in [
        ("key creations + revocations", &keys_round),
        ("account suspensions + reactivations", &accounts_round),
    ] {
        println!(
            "| {name}: {} writes | {:.1} s ({:.0}/s) |",
            r.writes,
            r.took.as_secs_f64(),
            r.writes as f64 / r.took.as_secs_f64()
        );
        println!(
            "| hot key before | {:.0} decisions/s ({hot_threads} thread) |",
            r.before
        );
        println!(
            "| hot key during / within 1 s after | {:.2}x / {:.2}x |",
            r.during / r.before,
            r.after / r.before
        );
        println!("| RSS after | {:.0} MiB |", r.rss);
    }
    println!("| entries cached at the end | {cached_after} |");
}
