//! The pingora glue: the only module that imports pingora.
//!
//! `request_filter` hands the request to the [`Gate`] and either answers with the configured
//! error or lets pingora forward it; `upstream_request_filter` strips credentials and spoofable
//! identity headers and adds the real ones. Everything else is pingora's defaults.

use std::net::SocketAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use bytes::Bytes;
use http::HeaderName;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;
use pingora::proxy::{ProxyHttp, Session};

use crate::authz::Rejection;
use crate::cache::CachedCredential;
use crate::config::Config;
use crate::errors::Reason;
use crate::gate::Principal;
use crate::gate::{Charge, Decision, Gate, Request};
use crate::local::LocalRequest;
use crate::metrics::{Metrics, Outcome};
use crate::ratelimit::RateStatus;

pub struct KeygateProxy {
    /// The running configuration's routing; a reload swaps it whole.
    routing: Arc<ArcSwap<Routing>>,
    metrics: Arc<Metrics>,
    identity_names: IdentityNames,
}

/// One configuration's request handling: the gate and each route's upstream peer, built
/// together so route indexes always agree. A request keeps the routing it started with, so a
/// reload never mixes two configurations within one request.
struct Routing {
    gate: Arc<Gate>,
    /// Upstream peers prepared once per route (address parsed, SNI set); `None` for local
    /// endpoints.
    peers: Vec<Option<HttpPeer>>,
}

impl Routing {
    fn new(gate: Arc<Gate>) -> Self {
        let peers = gate
            .config
            .routes
            .iter()
            .map(|r| {
                r.upstream
                    .as_ref()
                    .map(|u| match u.address.parse::<SocketAddr>() {
                        Ok(addr) => HttpPeer::new(addr, u.tls, u.sni.clone()),
                        Err(_) => HttpPeer::new(u.address.as_str(), u.tls, u.sni.clone()),
                    })
            })
            .collect();
        Self { gate, peers }
    }

    fn config(&self) -> &Config {
        &self.gate.config
    }
}

/// The identity header names as `&'static str`: pingora keeps a header's original case beside
/// it, and only a static name skips the copy it otherwise makes on every insert. Leaked once at
/// startup (seven short strings), so the request path allocates nothing for them.
struct IdentityNames {
    key_id: &'static str,
    key_name: &'static str,
    account_id: &'static str,
    user_id: &'static str,
    scopes: &'static str,
    auth_method: &'static str,
    credits_remaining: &'static str,
}

