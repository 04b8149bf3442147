//! The shared store: two keygate replicas on one real redis-server (started per test, killed and
//! restarted to simulate outages).

mod common;

use std::time::{Duration, Instant};

use common::redis_server::RedisServer;
use common::*;
use serde_json::json;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

#[test]
fn a_revoke_through_one_replica_is_refused_by_the_other() {
    let redis = RedisServer::start();
    let echo = Echo::start();
    let a = Keygate::start(&Options::redis(echo.addr, &redis.url()));
    let b = Keygate::start(&Options::redis(echo.addr, &redis.url()));
    let account = a.create_account("acme");

    const N: usize = 200;
    let mut keys = Vec::with_capacity(N);
    for i in 0..N {
        let (id, key) = a.create_key(&account, json!({ "name": format!("k{i}") }));
        // Cached on B before the revoke: B must be told, not just miss.
        assert_eq!(call(&b, "/v1/x", &key).status, 200);
        keys.push((id, key));
    }
    let mut delays = Vec::with_capacity(N);
    for (id, key) in &keys {
        let r = a.admin("POST", &format!("/admin/v1/keys/{id}/revoke"), None);
        assert_eq!(r.status, 200, "{}", r.body);
        let revoked_at = Instant::now();
        wait_until(
            "B to refuse the revoked key",
            Duration::from_secs(5),
            || {
                let r = call(&b, "/v1/x", key);
                r.status == 401 && r.json()["error"]["code"] == "key_revoked"
            },
        );
        delays.push(revoked_at.elapsed());
    }
    delays.sort();
    println!(
        "revocation seen by replica B over {N} revokes: p50 {:?}, p99 {:?}, max {:?}",
        percentile(&delays, 0.50),
        percentile(&delays, 0.99),
        delays[N - 1]
    );
    // The revoked keys stay refused on both replicas.
    assert_eq!(call(&a, "/v1/x", &keys[0].1).status, 401);
    assert_eq!(call(&b, "/v1/x", &keys[N - 1].1).status, 401);
    // B counted what it heard, and how late each token cut-off arrived.
    let heard = |kind| {
        metric(
            &b,
            "keygate_invalidations_received_total",
            &[("kind", kind)],
        )
    };
    assert!(heard("key") >= N as f64, "{}", heard("key"));
    assert!(
        heard("token_cutoff") >= N as f64,
        "{}",
        heard("token_cutoff")
    );
    assert!(metric(&b, "keygate_invalidation_lag_seconds_count", &[]) >= N as f64);
}

#[test]
fn suspending_an_account_reaches_every_replica() {
    let redis = RedisServer::start();
    let echo = Echo::start();
    let a = Keygate::start(&Options::redis(echo.addr, &redis.url()));
    let b = Keygate::start(&Options::redis(echo.addr, &redis.url()));
    let account = a.create_account("acme");
    let (_, key) = a.create_key(&account, json!({}));
    assert_eq!(call(&b, "/v1/x", &key).status, 200);
    let r = a.admin(
        "POST",
        &format!("/admin/v1/accounts/{account}/suspend"),
        None,
    );
    assert_eq!(r.status, 200);
    wait_until("B to see the suspension", Duration::from_secs(5), || {
        call(&b, "/v1/x", &key).status == 403
    });
    assert_eq!(
        call(&b, "/v1/x", &key).json()["error"]["code"],
        "account_suspended"
    );
    // B's admin API reads the same store.
    let r = b.admin("GET", &format!("/admin/v1/accounts/{account}"), None);
    assert_eq!(r.json()["status"], "suspended");
}

#[test]
fn lost_events_are_not_trusted_the_cache_is_cleared_on_resubscribe() {
    let redis = RedisServer::start();
    let echo = Echo::start();
    let b = Keygate::start(&Options::redis(echo.addr, &redis.url()));
    let account = b.create_account("acme");
    let (id, key) = b.create_key(&account, json!({}));
    assert_eq!(call(&b, "/v1/x", &key).status, 200);
    assert_eq!(metric(&b, "keygate_cache_clears_total", &[]), 0.0);

    // A revoke whose event is lost: written straight into Redis, never published.
    let field = redis.cli(&["HSET", &format!("kg:{{{id}}}:k"), "status", "revoked"]);
    assert_eq!(
        field.trim(),
        "0",
        "the key hash exists and status was overwritten"
    );
    // Still cached on B: nobody told it.
    assert_eq!(call(&b, "/v1/x", &key).status, 200);

    // Drop B's subscription: when it is back, B must trust nothing it cached.
    let killed = redis.cli(&["CLIENT", "KILL", "TYPE", "pubsub"]);
    assert_eq!(killed.trim(), "1", "one subscriber (B) was disconnected");
    wait_until(
        "B to clear its cache after resubscribing",
        Duration::from_secs(5),
        || metric(&b, "keygate_cache_clears_total", &[]) >= 1.0,
    );
    let r = call(&b, "/v1/x", &key);
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["error"]["code"], "key_revoked");
}

