//! Token buckets (GCRA) per key, per account and per client IP.
//!
//! - `local` mode: governor's keyed limiters, one per distinct limit, each a sharded map of
//!   bucket states (no global lock, no network). Each replica limits on its own.
//! - `redis` mode: one Lua script per decision ([`redis`]), so the limit is global across
//!   replicas and there is no read-modify-write race. The script reads Redis's own clock, so
//!   replicas with skewed clocks agree. When Redis is unreachable the decision falls back to the
//!   local limiter (counted in a metric): never unlimited.
//!
//! Where it is inaccurate: a limit changed at run time (a new key override or plan) starts a new
//! bucket, so a caller can get one extra burst at the moment of the change; local mode's buckets
//! are per replica, so N replicas admit up to N times the limit; and in the fallback each replica
//! counts only what it saw since Redis went away.

pub mod redis;
pub mod window;

use std::fmt;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dashmap::DashMap;
use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DashMapStateStore;
use governor::Quota;

use crate::cache::Text;
use crate::metrics::{LimitMode, Metrics};

/// A bucket's name, kept in parts so the request path builds it without allocating: an IP is
/// copied in, ids are [`Text`]s shared with the cached credential (a reference-count bump). The
/// local limiter hashes it as it is; Redis gets its text form ([`fmt::Display`]), byte for byte
/// the names keygate always used (`ip:{ip}`, `{route}|{caller}`, `{caller}`), so buckets in a
/// running Redis carry over.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum BucketKey {
    /// A client IP's bucket (`ip_rate_limit`): `ip:{ip}`.
    Ip(IpAddr),
    /// A caller's bucket on one route (the route's own limit): `{route}|{caller}`.
    PerRoute { route: Text, caller: Text },
    /// A bucket by its whole name: a key or account id (limits that are per caller overall),
    /// or any other name (`login:{email}`).
    Named(Text),
}

impl fmt::Display for BucketKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BucketKey::Ip(ip) => write!(f, "ip:{ip}"),
            BucketKey::PerRoute { route, caller } => write!(f, "{route}|{caller}"),
            BucketKey::Named(name) => f.write_str(name),
        }
    }
}

impl From<&str> for BucketKey {
    fn from(name: &str) -> Self {
        BucketKey::Named(Text::new(name))
    }
}

/// How a [`Limit`] counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Algorithm {
    /// `requests` per `per_seconds` on average, in bursts of up to `burst` (GCRA).
    #[default]
    TokenBucket,
    /// At most `requests` in any `per_seconds` span ([`window`]).
    SlidingWindow,
}

/// A rate: `requests` per `per_seconds`, with bursts up to `burst` at once (a sliding window
/// has no bursts beyond `requests`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Limit {
    pub requests: u64,
    pub per_seconds: u64,
    pub burst: u64,
    pub algorithm: Algorithm,
}

impl Limit {
    /// The time one request "costs": the GCRA emission interval.
    pub fn interval(&self) -> Duration {
        let nanos =
            (u128::from(self.per_seconds) * 1_000_000_000) / u128::from(self.requests.max(1));
        Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX).max(1))
    }

    fn quota(&self) -> Option<Quota> {
        let burst = NonZeroU32::new(u32::try_from(self.burst).unwrap_or(u32::MAX))?;
        Some(Quota::with_period(self.interval())?.allow_burst(burst))
    }
}

/// What a bucket said, and what the `RateLimit-*` headers report: `limit` is the bucket's size
/// (the burst), `remaining` what is left in it, `reset_secs` when it is full again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateStatus {
    pub limit: u64,
    pub remaining: u64,
    pub reset_secs: u64,
    /// `Some(seconds, rounded up)` when the request was refused.
    pub retry_after_secs: Option<u64>,
}

impl RateStatus {
    pub fn allowed(&self) -> bool {
        self.retry_after_secs.is_none()
    }
}

fn ceil_secs(d: Duration) -> u64 {
    let secs = d.as_secs();
    if d.subsec_nanos() > 0 {
        secs + 1
    } else {
        secs
    }
}

type LocalLimiter = governor::RateLimiter<
    BucketKey,
    DashMapStateStore<BucketKey>,
    DefaultClock,
    StateInformationMiddleware,
>;

pub struct RateLimiter {
    local: DashMap<Limit, Arc<LocalLimiter>>,
    clock: DefaultClock,
    redis: Option<redis::RedisLimiter>,
    windows: window::Windows,
    redis_windows: Option<window::RedisWindows>,
    /// After a Redis failure, decisions stay local until this instant (ms since `started`), so
    /// an outage costs one slow request per second instead of a timeout on every request.
    redis_down_until_ms: AtomicU64,
    started: Instant,
    metrics: Arc<Metrics>,
}

/// How long the limiter trusts only its local buckets after a Redis failure.
const REDIS_RETRY_AFTER: Duration = Duration::from_secs(1);

impl RateLimiter {
    pub fn local(metrics: Arc<Metrics>) -> Self {
        Self {
            local: DashMap::new(),
            clock: DefaultClock::default(),
            redis: None,
            windows: window::Windows::default(),
            redis_windows: None,
            redis_down_until_ms: AtomicU64::new(0),
            started: Instant::now(),
            metrics,
        }
    }

