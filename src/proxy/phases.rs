//! The `ProxyHttp` phases: decide in `request_filter`, pick the route's peer, rewrite the
//! identity headers on the way up, add rate-limit headers on the way down, count and log.

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use async_trait::async_trait;
use bytes::Bytes;
use http::HeaderValue;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};

use super::forward_headers::{Hop, X_REQUEST_ID};
use super::respond::add_rate_headers;
use super::rewrite::{rewrite, Facts};
use super::routing::{Backends, IdentityNames, Routing, Target};
use super::settle::Settlement;
use crate::cache::CachedCredential;
use crate::config::Balance;
use crate::errors::Reason;
use crate::forwarded::TrustedProxies;
use crate::gate::{Charge, Decision, Request};
use crate::metrics::{InFlight, Metrics, Outcome};
use crate::ratelimit::RateStatus;
use crate::request_id::RequestIds;

/// The `ProxyHttp` implementation: one per server, shared by every worker thread.
pub struct KeygateProxy {
    /// The running configuration's routing; a reload swaps it whole.
    pub(super) routing: Arc<ArcSwap<Routing>>,
    pub(super) metrics: Arc<Metrics>,
    pub(super) identity_names: IdentityNames,
    /// Set on SIGTERM: answers then carry `Connection: close`, so keep-alive clients move to
    /// new connections (which the load balancer sends elsewhere once it sees `/readyz` fail).
    pub(super) draining: Arc<AtomicBool>,
    /// `[server] trusted_proxies` (restart-only, so read once).
    pub(super) trusted: TrustedProxies,
    pub(super) request_ids: RequestIds,
}

/// Per-request state.
#[derive(Default)]
pub struct RequestCtx {
    pub(super) routing: Option<Arc<Routing>>,
    pub(super) route: Option<usize>,
    pub(super) principal: Option<Arc<CachedCredential>>,
    pub(super) outcome: Option<Outcome>,
    pub(super) rate: Option<RateStatus>,
    pub(super) charge: Option<Charge>,
    /// The upstream's final status, once its answer's head arrived.
    pub(super) upstream_status: Option<u16>,
    /// The request's head went to the upstream (the body follows as the client sends it).
    pub(super) sent_upstream: bool,
    /// Holds the request on the in-flight gauge (a drain waits for it) until the request ends.
    pub(super) in_flight: Option<InFlight>,
    /// The upstream's attempts (backend, retries, deadline).
    pub(super) attempt: Attempt,
    /// When keygate started on the request (its header was read).
    pub(super) started: Option<std::time::Instant>,
    /// The upstream address the request went to (the last attempt's).
    pub(super) upstream_addr: Option<std::net::SocketAddr>,
    /// When the request's head went upstream, and how long until the answer's head came back.
    pub(super) upstream_sent_at: Option<std::time::Instant>,
    pub(super) upstream_seconds: Option<f64>,
    /// The client's IP: the peer, or behind a trusted proxy the address it vouched for (see
    /// [`crate::forwarded`]). What per-IP limits count and the access log shows.
    pub client_ip: Option<IpAddr>,
    /// The peer is a trusted proxy: its forwarding headers and request id are believed.
    pub(super) peer_trusted: bool,
    /// The request's `X-Request-Id` (kept from a trusted proxy, else generated): sent upstream,
    /// returned in every response, logged.
    pub request_id: Option<HeaderValue>,
    /// The route's `max_body_bytes`, once the request is let through.
    pub(super) body_limit: Option<u64>,
    /// Body bytes read so far.
    pub(super) body_bytes: u64,
    /// The body went over `body_limit` while streaming: the upstream was cut off.
    pub(super) body_too_large: bool,
    /// The body was read whole and checked (`body_schema`); pingora sends it from its buffer.
    pub(super) body_checked: bool,
}

/// Where this request went upstream so far.
#[derive(Default)]
pub(super) struct Attempt {
    /// The pool backend of the current try.
    backend: Option<usize>,
    /// Pool backends tried, bit i for backend i.
    tried: u64,
    /// Tries made again after a connect failure.
    retries: u32,
    /// `total_timeout_ms` from the first try.
    deadline: Option<Instant>,
}