#[test]
fn redis_restart_clears_the_cache_and_a_revoke_made_meanwhile_is_honoured() {
    let mut redis = RedisServer::start();
    let echo = Echo::start();
    let a = Keygate::start(&Options::redis(echo.addr, &redis.url()));
    let b = Keygate::start(&Options::redis(echo.addr, &redis.url()));
    let account = a.create_account("acme");
    let (id, key) = a.create_key(&account, json!({}));
    assert_eq!(call(&b, "/v1/x", &key).status, 200);

    redis.kill();
    wait_until(
        "B to notice the lost subscription",
        Duration::from_secs(5),
        || metric(&b, "keygate_invalidation_connected", &[]) == 0.0,
    );
    redis.restart();
    // Revoke through A as soon as Redis is back: B may or may not be subscribed yet.
    wait_until(
        "A to revoke after the restart",
        Duration::from_secs(10),
        || {
            a.admin("POST", &format!("/admin/v1/keys/{id}/revoke"), None)
                .status
                == 200
        },
    );
    wait_until("B to resubscribe", Duration::from_secs(5), || {
        metric(&b, "keygate_invalidation_connected", &[]) == 1.0
    });
    assert!(metric(&b, "keygate_cache_clears_total", &[]) >= 1.0);
    wait_until("B to refuse the key", Duration::from_secs(5), || {
        call(&b, "/v1/x", &key).status == 401
    });
}

#[test]
fn redis_down_cached_keys_work_until_max_stale_unknown_keys_get_503_and_all_recovers() {
    let mut redis = RedisServer::start();
    let echo = Echo::start();
    let mut opts = Options::redis(echo.addr, &redis.url());
    opts.cache_ttl_seconds = 1;
    opts.cache_extra_toml = "max_stale_seconds = 3".into();
    let kg = Keygate::start(&opts);
    let account = kg.create_account("acme");
    let (_, cached) = kg.create_key(&account, json!({}));
    let (_, never_used) = kg.create_key(&account, json!({}));
    assert_eq!(call(&kg, "/v1/x", &cached).status, 200);
    assert_eq!(get(&kg.ops_url("/readyz"), &[]).status, 200);

    redis.kill();
    // Past the TTL but within max_stale: served from cache. Polled until a request finds the
    // entry past its TTL, cannot refresh it and serves it stale; every answer must be a 200.
    wait_until(
        "the entry to be served stale",
        Duration::from_secs(10),
        || {
            let r = call(&kg, "/v1/x", &cached);
            assert_eq!(r.status, 200, "stale-if-error: {}", r.body);
            metric(&kg, "keygate_cache_stale_served_total", &[]) >= 1.0
        },
    );
    // Never seen: cannot be checked, so refused with 503, never let through.
    let r = call(&kg, "/v1/x", &never_used);
    assert_eq!(r.status, 503);
    assert_eq!(r.json()["error"]["code"], "store_unavailable");
    assert_eq!(get(&kg.ops_url("/readyz"), &[]).status, 503);
    assert!(metric(&kg, "keygate_store_errors_total", &[]) >= 1.0);

    // Past max_stale the cached key is refused too: a 200 until then, a 503 after.
    wait_until("max_stale to pass", Duration::from_secs(10), || {
        let r = call(&kg, "/v1/x", &cached);
        assert!(matches!(r.status, 200 | 503), "{} {}", r.status, r.body);
        r.status == 503
    });

    // Redis comes back: everything recovers without restarting keygate.
    redis.restart();
    wait_until(
        "readyz after Redis returns",
        Duration::from_secs(10),
        || get(&kg.ops_url("/readyz"), &[]).status == 200,
    );
    wait_until("keys to work again", Duration::from_secs(10), || {
        call(&kg, "/v1/x", &cached).status == 200 && call(&kg, "/v1/x", &never_used).status == 200
    });
}

