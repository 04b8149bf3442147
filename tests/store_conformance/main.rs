//! One behaviour for every store: this suite runs against each implementation (SQLite, one
//! `redis-server`, a three-node Redis Cluster), through the crate's public API only.
//!
//! Each check is a plain `async fn` over `Arc<dyn Store>`, or over the whole [`Backend`] for
//! the checks that break the backend's storage to make a write fail half-way; [`conformance!`]
//! turns the lists into one `#[tokio::test]` per check for a backend. Adding a backend is one
//! line:
//!
//! ```ignore
//! conformance!(redis_backend, backends::redis(), tests);
//! ```
//!
//! where `backends::redis()` is an `async fn` returning a [`Backend`], which keeps alive what
//! the store needs (a temporary directory, a child `redis-server`, ...). `tests` makes one test
//! per check on a fresh store each; `whole_suite` runs every check in turn on one store, for a
//! backend that is slow to start (the three-node Redis Cluster). Checks never assume an empty
//! store, so backends that share one database between tests still pass. The Redis backends
//! start their own `redis-server`s (from `tests/common`), so it must be installed.

#[path = "../common/mod.rs"]
mod common;

mod accounts;
mod atomic_writes;
mod audit;
mod backends;
mod credits;
mod helpers;
mod import;
mod key_metadata;
mod keys;
mod request_path;
mod resources;
mod rotation;
mod token_cutoffs;
mod users;

use accounts::*;
use atomic_writes::*;
use audit::*;
use backends::Backend;
use credits::*;
use import::*;
use key_metadata::*;
use keys::*;
use request_path::*;
use resources::*;
use rotation::*;
use token_cutoffs::*;
use users::*;

macro_rules! conformance {
    (@tests $make:expr; [$($check:ident),+ $(,)?] [$($fault:ident),+ $(,)?]) => {
        $(
            #[tokio::test]
            async fn $check() {
                let backend: Backend = $make.await;
                super::$check(backend.store.clone()).await;
            }
        )+
        $(
            #[tokio::test]
            async fn $fault() {
                let backend: Backend = $make.await;
                super::$fault(&backend).await;
            }
        )+
    };
    (@whole_suite $make:expr; [$($check:ident),+ $(,)?] [$($fault:ident),+ $(,)?]) => {
        /// Every check in turn on one store, for a backend too costly to start per check.
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn whole_suite() {
            let backend: Backend = $make.await;
            $( super::$check(backend.store.clone()).await; )+
            $( super::$fault(&backend).await; )+
        }
    };
    ($backend:ident, $make:expr, $mode:ident) => {
        mod $backend {
            use super::*;
            conformance!(@ $mode $make; [
                    accounts_crud,
                    account_status,
                    account_paging,
                    keys_create_get,
                    key_needs_an_account,
                    key_hash_is_unique,
                    keys_list_and_paging,
                    key_update,
                    revoked_key_cannot_come_back,
                    update_missing_key,
                    find_credential_by_hash,
                    find_credential_sees_changes,
                    last_used_never_moves_backwards,
                    audit_append_and_list,
                    account_plan,
                    account_metadata,
                    charge_credits_basic,
                    charge_never_below_zero,
                    adjust_and_set_credits,
                    credit_conflicts,
                    ledger_paging,
                    key_rate_limit_override,
                    users_crud,
                    user_email_is_unique_case_insensitively,
                    users_list_and_paging,
                    user_update,
                    credential_carries_the_user,
                    key_resources,
                    token_cutoffs_keep_the_latest,
                    rotate_key_keeps_the_old_key,
                    rotate_key_with_grace,
                    rotate_key_refusals,
                    import_keys_in_bulk,
                    key_metadata,
            ] [
                failed_key_write_leaves_nothing,
                failed_user_write_leaves_nothing,
                failed_rotation_leaves_nothing,
            ]);
        }
    };
}

conformance!(sqlite, backends::sqlite(), tests);
conformance!(redis_backend, backends::redis(), tests);
conformance!(redis_cluster, backends::cluster(), whole_suite);