impl IdentityNames {
    fn new(h: &crate::config::IdentityHeaders) -> Self {
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

/// Per-request state.
#[derive(Default)]
pub struct RequestCtx {
    routing: Option<Arc<Routing>>,
    route: Option<usize>,
    principal: Option<Arc<CachedCredential>>,
    outcome: Option<Outcome>,
    rate: Option<RateStatus>,
    charge: Option<Charge>,
}

impl KeygateProxy {
    fn new(routing: Arc<ArcSwap<Routing>>, metrics: Arc<Metrics>) -> Self {
        // Identity header names are restart-only (see `reload`), so they are read once.
        let identity_names = IdentityNames::new(&routing.load().config().identity);
        Self {
            routing,
            metrics,
            identity_names,
        }
    }

    async fn respond_rejection(
        &self,
        session: &mut Session,
        routing: &Routing,
        reason: Reason,
        detail: &crate::errors::Detail,
        rate: Option<&RateStatus>,
    ) -> Result<()> {
        let template = routing.config().templates.get(reason);
        let body = Bytes::from(template.render(reason, detail));
        let mut resp = ResponseHeader::build(template.status, Some(6))?;
        resp.insert_header(http::header::CONTENT_TYPE, template.content_type.as_str())?;
        resp.insert_header(http::header::CONTENT_LENGTH, body.len().to_string())?;
        if let Some(rate) = rate {
            add_rate_headers(&mut resp, rate)?;
            if let Some(retry) = rate.retry_after_secs {
                resp.insert_header(http::header::RETRY_AFTER, retry.to_string())?;
            }
        }
        let bearer_accepted = routing
            .config()
            .credential_sources
            .iter()
            .any(|s| s.scheme.as_deref() == Some("bearer "));
        if bearer_accepted
            && matches!(
                reason,
                Reason::MissingCredential | Reason::InvalidKey | Reason::MalformedCredential
            )
        {
            resp.insert_header(http::header::WWW_AUTHENTICATE, "Bearer")?;
        }
        session.write_response_header(Box::new(resp), false).await?;
        session.write_response_body(Some(body), true).await?;
        Ok(())
    }
}

/// `RateLimit-Limit`, `RateLimit-Remaining`, `RateLimit-Reset` (draft-ietf-httpapi-ratelimit-headers).
fn add_rate_headers(resp: &mut ResponseHeader, rate: &RateStatus) -> Result<()> {
    resp.insert_header("ratelimit-limit", rate.limit.to_string())?;
    resp.insert_header("ratelimit-remaining", rate.remaining.to_string())?;
    resp.insert_header("ratelimit-reset", rate.reset_secs.to_string())?;
    Ok(())
}

impl KeygateProxy {
    async fn respond_local(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        routing: &Routing,
        route_index: usize,
        caller: Principal,
        key_id: Option<String>,
    ) -> Result<()> {
        let route = routing.config().routes.get(route_index);
        let endpoint = route.and_then(|r| r.local.as_ref());
        let (Some(route), Some(endpoint), Some(local)) =
            (route, endpoint, Some(routing.gate.local()))
        else {
            ctx.outcome = Some(Outcome::Rejected(Reason::StoreUnavailable));
            return self
                .respond_rejection(
                    session,
                    routing,
                    Reason::StoreUnavailable,
                    &Default::default(),
                    None,
                )
                .await;
        };
        let body = match read_body(session, crate::local::MAX_BODY).await? {
            Some(body) => body,
            None => {
                let rejection =
                    Rejection::with_message(Reason::InvalidBody, "The request body is too large");
                ctx.outcome = Some(Outcome::Rejected(rejection.reason));
                return self
                    .respond_rejection(session, routing, rejection.reason, &rejection.detail, None)
                    .await;
            }
        };
        let client_ip = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip());
        let header = session.req_header();
        let request = LocalRequest {
            method: header.method.as_str(),
            query: header.uri.query(),
            body: &body,
            key_id: key_id.as_deref(),
            client_ip,
        };
        match crate::local::answer(local, route, endpoint, &caller, request).await {
            Ok(answer) => {
                ctx.outcome = Some(Outcome::Local);
                let body = Bytes::from(answer.body);
                let mut resp = ResponseHeader::build(answer.status, Some(5))?;
                resp.insert_header(http::header::CONTENT_TYPE, "application/json")?;
                resp.insert_header(http::header::CONTENT_LENGTH, body.len().to_string())?;
                resp.insert_header(http::header::CACHE_CONTROL, "no-store")?;
                if let Some(rate) = &ctx.rate {
                    add_rate_headers(&mut resp, rate)?;
                }
                session.write_response_header(Box::new(resp), false).await?;
                session.write_response_body(Some(body), true).await
            }
            Err(rejection) => {
                ctx.outcome = Some(Outcome::Rejected(rejection.reason));
                let rate = rejection.rate.as_ref().or(ctx.rate.as_ref());
                self.respond_rejection(session, routing, rejection.reason, &rejection.detail, rate)
                    .await
            }
        }
    }
}

/// Reads the whole request body, up to `limit` bytes; `None` when it is larger.
async fn read_body(session: &mut Session, limit: usize) -> Result<Option<Vec<u8>>> {
    let mut body = Vec::new();
    while let Some(chunk) = session.read_request_body().await? {
        if body.len() + chunk.len() > limit {
            return Ok(None);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Some(body))
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
        let client_ip = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip());
        let routing = self.routing.load_full();
        ctx.routing = Some(routing.clone());
        let header = session.req_header();
        let decision = routing
            .gate
            .decide(Request {
                method: header.method.as_str(),
                path: header.uri.path(),
                headers: &header.headers,
                client_ip,
            })
            .await;
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
                Ok(false)
            }
            Decision::Local {
                route,
                caller,
                rate,
                key_id,
            } => {
                ctx.route = Some(route);
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
                self.respond_rejection(
                    session,
                    &routing,
                    rejection.reason,
                    &rejection.detail,
                    rate.as_ref(),
                )
                .await?;
                Ok(true)
            }
        }
    }

    /// RateLimit headers on every response of a limited route.
    async fn response_filter(
        &self,
        _session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        if let Some(rate) = &ctx.rate {
            add_rate_headers(upstream_response, rate)?;
        }
        Ok(())
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut Self::CTX,
    ) -> Result<Box<HttpPeer>> {
        let peer = ctx
            .routing
            .as_ref()
            .zip(ctx.route)
            .and_then(|(routing, i)| routing.peers.get(i))
            .and_then(Option::as_ref)
            .ok_or_else(|| Error::explain(ErrorType::InternalError, "no route selected"))?;
        Ok(Box::new(peer.clone()))
    }

    /// Anti-spoofing and identity: credentials and every client-sent header in the identity
    /// namespace are removed, then keygate's own identity headers are added.
    async fn upstream_request_filter(
        &self,
        _session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        let Some(routing) = &ctx.routing else {
            return Err(Error::explain(
                ErrorType::InternalError,
                "no routing selected",
            ));
        };
        let config = routing.config();
        for source in &config.credential_sources {
            upstream_request.remove_header(&source.header);
        }
        let namespace = config.identity.namespace.as_str();
        let spoofed: Vec<HeaderName> = upstream_request
            .headers
            .keys()
            .filter(|name| name.as_str().starts_with(namespace))
            .cloned()
            .collect();
        for name in &spoofed {
            upstream_request.remove_header(name);
        }

        let Some(principal) = &ctx.principal else {
            return Ok(());
        };
        let names = &self.identity_names;
        let values = &principal.identity;
        for (name, value) in [
            (names.key_id, &values.key_id),
            (names.key_name, &values.key_name),
            (names.account_id, &values.account_id),
            (names.user_id, &values.user_id),
            (names.scopes, &values.scopes),
        ] {
            // Append, not insert: every header in the namespace was removed above, so there is
            // nothing to replace, and append skips pingora's search for one.
            if let Some(v) = value {
                upstream_request.append_header(name, v.clone())?;
            }
        }
        upstream_request.append_header(names.auth_method, principal.method.header_value())?;
        if let Some(charge) = &ctx.charge {
            upstream_request
                .append_header(names.credits_remaining, charge.balance_after.to_string())?;
        }
        Ok(())
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut Self::CTX) {
        let outcome = ctx
            .outcome
            .unwrap_or(Outcome::Rejected(Reason::RouteNotFound));
        match &ctx.routing {
            Some(routing) => routing.gate.count_request(ctx.route, outcome),
            None => self.metrics.request(None, outcome),
        }
        let status = session
            .response_written()
            .map(|r| r.status.as_u16())
            .unwrap_or(0);
        // charge_on = "success": the reservation goes back unless the upstream answered 2xx.
        if let Some(charge) = ctx.charge.take() {
            if charge.refund_unless_success && (e.is_some() || !(200..300).contains(&status)) {
                if let Some(routing) = &ctx.routing {
                    routing.gate.refund(&charge).await;
                }
            }
        }
        // The access line names the key by id, never by value.
        tracing::debug!(
            target: "keygate::access",
            method = %session.req_header().method,
            path = session.req_header().uri.path(),
            status,
            route = ctx.routing.as_ref().zip(ctx.route).and_then(|(r, i)| r.config().routes.get(i)).map(|r| r.name.as_str()).unwrap_or("-"),
            key_id = ctx.principal.as_ref().map(|p| p.credential.key.id.as_str()).unwrap_or("-"),
            error = e.map(|e| e.to_string()).unwrap_or_default(),
        );
    }
}

