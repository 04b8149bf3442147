//! The stores under test, each with its backend's own hands on the storage ([`Faults`]) for
//! the checks that make a write fail half-way.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use keygate::store::redis::RedisStore;
use keygate::store::sqlite::SqliteStore;
use keygate::store::*;

use crate::common::redis_server::{RedisCluster, RedisServer};

const TIMEOUT: Duration = Duration::from_secs(2);

/// A store and what keeps it alive (its faults own the directory or the `redis-server`s).
pub struct Backend {
    pub store: Arc<dyn Store>,
    pub faults: Box<dyn Faults>,
}

/// Breaks and inspects a backend's storage below the store, the way a full disk, a wrong-typed
/// Redis key or an operator's mistake would.
pub trait Faults: Send + Sync {
    /// Makes adding a key or a user to `account_id` fail at the step that writes the account's
    /// side (Redis: the account's key and user indexes become strings; SQLite: a trigger aborts
    /// the insert), which a naive write reaches only after other writes.
    fn break_account(&self, account_id: &str);
    /// Undoes [`break_account`](Self::break_account).
    fn repair_account(&self, account_id: &str);
    /// Everything stored, by name, with sequence counters left out (a failed write may spend a
    /// sequence number): equal before and after a write that left nothing behind.
    fn snapshot(&self) -> BTreeMap<String, String>;
}

pub async fn sqlite() -> Backend {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("conformance.db");
    let store = SqliteStore::open(&path).expect("open");
    Backend {
        store: Arc::new(store),
        faults: Box::new(SqliteFaults { _dir: dir, path }),
    }
}

/// One `redis-server` (no persistence: nothing here outlives the test).
pub async fn redis() -> Backend {
    let server = RedisServer::start_with(&["--appendonly", "no"]);
    let store = RedisStore::connect(&server.url(), TIMEOUT)
        .await
        .expect("connect to redis-server");
    store.ping().await.expect("ping redis-server");
    Backend {
        store: Arc::new(store),
        faults: Box::new(RedisFaults {
            nodes: vec![server],
        }),
    }
}

/// A three-master Redis Cluster.
pub async fn cluster() -> Backend {
    let cluster = RedisCluster::start();
    let store = RedisStore::connect_cluster(&cluster.urls(), TIMEOUT)
        .await
        .expect("connect to the cluster");
    store.ping().await.expect("ping the cluster");
    Backend {
        store: Arc::new(store),
        faults: Box::new(RedisFaults {
            nodes: cluster.nodes,
        }),
    }
}

struct SqliteFaults {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl SqliteFaults {
    /// A second connection to the store's file (WAL: it sees every committed write).
    fn open(&self) -> rusqlite::Connection {
        rusqlite::Connection::open(&self.path).expect("open the store's file")
    }

    fn trigger(table: &str, account_id: &str) -> String {
        format!(
            "fault_{table}_{}",
            account_id.replace(|c: char| !c.is_ascii_alphanumeric(), "_")
        )
    }
}

impl Faults for SqliteFaults {
    fn break_account(&self, account_id: &str) {
        let conn = self.open();
        for table in ["keys", "users"] {
            let name = Self::trigger(table, account_id);
            conn.execute_batch(&format!(
                "CREATE TRIGGER {name} BEFORE INSERT ON {table} WHEN NEW.account_id = '{account_id}' \
                 BEGIN SELECT RAISE(ABORT, 'injected fault'); END;"
            ))
            .expect("create trigger");
        }
    }

    fn repair_account(&self, account_id: &str) {
        let conn = self.open();
        for table in ["keys", "users"] {
            let name = Self::trigger(table, account_id);
            conn.execute_batch(&format!("DROP TRIGGER {name};"))
                .expect("drop trigger");
        }
    }

    fn snapshot(&self) -> BTreeMap<String, String> {
        let conn = self.open();
        let tables: Vec<String> = conn
            .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
            .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
            .expect("list tables");
        let mut out = BTreeMap::new();
        for table in tables.iter().filter(|t| *t != "sqlite_sequence") {
            let mut stmt = conn
                .prepare(&format!("SELECT * FROM {table} ORDER BY rowid"))
                .expect("select");
            let columns = stmt.column_count();
            let rows: Vec<String> = stmt
                .query_map([], |row| {
                    (0..columns)
                        .map(|i| {
                            row.get::<_, rusqlite::types::Value>(i)
                                .map(|v| format!("{v:?}"))
                        })
                        .collect::<rusqlite::Result<Vec<_>>>()
                        .map(|values| values.join(" | "))
                })
                .and_then(|rows| rows.collect())
                .expect("read rows");
            for (i, row) in rows.into_iter().enumerate() {
                out.insert(format!("{table}#{i}"), row);
            }
        }
        out
    }
}

/// One node, or every node of a cluster.
struct RedisFaults {
    nodes: Vec<RedisServer>,
}

/// Counters a failed write may advance without leaving anything behind.
const COUNTERS: &[&str] = &["kg:seq", "kg:audit:seq"];

impl RedisFaults {
    /// Runs a command on whichever node holds its key (`-c` follows the cluster's redirects).
    fn command(&self, args: &[&str]) -> String {
        let mut all = vec!["-c"];
        all.extend_from_slice(args);
        self.nodes[0].cli(&all)
    }

    fn account_indexes(account_id: &str) -> [String; 2] {
        [
            format!("kg:{{{account_id}}}:keys"),
            format!("kg:{{{account_id}}}:users"),
        ]
    }
}

impl Faults for RedisFaults {
    fn break_account(&self, account_id: &str) {
        for key in Self::account_indexes(account_id) {
            let out = self.command(&["SET", &key, "not a sorted set"]);
            assert_eq!(out.trim(), "OK", "plant {key}: {out}");
        }
    }

    fn repair_account(&self, account_id: &str) {
        for key in Self::account_indexes(account_id) {
            self.command(&["DEL", &key]);
        }
    }

    fn snapshot(&self) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        for node in &self.nodes {
            let mut names: Vec<String> = node
                .cli(&["--scan"])
                .lines()
                .filter(|n| !n.is_empty() && !COUNTERS.contains(n))
                .map(str::to_string)
                .collect();
            names.sort();
            let input: String = names.iter().map(|n| format!("DUMP {n}\n")).collect();
            let dumps = node.cli_batch(&input);
            let dumps: Vec<&str> = dumps.lines().collect();
            assert_eq!(dumps.len(), names.len(), "one DUMP reply per key");
            out.extend(names.into_iter().zip(dumps.into_iter().map(str::to_string)));
        }
        out
    }
}
