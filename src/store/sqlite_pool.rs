//! The SQLite store's threads: a fixed set of reader threads, each with its own connection, and
//! one writer thread that owns the only write connection and commits concurrent small writes
//! (key creations, audit entries) together.
//!
//! Why not `spawn_blocking` per call: under a burst of admin calls tokio's blocking pool grows a
//! thread per waiting call (hundreds), all queueing on one connection mutex. Here the work queues
//! on bounded channels instead (a full queue makes the caller wait, asynchronously), the thread
//! count is fixed, and reads (the cache's miss path among them) never wait behind writes: WAL lets
//! the readers run beside the writer.
//!
//! Group commit: SQLite pays its commit cost (WAL append and lock handling) per transaction, so
//! the writer takes every grouped job already queued (up to [`MAX_GROUP`]) into one transaction,
//! each in its own savepoint: a job that fails is rolled back alone, and every caller hears its
//! own result only after the commit.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::sync::{Arc, Mutex};

use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot};

use super::{StoreError, StoreResult};

/// Jobs waiting per queue before callers wait to add more.
const QUEUE: usize = 1024;
/// Grouped writes committed in one transaction at most.
const MAX_GROUP: usize = 512;

/// Work that needs a connection to itself (reads, and writes that open their own transaction).
type Run = Box<dyn FnOnce(&mut Connection) + Send>;
/// Delivers a grouped job's result once the group's commit is known (`Some` = it failed).
type Deliver = Box<dyn FnOnce(Option<&str>) + Send>;
/// A grouped write: runs inside the group's transaction; says whether it succeeded.
type Grouped = Box<dyn FnOnce(&Connection) -> (bool, Deliver) + Send>;

enum Job {
    Run(Run),
    Grouped(Grouped),
}

fn gone() -> StoreError {
    StoreError::Unavailable("sqlite worker stopped".into())
}

/// Handles to the threads; dropping the last one lets them finish their queues and exit.
#[derive(Clone)]
pub(super) struct Pool {
    writer: mpsc::Sender<Job>,
    readers: mpsc::Sender<Run>,
}

impl Pool {
    /// Starts the writer on `writer` (already set up and migrated) and `readers` reader
    /// threads, each opening `path` read-only.
    pub(super) fn start(
        writer: Connection,
        path: &Path,
        readers: usize,
        configure: impl Fn(&Connection) -> StoreResult<()>,
    ) -> StoreResult<Self> {
        let mut read_conns = Vec::with_capacity(readers);
        for _ in 0..readers.max(1) {
            let conn = Connection::open(path).map_err(super::sqlite::unavailable)?;
            configure(&conn)?;
            conn.pragma_update(None, "query_only", "ON")
                .map_err(super::sqlite::unavailable)?;
            read_conns.push(conn);
        }
        let (wtx, wrx) = mpsc::channel(QUEUE);
        std::thread::Builder::new()
            .name("keygate-sqlite-writer".into())
            .spawn(move || write_loop(writer, wrx))
            .map_err(super::sqlite::unavailable)?;
        let (rtx, rrx) = mpsc::channel::<Run>(QUEUE);
        let shared = Arc::new(Mutex::new(rrx));
        for (i, conn) in read_conns.into_iter().enumerate() {
            let queue = shared.clone();
            std::thread::Builder::new()
                .name(format!("keygate-sqlite-reader-{i}"))
                .spawn(move || read_loop(conn, queue))
                .map_err(super::sqlite::unavailable)?;
        }
        Ok(Self {
            writer: wtx,
            readers: rtx,
        })
    }

    /// `f` on the write connection, alone (it may open its own transaction).
    pub(super) async fn write<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> StoreResult<T> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let job: Run = Box::new(move |c| {
            let _ = tx.send(f(c));
        });
        self.writer.send(Job::Run(job)).await.map_err(|_| gone())?;
        rx.await.map_err(|_| gone())?
    }

    /// `f` inside a transaction shared with other grouped writes queued at the same time; its
    /// changes are rolled back alone when it fails. The result comes after the commit.
    pub(super) async fn grouped<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let job: Grouped = Box::new(move |c| {
            let result = f(c);
            let ok = result.is_ok();
            let deliver: Deliver = Box::new(move |commit_failed| {
                let _ = tx.send(match commit_failed {
                    Some(e) if ok => Err(StoreError::Unavailable(e.to_string())),
                    _ => result,
                });
            });
            (ok, deliver)
        });
        self.writer
            .send(Job::Grouped(job))
            .await
            .map_err(|_| gone())?;
        rx.await.map_err(|_| gone())?
    }

    /// `f` on one of the read connections.
    pub(super) async fn read<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> StoreResult<T> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let job: Run = Box::new(move |c| {
            let _ = tx.send(f(c));
        });
        self.readers.send(job).await.map_err(|_| gone())?;
        rx.await.map_err(|_| gone())?
    }
}

