//! End-to-end load run: a bare upstream, driven directly; through a bare pingora pass-through
//! (the floor: the engine with nothing of keygate's, see `bare`); through keygate on an
//! `auth = "none"` route (keygate's pass-through); through keygate with a cached API key; and the
//! same keyed route over keygate's TLS listener (kept-alive connections, so handshakes are not
//! what it measures); and the keyed route refusing a malformed key (wrong length, refused before
//! any lookup) and a well-formed key nobody issued (the negative cache), since bad input on the
//! fast path should cost no more than a good key. Prints req/s, p50 and p99 for each, and the ratios that say what keygate,
//! authentication and TLS cost.
//!
//! Run: `cargo bench --bench e2e`. Needs `wrk` (`apt-get install -y wrk`); without it the run
//! fails with that install line.
//!
//! `KEYGATE_BENCH_BASELINE_BIN=/path/to/an/older/keygate` adds that build's `auth = "none"` and
//! cached-key routes (plain HTTP) to the same run, for before/after ratios on one machine.
//!
//! Forward-auth: keygate's verify answer alone, plain nginx in front of the upstream, and nginx
//! with the README's `auth_request` config asking keygate's verify route (cached key). Without
//! nginx the run fails with its install line.
//!
//! Environment: `KEYGATE_BENCH_SECONDS` (per target, default 5), `KEYGATE_BENCH_CONNECTIONS`
//! (default 32), `KEYGATE_BENCH_ROUNDS` (default 1; with more, the targets run in rotated order
//! each round and the table shows each column's median, which steadies a noisy machine),
//! `KEYGATE_BENCH_ONLY` (comma-separated words: only the targets whose names contain one),
//! `KEYGATE_BENCH_RUST_LOG` (keygate's `RUST_LOG`, default `warn`: no access lines; `info` is
//! what keygate ships with, one access line per request on stderr, here a file).

use std::process::ExitCode;

#[path = "e2e/harness.rs"]
mod harness;
use harness::*;

