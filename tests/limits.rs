//! Rate limits through the real binary: the 429 and its headers, which limit applies (route,
//! plan, key override; key, account and IP buckets), how accurately the limit holds under a
//! steady overload (local and Redis mode, two replicas), and the local fallback when Redis dies.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::redis_server::RedisServer;
use common::*;
use serde_json::json;

// ------------------------------------------------------------------ helpers

/// An integer header, or a panic naming what was there instead.
#[track_caller]
fn int_header(r: &Resp, name: &str) -> u64 {
    let v = r
        .header(name)
        .unwrap_or_else(|| panic!("no {name} header: {:?}", r.headers));
    v.parse()
        .unwrap_or_else(|_| panic!("{name} is not an integer: {v:?}"))
}

#[track_caller]
fn assert_limited(r: &Resp) {
    assert_eq!(r.status, 429, "expected a 429: {}", r.body);
    assert_eq!(r.json()["error"]["code"], "rate_limited", "{}", r.body);
}

fn no_rate_headers(r: &Resp) -> bool {
    ["ratelimit-limit", "ratelimit-remaining", "ratelimit-reset"]
        .iter()
        .all(|h| r.header(h).is_none())
}

fn options_with_routes(echo: &Echo, routes: &str) -> Options {
    let mut opts = Options::new(echo.addr);
    opts.routes_toml = routes.into();
    opts
}

// ------------------------------------------------------------------ 429 and headers

const LIMITED_ROUTES: &str = r#"
[[routes]]
name = "limited"
path = "/v1/{*rest}"
upstream = "api"
rate_limit = { requests = 1, per_seconds = 10, burst = 3 }

[[routes]]
name = "free"
path = "/free/{*rest}"
upstream = "api"
"#;

#[test]
fn rate_limited_requests_get_429_with_retry_after_and_ratelimit_headers() {
    let echo = Echo::start();
    let kg = Keygate::start(&options_with_routes(&echo, LIMITED_ROUTES));
    let account = kg.create_account("acme");
    let (_, key) = kg.create_key(&account, json!({}));
    let (_, other) = kg.create_key(&account, json!({ "name": "other" }));

    for expected_remaining in [2, 1, 0] {
        let r = call(&kg, "/v1/x", &key);
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(int_header(&r, "ratelimit-limit"), 3);
        assert_eq!(int_header(&r, "ratelimit-remaining"), expected_remaining);
        let reset = int_header(&r, "ratelimit-reset");
        assert!(
            reset <= 30,
            "reset {reset}s: a full 3-request bucket refills in 30 s"
        );
    }
    assert_eq!(echo.hits(), 3);

    let r = call(&kg, "/v1/x", &key);
    assert_limited(&r);
    let retry = int_header(&r, "retry-after");
    assert!((1..=10).contains(&retry), "Retry-After {retry}");
    assert_eq!(int_header(&r, "ratelimit-limit"), 3);
    assert_eq!(int_header(&r, "ratelimit-remaining"), 0);
    int_header(&r, "ratelimit-reset");
    assert_eq!(
        echo.hits(),
        3,
        "the upstream must not see the refused request"
    );

    // Another key has its own bucket.
    let r = call(&kg, "/v1/x", &other);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(int_header(&r, "ratelimit-remaining"), 2);
    assert_eq!(echo.hits(), 4);

    // A route without limits reports none, even for the exhausted key.
    let r = call(&kg, "/free/x", &key);
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(no_rate_headers(&r), "{:?}", r.headers);
    // The exhausted key is still refused on the limited route.
    assert_limited(&call(&kg, "/v1/x", &key));
}

// ------------------------------------------------------------------ which limit applies

