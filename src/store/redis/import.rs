//! The Redis half of [`Directory::import_keys`](crate::store::Directory::import_keys). Each key
//! is the same all-or-nothing write as a created key (so a key never half exists, on Cluster
//! too); the writes of a batch are in flight together on the multiplexed connection, which
//! pipelines them, instead of one round trip after another.

use ::redis::AsyncCommands;
use futures_util::stream::{self, StreamExt};

use super::{hash_key, unavailable, RedisStore};
use crate::store::{ImportOutcome, NewKey, StoreError, StoreResult};

/// Writes in flight at once: enough to fill the pipe, few enough not to crowd out the request
/// path's reads on the shared connection.
const IN_FLIGHT: usize = 64;

impl RedisStore {
    pub(super) async fn import_batch(&self, keys: Vec<NewKey>) -> StoreResult<Vec<ImportOutcome>> {
        let outcomes: Vec<StoreResult<ImportOutcome>> = stream::iter(keys)
            .map(|new| self.import_one(new))
            .buffered(IN_FLIGHT)
            .collect()
            .await;
        outcomes.into_iter().collect()
    }

    async fn import_one(&self, new: NewKey) -> StoreResult<ImportOutcome> {
        let pointer = hash_key(&new.hash);
        if let Some(id) = self.existing(&pointer).await? {
            return Ok(ImportOutcome::Existing(id));
        }
        let key = new.into_record();
        match self.write_new_key(&key).await {
            Ok(()) => Ok(ImportOutcome::Created(Box::new(key))),
            // The same hash twice in a batch (or two imports at once): the other write won.
            Err(StoreError::Conflict(_)) => match self.existing(&pointer).await? {
                Some(id) => Ok(ImportOutcome::Existing(id)),
                None => Err(StoreError::Unavailable(
                    "a key hash was taken and then gone".into(),
                )),
            },
            Err(e @ StoreError::NotFound(_)) => Ok(ImportOutcome::Failed(e)),
            Err(e) => Err(e),
        }
    }

    async fn existing(&self, pointer: &str) -> StoreResult<Option<String>> {
        self.conn().get(pointer).await.map_err(unavailable)
    }
}
