//! Unit tests for upstream addresses, pools and their knobs as the config loads them.

use std::time::Duration;

use crate::config::{Balance, Config, ConfigError};

fn upstream(section: &str) -> Result<crate::config::Upstream, Vec<String>> {
    let text = format!(
        "[upstreams.api]\n{section}\n\n[[routes]]\npath = \"/{{*rest}}\"\nupstream = \"api\"\n"
    );
    match Config::parse(&text, "test.toml") {
        Ok(c) => Ok((*c.routes[0].upstream.clone().expect("upstream")).clone()),
        Err(ConfigError::Invalid { problems, .. }) => Err(problems),
        Err(other) => Err(vec![other.to_string()]),
    }
}

/// `line` 0: the problem has no line (a missing field).
#[track_caller]
fn refused(section: &str, field: &str, line: usize) {
    let problems = upstream(section).expect_err("should be refused");
    assert!(
        problems.iter().any(|p| p.contains(&format!("`{field}`"))
            && (line == 0 || p.contains(&format!("line {line}:")))),
        "no problem about `{field}` on line {line}: {problems:#?}"
    );
}

#[test]
fn one_address_gets_the_gateway_defaults() {
    let u = upstream("address = \"127.0.0.1:8000\"").expect("valid");
    assert_eq!(u.addresses, ["127.0.0.1:8000"]);
    assert_eq!(u.timeouts.connect, Duration::from_secs(5));
    assert_eq!(u.timeouts.read, Duration::from_secs(60));
    assert_eq!(u.timeouts.total, None);
    assert_eq!(u.retries, 1);
    assert_eq!(u.pool.balance, Balance::RoundRobin);
    assert_eq!(u.pool.health_check, None);
    assert_eq!(u.pool.passive_ejection, Some(Duration::from_secs(10)));
}

#[test]
fn a_pool_with_every_knob() {
    let u = upstream(
        r#"addresses = ["10.0.0.1:80", "10.0.0.2:80"]
balance = "consistent_hash"
retries = 2
total_timeout_ms = 30000
passive_ejection_ms = 0
health_check = { path = "/healthz", interval_ms = 1000, unhealthy_threshold = 5 }"#,
    )
    .expect("valid");
    assert_eq!(u.addresses.len(), 2);
    assert_eq!(u.pool.balance, Balance::ConsistentHash);
    assert_eq!(u.retries, 2);
    assert_eq!(u.timeouts.total, Some(Duration::from_secs(30)));
    assert_eq!(u.pool.passive_ejection, None);
    let hc = u.pool.health_check.expect("health check");
    assert_eq!(hc.path, "/healthz");
    assert_eq!(hc.host, "10.0.0.1");
    assert_eq!(hc.interval, Duration::from_secs(1));
    assert_eq!(hc.timeout, Duration::from_secs(2));
    assert_eq!((hc.healthy_threshold, hc.unhealthy_threshold), (2, 5));
}

#[test]
fn bad_pools_are_reported_with_their_line() {
    refused(
        "address = \"127.0.0.1:1\"\naddresses = [\"127.0.0.1:2\"]",
        "upstreams.api.address",
        2,
    );
    refused("tls = false", "upstreams.api", 0);
    refused("addresses = []", "upstreams.api.addresses", 2);
    refused(
        "addresses = [\"127.0.0.1:1\", \"127.0.0.1:1\"]",
        "upstreams.api.addresses",
        2,
    );
    refused(
        "addresses = [\"127.0.0.1:1\", \"nohost\"]",
        "upstreams.api.addresses",
        2,
    );
    // One backend: there is nothing to send to instead, so the check could not act.
    refused(
        "address = \"127.0.0.1:1\"\nhealth_check = { path = \"/healthz\" }",
        "upstreams.api.health_check",
        3,
    );
    let pool = "addresses = [\"127.0.0.1:1\", \"127.0.0.1:2\"]";
    refused(
        &format!("{pool}\nhealth_check = {{ path = \"healthz\" }}"),
        "upstreams.api.health_check.path",
        3,
    );
    refused(
        &format!("{pool}\nhealth_check = {{ path = \"/h\", healthy_threshold = 0 }}"),
        "upstreams.api.health_check.healthy_threshold",
        3,
    );
    refused(
        &format!("{pool}\nhealth_check = {{ path = \"/h\", interval_ms = 0 }}"),
        "upstreams.api.health_check.interval_ms",
        3,
    );
    refused(&format!("{pool}\nretries = 11"), "upstreams.api.retries", 3);
    refused(
        &format!("{pool}\ntotal_timeout_ms = 0"),
        "upstreams.api.total_timeout_ms",
        3,
    );
    // Unknown balance and unknown health-check fields fail to parse.
    assert!(upstream(&format!("{pool}\nbalance = \"random\"")).is_err());
    assert!(upstream(&format!(
        "{pool}\nhealth_check = {{ path = \"/h\", port = 1 }}"
    ))
    .is_err());
}
