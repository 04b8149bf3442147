//! Every metric keygate exports, defined in one place behind typed helpers.
//!
//! Label values are fixed at startup: route names from the config and outcome names from
//! [`Reason`]. Counters for each (route, outcome) pair are resolved once, so the request path only
//! does an atomic add: no label hashing, no lock. No key, token or secret is ever a label.

use std::sync::Arc;

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
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

    /// The `outcome` label: `forwarded`, `local` or the rejection's reason code.
    pub fn as_str(self) -> &'static str {
        Self::label(self.index())
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

fn route_counters(
    requests: &IntCounterVec,
    durations: &HistogramVec,
    routes: &[String],
) -> RouteCounters {
    let names = || routes.iter().map(String::as_str).chain([NO_ROUTE]);
    let rows = names()
        .map(|route| {
            (0..OUTCOMES)
                .map(|i| requests.with_label_values(&[route, Outcome::label(i)]))
                .collect()
        })
        .collect();
    let durations = names()
        .map(|route| STATUS_CLASSES.map(|class| durations.with_label_values(&[route, class])))
        .collect();
    RouteCounters { rows, durations }
}

/// The `status_class` label: the answer's first digit, or `none` when no answer went out (the
/// client left first).
const STATUS_CLASSES: [&str; 6] = ["none", "1xx", "2xx", "3xx", "4xx", "5xx"];

fn status_class(status: u16) -> usize {
    match status {
        100..=599 => usize::from(status / 100),
        _ => 0,
    }
}

#[derive(Debug, Clone, Copy)]
pub enum CacheResult {
    Hit,
    NegativeHit,
    Miss,
}

/// Where a rate-limit decision was made: `local` (no Redis configured), `redis`, or `fallback`
/// (Redis configured but unreachable, so the local bucket decided).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitMode {
    Local,
    Redis,
    Fallback,
}

impl LimitMode {
    const ALL: [LimitMode; 3] = [LimitMode::Local, LimitMode::Redis, LimitMode::Fallback];

    fn label(self) -> &'static str {
        match self {
            LimitMode::Local => "local",
            LimitMode::Redis => "redis",
            LimitMode::Fallback => "fallback",
        }
    }
}

/// Why the cache let an entry go (invalidations and replacements are not evictions).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Eviction {
    /// Pushed out because the cache was full (`[cache] max_entries`).
    Size,
    /// Its time to live ran out.
    Expired,
}

/// The kinds of invalidation events a replica hears from the others.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InvalidationKind {
    Key,
    Account,
    User,
    All,
    TokenCutoff,
}

impl InvalidationKind {
    const ALL: [InvalidationKind; 5] = [
        InvalidationKind::Key,
        InvalidationKind::Account,
        InvalidationKind::User,
        InvalidationKind::All,
        InvalidationKind::TokenCutoff,
    ];

    fn label(self) -> &'static str {
        match self {
            InvalidationKind::Key => "key",
            InvalidationKind::Account => "account",
            InvalidationKind::User => "user",
            InvalidationKind::All => "all",
            InvalidationKind::TokenCutoff => "token_cutoff",
        }
    }
}

/// Why keygate could not get an answer from an upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamErrorKind {
    /// Connection refused, unreachable, or the name did not resolve.
    Connect,
    /// Connect, TLS handshake, read or write took longer than its timeout.
    Timeout,
    /// The TLS handshake failed (certificate, name, protocol).
    Tls,
    /// The upstream closed or reset the connection mid-request.
    Closed,
    Other,
}

impl UpstreamErrorKind {
    const ALL: [UpstreamErrorKind; 5] = [
        UpstreamErrorKind::Connect,
        UpstreamErrorKind::Timeout,
        UpstreamErrorKind::Tls,
        UpstreamErrorKind::Closed,
        UpstreamErrorKind::Other,
    ];

    fn label(self) -> &'static str {
        match self {
            UpstreamErrorKind::Connect => "connect",
            UpstreamErrorKind::Timeout => "timeout",
            UpstreamErrorKind::Tls => "tls",
            UpstreamErrorKind::Closed => "closed",
            UpstreamErrorKind::Other => "other",
        }
    }
}

