//! The SQLite half of [`Directory::import_keys`](crate::store::Directory::import_keys): one
//! function over an open transaction, so whoever owns the connection (and its threading)
//! decides when it commits. A batch of thousands of keys is one transaction: one fsync, not
//! one per key.

use std::collections::HashMap;

use rusqlite::{OptionalExtension, Transaction};

use super::{get_account_tx, insert_key_with, unavailable, IMPORT_KEY};
use crate::store::{ImportOutcome, NewKey, StoreError, StoreResult};

/// Stores `keys` inside `tx`, one outcome per key in order (see `ImportOutcome`). Accounts are
/// read once per batch.
///
/// The insert itself tells whether the hash is stored already (`ON CONFLICT(hash) DO NOTHING`
/// changes no row): only then is the existing key's id looked up, instead of a lookup before
/// every insert. The keys go in in the order given: lists are in insertion order, and an
/// import lists in its file's order. (Inserting a batch in hash order, tried, walked the hash
/// index front to back but listed the batch in hash order; giving the rows rowids in file order
/// while inserting in hash order would split the table's last pages at random.)
pub(super) fn import_keys_tx(
    tx: &Transaction<'_>,
    keys: Vec<NewKey>,
) -> StoreResult<Vec<ImportOutcome>> {
    let mut accounts: HashMap<String, bool> = HashMap::new();
    let mut out = Vec::with_capacity(keys.len());
    let mut by_hash = tx
        .prepare_cached("SELECT id FROM keys WHERE hash = ?1")
        .map_err(unavailable)?;
    let mut existing = |hash: &[u8]| -> StoreResult<Option<String>> {
        by_hash
            .query_row([hash], |row| row.get(0))
            .optional()
            .map_err(unavailable)
    };
    for new in keys {
        let usable = match accounts.get(&new.account_id) {
            Some(known) => *known,
            None => {
                let usable = get_account_tx(tx, &new.account_id)?.is_some();
                accounts.insert(new.account_id.clone(), usable);
                usable
            }
        };
        let outcome = if usable {
            let key = new.into_record();
            if insert_key_with(tx, &IMPORT_KEY, &key)? == 1 {
                ImportOutcome::Created(Box::new(key))
            } else {
                match existing(key.hash.as_slice())? {
                    Some(id) => ImportOutcome::Existing(id),
                    // Cannot be: only a stored hash makes the insert change nothing (any
                    // other refusal is an error).
                    None => ImportOutcome::Failed(StoreError::Unavailable(
                        "the key was neither stored nor found".into(),
                    )),
                }
            }
        } else {
            // A stored hash is reported as existing whatever the entry's account.
            match existing(new.hash.as_slice())? {
                Some(id) => ImportOutcome::Existing(id),
                None => ImportOutcome::Failed(StoreError::NotFound("account")),
            }
        };
        out.push(outcome);
    }
    Ok(out)
}
