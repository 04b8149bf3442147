//! The embedded store: one SQLite file in WAL mode, for a single keygate with no Redis.
//!
//! rusqlite is synchronous, so every call runs on a fixed set of threads ([`super::sqlite_pool`]):
//! reads on reader threads with their own connections, writes on the one writer thread, where
//! key creations and audit entries queued together share one transaction (group commit).

use std::path::Path;
use std::sync::LazyLock;

use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension, Row};

use super::*;
use crate::keys::new_id;

mod import;
use super::sqlite_pool::Pool;

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS accounts (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    status TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    plan TEXT,
    credits INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS users (
    id TEXT PRIMARY KEY,
    account_id TEXT NOT NULL REFERENCES accounts(id),
    email TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    role TEXT NOT NULL,
    status TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS keys (
    id TEXT PRIMARY KEY,
    account_id TEXT NOT NULL REFERENCES accounts(id),
    user_id TEXT,
    name TEXT NOT NULL,
    display_prefix TEXT NOT NULL,
    hash BLOB NOT NULL UNIQUE,
    scopes TEXT NOT NULL,
    permission TEXT NOT NULL,
    status TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER,
    last_used_at INTEGER,
    rate_limit TEXT
);
CREATE INDEX IF NOT EXISTS keys_account ON keys(account_id);
CREATE INDEX IF NOT EXISTS users_account ON users(account_id);
CREATE TABLE IF NOT EXISTS token_cutoffs (
    subject TEXT PRIMARY KEY,
    at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS token_cutoffs_at ON token_cutoffs(at);
CREATE TABLE IF NOT EXISTS ledger (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    account_id TEXT NOT NULL,
    delta INTEGER NOT NULL,
    reason TEXT NOT NULL,
    key_id TEXT,
    at INTEGER NOT NULL,
    balance_after INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS ledger_account ON ledger(account_id);
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at INTEGER NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_target ON audit(target);
"#;

/// Columns added since the first schema: a data file created before them gets them on open
/// (`CREATE TABLE IF NOT EXISTS` leaves an existing table as it is).
const ADDED_COLUMNS: &[(&str, &str, &str)] = &[
    ("accounts", "plan", "TEXT"),
    ("accounts", "credits", "INTEGER NOT NULL DEFAULT 0"),
    // A JSON object; NULL (an account from before metadata) reads as `{}`.
    ("accounts", "metadata", "TEXT"),
    ("keys", "rate_limit", "TEXT"),
    ("keys", "resources", "TEXT"),
    ("keys", "rotated_from", "TEXT"),
    // A JSON object; NULL (a key from before metadata, or one without any) reads as `{}`.
    ("keys", "metadata", "TEXT"),
    // The cut-off in milliseconds; `at` keeps its second (see `set_token_cutoff`).
    ("token_cutoffs", "at_ms", "INTEGER"),
];

/// A cut-off row's time in milliseconds. `at_ms` is exact when it belongs to `at`'s second; a
/// row without it, or whose `at` a version before milliseconds has since moved on, is read as
/// the end of `at`'s second (it stops everything issued in that second, as it always did).
const CUTOFF_MS: &str =
    "CASE WHEN at_ms IS NOT NULL AND at_ms / 1000 = at      THEN at_ms ELSE at * 1000 + 999 END";

/// Adds every [`ADDED_COLUMNS`] entry the database lacks, in one transaction.
fn migrate(conn: &mut Connection) -> StoreResult<()> {
    let tx = conn.transaction().map_err(unavailable)?;
    for (table, column, decl) in ADDED_COLUMNS {
        let exists = {
            let mut stmt = tx
                .prepare(&format!("PRAGMA table_info({table})"))
                .map_err(unavailable)?;
            let names = stmt
                .query_map([], |r| r.get::<_, String>(1))
                .map_err(unavailable)?
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(unavailable)?;
            names.iter().any(|n| n == column)
        };
        if !exists {
            tx.execute_batch(&format!("ALTER TABLE {table} ADD COLUMN {column} {decl}"))
                .map_err(unavailable)?;
        }
    }
    tx.commit().map_err(unavailable)
}

#[derive(Clone)]
pub struct SqliteStore {
    /// Fixed reader threads and one group-committing writer (see [`super::sqlite_pool`]).
    pool: Pool,
}

/// Statements each connection keeps prepared (rusqlite's default is 16; the writer alone runs
/// more than that on its hot paths, and a statement pushed out is parsed again).
const STATEMENT_CACHE: usize = 64;

/// The write connection's page cache in KiB (SQLite's default is 2 MiB; the readers keep it).
/// 32 MiB: most of the key-hash index of a million keys, the one index an import writes at
/// random places (ids are time-ordered, rows append). 64 MiB put a process holding a million
/// cached keys over its 512 MB budget (522 MiB in `cache_scale`) while a 1 M-key import in
/// parts of 10,000 already runs past 50,000 keys/s with 32; 128 MiB added 108 MiB of RSS for no
/// clear gain.
const WRITER_CACHE_KIB: i64 = 32 * 1024;

pub(super) fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

impl SqliteStore {
    pub fn open(path: &Path) -> StoreResult<Self> {
        if let Some(dir) = path.parent() {
            if !dir.as_os_str().is_empty() {
                std::fs::create_dir_all(dir).map_err(unavailable)?;
            }
        }
        let mut conn = Connection::open(path).map_err(unavailable)?;
        // WAL: readers never block the writer; synchronous=NORMAL is durable across process
        // crashes (only an OS crash can lose the last transactions).
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(unavailable)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(unavailable)?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(unavailable)?;
        conn.pragma_update(None, "cache_size", -WRITER_CACHE_KIB)
            .map_err(unavailable)?;
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        conn.pragma_update(None, "wal_autocheckpoint", 16384)
            .map_err(unavailable)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(unavailable)?;
        conn.execute_batch(SCHEMA).map_err(unavailable)?;
        migrate(&mut conn)?;
        // Reads are CPU work on 2-4 cores; more readers would only queue on them.
        let readers = std::thread::available_parallelism().map_or(2, |n| n.get().clamp(2, 4));
        let pool = Pool::start(conn, path, readers, |c| {
            c.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
            c.busy_timeout(std::time::Duration::from_secs(5))
                .map_err(unavailable)
        })?;
        Ok(Self { pool })
    }

    /// Runs `f` on the write connection (alone; it may open its own transaction).
    async fn with<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> StoreResult<T> + Send + 'static,
    {
        self.pool.write(f).await
    }

    /// Runs `f` on a read connection: reads never wait behind writes.
    async fn read<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> StoreResult<T> + Send + 'static,
    {
        self.pool.read(f).await
    }
}

fn enum_str<T: Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

fn parse_enum<T: for<'de> Deserialize<'de>>(s: &str, idx: usize) -> rusqlite::Result<T> {
    serde_json::from_value(serde_json::Value::String(s.to_string())).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(idx, rusqlite::types::Type::Text, Box::new(e))
    })
}

const ACCOUNT_COLS: &str = "id, name, status, created_at, plan, credits, metadata";

fn metadata_json(metadata: &Metadata) -> String {
    serde_json::Value::Object(metadata.clone()).to_string()
}

/// A key's metadata column: NULL for `{}`, so the many keys without any cost nothing.
fn key_metadata_json(metadata: &Metadata) -> Option<String> {
    (!metadata.is_empty()).then(|| metadata_json(metadata))
}

/// A metadata column at `idx`: a JSON object, NULL read as `{}`.
fn metadata_column(row: &Row<'_>, idx: usize) -> rusqlite::Result<Metadata> {
    match row.get::<_, Option<String>>(idx)? {
        Some(text) => serde_json::from_str(&text).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(idx, rusqlite::types::Type::Text, Box::new(e))
        }),
        None => Ok(Metadata::new()),
    }
}

