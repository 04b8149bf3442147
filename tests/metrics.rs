//! The metrics an operator reads, through the real binary: build info, process metrics, store
//! call latency by operation, rate-limit decisions by mode, cache evictions.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;

const LIMITED: &str = r#"
[[routes]]
name = "limited"
path = "/limited/{*rest}"
upstream = "api"
rate_limit = { requests = 1, per_seconds = 60, burst = 2 }
"#;

#[test]
fn operators_see_build_process_store_limit_and_cache_metrics() {
    let echo = Echo::start();
    let mut opts = Options::new(echo.addr);
    opts.routes_toml = format!("{DEFAULT_ROUTES}{LIMITED}");
    // A cache of two entries: the third key pushes one out.
    opts.cache_extra_toml = "max_entries = 2\n".into();
    let kg = Keygate::start(&opts);
    let account = kg.create_account("acme");
    let keys: Vec<String> = (0..5)
        .map(|i| {
            kg.create_key(&account, json!({ "name": format!("k{i}") }))
                .1
        })
        .collect();
    for key in &keys {
        assert_eq!(call(&kg, "/v1/x", key).status, 200);
    }
    let limited: Vec<u16> = (0..4)
        .map(|_| {
            get(
                &kg.url("/limited/x"),
                &[("authorization", &bearer(&keys[0]))],
            )
            .status
        })
        .collect();
    assert_eq!(limited, [200, 200, 429, 429]);

    let scrape = || get(&kg.ops_url("/metrics"), &[]).body;
    let text = scrape();
    let build = text
        .lines()
        .find(|l| l.starts_with("keygate_build_info{"))
        .unwrap_or_else(|| panic!("no keygate_build_info in\n{text}"));
    assert!(build.contains(r#"version="0.1.0""#), "{build}");
    assert!(!build.contains(r#"commit="""#), "{build}");
    assert!(build.ends_with(" 1"), "{build}");
    for name in ["process_resident_memory_bytes", "process_open_fds"] {
        assert!(
            sample(&text, name, &[]).unwrap_or(0.0) > 0.0,
            "{name} in\n{text}"
        );
    }
    // Counted in whole clock ticks: present, though a young process may read 0.
    assert!(
        sample(&text, "process_cpu_seconds_total", &[]).is_some(),
        "{text}"
    );
    let calls =
        |op| sample(&text, "keygate_store_call_seconds_count", &[("op", op)]).unwrap_or(0.0);
    assert!(calls("create_key") >= 5.0, "{text}");
    // Every key was a miss once (the limited route's key was cached by then).
    assert!(calls("find_credential") >= 5.0, "{text}");
    assert_eq!(
        sample(&text, "keygate_store_errors_total", &[]).unwrap_or(0.0),
        0.0
    );
    let decisions = |result| {
        sample(
            &text,
            "keygate_ratelimit_decisions_total",
            &[("mode", "local"), ("result", result)],
        )
        .unwrap_or(0.0)
    };
    assert_eq!(decisions("allowed"), 2.0, "{text}");
    assert_eq!(decisions("limited"), 2.0, "{text}");
    let answered = |route, class| {
        sample(
            &text,
            "keygate_request_duration_seconds_count",
            &[("route", route), ("status_class", class)],
        )
        .unwrap_or(0.0)
    };
    assert!(answered("v1", "2xx") >= 5.0, "{text}");
    assert_eq!(answered("limited", "2xx"), 2.0, "{text}");
    assert_eq!(answered("limited", "4xx"), 2.0, "{text}");
    // The cache evicts as new keys come in: keep using them until one has been pushed out.
    wait_until("an eviction to be counted", Duration::from_secs(20), || {
        for key in &keys {
            call(&kg, "/v1/x", key);
        }
        sample(
            &scrape(),
            "keygate_cache_evictions_total",
            &[("cause", "size")],
        )
        .unwrap_or(0.0)
            >= 1.0
    });
}
