//! What one configuration prepares for the request path.

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use http::HeaderName;
use pingora::prelude::*;

use super::pool::Pool;
use super::strip::StripRules;
use crate::config::{Config, Upstream, UpstreamProtocol};
use crate::gate::Gate;
use crate::metrics::Metrics;
use pingora::utils::tls::{parse_x509, WrappedX509};

/// One configuration's request handling: the gate and each route's upstream, built together so
/// route indexes always agree. A request keeps the routing it started with, so a reload never
/// mixes two configurations within one request.
pub(super) struct Routing {
    pub(super) gate: Arc<Gate>,
    /// Where each route's requests go, by route index; `None` for local endpoints.
    pub(super) targets: Vec<Option<Target>>,
    /// Every pool once (routes share their upstream's), for the health checks.
    pub(super) pools: Vec<Arc<Pool>>,
    /// The client headers dropped before forwarding.
    pub(super) strip: StripRules,
}

/// A route's upstream as the request path needs it.
pub(super) struct Target {
    pub(super) backends: Backends,
    /// Further tries after a connect failure, idempotent methods only.
    pub(super) retries: u32,
    /// `total_timeout_ms`.
    pub(super) total: Option<Duration>,
    /// The upstream's latency and error series, resolved once per configuration.
    pub(super) metrics: crate::metrics::UpstreamMetrics,
}

// The one-address peer stays inline: it is the common case, built once per route, and read on
// every request without a pointer to follow.
#[allow(clippy::large_enum_variant)]
pub(super) enum Backends {
    /// One address: its peer, prepared once; the request path only clones it (no selection).
    One(HttpPeer),
    Pool(Arc<Pool>),
}

impl Routing {
    /// Builds the upstreams of `gate`'s configuration. A pool whose upstream is unchanged from
    /// `previous` is kept, with the health it learned. Fails when an address does not resolve.
    pub(super) fn new(
        gate: Arc<Gate>,
        metrics: &Metrics,
        previous: Option<&Routing>,
    ) -> anyhow::Result<Self> {
        let mut pools: Vec<Arc<Pool>> = Vec::new();
        let mut targets = Vec::new();
        for route in gate.config.routes.iter() {
            let Some(u) = &route.upstream else {
                targets.push(None);
                continue;
            };
            let backends = if let [address] = u.addresses.as_slice() {
                Backends::One(backend_peer(u, resolve(address)?))
            } else if let Some(p) = pools.iter().find(|p| p.upstream.name == u.name) {
                Backends::Pool(p.clone())
            } else {
                let kept = previous
                    .and_then(|r| r.pools.iter().find(|p| *p.upstream == **u))
                    .cloned();
                let pool = match kept {
                    Some(p) => p,
                    None => {
                        let addrs = u
                            .addresses
                            .iter()
                            .map(|a| resolve(a))
                            .collect::<anyhow::Result<Vec<_>>>()?;
                        let pool = Pool::new(u.clone(), &addrs, |a| backend_peer(u, a), metrics)
                            .map_err(|e| anyhow::anyhow!("upstream `{}`: {e}", u.name))?;
                        Arc::new(pool)
                    }
                };
                pools.push(pool.clone());
                Backends::Pool(pool)
            };
            targets.push(Some(Target {
                backends,
                retries: u.retries,
                total: u.timeouts.total,
                metrics: metrics.upstream(&u.name),
            }));
        }
        // Health gauges of backends no pool checks any more.
        if let Some(previous) = previous {
            for old in &previous.pools {
                for (upstream, backend) in old.gauge_labels() {
                    let still = pools
                        .iter()
                        .any(|p| p.gauge_labels().any(|l| l == (upstream, backend)));
                    if !still {
                        metrics.forget_upstream_backend(upstream, backend);
                    }
                }
            }
        }
        let strip = StripRules::new(&gate.config);
        Ok(Self {
            gate,
            targets,
            pools,
            strip,
        })
    }

