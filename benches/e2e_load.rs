//! Load beyond the closed-loop e2e run (issue 14): open-loop latency, connection scaling and
//! worker-thread settings, each through the real keygate binary on loopback.
//!
//! - **latency**: the maximum throughput of the upstream directly, keygate's `auth = "none"`
//!   route and its cached-key route (wrk, closed loop, as in `e2e`); then `oha` at a constant
//!   rate of 50% and 90% of each keygate route's maximum, with latency correction (times are
//!   measured from when a request was due, not when it was sent, so a stall is not hidden by
//!   the generator waiting for it). The bare pingora floor (as in `e2e`) and the direct upstream
//!   run at the same rates, so "added" is keygate's percentile minus the floor's (keygate's own
//!   work) and minus the upstream's (the proxy hop as well).
//! - **connections**: the cached-key route at 32 and at 1,000 concurrent keep-alive connections,
//!   beside the bare pingora floor (as in `e2e`) and the upstream alone at the same counts.
//! - **threads**: the cached-key route with `threads = 1` and `2`, work stealing off and on, each
//!   keygate free to use every CPU (the load generator stays on CPU 1 and up), beside the `e2e`
//!   setting (one thread pinned to CPU 0).
//!
//! Run: `cargo bench --bench e2e_load`. Needs `wrk` (`apt-get install -y wrk`) and `oha`
//! (`cargo install oha --locked`); without either the run fails with its install line.
//! Under `cargo test --all-targets` it only checks its setup (the keygate processes start, a
//! key is issued, each route answers), with no load and no oha.
//!
//! Environment: `KEYGATE_BENCH_SECONDS` (per measurement, default 5),
//! `KEYGATE_BENCH_CONNECTIONS` (default 32), `KEYGATE_BENCH_ROUNDS` (default 1; more rounds
//! rotate the order and report each column's median), `KEYGATE_BENCH_PARTS` (comma-separated
//! subset of `latency,connections,threads`; default all), `KEYGATE_BENCH_PIN` (as in `e2e`).

use std::path::Path;
use std::process::{Command, ExitCode, Stdio};

use serde_json::Value;

#[path = "e2e/harness.rs"]
mod harness;
use harness::*;

#[path = "e2e/bare.rs"]
mod bare;

