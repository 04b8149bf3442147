//! The shared store: Redis or Redis Cluster, for many keygate replicas.
//!
//! Layout (every name starts with `kg:`; the part in braces is the cluster hash tag, so an
//! account's hash and its key index share a slot, and each key lives in its own slot):
//! - `kg:{acc_..}:a`     hash: id, name, status, created_at, plan (absent = none), credits,
//!   ledger_seq (the last ledger entry id), metadata (a JSON object; absent = `{}`)
//! - `kg:{acc_..}:keys`  sorted set of the account's key ids, scored by creation sequence
//! - `kg:{acc_..}:ledger` list of JSON ledger entries, oldest first; entry `n` has id `n + 1`
//! - `kg:{key_..}:k`     hash: the key record fields (scopes, rate_limit, resources and
//!   metadata as JSON; metadata absent = `{}`)
//! - `kg:h:<hex hash>`   string: the key id for a key hash (the request path's entry point)
//! - `kg:{usr_..}:u`     hash: id, account_id, email, password_hash, role, status, created_at
//! - `kg:{acc_..}:users` sorted set of the account's user ids, scored by creation sequence
//! - `kg:email:<hex of the lower-cased email>` string: the user id (written only where absent,
//!   so an email is taken once)
//! - `kg:accounts`, `kg:keys`, `kg:users`  sorted sets of all ids, scored by a global sequence
//!   `kg:seq`
//! - `kg:token_cutoffs`  hash: token subject -> cut-off time, decimal seconds with three
//!   fraction digits (`1700000000.123`); a whole number, as versions before milliseconds wrote
//!   it, is the end of that second (one key, so cluster-safe)
//! - `kg:audit`          list of JSON entries (newest first), ids from `kg:audit:seq`
//!
//! Multi-field changes that must not race run as Lua scripts on one slot (status changes, the
//! revoked-key check, last-used that never moves backwards, every credit change with its ledger
//! entry). Creations (an account, a key, a user: a record with its indexes and pointers) are
//! all or nothing, one script on plain Redis and one per slot on a cluster ([`plan`]). The
//! connection is a [`RedisConn`]: multiplexed, shared by every request, every
//! command bounded by the configured timeout.

use std::collections::HashMap;
use std::sync::LazyLock;
use std::time::Duration;

use ::redis::{AsyncCommands, Script};
use async_trait::async_trait;

use super::{
    below_zero, check_balance, check_charge, check_delta, ledger_after, normalize_email, now,
    over_max, Account, AccountStatus, Audit, AuditEntry, ChargeOutcome, Credential,
    CredentialReads, Credits, Deserialize, Directory, KeyHash, KeyPatch, KeyRecord, KeyStatus,
    LedgerEntry, Metadata, NewAccount, NewAudit, NewKey, NewUser, Page, RateLimit, Resources,
    Serialize, StoreError, StoreResult, User, UserPatch, MAX_CREDITS,
};
use crate::keys::new_id;
use crate::redis_conn::RedisConn;
use plan::{Op, Outcome, Plan};

mod import;
mod plan;

#[derive(Clone)]
pub struct RedisStore {
    conn: RedisConn,
}

/// A record keygate cannot (de)serialize: a fault, reported like an unreachable store (503).
fn corrupt(e: serde_json::Error) -> StoreError {
    StoreError::Unavailable(format!("malformed record: {e}"))
}

fn unavailable(e: ::redis::RedisError) -> StoreError {
    if e.is_timeout() {
        StoreError::TimedOut
    } else {
        StoreError::Unavailable(e.to_string())
    }
}

fn account_key(id: &str) -> String {
    format!("kg:{{{id}}}:a")
}
fn account_keys_key(id: &str) -> String {
    format!("kg:{{{id}}}:keys")
}
fn ledger_key(id: &str) -> String {
    format!("kg:{{{id}}}:ledger")
}
fn key_key(id: &str) -> String {
    format!("kg:{{{id}}}:k")
}
fn hash_key(hash: &KeyHash) -> String {
    format!("kg:h:{}", hex::encode(hash))
}
fn user_key(id: &str) -> String {
    format!("kg:{{{id}}}:u")
}
fn account_users_key(id: &str) -> String {
    format!("kg:{{{id}}}:users")
}
/// Hex, so no email character can form a hash tag or an odd key name.
fn email_key(normalized: &str) -> String {
    format!("kg:email:{}", hex::encode(normalized))
}
const TOKEN_CUTOFFS: &str = "kg:token_cutoffs";

/// Why a [`Plan`] stopped before writing; [`refused`] maps each to its error.
const NO_ACCOUNT: &str = "no_account";
const HASH_TAKEN: &str = "hash_taken";
const EMAIL_TAKEN: &str = "email_taken";
const ID_TAKEN: &str = "id_taken";

