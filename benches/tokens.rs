//! Criterion: the whole decision for an access JWT (signature, claims, revocation cut-offs, the
//! same authorization as a key) next to the decision for a cached API key, in one run, on an
//! `auth = "any"` route of a gate built exactly as `keygate serve` builds it.

use criterion::{criterion_group, criterion_main, Criterion};
use http::{HeaderMap, HeaderValue};
use keygate::gate::{Decision, Request};
use keygate::store::{NewAccount, NewKey, Permission};
use keygate::tokens::{ClaimsDraft, TokenKind};

fn bearer(token: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    let value = HeaderValue::from_str(&format!("Bearer {token}")).expect("header value");
    h.insert(http::header::AUTHORIZATION, value);
    h
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    std::env::set_var("KEYGATE_BENCH_PEPPER", "bench-pepper-0123456789abcdef");
    std::env::set_var("KEYGATE_BENCH_ADMIN", "bench-admin-token-0123456789");
    std::env::set_var(
        "KEYGATE_BENCH_JWT",
        "bench-jwt-secret-0123456789abcdef0123456789",
    );
    let toml = format!(
        r#"
[server]
data_dir = "{}"
[secrets]
pepper = {{ env = "KEYGATE_BENCH_PEPPER" }}
admin_token = {{ env = "KEYGATE_BENCH_ADMIN" }}
[tokens]
secret = {{ env = "KEYGATE_BENCH_JWT" }}
[upstreams.api]
address = "127.0.0.1:1"
[[routes]]
path = "/v1/{{*rest}}"
upstream = "api"
auth = "any"
scopes = ["leads:read"]
"#,
        dir.path().display()
    );
    let config = keygate::config::Config::parse(&toml, "bench").expect("config");
    let app = keygate::app::build(config).expect("app");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let gate = app.gate.clone();
    let shared = app.shared.clone();
    let (key_headers, jwt_headers) = rt.block_on(async {
        let account = shared
            .store
            .create_account(NewAccount {
                name: "bench".into(),
            })
            .await
            .expect("account");
        let plaintext = shared.config.load().key_format.generate();
        let key = shared
            .store
            .create_key(NewKey {
                account_id: account.id.clone(),
                user_id: None,
                name: "bench".into(),
                display_prefix: shared
                    .config
                    .load()
                    .key_format
                    .display_prefix(plaintext.expose()),
                hash: shared.hasher.hash(plaintext.expose()),
                scopes: vec!["leads:read".into()],
                permission: Permission::ReadWrite,
                expires_at: None,
                rate_limit: None,
                resources: None,
                rotated_from: None,
            })
            .await
            .expect("key");
        let tokens = &gate.local().expect("local endpoints").tokens;
        let (jwt, _) = tokens
            .issue(
                ClaimsDraft {
                    sub: key.id.clone(),
                    acc: account.id.clone(),
                    usr: None,
                    kid_key: Some(key.id.clone()),
                    scopes: key.scopes.clone(),
                    perm: "read_write".into(),
                    ..ClaimsDraft::default()
                },
                TokenKind::Access,
            )
            .expect("jwt");
        (bearer(plaintext.expose()), bearer(&jwt))
    });
    // Both must be let through before anything is timed (this also warms the key's cache entry).
    for headers in [&key_headers, &jwt_headers] {
        let d = rt.block_on(gate.decide(Request {
            method: "GET",
            path: "/v1/x",
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
                headers: &jwt_headers,
                client_ip: None,
            })
        });
    });
    g.finish();
    drop(app);
}

criterion_group!(benches, bench);
criterion_main!(benches);