#[path = "e2e/bare.rs"]
mod bare;
#[path = "e2e/nginx.rs"]
mod nginx;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    // Re-executed by the load run as the bare pingora floor (see `bare`).
    if let Some(code) = bare::run_if_asked(&args) {
        return code;
    }
    // `cargo bench` passes `--bench`; `cargo test --all-targets` runs this without it, and then
    // only the setup is checked (upstream, keygate, admin API, a keyed request), with no load.
    let load_run = args.iter().any(|a| a == "--bench");
    if load_run && !wrk_available() {
        eprintln!("e2e bench: `wrk` is not on PATH. Install it with: apt-get install -y wrk");
        return ExitCode::FAILURE;
    }
    let seconds = env_u64("KEYGATE_BENCH_SECONDS", 5).max(1);
    let connections = env_u64("KEYGATE_BENCH_CONNECTIONS", 32).max(1);
    let rounds = env_u64("KEYGATE_BENCH_ROUNDS", 1).max(1);
    // Before any thread starts, so the upstream's threads and wrk inherit the load CPUs.
    let pinned = load_run && pin_load_generator();

    let upstream = start_upstream();
    let kg = Keygate::start(
        env!("CARGO_BIN_EXE_keygate").as_ref(),
        upstream,
        pinned,
        true,
        VERIFY_ROUTES,
    );
    let Some(key) = make_key(&kg) else {
        return ExitCode::SUCCESS;
    };
    // An earlier build of keygate (KEYGATE_BENCH_BASELINE_BIN) on the same upstream, for
    // before/after comparisons in one run; plain HTTP only, as older builds had no TLS listener.
    let baseline = std::env::var_os("KEYGATE_BENCH_BASELINE_BIN").map(|bin| {
        let base = Keygate::start(std::path::Path::new(&bin), upstream, pinned, false, "");
        let key = make_key(&base).expect("the baseline build has the admin API");
        (base, key)
    });
    let bare = bare::Bare::start(upstream, pinned);
    let Some(nginx) = nginx::Nginx::start(kg.public, upstream) else {
        eprintln!("e2e bench: nginx is not installed. Install it with: apt-get install -y nginx");
        return ExitCode::FAILURE;
    };

    let mut targets = vec![
        Target::new("direct upstream", format!("http://{upstream}/x"), None),
        Target::new(BARE, format!("http://{}/x", bare.addr), None),
    ];
    targets.extend([
        Target::new(OPEN, format!("http://{}/open/x", kg.public), None),
        Target::new(KEYED, format!("http://{}/v1/x", kg.public), Some(&key)),
        // Bad input on the fast path: refused (401) before any lookup, and a well-formed key
        // nobody issued (checksum right), refused from the negative cache after the first look.
        Target::new(
            MALFORMED,
            format!("http://{}/v1/x", kg.public),
            Some(&malformed_key(&key)),
        )
        .expecting(401),
        Target::new(
            UNKNOWN,
            format!("http://{}/v1/x", kg.public),
            Some(&unknown_key(&key)),
        )
        .expecting(401),
        Target::new(
            TLS,
            format!("https://{}/v1/x", kg.public_tls.expect("TLS listener")),
            Some(&key),
        ),
    ]);
    // The verify answer alone (the request in its path, as Envoy sends it): what one check
    // costs keygate, next to a forwarded request.
    targets.extend([
        Target::new(
            VERIFY,
            format!("http://{}/_keygate/path/v1/x", kg.public),
            Some(&key),
        ),
        Target::new(NGINX, format!("http://{}/v1/x", nginx.plain), None),
        Target::new(
            NGINX_AUTH,
            format!("http://{}/v1/x", nginx.auth),
            Some(&key),
        ),
    ]);
    if let Some((base, key)) = &baseline {
        targets.extend([
            Target::new(BASE_OPEN, format!("http://{}/open/x", base.public), None),
            Target::new(
                BASE_KEYED,
                format!("http://{}/v1/x", base.public),
                Some(key),
            ),
        ]);
    }
    // `KEYGATE_BENCH_ONLY=bare,auth=none`: only the targets whose names contain one of the
    // words (to profile or repeat a few without the whole table).
    if let Ok(only) = std::env::var("KEYGATE_BENCH_ONLY") {
        let words: Vec<&str> = only
            .split(',')
            .map(str::trim)
            .filter(|w| !w.is_empty())
            .collect();
        targets.retain(|t| words.iter().any(|w| t.name.contains(w)));
    }
    // Check each target answers as expected; the keyed requests also load the keys into the
    // caches. Without a key the keyed routes refuse.
    for t in &targets {
        expect_status(&t.url, t.key.as_deref(), t.status);
        if t.key.is_some() {
            expect_status(&t.url, None, 401);
        }
    }
    if !load_run {
        println!("e2e: setup checked (no load in test mode; `cargo bench --bench e2e` runs it)");
        return ExitCode::SUCCESS;
    }

    println!(
        "e2e: wrk -t1 -c{connections} -d{seconds}s per target, {rounds} round(s); keygate \
         threads=1, work_stealing=false; upstream {upstream}; {}",
        if pinned {
            "keygate pinned to CPU 0, upstream and wrk to the others"
        } else {
            "not pinned (KEYGATE_BENCH_PIN=0, one CPU, or no taskset): all share the CPUs"
        }
    );
    // Round r starts at target r mod n, so no target always runs first or last.
    let mut runs: Vec<Vec<WrkResult>> = targets.iter().map(|_| Vec::new()).collect();
    for round in 0..rounds {
        for i in 0..targets.len() {
            let t = (i + round as usize) % targets.len();
            let target = &targets[t];
            let r = run_wrk(target, seconds, connections);
            if rounds > 1 {
                println!(
                    "  round {}: {:<32} {:>10.0} req/s  p50 {:>9}  p99 {:>9}",
                    round + 1,
                    target.name,
                    r.rps,
                    fmt_us(r.p50_us),
                    fmt_us(r.p99_us)
                );
            }
            runs[t].push(r);
        }
    }
    let results: Vec<WrkResult> = runs.iter().map(|r| median(r)).collect();

    println!();
    if rounds > 1 {
        println!("median of {rounds} rounds per column");
    }
    println!(
        "{:<32} {:>12} {:>11} {:>11} {:>10}",
        "target", "req/s", "p50", "p99", "unexpected"
    );
    for (t, r) in targets.iter().zip(&results) {
        println!(
            "{:<32} {:>12.0} {:>11} {:>11} {:>10}",
            r.name,
            r.rps,
            fmt_us(r.p50_us),
            fmt_us(r.p99_us),
            t.unexpected(r)
        );
    }
    println!();
    let ratio = |label: &str, num: &str, den: &str| {
        let find = |name: &str| results.iter().find(|r| r.name == name);
        if let (Some(n), Some(d)) = (find(num), find(den)) {
            println!(
                "{label:<34} throughput {:.3}, p50 {:.3}, p99 {:.3}",
                n.rps / d.rps,
                n.p50_us / d.p50_us,
                n.p99_us / d.p99_us
            );
        }
    };
    ratio("authenticated / pass-through:", KEYED, OPEN);
    ratio("pass-through / bare pingora:", OPEN, BARE);
    ratio("pass-through / direct:", OPEN, "direct upstream");
    ratio("malformed key / cached key:", MALFORMED, KEYED);
    ratio("unknown key / cached key:", UNKNOWN, KEYED);
    ratio("TLS / plain (cached key):", TLS, KEYED);
    ratio("verify answer / pass-through:", VERIFY, OPEN);
    ratio("nginx + auth_request / nginx:", NGINX_AUTH, NGINX);
    ratio("this build / baseline (cached key):", KEYED, BASE_KEYED);
    ratio("this build / baseline (auth=none):", OPEN, BASE_OPEN);
    // 401 is the expected answer for the refused-key targets, so only the other answers count.
    let errors: u64 = targets
        .iter()
        .zip(&results)
        .map(|(t, r)| t.unexpected(r))
        .sum();
    if errors > 0 {
        println!(
            "warning: {errors} answers with an unexpected status: the numbers above are not \
             comparable"
        );
    }
    drop(nginx);
    drop(kg);
    ExitCode::SUCCESS
}