type BoxFuture = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;
/// `serve_admin` / `serve_ops`: serve a listener until the shutdown future resolves.
type ServeFn = fn(Arc<crate::app::Shared>, tokio::net::TcpListener, BoxFuture) -> BoxFuture;

/// A listener served by an axum app in its own pingora background service, so pingora's shutdown
/// stops it with everything else.
struct HttpService {
    listener: std::sync::Mutex<Option<std::net::TcpListener>>,
    serve: ServeFn,
    shared: Arc<crate::app::Shared>,
}

#[async_trait]
impl pingora::services::background::BackgroundService for HttpService {
    async fn start(&self, mut shutdown: pingora::server::ShutdownWatch) {
        let Some(std_listener) = self.listener.lock().ok().and_then(|mut l| l.take()) else {
            return;
        };
        let listener = match tokio::net::TcpListener::from_std(std_listener) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(error = %e, "cannot start listener");
                return;
            }
        };
        let stop = Box::pin(async move {
            let _ = shutdown.changed().await;
        });
        (self.serve)(self.shared.clone(), listener, stop).await;
    }
}

/// Writes queued last-used times until shutdown.
struct UsageService {
    writer: std::sync::Mutex<Option<crate::usage::UsageWriter>>,
    shared: Arc<crate::app::Shared>,
}

#[async_trait]
impl pingora::services::background::BackgroundService for UsageService {
    async fn start(&self, mut shutdown: pingora::server::ShutdownWatch) {
        let Some(writer) = self.writer.lock().ok().and_then(|mut w| w.take()) else {
            return;
        };
        let run = writer.run(self.shared.store.clone(), self.shared.metrics.clone());
        tokio::select! {
            _ = run => {}
            _ = shutdown.changed() => {}
        }
    }
}

/// Forgets full rate-limit buckets once a minute, so memory follows active callers.
struct Janitor {
    gate: Arc<Gate>,
}

#[async_trait]
impl pingora::services::background::BackgroundService for Janitor {
    async fn start(&self, mut shutdown: pingora::server::ShutdownWatch) {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(60));
        loop {
            tokio::select! {
                _ = tick.tick() => self.gate.housekeeping(),
                _ = shutdown.changed() => return,
            }
        }
    }
}