#[test]
fn a_hung_redis_costs_a_request_at_most_the_configured_timeout() {
    let redis = RedisServer::start();
    let echo = Echo::start();
    let mut opts = Options::redis(echo.addr, &redis.url());
    opts.store_toml.push_str("timeout_ms = 300\n");
    opts.routes_toml = r#"
[[routes]]
name = "limited"
path = "/v1/{*rest}"
upstream = "api"
rate_limit = { requests = 100, per_seconds = 1, burst = 100 }

[[routes]]
name = "paid"
path = "/paid/{*rest}"
upstream = "api"
cost = 1
"#
    .into();
    opts.extra_toml = "[rate_limits]\nmode = \"redis\"\n".into();
    let kg = Keygate::start(&opts);
    let account = kg.create_account("acme");
    let (_, cached) = kg.create_key(&account, json!({}));
    let (_, never_used) = kg.create_key(&account, json!({}));
    assert_eq!(call(&kg, "/v1/x", &cached).status, 200);
    let hits = echo.hits();

    // Redis hangs: its port still accepts, its connections stay open, nothing answers. Each
    // request below gets its answer while Redis is still stopped (the client would give up
    // after 10 s), so no Redis call can have waited for longer than it was allowed to.
    redis.pause();
    let timed = |what: &str, f: &dyn Fn() -> Resp| {
        let started = Instant::now();
        let r = f();
        println!("{what}: {} in {:?}", r.status, started.elapsed());
        r
    };
    // A cached key: no store read; the global limit falls back to local limits.
    let r = timed("cached key", &|| call(&kg, "/v1/x", &cached));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("ratelimit-limit"), Some("100"));
    // An unknown key cannot be checked: 503, never let through.
    let r = timed("uncached key", &|| call(&kg, "/v1/x", &never_used));
    assert_eq!(
        (r.status, r.json()["error"]["code"].clone()),
        (503, json!("store_unavailable"))
    );
    // A paid route cannot charge: 503, and the upstream is not called.
    let r = timed("paid route", &|| {
        get(&kg.url("/paid/x"), &[("authorization", &bearer(&cached))])
    });
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(echo.hits(), hits + 1);
    // Readiness and the admin API answer too.
    let r = timed("readyz", &|| get(&kg.ops_url("/readyz"), &[]));
    assert_eq!(r.status, 503);
    let r = timed("admin write", &|| {
        kg.admin(
            "POST",
            "/admin/v1/accounts",
            Some(json!({ "name": "late" })),
        )
    });
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(
        metric(
            &kg,
            "keygate_ratelimit_decisions_total",
            &[("mode", "fallback")]
        ) >= 1.0
    );
    assert!(metric(&kg, "keygate_store_errors_total", &[]) >= 1.0);

    // Redis answers again: everything recovers without restarting keygate.
    redis.resume();
    wait_until(
        "readyz after Redis resumes",
        Duration::from_secs(10),
        || get(&kg.ops_url("/readyz"), &[]).status == 200,
    );
    wait_until("keys to work again", Duration::from_secs(10), || {
        call(&kg, "/v1/x", &never_used).status == 200
    });
    let r = get(&kg.url("/paid/x"), &[("authorization", &bearer(&cached))]);
    assert_eq!(r.status, 402, "no credits were ever added: {}", r.body);
}

#[test]
fn traffic_through_a_redis_outage_never_fails_open() {
    let mut redis = RedisServer::start();
    let echo = Echo::start();
    let kg = Keygate::start(&Options::redis(echo.addr, &redis.url()));
    let account = kg.create_account("acme");
    let (_, good) = kg.create_key(&account, json!({}));
    let (revoked_id, revoked) = kg.create_key(&account, json!({}));
    assert_eq!(call(&kg, "/v1/x", &good).status, 200);
    assert_eq!(
        kg.admin("POST", &format!("/admin/v1/keys/{revoked_id}/revoke"), None)
            .status,
        200
    );
    let stranger = keygate::keys::KeyFormat::new("kg_test_", 32).generate();

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    // Rounds of three requests (one per key) sent so far.
    let rounds = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let traffic = {
        let stop = stop.clone();
        let rounds = rounds.clone();
        let url = kg.url("/v1/x");
        let stranger = stranger.expose().to_string();
        std::thread::spawn(move || {
            let mut seen = std::collections::BTreeMap::<(String, u16), usize>::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                for (name, key) in [
                    ("good", &good),
                    ("revoked", &revoked),
                    ("stranger", &stranger),
                ] {
                    let r = get(&url, &[("authorization", &bearer(key))]);
                    *seen.entry((name.to_string(), r.status)).or_default() += 1;
                }
                rounds.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            seen
        })
    };
    // Traffic before the outage, while keygate sees Redis down, and once it is back and the
    // invalidation subscription is up again: each phase is observed, then given some rounds.
    let some_rounds = |phase: &str| {
        let from = rounds.load(std::sync::atomic::Ordering::Relaxed);
        wait_until(phase, Duration::from_secs(10), || {
            rounds.load(std::sync::atomic::Ordering::Relaxed) >= from + 20
        });
    };
    some_rounds("traffic before the outage");
    redis.kill();
    wait_until("readyz to see Redis down", Duration::from_secs(10), || {
        get(&kg.ops_url("/readyz"), &[]).status == 503
    });
    some_rounds("traffic during the outage");
    redis.restart();
    wait_until("Redis to be back", Duration::from_secs(10), || {
        get(&kg.ops_url("/readyz"), &[]).status == 200
            && metric(&kg, "keygate_invalidation_connected", &[]) == 1.0
    });
    some_rounds("traffic after the outage");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let seen = traffic.join().expect("traffic thread");
    println!("statuses during the outage: {seen:?}");
    for ((name, status), n) in &seen {
        match name.as_str() {
            "good" => assert_eq!(*status, 200, "{n} requests of the cached key got {status}"),
            _ => assert_ne!(*status, 200, "{name} key let through {n} times"),
        }
    }
}

