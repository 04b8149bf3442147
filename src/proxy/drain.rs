//! Shutdown that drops no request: pingora, on SIGTERM, stops accepting at once (its grace
//! period is for handing sockets to a new process), which refuses new connections while a load
//! balancer or Kubernetes still routes to this replica. So keygate takes the signal itself
//! (pingora 0.9 lets the caller supply its [`ShutdownSignalWatch`]) and only then hands pingora
//! its shutdown:
//!
//! 1. SIGTERM: `/readyz` fails at once and every answer carries `Connection: close`, while the
//!    listeners keep accepting and serving for `drain_seconds`, so endpoints can be removed and
//!    keep-alive clients move to other replicas.
//! 2. Then keygate waits, up to `graceful_shutdown_timeout_seconds`, for the requests still in
//!    flight to finish, and only then tells pingora to stop (listeners close, runtimes end).
//!
//! SIGINT stops at once, also during a drain. SIGQUIT is pingora's socket hand-over upgrade.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora::server::{ShutdownSignal, ShutdownSignalWatch};
use tokio::signal::unix::{signal, SignalKind};

use crate::metrics::Metrics;

pub(super) struct DrainThenStop {
    pub(super) draining: Arc<AtomicBool>,
    pub(super) metrics: Arc<Metrics>,
    pub(super) drain: Duration,
    pub(super) in_flight_timeout: Duration,
}

#[async_trait]
impl ShutdownSignalWatch for DrainThenStop {
    async fn recv(&self) -> ShutdownSignal {
        let (Ok(mut term), Ok(mut int), Ok(mut quit)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
            signal(SignalKind::quit()),
        ) else {
            // Without signal handlers there is nothing to wait for; pingora's own watch would
            // fail the same way. Stop rather than run unstoppable.
            tracing::error!("cannot install signal handlers; stopping");
            return ShutdownSignal::FastShutdown;
        };
        tokio::select! {
            _ = int.recv() => return ShutdownSignal::FastShutdown,
            _ = quit.recv() => return ShutdownSignal::GracefulUpgrade,
            _ = term.recv() => {}
        }
        self.draining.store(true, Ordering::Relaxed);
        tracing::info!(
            drain_seconds = self.drain.as_secs(),
            "SIGTERM: draining (readyz fails, listeners stay open)"
        );
        tokio::select! {
            _ = int.recv() => return ShutdownSignal::FastShutdown,
            _ = tokio::time::sleep(self.drain) => {}
        }
        let deadline = Instant::now() + self.in_flight_timeout;
        loop {
            let in_flight = self.metrics.in_flight();
            if in_flight <= 0 || Instant::now() >= deadline {
                tracing::info!(in_flight, "drain over; stopping");
                return ShutdownSignal::GracefulTerminate;
            }
            tokio::select! {
                _ = int.recv() => return ShutdownSignal::FastShutdown,
                _ = tokio::time::sleep(Duration::from_millis(10)) => {}
            }
        }
    }
}
