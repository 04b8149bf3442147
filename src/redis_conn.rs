//! The Redis connection the store, the global rate limiter and the invalidation publisher share:
//! one multiplexed connection to plain Redis (a `ConnectionManager`, which reconnects by itself)
//! or one cluster connection, never a connection per request.
//!
//! Every command is bounded by the configured `[store] timeout_ms`, here, around each command,
//! rather than trusted to the client's own timeouts: a Redis that is alive at the TCP level but
//! answers nothing (paused, swapping, stuck in a slow script) must cost a request at most that
//! long, whatever the client library is doing underneath (waiting, reconnecting, retrying).

use std::future::Future;
use std::time::Duration;

use ::redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use ::redis::cluster_async::ClusterConnection;
use ::redis::{Cmd, Pipeline, RedisError, RedisFuture, RedisResult, Value};

/// A cloneable handle; clones share one connection.
#[derive(Clone)]
pub struct RedisConn {
    inner: Inner,
    timeout: Duration,
}

#[derive(Clone)]
enum Inner {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl RedisConn {
    /// Plain Redis at `url` (`redis://host:port/db`).
    pub async fn connect(url: &str, timeout: Duration) -> RedisResult<Self> {
        let client = ::redis::Client::open(url)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(timeout)
            .set_response_timeout(timeout)
            .set_number_of_retries(1)
            .set_max_delay(500);
        let conn = bounded(timeout, client.get_connection_manager_with_config(config)).await?;
        Ok(Self {
            inner: Inner::Single(conn),
            timeout,
        })
    }

    /// Redis Cluster from a list of seed nodes.
    pub async fn connect_cluster(nodes: &[String], timeout: Duration) -> RedisResult<Self> {
        let client = ::redis::cluster::ClusterClientBuilder::new(nodes.to_vec())
            .connection_timeout(timeout)
            .response_timeout(timeout)
            .build()?;
        let conn = bounded(timeout, client.get_async_connection()).await?;
        Ok(Self {
            inner: Inner::Cluster(conn),
            timeout,
        })
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
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
        let timeout = self.timeout;
        let fut = match &mut self.inner {
            Inner::Single(c) => c.req_packed_command(cmd),
            Inner::Cluster(c) => c.req_packed_command(cmd),
        };
        Box::pin(bounded(timeout, fut))
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        let timeout = self.timeout;
        let fut = match &mut self.inner {
            Inner::Single(c) => c.req_packed_commands(cmd, offset, count),
            Inner::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        };
        Box::pin(bounded(timeout, fut))
    }

    fn get_db(&self) -> i64 {
        match &self.inner {
            Inner::Single(c) => c.get_db(),
            Inner::Cluster(c) => c.get_db(),
        }
    }
}