#[test]
fn key_override_beats_plan_beats_route_and_the_account_bucket_is_shared() {
    let echo = Echo::start();
    let mut opts = options_with_routes(
        &echo,
        r#"
[[routes]]
name = "limited"
path = "/v1/{*rest}"
upstream = "api"
rate_limit = { requests = 1, per_seconds = 10, burst = 3 }

[[routes]]
name = "shared"
path = "/shared/{*rest}"
upstream = "api"
account_rate_limit = { requests = 1, per_seconds = 10, burst = 4 }
"#,
    );
    opts.extra_toml = r#"
[plans.pro]
key = { requests = 100, per_seconds = 1, burst = 5 }

[plans.team]
account = { requests = 1, per_seconds = 10, burst = 2 }
"#
    .into();
    let kg = Keygate::start(&opts);
    let account = kg.create_account("acme");
    let (key_id, key) = kg.create_key(&account, json!({}));
    let limit_of = |r: &Resp| {
        assert_eq!(r.status, 200, "{}", r.body);
        int_header(r, "ratelimit-limit")
    };

    // Route default.
    assert_eq!(limit_of(&call(&kg, "/v1/x", &key)), 3);
    // The account's plan overrides the route.
    admin_ok(
        &kg,
        "PATCH",
        &format!("/admin/v1/accounts/{account}"),
        Some(json!({ "plan": "pro" })),
    );
    assert_eq!(limit_of(&call(&kg, "/v1/x", &key)), 5);
    // The key's own limit overrides the plan.
    admin_ok(
        &kg,
        "PATCH",
        &format!("/admin/v1/keys/{key_id}"),
        Some(json!({ "rate_limit": { "requests": 100, "per_seconds": 1, "burst": 7 } })),
    );
    assert_eq!(limit_of(&call(&kg, "/v1/x", &key)), 7);
    // Taken away again: back to the plan, then to the route.
    admin_ok(
        &kg,
        "PATCH",
        &format!("/admin/v1/keys/{key_id}"),
        Some(json!({ "rate_limit": null })),
    );
    assert_eq!(limit_of(&call(&kg, "/v1/x", &key)), 5);
    admin_ok(
        &kg,
        "PATCH",
        &format!("/admin/v1/accounts/{account}"),
        Some(json!({ "plan": null })),
    );
    assert_eq!(limit_of(&call(&kg, "/v1/x", &key)), 3);

    // A key created with its own limit uses it from the start.
    let (_, own) = kg.create_key(
        &account,
        json!({ "name": "own", "rate_limit": { "requests": 2, "per_seconds": 1, "burst": 9 } }),
    );
    assert_eq!(limit_of(&call(&kg, "/v1/x", &own)), 9);

    // The route's account bucket: two keys of one account share 4 requests.
    let shared = kg.create_account("shared");
    let (_, k1) = kg.create_key(&shared, json!({ "name": "k1" }));
    let (_, k2) = kg.create_key(&shared, json!({ "name": "k2" }));
    let mut remaining = Vec::new();
    for key in [&k1, &k2, &k1, &k2] {
        let r = call(&kg, "/shared/x", key);
        assert_eq!(limit_of(&r), 4);
        remaining.push(int_header(&r, "ratelimit-remaining"));
    }
    assert_eq!(remaining, [3, 2, 1, 0], "one bucket for both keys");
    let hits = echo.hits();
    assert_limited(&call(&kg, "/shared/x", &k1));
    assert_limited(&call(&kg, "/shared/x", &k2));
    assert_eq!(echo.hits(), hits);
    // Another account's keys are not affected.
    let (_, stranger) = kg.create_key(&account, json!({ "name": "stranger" }));
    assert_eq!(limit_of(&call(&kg, "/shared/x", &stranger)), 4);

    // A plan's account limit overrides the route's: two requests for the whole account.
    let team = kg.create_account("team");
    admin_ok(
        &kg,
        "PATCH",
        &format!("/admin/v1/accounts/{team}"),
        Some(json!({ "plan": "team" })),
    );
    let (_, t1) = kg.create_key(&team, json!({ "name": "t1" }));
    let (_, t2) = kg.create_key(&team, json!({ "name": "t2" }));
    assert_eq!(limit_of(&call(&kg, "/shared/x", &t1)), 2);
    assert_eq!(limit_of(&call(&kg, "/shared/x", &t2)), 2);
    assert_limited(&call(&kg, "/shared/x", &t1));
    assert_limited(&call(&kg, "/shared/x", &t2));
}

