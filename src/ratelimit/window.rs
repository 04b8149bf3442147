//! Sliding windows: `algorithm = "sliding_window"` admits at most `requests` in any
//! `per_seconds` span, where a token bucket of the same numbers admits up to twice that (a full
//! bucket, then its refill). Documents that say "10 per minute" mean the window.
//!
//! The scheme, and why: the window is cut into [`SLOTS`] slots of `per_seconds / SLOTS` and
//! each slot counts the requests admitted in it. A decision counts every slot that overlaps the
//! last `per_seconds` *in full*, so the count is never below the true number of requests in the
//! span; admitting only while it is below the limit means no span of `per_seconds` ever holds
//! more than `requests`. The error is on the refusing side, at most one slot (1/60 of the
//! window): a caller gets the limit over `per_seconds` plus at most one slot. The usual
//! previous+current weighting was not used because it assumes the previous window's requests
//! were spread evenly and so lets through more than the limit after a burst at a window's end;
//! a sliding log is exact but costs memory per request, where this costs at most `SLOTS + 1`
//! counters per bucket, whatever the limit.
//!
//! The arithmetic is the same locally ([`Windows`]) and in Redis ([`RedisWindows`], one Lua
//! script per decision, one hash per bucket and window under `kg:rlw:{<bucket>}:<us>:<n>`, its
//! fields the slot numbers, expiring once its newest slot has left the window).

use std::collections::VecDeque;
use std::time::Instant;

use ::redis::Script;
use dashmap::DashMap;

use super::{BucketKey, Limit, RateStatus};
use crate::redis_conn::RedisConn;

/// Slots per window: the granularity of the refusing-side error (1/60 of the window, one
/// second for a minute).
pub const SLOTS: u64 = 60;

/// The window and one slot, in microseconds.
fn spans_us(limit: &Limit) -> (u64, u64) {
    let window = limit.per_seconds.saturating_mul(1_000_000).max(1);
    (window, window.div_ceil(SLOTS).max(1))
}

/// One decision over a bucket's slots (`(slot number, admitted in it)`, oldest first) at `now`
/// (microseconds): drops the slots that left the window, then admits (counting it in the
/// current slot) or refuses.
fn decide(slots: &mut VecDeque<(u64, u64)>, now: u64, limit: &Limit) -> RateStatus {
    let (window, slot) = spans_us(limit);
    // Slot `j` covers [j*slot, (j+1)*slot); it overlaps (now - window, now] from this one on.
    let lowest = now.saturating_sub(window) / slot;
    while slots.front().is_some_and(|s| s.0 < lowest) {
        slots.pop_front();
    }
    let count: u64 = slots.iter().map(|s| s.1).sum();
    let secs_up = |us: u64| us.div_ceil(1_000_000);
    // Free again when the newest counted slot has left the window.
    let free_at = |newest: u64| (newest + 1) * slot + window;
    if count >= limit.requests {
        let newest = slots.back().map_or(now / slot, |s| s.0);
        // The first moment enough of the oldest slots have left for one more request.
        let mut left = count;
        let mut retry_at = free_at(newest);
        for &(j, c) in slots.iter() {
            left -= c;
            if left < limit.requests {
                retry_at = free_at(j);
                break;
            }
        }
        return RateStatus {
            limit: limit.requests,
            remaining: 0,
            reset_secs: secs_up(free_at(newest).saturating_sub(now)),
            retry_after_secs: Some(secs_up(retry_at.saturating_sub(now)).max(1)),
        };
    }
    let current = now / slot;
    match slots.back_mut() {
        Some(s) if s.0 == current => s.1 += 1,
        _ => slots.push_back((current, 1)),
    }
    RateStatus {
        limit: limit.requests,
        remaining: limit.requests - count - 1,
        reset_secs: secs_up(free_at(current).saturating_sub(now)),
        retry_after_secs: None,
    }
}

/// This replica's windows, by limit and then bucket (a changed limit starts a new window). Two
/// levels, like the token buckets, so a decision on a known bucket looks it up by `&str` and
/// allocates nothing; only a bucket's first request copies its name.
pub struct Windows {
    states: DashMap<Limit, DashMap<BucketKey, VecDeque<(u64, u64)>>>,
    started: Instant,
}

impl Default for Windows {
    fn default() -> Self {
        Self {
            states: DashMap::new(),
            started: Instant::now(),
        }
    }
}