const DIRECT: &str = "direct upstream";
const OPEN: &str = "keygate /open (auth=none)";
const KEYED: &str = "keygate /v1 (cached key)";
const BARE: &str = "bare pingora (floor)";
/// The connection count of the scaling run's wide end (issue 14: >= 0.9x of 32).
const MANY_CONNECTIONS: u64 = 1_000;
/// Enough for the 1,000-connection run, which all comes from 127.0.0.1 (default cap 256).
const PER_IP_CAP: usize = 4_096;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    // Re-executed by the load run as the bare pingora floor (see `bare`).
    if let Some(code) = bare::run_if_asked(&args) {
        return code;
    }
    // `cargo bench` passes `--bench`; `cargo test --all-targets` runs this without it.
    let load_run = args.iter().any(|a| a == "--bench");
    if load_run && !wrk_available() {
        eprintln!("e2e_load bench: `wrk` is not on PATH. Install it with: apt-get install -y wrk");
        return ExitCode::FAILURE;
    }
    let parts = std::env::var("KEYGATE_BENCH_PARTS")
        .unwrap_or_else(|_| "latency,connections,threads".to_string());
    let part = |name: &str| parts.split(',').any(|p| p.trim() == name);
    // Only the latency part drives oha.
    if load_run && part("latency") && !oha_available() {
        eprintln!(
            "e2e_load bench: `oha` is not on PATH. Install it with: cargo install oha --locked"
        );
        return ExitCode::FAILURE;
    }
    let seconds = env_u64("KEYGATE_BENCH_SECONDS", 5).max(1);
    let connections = env_u64("KEYGATE_BENCH_CONNECTIONS", 32).max(1);
    let rounds = env_u64("KEYGATE_BENCH_ROUNDS", 1).max(1) as usize;
    // Before any thread starts, so the upstream's threads, wrk and oha inherit the load CPUs.
    let pinned = load_run && pin_load_generator();
    let binary: &Path = env!("CARGO_BIN_EXE_keygate").as_ref();

    let upstream = start_upstream();
    // The e2e setting: one thread, work stealing off, on CPU 0 when pinned.
    let single = ServerOpts {
        max_connections_per_ip: Some(PER_IP_CAP),
        ..ServerOpts::single(pinned)
    };
    let kg = Keygate::start_with(binary, upstream, &single, false, "");
    let Some(key) = make_key(&kg) else {
        return ExitCode::SUCCESS;
    };
    let direct = Target::new(DIRECT, format!("http://{upstream}/x"), None);
    let open = Target::new(OPEN, format!("http://{}/open/x", kg.public), None);
    let keyed = Target::new(KEYED, format!("http://{}/v1/x", kg.public), Some(&key));

    // The thread settings compared, each its own keygate free to use every CPU.
    let variants: Vec<(String, Keygate, Target)> = [(1, false), (2, false), (2, true)]
        .into_iter()
        .map(|(threads, work_stealing)| {
            let opts = ServerOpts {
                threads,
                work_stealing,
                cpus: pinned.then(all_cpus),
                max_connections_per_ip: Some(PER_IP_CAP),
            };
            let kg = Keygate::start_with(binary, upstream, &opts, false, "");
            let key = make_key(&kg).expect("the admin API answered for the first keygate");
            let name = format!(
                "threads={threads} work_stealing={}",
                if work_stealing { "on" } else { "off" }
            );
            let target = Target::new(&name, format!("http://{}/v1/x", kg.public), Some(&key));
            (name, kg, target)
        })
        .collect();

    // Each target answers as expected (and the keyed ones load their key into the cache).
    for t in [&direct, &open, &keyed]
        .into_iter()
        .chain(variants.iter().map(|(_, _, t)| t))
    {
        expect_status(&t.url, t.key.as_deref(), 200);
        if t.key.is_some() {
            expect_status(&t.url, None, 401);
        }
    }
    if !load_run {
        println!(
            "e2e_load: setup checked (no load in test mode; `cargo bench --bench e2e_load` runs it)"
        );
        return ExitCode::SUCCESS;
    }
    println!(
        "e2e_load: {seconds}s per measurement, {rounds} round(s), {connections} connections \
         unless stated; upstream {upstream}; {}",
        if pinned {
            "load generator, upstream on CPU 1 and up"
        } else {
            "not pinned: all share the CPUs"
        }
    );

    // The engine's own floor (a bare pingora pass-through, as in `e2e`), pinned like keygate.
    let floor = bare::Bare::start(upstream, pinned);
    let floor_target = Target::new(BARE, format!("http://{}/x", floor.addr), None);
    let mut unexpected = 0;
    if part("latency") {
        unexpected += latency(
            &[direct.clone(), floor_target.clone(), open, keyed.clone()],
            seconds,
            connections,
            rounds,
        );
    }
    if part("connections") {
        // The floor and the upstream alone at the same counts, to tell keygate's cost of many
        // connections from the generator's and pingora's.
        unexpected += connection_scaling(
            &[keyed.clone(), floor_target, direct.clone()],
            seconds,
            connections,
            rounds,
        );
    }
    if part("threads") {
        let mut targets = vec![Target {
            name: "threads=1 work_stealing=off, CPU 0 only (e2e)".to_string(),
            ..keyed.clone()
        }];
        targets.extend(variants.iter().map(|(_, _, t)| t.clone()));
        unexpected += thread_settings(&targets, seconds, connections, rounds);
    }
    if unexpected > 0 {
        println!(
            "warning: {unexpected} answers with an unexpected status: the numbers above are not \
             comparable"
        );
    }
    drop(variants);
    drop(kg);
    ExitCode::SUCCESS
}

/// Runs `f` on each target in turn, `rounds` times, starting each round one target later so
/// none always runs first or last; returns each target's results in target order.
fn rotated<R>(n: usize, rounds: usize, mut f: impl FnMut(usize, usize) -> R) -> Vec<Vec<R>> {
    let mut runs: Vec<Vec<R>> = (0..n).map(|_| Vec::new()).collect();
    for round in 0..rounds {
        for i in 0..n {
            let t = (i + round) % n;
            runs[t].push(f(t, round));
        }
    }
    runs
}