fn account_row(row: &Row<'_>) -> rusqlite::Result<Account> {
    Ok(Account {
        id: row.get(0)?,
        name: row.get(1)?,
        status: parse_enum(&row.get::<_, String>(2)?, 2)?,
        created_at: row.get(3)?,
        plan: row.get(4)?,
        credits: row.get(5)?,
        metadata: metadata_column(row, 6)?,
    })
}

const KEY_COLS: &str = "id, account_id, user_id, name, display_prefix, hash, scopes, permission, \
                        status, created_at, expires_at, last_used_at, rate_limit, resources, \
                        rotated_from, metadata";

fn resources_json(resources: &Option<Resources>) -> StoreResult<Option<String>> {
    resources
        .as_ref()
        .map(serde_json::to_string)
        .transpose()
        .map_err(unavailable)
}

const USER_COLS: &str = "id, account_id, email, role, status, created_at";

// The statements of the hot paths (key creation, the cache's miss path, import), written once:
// they are prepared with `prepare_cached`, which looks them up by their text, so a call costs a
// cache lookup instead of parsing and planning the SQL again.
static ACCOUNT_BY_ID: LazyLock<String> =
    LazyLock::new(|| format!("SELECT {ACCOUNT_COLS} FROM accounts WHERE id = ?1"));
static KEY_BY_ID: LazyLock<String> =
    LazyLock::new(|| format!("SELECT {KEY_COLS} FROM keys WHERE id = ?1"));
static KEY_BY_HASH: LazyLock<String> =
    LazyLock::new(|| format!("SELECT {KEY_COLS} FROM keys WHERE hash = ?1"));
static USER_BY_ID: LazyLock<String> =
    LazyLock::new(|| format!("SELECT {USER_COLS} FROM users WHERE id = ?1"));
const KEY_VALUES: &str =
    "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)";
static INSERT_KEY: LazyLock<String> =
    LazyLock::new(|| format!("INSERT INTO keys ({KEY_COLS}) {KEY_VALUES}"));
/// An import's insert: a key whose hash is stored already is left as it is (no error, no row).
static IMPORT_KEY: LazyLock<String> = LazyLock::new(|| {
    format!("INSERT INTO keys ({KEY_COLS}) {KEY_VALUES} ON CONFLICT(hash) DO NOTHING")
});