    pub fn with_redis(metrics: Arc<Metrics>, redis: redis::RedisLimiter) -> Self {
        Self {
            redis_windows: Some(window::RedisWindows::new(redis.conn().clone())),
            redis: Some(redis),
            ..Self::local(metrics)
        }
    }

    /// Takes one request from `bucket`'s allowance under `limit`.
    pub async fn check(&self, bucket: &BucketKey, limit: Limit) -> RateStatus {
        let mode = if let Some(redis) = &self.redis {
            // Redis keys are built from the text form (a network call follows anyway).
            let name = bucket.to_string();
            let now_ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
            if now_ms >= self.redis_down_until_ms.load(Ordering::Relaxed) {
                let decided = match (&self.redis_windows, limit.algorithm) {
                    (Some(windows), Algorithm::SlidingWindow) => windows.check(&name, limit).await,
                    _ => redis.check(&name, limit).await,
                };
                match decided {
                    Ok(status) => {
                        self.metrics
                            .ratelimit_decision(LimitMode::Redis, status.allowed());
                        return status;
                    }
                    Err(e) => {
                        let retry = u64::try_from(REDIS_RETRY_AFTER.as_millis()).unwrap_or(1000);
                        self.redis_down_until_ms
                            .store(now_ms.saturating_add(retry), Ordering::Relaxed);
                        tracing::debug!(error = %e, "rate limit falls back to the local bucket");
                    }
                }
            }
            LimitMode::Fallback
        } else {
            LimitMode::Local
        };
        let status = self.check_local(bucket, limit);
        self.metrics.ratelimit_decision(mode, status.allowed());
        status
    }

    fn check_local(&self, bucket: &BucketKey, limit: Limit) -> RateStatus {
        if limit.algorithm == Algorithm::SlidingWindow {
            return self.windows.check(bucket, limit);
        }
        let limiter = match self.local.get(&limit) {
            Some(l) => l.clone(),
            None => {
                let Some(quota) = limit.quota() else {
                    // Validated at load time; an impossible limit refuses rather than allows.
                    return RateStatus {
                        limit: 0,
                        remaining: 0,
                        reset_secs: 1,
                        retry_after_secs: Some(1),
                    };
                };
                self.local
                    .entry(limit)
                    .or_insert_with(|| {
                        Arc::new(
                            governor::RateLimiter::dashmap(quota)
                                .with_middleware::<StateInformationMiddleware>(),
                        )
                    })
                    .clone()
            }
        };
        let interval = limit.interval();
        match limiter.check_key(bucket) {
            Ok(snapshot) => {
                let remaining = u64::from(snapshot.remaining_burst_capacity());
                let used = limit.burst.saturating_sub(remaining);
                RateStatus {
                    limit: limit.burst,
                    remaining,
                    reset_secs: ceil_secs(
                        interval.saturating_mul(u32::try_from(used).unwrap_or(u32::MAX)),
                    ),
                    retry_after_secs: None,
                }
            }
            Err(not_until) => {
                let wait = not_until.wait_time_from(self.clock.now());
                RateStatus {
                    limit: limit.burst,
                    remaining: 0,
                    reset_secs: ceil_secs(
                        interval.saturating_mul(u32::try_from(limit.burst).unwrap_or(u32::MAX)),
                    ),
                    retry_after_secs: Some(ceil_secs(wait).max(1)),
                }
            }
        }
    }

    /// Forgets buckets that are full again, so memory follows active callers, not all callers
    /// ever seen. Run periodically.
    pub fn retain_recent(&self) {
        for limiter in self.local.iter() {
            limiter.retain_recent();
        }
        self.windows.retain_recent();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter() -> RateLimiter {
        RateLimiter::local(Arc::new(Metrics::new(&[])))
    }

    #[tokio::test]
    async fn burst_then_refusal_with_retry_after() {
        let rl = limiter();
        let limit = Limit {
            requests: 1,
            per_seconds: 10,
            burst: 3,
            algorithm: Algorithm::TokenBucket,
        };
        let bucket = BucketKey::from("key_a");
        let statuses: Vec<RateStatus> = {
            let mut v = Vec::new();
            for _ in 0..4 {
                v.push(rl.check(&bucket, limit).await);
            }
            v
        };
        assert_eq!(
            statuses.iter().map(|s| s.remaining).collect::<Vec<_>>(),
            [2, 1, 0, 0]
        );
        assert!(statuses[..3].iter().all(RateStatus::allowed));
        let refused = statuses[3];
        assert!(!refused.allowed());
        // One request per 10 s: the next slot is up to 10 s away, rounded up.
        let retry = refused.retry_after_secs.unwrap_or(0);
        assert!((9..=10).contains(&retry), "retry after {retry}");
        assert_eq!(refused.limit, 3);
        // Another bucket under the same limit is independent.
        assert!(rl.check(&"key_b".into(), limit).await.allowed());
    }

    #[test]
    fn interval_and_rounding() {
        let l = Limit {
            requests: 50,
            per_seconds: 1,
            burst: 10,
            algorithm: Algorithm::TokenBucket,
        };
        assert_eq!(l.interval(), Duration::from_millis(20));
        assert_eq!(ceil_secs(Duration::from_millis(1)), 1);
        assert_eq!(ceil_secs(Duration::from_secs(2)), 2);
        assert!(Limit {
            requests: 1,
            per_seconds: 1,
            burst: 0,
            algorithm: Algorithm::TokenBucket,
        }
        .quota()
        .is_none());
    }
}