impl KeygateProxy {
    pub(super) fn new(
        routing: Arc<ArcSwap<Routing>>,
        metrics: Arc<Metrics>,
        draining: Arc<AtomicBool>,
    ) -> Self {
        // Identity header names are restart-only (see `reload`), so they are read once.
        let config = routing.load().config().clone();
        let identity_names = IdentityNames::new(&config.identity);
        Self {
            routing,
            metrics,
            identity_names,
            draining,
            trusted: config.server.trusted_proxies.clone(),
            request_ids: RequestIds::new(),
        }
    }
}

#[async_trait]
impl ProxyHttp for KeygateProxy {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> Self::CTX {
        RequestCtx::default()
    }

    /// Decides the request. `Ok(true)` means keygate already answered (a rejection or a local
    /// endpoint).
    async fn request_filter(&self, session: &mut Session, ctx: &mut Self::CTX) -> Result<bool> {
        ctx.started = Some(std::time::Instant::now());
        ctx.in_flight = Some(self.metrics.request_started());
        if self.draining.load(Ordering::Relaxed) {
            session.set_keepalive(None);
        }
        let peer = peer_ip(session);
        let header = session.req_header();
        // No trusted proxies (the default): the client is the peer and no header is read.
        ctx.peer_trusted = peer.is_some_and(|p| self.trusted.contains(p));
        let client_ip = match peer {
            Some(p) if ctx.peer_trusted => Some(self.trusted.client_ip(p, &header.headers)),
            p => p,
        };
        ctx.client_ip = client_ip;
        let sent_id = ctx
            .peer_trusted
            .then(|| header.headers.get(X_REQUEST_ID))
            .flatten();
        ctx.request_id = Some(self.request_ids.for_request(sent_id));
        let routing = self.routing.load_full();
        ctx.routing = Some(routing.clone());
        let mut decision = routing
            .gate
            .decide(Request {
                method: header.method.as_str(),
                path: header.uri.path(),
                query: header.uri.query(),
                headers: &header.headers,
                client_ip,
            })
            .await;
        if let Decision::ReadBody(admitted) = decision {
            decision = self.check_body(session, ctx, &routing, admitted).await?;
        }
        match decision {
            Decision::Forward {
                route,
                principal,
                rate,
                charge,
            } => {
                ctx.route = Some(route);
                ctx.principal = principal;
                ctx.rate = rate;
                ctx.charge = charge;
                ctx.outcome = Some(Outcome::Forwarded);
                ctx.body_limit = routing
                    .config()
                    .routes
                    .get(route)
                    .and_then(|r| r.max_body_bytes);
                Ok(false)
            }
            // `check_body` turned it into one of the others.
            Decision::ReadBody(admitted) => {
                ctx.route = Some(admitted.route);
                ctx.outcome = Some(Outcome::Rejected(Reason::InvalidBody));
                self.respond_rejection(
                    session,
                    &routing,
                    Reason::InvalidBody,
                    &Default::default(),
                    admitted.rate.as_ref(),
                    ctx.request_id.as_ref(),
                )
                .await?;
                Ok(true)
            }
            Decision::Local {
                route,
                caller,
                rate,
                key_id,
            } => {
                ctx.route = Some(route);
                let verify = routing
                    .config()
                    .routes
                    .get(route)
                    .is_some_and(crate::forward_auth::is_verify);
                if verify {
                    self.respond_verify(session, ctx, &routing, route).await?;
                    return Ok(true);
                }
                ctx.rate = rate;
                self.respond_local(session, ctx, &routing, route, caller, key_id)
                    .await?;
                Ok(true)
            }
            Decision::Reject {
                route,
                rejection,
                rate,
            } => {
                ctx.route = route;
                ctx.outcome = Some(Outcome::Rejected(rejection.reason));
                let too_large = rejection.reason == Reason::PayloadTooLarge;
                if too_large {
                    // Never drain a body declared too large to keep the connection: close it.
                    session.set_keepalive(None);
                }
                self.respond_rejection(
                    session,
                    &routing,
                    rejection.reason,
                    &rejection.detail,
                    rate.as_ref(),
                    ctx.request_id.as_ref(),
                )
                .await?;
                if too_large {
                    super::respond::discard_rest_of_body(session).await;
                }
                Ok(true)
            }
        }
    }