    pub(super) fn config(&self) -> &Config {
        &self.gate.config
    }
}

/// The peer of one backend of `u`: every backend's peer is made here, so the upstream's
/// timeouts (and TLS options) apply to each one, pooled or not, and to its health check.
fn backend_peer(u: &Upstream, addr: SocketAddr) -> HttpPeer {
    let mut peer = HttpPeer::new(addr, u.tls, u.sni.clone());
    let t = u.timeouts;
    peer.options.connection_timeout = Some(t.connect);
    peer.options.read_timeout = Some(t.read);
    peer.options.write_timeout = Some(t.write);
    peer.options.idle_timeout = Some(t.idle);
    configure_peer(&mut peer, u);
    peer
}

/// `ip:port` as is; a `name:port` is resolved once, here (its first address), when the
/// configuration loads or reloads.
fn resolve(address: &str) -> anyhow::Result<SocketAddr> {
    if let Ok(addr) = address.parse() {
        return Ok(addr);
    }
    address
        .to_socket_addrs()
        .with_context(|| format!("cannot resolve upstream address `{address}`"))?
        .next()
        .with_context(|| format!("upstream address `{address}` resolves to nothing"))
}

/// An upstream's TLS and HTTP-version options on its peer: the CA certificates its certificate
/// must chain to (else the system's roots), whether it is checked, and the ALPN that picks
/// HTTP/1.1, HTTP/2 over TLS or HTTP/2 in cleartext (pingora speaks h2c to a plain peer whose
/// ALPN is `H2`).
pub(super) fn configure_peer(peer: &mut HttpPeer, upstream: &Upstream) {
    use pingora::protocols::ALPN;
    peer.options.alpn = match upstream.protocol {
        UpstreamProtocol::H1 => ALPN::H1,
        UpstreamProtocol::H2 | UpstreamProtocol::H2c => ALPN::H2,
    };
    if !upstream.tls {
        return;
    }
    peer.options.verify_cert = upstream.verify;
    peer.options.verify_hostname = upstream.verify;
    if let Some(ca) = &upstream.ca {
        // Each certificate was parsed when the config was loaded (`tls::load_ca`), so
        // pingora's parse of it here does not fail.
        let ca: Vec<WrappedX509> = ca
            .iter()
            .map(|der| WrappedX509::new(der.clone(), parse_x509))
            .collect();
        peer.options.ca = Some(Arc::from(ca));
        // pingora pools connections by a hash of the peer that leaves the CA out: without
        // this, a connection checked against one upstream's CA would be reused for another
        // upstream at the same address and name that trusts a different CA.
        use std::hash::{Hash, Hasher};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        upstream.ca.hash(&mut hasher);
        peer.group_key = hasher.finish();
    }
}

/// The identity header names as `&'static str`: pingora keeps a header's original case beside
/// it, and only a static name skips the copy it otherwise makes on every insert. Leaked once at
/// startup (seven short strings), so the request path allocates nothing for them.
pub(super) struct IdentityNames {
    pub(super) key_id: &'static str,
    pub(super) key_name: &'static str,
    pub(super) account_id: &'static str,
    pub(super) user_id: &'static str,
    pub(super) scopes: &'static str,
    pub(super) auth_method: &'static str,
    pub(super) credits_remaining: &'static str,
}

impl IdentityNames {
    pub(super) fn new(h: &crate::config::IdentityHeaders) -> Self {
        let leak =
            |n: &HeaderName| -> &'static str { Box::leak(n.as_str().to_owned().into_boxed_str()) };
        Self {
            key_id: leak(&h.key_id),
            key_name: leak(&h.key_name),
            account_id: leak(&h.account_id),
            user_id: leak(&h.user_id),
            scopes: leak(&h.scopes),
            auth_method: leak(&h.auth_method),
            credits_remaining: leak(&h.credits_remaining),
        }
    }
}