fn refused(outcome: Outcome) -> StoreResult<()> {
    match outcome {
        Outcome::Done => Ok(()),
        Outcome::Refused(label) => Err(match label.as_str() {
            NO_ACCOUNT => StoreError::NotFound("account"),
            HASH_TAKEN => StoreError::Conflict("a key with this hash exists".into()),
            EMAIL_TAKEN => StoreError::Conflict("a user with this email exists".into()),
            // A fresh random id that exists already: not expected, and not the caller's doing.
            _ => StoreError::Unavailable(format!("write refused: {label}")),
        }),
    }
}

/// Sets `status` only if the account exists. Returns 0 when it does not.
const SET_ACCOUNT_STATUS: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'status', ARGV[1])
return 1
"#;

/// KEYS: the account hash. ARGV: the metadata (a JSON object). 0 if the account is missing.
const SET_ACCOUNT_METADATA: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'metadata', ARGV[1])
return 1
"#;

/// Sets or clears (ARGV[1] = '0') the plan, only if the account exists. Returns 0 when it does not.
const SET_ACCOUNT_PLAN: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
if ARGV[1] == '1' then redis.call('HSET', KEYS[1], 'plan', ARGV[2])
else redis.call('HDEL', KEYS[1], 'plan') end
return 1
"#;

/// Appends a ledger entry (the JSON is built here because its id and balance are only known
/// here; string pieces come JSON-encoded from Rust, numbers are integers within 2^53).
/// KEYS: account hash, ledger list. ARGV: the value (a delta or a balance), reason (JSON),
/// key id (JSON), time, account id (JSON), the maximum balance.
const LEDGER_APPEND: &str = r#"
local function append(delta, balance)
  local id = redis.call('HINCRBY', KEYS[1], 'ledger_seq', 1)
  local entry = '{"id":' .. string.format('%d', id)
    .. ',"account_id":' .. ARGV[5]
    .. ',"delta":' .. string.format('%d', delta)
    .. ',"reason":' .. ARGV[2]
    .. ',"key_id":' .. ARGV[3]
    .. ',"at":' .. ARGV[4]
    .. ',"balance_after":' .. string.format('%d', balance) .. '}'
  redis.call('RPUSH', KEYS[2], entry)
end
"#;

/// Adds ARGV[1], a signed delta (a charge is negative). Returns {0, 0} missing, {2, balance}
/// when the balance would go below zero (nothing changed), {3, balance} when it would pass
/// ARGV[6] (the maximum), {1, new balance} when applied.
const CHANGE_CREDITS: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 0 then return {0, 0} end
local balance = tonumber(redis.call('HGET', KEYS[1], 'credits') or '0')
local delta = tonumber(ARGV[1])
local new = balance + delta
if new < 0 then return {2, balance} end
if new > tonumber(ARGV[6]) then return {3, balance} end
redis.call('HSET', KEYS[1], 'credits', string.format('%d', new))
append(delta, new)
return {1, new}
"#;

/// Sets the balance to ARGV[1]; returns {0, 0} missing, {1, balance}. No entry when unchanged.
const SET_CREDITS: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 0 then return {0, 0} end
local balance = tonumber(redis.call('HGET', KEYS[1], 'credits') or '0')
local new = tonumber(ARGV[1])
if new ~= balance then
  redis.call('HSET', KEYS[1], 'credits', ARGV[1])
  append(new - balance, new)
end
return {1, new}
"#;

/// The credit scripts, hashed once (a charge runs on the request path).
static CHANGE_CREDITS_SCRIPT: LazyLock<Script> =
    LazyLock::new(|| Script::new(&format!("{LEDGER_APPEND}\n{CHANGE_CREDITS}")));
static SET_CREDITS_SCRIPT: LazyLock<Script> =
    LazyLock::new(|| Script::new(&format!("{LEDGER_APPEND}\n{SET_CREDITS}")));

