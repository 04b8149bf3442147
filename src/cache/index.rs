//! The cache's secondary indexes: account id -> its cached keys' hashes, and user id -> its
//! cached keys' hashes, so an account's or a user's change drops exactly those entries.
//!
//! An index rather than a scan: moka keeps a predicate given to `invalidate_entries_if` and
//! tests it against every entry read until a full pass retires it, so at a million cached keys
//! each account change taxed every request for seconds. Sharded (no global lock); most accounts
//! hold one or a few keys. The index also interns the owner's facts: the keys of one account
//! loaded with equal facts share one [`Arc`] (and one copy of the id), which is most of what an
//! account costs per cached key.
//!
//! Kept in step with the cache: the load path adds a key before it enters the cache, and every
//! entry that leaves the cache (invalidated, replaced, evicted, expired) takes its add out, so
//! an owner's slot goes when its last cached key does and the index never outgrows the cache.

use std::collections::HashMap;
use std::sync::Arc;

use dashmap::mapref::entry::Entry;
use dashmap::DashMap;

use super::credential::{AccountFacts, Facts, KeyFacts, UserFacts};
use super::scopes::ScopeInterner;
use super::text::Text;
use crate::keys::KeyHash;
use crate::store::Credential;

/// Owner id -> the owner's shared facts and the hashes of its cached keys.
pub struct Index<F> {
    slots: DashMap<Text, Slot<F>>,
}

struct Slot<F> {
    facts: Arc<F>,
    /// Each hash with the number of its adds not yet matched by a removal: a key dropped and
    /// loaded again at once (a revoke, then its next request) is added before the drop's
    /// removal lands, and must stay indexed after it. A map, not a list: an account may hold
    /// many keys.
    hashes: HashMap<KeyHash, u32>,
}

impl<F> Default for Index<F> {
    fn default() -> Self {
        Self {
            slots: DashMap::new(),
        }
    }
}

impl<F: PartialEq> Index<F> {
    /// Records `hash` under `id` and returns the facts to cache with it: the slot's, when equal
    /// to `facts`, else `facts` (which then become the slot's, for the keys loaded after).
    pub fn add(&self, id: &Text, facts: F, hash: KeyHash) -> Arc<F> {
        let mut slot = match self.slots.get_mut(id.as_str()) {
            Some(slot) => slot,
            None => match self.slots.entry(id.clone()) {
                Entry::Occupied(slot) => slot.into_ref(),
                Entry::Vacant(vacant) => {
                    let facts = Arc::new(facts);
                    vacant.insert(Slot {
                        facts: facts.clone(),
                        hashes: HashMap::from([(hash, 1)]),
                    });
                    return facts;
                }
            },
        };
        if *slot.facts != facts {
            slot.facts = Arc::new(facts);
        }
        *slot.hashes.entry(hash).or_default() += 1;
        slot.facts.clone()
    }

    /// Matches one [`Self::add`] of `hash` (its entry left the cache): the hash goes with its
    /// last add, and the slot with its last hash.
    pub fn remove(&self, id: &str, hash: &KeyHash) {
        self.slots.remove_if_mut(id, |_, slot| {
            if let Some(adds) = slot.hashes.get_mut(hash) {
                *adds -= 1;
                if *adds == 0 {
                    slot.hashes.remove(hash);
                }
            }
            slot.hashes.is_empty()
        });
    }

    /// The hashes cached under `id`.
    pub fn of(&self, id: &str) -> Vec<KeyHash> {
        self.slots
            .get(id)
            .map(|slot| slot.hashes.keys().copied().collect())
            .unwrap_or_default()
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }
}

/// Everything the cached facts share: the account and user indexes (which intern their facts)
/// and the scope sets.
#[derive(Default)]
pub struct Owners {
    pub accounts: Index<AccountFacts>,
    pub users: Index<UserFacts>,
    pub scopes: ScopeInterner,
}

impl Owners {
    /// The compact facts of `c`, indexed under its account and user (before the entry enters
    /// the cache, so a change racing this load finds it).
    pub fn facts(&self, c: &Credential, hash: KeyHash) -> Facts {
        let account = AccountFacts::of(&c.account);
        let account = self.accounts.add(&account.id.clone(), account, hash);
        let user = UserFacts::of(c).map(|user| self.users.add(&user.id.clone(), user, hash));
        Facts {
            key: KeyFacts::of(&c.key, self.scopes.intern(&c.key.scopes)),
            account,
            user,
        }
    }

    /// An entry with `facts` left the cache.
    pub fn forget(&self, facts: &Facts, hash: &KeyHash) {
        self.accounts.remove(&facts.account.id, hash);
        if let Some(user) = &facts.user {
            self.users.remove(&user.id, hash);
        }
    }
}
