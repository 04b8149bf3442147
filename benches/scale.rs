//! Scale run for the embedded store (issue 13): how fast key creations commit when many admin
//! calls arrive at once (the writer thread's group commit), and the cache's miss path on SQLite
//! (a `find_credential` for a random existing key) under concurrent load, as p50/p99.
//!
//! Run: `cargo bench --bench scale`. Under `cargo test --all-targets` (no `--bench` argument) it
//! only creates and reads a few keys, with no load and no timing.
//!
//! Environment: `KEYGATE_BENCH_KEYS` (keys created, default 100,000), `KEYGATE_BENCH_CONCURRENCY`
//! (creating callers at once, default 64), `KEYGATE_BENCH_READERS` (reading callers at once,
//! default 8: about what a 2-core proxy has in flight on misses).

use std::sync::Arc;
use std::time::{Duration, Instant};

use keygate::store::sqlite::SqliteStore;
use keygate::store::{CredentialReads, Directory, NewAccount, NewKey, Permission};

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn hash_of(i: usize) -> [u8; 32] {
    let mut h = [0u8; 32];
    h[..8].copy_from_slice(&(i as u64).to_le_bytes());
    h[31] = 0x5a;
    h
}

fn new_key(account_id: &str, i: usize) -> NewKey {
    NewKey {
        account_id: account_id.into(),
        user_id: None,
        name: format!("bench {i}"),
        display_prefix: "kg_bench_x".into(),
        hash: hash_of(i),
        scopes: vec!["leads:read".into()],
        permission: Permission::Read,
        expires_at: None,
        rate_limit: None,
        resources: None,
        rotated_from: None,
        metadata: Default::default(),
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn main() {
    let load_run = std::env::args().any(|a| a == "--bench");
    let keys = if load_run {
        env_usize("KEYGATE_BENCH_KEYS", 100_000).max(1)
    } else {
        50
    };
    let concurrency = env_usize("KEYGATE_BENCH_CONCURRENCY", 64).max(1);
    let readers = env_usize("KEYGATE_BENCH_READERS", 8).max(1);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(run(keys, concurrency, readers, load_run));
}

async fn run(keys: usize, concurrency: usize, reading: usize, load_run: bool) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(SqliteStore::open(&dir.path().join("scale.db")).expect("sqlite"));
    let account = store
        .create_account(NewAccount {
            name: "bench".into(),
            metadata: Default::default(),
        })
        .await
        .expect("account");

    // Creations: `concurrency` callers, each creating its share one after another.
    let started = Instant::now();
    let mut callers = Vec::new();
    for c in 0..concurrency {
        let (store, account_id) = (store.clone(), account.id.clone());
        callers.push(tokio::spawn(async move {
            for i in (c..keys).step_by(concurrency) {
                store
                    .create_key(new_key(&account_id, i))
                    .await
                    .expect("create");
            }
        }));
    }
    for caller in callers {
        caller.await.expect("caller");
    }
    let create_rate = keys as f64 / started.elapsed().as_secs_f64();

    // Misses: each caller reads random existing keys for a fixed time (or a few, in test mode).
    let run_for = if load_run {
        Duration::from_secs(5)
    } else {
        Duration::ZERO
    };
    let mut readers = Vec::new();
    for c in 0..reading {
        let store = store.clone();
        readers.push(tokio::spawn(async move {
            let mut took = Vec::new();
            let mut i = c.wrapping_mul(2_654_435_761);
            let until = Instant::now() + run_for;
            loop {
                i = i.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                let at = Instant::now();
                let found = store.find_credential(&hash_of(i % keys)).await;
                took.push(at.elapsed());
                assert!(matches!(found, Ok(Some(_))), "every bench key is found");
                if Instant::now() >= until {
                    return took;
                }
            }
        }));
    }
    let mut took = Vec::new();
    for reader in readers {
        took.extend(reader.await.expect("reader"));
    }
    took.sort();
    if !load_run {
        println!(
            "scale: setup checked (no load in test mode; `cargo bench --bench scale` runs it)"
        );
        return;
    }
    println!("| measure | value |");
    println!("| --- | --- |");
    println!("| keys created (SQLite store, {concurrency} concurrent callers) | {keys} |");
    println!("| key creations per second | {create_rate:.0} |");
    println!(
        "| SQLite miss reads ({reading} concurrent, 5 s) | {} ({:.0}/s) |",
        took.len(),
        took.len() as f64 / run_for.as_secs_f64()
    );
    println!("| SQLite miss p50 | {:?} |", percentile(&took, 0.50));
    println!("| SQLite miss p99 | {:?} |", percentile(&took, 0.99));
}