const VERIFY_ROUTES: &str = r#"
[[routes]]
name = "verify"
path = "/_keygate"
local = "verify"
auth = "none"
original = "x-original"

[[routes]]
name = "verify_path"
path = "/_keygate/path/{*path}"
local = "verify"
auth = "none"
original = "path"
"#;

const BARE: &str = "bare pingora (floor)";
const OPEN: &str = "keygate /open (auth=none)";
const KEYED: &str = "keygate /v1 (cached key)";
const MALFORMED: &str = "keygate /v1 malformed key (401)";
const UNKNOWN: &str = "keygate /v1 unknown key (401)";
const TLS: &str = "keygate /v1 TLS (cached key)";
const VERIFY: &str = "keygate verify (cached key)";
const NGINX: &str = "nginx (plain)";
const NGINX_AUTH: &str = "nginx + auth_request";
const BASE_OPEN: &str = "baseline /open (auth=none)";
const BASE_KEYED: &str = "baseline /v1 (cached key)";

/// `key` cut short: the right prefix, the wrong length, so the format check refuses it.
fn malformed_key(key: &str) -> String {
    key[..key.len() / 2].to_string()
}

/// A key in `key`'s format (prefix, length, valid checksum) that was never issued.
fn unknown_key(key: &str) -> String {
    // The default `[keys] prefix` (the bench config sets none); checked against `key` below.
    const PREFIX: &str = "kg_live_";
    let body_len = key
        .len()
        .saturating_sub(PREFIX.len() + keygate::keys::CHECKSUM_LEN);
    let format = keygate::keys::KeyFormat::new(PREFIX, body_len);
    let unknown = format.generate().expose().to_string();
    assert!(
        format.validate(key).is_ok(),
        "the bench derived the wrong key format from the issued key"
    );
    unknown
}