#[test]
fn redis_cluster_serves_keys_across_slots() {
    // Three masters, no replicas: enough to spread accounts and keys over slots.
    let nodes: Vec<RedisServer> = (0..3).map(|_| RedisServer::start_cluster_node()).collect();
    let addrs: Vec<String> = nodes
        .iter()
        .map(|n| format!("127.0.0.1:{}", n.port))
        .collect();
    let mut args = vec!["--cluster", "create"];
    args.extend(addrs.iter().map(String::as_str));
    args.extend(["--cluster-replicas", "0", "--cluster-yes"]);
    let out = nodes[0].cli(&args);
    assert!(
        out.contains("All 16384 slots covered"),
        "cluster create: {out}"
    );
    wait_until("cluster state ok", Duration::from_secs(10), || {
        nodes
            .iter()
            .all(|n| n.cli(&["CLUSTER", "INFO"]).contains("cluster_state:ok"))
    });

    let echo = Echo::start();
    let mut opts = Options::new(echo.addr);
    let list: Vec<String> = addrs.iter().map(|a| format!("\"redis://{a}\"")).collect();
    opts.store_toml = format!(
        "[store]\nbackend = \"redis\"\ncluster_nodes = [{}]\n",
        list.join(", ")
    );
    opts.routes_toml = format!(
        r#"{DEFAULT_ROUTES}
[[routes]]
name = "metered"
path = "/metered/{{*rest}}"
upstream = "api"
rate_limit = {{ requests = 1, per_seconds = 3600, burst = 5 }}
"#
    );
    opts.extra_toml = "[rate_limits]\nmode = \"redis\"\n".into();
    let a = Keygate::start(&opts);
    let b = Keygate::start(&opts);
    let mut keys = Vec::new();
    for i in 0..6 {
        let account = a.create_account(&format!("acme{i}"));
        let (id, key) = a.create_key(&account, json!({ "name": format!("k{i}") }));
        assert_eq!(call(&b, "/v1/x", &key).status, 200);
        keys.push((id, key));
    }
    let r = a.admin("GET", "/admin/v1/keys", None);
    assert_eq!(r.json()["keys"].as_array().map(Vec::len), Some(6));

    // One global limit in the cluster: a burst of five, shared by both replicas.
    let metered = |kg: &Keygate, key: &str| {
        get(&kg.url("/metered/x"), &[("authorization", &bearer(key))]).status
    };
    let statuses: Vec<u16> = (0..10)
        .map(|i| metered(if i % 2 == 0 { &a } else { &b }, &keys[0].1))
        .collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        5,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 429).count(),
        5,
        "{statuses:?}"
    );
    assert_eq!(
        metric(
            &a,
            "keygate_ratelimit_decisions_total",
            &[("mode", "fallback")]
        ),
        0.0
    );
    for (id, key) in &keys {
        assert_eq!(
            a.admin("POST", &format!("/admin/v1/keys/{id}/revoke"), None)
                .status,
            200
        );
        wait_until("B to refuse a revoked key", Duration::from_secs(5), || {
            call(&b, "/v1/x", key).status == 401
        });
    }
}

