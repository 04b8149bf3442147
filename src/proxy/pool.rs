//! A pool: one upstream with several backends. pingora-load-balancing picks a backend (round
//! robin, or ketama hashing on the caller's key id) among those its active health check keeps in
//! rotation; keygate adds passive ejection, which pingora's load balancer does not have: a
//! backend that failed to connect is skipped for `passive_ejection_ms`. It is one timestamp per
//! backend, set on a connect failure and compared when selecting, nothing more (no failure
//! counts, no probing: the active check, when configured, is what brings a dead backend back
//! early; without one, the backend is simply tried again once its ejection expires).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora::lb::health_check::{HealthCheck as LbHealthCheck, HttpHealthCheck};
use pingora::lb::selection::{Consistent, RoundRobin};
use pingora::lb::{Backend, LoadBalancer};
use pingora::prelude::*;
use prometheus::IntGauge;

use crate::config::{Balance, HealthCheck, Upstream};

/// How far the selection iterates looking for a usable backend. Ketama walks ring points (160
/// per backend) and counts repeats, so a few per backend are not enough.
const MAX_STEPS: usize = 256;

/// One upstream's backends, their peers and what is known of their health.
pub(super) struct Pool {
    /// The configuration the pool was built from; a reload that leaves it unchanged keeps the
    /// pool, and with it the health it learned.
    pub(super) upstream: Arc<Upstream>,
    selector: Selector,
    backends: Box<[Slot]>,
    /// Epoch of the ejection timestamps.
    born: Instant,
}

enum Selector {
    RoundRobin(LoadBalancer<RoundRobin>),
    Hash(LoadBalancer<Consistent>),
}

struct Slot {
    addr: pingora::protocols::l4::socket::SocketAddr,
    /// The backend as the load balancer knows it (to ask for its health).
    backend: Backend,
    /// `keygate_upstream_backend_healthy` of this backend, with a health check.
    gauge: Option<IntGauge>,
    /// `ip:port`, the metric label and what logs name.
    label: String,
    peer: HttpPeer,
    /// Milliseconds since `born` (plus one) until which the backend is skipped; 0: in rotation.
    ejected_until: AtomicU64,
}

impl Pool {
    /// `peer` makes each backend's peer (the one place TLS options and timeouts are applied).
    pub(super) fn new(
        upstream: Arc<Upstream>,
        addrs: &[SocketAddr],
        peer: impl Fn(SocketAddr) -> HttpPeer,
        metrics: &crate::metrics::Metrics,
    ) -> std::io::Result<Self> {
        let checked = upstream.pool.health_check.is_some();
        let backends: Box<[Slot]> = addrs
            .iter()
            .map(|a| {
                let addr = pingora::protocols::l4::socket::SocketAddr::Inet(*a);
                let label = a.to_string();
                // Every backend starts in rotation (pingora's health starts healthy).
                let gauge =
                    checked.then(|| metrics.upstream_backend_healthy(&upstream.name, &label));
                if let Some(g) = &gauge {
                    g.set(1);
                }
                Slot {
                    backend: Backend {
                        addr: addr.clone(),
                        weight: 1,
                        ext: Default::default(),
                    },
                    addr,
                    label,
                    gauge,
                    peer: peer(*a),
                    ejected_until: AtomicU64::new(0),
                }
            })
            .collect();
        let check = upstream.pool.health_check.as_ref().map(|hc| {
            let gauges = backends
                .iter()
                .filter_map(|s| Some((s.addr.clone(), s.gauge.clone()?)))
                .collect();
            // The probe's peer is a backend's peer, so it speaks TLS exactly as requests do.
            let template = addrs.first().map(|a| peer(*a));
            Box::new(TimedCheck::new(&upstream.name, hc, template, gauges))
                as Box<dyn LbHealthCheck + Send + Sync>
        });
        let selector = match upstream.pool.balance {
            Balance::RoundRobin => {
                let mut lb = LoadBalancer::<RoundRobin>::try_from_iter(addrs)?;
                if let Some(c) = check {
                    lb.set_health_check(c);
                }
                Selector::RoundRobin(lb)
            }
            Balance::ConsistentHash => {
                let mut lb = LoadBalancer::<Consistent>::try_from_iter(addrs)?;
                if let Some(c) = check {
                    lb.set_health_check(c);
                }
                Selector::Hash(lb)
            }
        };
        Ok(Self {
            upstream,
            selector,
            backends,
            born: Instant::now(),
        })
    }

    pub(super) fn balance(&self) -> Balance {
        self.upstream.pool.balance
    }

    /// A backend for a request: healthy, not ejected and not `tried` (bit i: backend i) yet.
    /// When every untried backend is out, one of them anyway (a wrong health check should not
    /// take the API down with it); `None` once all were tried.
    pub(super) fn select(&self, key: &[u8], tried: u64) -> Option<usize> {
        let now = std::cell::OnceCell::new();
        let untried = |b: &Backend| self.index(b).filter(|i| tried & (1 << i) == 0);
        let usable = |b: &Backend, healthy: bool| {
            healthy
                && untried(b).is_some_and(|i| {
                    let until = self.backends[i].ejected_until.load(Ordering::Relaxed);
                    until == 0 || *now.get_or_init(|| self.now_ms()) >= until
                })
        };
        let anyway = |b: &Backend, _healthy: bool| untried(b).is_some();
        let pick = match &self.selector {
            Selector::RoundRobin(lb) => lb
                .select_with(key, MAX_STEPS, usable)
                .or_else(|| lb.select_with(key, MAX_STEPS, anyway)),
            Selector::Hash(lb) => lb
                .select_with(key, MAX_STEPS, usable)
                .or_else(|| lb.select_with(key, MAX_STEPS, anyway)),
        };
        pick.and_then(|b| self.index(&b))
    }