fn user_row(row: &Row<'_>) -> rusqlite::Result<User> {
    Ok(User {
        id: row.get(0)?,
        account_id: row.get(1)?,
        email: row.get(2)?,
        role: parse_enum(&row.get::<_, String>(3)?, 3)?,
        status: parse_enum(&row.get::<_, String>(4)?, 4)?,
        created_at: row.get(5)?,
    })
}

fn get_user_tx(conn: &Connection, id: &str) -> StoreResult<Option<User>> {
    conn.prepare_cached(&USER_BY_ID)
        .and_then(|mut s| s.query_row([id], user_row).optional())
        .map_err(unavailable)
}

fn is_constraint(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _)
        if f.code == rusqlite::ErrorCode::ConstraintViolation)
}

/// Inserts a key record (the account's existence is the caller's check).
fn insert_key_tx(conn: &Connection, key: &KeyRecord) -> StoreResult<()> {
    insert_key_with(conn, &INSERT_KEY, key).map(|_| ())
}

/// Runs the key insert `sql` ([`INSERT_KEY`] or [`IMPORT_KEY`]) for `key`: the rows it stored.
fn insert_key_with(conn: &Connection, sql: &str, key: &KeyRecord) -> StoreResult<usize> {
    // Cached: an import inserts thousands in one transaction.
    let mut insert = conn.prepare_cached(sql).map_err(unavailable)?;
    insert
        .execute(params![
            key.id,
            key.account_id,
            key.user_id,
            key.name,
            key.display_prefix,
            key.hash.as_slice(),
            serde_json::to_string(&key.scopes).map_err(unavailable)?,
            enum_str(&key.permission),
            enum_str(&key.status),
            key.created_at,
            key.expires_at,
            key.last_used_at,
            rate_limit_json(&key.rate_limit),
            resources_json(&key.resources)?,
            key.rotated_from,
            key_metadata_json(&key.metadata),
        ])
        .map_err(|e| {
            if is_constraint(&e) {
                StoreError::Conflict("a key with this hash exists".into())
            } else {
                unavailable(e)
            }
        })
}

fn rate_limit_json(limit: &Option<RateLimit>) -> Option<String> {
    limit.as_ref().and_then(|l| serde_json::to_string(l).ok())
}

const LEDGER_COLS: &str = "id, account_id, delta, reason, key_id, at, balance_after";

fn ledger_row(row: &Row<'_>) -> rusqlite::Result<LedgerEntry> {
    Ok(LedgerEntry {
        id: row.get(0)?,
        account_id: row.get(1)?,
        delta: row.get(2)?,
        reason: row.get(3)?,
        key_id: row.get(4)?,
        at: row.get(5)?,
        balance_after: row.get(6)?,
    })
}

/// The balance inside a transaction; NotFound if the account is missing.
fn balance_tx(conn: &Connection, account_id: &str) -> StoreResult<i64> {
    conn.prepare_cached("SELECT credits FROM accounts WHERE id = ?1")
        .and_then(|mut s| s.query_row([account_id], |r| r.get(0)).optional())
        .map_err(unavailable)?
        .ok_or(StoreError::NotFound("account"))
}

fn insert_ledger_tx(
    conn: &Connection,
    account_id: &str,
    delta: i64,
    reason: &str,
    key_id: Option<&str>,
    balance_after: i64,
) -> StoreResult<()> {
    conn.prepare_cached(
        "INSERT INTO ledger (account_id, delta, reason, key_id, at, balance_after) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )
    .and_then(|mut s| {
        s.execute(params![
            account_id,
            delta,
            reason,
            key_id,
            now(),
            balance_after
        ])
    })
    .map(|_| ())
    .map_err(unavailable)
}

fn key_row(row: &Row<'_>) -> rusqlite::Result<KeyRecord> {
    let hash: Vec<u8> = row.get(5)?;
    let scopes: String = row.get(6)?;
    Ok(KeyRecord {
        id: row.get(0)?,
        account_id: row.get(1)?,
        user_id: row.get(2)?,
        name: row.get(3)?,
        display_prefix: row.get(4)?,
        hash: hash.try_into().map_err(|_| {
            rusqlite::Error::FromSqlConversionFailure(
                5,
                rusqlite::types::Type::Blob,
                "hash is not 32 bytes".into(),
            )
        })?,
        scopes: serde_json::from_str(&scopes).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(6, rusqlite::types::Type::Text, Box::new(e))
        })?,
        permission: parse_enum(&row.get::<_, String>(7)?, 7)?,
        status: parse_enum(&row.get::<_, String>(8)?, 8)?,
        created_at: row.get(9)?,
        expires_at: row.get(10)?,
        last_used_at: row.get(11)?,
        rate_limit: row
            .get::<_, Option<String>>(12)?
            .map(|s| serde_json::from_str(&s))
            .transpose()
            .map_err(|e| {
                rusqlite::Error::FromSqlConversionFailure(
                    12,
                    rusqlite::types::Type::Text,
                    Box::new(e),
                )
            })?,
        resources: row
            .get::<_, Option<String>>(13)?
            .map(|s| serde_json::from_str(&s))
            .transpose()
            .map_err(|e| {
                rusqlite::Error::FromSqlConversionFailure(
                    13,
                    rusqlite::types::Type::Text,
                    Box::new(e),
                )
            })?,
        rotated_from: row.get(14)?,
        metadata: metadata_column(row, 15)?,
    })
}

