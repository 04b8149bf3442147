//! Writes that create a record with its indexes, all or nothing.
//!
//! A new key touches five Redis keys (the global index, the account's index, the record, the
//! hash pointer, the sequence) and a new user as many. Written one command at a time, a failure
//! half-way (a timeout, an out-of-memory refusal, a key of the wrong type) left the first ones
//! behind: a key that works but is in no list, or an email claimed by no user.
//!
//! A write is a [`Plan`]: steps, each on keys of one cluster hash slot, each a list of [`Op`]s
//! run by one Lua script that makes every check (existence, and the type of every key it will
//! write) before its first write. Redis never rolls a script back, so checking first is what
//! makes a script all or nothing: past its checks, no write can fail.
//!
//! - Plain Redis: the whole plan is one script, atomic.
//! - Redis Cluster: a script may not span slots, so the steps run one after the other, in the
//!   order the plan lists them; a step that fails undoes the steps before it. The order is
//!   chosen so that what a step leaves behind is harmless even if the undo cannot run (keygate
//!   killed, Redis unreachable between two steps): index entries first (a list skips an id
//!   without a record), then the record, and last the pointer that makes the record reachable
//!   (the key hash, the email). A key therefore never works without being listed; the worst
//!   leftover is a listed key that never authenticates (or a user that cannot log in), which
//!   an operator can see and remove. The sequence number a failed write took stays spent.

use ::redis::Script;
use std::sync::LazyLock;

use super::{unavailable, RedisConn};
use crate::store::StoreResult;

/// Runs a list of ops: every check first, then every write. ARGV: op name, key index (into
/// KEYS), argument count, the arguments; repeated. Returns 'ok', or the label of the first
/// check that failed (nothing written). A key of the wrong type is an error reply.
const RUN_OPS: &str = r#"
local KINDS = {hset = 'hash', zadd = 'zset', set = 'string'}
local ops = {}
local i = 1
while i <= #ARGV do
  local n = tonumber(ARGV[i + 2])
  ops[#ops + 1] = {ARGV[i], KEYS[tonumber(ARGV[i + 1])], {unpack(ARGV, i + 3, i + 2 + n)}}
  i = i + 3 + n
end
for _, op in ipairs(ops) do
  local name, key, args = op[1], op[2], op[3]
  if name == 'exists' then
    if redis.call('EXISTS', key) == 0 then return args[1] end
  elseif name == 'absent' then
    if redis.call('EXISTS', key) == 1 then return args[1] end
  elseif KINDS[name] then
    local kind = redis.call('TYPE', key)['ok']
    if kind ~= 'none' and kind ~= KINDS[name] then
      return redis.error_reply('WRONGTYPE ' .. key .. ' holds a ' .. kind .. ', not a ' .. KINDS[name])
    end
  end
end
for _, op in ipairs(ops) do
  local name, key, args = op[1], op[2], op[3]
  if name == 'hset' then redis.call('HSET', key, unpack(args))
  elseif name == 'zadd' then redis.call('ZADD', key, args[1], args[2])
  elseif name == 'set' then redis.call('SET', key, args[1])
  elseif name == 'del' then redis.call('DEL', key)
  elseif name == 'zrem' then redis.call('ZREM', key, args[1]) end
end
return 'ok'
"#;

static RUN_OPS_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(RUN_OPS));

/// One check or write on one Redis key.
#[derive(Debug, Clone)]
pub(super) struct Op {
    name: &'static str,
    key: String,
    args: Vec<String>,
}

impl Op {
    /// Check: the key exists, else the plan stops with `label`.
    pub fn exists(key: String, label: &'static str) -> Self {
        Self::new("exists", key, vec![label.to_string()])
    }
    /// Check: the key does not exist, else the plan stops with `label`. Every key a plan
    /// creates (`hset`, `set`) must be checked absent: undoing it deletes it.
    pub fn absent(key: String, label: &'static str) -> Self {
        Self::new("absent", key, vec![label.to_string()])
    }
    pub fn hset(key: String, fields: &[(&str, String)]) -> Self {
        let args = fields
            .iter()
            .flat_map(|(f, v)| [f.to_string(), v.clone()])
            .collect();
        Self::new("hset", key, args)
    }
    pub fn zadd(key: String, score: i64, member: &str) -> Self {
        Self::new("zadd", key, vec![score.to_string(), member.to_string()])
    }
    pub fn set(key: String, value: &str) -> Self {
        Self::new("set", key, vec![value.to_string()])
    }

