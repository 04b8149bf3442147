//! What one configuration prepares for the request path.

use std::net::SocketAddr;
use std::sync::Arc;

use http::HeaderName;
use pingora::prelude::*;

use super::strip::StripRules;
use crate::config::{Config, Upstream, UpstreamProtocol};
use crate::gate::Gate;
use pingora::utils::tls::{parse_x509, WrappedX509};

/// One configuration's request handling: the gate and each route's upstream peer, built
/// together so route indexes always agree. A request keeps the routing it started with, so a
/// reload never mixes two configurations within one request.
pub(super) struct Routing {
    pub(super) gate: Arc<Gate>,
    /// Upstream peers prepared once per route (address parsed, SNI set); `None` for local
    /// endpoints.
    pub(super) peers: Vec<Option<HttpPeer>>,
    /// The client headers dropped before forwarding.
    pub(super) strip: StripRules,
}

impl Routing {
    pub(super) fn new(gate: Arc<Gate>) -> Self {
        let peers = gate
            .config
            .routes
            .iter()
            .map(|r| {
                r.upstream.as_ref().map(|u| {
                    let mut peer = match u.address.parse::<SocketAddr>() {
                        Ok(addr) => HttpPeer::new(addr, u.tls, u.sni.clone()),
                        Err(_) => HttpPeer::new(u.address.as_str(), u.tls, u.sni.clone()),
                    };
                    let t = u.timeouts;
                    peer.options.connection_timeout = Some(t.connect);
                    peer.options.read_timeout = Some(t.read);
                    peer.options.write_timeout = Some(t.write);
                    peer.options.idle_timeout = Some(t.idle);
                    configure_peer(&mut peer, u);
                    peer
                })
            })
            .collect();
        let strip = StripRules::new(&gate.config);
        Self { gate, peers, strip }
    }

    pub(super) fn config(&self) -> &Config {
        &self.gate.config
    }
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
