//! Every metric keygate exports, defined in one place behind typed helpers.
//!
//! Label values are fixed at startup: route names from the config and outcome names from
//! [`Reason`]. Counters for each (route, outcome) pair are resolved once, so the request path only
//! does an atomic add: no label hashing, no lock. No key, token or secret is ever a label.

use std::sync::Arc;

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

use crate::errors::Reason;

/// How a request ended, as the `outcome` label says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Forwarded,
    Local,
    Rejected(Reason),
}

impl Outcome {
    /// The counter's column: forwarded, local, then one per reason in [`Reason::index`] order.
    fn index(self) -> usize {
        match self {
            Outcome::Forwarded => 0,
            Outcome::Local => 1,
            Outcome::Rejected(r) => 2 + r.index(),
        }
    }

    /// The `outcome` label of column `i`; a rejection is labelled with its reason code.
    fn label(i: usize) -> &'static str {
        match i {
            0 => "forwarded",
            1 => "local",
            n => Reason::CODES.get(n - 2).copied().unwrap_or("unknown"),
        }
    }
}

const OUTCOMES: usize = 2 + Reason::COUNT;
/// The label used for requests that matched no route.
pub const NO_ROUTE: &str = "(none)";

fn route_counters(requests: &IntCounterVec, routes: &[String]) -> RouteCounters {
    let rows = routes
        .iter()
        .map(String::as_str)
        .chain([NO_ROUTE])
        .map(|route| {
            (0..OUTCOMES)
                .map(|i| requests.with_label_values(&[route, Outcome::label(i)]))
                .collect()
        })
        .collect();
    RouteCounters(rows)
}

#[derive(Debug, Clone, Copy)]
pub enum CacheResult {
    Hit,
    NegativeHit,
    Miss,
}

/// The request counters of one route table, resolved once per table (at start and on each
/// reload) so counting is one atomic add: `[route index][outcome index]`, the last row for
/// requests that matched no route.
pub struct RouteCounters(Vec<Vec<IntCounter>>);

impl RouteCounters {
    /// `route` is the route index, or `None` when nothing matched.
    pub fn count(&self, route: Option<usize>, outcome: Outcome) {
        let row = route.and_then(|i| self.0.get(i)).or_else(|| self.0.last());
        if let Some(c) = row.and_then(|r| r.get(outcome.index())) {
            c.inc();
        }
    }
}

pub struct Metrics {
    registry: Registry,
    requests_vec: IntCounterVec,
    requests: RouteCounters,
    config_reloads: IntCounterVec,
    decision_seconds: Histogram,
    cache_hit: IntCounter,
    cache_negative_hit: IntCounter,
    cache_miss: IntCounter,
    store_errors: IntCounter,
    last_used_dropped: IntCounter,
    cache_entries: IntGauge,
    cache_clears: IntCounter,
    stale_served: IntCounter,
    invalidation_connected: IntGauge,
    ratelimit_fallback: IntCounter,
    credits_charged: IntCounter,
    credits_refunded: IntCounter,
    closed_per_ip_limit: IntCounter,
    closed_header_timeout: IntCounter,
    open_connections: IntGauge,
    in_flight: IntGauge,
    upstream_healthy: IntGaugeVec,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Metrics {
    /// `routes` are the route names in config order.
    pub fn new(routes: &[String]) -> Self {
        let registry = Registry::new();
        let requests_vec = IntCounterVec::new(
            Opts::new(
                "keygate_requests_total",
                "Requests by route and outcome (forwarded, local, or a rejection reason).",
            ),
            &["route", "outcome"],
        )
        .unwrap_or_else(|e| unreachable!("static metric definition: {e}"));
        let requests = route_counters(&requests_vec, routes);
        let config_reloads = IntCounterVec::new(
            Opts::new(
                "keygate_config_reloads_total",
                "Configuration reloads on SIGHUP by result (ok, error).",
            ),
            &["result"],
        )
        .unwrap_or_else(|e| unreachable!("static metric definition: {e}"));
        let decision_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "keygate_auth_decision_seconds",
                "Time from request headers to the authentication decision.",
            )
            .buckets(vec![
                0.000_002, 0.000_005, 0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5,
                0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
            ]),
        )
        .unwrap_or_else(|e| unreachable!("static metric definition: {e}"));
        let cache = IntCounterVec::new(
            Opts::new(
                "keygate_cache_lookups_total",
                "Validation cache lookups by result (hit, negative_hit, miss).",
            ),
            &["result"],
        )
        .unwrap_or_else(|e| unreachable!("static metric definition: {e}"));
        let counter = |name: &str, help: &str| {
            IntCounter::new(name, help).unwrap_or_else(|e| unreachable!("static metric: {e}"))
        };
        let store_errors = counter(
            "keygate_store_errors_total",
            "Store operations that failed.",
        );
        let last_used_dropped = counter(
            "keygate_last_used_dropped_total",
            "Last-used updates dropped because the writer queue was full.",
        );
        let cache_clears = counter(
            "keygate_cache_clears_total",
            "Whole-cache clears after the invalidation subscription was restored.",
        );
        let stale_served = counter(
            "keygate_cache_stale_served_total",
            "Cached keys served past their TTL because the store was unreachable.",
        );
        let invalidation_connected = IntGauge::new(
            "keygate_invalidation_connected",
            "1 while revocations from other replicas arrive (always 1 with the embedded store).",
        )
        .unwrap_or_else(|e| unreachable!("static metric: {e}"));
        let ratelimit_fallback = counter(
            "keygate_ratelimit_fallback_total",
            "Rate-limit decisions made locally because Redis was unreachable (redis mode).",
        );
        let credits_charged = counter(
            "keygate_credits_charged_total",
            "Credits charged to accounts by proxied requests.",
        );
        let credits_refunded = counter(
            "keygate_credits_refunded_total",
            "Credits refunded because a charge-on-success request did not succeed.",
        );
        let cache_entries =
            IntGauge::new("keygate_cache_entries", "Entries in the validation cache.")
                .unwrap_or_else(|e| unreachable!("static metric: {e}"));
        let closed = IntCounterVec::new(
            Opts::new(
                "keygate_connections_closed_total",
                "Public connections keygate closed itself, by reason (per_ip_limit: the client IP \
                 had max_connections_per_ip open; header_timeout: the request header took longer \
                 than request_header_timeout_seconds).",
            ),
            &["reason"],
        )
        .unwrap_or_else(|e| unreachable!("static metric definition: {e}"));
        let open_connections = IntGauge::new(
            "keygate_open_connections",
            "Open connections on the public listener.",
        )
        .unwrap_or_else(|e| unreachable!("static metric: {e}"));
        let in_flight = IntGauge::new(
            "keygate_requests_in_flight",
            "Requests on the public listener being handled right now.",
        )
        .unwrap_or_else(|e| unreachable!("static metric: {e}"));

