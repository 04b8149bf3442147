//! Runs the active health checks of the current routing's pools, and follows reloads: each
//! reload stops the checks of the routing it replaced (a dropped pool is checked no more) and
//! starts those of the new one.

use std::sync::Arc;

use arc_swap::ArcSwap;
use async_trait::async_trait;

use super::routing::Routing;

pub(super) struct HealthService {
    pub(super) routing: Arc<ArcSwap<Routing>>,
    /// Told by the reload service after it swapped the routing.
    pub(super) reloaded: Arc<tokio::sync::Notify>,
}

#[async_trait]
impl pingora::services::background::BackgroundService for HealthService {
    async fn start(&self, mut shutdown: pingora::server::ShutdownWatch) {
        loop {
            // Dropping the set aborts its tasks: the checks of the routing being replaced stop
            // there, and a pool the new routing kept is checked on by its new task.
            let mut checks = tokio::task::JoinSet::new();
            for pool in self.routing.load().pools.iter() {
                if pool.upstream.pool.health_check.is_some() {
                    checks.spawn(pool.clone().check_forever());
                }
            }
            tokio::select! {
                _ = self.reloaded.notified() => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}