/// Closed-loop maxima with wrk, then constant-rate runs with oha at 50% and 90% of each keygate
/// route's maximum, the bare pingora floor and the direct upstream at the same rates. Returns
/// the unexpected answers.
///
/// "Added" is given twice: over the floor (keygate's own work: the floor makes the same hop
/// through the same engine) and over the direct upstream (the hop as well: on a VM, each
/// cross-CPU wake-up of an idle CPU is a host scheduling delay, which no proxy avoids).
fn latency(targets: &[Target; 4], seconds: u64, connections: u64, rounds: usize) -> u64 {
    let [direct, floor, open, keyed] = targets;
    println!("\n== latency: maximum throughput (wrk -t1 -c{connections}, closed loop)");
    let max: Vec<WrkResult> = rotated(4, rounds, |t, _| run_wrk(&targets[t], seconds, connections))
        .iter()
        .map(|r| median(r))
        .collect();
    let mut unexpected = 0;
    for (t, r) in targets.iter().zip(&max) {
        unexpected += t.unexpected(r);
        println!("{:<32} {:>10.0} req/s", r.name, r.rps);
    }

    // Each keygate route at each load, with the floor and the upstream alone at the same rate.
    let mut plans = Vec::new();
    for (route, m) in [(open, &max[2]), (keyed, &max[3])] {
        for load in [0.5, 0.9] {
            let rate = (m.rps * load).round().max(1.0) as u64;
            plans.push((route, load, rate));
            plans.push((floor, load, rate));
            plans.push((direct, load, rate));
        }
    }
    println!(
        "\n== latency at a constant rate (oha -q RATE --latency-correction -c{connections}, \
         {seconds}s)"
    );
    let runs = rotated(plans.len(), rounds, |p, _| {
        let (target, _, rate) = plans[p];
        run_oha(target, rate, seconds, connections)
    });
    let results: Vec<OhaResult> = runs.iter().map(|r| oha_median(r)).collect();
    println!(
        "{:<32} {:>5} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "target", "load", "rate", "achieved", "p50", "p99", "p99.9"
    );
    for ((target, load, rate), r) in plans.iter().zip(&results) {
        unexpected += r.unexpected;
        println!(
            "{:<32} {:>4.0}% {:>9} {:>9.0} {:>9} {:>9} {:>9}",
            target.name,
            load * 100.0,
            rate,
            r.rps,
            fmt_ms(r.p50_ms),
            fmt_ms(r.p99_ms),
            fmt_ms(r.p999_ms)
        );
        if r.rps < *rate as f64 * 0.95 {
            println!("  (under 95% of the rate: the generator or the target could not keep up)");
        }
    }
    println!();
    // Triples: route at rate, then the floor and direct at the same rate.
    for triple in plans.chunks(3).zip(results.chunks(3)) {
        let ([(route, load, rate), _, _], [r, f, d]) = triple else {
            continue;
        };
        println!(
            "added by {:<26} at {:>3.0}% ({rate}/s): over the floor p50 {}, p99 {}, p99.9 {}; \
             over direct p50 {}, p99 {}, p99.9 {}",
            route.name,
            load * 100.0,
            fmt_ms(r.p50_ms - f.p50_ms),
            fmt_ms(r.p99_ms - f.p99_ms),
            fmt_ms(r.p999_ms - f.p999_ms),
            fmt_ms(r.p50_ms - d.p50_ms),
            fmt_ms(r.p99_ms - d.p99_ms),
            fmt_ms(r.p999_ms - d.p999_ms),
        );
    }
    unexpected
}

/// Each target (the cached-key route first) at `connections` and at [`MANY_CONNECTIONS`]
/// kept-alive connections, in rotated order.
fn connection_scaling(targets: &[Target], seconds: u64, connections: u64, rounds: usize) -> u64 {
    let counts = [connections, MANY_CONNECTIONS];
    let plans: Vec<(&Target, u64)> = targets
        .iter()
        .flat_map(|t| counts.map(|c| (t, c)))
        .collect();
    println!("\n== connections (wrk -t1 -cN)");
    let results: Vec<WrkResult> = rotated(plans.len(), rounds, |p, _| {
        let (target, count) = plans[p];
        run_wrk(target, seconds, count)
    })
    .iter()
    .map(|r| median(r))
    .collect();
    println!(
        "{:<32} {:>12} {:>10} {:>9} {:>9}",
        "target", "connections", "req/s", "p50", "p99"
    );
    let mut unexpected = 0;
    for ((target, count), r) in plans.iter().zip(&results) {
        unexpected += target.unexpected(r);
        println!(
            "{:<32} {count:>12} {:>10.0} {:>9} {:>9}",
            target.name,
            r.rps,
            fmt_us(r.p50_us),
            fmt_us(r.p99_us)
        );
    }
    for (target, pair) in targets.iter().zip(results.chunks(2)) {
        if let [few, many] = pair {
            println!(
                "{:<32} throughput at {MANY_CONNECTIONS} / at {connections} connections: {:.3}",
                target.name,
                many.rps / few.rps
            );
        }
    }
    unexpected
}