        let upstream_healthy = IntGaugeVec::new(
            Opts::new(
                "keygate_upstream_backend_healthy",
                "1 while a pool's backend passes its active health check, 0 once it fails \
                 unhealthy_threshold checks in a row (pools with a health_check only).",
            ),
            &["upstream", "backend"],
        )
        .unwrap_or_else(|e| unreachable!("static metric definition: {e}"));

        let m = Self {
            cache_hit: cache.with_label_values(&["hit"]),
            cache_negative_hit: cache.with_label_values(&["negative_hit"]),
            cache_miss: cache.with_label_values(&["miss"]),
            requests,
            requests_vec: requests_vec.clone(),
            config_reloads: config_reloads.clone(),
            decision_seconds,
            store_errors,
            last_used_dropped,
            cache_entries,
            cache_clears,
            stale_served,
            invalidation_connected,
            ratelimit_fallback,
            credits_charged,
            credits_refunded,
            closed_per_ip_limit: closed.with_label_values(&["per_ip_limit"]),
            closed_header_timeout: closed.with_label_values(&["header_timeout"]),
            open_connections,
            in_flight,
            upstream_healthy: upstream_healthy.clone(),
            registry,
        };
        for c in [
            Box::new(requests_vec) as Box<dyn prometheus::core::Collector>,
            Box::new(config_reloads),
            Box::new(m.decision_seconds.clone()),
            Box::new(cache),
            Box::new(m.store_errors.clone()),
            Box::new(m.last_used_dropped.clone()),
            Box::new(m.cache_entries.clone()),
            Box::new(m.cache_clears.clone()),
            Box::new(m.stale_served.clone()),
            Box::new(m.invalidation_connected.clone()),
            Box::new(m.ratelimit_fallback.clone()),
            Box::new(m.credits_charged.clone()),
            Box::new(m.credits_refunded.clone()),
            Box::new(closed),
            Box::new(m.open_connections.clone()),
            Box::new(m.in_flight.clone()),
            Box::new(upstream_healthy),
        ] {
            m.registry
                .register(c)
                .unwrap_or_else(|e| unreachable!("metrics registered once: {e}"));
        }
        m
    }

    /// The health gauge of one pool backend (`backend` is its `ip:port`, never a secret).
    pub fn upstream_backend_healthy(&self, upstream: &str, backend: &str) -> IntGauge {
        self.upstream_healthy
            .with_label_values(&[upstream, backend])
    }

    /// Drops the gauge of a backend that is no longer in any pool (after a reload).
    pub fn forget_upstream_backend(&self, upstream: &str, backend: &str) {
        let _ = self
            .upstream_healthy
            .remove_label_values(&[upstream, backend]);
    }

    /// A connection refused because its client IP had `max_connections_per_ip` open.
    pub fn connection_over_ip_limit(&self) {
        self.closed_per_ip_limit.inc();
    }

    /// A connection closed because its request header missed the deadline.
    pub fn connection_header_timeout(&self) {
        self.closed_header_timeout.inc();
    }

    /// A public connection opened (`+1`) or closed (`-1`).
    pub fn open_connections_add(&self, delta: i64) {
        self.open_connections.add(delta);
    }

    /// A request started on the public listener; it counts as in flight until the guard drops.
    pub fn request_started(self: &Arc<Self>) -> InFlight {
        self.in_flight.inc();
        InFlight(self.clone())
    }

    /// Requests being handled right now (a drain waits for this to reach zero).
    pub fn in_flight(&self) -> i64 {
        self.in_flight.get()
    }

    /// `route` is the route index, or `None` when nothing matched (the startup route table).
    pub fn request(&self, route: Option<usize>, outcome: Outcome) {
        self.requests.count(route, outcome);
    }

    /// Counters for a route table, e.g. the one a reload brings.
    pub fn route_counters(&self, routes: &[String]) -> RouteCounters {
        route_counters(&self.requests_vec, routes)
    }

    pub fn config_reload(&self, ok: bool) {
        self.config_reloads
            .with_label_values(&[if ok { "ok" } else { "error" }])
            .inc();
    }

    pub fn decision_time(&self, seconds: f64) {
        self.decision_seconds.observe(seconds);
    }

    pub fn cache(&self, result: CacheResult) {
        match result {
            CacheResult::Hit => self.cache_hit.inc(),
            CacheResult::NegativeHit => self.cache_negative_hit.inc(),
            CacheResult::Miss => self.cache_miss.inc(),
        }
    }

    pub fn store_error(&self) {
        self.store_errors.inc();
    }

    pub fn last_used_dropped(&self) {
        self.last_used_dropped.inc();
    }

    pub fn set_cache_entries(&self, n: u64) {
        self.cache_entries.set(n as i64);
    }

    pub fn cache_cleared(&self) {
        self.cache_clears.inc();
    }

    pub fn stale_served(&self) {
        self.stale_served.inc();
    }

    pub fn set_invalidation_connected(&self, up: bool) {
        self.invalidation_connected.set(i64::from(up));
    }

    pub fn ratelimit_fallback(&self) {
        self.ratelimit_fallback.inc();
    }

    pub fn credits_charged(&self, n: u64) {
        self.credits_charged.inc_by(n);
    }

    pub fn credits_refunded(&self, n: u64) {
        self.credits_refunded.inc_by(n);
    }

    /// The Prometheus text exposition of everything above.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}

