//! The Redis connection the store, the global rate limiter and the invalidation publisher share:
//! one multiplexed connection to plain Redis (a `ConnectionManager`, which reconnects by itself)
//! or one cluster connection, never a connection per request.
//!
//! Every command is bounded by the configured `[store] timeout_ms`, here, around each command,
//! rather than trusted to the client's own timeouts: a Redis that is alive at the TCP level but
//! answers nothing (paused, swapping, stuck in a slow script) must cost a request at most that
//! long, whatever the client library is doing underneath (waiting, reconnecting, retrying).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use ::redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use ::redis::cluster::{ClusterClient, ClusterClientBuilder};
use ::redis::cluster_async::ClusterConnection;
use ::redis::{Cmd, Pipeline, RedisError, RedisFuture, RedisResult, Value};
use tokio::sync::OnceCell;

/// A cloneable handle; clones share one connection.
///
/// The connection is made on first use, not at construction, and a failed attempt is retried by
/// the next command: keygate starts while Redis is down (answering 503 rather than exiting into
/// a restart loop) and comes up by itself when Redis does. Once made, the client library keeps
/// the connection alive (`ConnectionManager` and the cluster connection both reconnect).
#[derive(Clone)]
pub struct RedisConn {
    shared: Arc<Shared>,
    timeout: Duration,
}

struct Shared {
    target: Target,
    connected: OnceCell<Inner>,
}

enum Target {
    Single(::redis::Client, ConnectionManagerConfig),
    Cluster(ClusterClient),
}

#[derive(Clone)]
enum Inner {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl RedisConn {
    /// Plain Redis at `url` (`redis://host:port/db`). Fails only on a malformed URL.
    pub fn single(url: &str, timeout: Duration) -> RedisResult<Self> {
        let client = ::redis::Client::open(url)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(timeout)
            .set_response_timeout(timeout)
            .set_number_of_retries(1)
            .set_max_delay(500);
        Ok(Self::lazy(Target::Single(client, config), timeout))
    }

    /// Redis Cluster from a list of seed nodes. Fails only on malformed node URLs.
    pub fn cluster(nodes: &[String], timeout: Duration) -> RedisResult<Self> {
        let client = ClusterClientBuilder::new(nodes.to_vec())
            .connection_timeout(timeout)
            .response_timeout(timeout)
            .build()?;
        Ok(Self::lazy(Target::Cluster(client), timeout))
    }

    fn lazy(target: Target, timeout: Duration) -> Self {
        Self {
            shared: Arc::new(Shared {
                target,
                connected: OnceCell::new(),
            }),
            timeout,
        }
    }

    /// Plain Redis, connected now (for callers that want to fail fast).
    pub async fn connect(url: &str, timeout: Duration) -> RedisResult<Self> {
        let conn = Self::single(url, timeout)?;
        bounded(timeout, conn.shared.get()).await?;
        Ok(conn)
    }

    /// Whether this is Redis Cluster, where one script or transaction may only touch keys of
    /// one hash slot (the store then splits a multi-key write by slot).
    pub fn is_cluster(&self) -> bool {
        matches!(self.shared.target, Target::Cluster(_))
    }

    /// Redis Cluster, connected now.
    pub async fn connect_cluster(nodes: &[String], timeout: Duration) -> RedisResult<Self> {
        let conn = Self::cluster(nodes, timeout)?;
        bounded(timeout, conn.shared.get()).await?;
        Ok(conn)
    }
}

impl Shared {
    /// The connection, made now if it has not been yet. Concurrent first callers share one
    /// attempt; a failed or cancelled attempt leaves it for the next caller.
    async fn get(&self) -> RedisResult<Inner> {
        self.connected
            .get_or_try_init(|| async {
                match &self.target {
                    Target::Single(client, config) => client
                        .get_connection_manager_with_config(config.clone())
                        .await
                        .map(Inner::Single),
                    Target::Cluster(client) => {
                        client.get_async_connection().await.map(Inner::Cluster)
                    }
                }
            })
            .await
            .cloned()
    }
}

fn timed_out() -> RedisError {
    RedisError::from(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        "Redis did not answer within the configured timeout",
    ))
}

async fn bounded<T>(
    timeout: Duration,
    fut: impl Future<Output = RedisResult<T>>,
) -> RedisResult<T> {
    tokio::time::timeout(timeout, fut)
        .await
        .unwrap_or_else(|_| Err(timed_out()))
}

impl ConnectionLike for RedisConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        let shared = self.shared.clone();
        Box::pin(bounded(self.timeout, async move {
            match shared.get().await? {
                Inner::Single(mut c) => c.req_packed_command(cmd).await,
                Inner::Cluster(mut c) => c.req_packed_command(cmd).await,
            }
        }))
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        let shared = self.shared.clone();
        Box::pin(bounded(self.timeout, async move {
            match shared.get().await? {
                Inner::Single(mut c) => c.req_packed_commands(cmd, offset, count).await,
                Inner::Cluster(mut c) => c.req_packed_commands(cmd, offset, count).await,
            }
        }))
    }

    fn get_db(&self) -> i64 {
        match &self.shared.target {
            Target::Single(client, _) => client.get_connection_info().redis.db,
            Target::Cluster(_) => 0,
        }
    }
}