fn bind(addr: SocketAddr, what: &str) -> anyhow::Result<std::net::TcpListener> {
    use anyhow::Context;
    let l = std::net::TcpListener::bind(addr)
        .with_context(|| format!("cannot listen on {addr} ({what} listener)"))?;
    l.set_nonblocking(true)
        .with_context(|| format!("{what} listener"))?;
    Ok(l)
}

/// Reloads the configuration on SIGHUP (see [`crate::reload`]).
struct ReloadService {
    routing: Arc<ArcSwap<Routing>>,
    shared: Arc<crate::app::Shared>,
    source: std::sync::Mutex<crate::reload::ConfigSource>,
}

impl ReloadService {
    fn reload(&self) {
        let Ok(mut source) = self.source.lock() else {
            return;
        };
        let current = self.routing.load_full();
        match crate::reload::reload(&source, &current.gate) {
            Ok(reloaded) => {
                let routes = reloaded.config.routes.len();
                self.routing
                    .store(Arc::new(Routing::new(Arc::new(reloaded.gate))));
                self.shared.config.store(reloaded.config);
                *source = reloaded.source;
                self.shared.metrics.config_reload(true);
                tracing::info!(routes, path = %source.path.display(), "configuration reloaded");
            }
            Err(e) => {
                self.shared.metrics.config_reload(false);
                tracing::error!(error = %e, "configuration not reloaded; still serving the previous one");
            }
        }
    }
}

#[async_trait]
impl pingora::services::background::BackgroundService for ReloadService {
    async fn start(&self, mut shutdown: pingora::server::ShutdownWatch) {
        use tokio::signal::unix::{signal, SignalKind};
        let mut hangups = match signal(SignalKind::hangup()) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGHUP; reloading is off");
                return;
            }
        };
        tracing::info!("send SIGHUP to reload routes, limits, plans and error templates");
        loop {
            tokio::select! {
                Some(()) = hangups.recv() => self.reload(),
                _ = shutdown.changed() => return,
            }
        }
    }
}

/// Runs keygate until a signal stops it: SIGTERM drains gracefully, SIGINT stops at once, SIGHUP
/// reloads the configuration from `source`.
pub fn run(app: crate::app::App, source: crate::reload::ConfigSource) -> anyhow::Result<()> {
    let config = app.shared.config.load_full();
    let admin = bind(config.listeners.admin, "admin")?;
    let ops = bind(config.listeners.ops, "ops")?;
    // Fail fast with a clear message when the public port is taken; pingora binds it itself.
    drop(bind(config.listeners.public, "public")?);

    let conf = pingora::server::configuration::ServerConf {
        threads: config.server.threads,
        work_stealing: config.server.work_stealing,
        grace_period_seconds: Some(config.server.grace_period_seconds),
        graceful_shutdown_timeout_seconds: Some(config.server.graceful_shutdown_timeout_seconds),
        ..Default::default()
    };
    let mut server = pingora::server::Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();

    let routing = Arc::new(ArcSwap::from_pointee(Routing::new(app.gate.clone())));
    let proxy = KeygateProxy::new(routing.clone(), app.shared.metrics.clone());
    let mut proxy_service =
        pingora::proxy::http_proxy_service_with_name(&server.configuration, proxy, "keygate proxy");
    proxy_service.add_tcp(&config.listeners.public.to_string());
    server.add_service(proxy_service);

    server.add_service(pingora::services::background::background_service(
        "keygate admin",
        HttpService {
            listener: std::sync::Mutex::new(Some(admin)),
            serve: crate::admin::serve_admin,
            shared: app.shared.clone(),
        },
    ));
    server.add_service(pingora::services::background::background_service(
        "keygate ops",
        HttpService {
            listener: std::sync::Mutex::new(Some(ops)),
            serve: crate::admin::ops::serve_ops,
            shared: app.shared.clone(),
        },
    ));
    server.add_service(pingora::services::background::background_service(
        "keygate last-used writer",
        UsageService {
            writer: std::sync::Mutex::new(Some(app.usage_writer)),
            shared: app.shared.clone(),
        },
    ));
    server.add_service(pingora::services::background::background_service(
        "keygate reload",
        ReloadService {
            routing,
            shared: app.shared.clone(),
            source: std::sync::Mutex::new(source),
        },
    ));
    server.add_service(pingora::services::background::background_service(
        "keygate housekeeping",
        Janitor {
            gate: app.gate.clone(),
        },
    ));
    tracing::info!(
        public = %config.listeners.public,
        admin = %config.listeners.admin,
        ops = %config.listeners.ops,
        "keygate listening"
    );
    server.run_forever();
}