    pub(super) fn peer(&self, i: usize) -> Option<&HttpPeer> {
        self.backends.get(i).map(|s| &s.peer)
    }

    /// Takes backend `i` out of rotation for `passive_ejection_ms` after a connect failure.
    pub(super) fn eject(&self, i: usize, error: &Error) {
        let (Some(slot), Some(ejection)) =
            (self.backends.get(i), self.upstream.pool.passive_ejection)
        else {
            return;
        };
        let until = self.now_ms().saturating_add(ejection.as_millis() as u64);
        slot.ejected_until.store(until, Ordering::Relaxed);
        tracing::warn!(
            upstream = %self.upstream.name,
            backend = %slot.label,
            for_ms = ejection.as_millis() as u64,
            error = %error,
            "backend failed to connect; out of rotation"
        );
    }

    /// Runs the active health check every interval until the task is aborted (see
    /// [`super::health`]). Returns at once for a pool without one.
    pub(super) async fn check_forever(self: Arc<Self>) {
        let Some(hc) = &self.upstream.pool.health_check else {
            return;
        };
        let mut tick = tokio::time::interval(hc.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let backends = match &self.selector {
                Selector::RoundRobin(lb) => lb.backends(),
                Selector::Hash(lb) => lb.backends(),
            };
            backends.run_health_check(true).await;
            // The flips set the gauges as they happen; this also mends one that a check of the
            // pool this one replaced (on reload) set in between.
            for slot in self.backends.iter() {
                if let Some(g) = &slot.gauge {
                    g.set(i64::from(backends.ready(&slot.backend)));
                }
            }
        }
    }

    /// The `(upstream, backend)` labels of this pool's health gauges.
    pub(super) fn gauge_labels(&self) -> impl Iterator<Item = (&str, &str)> {
        self.backends
            .iter()
            .filter(|s| s.gauge.is_some())
            .map(|s| (self.upstream.name.as_str(), s.label.as_str()))
    }

    fn index(&self, b: &Backend) -> Option<usize> {
        self.backends.iter().position(|s| s.addr == b.addr)
    }

    /// Milliseconds since the pool was built, plus one (0 means "not ejected").
    fn now_ms(&self) -> u64 {
        self.born.elapsed().as_millis() as u64 + 1
    }
}

/// pingora's HTTP check, bounded as a whole by `timeout_ms` (pingora bounds connect and read
/// separately), reporting each flip to the log and the health gauge.
struct TimedCheck {
    upstream: String,
    inner: HttpHealthCheck,
    timeout: Duration,
    gauges: Vec<(pingora::protocols::l4::socket::SocketAddr, IntGauge)>,
}

impl TimedCheck {
    fn new(
        upstream: &str,
        hc: &HealthCheck,
        template: Option<HttpPeer>,
        gauges: Vec<(pingora::protocols::l4::socket::SocketAddr, IntGauge)>,
    ) -> Self {
        let mut inner = HttpHealthCheck::new(&hc.host, false);
        if let Some(mut peer) = template {
            peer.options.connection_timeout = Some(hc.timeout);
            peer.options.read_timeout = Some(hc.timeout);
            peer.options.write_timeout = Some(hc.timeout);
            inner.peer_template = peer;
        }
        match RequestHeader::build("GET", hc.path.as_bytes(), None) {
            Ok(mut req) => {
                // Validated when the config loaded (a header value); a failure leaves pingora's
                // `Host` from `new`.
                let _ = req.insert_header("Host", &hc.host);
                let _ = req.insert_header("User-Agent", "keygate-health-check");
                inner.req = req;
            }
            Err(e) => tracing::error!(error = %e, path = %hc.path, "health check path"),
        }
        inner.consecutive_success = hc.healthy_threshold;
        inner.consecutive_failure = hc.unhealthy_threshold;
        // Any 2xx passes, not only 200.
        inner.validator = Some(Box::new(|resp: &ResponseHeader| {
            if resp.status.is_success() {
                Ok(())
            } else {
                Error::e_explain(
                    ErrorType::CustomCode("health check status", resp.status.as_u16()),
                    "health check answered non-2xx",
                )
            }
        }));
        Self {
            upstream: upstream.to_string(),
            inner,
            timeout: hc.timeout,
            gauges,
        }
    }
}

#[async_trait]
impl LbHealthCheck for TimedCheck {
    async fn check(&self, target: &Backend) -> Result<()> {
        match tokio::time::timeout(self.timeout, self.inner.check(target)).await {
            Ok(result) => result,
            Err(_) => Error::e_explain(ErrorType::ReadTimedout, "health check timed out"),
        }
    }

    async fn health_status_change(&self, target: &Backend, healthy: bool) {
        if healthy {
            tracing::info!(upstream = %self.upstream, backend = %target.addr, "backend passes its health check again; back in rotation");
        } else {
            tracing::warn!(upstream = %self.upstream, backend = %target.addr, "backend fails its health check; out of rotation");
        }
        if let Some((_, g)) = self.gauges.iter().find(|(a, _)| *a == target.addr) {
            g.set(i64::from(healthy));
        }
    }

    fn health_threshold(&self, success: bool) -> usize {
        self.inner.health_threshold(success)
    }
}

#[cfg(test)]
#[path = "pool_tests.rs"]
mod tests;