/// Applies a key patch; refuses to bring a revoked key back. Returns 0 missing, -1 conflict, 1 ok.
/// ARGV: name, status, scopes, expires_at, rate_limit, resources, metadata ('' = leave; for
/// expires_at, rate_limit, resources and metadata '-' = clear).
const UPDATE_KEY: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local status = redis.call('HGET', KEYS[1], 'status')
if status == 'revoked' and ARGV[2] ~= '' and ARGV[2] ~= 'revoked' then return -1 end
if ARGV[1] ~= '' then redis.call('HSET', KEYS[1], 'name', ARGV[1]) end
if ARGV[2] ~= '' then redis.call('HSET', KEYS[1], 'status', ARGV[2]) end
if ARGV[3] ~= '' then redis.call('HSET', KEYS[1], 'scopes', ARGV[3]) end
if ARGV[4] == '-' then redis.call('HDEL', KEYS[1], 'expires_at')
elseif ARGV[4] ~= '' then redis.call('HSET', KEYS[1], 'expires_at', ARGV[4]) end
if ARGV[5] == '-' then redis.call('HDEL', KEYS[1], 'rate_limit')
elseif ARGV[5] ~= '' then redis.call('HSET', KEYS[1], 'rate_limit', ARGV[5]) end
if ARGV[6] == '-' then redis.call('HDEL', KEYS[1], 'resources')
elseif ARGV[6] ~= '' then redis.call('HSET', KEYS[1], 'resources', ARGV[6]) end
if ARGV[7] == '-' then redis.call('HDEL', KEYS[1], 'metadata')
elseif ARGV[7] ~= '' then redis.call('HSET', KEYS[1], 'metadata', ARGV[7]) end
return 1
"#;

/// The old key's side of a rotation: refuses a revoked key, and moves the expiry to the earlier
/// of its own and ARGV[1] ('' = leave it). Returns 0 missing, -1 revoked, 1 ok.
const ROTATE_OLD_KEY: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
if redis.call('HGET', KEYS[1], 'status') == 'revoked' then return -1 end
if ARGV[1] ~= '' then
  local cur = redis.call('HGET', KEYS[1], 'expires_at')
  if not cur or tonumber(ARGV[1]) < tonumber(cur) then
    redis.call('HSET', KEYS[1], 'expires_at', ARGV[1])
  end
end
return 1
"#;

/// Applies a user patch. ARGV: role, status, password_hash ('' = leave). Returns 0 missing, 1 ok.
const UPDATE_USER: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
if ARGV[1] ~= '' then redis.call('HSET', KEYS[1], 'role', ARGV[1]) end
if ARGV[2] ~= '' then redis.call('HSET', KEYS[1], 'status', ARGV[2]) end
if ARGV[3] ~= '' then redis.call('HSET', KEYS[1], 'password_hash', ARGV[3]) end
return 1
"#;

/// Keeps the later of the stored cut-off and ARGV[2] for subject ARGV[1].
/// A cut-off only moves later. A whole-second value (no `.`, from a version before
/// milliseconds) counts as the end of its second, as [`crate::tokens::cutoffs::parse_text`]
/// reads it, so a millisecond cut inside that second does not shorten it.
const SET_TOKEN_CUTOFF: &str = r#"
local function at(v)
  local n = tonumber(v)
  if n and not string.find(v, '.', 1, true) then n = n + 0.999 end
  return n
end
local cur = redis.call('HGET', KEYS[1], ARGV[1])
local cur_at = cur and at(cur)
if not cur_at or at(ARGV[2]) > cur_at then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
end
return 1
"#;

/// Last-used never moves backwards.
const TOUCH_KEY: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local cur = tonumber(redis.call('HGET', KEYS[1], 'last_used_at') or '0')
if tonumber(ARGV[1]) > cur then redis.call('HSET', KEYS[1], 'last_used_at', ARGV[1]) end
return 1
"#;

impl RedisStore {
    /// Plain Redis at `url` (`redis://host:port/db`); every call bounded by `timeout`.
    pub async fn connect(url: &str, timeout: Duration) -> StoreResult<Self> {
        Ok(Self::new(
            RedisConn::connect(url, timeout)
                .await
                .map_err(unavailable)?,
        ))
    }

    /// Redis Cluster from a list of seed nodes; every call bounded by `timeout`.
    pub async fn connect_cluster(nodes: &[String], timeout: Duration) -> StoreResult<Self> {
        Ok(Self::new(
            RedisConn::connect_cluster(nodes, timeout)
                .await
                .map_err(unavailable)?,
        ))
    }

    /// On a connection shared with the rate limiter and the invalidation publisher.
    pub fn new(conn: RedisConn) -> Self {
        Self { conn }
    }

    fn conn(&self) -> RedisConn {
        self.conn.clone()
    }

    async fn next_seq(&self) -> StoreResult<i64> {
        self.conn().incr("kg:seq", 1).await.map_err(unavailable)
    }

    /// The account as it is after a script that answered whether it found it (1) or not (0).
    async fn account_if_found(&self, id: &str, found: i64) -> StoreResult<Account> {
        if found == 0 {
            return Err(StoreError::NotFound("account"));
        }
        self.read_account(id)
            .await?
            .ok_or(StoreError::NotFound("account"))
    }

    async fn read_account(&self, id: &str) -> StoreResult<Option<Account>> {
        let map: HashMap<String, String> = self
            .conn()
            .hgetall(account_key(id))
            .await
            .map_err(unavailable)?;
        Ok(account_from(&map))
    }

