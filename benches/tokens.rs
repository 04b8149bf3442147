//! Criterion: the whole decision for an access JWT (signature, claims, revocation cut-offs, the
//! same authorization as a key) next to the decision for a cached API key, in one run, on an
//! `auth = "any"` route of a gate wired as `keygate serve` wires it (`keygate::test_util`).

use criterion::{criterion_group, criterion_main, Criterion};
use http::{HeaderMap, HeaderValue};
use keygate::gate::{Decision, Request};
use keygate::test_util::TestGate;
use keygate::tokens::{ClaimsDraft, TokenKind};

fn bearer(token: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    let value = HeaderValue::from_str(&format!("Bearer {token}")).expect("header value");
    h.insert(http::header::AUTHORIZATION, value);
    h
}

const CONFIG: &str = r#"
[upstreams.api]
address = "127.0.0.1:1"
[[routes]]
path = "/v1/{*rest}"
upstream = "api"
auth = "any"
scopes = ["leads:read"]
"#;

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let t = rt.block_on(TestGate::new(CONFIG, &dir.path().join("bench.db")));
    let gate = &t.gate;
    let (key_headers, jwt_headers) = rt.block_on(async {
        let (key, plaintext) = t.key(&["leads:read"]).await;
        let (jwt, _) = t
            .tokens
            .issue(
                ClaimsDraft {
                    sub: key.id.clone(),
                    acc: key.account_id.clone(),
                    usr: None,
                    kid_key: Some(key.id.clone()),
                    scopes: key.scopes.clone(),
                    perm: "read_write".into(),
                    ..ClaimsDraft::default()
                },
                TokenKind::Access,
            )
            .expect("jwt");
        (bearer(&plaintext), bearer(&jwt))
    });
    // Both must be let through before anything is timed (this also warms the key's cache entry).
    for headers in [&key_headers, &jwt_headers] {
        let d = rt.block_on(gate.decide(Request {
            method: "GET",
            path: "/v1/x",
            query: None,
            headers,
            client_ip: None,
        }));
        assert!(
            matches!(
                d,
                Decision::Forward {
                    principal: Some(_),
                    ..
                }
            ),
            "{d:?}"
        );
    }

    let mut g = c.benchmark_group("decision_any_route");
    g.bench_function("cached_api_key", |b| {
        b.to_async(&rt).iter(|| {
            gate.decide(Request {
                method: "GET",
                path: "/v1/x",
                query: None,
                headers: &key_headers,
                client_ip: None,
            })
        });
    });
    g.bench_function("access_jwt_hs256", |b| {
        b.to_async(&rt).iter(|| {
            gate.decide(Request {
                method: "GET",
                path: "/v1/x",
                query: None,
                headers: &jwt_headers,
                client_ip: None,
            })
        });
    });
    g.finish();
    drop(t);
}

criterion_group!(benches, bench);
criterion_main!(benches);