impl Windows {
    fn now_us(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    pub fn check(&self, bucket: &BucketKey, limit: Limit) -> RateStatus {
        let now = self.now_us();
        let buckets = match self.states.get(&limit) {
            Some(buckets) => buckets,
            None => self.states.entry(limit).or_default().downgrade(),
        };
        if let Some(mut slots) = buckets.get_mut(bucket) {
            return decide(&mut slots, now, &limit);
        }
        let mut slots = buckets.entry(bucket.clone()).or_default();
        decide(&mut slots, now, &limit)
    }

    /// Forgets windows with nothing left in them.
    pub fn retain_recent(&self) {
        let now = self.now_us();
        self.states.retain(|limit, buckets| {
            let (window, slot) = spans_us(limit);
            buckets.retain(|_, slots| {
                slots
                    .back()
                    .is_some_and(|s| (s.0 + 1) * slot + window > now)
            });
            !buckets.is_empty()
        });
    }
}

const WINDOW: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local window = tonumber(ARGV[1])
local slot = tonumber(ARGV[2])
local limit = tonumber(ARGV[3])
local lowest = math.floor((now - window) / slot)
local raw = redis.call('HGETALL', KEYS[1])
local slots = {}
local count = 0
for i = 1, #raw, 2 do
  local j = tonumber(raw[i])
  local c = tonumber(raw[i + 1])
  if j < lowest then
    redis.call('HDEL', KEYS[1], raw[i])
  else
    slots[#slots + 1] = {j, c}
    count = count + c
  end
end
if count >= limit then
  table.sort(slots, function(a, b) return a[1] < b[1] end)
  local newest = slots[#slots][1]
  local retry = (newest + 1) * slot + window - now
  local left = count
  for _, s in ipairs(slots) do
    left = left - s[2]
    if left < limit then
      retry = (s[1] + 1) * slot + window - now
      break
    end
  end
  return {0, 0, (newest + 1) * slot + window - now, retry}
end
local current = math.floor(now / slot)
redis.call('HINCRBY', KEYS[1], string.format('%.0f', current), 1)
redis.call('PEXPIRE', KEYS[1], math.ceil((window + slot) / 1000) + 1)
return {1, limit - count - 1, (current + 1) * slot + window - now, 0}
"#;

/// The global windows, on the store's Redis connection (a bucket's window is one key, so one
/// cluster slot).
pub struct RedisWindows {
    conn: RedisConn,
    script: Script,
}

impl RedisWindows {
    pub fn new(conn: RedisConn) -> Self {
        Self {
            conn,
            script: Script::new(WINDOW),
        }
    }

    pub async fn check(&self, bucket: &str, limit: Limit) -> Result<RateStatus, String> {
        let (window, slot) = spans_us(&limit);
        let key = format!("kg:rlw:{{{bucket}}}:{window}:{}", limit.requests);
        let mut conn = self.conn.clone();
        let (allowed, remaining, free_us, retry_us): (i64, i64, i64, i64) = self
            .script
            .key(key)
            .arg(window)
            .arg(slot)
            .arg(limit.requests)
            .invoke_async(&mut conn)
            .await
            .map_err(|e| e.to_string())?;
        let secs_up = |us: i64| u64::try_from(us.max(0)).unwrap_or(0).div_ceil(1_000_000);
        Ok(RateStatus {
            limit: limit.requests,
            remaining: u64::try_from(remaining.max(0)).unwrap_or(0),
            reset_secs: secs_up(free_us),
            retry_after_secs: (allowed == 0).then(|| secs_up(retry_us).max(1)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::Algorithm;
    use super::*;

    fn ten_per_minute() -> Limit {
        Limit {
            requests: 10,
            per_seconds: 60,
            burst: 10,
            algorithm: Algorithm::SlidingWindow,
        }
    }

    const SEC: u64 = 1_000_000;

    #[test]
    fn never_more_than_the_limit_in_any_window_span() {
        let limit = ten_per_minute();
        let mut slots = VecDeque::new();
        // One attempt every 250 ms for five minutes, starting mid-slot.
        let mut admitted = Vec::new();
        let mut now = 100 * SEC + 123_456;
        for _ in 0..1200 {
            if decide(&mut slots, now, &limit).allowed() {
                admitted.push(now);
            }
            now += SEC / 4;
        }
        for (i, &t) in admitted.iter().enumerate() {
            let in_span = admitted[i..].iter().filter(|&&u| u < t + 60 * SEC).count();
            assert!(in_span <= 10, "{in_span} admitted in the 60 s from {t}");
        }
        // It errs on refusing by at most a slot: about 10 per 61 s over five minutes.
        assert!(admitted.len() >= 48, "only {} admitted", admitted.len());
    }

    #[test]
    fn a_burst_then_retry_after_names_when_the_oldest_slot_leaves() {
        let limit = ten_per_minute();
        let mut slots = VecDeque::new();
        let start = 10 * SEC;
        for i in 0..10 {
            let s = decide(&mut slots, start + i * 1000, &limit);
            assert!(s.allowed());
            assert_eq!(s.remaining, 9 - i);
            assert_eq!(s.limit, 10);
        }
        let refused = decide(&mut slots, start + 30 * SEC, &limit);
        assert_eq!(refused.remaining, 0);
        // The burst's slot [10 s, 11 s) leaves the window at 71 s: 31 s after 40 s.
        assert_eq!(refused.retry_after_secs, Some(31));
        assert!(!decide(&mut slots, start + 60 * SEC, &limit).allowed());
        assert!(decide(&mut slots, start + 61 * SEC, &limit).allowed());
    }
}