    /// Records the upstream's own status, before anything is written to the client: it decides
    /// a `charge_on = "success"` refund, whatever then happens to the client.
    async fn upstream_response_filter(
        &self,
        _session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        // Before anything went to the client: a head past the deadline is a 504.
        past_deadline(&ctx.attempt)?;
        if !upstream_response.status.is_informational() {
            ctx.upstream_status = Some(upstream_response.status.as_u16());
            ctx.upstream_seconds = ctx.upstream_sent_at.map(|t| t.elapsed().as_secs_f64());
            if let (Some(seconds), Some(target)) = (ctx.upstream_seconds, target_of(ctx)) {
                target.metrics.answered(seconds);
            }
        }
        Ok(())
    }

    /// Counts the body as it streams to the upstream; past the route's `max_body_bytes` the
    /// request fails, which cuts the upstream connection (see `fail_to_proxy` for the answer).
    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        _end_of_stream: bool,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        if let (Some(limit), Some(chunk)) = (ctx.body_limit, body.as_ref()) {
            ctx.body_bytes = ctx.body_bytes.saturating_add(chunk.len() as u64);
            if ctx.body_bytes > limit {
                ctx.body_too_large = true;
                *body = None;
                return Err(Error::explain(
                    ErrorType::Custom("payload_too_large"),
                    "request body over the route's max_body_bytes",
                ));
            }
        }
        Ok(())
    }

    /// RateLimit headers on every response of a limited route, and the request id.
    async fn response_filter(
        &self,
        _session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        if let Some(rate) = &ctx.rate {
            add_rate_headers(upstream_response, rate)?;
        }
        if let Some(id) = &ctx.request_id {
            upstream_response.insert_header(X_REQUEST_ID, id.clone())?;
        }
        Ok(())
    }

    /// An upstream that cannot be reached or does not answer in time gets the API's own error
    /// format (`upstream_unavailable` 502, `upstream_timeout` 504, through the templates, counted
    /// under their reason); anything else keeps pingora's handling. Credits charged for it go
    /// back (see `settle`).
    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut Self::CTX,
    ) -> FailToProxy {
        let reason = match (e.esource(), e.etype()) {
            _ if ctx.body_too_large => Some(Reason::PayloadTooLarge),
            (ErrorSource::Upstream, ErrorType::ConnectTimedout)
            | (ErrorSource::Upstream, ErrorType::TLSHandshakeTimedout)
            | (ErrorSource::Upstream, ErrorType::ReadTimedout)
            | (ErrorSource::Upstream, ErrorType::WriteTimedout) => Some(Reason::UpstreamTimeout),
            (ErrorSource::Upstream, _) => Some(Reason::UpstreamUnavailable),
            _ => None,
        };
        if matches!(
            reason,
            Some(Reason::UpstreamTimeout | Reason::UpstreamUnavailable)
        ) {
            if let Some(target) = target_of(ctx) {
                target.metrics.failed(upstream_error_kind(e));
            }
        }
        let routing = ctx.routing.clone();
        match (reason, routing) {
            // Once the answer's head went out, there is nothing left to say but to close.
            (Some(reason), Some(routing)) if !final_answer_sent(session) => {
                ctx.outcome = Some(Outcome::Rejected(reason));
                let status = routing.config().templates.get(reason).status;
                if let Err(write) = self
                    .respond_rejection(
                        session,
                        &routing,
                        reason,
                        &Default::default(),
                        None,
                        ctx.request_id.as_ref(),
                    )
                    .await
                {
                    tracing::debug!(error = %write, "could not answer an upstream failure");
                }
                if reason == Reason::PayloadTooLarge {
                    super::respond::discard_rest_of_body(session).await;
                }
                FailToProxy {
                    error_code: status,
                    can_reuse_downstream: false,
                }
            }
            (Some(reason), _) => {
                ctx.outcome = Some(Outcome::Rejected(reason));
                FailToProxy {
                    error_code: 0,
                    can_reuse_downstream: false,
                }
            }
            (None, _) => pingora_default_failure(session, e, ctx.request_id.as_ref()).await,
        }
    }

    async fn connected_to_upstream(
        &self,
        _session: &mut Session,
        _reused: bool,
        peer: &HttpPeer,
        _fd: std::os::unix::io::RawFd,
        _digest: Option<&pingora::protocols::Digest>,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        ctx.upstream_addr = peer._address.as_inet().copied();
        Ok(())
    }

    /// The route's backend: its one address as prepared, or the pool's pick (by the caller's
    /// key id for `consistent_hash`, a backend not tried yet on a retry). With a total deadline,
    /// the peer's timeouts are cut to what is left of it.
    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut Self::CTX,
    ) -> Result<Box<HttpPeer>> {
        // A retried attempt replays the body read so far from the start: count it once.
        ctx.body_bytes = 0;
        let target = target(ctx.routing.as_deref(), ctx.route)?;
        let attempt = &mut ctx.attempt;
        let mut peer = match &target.backends {
            Backends::One(peer) => Box::new(peer.clone()),
            Backends::Pool(pool) => {
                let mut ip = [0u8; 16];
                let key: &[u8] = match (pool.balance(), &ctx.principal) {
                    (Balance::RoundRobin, _) => b"",
                    (Balance::ConsistentHash, Some(p)) => p.credential.key.id.as_bytes(),
                    // Anonymous callers stick by client IP (behind a trusted proxy, the one it
                    // vouched for).
                    (Balance::ConsistentHash, None) => match ctx.client_ip {
                        Some(std::net::IpAddr::V4(v4)) => {
                            ip[..4].copy_from_slice(&v4.octets());
                            &ip[..4]
                        }
                        Some(std::net::IpAddr::V6(v6)) => {
                            ip = v6.octets();
                            &ip
                        }
                        None => b"",
                    },
                };
                let i = pool.select(key, attempt.tried).ok_or_else(|| {
                    Error::explain(ErrorType::ConnectNoRoute, "every backend was tried").into_up()
                })?;
                attempt.tried |= 1 << i;
                attempt.backend = Some(i);
                let peer = pool.peer(i).ok_or_else(|| {
                    Error::explain(ErrorType::InternalError, "pool backend out of range")
                })?;
                Box::new(peer.clone())
            }
        };
        if let Some(total) = target.total {
            let now = Instant::now();
            let deadline = *attempt.deadline.get_or_insert(now + total);
            let left = deadline.saturating_duration_since(now);
            if left.is_zero() {
                return Err(Error::explain(
                    ErrorType::ConnectTimedout,
                    "total_timeout_ms passed before a backend was reached",
                )
                .into_up());
            }
            let o = &mut peer.options;
            for t in [
                &mut o.connection_timeout,
                &mut o.read_timeout,
                &mut o.write_timeout,
            ] {
                *t = Some(t.map_or(left, |t| t.min(left)));
            }
        }
        Ok(peer)
    }

    /// A connect failure (refused, reset, timed out, TLS): a pool backend is ejected for a
    /// while, and the request is tried again, on another backend when the pool has one, if its
    /// method is idempotent (RFC 9110: GET, HEAD, OPTIONS, TRACE, PUT, DELETE) and the
    /// upstream's `retries` are not used up. Nothing was sent yet, so a retry cannot repeat
    /// work; failures after the request went out are never retried here.
    fn fail_to_connect(
        &self,
        session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut Self::CTX,
        mut e: Box<Error>,
    ) -> Box<Error> {
        let Ok(target) = target(ctx.routing.as_deref(), ctx.route) else {
            return e;
        };
        if let (Backends::Pool(pool), Some(i)) = (&target.backends, ctx.attempt.backend) {
            pool.eject(i, &e);
        }
        let retry =
            session.req_header().method.is_idempotent() && ctx.attempt.retries < target.retries;
        if retry {
            ctx.attempt.retries += 1;
        }
        e.set_retry(retry);
        e
    }

    /// Past `total_timeout_ms` once the answer's head arrived: the response is cut (the client
    /// sees a truncated body). Checked as each chunk arrives; a silent upstream in between is
    /// bounded by the read timeout, which `upstream_peer` cut to the deadline.
    fn upstream_response_body_filter(
        &self,
        _session: &mut Session,
        _body: &mut Option<bytes::Bytes>,
        _end_of_stream: bool,
        ctx: &mut Self::CTX,
    ) -> Result<Option<Duration>> {
        past_deadline(&ctx.attempt)?;
        Ok(None)
    }

    /// Anti-spoofing and identity: credentials, every client-sent header in the identity
    /// namespace and the configured strip list are removed (see [`super::strip`]), then
    /// keygate's own identity headers are added.
    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        let Some(routing) = &ctx.routing else {
            return Err(Error::explain(
                ErrorType::InternalError,
                "no routing selected",
            ));
        };
        let hop = Hop {
            peer: peer_ip(session),
            trusted: ctx.peer_trusted,
            client_ip: ctx.client_ip,
            tls: session.digest().is_some_and(|d| d.ssl_digest.is_some()),
            request_id: ctx.request_id.as_ref(),
        };
        let facts = Facts {
            hop,
            strip: &routing.strip,
            names: &self.identity_names,
            body_checked: ctx.body_checked,
            principal: ctx.principal.as_deref(),
            credits_remaining: ctx.charge.as_ref().map(|c| c.balance_after),
        };
        rewrite(upstream_request, &facts)?;
        ctx.sent_upstream = true;
        ctx.upstream_sent_at = Some(std::time::Instant::now());
        Ok(())
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut Self::CTX) {
        let status = session
            .response_written()
            .map(|r| r.status.as_u16())
            .unwrap_or(0);
        // charge_on = "success": settled before the request is counted, so a counted request's
        // credits are final (what tests and dashboards read).
        if let Some(charge) = ctx.charge.take() {
            let settlement = Settlement {
                upstream_status: ctx.upstream_status,
                request_sent: ctx.sent_upstream && session.is_body_done(),
                client_failed: e.is_some_and(|e| e.esource() == &ErrorSource::Downstream),
            };
            // An upstream that could not be reached or did not answer in time did no work the
            // caller got: its credits go back whatever `charge_on` says.
            // Nor did one whose body keygate cut off for being too large.
            let upstream_failed = matches!(
                ctx.outcome,
                Some(Outcome::Rejected(
                    Reason::UpstreamUnavailable | Reason::UpstreamTimeout | Reason::PayloadTooLarge
                ))
            );
            if upstream_failed || (charge.refund_unless_success && settlement.refund_due()) {
                if let Some(routing) = &ctx.routing {
                    routing.gate.refund(&charge).await;
                }
            }
        }
        let outcome = ctx
            .outcome
            .unwrap_or(Outcome::Rejected(Reason::RouteNotFound));
        let seconds = ctx
            .started
            .map(|t| t.elapsed().as_secs_f64())
            .unwrap_or_default();
        match &ctx.routing {
            Some(routing) => {
                routing.gate.count_request(ctx.route, outcome);
                routing.gate.request_duration(ctx.route, status, seconds);
            }
            None => {
                self.metrics.request(None, outcome);
                self.metrics.request_duration(None, status, seconds);
            }
        }
        access_line(session, e, ctx, status, seconds);
    }
}