    async fn read_key(&self, id: &str) -> StoreResult<Option<KeyRecord>> {
        let map: HashMap<String, String> = self
            .conn()
            .hgetall(key_key(id))
            .await
            .map_err(unavailable)?;
        Ok(key_from(&map))
    }

    /// The user and its password hash.
    async fn read_user(&self, id: &str) -> StoreResult<Option<(User, String)>> {
        let map: HashMap<String, String> = self
            .conn()
            .hgetall(user_key(id))
            .await
            .map_err(unavailable)?;
        Ok(user_from(&map))
    }

    /// Writes a new user with its indexes and claims its email, all or nothing
    /// ([`plan`]): NotFound("account") if the account is missing, Conflict if the email is
    /// taken.
    async fn write_new_user(&self, user: &User, password_hash: String) -> StoreResult<()> {
        let fields = [
            ("id", user.id.clone()),
            ("account_id", user.account_id.clone()),
            ("email", user.email.clone()),
            ("password_hash", password_hash),
            ("role", enum_str(&user.role)),
            ("status", enum_str(&user.status)),
            ("created_at", user.created_at.to_string()),
        ];
        let seq = self.next_seq().await?;
        let record = user_key(&user.id);
        let email = email_key(&user.email);
        let outcome = Plan::default()
            .step(vec![Op::zadd("kg:users".into(), seq, &user.id)])
            .step(vec![
                Op::exists(account_key(&user.account_id), NO_ACCOUNT),
                Op::zadd(account_users_key(&user.account_id), seq, &user.id),
            ])
            .step(vec![
                Op::absent(record.clone(), ID_TAKEN),
                Op::hset(record, &fields),
            ])
            .step(vec![
                Op::absent(email.clone(), EMAIL_TAKEN),
                Op::set(email, &user.id),
            ])
            .run(&self.conn)
            .await?;
        refused(outcome)
    }

    /// Writes a new key record with its indexes and claims its hash, all or nothing
    /// ([`plan`]): NotFound("account") if the account is missing, Conflict if a key has the
    /// same hash.
    async fn write_new_key(&self, key: &KeyRecord) -> StoreResult<()> {
        let mut fields = vec![
            ("id", key.id.clone()),
            ("account_id", key.account_id.clone()),
            ("name", key.name.clone()),
            ("display_prefix", key.display_prefix.clone()),
            ("hash", hex::encode(key.hash)),
            ("scopes", json(&key.scopes)?),
            ("permission", enum_str(&key.permission)),
            ("status", enum_str(&key.status)),
            ("created_at", key.created_at.to_string()),
        ];
        if let Some(u) = &key.user_id {
            fields.push(("user_id", u.clone()));
        }
        if let Some(e) = key.expires_at {
            fields.push(("expires_at", e.to_string()));
        }
        if let Some(l) = &key.rate_limit {
            fields.push(("rate_limit", json(l)?));
        }
        if let Some(r) = &key.resources {
            fields.push(("resources", json(r)?));
        }
        if let Some(from) = &key.rotated_from {
            fields.push(("rotated_from", from.clone()));
        }
        // Absent when empty: most keys have none.
        if !key.metadata.is_empty() {
            fields.push(("metadata", json(&key.metadata)?));
        }
        let seq = self.next_seq().await?;
        let record = key_key(&key.id);
        let pointer = hash_key(&key.hash);
        let outcome = Plan::default()
            .step(vec![Op::zadd("kg:keys".into(), seq, &key.id)])
            .step(vec![
                Op::exists(account_key(&key.account_id), NO_ACCOUNT),
                Op::zadd(account_keys_key(&key.account_id), seq, &key.id),
            ])
            .step(vec![
                Op::absent(record.clone(), ID_TAKEN),
                Op::hset(record, &fields),
            ])
            .step(vec![
                Op::absent(pointer.clone(), HASH_TAKEN),
                Op::set(pointer, &key.id),
            ])
            .run(&self.conn)
            .await?;
        refused(outcome)
    }