fn get_account_tx(conn: &Connection, id: &str) -> StoreResult<Option<Account>> {
    conn.prepare_cached(&ACCOUNT_BY_ID)
        .and_then(|mut s| s.query_row([id], account_row).optional())
        .map_err(unavailable)
}

fn get_key_tx(conn: &Connection, id: &str) -> StoreResult<Option<KeyRecord>> {
    conn.prepare_cached(&KEY_BY_ID)
        .and_then(|mut s| s.query_row([id], key_row).optional())
        .map_err(unavailable)
}

fn owned(account_id: &str, key_id: Option<&str>, reason: &str) -> (String, Option<String>, String) {
    (
        account_id.to_string(),
        key_id.map(str::to_string),
        reason.to_string(),
    )
}

/// One page of `table`'s rows, optionally of one account, in insertion order.
fn list_by_account<T>(
    c: &Connection,
    table: &str,
    cols: &str,
    account_id: Option<&str>,
    page: &Page,
    row: fn(&Row<'_>) -> rusqlite::Result<T>,
) -> StoreResult<Vec<T>> {
    let filter = if account_id.is_some() {
        "WHERE account_id = :account"
    } else {
        ""
    };
    let sql = format!(
        "SELECT {cols} FROM {table} {filter} {}",
        page_clause(page, table, account_id.is_some())
    );
    let mut stmt = c.prepare(&sql).map_err(unavailable)?;
    let limit = page.limit();
    let mut named: Vec<(&str, &dyn rusqlite::ToSql)> = vec![(":limit", &limit)];
    if let Some(a) = &account_id {
        named.push((":account", a));
    }
    if let Some(after) = &page.after {
        named.push((":after", after));
    }
    let rows = stmt.query_map(named.as_slice(), row).map_err(unavailable)?;
    rows.collect::<rusqlite::Result<Vec<_>>>()
        .map_err(unavailable)
}

/// Paging by insertion order (rowid): the page starts after the row whose id is `after`.
fn page_clause(page: &Page, table: &str, has_where: bool) -> String {
    let join = if has_where { "AND" } else { "WHERE" };
    match page.after {
        Some(_) => format!(
            "{join} rowid > COALESCE((SELECT rowid FROM {table} WHERE id = :after), 0) \
             ORDER BY rowid LIMIT :limit"
        ),
        None => "ORDER BY rowid LIMIT :limit".to_string(),
    }
}

#[async_trait]
impl CredentialReads for SqliteStore {
    /// Writes the millisecond in `at_ms` and its second in `at`, so a version before
    /// milliseconds still reads (and cuts) the whole second. Only ever moves later.
    async fn set_token_cutoff(&self, subject: &str, at: i64) -> StoreResult<()> {
        let subject = subject.to_string();
        let secs = at.div_euclid(1000);
        self.with(move |c| {
            c.execute(
                &format!(
                    "INSERT INTO token_cutoffs (subject, at, at_ms) VALUES (?1, ?2, ?3) \
                     ON CONFLICT(subject) DO UPDATE SET \
                       at = MAX(at, excluded.at), \
                       at_ms = MAX({CUTOFF_MS}, excluded.at_ms)"
                ),
                params![subject, secs, at],
            )
            .map(|_| ())
            .map_err(unavailable)
        })
        .await
    }

    async fn token_cutoffs(&self, since: i64) -> StoreResult<Vec<(String, i64)>> {
        self.read(move |c| {
            // `at` (indexed) narrows to the candidate seconds; the exact time decides.
            let mut stmt = c
                .prepare(&format!(
                    "SELECT subject, {CUTOFF_MS} AS ms FROM token_cutoffs \
                     WHERE at >= ?1 AND {CUTOFF_MS} >= ?2 ORDER BY ms, subject"
                ))
                .map_err(unavailable)?;
            let rows = stmt
                .query_map(params![since.div_euclid(1000), since], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })
                .map_err(unavailable)?;
            rows.collect::<rusqlite::Result<Vec<_>>>()
                .map_err(unavailable)
        })
        .await
    }

    async fn find_credential(&self, hash: &KeyHash) -> StoreResult<Option<Credential>> {
        let hash = *hash;
        self.read(move |c| {
            let key = c
                .prepare_cached(&KEY_BY_HASH)
                .and_then(|mut s| s.query_row([hash.as_slice()], key_row).optional())
                .map_err(unavailable)?;
            let Some(key) = key else { return Ok(None) };
            let Some(account) = get_account_tx(c, &key.account_id)? else {
                return Ok(None);
            };
            let user = match &key.user_id {
                Some(u) => get_user_tx(c, u)?,
                None => None,
            };
            Ok(Some(Credential { key, account, user }))
        })
        .await
    }
}

