//! The upstream request rewrite (strip + forwarding + identity + credits) and one whole
//! cached-key decision, timed by criterion and with their heap allocations counted by a
//! counting global allocator (keygate issue 14, item 3).
//!
//! Allocation counts are deterministic (the same code path allocates the same way every time),
//! so they are printed from the setup, before criterion times anything, and also under
//! `cargo test --all-targets`, where criterion runs each benchmark once.
//!
//! Run: `nice -n 10 cargo bench --bench rewrite` (add `-- --warm-up-time 1 --measurement-time 3`
//! on a busy machine).

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use criterion::{criterion_group, criterion_main, Criterion};
use http::{HeaderMap, HeaderValue};

use keygate::gate::{Decision, Request};
use keygate::proxy::{BenchRequest, RewriteBench};
use keygate::test_util::TestGate;

/// Counts every allocation (and reallocation, which may move) and the bytes asked for, then
/// hands the call to the system allocator. Hand-written: it is the few lines the standard
/// `GlobalAlloc` example shows, and a crate for it would count the same two numbers.
struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);

// `forbid(unsafe_code)` is the library's rule; a global allocator can only be declared through
// the unsafe `GlobalAlloc` trait, and this one only forwards to `System`.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(layout.size() as u64, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(layout.size() as u64, Ordering::Relaxed);
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(new_size as u64, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn counts() -> (u64, u64) {
    (
        ALLOCS.load(Ordering::Relaxed),
        BYTES.load(Ordering::Relaxed),
    )
}

/// Runs measured from the setup: enough to average out a one-off (a map growing once).
const RUNS: u64 = 1000;

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
# Never refuses in a bench run; here so the decision builds its bucket keys.
rate_limit = { requests = 1000000000, per_seconds = 1, burst = 1000000000 }
account_rate_limit = { requests = 1000000000, per_seconds = 1, burst = 1000000000 }
"#;

fn ip(s: &str) -> IpAddr {
    s.parse().expect("address")
}

/// One case: the prepared rewrite and what its output must say.
struct Case {
    name: &'static str,
    rewrite: RewriteBench,
    /// Header and the exact values it must have after the rewrite.
    expect: Vec<(&'static str, Vec<String>)>,
}

/// Allocations and bytes per rewrite of `case`, the copy of the request left out; checks the
/// output first so a bench of a broken rewrite cannot report numbers.
fn count_rewrite(case: &Case) -> (f64, f64) {
    let mut checked = case.rewrite.request();
    case.rewrite.rewrite(&mut checked).expect("rewrite");
    for (name, want) in &case.expect {
        let got: Vec<String> = checked
            .values(name)
            .into_iter()
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .collect();
        assert_eq!(&got, want, "{}: header {name}", case.name);
    }
    let mut requests: Vec<BenchRequest> = (0..RUNS).map(|_| case.rewrite.request()).collect();
    let (a0, b0) = counts();
    for r in &mut requests {
        case.rewrite.rewrite(black_box(r)).expect("rewrite");
    }
    let (a1, b1) = counts();
    drop(requests);
    (
        (a1 - a0) as f64 / RUNS as f64,
        (b1 - b0) as f64 / RUNS as f64,
    )
}

fn bearer(key: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    let value = HeaderValue::from_str(&format!("Bearer {key}")).expect("header value");
    headers.insert(http::header::AUTHORIZATION, value);
    headers.insert(http::header::ACCEPT, HeaderValue::from_static("*/*"));
    headers
}

fn rewrite(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let t = rt.block_on(TestGate::new(CONFIG, &dir.path().join("bench.db")));
    let (record, key) = rt.block_on(t.key(&["leads:read"]));
    let valid = bearer(&key);
    let request = || Request {
        method: "GET",
        path: black_box("/v1/x"),
        query: None,
        headers: black_box(&valid),
        client_ip: Some(ip("203.0.113.7")),
    };
    let principal = match rt.block_on(t.gate.decide(request())) {
        Decision::Forward {
            principal: Some(p), ..
        } => p,
        other => panic!("valid key was not forwarded: {other:?}"),
    };

    let auth = format!("Bearer {key}");
    let client_headers = |extra: &[(&'static str, &'static str)]| {
        let mut h: Vec<(&str, &str)> = vec![
            ("Host", "api.example.com"),
            ("User-Agent", "bench/1.0"),
            ("Accept", "*/*"),
            ("Authorization", auth.as_str()),
        ];
        h.extend_from_slice(extra);
        h
    };
    let key_id = record.id.to_string();
    let untrusted = Case {
        name: "untrusted_peer_cached_key",
        rewrite: RewriteBench::new(
            &t.config,
            Some(principal.clone()),
            Some(4_999),
            ip("203.0.113.7"),
            false,
            ip("203.0.113.7"),
            "/v1/x",
            &client_headers(&[]),
        )
        .expect("case"),
        expect: vec![
            ("authorization", vec![]),
            ("x-forwarded-for", vec!["203.0.113.7".into()]),
            ("x-real-ip", vec!["203.0.113.7".into()]),
            ("x-keygate-key-id", vec![key_id.clone()]),
            ("x-keygate-credits-remaining", vec!["4999".into()]),
            ("user-agent", vec!["bench/1.0".into()]),
        ],
    };
    let trusted = Case {
        name: "trusted_proxy_xff_chain",
        rewrite: RewriteBench::new(
            &t.config,
            Some(principal.clone()),
            Some(-3),
            ip("10.0.0.2"),
            true,
            ip("198.51.100.9"),
            "/v1/x",
            &client_headers(&[
                ("X-Forwarded-For", "198.51.100.9, 10.0.0.1"),
                ("X-Forwarded-Proto", "https"),
                ("X_Keygate_Key_Id", "forged"),
            ]),
        )
        .expect("case"),
        expect: vec![
            (
                "x-forwarded-for",
                vec!["198.51.100.9, 10.0.0.1, 10.0.0.2".into()],
            ),
            ("x-forwarded-proto", vec!["https".into()]),
            ("x-real-ip", vec!["198.51.100.9".into()]),
            ("x_keygate_key_id", vec![]),
            ("x-keygate-key-id", vec![key_id]),
            ("x-keygate-credits-remaining", vec!["-3".into()]),
        ],
    };
    let open = Case {
        name: "auth_none",
        rewrite: RewriteBench::new(
            &t.config,
            None,
            None,
            ip("203.0.113.7"),
            false,
            ip("203.0.113.7"),
            "/open/x",
            &[("Host", "api.example.com"), ("Accept", "*/*")],
        )
        .expect("case"),
        expect: vec![
            ("x-forwarded-for", vec!["203.0.113.7".into()]),
            ("x-keygate-key-id", vec![]),
            ("accept", vec!["*/*".into()]),
        ],
    };
    let cases = [untrusted, trusted, open];

    println!("allocations per operation (counting global allocator, {RUNS} runs each):");
    for case in &cases {
        let (allocs, bytes) = count_rewrite(case);
        println!(
            "  rewrite/{:<28} {allocs:>6.2} allocations {bytes:>8.1} bytes",
            case.name
        );
    }
    let (allocs, bytes) = rt.block_on(async {
        // One run first so the buckets and the limiter's per-limit map exist.
        let first = t.gate.decide(request()).await;
        assert!(
            matches!(
                &first,
                Decision::Forward {
                    principal: Some(_),
                    rate: Some(_),
                    ..
                }
            ),
            "cached key not forwarded with a rate status: {first:?}"
        );
        let (a0, b0) = counts();
        for _ in 0..RUNS {
            black_box(t.gate.decide(request()).await);
        }
        let (a1, b1) = counts();
        (
            (a1 - a0) as f64 / RUNS as f64,
            (b1 - b0) as f64 / RUNS as f64,
        )
    });
    println!(
        "  {:<36} {allocs:>6.2} allocations {bytes:>8.1} bytes",
        "decide/cached_key_rate_limited"
    );

    let mut g = c.benchmark_group("rewrite");
    for case in &cases {
        g.bench_function(case.name, |b| {
            b.iter_batched_ref(
                || case.rewrite.request(),
                |r| case.rewrite.rewrite(r).expect("rewrite"),
                criterion::BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

criterion_group!(benches, rewrite);
criterion_main!(benches);
