//! Bulk import of keys made elsewhere ([`Directory::import_keys`](super::Directory::import_keys)):
//! what each entry of a batch came to. A batch is idempotent by hash, so a rerun of the same
//! file creates nothing twice.

use super::{KeyRecord, StoreError};

/// One entry's outcome, in the order the batch gave them.
#[derive(Debug)]
pub enum ImportOutcome {
    /// Stored now.
    Created(Box<KeyRecord>),
    /// A key with this hash was already stored (by an earlier import or earlier in this
    /// batch): nothing changed; its id.
    Existing(String),
    /// Not stored (NotFound("account"), for one); the rest of the batch is unaffected.
    Failed(StoreError),
}