#[async_trait]
impl Credits for SqliteStore {
    async fn charge_credits(
        &self,
        account_id: &str,
        amount: i64,
        key_id: Option<&str>,
        reason: &str,
    ) -> StoreResult<ChargeOutcome> {
        check_charge(amount)?;
        let (account_id, key_id, reason) = owned(account_id, key_id, reason);
        self.with(move |c| {
            let tx = c
                .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                .map_err(unavailable)?;
            // The condition is the guard: the debit happens only if it covers the amount.
            let n = tx
                .prepare_cached(
                    "UPDATE accounts SET credits = credits - ?2 WHERE id = ?1 AND credits >= ?2",
                )
                .and_then(|mut s| s.execute(params![account_id, amount]))
                .map_err(unavailable)?;
            let balance = balance_tx(&tx, &account_id)?;
            if n == 0 {
                return Ok(ChargeOutcome::Insufficient { balance });
            }
            insert_ledger_tx(
                &tx,
                &account_id,
                -amount,
                &reason,
                key_id.as_deref(),
                balance,
            )?;
            tx.commit().map_err(unavailable)?;
            Ok(ChargeOutcome::Charged { balance })
        })
        .await
    }

    async fn adjust_credits(
        &self,
        account_id: &str,
        delta: i64,
        key_id: Option<&str>,
        reason: &str,
    ) -> StoreResult<i64> {
        check_delta(delta)?;
        let (account_id, key_id, reason) = owned(account_id, key_id, reason);
        self.with(move |c| {
            let tx = c
                .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                .map_err(unavailable)?;
            let old = balance_tx(&tx, &account_id)?;
            // Both are within ±MAX_CREDITS, so the sum cannot overflow.
            let new = old + delta;
            check_balance(new)?;
            tx.execute(
                "UPDATE accounts SET credits = ?2 WHERE id = ?1",
                params![account_id, new],
            )
            .map_err(unavailable)?;
            insert_ledger_tx(&tx, &account_id, delta, &reason, key_id.as_deref(), new)?;
            tx.commit().map_err(unavailable)?;
            Ok(new)
        })
        .await
    }

    async fn set_credits(&self, account_id: &str, balance: i64, reason: &str) -> StoreResult<i64> {
        check_balance(balance)?;
        let (account_id, _, reason) = owned(account_id, None, reason);
        self.with(move |c| {
            let tx = c
                .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                .map_err(unavailable)?;
            let old = balance_tx(&tx, &account_id)?;
            if old == balance {
                return Ok(balance);
            }
            tx.execute(
                "UPDATE accounts SET credits = ?2 WHERE id = ?1",
                params![account_id, balance],
            )
            .map_err(unavailable)?;
            insert_ledger_tx(&tx, &account_id, balance - old, &reason, None, balance)?;
            tx.commit().map_err(unavailable)?;
            Ok(balance)
        })
        .await
    }

    async fn list_ledger(&self, account_id: &str, page: &Page) -> StoreResult<Vec<LedgerEntry>> {
        let after = ledger_after(page)?;
        let limit = page.limit();
        let account_id = account_id.to_string();
        self.read(move |c| {
            if get_account_tx(c, &account_id)?.is_none() {
                return Err(StoreError::NotFound("account"));
            }
            let mut stmt = c
                .prepare(&format!(
                    "SELECT {LEDGER_COLS} FROM ledger WHERE account_id = ?1 AND id > ?2 \
                     ORDER BY id LIMIT ?3"
                ))
                .map_err(unavailable)?;
            let rows = stmt
                .query_map(params![account_id, after, limit], ledger_row)
                .map_err(unavailable)?;
            rows.collect::<rusqlite::Result<Vec<_>>>()
                .map_err(unavailable)
        })
        .await
    }
}

#[async_trait]
impl Directory for SqliteStore {
    async fn ping(&self) -> StoreResult<()> {
        self.read(|c| c.query_row("SELECT 1", [], |_| Ok(())).map_err(unavailable))
            .await
    }

    async fn create_account(&self, new: NewAccount) -> StoreResult<Account> {
        self.with(move |c| {
            let account = Account {
                id: new_id("acc"),
                name: new.name,
                status: AccountStatus::Active,
                created_at: now(),
                plan: None,
                credits: 0,
                metadata: new.metadata,
            };
            c.execute(
                &format!(
                    "INSERT INTO accounts ({ACCOUNT_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"
                ),
                params![
                    account.id,
                    account.name,
                    enum_str(&account.status),
                    account.created_at,
                    account.plan,
                    account.credits,
                    metadata_json(&account.metadata),
                ],
            )
            .map_err(unavailable)?;
            Ok(account)
        })
        .await
    }

    async fn get_account(&self, id: &str) -> StoreResult<Option<Account>> {
        let id = id.to_string();
        self.read(move |c| get_account_tx(c, &id)).await
    }