/// One request in flight; dropping it (however the request ends) takes it off the gauge.
pub struct InFlight(Arc<Metrics>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_route_and_outcome() {
        let m = Metrics::new(&["lookup".to_string()]);
        m.request(Some(0), Outcome::Forwarded);
        m.request(Some(0), Outcome::Rejected(Reason::KeyRevoked));
        m.request(None, Outcome::Rejected(Reason::RouteNotFound));
        let text = m.render();
        assert!(text.contains(r#"keygate_requests_total{outcome="forwarded",route="lookup"} 1"#));
        assert!(text.contains(r#"keygate_requests_total{outcome="key_revoked",route="lookup"} 1"#));
        assert!(
            text.contains(r#"keygate_requests_total{outcome="route_not_found",route="(none)"} 1"#)
        );
    }

    #[test]
    fn every_outcome_has_its_own_counter() {
        let m = Metrics::new(&["r".to_string()]);
        for (n, reason) in Reason::ALL.into_iter().enumerate() {
            for _ in 0..=n {
                m.request(Some(0), Outcome::Rejected(reason));
            }
        }
        m.request(Some(0), Outcome::Local);
        let text = m.render();
        for (n, reason) in Reason::ALL.into_iter().enumerate() {
            let line = format!(
                "keygate_requests_total{{outcome=\"{}\",route=\"r\"}} {}\n",
                reason.code(),
                n + 1
            );
            assert!(text.contains(&line), "{line}");
        }
        assert!(text.contains("keygate_requests_total{outcome=\"local\",route=\"r\"} 1\n"));
        assert!(text.contains("keygate_requests_total{outcome=\"forwarded\",route=\"r\"} 0\n"));
    }
}
