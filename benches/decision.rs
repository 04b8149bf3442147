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

/// One cached-key decision (a function, so its future borrows the path for as long as it runs).
async fn decide_on(gate: &keygate::gate::Gate, headers: &HeaderMap, path: &str) -> Decision {
    gate.decide(Request {
        method: "GET",
        path: black_box(path),
        query: None,
        headers: black_box(headers),
        client_ip: None,
    })
    .await
}

/// A config with `n` key-checked routes `/r{i}/{*rest}` (and one upstream).
fn routes_config(n: usize) -> String {
    let mut text = String::from(
        "[server]\ndata_dir = \"unused\"\n[keys]\nprefix = \"kg_bench_\"\n[cache]\nttl_seconds = 3600\n\
         [upstreams.api]\naddress = \"127.0.0.1:8000\"\n",
    );
    for i in 0..n {
        text.push_str(&format!(
            "[[routes]]\nname = \"r{i}\"\npath = \"/r{i}/{{*rest}}\"\nupstream = \"api\"\n\
             auth = \"api_key\"\nscopes = [\"leads:read\"]\n"
        ));
    }
    text
}

/// Issue 14 item 5: a cached-key decision on a table of 1,000 routes against the same on 10,
/// the matched route in the middle and at the end. Besides criterion's timings, the setup times
/// the cases itself, interleaved in rounds so machine load falls on all of them alike, and prints
/// each against the 10-route middle case of the same run (no pass/fail: a report).
fn routes(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    // Under `cargo test --all-targets` (no `--bench` argument) only a quick check of the setup.
    let benching = std::env::args().any(|a| a == "--bench");
    let mut dirs = Vec::new();
    let mut gates = Vec::new();
    // (name, table, path)
    let mut cases: Vec<(String, usize, String)> = Vec::new();
    for n in [10usize, 1000] {
        let dir = tempfile::tempdir().expect("tempdir");
        let t = rt.block_on(TestGate::new(
            &routes_config(n),
            &dir.path().join("bench.db"),
        ));
        let (_, key) = rt.block_on(t.key(&["leads:read"]));
        for (place, i) in [("middle", n / 2), ("end", n - 1)] {
            cases.push((
                format!("{n}_routes_{place}"),
                gates.len(),
                format!("/r{i}/x"),
            ));
        }
        gates.push((t, bearer(&key)));
        dirs.push(dir);
    }
    for (name, table, path) in &cases {
        let d = rt.block_on(decide_on(&gates[*table].0.gate, &gates[*table].1, path));
        let want: usize = path[2..path.len() - 2].parse().expect("route number");
        assert!(
            matches!(&d, Decision::Forward { route, principal: Some(_), .. } if *route == want),
            "{name}: not forwarded to route {want}: {d:?}"
        );
    }

    let (rounds, per_round) = if benching { (15, 20_000) } else { (1, 50) };
    let mut samples: Vec<Vec<f64>> = vec![Vec::new(); cases.len()];
    for _ in 0..rounds {
        for (k, (_, table, path)) in cases.iter().enumerate() {
            let start = std::time::Instant::now();
            rt.block_on(async {
                for _ in 0..per_round {
                    black_box(decide_on(&gates[*table].0.gate, &gates[*table].1, path).await);
                }
            });
            samples[k].push(start.elapsed().as_nanos() as f64 / per_round as f64);
        }
    }
    let medians: Vec<f64> = samples
        .iter_mut()
        .map(|s| {
            s.sort_by(f64::total_cmp);
            s[s.len() / 2]
        })
        .collect();
    println!("cached-key decision by route count (median of {rounds} interleaved rounds of {per_round}):");
    for ((name, _, _), m) in cases.iter().zip(&medians) {
        println!(
            "  {name:<20} {m:>9.0} ns  {:.3}x the 10-route middle case",
            m / medians[0]
        );
    }

    let mut g = c.benchmark_group("routes");
    for (name, table, path) in &cases {
        g.bench_function(name.as_str(), |b| {
            b.to_async(&rt)
                .iter(|| decide_on(&gates[*table].0.gate, &gates[*table].1, path))
        });
    }
    g.finish();
    drop(gates);
    drop(dirs);
}

criterion_group!(benches, decision, routes);
criterion_main!(benches);