#[test]
fn ip_limit_on_a_route_without_auth() {
    let echo = Echo::start();
    let kg = Keygate::start(&options_with_routes(
        &echo,
        r#"
[[routes]]
name = "open"
path = "/open/{*rest}"
upstream = "api"
auth = "none"
ip_rate_limit = { requests = 1, per_seconds = 10, burst = 2 }
"#,
    ));
    for expected_remaining in [1, 0] {
        let r = get(&kg.url("/open/x"), &[]);
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(int_header(&r, "ratelimit-limit"), 2);
        assert_eq!(int_header(&r, "ratelimit-remaining"), expected_remaining);
    }
    let r = get(&kg.url("/open/x"), &[]);
    assert_limited(&r);
    let retry = int_header(&r, "retry-after");
    assert!((1..=10).contains(&retry), "Retry-After {retry}");
    assert_eq!(echo.hits(), 2);
}

// ------------------------------------------------------------------ accuracy

const RATE: u64 = 40;
const BURST: u64 = 10;
const SEND_RATE: u64 = 2 * RATE;
const RUN: Duration = Duration::from_secs(10);
const CLIENT_THREADS: usize = 4;

fn accuracy_routes() -> String {
    format!(
        r#"
[[routes]]
name = "v1"
path = "/v1/{{*rest}}"
upstream = "api"
rate_limit = {{ requests = {RATE}, per_seconds = 1, burst = {BURST} }}
"#
    )
}

struct Paced {
    admitted: usize,
    refused: usize,
    /// Between the first and the last request sent.
    elapsed: Duration,
    /// What an exact bucket admits at the times the requests were sent, and at the times their
    /// answers came back: keygate decided each one in between. On a loaded machine the client
    /// stalls and sends in bursts, and a bucket that is full loses the tokens of the stall, so
    /// the ideal count comes from the requests' real times, not from the planned pace.
    ideal_at_send: usize,
    ideal_at_answer: usize,
}

/// How many of the requests at `times` (seconds, any order) a token bucket of `RATE` per
/// second with `BURST`, full at the start, admits.
fn ideal_bucket(mut times: Vec<f64>) -> usize {
    times.sort_by(f64::total_cmp);
    let (mut tokens, mut last, mut admitted) = (BURST as f64, times.first().copied(), 0);
    for t in times {
        let since = last.map_or(0.0, |l| t - l);
        tokens = (tokens + since * RATE as f64).min(BURST as f64);
        last = Some(t);
        if tokens >= 1.0 {
            tokens -= 1.0;
            admitted += 1;
        }
    }
    admitted
}

/// Sends `SEND_RATE` requests a second for `RUN`, open loop: request `i` goes out at
/// `start + i / SEND_RATE` (or as soon as its thread is free, if late), to `urls[i % len]`,
/// spread over a few keep-alive clients.
fn paced(urls: &[String], key: &str) -> Paced {
    let total = (SEND_RATE * RUN.as_secs()) as usize;
    let step = Duration::from_secs(1) / SEND_RATE as u32;
    let start = Instant::now() + Duration::from_millis(100);
    let urls = Arc::new(urls.to_vec());
    let auth = bearer(key);
    let threads: Vec<_> = (0..CLIENT_THREADS)
        .map(|t| {
            let urls = urls.clone();
            let auth = auth.clone();
            std::thread::spawn(move || {
                let agent: ureq::Agent = ureq::Agent::config_builder()
                    .http_status_as_error(false)
                    .timeout_global(Some(Duration::from_secs(10)))
                    .build()
                    .into();
                let mut seen = Vec::new();
                for i in (t..total).step_by(CLIENT_THREADS) {
                    let at = start + step * i as u32;
                    let now = Instant::now();
                    if at > now {
                        std::thread::sleep(at - now);
                    }
                    let sent = Instant::now();
                    let req = http::Request::get(&urls[i % urls.len()])
                        .header("authorization", &auth)
                        .body(())
                        .expect("request");
                    let mut resp = agent.run(req).expect("paced request");
                    let _ = resp.body_mut().read_to_string();
                    seen.push((sent, Instant::now(), resp.status().as_u16()));
                }
                seen
            })
        })
        .collect();
    let seen: Vec<(Instant, Instant, u16)> = threads
        .into_iter()
        .flat_map(|t| t.join().expect("client thread"))
        .collect();
    let first = seen.iter().map(|s| s.0).min().expect("requests");
    let last = seen.iter().map(|s| s.0).max().expect("requests");
    let admitted = seen.iter().filter(|s| s.2 == 200).count();
    let refused = seen.iter().filter(|s| s.2 == 429).count();
    let since_first = |t: Instant| (t - first).as_secs_f64();
    assert_eq!(
        admitted + refused,
        seen.len(),
        "every answer is a 200 or a 429"
    );
    Paced {
        admitted,
        refused,
        elapsed: last - first,
        ideal_at_send: ideal_bucket(seen.iter().map(|s| since_first(s.0)).collect()),
        ideal_at_answer: ideal_bucket(seen.iter().map(|s| since_first(s.1)).collect()),
    }
}

