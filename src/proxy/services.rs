//! The background services pingora runs beside the proxy, so its shutdown stops them all.

use std::sync::Arc;

use arc_swap::ArcSwap;
use async_trait::async_trait;

use super::routing::Routing;
use crate::gate::Gate;

type BoxFuture = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;
/// `serve_admin` / `serve_ops`: serve a listener until the shutdown future resolves.
type ServeFn = fn(Arc<crate::app::Shared>, tokio::net::TcpListener, BoxFuture) -> BoxFuture;

/// A listener served by an axum app in its own pingora background service, so pingora's shutdown
/// stops it with everything else.
pub(super) struct HttpService {
    pub(super) listener: std::sync::Mutex<Option<std::net::TcpListener>>,
    pub(super) serve: ServeFn,
    pub(super) shared: Arc<crate::app::Shared>,
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
pub(super) struct UsageService {
    pub(super) writer: std::sync::Mutex<Option<crate::usage::UsageWriter>>,
    pub(super) shared: Arc<crate::app::Shared>,
}

#[async_trait]
impl pingora::services::background::BackgroundService for UsageService {
    async fn start(&self, mut shutdown: pingora::server::ShutdownWatch) {
        let Some(writer) = self.writer.lock().ok().and_then(|mut w| w.take()) else {
            return;
        };
        // On shutdown the writer makes one last flush of what is pending.
        let stop = async move {
            let _ = shutdown.changed().await;
        };
        writer.run(self.shared.store.clone(), stop).await;
    }
}

/// Forgets full rate-limit buckets once a minute, so memory follows active callers.
pub(super) struct Janitor {
    pub(super) gate: Arc<Gate>,
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

/// Reloads the configuration on SIGHUP (see [`crate::reload`]).
pub(super) struct ReloadService {
    pub(super) routing: Arc<ArcSwap<Routing>>,
    /// The TLS listener's certificates, re-read with the configuration.
    pub(super) certs: Option<Arc<crate::tls::SniResolver>>,
    pub(super) shared: Arc<crate::app::Shared>,
    pub(super) source: std::sync::Mutex<crate::reload::ConfigSource>,
    /// Told after each swap, so the health checks follow the new pools.
    pub(super) reloaded: Arc<tokio::sync::Notify>,
}

impl ReloadService {
    fn reload(&self) {
        let Ok(mut source) = self.source.lock() else {
            return;
        };
        let current = self.routing.load_full();
        let reloaded = crate::reload::reload(&source, &current.gate)
            .map_err(anyhow::Error::from)
            .and_then(|reloaded| {
                let routing = Routing::new(
                    Arc::new(reloaded.gate),
                    &self.shared.metrics,
                    Some(&current),
                )?;
                Ok((routing, reloaded.config, reloaded.source))
            });
        match reloaded {
            Ok((routing, config, new_source)) => {
                let routes = config.routes.len();
                // `[listeners]` cannot change on reload, so the TLS listener is still the one
                // the resolver serves; its files were just read and checked.
                let tls = config.listeners.tls.as_ref();
                if let (Some(resolver), Some(set)) =
                    (&self.certs, tls.and_then(|t| t.certs.clone()))
                {
                    // Said once it is true: a client that reads the line connects to the new set.
                    let names = set.names().to_vec();
                    resolver.replace(set);
                    tracing::info!(?names, "TLS certificates reloaded");
                }
                self.routing.store(Arc::new(routing));
                self.reloaded.notify_one();
                self.shared.config.store(config);
                *source = new_source;
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
        tracing::info!(
            "send SIGHUP to reload routes, limits, plans, error templates and TLS certificates"
        );
        loop {
            tokio::select! {
                Some(()) = hangups.recv() => self.reload(),
                _ = shutdown.changed() => return,
            }
        }
    }
}