    /// Runs a credit script (see [`LEDGER_APPEND`] for its arguments): (outcome code, balance).
    async fn credits_script(
        &self,
        script: &Script,
        account_id: &str,
        value: i64,
        key_id: Option<&str>,
        reason: &str,
    ) -> StoreResult<(i64, i64)> {
        script
            .key(account_key(account_id))
            .key(ledger_key(account_id))
            .arg(value.to_string())
            .arg(json(&reason)?)
            .arg(json(&key_id)?)
            .arg(now().to_string())
            .arg(json(&account_id)?)
            .arg(MAX_CREDITS.to_string())
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)
    }

    /// Ids from a sorted set, in creation order, after `page.after`.
    async fn page_ids(&self, set: &str, page: &Page) -> StoreResult<Vec<String>> {
        let min = match &page.after {
            Some(after) => {
                let score: Option<f64> =
                    self.conn().zscore(set, after).await.map_err(unavailable)?;
                match score {
                    Some(s) => format!("({s}"),
                    None => "-inf".to_string(),
                }
            }
            None => "-inf".to_string(),
        };
        ::redis::cmd("ZRANGEBYSCORE")
            .arg(set)
            .arg(min)
            .arg("+inf")
            .arg("LIMIT")
            .arg(0)
            .arg(page.limit())
            .query_async(&mut self.conn())
            .await
            .map_err(unavailable)
    }
}

fn json<T: Serialize + ?Sized>(v: &T) -> StoreResult<String> {
    serde_json::to_string(v).map_err(corrupt)
}

fn enum_str<T: Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

fn parse_enum<T: for<'de> Deserialize<'de>>(s: &str) -> Option<T> {
    serde_json::from_value(serde_json::Value::String(s.to_string())).ok()
}

fn account_from(map: &HashMap<String, String>) -> Option<Account> {
    Some(Account {
        id: map.get("id")?.clone(),
        name: map.get("name")?.clone(),
        status: parse_enum(map.get("status")?)?,
        created_at: map.get("created_at")?.parse().ok()?,
        plan: map.get("plan").filter(|p| !p.is_empty()).cloned(),
        // Accounts written before credits existed have none.
        credits: match map.get("credits") {
            Some(c) => c.parse().ok()?,
            None => 0,
        },
        // And before metadata, none.
        metadata: match map.get("metadata") {
            Some(m) => serde_json::from_str(m).ok()?,
            None => Metadata::new(),
        },
    })
}

fn key_from(map: &HashMap<String, String>) -> Option<KeyRecord> {
    let hash: KeyHash = hex::decode(map.get("hash")?).ok()?.try_into().ok()?;
    Some(KeyRecord {
        id: map.get("id")?.clone(),
        account_id: map.get("account_id")?.clone(),
        user_id: map.get("user_id").filter(|s| !s.is_empty()).cloned(),
        name: map.get("name")?.clone(),
        display_prefix: map.get("display_prefix")?.clone(),
        hash,
        scopes: serde_json::from_str(map.get("scopes")?).ok()?,
        permission: parse_enum(map.get("permission")?)?,
        status: parse_enum(map.get("status")?)?,
        created_at: map.get("created_at")?.parse().ok()?,
        expires_at: map.get("expires_at").and_then(|s| s.parse().ok()),
        last_used_at: map.get("last_used_at").and_then(|s| s.parse().ok()),
        rate_limit: match map.get("rate_limit") {
            Some(json) => Some(serde_json::from_str::<RateLimit>(json).ok()?),
            None => None,
        },
        resources: match map.get("resources") {
            Some(json) => Some(serde_json::from_str::<Resources>(json).ok()?),
            None => None,
        },
        rotated_from: map.get("rotated_from").filter(|s| !s.is_empty()).cloned(),
        metadata: match map.get("metadata") {
            Some(json) => serde_json::from_str(json).ok()?,
            None => Metadata::new(),
        },
    })
}

fn user_from(map: &HashMap<String, String>) -> Option<(User, String)> {
    Some((
        User {
            id: map.get("id")?.clone(),
            account_id: map.get("account_id")?.clone(),
            email: map.get("email")?.clone(),
            role: parse_enum(map.get("role")?)?,
            status: parse_enum(map.get("status")?)?,
            created_at: map.get("created_at")?.parse().ok()?,
        },
        map.get("password_hash")?.clone(),
    ))
}