/// keygate admits within 2% of what an exact bucket admits at the requests' real times (which
/// is `RATE * elapsed + BURST` when the client kept its pace).
#[track_caller]
fn assert_accurate(mode: &str, p: &Paced) {
    let t = p.elapsed.as_secs_f64();
    let paced = RATE as f64 * t + BURST as f64;
    let low = p.ideal_at_send.min(p.ideal_at_answer) as f64;
    let high = p.ideal_at_send.max(p.ideal_at_answer) as f64;
    let error = if (p.admitted as f64) < low {
        (p.admitted as f64 - low) / low * 100.0
    } else if (p.admitted as f64) > high {
        (p.admitted as f64 - high) / high * 100.0
    } else {
        0.0
    };
    println!(
        "{mode}: {} req/s for {t:.3} s, limit {RATE}/s burst {BURST}: {paced:.1} at an even \
         pace, an exact bucket admits {low}..{high} at the real times; admitted {}, refused {}, \
         error {error:+.2}%",
        SEND_RATE, p.admitted, p.refused
    );
    assert!(
        error.abs() <= 2.0,
        "{mode}: admitted {} vs an exact bucket's {low}..{high} ({error:+.2}%)",
        p.admitted
    );
}

#[test]
fn accuracy_local_mode_at_twice_the_rate() {
    let echo = Echo::start();
    let kg = Keygate::start(&options_with_routes(&echo, &accuracy_routes()));
    let account = kg.create_account("acme");
    let (_, key) = kg.create_key(&account, json!({}));
    let p = paced(&[kg.url("/v1/x")], &key);
    assert_eq!(echo.hits(), p.admitted);
    assert_accurate("local", &p);
}

#[test]
fn accuracy_redis_mode_two_replicas_share_one_limit() {
    let redis = RedisServer::start();
    let echo = Echo::start();
    let mut opts = Options::redis(echo.addr, &redis.url());
    opts.routes_toml = accuracy_routes();
    opts.extra_toml = "[rate_limits]\nmode = \"redis\"\n".into();
    let a = Keygate::start(&opts);
    let b = Keygate::start(&opts);
    let account = a.create_account("acme");
    let (_, key) = a.create_key(&account, json!({}));
    let p = paced(&[a.url("/v1/x"), b.url("/v1/x")], &key);
    assert_eq!(echo.hits(), p.admitted);
    assert_accurate("redis, 2 replicas", &p);
}

// ------------------------------------------------------------------ Redis outage