/// The cached-key route through each thread setting (wrk, closed loop).
fn thread_settings(targets: &[Target], seconds: u64, connections: u64, rounds: usize) -> u64 {
    println!("\n== threads: cached key (wrk -t1 -c{connections})");
    let results: Vec<WrkResult> = rotated(targets.len(), rounds, |t, _| {
        run_wrk(&targets[t], seconds, connections)
    })
    .iter()
    .map(|r| median(r))
    .collect();
    // The ratios are against one thread with the same CPUs (the second row).
    let base = results.get(1).map_or(1.0, |r| r.rps);
    println!(
        "{:<44} {:>10} {:>9} {:>9} {:>8}",
        "setting", "req/s", "p50", "p99", "ratio"
    );
    let mut unexpected = 0;
    for (t, r) in targets.iter().zip(&results) {
        unexpected += t.unexpected(r);
        println!(
            "{:<44} {:>10.0} {:>9} {:>9} {:>7.3}x",
            r.name,
            r.rps,
            fmt_us(r.p50_us),
            fmt_us(r.p99_us),
            r.rps / base
        );
    }
    if let Some(best) = results.iter().max_by(|a, b| a.rps.total_cmp(&b.rps)) {
        println!("fastest: {}", best.name);
    }
    unexpected
}

// ---------------------------------------------------------------- oha

fn oha_available() -> bool {
    Command::new("oha")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// One constant-rate run: latency percentiles (ms) and the rate achieved.
struct OhaResult {
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    p999_ms: f64,
    /// Answers that were not `target.status`, plus failed requests.
    unexpected: u64,
}

fn run_oha(target: &Target, rate: u64, seconds: u64, connections: u64) -> OhaResult {
    let name = &target.name;
    let mut cmd = Command::new("oha");
    cmd.args([
        "--no-tui",
        "--output-format",
        "json",
        "--latency-correction",
    ])
    .arg("-z")
    .arg(format!("{seconds}s"))
    .arg("-c")
    .arg(connections.to_string())
    .arg("-q")
    .arg(rate.to_string());
    if let Some(key) = &target.key {
        cmd.arg("-H").arg(format!("Authorization: Bearer {key}"));
    }
    cmd.arg(&target.url);
    let out = cmd.output().expect("run oha");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    if !out.status.success() {
        panic!(
            "oha failed for {name} ({}):\n{text}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    parse_oha(target.status, &text)
        .unwrap_or_else(|| panic!("cannot parse oha output for {name}:\n{text}"))
}

/// Reads oha's JSON report: `summary.requestsPerSec`, `latencyPercentiles` (seconds),
/// `statusCodeDistribution` and `errorDistribution`.
fn parse_oha(status: u16, text: &str) -> Option<OhaResult> {
    let v: Value = serde_json::from_str(text).ok()?;
    let pct = |k: &str| v["latencyPercentiles"][k].as_f64().map(|s| s * 1_000.0);
    let count = |m: &Value| -> u64 {
        m.as_object()
            .map_or(0, |o| o.values().filter_map(Value::as_u64).sum())
    };
    let codes = &v["statusCodeDistribution"];
    let expected = codes[status.to_string()].as_u64().unwrap_or(0);
    // Requests still in flight when `-z` ends are cut off by oha itself, not failed.
    let errors: u64 = v["errorDistribution"].as_object().map_or(0, |o| {
        o.iter()
            .filter(|(kind, _)| !kind.contains("deadline"))
            .filter_map(|(_, n)| n.as_u64())
            .sum()
    });
    Some(OhaResult {
        rps: v["summary"]["requestsPerSec"].as_f64()?,
        p50_ms: pct("p50")?,
        p99_ms: pct("p99")?,
        p999_ms: pct("p99.9")?,
        unexpected: count(codes) - expected + errors,
    })
}

/// Each column's median over the rounds (independently); unexpected answers summed.
fn oha_median(runs: &[OhaResult]) -> OhaResult {
    let mid = |f: fn(&OhaResult) -> f64| {
        let mut v: Vec<f64> = runs.iter().map(f).collect();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    OhaResult {
        rps: mid(|r| r.rps),
        p50_ms: mid(|r| r.p50_ms),
        p99_ms: mid(|r| r.p99_ms),
        p999_ms: mid(|r| r.p999_ms),
        unexpected: runs.iter().map(|r| r.unexpected).sum(),
    }
}

fn fmt_ms(ms: f64) -> String {
    format!("{ms:.3}ms")
}