/// Whether the client already has the answer's head: a `100 Continue` (sent before a checked
/// body was read) is not one.
fn final_answer_sent(session: &Session) -> bool {
    session
        .response_written()
        .is_some_and(|r| !r.status.is_informational())
}

/// The route's upstream in this routing.
fn target(routing: Option<&Routing>, route: Option<usize>) -> Result<&Target> {
    routing
        .zip(route)
        .and_then(|(routing, i)| routing.targets.get(i))
        .and_then(Option::as_ref)
        .ok_or_else(|| Error::explain(ErrorType::InternalError, "no route selected"))
}

/// An upstream read error once the total deadline passed (nothing to do without one).
fn past_deadline(attempt: &Attempt) -> Result<()> {
    match attempt.deadline {
        Some(deadline) if Instant::now() >= deadline => {
            Err(Error::explain(ErrorType::ReadTimedout, "total_timeout_ms passed").into_up())
        }
        _ => Ok(()),
    }
}

/// One `keygate::access` line per request at `info` (`[log] access = false` turns it off). The
/// key and account by id, never a key or token; the path without its query string.
fn access_line(session: &Session, e: Option<&Error>, ctx: &RequestCtx, status: u16, seconds: f64) {
    if !tracing::enabled!(target: crate::logging::ACCESS_TARGET, tracing::Level::INFO) {
        return;
    }
    let header = session.req_header();
    let route = ctx
        .routing
        .as_ref()
        .zip(ctx.route)
        .and_then(|(r, i)| r.config().routes.get(i))
        .map(|r| r.name.as_str())
        .unwrap_or("-");
    let credential = ctx.principal.as_ref().map(|p| &p.credential);
    tracing::info!(
        target: crate::logging::ACCESS_TARGET,
        request_id = ctx.request_id.as_ref().and_then(|v| v.to_str().ok()),
        client_ip = ctx.client_ip.map(tracing::field::display),
        method = %header.method,
        path = header.uri.path(),
        route,
        status,
        outcome = ctx.outcome.map(Outcome::as_str).unwrap_or("route_not_found"),
        key_id = credential.map(|c| c.key.id.as_str()),
        account_id = credential.map(|c| c.account.id.as_str()),
        upstream = ctx.upstream_addr.map(tracing::field::display),
        upstream_ms = ctx.upstream_seconds.map(|s| s * 1000.0),
        total_ms = seconds * 1000.0,
        error = e.map(|e| e.etype().as_str()),
        "request"
    );
}

