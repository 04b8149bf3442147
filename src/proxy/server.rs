//! The pingora server: the public proxy plus every background service.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use arc_swap::ArcSwap;

use super::health::HealthService;
use super::phases::KeygateProxy;
use super::routing::Routing;
use super::services::{HttpService, Janitor, ReloadService, UsageService};

fn bind(addr: SocketAddr, what: &str) -> anyhow::Result<std::net::TcpListener> {
    let l = std::net::TcpListener::bind(addr)
        .with_context(|| format!("cannot listen on {addr} ({what} listener)"))?;
    l.set_nonblocking(true)
        .with_context(|| format!("{what} listener"))?;
    Ok(l)
}

/// Runs keygate until a signal stops it: SIGTERM drains (see `drain`), SIGINT stops at once,
/// SIGHUP reloads the configuration from `source`.
pub fn run(app: crate::app::App, source: crate::reload::ConfigSource) -> anyhow::Result<()> {
    let config = app.shared.config.load_full();
    let admin = bind(config.listeners.admin, "admin")?;
    let ops = bind(config.listeners.ops, "ops")?;
    // Fail fast with a clear message when a public port is taken; pingora binds it itself.
    drop(bind(config.listeners.public, "public")?);
    if let Some(tls) = &config.listeners.tls {
        drop(bind(tls.address, "public TLS")?);
    }

    let conf = pingora::server::configuration::ServerConf {
        threads: config.server.threads,
        work_stealing: config.server.work_stealing,
        // The drain and the wait for requests in flight happen before pingora hears of the
        // shutdown (see `drain`); its grace period is only the optional extra wait after that.
        grace_period_seconds: Some(config.server.grace_period_seconds),
        graceful_shutdown_timeout_seconds: Some(config.server.graceful_shutdown_timeout_seconds),
        upstream_keepalive_pool_size: config.server.upstream_keepalive_pool_size,
        ..Default::default()
    };
    let mut server = pingora::server::Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();

    let routing = Arc::new(ArcSwap::from_pointee(Routing::new(
        app.gate.clone(),
        &app.shared.metrics,
        None,
    )?));
    let reloaded = Arc::new(tokio::sync::Notify::new());
    let proxy = KeygateProxy::new(
        routing.clone(),
        app.shared.metrics.clone(),
        app.shared.draining.clone(),
    );
    let mut http = pingora::proxy::http_proxy(&server.configuration, proxy);
    let mut options = pingora::apps::HttpServerOptions::default();
    options.h2c = config.listeners.h2c;
    // Like HTTP/1.1's keep-alive (60 s in pingora): an idle HTTP/2 connection is closed.
    options.h2_idle_timeout = Some(std::time::Duration::from_secs(60));
    http.server_options = Some(options);
    // The proxy app behind the per-IP connection cap and the request-header deadline.
    let mut guarded = super::connections::GuardedApp::new(
        Arc::new(http),
        super::connections::Guards {
            max_per_ip: config.server.max_connections_per_ip,
            header_timeout: config.server.request_header_timeout,
            trusted: config.server.trusted_proxies.clone(),
            proxy_protocol: config.listeners.proxy_protocol,
        },
        app.shared.metrics.clone(),
    );
    // The TLS listener: the same app, service and connection cap, behind keygate's own
    // handshake (see `connections`), so pingora listens on plain TCP there too.
    let mut certs = None;
    let mut addresses = vec![config.listeners.public.to_string()];
    if let Some(tls) = &config.listeners.tls {
        let set = tls
            .certs
            .clone()
            .context("TLS certificates were not loaded")?;
        tracing::info!(address = %tls.address, names = ?set.names(), "TLS certificates loaded");
        let resolver = Arc::new(crate::tls::SniResolver::new(set));
        let server_config = crate::tls::server_config(resolver.clone(), tls.http2)
            .context("TLS listener configuration")?;
        let acceptor = pingora::listeners::tls::Acceptor::from_server_config(server_config);
        guarded = guarded.with_tls(tls.address, Arc::new(acceptor));
        addresses.push(tls.address.to_string());
        certs = Some(resolver);
    }
    let mut proxy_service =
        pingora::services::listening::Service::new("keygate proxy".to_string(), guarded);
    for address in &addresses {
        proxy_service.add_tcp(address);
    }
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
            routing: routing.clone(),
            certs,
            shared: app.shared.clone(),
            source: std::sync::Mutex::new(source),
            reloaded: reloaded.clone(),
        },
    ));
    server.add_service(pingora::services::background::background_service(
        "keygate health checks",
        HealthService { routing, reloaded },
    ));
    server.add_service(pingora::services::background::background_service(
        "keygate housekeeping",
        Janitor {
            gate: app.gate.clone(),
        },
    ));
    tracing::info!(
        public = %config.listeners.public,
        public_tls = ?config.listeners.tls.as_ref().map(|t| t.address),
        admin = %config.listeners.admin,
        ops = %config.listeners.ops,
        "keygate listening"
    );
    let shutdown = super::drain::DrainThenStop {
        draining: app.shared.draining.clone(),
        metrics: app.shared.metrics.clone(),
        drain: config.server.drain,
        in_flight_timeout: std::time::Duration::from_secs(
            config.server.graceful_shutdown_timeout_seconds,
        ),
    };
    server.run(pingora::server::RunArgs {
        shutdown_signal: Box::new(shutdown),
    });
    tracing::info!("keygate stopped");
    Ok(())
}