/// One upstream's series, resolved once per configuration so the request path only observes.
#[derive(Clone)]
pub struct UpstreamMetrics {
    duration: Histogram,
    errors: [IntCounter; 5],
}

impl UpstreamMetrics {
    /// From sending the request upstream to the upstream's response header.
    pub fn answered(&self, seconds: f64) {
        self.duration.observe(seconds);
    }

    pub fn failed(&self, kind: UpstreamErrorKind) {
        let i = UpstreamErrorKind::ALL
            .iter()
            .position(|k| *k == kind)
            .unwrap_or(0);
        if let Some(c) = self.errors.get(i) {
            c.inc();
        }
    }
}

/// The request counters of one route table, resolved once per table (at start and on each
/// reload) so counting is one atomic add: `[route index][outcome index]`, the last row for
/// requests that matched no route.
pub struct RouteCounters {
    rows: Vec<Vec<IntCounter>>,
    /// `[route index][status class]`, the last row for requests that matched no route.
    durations: Vec<[Histogram; 6]>,
}

impl RouteCounters {
    /// `route` is the route index, or `None` when nothing matched.
    pub fn count(&self, route: Option<usize>, outcome: Outcome) {
        let row = route
            .and_then(|i| self.rows.get(i))
            .or_else(|| self.rows.last());
        if let Some(c) = row.and_then(|r| r.get(outcome.index())) {
            c.inc();
        }
    }

    /// How long a request took from its header to the end of the answer; `status` 0 when no
    /// answer went out.
    pub fn duration(&self, route: Option<usize>, status: u16, seconds: f64) {
        let row = route
            .and_then(|i| self.durations.get(i))
            .or_else(|| self.durations.last());
        if let Some(h) = row.and_then(|r| r.get(status_class(status))) {
            h.observe(seconds);
        }
    }
}

