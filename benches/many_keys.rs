//! Many keys end to end (issue 13), through the real binary over HTTP:
//! - key creations through the admin API (`POST /admin/v1/keys`, many callers at once);
//! - `keygate keys import FILE` of the rest (plaintext keys keygate's own format would make);
//! - one hot key under wrk, then spread traffic where every request carries the next of all
//!   the keys (a wrk Lua script cycling through them), once the cache holds them all, with the
//!   default last-used interval (so each spread request also records a last-used time).
//!
//! Prints the rates and the spread / hot throughput ratio.
//!
//! Run: `cargo bench --bench many_keys`. Needs `wrk` (`apt-get install -y wrk`). Under
//! `cargo test --all-targets` (no `--bench`) it checks its setup with a few keys and no load.
//!
//! Environment: `KEYGATE_BENCH_KEYS` (default 1,000,000), `KEYGATE_BENCH_ADMIN_KEYS` (of those,
//! created through the admin API; default 20,000), `KEYGATE_BENCH_SECONDS` (per wrk run,
//! default 10), `KEYGATE_BENCH_CONNECTIONS` (default 32).

use std::io::Write;
use std::process::{Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use keygate::keys::KeyFormat;
use serde_json::json;

#[path = "e2e/harness.rs"]
mod harness;
use harness::*;

const PREFIX: &str = "kg_bench_";

fn main() -> ExitCode {
    let load_run = std::env::args().any(|a| a == "--bench");
    if load_run && !wrk_available() {
        eprintln!("many_keys bench: `wrk` is not on PATH. Install it with: apt-get install -y wrk");
        return ExitCode::FAILURE;
    }
    let keys = if load_run {
        env_u64("KEYGATE_BENCH_KEYS", 1_000_000).max(2) as usize
    } else {
        40
    };
    let admin_keys = if load_run {
        env_u64("KEYGATE_BENCH_ADMIN_KEYS", 20_000) as usize
    } else {
        20
    }
    .min(keys / 2);
    let seconds = env_u64("KEYGATE_BENCH_SECONDS", 10).max(1);
    let connections = env_u64("KEYGATE_BENCH_CONNECTIONS", 32).max(1);
    let pinned = load_run && pin_load_generator();

    let upstream = start_upstream();
    // The cache holds every key; its TTL outlasts the run, so the spread run measures cached
    // keys, not refreshes. The last-used interval is the default.
    let extra = format!(
        "[keys]\nprefix = \"{PREFIX}\"\n\n[cache]\nmax_entries = {}\nttl_seconds = 3600\n",
        keys + 1000
    );
    let kg = Keygate::start(
        env!("CARGO_BIN_EXE_keygate").as_ref(),
        upstream,
        pinned,
        false,
        &extra,
    );
    let admin = format!("http://{}", kg.admin);
    let account = match admin_post(
        &format!("{admin}/admin/v1/accounts"),
        &json!({ "name": "bench" }),
    ) {
        AdminReply::Ok(v) => v["id"].as_str().expect("account id").to_string(),
        AdminReply::NotFound => panic!("no admin API"),
    };

    // Creations through the admin API, 32 callers at once.
    let created = Arc::new(std::sync::Mutex::new(Vec::with_capacity(keys)));
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let callers: Vec<_> = (0..32)
        .map(|_| {
            let (created, next, admin, account) = (
                created.clone(),
                next.clone(),
                admin.clone(),
                account.clone(),
            );
            std::thread::spawn(move || {
                let mut mine = Vec::new();
                // One kept-alive connection per caller: a new connection (and TLS client
                // config) per call measured the bench's client, not keygate.
                let agent = agent();
                while next.fetch_add(1, Ordering::Relaxed) < admin_keys {
                    match admin_post_with(
                        &agent,
                        &format!("{admin}/admin/v1/keys"),
                        &json!({ "account_id": account, "name": "bench" }),
                    ) {
                        AdminReply::Ok(v) => {
                            mine.push(v["key"].as_str().expect("plaintext key").to_string())
                        }
                        AdminReply::NotFound => panic!("no key creation"),
                    }
                }
                created.lock().expect("keys").extend(mine);
            })
        })
        .collect();
    for c in callers {
        c.join().expect("caller");
    }
    let admin_rate = admin_keys as f64 / started.elapsed().as_secs_f64();

    // The rest through `keygate keys import`, as keygate-format plaintext keys.
    let format = KeyFormat::new(PREFIX, 32);
    let imported: Vec<String> = (admin_keys..keys)
        .map(|_| format.generate().expose().to_string())
        .collect();
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("keys.jsonl");
    {
        let mut out = std::io::BufWriter::new(std::fs::File::create(&file).expect("keys file"));
        for key in &imported {
            writeln!(out, "{}", json!({ "key": key, "account_id": account }))
                .expect("write keys file");
        }
    }
    let started = Instant::now();
    let import = Command::new(env!("CARGO_BIN_EXE_keygate"))
        .args(["keys", "import"])
        .arg(&file)
        .env("KEYGATE_ADMIN_URL", &admin)
        .env("KEYGATE_ADMIN_TOKEN", ADMIN_TOKEN)
        .stderr(Stdio::inherit())
        .output()
        .expect("run keygate keys import");
    let import_rate = imported.len() as f64 / started.elapsed().as_secs_f64();
    let summary = String::from_utf8_lossy(&import.stdout).to_string();
    assert!(
        import.status.success() && summary.contains(&format!("created {}", imported.len())),
        "import failed: {summary}"
    );
    let mut all = std::mem::take(&mut *created.lock().expect("keys"));
    all.extend(imported);

    // Every key authenticates (in test mode: each one; under load: a sample).
    let step = (all.len() / 200).max(1);
    for key in all.iter().step_by(step) {
        expect_status(&format!("http://{}/v1/x", kg.public), Some(key), 200);
    }
    if !load_run {
        println!("many_keys: setup checked (no load in test mode; `cargo bench --bench many_keys` runs it)");
        return ExitCode::SUCCESS;
    }

    // Both runs send their requests through the same Lua script (each request formatted once,
    // at init), the hot run with a list of one key: with a plain wrk run for the hot key, the ratio
    // would also measure the script's own cost in wrk, which shares a CPU with the upstream.
    let spread_script = cycling_script(dir.path(), "spread", &all);
    let hot_script = cycling_script(dir.path(), "hot", &all[..1]);
    let url = format!("http://{}/v1/x", kg.public);
    let mut hot = Target::new("hot key", url.clone(), None);
    hot.script = Some(hot_script);
    let mut spread = Target::new("spread over all keys", url, None);
    spread.script = Some(spread_script);

    // Warm: the spread script until every key has been asked for once (misses, loaded into
    // the cache). A few seconds over the estimate, from a short first run's rate.
    let probe = run_wrk(&spread, 3, connections);
    let warm_for = ((all.len() as f64 / probe.rps.max(1.0)) * 1.2).ceil() as u64 + 2;
    let warm = run_wrk(&spread, warm_for, connections);
    let rss = kg_rss_mb(&kg);

    let hot_r = run_wrk(&hot, seconds, connections);
    let spread_r = run_wrk(&spread, seconds, connections);
    let hot_again = run_wrk(&hot, seconds, connections);
    println!();
    println!(
        "| {} keys, wrk -t1 -c{connections} -d{seconds}s | value |",
        all.len()
    );
    println!("| --- | --- |");
    println!("| admin API creations ({admin_keys}, 32 callers) | {admin_rate:.0}/s |");
    println!(
        "| `keygate keys import` ({} keys) | {import_rate:.0}/s |",
        all.len() - admin_keys
    );
    println!(
        "| warm-up (misses, {} s) | {:.0} req/s, p99 {} |",
        warm_for,
        warm.rps,
        fmt_us(warm.p99_us)
    );
    println!("| keygate RSS with every key cached | {rss} MiB |");
    for r in [&hot_r, &spread_r, &hot_again] {
        println!(
            "| {} | {:.0} req/s, p50 {}, p99 {}, non-2xx {} |",
            r.name,
            r.rps,
            fmt_us(r.p50_us),
            fmt_us(r.p99_us),
            r.non_2xx
        );
    }
    let hot_median = (hot_r.rps + hot_again.rps) / 2.0;
    println!(
        "| spread / hot (hot: mean of the runs before and after) | {:.3} |",
        spread_r.rps / hot_median
    );
    ExitCode::SUCCESS
}

/// A wrk Lua script that sends the next of `keys` (as a Bearer token) with every request, in
/// one Lua state (wrk -t1). Every request is formatted once in `init`, so a request costs wrk
/// one table read: formatting each one in Lua made wrk, not keygate, the bottleneck.
fn cycling_script(dir: &std::path::Path, name: &str, keys: &[String]) -> std::path::PathBuf {
    let keys_file = dir.join(format!("{name}.txt"));
    std::fs::write(&keys_file, keys.join("\n")).expect("keys file");
    let script = dir.join(format!("{name}.lua"));
    std::fs::write(
        &script,
        format!(
            "local requests = {{}}\n\
             local i, n = 0, 0\n\
             init = function(args)\n\
               for line in io.lines(\"{}\") do\n\
                 requests[#requests + 1] = wrk.format(nil, nil, {{ Authorization = \"Bearer \" .. line }})\n\
               end\n\
               n = #requests\n\
             end\n\
             request = function()\n\
               i = i % n + 1\n\
               return requests[i]\n\
             end\n",
            keys_file.display()
        ),
    )
    .expect("lua script");
    script
}

/// keygate's resident memory, from /proc/PID/status (`VmRSS`).
fn kg_rss_mb(kg: &Keygate) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", kg.pid())).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb / 1024)
}