#[test]
fn redis_down_falls_back_to_local_limits_never_unlimited() {
    let mut redis = RedisServer::start();
    let echo = Echo::start();
    let mut opts = Options::redis(echo.addr, &redis.url());
    opts.routes_toml = LIMITED_ROUTES.into();
    opts.extra_toml = "[rate_limits]\nmode = \"redis\"\n".into();
    opts.cache_ttl_seconds = 600;
    let kg = Keygate::start(&opts);
    let account = kg.create_account("acme");
    let (_, key) = kg.create_key(&account, json!({}));
    // Cached (and one request of the Redis bucket used) before the outage.
    let r = call(&kg, "/v1/x", &key);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(int_header(&r, "ratelimit-remaining"), 2);
    assert_eq!(
        metric(
            &kg,
            "keygate_ratelimit_decisions_total",
            &[("mode", "fallback")]
        ),
        0.0
    );

    redis.kill();
    let down_at = Instant::now();
    // Concurrently: each decision may wait for Redis to time out before it falls back.
    let url = kg.url("/v1/x");
    let threads: Vec<_> = (0..10)
        .map(|_| {
            let url = url.clone();
            let auth = bearer(&key);
            std::thread::spawn(move || {
                let sent = Instant::now();
                let status = get(&url, &[("authorization", &auth)]).status;
                (status, sent.elapsed().as_millis())
            })
        })
        .collect();
    let statuses: Vec<(u16, u128)> = threads
        .into_iter()
        .map(|t| t.join().expect("client thread"))
        .collect();
    let elapsed = down_at.elapsed();
    println!("(status, ms) with Redis down for {elapsed:?}: {statuses:?}");
    assert!(
        statuses.iter().all(|s| s.0 == 200 || s.0 == 429),
        "{statuses:?}"
    );
    let admitted = statuses.iter().filter(|s| s.0 == 200).count() as u64;
    // The local bucket starts full: its burst, then one request per 10 s.
    let allowed = 3 + elapsed.as_secs() / 10;
    assert!(
        admitted <= allowed,
        "{admitted} admitted in {elapsed:?}: {statuses:?}"
    );
    assert!(
        statuses.iter().filter(|s| s.0 == 429).count() >= 10 - allowed as usize,
        "refusals after the burst: {statuses:?}"
    );
    let r = call(&kg, "/v1/x", &key);
    assert_limited(&r);
    int_header(&r, "retry-after");
    assert!(
        metric(
            &kg,
            "keygate_ratelimit_decisions_total",
            &[("mode", "fallback")]
        ) > 0.0
    );
}

// ------------------------------------------------------------------ sliding windows

const WINDOW_REQUESTS: usize = 10;
const WINDOW: Duration = Duration::from_secs(2);

/// "10 per 2 s" as a sliding window (the documents' "10 per minute", shortened for the test).
fn window_routes() -> String {
    format!(
        r#"
[[routes]]
name = "v1"
path = "/v1/{{*rest}}"
upstream = "api"
rate_limit = {{ requests = {WINDOW_REQUESTS}, per_seconds = {}, algorithm = "sliding_window" }}
"#,
        WINDOW.as_secs()
    )
}

/// `(sent, answered, status)` of requests sent every 50 ms for 6 s (three windows at twice the
/// limit's rate and more), alternating over `urls`, one at a time.
fn windowed(urls: &[String], key: &str) -> Vec<(Instant, Instant, u16)> {
    let auth = bearer(key);
    let start = Instant::now();
    let mut seen = Vec::new();
    for i in 0..120u32 {
        let at = start + Duration::from_millis(50) * i;
        let now = Instant::now();
        if at > now {
            std::thread::sleep(at - now);
        }
        let sent = Instant::now();
        let status = get(&urls[i as usize % urls.len()], &[("authorization", &auth)]).status;
        seen.push((sent, Instant::now(), status));
    }
    seen
}

/// No span of `WINDOW` holds more than `WINDOW_REQUESTS` admitted requests. A request was
/// decided between its sending and its answer, so admitted requests `i < j` are surely in one
/// span when `j` was answered less than `WINDOW` after `i` was sent: this count never
/// overstates, and a token bucket of the same numbers (up to 20 in 2 s) fails it.
#[track_caller]
fn assert_window_held(mode: &str, seen: &[(Instant, Instant, u16)]) {
    assert!(
        seen.iter().all(|s| s.2 == 200 || s.2 == 429),
        "every answer is a 200 or a 429: {:?}",
        seen.iter().map(|s| s.2).collect::<Vec<_>>()
    );
    let admitted: Vec<_> = seen.iter().filter(|s| s.2 == 200).collect();
    for (i, first) in admitted.iter().enumerate() {
        let in_span = admitted[i..]
            .iter()
            .filter(|later| later.1 < first.0 + WINDOW)
            .count();
        assert!(
            in_span <= WINDOW_REQUESTS,
            "{mode}: {in_span} admitted within {WINDOW:?}"
        );
    }
    // And it does not refuse far more than it must: 6 s at 10 per 2 s is about 30.
    println!("{mode}: {} of {} admitted", admitted.len(), seen.len());
    assert!(
        admitted.len() >= 25,
        "{mode}: only {} admitted",
        admitted.len()
    );
}