#[test]
fn redis_mode_refuses_to_start_without_a_configured_pepper() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("keygate.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[server]
data_dir = "{data}"

[listeners]
public = "127.0.0.1:{p1}"
admin = "127.0.0.1:{p2}"
ops = "127.0.0.1:{p3}"

[store]
backend = "redis"
url = "{url}"

[upstreams.api]
address = "127.0.0.1:9"

[[routes]]
path = "/{{*rest}}"
upstream = "api"
"#,
            data = dir.path().join("data").display(),
            p1 = free_port(),
            p2 = free_port(),
            p3 = free_port(),
            url = redis.url(),
        ),
    )
    .expect("write config");
    for command in ["serve", "check-config"] {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_keygate"));
        cmd.arg(command);
        if command == "serve" {
            cmd.arg("--config");
        }
        let out = cmd.arg(&config).output().expect("run keygate");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success(),
            "{command} accepted a Redis config without a pepper"
        );
        assert!(
            stderr.contains("secrets.pepper") && stderr.contains("same pepper"),
            "{command} should say why: {stderr}"
        );
    }
    // Nothing was generated in its place.
    assert!(!dir.path().join("data").join("pepper").exists());
}

#[test]
fn replicas_accept_each_others_tokens_without_a_configured_token_secret() {
    let redis = RedisServer::start();
    let echo = Echo::start();
    let mut opts = Options::redis(echo.addr, &redis.url());
    opts.routes_toml = token_routes();
    let a = Keygate::start(&opts);
    let b = Keygate::start(&opts);
    let account = a.create_account("acme");
    let (_, key) = a.create_key(&account, json!({}));
    let jwt = exchange(&a, &key);
    let r = get(&b.url("/any/x"), &[("authorization", &bearer(&jwt))]);
    assert_eq!(r.status, 200, "B refused A's token: {}", r.body);
    assert_eq!(r.json()["headers"]["x-keygate-auth-method"], "jwt");
}

/// The default routes plus the key exchange and a route taking keys or tokens.
fn token_routes() -> String {
    format!(
        r#"{DEFAULT_ROUTES}
[[routes]]
name = "exchange"
path = "/auth/exchange"
methods = ["POST"]
local = "exchange"
auth = "api_key"

[[routes]]
name = "any"
path = "/any/{{*rest}}"
upstream = "api"
auth = "any"
"#
    )
}

fn exchange(kg: &Keygate, key: &str) -> String {
    let r = request(
        "POST",
        &kg.url("/auth/exchange"),
        &[("authorization", &bearer(key))],
        None,
    );
    assert_eq!(r.status, 200, "exchange: {}", r.body);
    r.json()["accessToken"].as_str().expect("jwt").to_string()
}

#[test]
fn a_replica_started_while_redis_is_down_answers_503_then_comes_up_by_itself() {
    let mut redis = RedisServer::start();
    let echo = Echo::start();
    let mut opts = Options::redis(echo.addr, &redis.url());
    opts.routes_toml = token_routes();
    let a = Keygate::start(&opts);
    let account = a.create_account("acme");
    let (revoked_id, revoked_key) = a.create_key(&account, json!({}));
    let (_, good_key) = a.create_key(&account, json!({}));
    let revoked_jwt = exchange(&a, &revoked_key);
    let good_jwt = exchange(&a, &good_key);
    let r = a.admin("POST", &format!("/admin/v1/keys/{revoked_id}/revoke"), None);
    assert_eq!(r.status, 200, "{}", r.body);

    // Redis is away when replica B starts: B starts anyway (no restart loop), is not ready, and
    // answers 503 for everything it cannot check. In particular it cannot know that a token's key
    // was revoked before it started, so it accepts no token at all.
    redis.kill();
    let b = Keygate::start(&opts);
    assert_eq!(get(&b.ops_url("/readyz"), &[]).status, 503);
    let hits = echo.hits();
    for (what, credential) in [
        ("revoked key's token", &revoked_jwt),
        ("good token", &good_jwt),
        ("good key", &good_key),
    ] {
        let r = get(&b.url("/any/x"), &[("authorization", &bearer(credential))]);
        assert_eq!(
            (r.status, r.json()["error"]["code"].clone()),
            (503, json!("store_unavailable")),
            "{what}: {}",
            r.body
        );
    }
    assert_eq!(echo.hits(), hits, "nothing reached the upstream");

    // Redis returns (its append-only file kept everything): B comes up by itself.
    redis.restart();
    wait_until("B to become ready", Duration::from_secs(15), || {
        get(&b.ops_url("/readyz"), &[]).status == 200
    });
    let r = get(
        &b.url("/any/x"),
        &[("authorization", &bearer(&revoked_jwt))],
    );
    assert_eq!(
        (r.status, r.json()["error"]["code"].clone()),
        (401, json!("key_revoked"))
    );
    for credential in [&good_jwt, &good_key] {
        let r = get(&b.url("/any/x"), &[("authorization", &bearer(credential))]);
        assert_eq!(r.status, 200, "{}", r.body);
    }
}