/// The route's upstream target, when the request was routed to one.
fn target_of(ctx: &RequestCtx) -> Option<&super::routing::Target> {
    ctx.routing
        .as_ref()
        .zip(ctx.route)
        .and_then(|(r, i)| r.targets.get(i))
        .and_then(Option::as_ref)
}

/// What kind of upstream failure `e` is, for `keygate_upstream_errors_total`.
fn upstream_error_kind(e: &Error) -> crate::metrics::UpstreamErrorKind {
    use crate::metrics::UpstreamErrorKind as K;
    match e.etype() {
        ErrorType::ConnectTimedout
        | ErrorType::TLSHandshakeTimedout
        | ErrorType::ReadTimedout
        | ErrorType::WriteTimedout => K::Timeout,
        ErrorType::ConnectRefused
        | ErrorType::ConnectNoRoute
        | ErrorType::ConnectError
        | ErrorType::BindError
        | ErrorType::SocketError => K::Connect,
        ErrorType::TLSHandshakeFailure | ErrorType::InvalidCert | ErrorType::HandshakeError => {
            K::Tls
        }
        ErrorType::ConnectionClosed | ErrorType::ReadError | ErrorType::WriteError => K::Closed,
        _ => K::Other,
    }
}

/// The TCP peer's address (or the PROXY protocol's source), an IPv4 client on an IPv6 socket
/// as the IPv4 address it is.
fn peer_ip(session: &Session) -> Option<IpAddr> {
    session
        .client_addr()
        .and_then(|a| a.as_inet())
        .map(|a| a.ip().to_canonical())
}