    async fn list_accounts(&self, page: &Page) -> StoreResult<Vec<Account>> {
        let page = page.clone();
        self.read(move |c| {
            let sql = format!(
                "SELECT {ACCOUNT_COLS} FROM accounts {}",
                page_clause(&page, "accounts", false)
            );
            let mut stmt = c.prepare(&sql).map_err(unavailable)?;
            let limit = page.limit();
            let rows = match &page.after {
                Some(after) => stmt.query_map(
                    rusqlite::named_params! {":after": after, ":limit": limit},
                    account_row,
                ),
                None => stmt.query_map(rusqlite::named_params! {":limit": limit}, account_row),
            }
            .map_err(unavailable)?;
            rows.collect::<rusqlite::Result<Vec<_>>>()
                .map_err(unavailable)
        })
        .await
    }

    async fn set_account_status(&self, id: &str, status: AccountStatus) -> StoreResult<Account> {
        let id = id.to_string();
        self.with(move |c| {
            let n = c
                .execute(
                    "UPDATE accounts SET status = ?2 WHERE id = ?1",
                    params![id, enum_str(&status)],
                )
                .map_err(unavailable)?;
            if n == 0 {
                return Err(StoreError::NotFound("account"));
            }
            get_account_tx(c, &id)?.ok_or(StoreError::NotFound("account"))
        })
        .await
    }

    async fn set_account_plan(&self, id: &str, plan: Option<String>) -> StoreResult<Account> {
        let plan = plan.filter(|p| !p.is_empty());
        let id = id.to_string();
        self.with(move |c| {
            let tx = c.transaction().map_err(unavailable)?;
            let n = tx
                .execute(
                    "UPDATE accounts SET plan = ?2 WHERE id = ?1",
                    params![id, plan],
                )
                .map_err(unavailable)?;
            if n == 0 {
                return Err(StoreError::NotFound("account"));
            }
            let account = get_account_tx(&tx, &id)?.ok_or(StoreError::NotFound("account"))?;
            tx.commit().map_err(unavailable)?;
            Ok(account)
        })
        .await
    }

    async fn set_account_metadata(&self, id: &str, metadata: Metadata) -> StoreResult<Account> {
        let id = id.to_string();
        self.with(move |c| {
            let n = c
                .execute(
                    "UPDATE accounts SET metadata = ?2 WHERE id = ?1",
                    params![id, metadata_json(&metadata)],
                )
                .map_err(unavailable)?;
            if n == 0 {
                return Err(StoreError::NotFound("account"));
            }
            get_account_tx(c, &id)?.ok_or(StoreError::NotFound("account"))
        })
        .await
    }

    async fn create_key(&self, new: NewKey) -> StoreResult<KeyRecord> {
        // Group-committed with the other creations queued meanwhile (own savepoint each).
        self.pool
            .grouped(move |c| {
                if get_account_tx(c, &new.account_id)?.is_none() {
                    return Err(StoreError::NotFound("account"));
                }
                let key = new.into_record();
                insert_key_tx(c, &key)?;
                Ok(key)
            })
            .await
    }

    async fn get_key(&self, id: &str) -> StoreResult<Option<KeyRecord>> {
        let id = id.to_string();
        self.read(move |c| get_key_tx(c, &id)).await
    }

    async fn import_keys(&self, keys: Vec<NewKey>) -> StoreResult<Vec<ImportOutcome>> {
        self.with(move |c| {
            let tx = c.transaction().map_err(unavailable)?;
            let out = import::import_keys_tx(&tx, keys)?;
            tx.commit().map_err(unavailable)?;
            Ok(out)
        })
        .await
    }

    async fn list_keys(
        &self,
        account_id: Option<&str>,
        page: &Page,
    ) -> StoreResult<Vec<KeyRecord>> {
        let account_id = account_id.map(str::to_string);
        let page = page.clone();
        self.read(move |c| {
            list_by_account(c, "keys", KEY_COLS, account_id.as_deref(), &page, key_row)
        })
        .await
    }

    async fn update_key(&self, id: &str, patch: KeyPatch) -> StoreResult<KeyRecord> {
        let id = id.to_string();
        self.with(move |c| {
            let tx = c.transaction().map_err(unavailable)?;
            let mut key = get_key_tx(&tx, &id)?.ok_or(StoreError::NotFound("key"))?;
            if key.status == KeyStatus::Revoked
                && patch.status.is_some_and(|s| s != KeyStatus::Revoked)
            {
                return Err(StoreError::Conflict(
                    "a revoked key cannot be re-enabled".into(),
                ));
            }
            if let Some(name) = patch.name {
                key.name = name;
            }
            if let Some(status) = patch.status {
                key.status = status;
            }
            if let Some(scopes) = patch.scopes {
                key.scopes = scopes;
            }
            if let Some(expires_at) = patch.expires_at {
                key.expires_at = expires_at;
            }
            if let Some(rate_limit) = patch.rate_limit {
                key.rate_limit = rate_limit;
            }
            if let Some(resources) = patch.resources {
                key.resources = resources;
            }
            if let Some(metadata) = patch.metadata {
                key.metadata = metadata;
            }
            tx.execute(
                "UPDATE keys SET name = ?2, status = ?3, scopes = ?4, expires_at = ?5, \
                 rate_limit = ?6, resources = ?7, metadata = ?8 WHERE id = ?1",
                params![
                    key.id,
                    key.name,
                    enum_str(&key.status),
                    serde_json::to_string(&key.scopes).map_err(unavailable)?,
                    key.expires_at,
                    rate_limit_json(&key.rate_limit),
                    resources_json(&key.resources)?,
                    key_metadata_json(&key.metadata),
                ],
            )
            .map_err(unavailable)?;
            tx.commit().map_err(unavailable)?;
            Ok(key)
        })
        .await
    }

