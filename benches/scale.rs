//! Scale run for the stores (issue 13): how fast key creations commit when many admin calls
//! arrive at once (SQLite's writer thread with group commit; Redis's scripts), and the cache's
//! miss path (a `find_credential` for a random existing key) under concurrent load, as p50/p99,
//! on SQLite and on a loopback `redis-server` the bench starts on a free port (fails with the
//! install line when redis-server is missing).
//!
//! Run: `cargo bench --bench scale`. Under `cargo test --all-targets` (no `--bench` argument) it
//! only creates and reads a few keys, with no load and no timing.
//!
//! Environment: `KEYGATE_BENCH_KEYS` (keys created, default 100,000), `KEYGATE_BENCH_CONCURRENCY`
//! (creating callers at once, default 64), `KEYGATE_BENCH_READERS` (reading callers at once,
//! default 8: about what a 2-core proxy has in flight on misses).

use std::sync::Arc;
use std::time::{Duration, Instant};

use std::process::{Child, Command, Stdio};

use keygate::store::redis::RedisStore;
use keygate::store::sqlite::SqliteStore;
use keygate::store::{NewAccount, NewKey, Permission, Store};

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
    let dir = tempfile::tempdir().expect("tempdir");
    let sqlite: Arc<dyn Store> =
        Arc::new(SqliteStore::open(&dir.path().join("scale.db")).expect("sqlite"));
    let sqlite_row = rt.block_on(run(sqlite, keys, concurrency, readers, load_run));
    // Redis gets a CPU of its own, as it has in a deployment (another host, or at least another
    // core), and the store's calls run on one thread like keygate's proxy worker: with both on
    // both CPUs, redis-server waited for a time slice behind the bench's own threads and the
    // miss p99 measured the scheduler. Not pinned on one CPU or without `taskset`.
    let pinned = load_run && pin_self_to_cpu0();
    let redis = RedisServer::start(dir.path(), pinned);
    let rt = if pinned {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime")
    } else {
        rt
    };
    let redis_row = rt.block_on(async {
        let store = RedisStore::connect(&redis.url(), Duration::from_secs(2))
            .await
            .expect("connect to the bench's redis-server");
        run(Arc::new(store), keys, concurrency, readers, load_run).await
    });
    if !load_run {
        println!(
            "scale: setup checked on SQLite and Redis (no load in test mode; `cargo bench --bench \
             scale` runs it)"
        );
        return;
    }
    if pinned {
        println!("Redis phase: redis-server on CPU 1, the store's calls on CPU 0 (one thread)");
    }
    println!("| {keys} keys | SQLite | Redis (loopback) |");
    println!("| --- | --- | --- |");
    println!(
        "| key creations per second ({concurrency} concurrent callers) | {:.0} | {:.0} |",
        sqlite_row.create_rate, redis_row.create_rate
    );
    println!(
        "| miss reads per second ({readers} concurrent, 5 s) | {:.0} | {:.0} |",
        sqlite_row.read_rate, redis_row.read_rate
    );
    println!("| miss p50 | {:?} | {:?} |", sqlite_row.p50, redis_row.p50);
    println!("| miss p99 | {:?} | {:?} |", sqlite_row.p99, redis_row.p99);
}

struct Row {
    create_rate: f64,
    read_rate: f64,
    p50: Duration,
    p99: Duration,
}

async fn run(
    store: Arc<dyn Store>,
    keys: usize,
    concurrency: usize,
    reading: usize,
    load_run: bool,
) -> Row {
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
    Row {
        create_rate,
        read_rate: took.len() as f64 / run_for.as_secs_f64().max(1e-9),
        p50: percentile(&took, 0.50),
        p99: percentile(&took, 0.99),
    }
}

/// Every thread of this process onto CPU 0 (`taskset`), when there are at least two; `false`
/// when it could not be done.
fn pin_self_to_cpu0() -> bool {
    if std::env::var("KEYGATE_BENCH_PIN").is_ok_and(|v| v == "0")
        || std::thread::available_parallelism().map_or(1, |n| n.get()) < 2
    {
        return false;
    }
    Command::new("taskset")
        .args(["-a", "-cp", "0", &std::process::id().to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A `redis-server` of the bench's own on a free loopback port, without persistence, killed
/// when dropped.
struct RedisServer {
    port: u16,
    child: Child,
}

impl RedisServer {
    fn start(dir: &std::path::Path, on_cpu1: bool) -> RedisServer {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let mut command = if on_cpu1 {
            let mut c = Command::new("taskset");
            c.args(["-c", "1", "redis-server"]);
            c
        } else {
            Command::new("redis-server")
        };
        let child = command
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "scale bench: cannot start redis-server ({e}); install it with: \
                     apt-get install -y redis-server"
                )
            });
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        RedisServer { port, child }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
