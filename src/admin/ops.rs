//! The ops listener: liveness, readiness and Prometheus metrics. Kept apart from the admin API so
//! it can be exposed to the cluster's probes and scrapers without exposing key management.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

use crate::app::Shared;

pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(shared)
}

/// Ready when not draining, the config is loaded (it is, or we would not be running), the store
/// answers and the token cut-offs have been read.
async fn readyz(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    if shared.draining.load(std::sync::atomic::Ordering::Relaxed) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: draining before shutdown\n".to_string(),
        );
    }
    if !shared.cutoffs.loaded() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: token cut-offs not loaded yet\n".to_string(),
        );
    }
    match shared.store.ping().await {
        Ok(()) => (StatusCode::OK, "ready\n".to_string()),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {e}\n")),
    }
}

async fn metrics(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    shared.metrics.set_cache_entries(shared.cache.entry_count());
    shared
        .metrics
        .set_log_lines_dropped(crate::logging::dropped_lines());
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        shared.metrics.render(),
    )
}

pub fn serve_ops(
    shared: Arc<Shared>,
    listener: tokio::net::TcpListener,
    shutdown: Pin<Box<dyn Future<Output = ()> + Send>>,
) -> Pin<Box<dyn Future<Output = ()> + Send>> {
    super::serve("ops", router(shared), listener, shutdown)
}