/// pingora's own answer to a failure that is not the upstream's (a bad request, a client gone),
/// with the request id.
async fn pingora_default_failure(
    session: &mut Session,
    e: &Error,
    request_id: Option<&HeaderValue>,
) -> FailToProxy {
    let code = match (e.etype(), e.esource()) {
        (ErrorType::HTTPStatus(code), _) => *code,
        (_, ErrorSource::Upstream) => 502,
        (
            ErrorType::WriteError | ErrorType::ReadError | ErrorType::ConnectionClosed,
            ErrorSource::Downstream,
        ) => 0,
        (_, ErrorSource::Downstream) => 400,
        (_, ErrorSource::Internal | ErrorSource::Unset) => 500,
    };
    if code > 0 {
        let mut resp = pingora::protocols::http::error_resp::gen_error_response(code);
        let written = match request_id {
            Some(id) => resp.insert_header(X_REQUEST_ID, id.clone()),
            None => Ok(()),
        };
        let written = match written {
            Ok(()) => session.write_error_response(resp, Bytes::new()).await,
            Err(e) => Err(e),
        };
        if let Err(write) = written {
            tracing::debug!(error = %write, "could not send an error response");
        }
    }
    FailToProxy {
        error_code: code,
        can_reuse_downstream: false,
    }
}