    async fn rotate_key(
        &self,
        id: &str,
        new: NewKey,
        old_expires_at: Option<i64>,
    ) -> StoreResult<(KeyRecord, KeyRecord)> {
        let id = id.to_string();
        self.with(move |c| {
            let tx = c
                .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                .map_err(unavailable)?;
            let mut old = get_key_tx(&tx, &id)?.ok_or(StoreError::NotFound("key"))?;
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
            insert_key_tx(&tx, &key)?;
            if old_expires_at.is_some() {
                old.expires_at = rotated_expiry(old.expires_at, old_expires_at);
                tx.execute(
                    "UPDATE keys SET expires_at = ?2 WHERE id = ?1",
                    params![old.id, old.expires_at],
                )
                .map_err(unavailable)?;
            }
            tx.commit().map_err(unavailable)?;
            Ok((key, old))
        })
        .await
    }

    async fn create_user(&self, new: NewUser) -> StoreResult<User> {
        self.with(move |c| {
            let tx = c.transaction().map_err(unavailable)?;
            if get_account_tx(&tx, &new.account_id)?.is_none() {
                return Err(StoreError::NotFound("account"));
            }
            let (user, hash) = new.into_user();
            tx.execute(
                &format!(
                    "INSERT INTO users ({USER_COLS}, password_hash) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"
                ),
                params![
                    user.id,
                    user.account_id,
                    user.email,
                    enum_str(&user.role),
                    enum_str(&user.status),
                    user.created_at,
                    hash,
                ],
            )
            .map_err(|e| {
                if is_constraint(&e) {
                    StoreError::Conflict("a user with this email exists".into())
                } else {
                    unavailable(e)
                }
            })?;
            tx.commit().map_err(unavailable)?;
            Ok(user)
        })
        .await
    }

    async fn get_user(&self, id: &str) -> StoreResult<Option<User>> {
        let id = id.to_string();
        self.read(move |c| get_user_tx(c, &id)).await
    }

    async fn find_user_by_email(&self, email: &str) -> StoreResult<Option<(User, String)>> {
        let email = normalize_email(email);
        self.read(move |c| {
            c.query_row(
                &format!("SELECT {USER_COLS}, password_hash FROM users WHERE email = ?1"),
                [email],
                |r| Ok((user_row(r)?, r.get::<_, String>(6)?)),
            )
            .optional()
            .map_err(unavailable)
        })
        .await
    }

    async fn list_users(&self, account_id: Option<&str>, page: &Page) -> StoreResult<Vec<User>> {
        let account_id = account_id.map(str::to_string);
        let page = page.clone();
        self.read(move |c| {
            list_by_account(
                c,
                "users",
                USER_COLS,
                account_id.as_deref(),
                &page,
                user_row,
            )
        })
        .await
    }

    async fn update_user(&self, id: &str, patch: UserPatch) -> StoreResult<User> {
        let id = id.to_string();
        self.with(move |c| {
            let tx = c.transaction().map_err(unavailable)?;
            let mut user = get_user_tx(&tx, &id)?.ok_or(StoreError::NotFound("user"))?;
            if let Some(role) = patch.role {
                user.role = role;
            }
            if let Some(status) = patch.status {
                user.status = status;
            }
            tx.execute(
                "UPDATE users SET role = ?2, status = ?3, \
                 password_hash = COALESCE(?4, password_hash) WHERE id = ?1",
                params![
                    user.id,
                    enum_str(&user.role),
                    enum_str(&user.status),
                    patch.password_hash,
                ],
            )
            .map_err(unavailable)?;
            tx.commit().map_err(unavailable)?;
            Ok(user)
        })
        .await
    }

    async fn record_last_used(&self, batch: &[(String, i64)]) -> StoreResult<()> {
        let mut batch = batch.to_vec();
        // In id order, the updates walk the id index front to back: neighbouring ids share its
        // pages, which stay in SQLite's page cache from one update to the next.
        batch.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        self.with(move |c| {
            let tx = c.transaction().map_err(unavailable)?;
            {
                let mut stmt = tx
                    .prepare_cached(
                        "UPDATE keys SET last_used_at = ?2 \
                         WHERE id = ?1 AND (last_used_at IS NULL OR last_used_at < ?2)",
                    )
                    .map_err(unavailable)?;
                for (id, at) in &batch {
                    stmt.execute(params![id, at]).map_err(unavailable)?;
                }
            }
            tx.commit().map_err(unavailable)
        })
        .await
    }
}

