//! The upstream request rewrite, as one plain function: strip (credentials, the identity
//! namespace, the configured list, client-sent forwarding headers), the forwarding headers, then
//! keygate's identity headers and the credits left. `upstream_request_filter` calls it with the
//! request's facts; [`RewriteBench`] calls it the same way so a bench can count what it
//! allocates without a server (benches/rewrite.rs).

use std::net::IpAddr;
use std::sync::Arc;

use http::HeaderValue;
use pingora::http::RequestHeader;
use pingora::prelude::*;

use super::forward_headers::{Forwarding, Hop};
use super::routing::IdentityNames;
use super::strip::StripRules;
use crate::cache::CachedCredential;
use crate::config::Config;

/// What the rewrite needs besides the request: the configuration's prepared rules and names,
/// and the gate's answer for this request.
pub(super) struct Facts<'a> {
    pub(super) hop: Hop<'a>,
    pub(super) strip: &'a StripRules,
    pub(super) names: &'a IdentityNames,
    /// The body was read (and checked) by keygate: `Expect` is dropped.
    pub(super) body_checked: bool,
    pub(super) principal: Option<&'a CachedCredential>,
    /// The balance after this request's charge, on charged routes.
    pub(super) credits_remaining: Option<i64>,
}

/// Rewrites `upstream` in place. Names are `&'static str` (pingora keeps them without a copy);
/// the only allocations left are the ones pingora makes for a header name outside `http`'s
/// standard set and the values that must be built (an address, a joined chain).
pub(super) fn rewrite(upstream: &mut RequestHeader, facts: &Facts<'_>) -> Result<()> {
    let hop = &facts.hop;
    let forwarding = Forwarding::read(&upstream.headers, hop);
    // Credentials, the identity namespace in any spelling (`X_Keygate_Key_Id` is
    // `X-Keygate-Key-Id` to CGI-style upstreams), `[forwarding] strip_headers` and the
    // forwarding headers (see `forward_headers`).
    for name in facts.strip.dropped(upstream.headers.keys(), hop.trusted) {
        upstream.remove_header(&name);
    }
    if facts.body_checked {
        // The body is already here (and the client had its `100 Continue` from keygate):
        // the upstream gets it whole, with nothing to expect.
        upstream.remove_header(&http::header::EXPECT);
    }
    forwarding.apply(upstream, hop)?;

    let Some(principal) = facts.principal else {
        return Ok(());
    };
    let names = facts.names;
    let values = principal.identity();
    for (name, value) in [
        (names.key_id, values.key_id),
        (names.key_name, values.key_name),
        (names.account_id, values.account_id),
        (names.user_id, values.user_id),
        (names.scopes, values.scopes),
    ] {
        // Append, not insert: every header in the namespace was removed above, so there is
        // nothing to replace, and append skips pingora's search for one.
        if let Some(v) = value {
            upstream.append_header(name, v)?;
        }
    }
    upstream.append_header(names.auth_method, principal.method.header_value())?;
    if let Some(balance) = facts.credits_remaining {
        upstream.append_header(names.credits_remaining, int_value(balance))?;
    }
    Ok(())
}

/// An integer as a header value, formatted on the stack by `itoa` (the value's own bytes are
/// the only allocation; `to_string()` made a `String` first and copied it).
pub(super) fn int_value(n: impl itoa::Integer) -> HeaderValue {
    let mut buf = itoa::Buffer::new();
    // Digits and a sign are always a valid header value.
    HeaderValue::from_bytes(buf.format(n).as_bytes())
        .unwrap_or_else(|_| HeaderValue::from_static("0"))
}

/// The rewrite of one prepared request, for benches/rewrite.rs: built from a configuration as
/// the proxy builds it, so the bench measures the request path's own code. Not used by the
/// server.
#[doc(hidden)]
pub struct RewriteBench {
    strip: StripRules,
    names: IdentityNames,
    principal: Option<Arc<CachedCredential>>,
    credits_remaining: Option<i64>,
    peer: IpAddr,
    trusted: bool,
    client_ip: IpAddr,
    request_id: HeaderValue,
    template: RequestHeader,
}

/// A request as the upstream would get it, before and after [`RewriteBench::rewrite`].
#[doc(hidden)]
pub struct BenchRequest(RequestHeader);

impl BenchRequest {
    /// Every value of `name`, in order.
    pub fn values(&self, name: &str) -> Vec<&[u8]> {
        self.0
            .headers
            .get_all(name)
            .iter()
            .map(HeaderValue::as_bytes)
            .collect()
    }
}

impl RewriteBench {
    /// A `GET path` request with `headers` (in order, case kept as pingora keeps an HTTP/1
    /// request's), from `peer` (a trusted proxy or not) for `client_ip`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        config: &Config,
        principal: Option<Arc<CachedCredential>>,
        credits_remaining: Option<i64>,
        peer: IpAddr,
        trusted: bool,
        client_ip: IpAddr,
        path: &str,
        headers: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        let mut template = RequestHeader::build("GET", path.as_bytes(), Some(headers.len()))?;
        for (name, value) in headers {
            template.append_header(name.to_string(), *value)?;
        }
        Ok(Self {
            strip: StripRules::new(config),
            names: IdentityNames::new(&config.identity),
            principal,
            credits_remaining,
            peer,
            trusted,
            client_ip,
            request_id: HeaderValue::from_static("0123456789abcdef0123456789abcdef"),
            template,
        })
    }

    /// A fresh copy of the request (allocates: keep it out of what is counted).
    pub fn request(&self) -> BenchRequest {
        BenchRequest(self.template.clone())
    }

    /// The rewrite the proxy does in `upstream_request_filter`.
    pub fn rewrite(&self, req: &mut BenchRequest) -> anyhow::Result<()> {
        let facts = Facts {
            hop: Hop {
                peer: Some(self.peer),
                trusted: self.trusted,
                client_ip: Some(self.client_ip),
                tls: false,
                request_id: Some(&self.request_id),
            },
            strip: &self.strip,
            names: &self.names,
            body_checked: false,
            principal: self.principal.as_deref(),
            credits_remaining: self.credits_remaining,
        };
        rewrite(&mut req.0, &facts).map_err(|e| anyhow::anyhow!("rewrite: {e}"))
    }
}
