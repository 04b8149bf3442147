//! The Redis half of [`Directory::import_keys`](crate::store::Directory::import_keys). Each key
//! is the same all-or-nothing write as a created key (so a key never half exists, on Cluster
//! too); the writes of a batch are in flight together on the multiplexed connection, which
//! pipelines them, instead of one round trip after another.

use std::collections::HashSet;

use ::redis::AsyncCommands;
use futures_util::stream::{self, StreamExt};

use super::{hash_key, unavailable, RedisStore};
use crate::store::{ImportOutcome, NewKey, StoreError, StoreResult};

/// Writes in flight at once: enough to fill the pipe, few enough not to crowd out the request
/// path's reads on the shared connection.
const IN_FLIGHT: usize = 64;

impl RedisStore {
    /// The first entry of a hash in the batch is the one written: writes in flight together
    /// may land in any order (on Cluster, on different nodes' connections), so a repeat of a
    /// hash goes out only after every first entry has, and finds its key.
    pub(super) async fn import_batch(&self, keys: Vec<NewKey>) -> StoreResult<Vec<ImportOutcome>> {
        let total = keys.len();
        let mut seen = HashSet::with_capacity(total);
        let (mut firsts, mut repeats) = (Vec::with_capacity(total), Vec::new());
        for (i, new) in keys.into_iter().enumerate() {
            if seen.insert(new.hash) {
                firsts.push((i, new));
            } else {
                repeats.push((i, new));
            }
        }
        let mut outcomes: Vec<Option<ImportOutcome>> = (0..total).map(|_| None).collect();
        for pass in [firsts, repeats] {
            let done: Vec<(usize, StoreResult<ImportOutcome>)> = stream::iter(pass)
                .map(|(i, new)| async move { (i, self.import_one(new).await) })
                .buffered(IN_FLIGHT)
                .collect()
                .await;
            for (i, outcome) in done {
                outcomes[i] = Some(outcome?);
            }
        }
        outcomes
            .into_iter()
            .map(|o| {
                o.ok_or_else(|| StoreError::Unavailable("an import entry went missing".into()))
            })
            .collect()
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