#[test]
fn sliding_window_admits_at_most_the_limit_in_any_span_with_headers() {
    let echo = Echo::start();
    let kg = Keygate::start(&options_with_routes(&echo, &window_routes()));
    let account = kg.create_account("acme");
    let (_, key) = kg.create_key(&account, json!({}));

    // A burst: the limit goes through, counted down, then 429 until the window slides.
    for expected_remaining in (0..WINDOW_REQUESTS as u64).rev() {
        let r = call(&kg, "/v1/x", &key);
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(int_header(&r, "ratelimit-limit"), WINDOW_REQUESTS as u64);
        assert_eq!(int_header(&r, "ratelimit-remaining"), expected_remaining);
        let reset = int_header(&r, "ratelimit-reset");
        assert!((1..=3).contains(&reset), "reset {reset}");
    }
    let r = call(&kg, "/v1/x", &key);
    assert_limited(&r);
    let retry = int_header(&r, "retry-after");
    assert!((1..=3).contains(&retry), "Retry-After {retry}");
    assert_eq!(int_header(&r, "ratelimit-limit"), WINDOW_REQUESTS as u64);
    assert_eq!(int_header(&r, "ratelimit-remaining"), 0);
    assert_eq!(echo.hits(), WINDOW_REQUESTS);
    // After Retry-After the window has room again.
    std::thread::sleep(Duration::from_secs(retry));
    let r = call(&kg, "/v1/x", &key);
    assert_eq!(r.status, 200, "{}", r.body);

    let (_, fresh) = kg.create_key(&account, json!({ "name": "fresh" }));
    let seen = windowed(&[kg.url("/v1/x")], &fresh);
    assert_window_held("local", &seen);
}

#[test]
fn sliding_window_in_redis_is_shared_by_two_replicas() {
    let redis = RedisServer::start();
    let echo = Echo::start();
    let mut opts = Options::redis(echo.addr, &redis.url());
    opts.routes_toml = window_routes();
    opts.extra_toml = "[rate_limits]\nmode = \"redis\"\n".into();
    let a = Keygate::start(&opts);
    let b = Keygate::start(&opts);
    let account = a.create_account("acme");
    let (_, key) = a.create_key(&account, json!({}));
    let seen = windowed(&[a.url("/v1/x"), b.url("/v1/x")], &key);
    assert_window_held("redis, 2 replicas", &seen);

    // The headers come from the Lua script: a burst split over both replicas counts down one
    // window, and the refusal says when the oldest requests leave it.
    let (_, fresh) = a.create_key(&account, json!({ "name": "fresh" }));
    for expected_remaining in (0..WINDOW_REQUESTS as u64).rev() {
        let kg = if expected_remaining % 2 == 0 { &a } else { &b };
        let r = call(kg, "/v1/x", &fresh);
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(int_header(&r, "ratelimit-limit"), WINDOW_REQUESTS as u64);
        assert_eq!(int_header(&r, "ratelimit-remaining"), expected_remaining);
        let reset = int_header(&r, "ratelimit-reset");
        assert!((1..=3).contains(&reset), "reset {reset}");
    }
    let r = call(&b, "/v1/x", &fresh);
    assert_limited(&r);
    let retry = int_header(&r, "retry-after");
    assert!((1..=3).contains(&retry), "Retry-After {retry}");
    assert_eq!(int_header(&r, "ratelimit-remaining"), 0);
    assert_eq!(
        metric(
            &a,
            "keygate_ratelimit_decisions_total",
            &[("mode", "fallback")]
        ),
        0.0,
        "decided in Redis, not by the local fallback"
    );
}
