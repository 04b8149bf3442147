//! The global limiter: one GCRA step per decision, atomically, in a Lua script.
//!
//! The bucket's state is its theoretical arrival time (TAT) in microseconds of Redis's clock,
//! under `kg:rl:{<bucket>}:<interval>:<burst>` with an expiry at the moment it would be full again,
//! so idle buckets cost no memory.

use ::redis::Script;

use super::{Limit, RateStatus};
use crate::redis_conn::RedisConn;

const GCRA: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local tau = interval * (burst - 1)
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
if tat - now > tau then
  return {0, 0, tat - now, tat - tau - now}
end
local new_tat = tat + interval
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', math.ceil((new_tat - now) / 1000) + 1)
local remaining = math.floor((tau + interval - (new_tat - now)) / interval)
return {1, remaining, new_tat - now, 0}
"#;

pub struct RedisLimiter {
    conn: RedisConn,
    script: Script,
}

impl RedisLimiter {
    /// On the store's connection (plain Redis or a cluster: a bucket is one key, so one slot).
    /// A Redis slower than the connection's timeout turns into the local fallback.
    pub fn new(conn: RedisConn) -> Self {
        Self {
            conn,
            script: Script::new(GCRA),
        }
    }

    pub fn conn(&self) -> &RedisConn {
        &self.conn
    }

    pub async fn check(&self, bucket: &str, limit: Limit) -> Result<RateStatus, String> {
        let interval_us = u64::try_from(limit.interval().as_micros())
            .unwrap_or(u64::MAX)
            .max(1);
        let key = format!("kg:rl:{{{bucket}}}:{interval_us}:{}", limit.burst);
        let mut conn = self.conn.clone();
        let (allowed, remaining, until_full_us, retry_us): (i64, i64, i64, i64) = self
            .script
            .key(key)
            .arg(interval_us)
            .arg(limit.burst)
            .invoke_async(&mut conn)
            .await
            .map_err(|e| e.to_string())?;
        let secs_up = |us: i64| u64::try_from(us.max(0)).unwrap_or(0).div_ceil(1_000_000);
        Ok(RateStatus {
            limit: limit.burst,
            remaining: u64::try_from(remaining.max(0)).unwrap_or(0),
            reset_secs: secs_up(until_full_us),
            retry_after_secs: (allowed == 0).then(|| secs_up(retry_us).max(1)),
        })
    }
}