#[async_trait]
impl CredentialReads for RedisStore {
    async fn set_token_cutoff(&self, subject: &str, at: i64) -> StoreResult<()> {
        let _: i64 = Script::new(SET_TOKEN_CUTOFF)
            .key(TOKEN_CUTOFFS)
            .arg(subject)
            .arg(crate::tokens::cutoffs::to_text(at))
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn token_cutoffs(&self, since: i64) -> StoreResult<Vec<(String, i64)>> {
        let all: HashMap<String, String> = self
            .conn()
            .hgetall(TOKEN_CUTOFFS)
            .await
            .map_err(unavailable)?;
        let mut out: Vec<(String, i64)> = all
            .into_iter()
            .filter_map(|(subject, at)| {
                crate::tokens::cutoffs::parse_text(&at).map(|at| (subject, at))
            })
            .filter(|(_, at)| *at >= since)
            .collect();
        out.sort_by(|a, b| a.1.cmp(&b.1).then_with(|| a.0.cmp(&b.0)));
        Ok(out)
    }

    async fn find_credential(&self, hash: &KeyHash) -> StoreResult<Option<Credential>> {
        let id: Option<String> = self.conn().get(hash_key(hash)).await.map_err(unavailable)?;
        let Some(id) = id else { return Ok(None) };
        let Some(key) = self.read_key(&id).await? else {
            return Ok(None);
        };
        let Some(account) = self.read_account(&key.account_id).await? else {
            return Ok(None);
        };
        let user = match &key.user_id {
            Some(u) => self.read_user(u).await?.map(|(user, _)| user),
            None => None,
        };
        Ok(Some(Credential { key, account, user }))
    }
}

#[async_trait]
impl Credits for RedisStore {
    async fn charge_credits(
        &self,
        account_id: &str,
        amount: i64,
        key_id: Option<&str>,
        reason: &str,
    ) -> StoreResult<ChargeOutcome> {
        check_charge(amount)?;
        // Clamped: an amount past any balance is short either way, and the script's arithmetic
        // stays within 2^53.
        let delta = -amount.min(MAX_CREDITS + 1);
        let (code, balance) = self
            .credits_script(&CHANGE_CREDITS_SCRIPT, account_id, delta, key_id, reason)
            .await?;
        match code {
            0 => Err(StoreError::NotFound("account")),
            1 => Ok(ChargeOutcome::Charged { balance }),
            _ => Ok(ChargeOutcome::Insufficient { balance }),
        }
    }

    async fn adjust_credits(
        &self,
        account_id: &str,
        delta: i64,
        key_id: Option<&str>,
        reason: &str,
    ) -> StoreResult<i64> {
        check_delta(delta)?;
        let (code, balance) = self
            .credits_script(&CHANGE_CREDITS_SCRIPT, account_id, delta, key_id, reason)
            .await?;
        match code {
            0 => Err(StoreError::NotFound("account")),
            1 => Ok(balance),
            2 => Err(below_zero()),
            _ => Err(over_max()),
        }
    }

    async fn set_credits(&self, account_id: &str, balance: i64, reason: &str) -> StoreResult<i64> {
        check_balance(balance)?;
        let (code, balance) = self
            .credits_script(&SET_CREDITS_SCRIPT, account_id, balance, None, reason)
            .await?;
        match code {
            0 => Err(StoreError::NotFound("account")),
            _ => Ok(balance),
        }
    }

    async fn list_ledger(&self, account_id: &str, page: &Page) -> StoreResult<Vec<LedgerEntry>> {
        let after = ledger_after(page)?;
        if self.read_account(account_id).await?.is_none() {
            return Err(StoreError::NotFound("account"));
        }
        // Entry `n` of the list has id `n + 1` (ids and appends happen in one script, and the
        // list is never trimmed), so the page after id `a` starts at index `a`.
        let limit = i64::from(page.limit());
        let start = isize::try_from(after.max(0)).unwrap_or(isize::MAX);
        let stop = isize::try_from(after.max(0).saturating_add(limit - 1)).unwrap_or(isize::MAX);
        let raw: Vec<String> = self
            .conn()
            .lrange(ledger_key(account_id), start, stop)
            .await
            .map_err(unavailable)?;
        let mut out = Vec::with_capacity(raw.len());
        for s in &raw {
            let entry: LedgerEntry = serde_json::from_str(s).map_err(corrupt)?;
            if entry.id > after {
                out.push(entry);
            }
        }
        Ok(out)
    }
}

#[async_trait]
impl Directory for RedisStore {
    async fn ping(&self) -> StoreResult<()> {
        let _: String = ::redis::cmd("PING")
            .query_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn create_account(&self, new: NewAccount) -> StoreResult<Account> {
        let account = Account {
            id: new_id("acc"),
            name: new.name,
            status: AccountStatus::Active,
            created_at: now(),
            plan: None,
            credits: 0,
            metadata: new.metadata,
        };
        let seq = self.next_seq().await?;
        let record = account_key(&account.id);
        let fields = [
            ("id", account.id.clone()),
            ("name", account.name.clone()),
            ("status", enum_str(&account.status)),
            ("created_at", account.created_at.to_string()),
            ("credits", account.credits.to_string()),
            ("metadata", json(&account.metadata)?),
        ];
        let outcome = Plan::default()
            .step(vec![Op::zadd("kg:accounts".into(), seq, &account.id)])
            .step(vec![
                Op::absent(record.clone(), ID_TAKEN),
                Op::hset(record, &fields),
            ])
            .run(&self.conn)
            .await?;
        refused(outcome)?;
        Ok(account)
    }

    async fn get_account(&self, id: &str) -> StoreResult<Option<Account>> {
        self.read_account(id).await
    }

    async fn list_accounts(&self, page: &Page) -> StoreResult<Vec<Account>> {
        let ids = self.page_ids("kg:accounts", page).await?;
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(a) = self.read_account(&id).await? {
                out.push(a);
            }
        }
        Ok(out)
    }