    fn new(name: &'static str, key: String, args: Vec<String>) -> Self {
        Self { name, key, args }
    }

    fn is_check(&self) -> bool {
        matches!(self.name, "exists" | "absent")
    }

    /// What takes this write back (checks need none).
    fn undo(&self) -> Option<Op> {
        match self.name {
            "hset" | "set" => Some(Self::new("del", self.key.clone(), Vec::new())),
            "zadd" => Some(Self::new(
                "zrem",
                self.key.clone(),
                self.args.get(1).cloned().into_iter().collect(),
            )),
            _ => None,
        }
    }
}

/// The steps of one write; the ops of a step share a hash slot (see the module doc for why the
/// order of the steps matters).
#[derive(Debug, Default)]
pub(super) struct Plan {
    steps: Vec<Vec<Op>>,
}

/// How a plan ended.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Outcome {
    Done,
    /// A check failed (its label); nothing is left written.
    Refused(String),
}

impl Plan {
    /// Adds a step: ops on keys of one hash slot.
    pub fn step(mut self, ops: Vec<Op>) -> Self {
        self.steps.push(ops);
        self
    }

    pub async fn run(self, conn: &RedisConn) -> StoreResult<Outcome> {
        if !conn.is_cluster() {
            let all: Vec<Op> = self.steps.into_iter().flatten().collect();
            return run_ops(conn, &all).await;
        }
        // Every step's checks first, before anything is written: the usual refusals (a taken
        // email, a missing account) then cost no write and no undo. The steps check again as
        // they write, since another writer may have come in between.
        for step in &self.steps {
            let checks: Vec<Op> = step.iter().filter(|o| o.is_check()).cloned().collect();
            if let outcome @ Outcome::Refused(_) = run_ops(conn, &checks).await? {
                return Ok(outcome);
            }
        }
        for (done, step) in self.steps.iter().enumerate() {
            let result = run_ops(conn, step).await;
            if !matches!(result, Ok(Outcome::Done)) {
                undo(conn, &self.steps[..done]).await;
                return result;
            }
        }
        Ok(Outcome::Done)
    }
}

/// Takes back the writes of `steps`, last first. Best effort: if Redis cannot be reached now,
/// what stays is what the step order makes harmless.
async fn undo(conn: &RedisConn, steps: &[Vec<Op>]) {
    for step in steps.iter().rev() {
        let ops: Vec<Op> = step.iter().rev().filter_map(Op::undo).collect();
        if let Err(e) = run_ops(conn, &ops).await {
            tracing::warn!(error = %e, "could not undo part of a failed Redis write");
        }
    }
}

/// One [`RUN_OPS`] script over `ops`.
async fn run_ops(conn: &RedisConn, ops: &[Op]) -> StoreResult<Outcome> {
    if ops.is_empty() {
        return Ok(Outcome::Done);
    }
    let mut invocation = RUN_OPS_SCRIPT.prepare_invoke();
    let mut keys: Vec<&str> = Vec::new();
    for op in ops {
        let index = match keys.iter().position(|k| *k == op.key) {
            Some(i) => i,
            None => {
                keys.push(&op.key);
                invocation.key(&op.key);
                keys.len() - 1
            }
        };
        invocation
            .arg(op.name)
            .arg(index + 1)
            .arg(op.args.len())
            .arg(&op.args);
    }
    let reply: String = invocation
        .invoke_async(&mut conn.clone())
        .await
        .map_err(unavailable)?;
    Ok(if reply == "ok" {
        Outcome::Done
    } else {
        Outcome::Refused(reply)
    })
}
