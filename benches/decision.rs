//! Micro-benchmarks of the request path, through the real library pieces (config, SQLite store,
//! cache, gate): the cached-key decision is the headline number; the pieces it is made of and the
//! two cheap outcomes (malformed key, `auth = "none"` route) put it in context.
//!
//! Run: `cargo bench --bench decision` (add `-- --warm-up-time 1 --measurement-time 3` on a busy
//! machine).

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use http::{HeaderMap, HeaderValue};

use keygate::errors::Reason;
use keygate::gate::{Decision, Request};
use keygate::test_util::TestGate;

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
    t: TestGate,
    key: String,
    _dir: tempfile::TempDir,
}

fn bearer(key: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    let value = HeaderValue::from_str(&format!("Bearer {key}")).expect("header value");
    headers.insert(http::header::AUTHORIZATION, value);
    headers.insert(http::header::ACCEPT, HeaderValue::from_static("*/*"));
    headers
}

/// The gate wired as src/app.rs wires it, over a SQLite store with one key.
fn fixture(rt: &tokio::runtime::Runtime) -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let t = rt.block_on(TestGate::new(CONFIG, &dir.path().join("bench.db")));
    let (_, key) = rt.block_on(t.key(&["leads:read"]));
    Fixture { t, key, _dir: dir }
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
            .t
            .gate
            .decide(Request {
                method: "GET",
                path: "/v1/x",
                query: None,
                headers: &valid,
                client_ip: None,
            })
            .await;
        assert!(
            matches!(&warm, Decision::Forward { principal: Some(_), .. }),
            "valid key was not forwarded: {warm:?}"
        );
        let bad = fx
            .t
            .gate
            .decide(Request {
                method: "GET",
                path: "/v1/x",
                query: None,
                headers: &malformed,
                client_ip: None,
            })
            .await;
        assert!(
            matches!(&bad, Decision::Reject { rejection, .. } if rejection.reason == Reason::MalformedCredential),
            "malformed key was not rejected as malformed: {bad:?}"
        );
        let open = fx
            .t
            .gate
            .decide(Request {
                method: "GET",
                path: "/open/x",
                query: None,
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
            fx.t.gate.decide(Request {
                method: "GET",
                path: black_box("/v1/x"),
                query: None,
                headers: black_box(&valid),
                client_ip: None,
            })
        })
    });
    g.bench_function("key_format_validate", |b| {
        b.iter(|| fx.t.config.key_format.validate(black_box(fx.key.as_str())))
    });
    g.bench_function("key_hmac_sha256", |b| {
        b.iter(|| fx.t.hasher.hash(black_box(fx.key.as_str())))
    });
    g.bench_function("malformed_key", |b| {
        b.to_async(&rt).iter(|| {
            fx.t.gate.decide(Request {
                method: "GET",
                path: black_box("/v1/x"),
                query: None,
                headers: black_box(&malformed),
                client_ip: None,
            })
        })
    });
    g.bench_function("auth_none_route", |b| {
        b.to_async(&rt).iter(|| {
            fx.t.gate.decide(Request {
                method: "GET",
                path: black_box("/open/x"),
                query: None,
                headers: black_box(&anonymous),
                client_ip: None,
            })
        })
    });
    g.finish();
}

criterion_group!(benches, decision);
criterion_main!(benches);