    async fn set_account_status(&self, id: &str, status: AccountStatus) -> StoreResult<Account> {
        let found: i64 = Script::new(SET_ACCOUNT_STATUS)
            .key(account_key(id))
            .arg(enum_str(&status))
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        self.account_if_found(id, found).await
    }

    async fn set_account_plan(&self, id: &str, plan: Option<String>) -> StoreResult<Account> {
        let plan = plan.filter(|p| !p.is_empty());
        let found: i64 = Script::new(SET_ACCOUNT_PLAN)
            .key(account_key(id))
            .arg(if plan.is_some() { "1" } else { "0" })
            .arg(plan.unwrap_or_default())
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        self.account_if_found(id, found).await
    }

    async fn set_account_metadata(&self, id: &str, metadata: Metadata) -> StoreResult<Account> {
        let found: i64 = Script::new(SET_ACCOUNT_METADATA)
            .key(account_key(id))
            .arg(json(&metadata)?)
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        self.account_if_found(id, found).await
    }

    async fn create_key(&self, new: NewKey) -> StoreResult<KeyRecord> {
        let key = new.into_record();
        self.write_new_key(&key).await?;
        Ok(key)
    }

    async fn import_keys(&self, keys: Vec<NewKey>) -> StoreResult<Vec<super::ImportOutcome>> {
        self.import_batch(keys).await
    }

    async fn get_key(&self, id: &str) -> StoreResult<Option<KeyRecord>> {
        self.read_key(id).await
    }

    async fn list_keys(
        &self,
        account_id: Option<&str>,
        page: &Page,
    ) -> StoreResult<Vec<KeyRecord>> {
        let set = match account_id {
            Some(a) => account_keys_key(a),
            None => "kg:keys".to_string(),
        };
        let ids = self.page_ids(&set, page).await?;
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(k) = self.read_key(&id).await? {
                out.push(k);
            }
        }
        Ok(out)
    }

    async fn update_key(&self, id: &str, patch: KeyPatch) -> StoreResult<KeyRecord> {
        let expires = match patch.expires_at {
            None => String::new(),
            Some(None) => "-".to_string(),
            Some(Some(t)) => t.to_string(),
        };
        let rate_limit = match patch.rate_limit {
            None => String::new(),
            Some(None) => "-".to_string(),
            Some(Some(l)) => serde_json::to_string(&l).map_err(corrupt)?,
        };
        let resources = match patch.resources {
            None => String::new(),
            Some(None) => "-".to_string(),
            Some(Some(r)) => json(&r)?,
        };
        let metadata = match patch.metadata {
            None => String::new(),
            Some(m) if m.is_empty() => "-".to_string(),
            Some(m) => json(&m)?,
        };
        let scopes = patch.scopes.map(|s| json(&s)).transpose()?;
        let result: i64 = Script::new(UPDATE_KEY)
            .key(key_key(id))
            .arg(patch.name.unwrap_or_default())
            .arg(patch.status.map(|s| enum_str(&s)).unwrap_or_default())
            .arg(scopes.unwrap_or_default())
            .arg(expires)
            .arg(rate_limit)
            .arg(resources)
            .arg(metadata)
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        match result {
            0 => Err(StoreError::NotFound("key")),
            -1 => Err(StoreError::Conflict(
                "a revoked key cannot be re-enabled".into(),
            )),
            _ => self.read_key(id).await?.ok_or(StoreError::NotFound("key")),
        }
    }

    /// Not one transaction (the two keys live in different slots): the old key is checked, the
    /// new one written, then the old one's expiry moved by a script that checks again. If the old
    /// key was revoked in between, the new key is revoked too and the rotation is refused.
    async fn rotate_key(
        &self,
        id: &str,
        new: NewKey,
        old_expires_at: Option<i64>,
    ) -> StoreResult<(KeyRecord, KeyRecord)> {
        let old = self
            .read_key(id)
            .await?
            .ok_or(StoreError::NotFound("key"))?;
        if old.status == KeyStatus::Revoked {
            return Err(StoreError::Conflict(
                "a revoked key cannot be rotated".into(),
            ));
        }
        if new.account_id != old.account_id {
            return Err(StoreError::Conflict(
                "a key's successor must belong to the same account".into(),
            ));
        }
        let mut key = new.into_record();
        key.rotated_from = Some(old.id.clone());
        self.write_new_key(&key).await?;
        let result: i64 = Script::new(ROTATE_OLD_KEY)
            .key(key_key(&old.id))
            .arg(old_expires_at.map(|t| t.to_string()).unwrap_or_default())
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        if result != 1 {
            let _: i64 = Script::new(UPDATE_KEY)
                .key(key_key(&key.id))
                .arg("")
                .arg(enum_str(&KeyStatus::Revoked))
                .arg("")
                .arg("")
                .arg("")
                .arg("")
                .arg("")
                .invoke_async(&mut self.conn())
                .await
                .map_err(unavailable)?;
            return Err(if result == 0 {
                StoreError::NotFound("key")
            } else {
                StoreError::Conflict("a revoked key cannot be rotated".into())
            });
        }
        let old_after = self
            .read_key(&old.id)
            .await?
            .ok_or(StoreError::NotFound("key"))?;
        Ok((key, old_after))
    }