/// A panic in one job must not take the thread (and every later call) with it: the job's caller
/// sees its reply channel dropped and answers "unavailable".
fn run_guarded(job: Run, conn: &mut Connection) {
    let _ = catch_unwind(AssertUnwindSafe(|| job(conn)));
}

fn read_loop(mut conn: Connection, queue: Arc<Mutex<mpsc::Receiver<Run>>>) {
    loop {
        // One reader waits on the queue at a time; it lets go before running the job.
        let job = match queue.lock() {
            Ok(mut rx) => rx.blocking_recv(),
            Err(_) => return,
        };
        match job {
            Some(job) => run_guarded(job, &mut conn),
            None => return,
        }
    }
}

fn write_loop(mut conn: Connection, mut rx: mpsc::Receiver<Job>) {
    let mut next = None;
    loop {
        let job = match next.take() {
            Some(job) => job,
            None => match rx.blocking_recv() {
                Some(job) => job,
                None => return,
            },
        };
        match job {
            Job::Run(job) => run_guarded(job, &mut conn),
            Job::Grouped(first) => {
                let mut group = vec![first];
                while group.len() < MAX_GROUP {
                    match rx.try_recv() {
                        Ok(Job::Grouped(job)) => group.push(job),
                        Ok(other) => {
                            next = Some(other);
                            break;
                        }
                        Err(_) => break,
                    }
                }
                commit_group(&conn, group);
            }
        }
    }
}

/// Runs one statement without results (`SAVEPOINT job`), prepared once per connection: a group
/// of N jobs runs 2N + 2 of these, and `execute_batch` parsed each one again.
fn exec(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(|_| ())
}

/// One transaction for the whole group, one savepoint per job.
fn commit_group(conn: &Connection, group: Vec<Grouped>) {
    // Without the outer transaction (BEGIN failed) each savepoint is its own transaction: slower,
    // still correct.
    let outer = exec(conn, "BEGIN IMMEDIATE").is_ok();
    let mut delivers = Vec::with_capacity(group.len());
    for job in group {
        if let Err(e) = exec(conn, "SAVEPOINT job") {
            // The job never runs: its caller hears "unavailable" through the dropped reply.
            tracing::warn!(error = %e, "sqlite savepoint failed");
            drop(job);
            continue;
        }
        let (ok, deliver) = match catch_unwind(AssertUnwindSafe(|| job(conn))) {
            Ok(done) => done,
            Err(_) => (false, Box::new(|_: Option<&str>| {}) as Deliver),
        };
        if !ok {
            let _ = exec(conn, "ROLLBACK TO job");
        }
        let _ = exec(conn, "RELEASE job");
        delivers.push(deliver);
    }
    let failed = if outer {
        exec(conn, "COMMIT").err().map(|e| {
            let _ = exec(conn, "ROLLBACK");
            e.to_string()
        })
    } else {
        None
    };
    for deliver in delivers {
        deliver(failed.as_deref());
    }
}

#[cfg(test)]
mod tests {
    use crate::store::sqlite::SqliteStore;
    use crate::store::{Directory, NewAccount, NewKey, Permission, StoreError};

    fn new_key(account_id: &str, n: u8, i: u8) -> NewKey {
        NewKey {
            account_id: account_id.into(),
            user_id: None,
            name: format!("k{i}"),
            display_prefix: "kg_test_x".into(),
            hash: [n; 32].map(|b| b ^ i),
            scopes: vec![],
            permission: Permission::Read,
            expires_at: None,
            rate_limit: None,
            resources: None,
            rotated_from: None,
            metadata: Default::default(),
        }
    }

    /// Creations sent together share transactions; one that fails (unknown account, taken
    /// hash) fails alone, and every success is there after a reopen.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_creations_commit_together_and_fail_alone() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("group.db");
        let store = std::sync::Arc::new(SqliteStore::open(&path).expect("open"));
        let account = store
            .create_account(NewAccount {
                name: "a".into(),
                metadata: Default::default(),
            })
            .await
            .expect("account");
        let calls = (0..200u8).map(|i| {
            let store = store.clone();
            let key = match i % 10 {
                3 => new_key("acc_missing", 1, i),
                // Same hash as key 0: a conflict (unless it runs first; then key 0 conflicts).
                7 if i == 7 => new_key(&account.id, 1, 0),
                _ => new_key(&account.id, 1, i),
            };
            tokio::spawn(async move { store.create_key(key).await })
        });
        let mut created = Vec::new();
        let (mut missing, mut conflicts) = (0, 0);
        for call in calls.collect::<Vec<_>>() {
            match call.await.expect("task") {
                Ok(k) => created.push(k.id),
                Err(StoreError::NotFound("account")) => missing += 1,
                Err(StoreError::Conflict(_)) => conflicts += 1,
                Err(e) => panic!("unexpected: {e}"),
            }
        }
        assert_eq!((missing, conflicts, created.len()), (20, 1, 179));
        drop(store);
        let store = SqliteStore::open(&path).expect("reopen");
        for id in &created {
            assert!(store.get_key(id).await.expect("get").is_some(), "{id} lost");
        }
    }
}
