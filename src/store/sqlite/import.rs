//! The SQLite half of [`Directory::import_keys`](crate::store::Directory::import_keys): one
//! function over an open transaction, so whoever owns the connection (and its threading)
//! decides when it commits. A batch of thousands of keys is one transaction: one fsync, not
//! one per key.

use std::collections::HashMap;

use rusqlite::{OptionalExtension, Transaction};

use super::{get_account_tx, insert_key_tx, unavailable};
use crate::store::{ImportOutcome, NewKey, StoreError, StoreResult};

/// Stores `keys` inside `tx`, one outcome per key in order (see `ImportOutcome`). Accounts are
/// read once per batch.
pub(super) fn import_keys_tx(
    tx: &Transaction<'_>,
    keys: Vec<NewKey>,
) -> StoreResult<Vec<ImportOutcome>> {
    let mut accounts: HashMap<String, bool> = HashMap::new();
    let mut out = Vec::with_capacity(keys.len());
    let mut by_hash = tx
        .prepare_cached("SELECT id FROM keys WHERE hash = ?1")
        .map_err(unavailable)?;
    for new in keys {
        let existing: Option<String> = by_hash
            .query_row([new.hash.as_slice()], |row| row.get(0))
            .optional()
            .map_err(unavailable)?;
        if let Some(id) = existing {
            out.push(ImportOutcome::Existing(id));
            continue;
        }
        let usable = match accounts.get(&new.account_id) {
            Some(known) => *known,
            None => {
                let usable = get_account_tx(tx, &new.account_id)?.is_some();
                accounts.insert(new.account_id.clone(), usable);
                usable
            }
        };
        if !usable {
            out.push(ImportOutcome::Failed(StoreError::NotFound("account")));
            continue;
        }
        let key = new.into_record();
        insert_key_tx(tx, &key)?;
        out.push(ImportOutcome::Created(Box::new(key)));
    }
    Ok(out)
}