pub struct Metrics {
    registry: Registry,
    requests_vec: IntCounterVec,
    durations_vec: HistogramVec,
    upstream_seconds: HistogramVec,
    upstream_errors: IntCounterVec,
    requests: RouteCounters,
    config_reloads: IntCounterVec,
    decision_seconds: Histogram,
    cache_hit: IntCounter,
    cache_negative_hit: IntCounter,
    cache_miss: IntCounter,
    store_errors: IntCounterVec,
    store_seconds: HistogramVec,
    cache_evicted_size: IntCounter,
    cache_evicted_expired: IntCounter,
    invalidations_received: [IntCounter; 5],
    invalidation_lag_seconds: Histogram,
    /// `[mode][allowed]`, in [`LimitMode::ALL`] order; `allowed` is 1 for admitted.
    ratelimit_decisions: [[IntCounter; 2]; 3],
    last_used_dropped: IntCounter,
    log_lines_dropped: IntCounter,
    cache_entries: IntGauge,
    cache_clears: IntCounter,
    stale_served: IntCounter,
    invalidation_connected: IntGauge,
    credits_charged: IntCounter,
    credits_refunded: IntCounter,
    closed_per_ip_limit: IntCounter,
    closed_header_timeout: IntCounter,
    closed_proxy_header: IntCounter,
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
        let durations_vec = HistogramVec::new(
            HistogramOpts::new(
                "keygate_request_duration_seconds",
                "From the request header to the end of the answer (upstream time included), by \
                 route and status class (1xx..5xx; none: the client left before an answer).",
            )
            .buckets(vec![
                0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
            ]),
            &["route", "status_class"],
        )
        .unwrap_or_else(|e| unreachable!("static metric definition: {e}"));
        let requests = route_counters(&requests_vec, &durations_vec, routes);
        let upstream_seconds = HistogramVec::new(
            HistogramOpts::new(
                "keygate_upstream_duration_seconds",
                "From sending a request upstream to the upstream's response header, by upstream \
                 (its name in the config).",
            )
            .buckets(vec![
                0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                2.5, 5.0, 10.0, 30.0, 60.0,
            ]),
            &["upstream"],
        )
        .unwrap_or_else(|e| unreachable!("static metric definition: {e}"));
        let upstream_errors = IntCounterVec::new(
            Opts::new(
                "keygate_upstream_errors_total",
                "Requests that got no answer from their upstream, by upstream and kind (connect, \
                 timeout, tls, closed, other); each is a 502 upstream_unavailable or 504 \
                 upstream_timeout unless the answer had already started.",
            ),
            &["upstream", "kind"],
        )
        .unwrap_or_else(|e| unreachable!("static metric definition: {e}"));
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
        let store_errors = IntCounterVec::new(
            Opts::new(
                "keygate_store_errors_total",
                "Store operations that failed, by operation (find_credential, charge_credits, \
                 ...; publish_invalidation for the Redis bus).",
            ),
            &["op"],
        )
        .unwrap_or_else(|e| unreachable!("static metric definition: {e}"));
        let store_seconds = HistogramVec::new(
            HistogramOpts::new(
                "keygate_store_call_seconds",
                "Time a store operation took (successful or not), by operation.",
            )
            .buckets(vec![
                0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05,
                0.1, 0.25, 0.5, 1.0, 2.5,
            ]),
            &["op"],
        )
        .unwrap_or_else(|e| unreachable!("static metric definition: {e}"));
        let evictions = IntCounterVec::new(
            Opts::new(
                "keygate_cache_evictions_total",
                "Validation cache entries let go by cause (size: the cache was full; expired: \
                 past their time to live). Invalidations are not counted here.",
            ),
            &["cause"],
        )
        .unwrap_or_else(|e| unreachable!("static metric definition: {e}"));
        let invalidations = IntCounterVec::new(
            Opts::new(
                "keygate_invalidations_received_total",
                "Invalidation events received on the Redis bus (a replica hears its own as well), \
                 by kind (key, account, all, token_cutoff).",
            ),
            &["kind"],
        )
        .unwrap_or_else(|e| unreachable!("static metric definition: {e}"));
        let invalidation_lag_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "keygate_invalidation_lag_seconds",
                "From a token cut-off on one replica (every revoke, rotate or disable makes one) \
                 to its arrival here; includes clock skew between replicas.",
            )
            .buckets(vec![
                0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ]),
        )
        .unwrap_or_else(|e| unreachable!("static metric definition: {e}"));
        let ratelimit = IntCounterVec::new(
            Opts::new(
                "keygate_ratelimit_decisions_total",
                "Rate-limit decisions by mode (local: no Redis configured; redis; fallback: Redis \
                 unreachable, the local bucket decided) and result (allowed, limited).",
            ),
            &["mode", "result"],
        )
        .unwrap_or_else(|e| unreachable!("static metric definition: {e}"));
        let build_info = IntGaugeVec::new(
            Opts::new(
                "keygate_build_info",
                "Always 1; the labels say which build is running.",
            ),
            &["version", "commit"],
        )
        .unwrap_or_else(|e| unreachable!("static metric definition: {e}"));
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION"), env!("KEYGATE_GIT_COMMIT")])
            .set(1);
        let log_lines_dropped = counter(
            "keygate_log_lines_dropped_total",
            "Log lines dropped because stderr's reader fell behind (the queue of lines was full).",
        );
        let last_used_dropped = counter(
            "keygate_last_used_dropped_total",
            "Last-used updates refused because the pending map was full (recorded again on the key's next request).",
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
                 than request_header_timeout_seconds; proxy_header: `proxy_protocol` is on and \
                 the connection did not start with a valid PROXY protocol header in time).",
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
            durations_vec: durations_vec.clone(),
            upstream_seconds: upstream_seconds.clone(),
            upstream_errors: upstream_errors.clone(),
            config_reloads: config_reloads.clone(),
            decision_seconds,
            store_errors: store_errors.clone(),
            store_seconds: store_seconds.clone(),
            cache_evicted_size: evictions.with_label_values(&["size"]),
            cache_evicted_expired: evictions.with_label_values(&["expired"]),
            invalidations_received: InvalidationKind::ALL
                .map(|k| invalidations.with_label_values(&[k.label()])),
            invalidation_lag_seconds,
            ratelimit_decisions: LimitMode::ALL.map(|mode| {
                ["limited", "allowed"]
                    .map(|result| ratelimit.with_label_values(&[mode.label(), result]))
            }),
            last_used_dropped,
            log_lines_dropped,
            cache_entries,
            cache_clears,
            stale_served,
            invalidation_connected,
            credits_charged,
            credits_refunded,
            closed_per_ip_limit: closed.with_label_values(&["per_ip_limit"]),
            closed_header_timeout: closed.with_label_values(&["header_timeout"]),
            closed_proxy_header: closed.with_label_values(&["proxy_header"]),
            open_connections,
            in_flight,
            upstream_healthy: upstream_healthy.clone(),
            registry,
        };
        for c in [
            Box::new(requests_vec) as Box<dyn prometheus::core::Collector>,
            Box::new(durations_vec),
            Box::new(upstream_seconds),
            Box::new(upstream_errors),
            Box::new(config_reloads),
            Box::new(m.decision_seconds.clone()),
            Box::new(cache),
            Box::new(store_errors),
            Box::new(store_seconds),
            Box::new(evictions),
            Box::new(invalidations),
            Box::new(m.invalidation_lag_seconds.clone()),
            Box::new(ratelimit),
            Box::new(build_info),
            Box::new(m.last_used_dropped.clone()),
            Box::new(m.log_lines_dropped.clone()),
            Box::new(m.cache_entries.clone()),
            Box::new(m.cache_clears.clone()),
            Box::new(m.stale_served.clone()),
            Box::new(m.invalidation_connected.clone()),
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
        // process_cpu_seconds_total, process_resident_memory_bytes, process_open_fds, ...
        #[cfg(target_os = "linux")]
        if let Err(e) = m.registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        )) {
            tracing::warn!(error = %e, "process metrics unavailable");
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

    /// A connection closed because it did not start with a valid PROXY protocol header.
    pub fn connection_bad_proxy_header(&self) {
        self.closed_proxy_header.inc();
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

    /// [`RouteCounters::duration`] on the startup route table.
    pub fn request_duration(&self, route: Option<usize>, status: u16, seconds: f64) {
        self.requests.duration(route, status, seconds);
    }

    /// The series of the upstream named `name` (a configured upstream: labels stay bounded).
    pub fn upstream(&self, name: &str) -> UpstreamMetrics {
        UpstreamMetrics {
            duration: self.upstream_seconds.with_label_values(&[name]),
            errors: UpstreamErrorKind::ALL
                .map(|k| self.upstream_errors.with_label_values(&[name, k.label()])),
        }
    }

    /// Counters for a route table, e.g. the one a reload brings.
    pub fn route_counters(&self, routes: &[String]) -> RouteCounters {
        route_counters(&self.requests_vec, &self.durations_vec, routes)
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

    /// A store operation `op` took `seconds`; `ok` says whether it succeeded.
    pub fn store_call(&self, op: &'static str, seconds: f64, ok: bool) {
        self.store_seconds.with_label_values(&[op]).observe(seconds);
        if !ok {
            self.store_error(op);
        }
    }

    /// A store (or invalidation bus) operation `op` failed.
    pub fn store_error(&self, op: &'static str) {
        self.store_errors.with_label_values(&[op]).inc();
    }

    pub fn cache_evicted(&self, why: Eviction) {
        match why {
            Eviction::Size => self.cache_evicted_size.inc(),
            Eviction::Expired => self.cache_evicted_expired.inc(),
        }
    }

    /// An event from another replica; `lag` when the event says when it was made.
    pub fn invalidation_received(&self, kind: InvalidationKind, lag: Option<std::time::Duration>) {
        let i = InvalidationKind::ALL
            .iter()
            .position(|k| *k == kind)
            .unwrap_or(0);
        if let Some(c) = self.invalidations_received.get(i) {
            c.inc();
        }
        if let Some(lag) = lag {
            self.invalidation_lag_seconds.observe(lag.as_secs_f64());
        }
    }

    pub fn ratelimit_decision(&self, mode: LimitMode, allowed: bool) {
        let i = LimitMode::ALL.iter().position(|m| *m == mode).unwrap_or(0);
        if let Some(row) = self.ratelimit_decisions.get(i) {
            row[usize::from(allowed)].inc();
        }
    }

    pub fn last_used_dropped(&self) {
        self.last_used_dropped.inc();
    }

    /// Brings the counter up to `total`, the log writer's own count (read at each scrape).
    pub fn set_log_lines_dropped(&self, total: u64) {
        self.log_lines_dropped
            .inc_by(total.saturating_sub(self.log_lines_dropped.get()));
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