    async fn create_user(&self, new: NewUser) -> StoreResult<User> {
        let (user, hash) = new.into_user();
        self.write_new_user(&user, hash).await?;
        Ok(user)
    }

    async fn get_user(&self, id: &str) -> StoreResult<Option<User>> {
        Ok(self.read_user(id).await?.map(|(u, _)| u))
    }

    async fn find_user_by_email(&self, email: &str) -> StoreResult<Option<(User, String)>> {
        let id: Option<String> = self
            .conn()
            .get(email_key(&normalize_email(email)))
            .await
            .map_err(unavailable)?;
        let Some(id) = id else { return Ok(None) };
        self.read_user(&id).await
    }

    async fn list_users(&self, account_id: Option<&str>, page: &Page) -> StoreResult<Vec<User>> {
        let set = match account_id {
            Some(a) => account_users_key(a),
            None => "kg:users".to_string(),
        };
        let ids = self.page_ids(&set, page).await?;
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some((u, _)) = self.read_user(&id).await? {
                out.push(u);
            }
        }
        Ok(out)
    }

    async fn update_user(&self, id: &str, patch: UserPatch) -> StoreResult<User> {
        let found: i64 = Script::new(UPDATE_USER)
            .key(user_key(id))
            .arg(patch.role.map(|r| enum_str(&r)).unwrap_or_default())
            .arg(patch.status.map(|s| enum_str(&s)).unwrap_or_default())
            .arg(patch.password_hash.unwrap_or_default())
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        if found == 0 {
            return Err(StoreError::NotFound("user"));
        }
        self.get_user(id).await?.ok_or(StoreError::NotFound("user"))
    }

    async fn record_last_used(&self, batch: &[(String, i64)]) -> StoreResult<()> {
        // Many scripts in flight on the one multiplexed connection: they go out pipelined
        // (one round trip per window, not per key), on a single node or a cluster alike.
        let script = Script::new(TOUCH_KEY);
        for window in batch.chunks(256) {
            let calls: Vec<_> = window
                .iter()
                .map(|(id, at)| {
                    let (script, key, at, mut conn) =
                        (script.clone(), key_key(id), *at, self.conn());
                    Box::pin(
                        async move { script.key(key).arg(at).invoke_async::<i64>(&mut conn).await },
                    )
                })
                .collect();
            futures_util::future::try_join_all(calls)
                .await
                .map_err(unavailable)?;
        }
        Ok(())
    }
}

#[async_trait]
impl Audit for RedisStore {
    async fn append_audit(&self, entry: NewAudit) -> StoreResult<()> {
        let id: i64 = self
            .conn()
            .incr("kg:audit:seq", 1)
            .await
            .map_err(unavailable)?;
        let record = AuditEntry {
            id,
            at: now(),
            actor: entry.actor,
            action: entry.action,
            target: entry.target,
            detail: entry.detail,
        };
        let json = serde_json::to_string(&record).map_err(corrupt)?;
        let _: () = self
            .conn()
            .lpush("kg:audit", json)
            .await
            .map_err(unavailable)?;
        let _: () = self
            .conn()
            .ltrim("kg:audit", 0, 99_999)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn list_audit(&self, target: Option<&str>, limit: u32) -> StoreResult<Vec<AuditEntry>> {
        let limit = if limit == 0 { 100 } else { limit.min(1000) } as usize;
        // Filtering by target scans the (bounded) list; audit reads are rare and operator-driven.
        let raw: Vec<String> = self
            .conn()
            .lrange("kg:audit", 0, -1)
            .await
            .map_err(unavailable)?;
        Ok(raw
            .iter()
            .filter_map(|s| serde_json::from_str::<AuditEntry>(s).ok())
            .filter(|e| target.is_none_or(|t| e.target == t))
            .take(limit)
            .collect())
    }
}