#[async_trait]
impl Audit for SqliteStore {
    async fn append_audit(&self, entry: NewAudit) -> StoreResult<()> {
        self.pool
            .grouped(move |c| {
                c.prepare_cached(
                    "INSERT INTO audit (at, actor, action, target, detail) \
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                )
                .and_then(|mut s| {
                    s.execute(params![
                        now(),
                        entry.actor,
                        entry.action,
                        entry.target,
                        entry.detail
                    ])
                })
                .map(|_| ())
                .map_err(unavailable)
            })
            .await
    }

    async fn list_audit(&self, target: Option<&str>, limit: u32) -> StoreResult<Vec<AuditEntry>> {
        let target = target.map(str::to_string);
        let limit = if limit == 0 { 100 } else { limit.min(1000) };
        self.read(move |c| {
            let row = |r: &Row<'_>| {
                Ok(AuditEntry {
                    id: r.get(0)?,
                    at: r.get(1)?,
                    actor: r.get(2)?,
                    action: r.get(3)?,
                    target: r.get(4)?,
                    detail: r.get(5)?,
                })
            };
            let cols = "id, at, actor, action, target, detail";
            let rows = match &target {
                Some(t) => c
                    .prepare(&format!(
                        "SELECT {cols} FROM audit WHERE target = ?1 ORDER BY id DESC LIMIT ?2"
                    ))
                    .and_then(|mut s| {
                        s.query_map(params![t, limit], row)?
                            .collect::<rusqlite::Result<Vec<_>>>()
                    }),
                None => c
                    .prepare(&format!(
                        "SELECT {cols} FROM audit ORDER BY id DESC LIMIT ?1"
                    ))
                    .and_then(|mut s| {
                        s.query_map(params![limit], row)?
                            .collect::<rusqlite::Result<Vec<_>>>()
                    }),
            };
            rows.map_err(unavailable)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The schema before plans, credits and key limits.
    const OLD_SCHEMA: &str = r#"
CREATE TABLE accounts (id TEXT PRIMARY KEY, name TEXT NOT NULL, status TEXT NOT NULL,
    created_at INTEGER NOT NULL);
CREATE TABLE keys (id TEXT PRIMARY KEY, account_id TEXT NOT NULL REFERENCES accounts(id),
    user_id TEXT, name TEXT NOT NULL, display_prefix TEXT NOT NULL, hash BLOB NOT NULL UNIQUE,
    scopes TEXT NOT NULL, permission TEXT NOT NULL, status TEXT NOT NULL,
    created_at INTEGER NOT NULL, expires_at INTEGER, last_used_at INTEGER);
INSERT INTO accounts VALUES ('acc_old', 'Old', 'active', 1000);
INSERT INTO keys VALUES ('key_old', 'acc_old', NULL, 'k', 'kg_test_abc', x'0101010101010101010101010101010101010101010101010101010101010101',
    '["a"]', 'read', 'active', 1000, NULL, NULL);
"#;

    #[tokio::test]
    async fn an_old_data_file_gains_the_new_columns() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("old.db");
        Connection::open(&path)
            .and_then(|c| c.execute_batch(OLD_SCHEMA))
            .expect("old schema");

        let store = SqliteStore::open(&path).expect("open old file");
        let account = store
            .get_account("acc_old")
            .await
            .expect("get")
            .expect("kept");
        assert_eq!((account.plan, account.credits), (None, 0));
        assert!(account.metadata.is_empty(), "{:?}", account.metadata);
        let key = store.get_key("key_old").await.expect("get").expect("kept");
        assert_eq!(key.rate_limit, None);
        assert_eq!(key.scopes, vec!["a"]);
        assert!(key.metadata.is_empty(), "{:?}", key.metadata);

        assert_eq!(
            store
                .adjust_credits("acc_old", 5, None, "top-up")
                .await
                .expect("top up"),
            5
        );
        store
            .set_account_plan("acc_old", Some("pro".into()))
            .await
            .expect("plan");
        let webhooks = serde_json::json!({ "webhooks": ["https://a.example/h"] });
        let metadata = webhooks.as_object().cloned().unwrap_or_default();
        store
            .set_account_metadata("acc_old", metadata.clone())
            .await
            .expect("metadata");
        let patch = KeyPatch {
            metadata: Some(metadata.clone()),
            ..KeyPatch::default()
        };
        store
            .update_key("key_old", patch)
            .await
            .expect("key metadata");
        drop(store);
        // Opening again finds the columns there and leaves the data alone.
        let store = SqliteStore::open(&path).expect("reopen");
        let account = store
            .get_account("acc_old")
            .await
            .expect("get")
            .expect("kept");
        assert_eq!((account.plan.as_deref(), account.credits), (Some("pro"), 5));
        assert_eq!(account.metadata, metadata);
        let key = store.get_key("key_old").await.expect("get").expect("kept");
        assert_eq!(key.metadata, metadata);
        assert_eq!(
            store
                .list_ledger("acc_old", &Page::default())
                .await
                .expect("ledger")
                .len(),
            1
        );
    }
}
