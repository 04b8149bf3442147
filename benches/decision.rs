//! Micro-benchmarks of the request path, through the real library pieces (config, SQLite store,
//! cache, gate): the cached-key decision is the headline number; the pieces it is made of and the
//! two cheap outcomes (malformed key, `auth = "none"` route) put it in context.
//!
//! Run: `cargo bench --bench decision` (add `-- --warm-up-time 1 --measurement-time 3` on a busy
//! machine).

use std::hint::black_box;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};
use http::{HeaderMap, HeaderValue};

use keygate::cache::KeyCache;
use keygate::config::Config;
use keygate::errors::Reason;
use keygate::gate::{Decision, Gate, Request};
use keygate::keys::KeyHasher;
use keygate::metrics::Metrics;
use keygate::secret::Secret;
use keygate::store::sqlite::SqliteStore;
use keygate::store::{NewAccount, NewKey, Permission, Store};
use keygate::usage::{self, UsageWriter};

const CONFIG: &str = r#"
[server]
data_dir = "unused"

[keys]
prefix = "kg_bench_"

[cache]
# Longer than any run, so no entry expires mid-measurement.
ttl_seconds = 3600

[upstreams.api]
address = "127.0.0.1:8000"

[[routes]]
name = "open"
path = "/open/{*rest}"
upstream = "api"
auth = "none"

[[routes]]
name = "v1"
path = "/v1/{*rest}"
upstream = "api"
auth = "api_key"
scopes = ["leads:read"]
"#;

struct Fixture {
    config: Arc<Config>,
    gate: Gate,
    hasher: KeyHasher,
    key: String,
    /// Held so the usage queue has a receiver (the bounded queue drops and counts when full).
    _usage: UsageWriter,
    _dir: tempfile::TempDir,
}

fn bearer(key: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    let value = HeaderValue::from_str(&format!("Bearer {key}")).expect("header value");
    headers.insert(http::header::AUTHORIZATION, value);
    headers.insert(http::header::ACCEPT, HeaderValue::from_static("*/*"));
    headers
}

fn fixture(rt: &tokio::runtime::Runtime) -> Fixture {
    let config = Arc::new(Config::parse(CONFIG, "bench").expect("bench config"));
    let dir = tempfile::tempdir().expect("tempdir");
    let store: Arc<dyn Store> =
        Arc::new(SqliteStore::open(&dir.path().join("bench.db")).expect("open SQLite store"));
    let hasher = KeyHasher::new(&Secret::new("pepper"));
    let plaintext = config.key_format.generate();
    let key = plaintext.expose().to_string();
    rt.block_on(async {
        let account = store
            .create_account(NewAccount {
                name: "bench".into(),
            })
            .await
            .expect("create account");
        store
            .create_key(NewKey {
                account_id: account.id,
                user_id: None,
                name: "bench key".into(),
                display_prefix: config.key_format.display_prefix(&key),
                hash: hasher.hash(&key),
                scopes: vec!["leads:read".into()],
                permission: Permission::ReadWrite,
                expires_at: None,
                rate_limit: None,
                resources: None,
                rotated_from: None,
            })
            .await
            .expect("create key");
    });

    // Wired as src/app.rs does it.
    let route_names = config.route_names();
    let metrics = Arc::new(Metrics::new(&route_names));
    let cache = Arc::new(KeyCache::new(
        store,
        metrics.clone(),
        config.cache.ttl,
        config.cache.negative_ttl,
        config.cache.max_stale,
        config.cache.max_entries,
    ));
    let (recorder, writer) = usage::channel(config.last_used_interval, metrics.clone());
    let gate =
        Gate::new(config.clone(), cache, hasher.clone(), recorder, metrics).expect("gate routes");
    Fixture {
        config,
        gate,
        hasher,
        key,
        _usage: writer,
        _dir: dir,
    }
}

fn decision(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let fx = fixture(&rt);
    let valid = bearer(&fx.key);
    // Same shape, last checksum character changed: rejected by the full format check.
    let mut bad_key = fx.key.clone();
    let last = bad_key.pop().expect("non-empty key");
    bad_key.push(if last == 'A' { 'B' } else { 'A' });
    let malformed = bearer(&bad_key);
    let anonymous = HeaderMap::new();

    // Warm the cache and check every case decides what it is meant to.
    rt.block_on(async {
        let warm = fx
            .gate
            .decide(Request {
                method: "GET",
                path: "/v1/x",
                headers: &valid,
                client_ip: None,
            })
            .await;
        assert!(
            matches!(&warm, Decision::Forward { principal: Some(_), .. }),
            "valid key was not forwarded: {warm:?}"
        );
        let bad = fx
            .gate
            .decide(Request {
                method: "GET",
                path: "/v1/x",
                headers: &malformed,
                client_ip: None,
            })
            .await;
        assert!(
            matches!(&bad, Decision::Reject { rejection, .. } if rejection.reason == Reason::MalformedCredential),
            "malformed key was not rejected as malformed: {bad:?}"
        );
        let open = fx
            .gate
            .decide(Request {
                method: "GET",
                path: "/open/x",
                headers: &anonymous,
                client_ip: None,
            })
            .await;
        assert!(
            matches!(&open, Decision::Forward { principal: None, .. }),
            "open route was not forwarded: {open:?}"
        );
    });

    let mut g = c.benchmark_group("decision");
    g.bench_function("cached_valid_key", |b| {
        b.to_async(&rt).iter(|| {
            fx.gate.decide(Request {
                method: "GET",
                path: black_box("/v1/x"),
                headers: black_box(&valid),
                client_ip: None,
            })
        })
    });
    g.bench_function("key_format_validate", |b| {
        b.iter(|| fx.config.key_format.validate(black_box(fx.key.as_str())))
    });
    g.bench_function("key_hmac_sha256", |b| {
        b.iter(|| fx.hasher.hash(black_box(fx.key.as_str())))
    });
    g.bench_function("malformed_key", |b| {
        b.to_async(&rt).iter(|| {
            fx.gate.decide(Request {
                method: "GET",
                path: black_box("/v1/x"),
                headers: black_box(&malformed),
                client_ip: None,
            })
        })
    });
    g.bench_function("auth_none_route", |b| {
        b.to_async(&rt).iter(|| {
            fx.gate.decide(Request {
                method: "GET",
                path: black_box("/open/x"),
                headers: black_box(&anonymous),
                client_ip: None,
            })
        })
    });
    g.finish();
}

criterion_group!(benches, decision);
criterion_main!(benches);
