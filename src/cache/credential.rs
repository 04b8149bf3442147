//! What the cache keeps per key: only what a decision and the identity headers need, compact.
//!
//! A million cached keys must fit in a few hundred megabytes, so an entry is not the store's
//! [`Credential`] (every column of the key, account and user, and a copy of each identity header
//! value besides): it is the key's own facts, a pointer to its scope set (interned, see
//! [`super::scopes`]), a pointer to its account's facts (shared by that account's cached keys,
//! see [`super::index`]) and, for a user's key, a pointer to the user's. Identity header values
//! are rendered from the ids when a request is forwarded ([`CachedCredential::identity`]), with
//! no copy.

use std::sync::atomic::{AtomicBool, AtomicI64};
use std::sync::Arc;
use std::time::Instant;

use super::scopes::ScopeSet;
use super::text::Text;
use crate::identity::{AuthMethod, IdentityValues};
use crate::store::{
    Account, AccountStatus, Credential, KeyRecord, KeyStatus, Permission, RateLimit, Resources,
    Role, UserStatus,
};

/// A credential as the request path decides on it.
#[derive(Debug)]
pub struct Facts {
    pub key: KeyFacts,
    pub account: Arc<AccountFacts>,
    /// The key's user, for a key that has one.
    pub user: Option<Arc<UserFacts>>,
}

#[derive(Debug)]
pub struct KeyFacts {
    pub id: Text,
    pub name: Text,
    pub scopes: Arc<ScopeSet>,
    pub permission: Permission,
    pub status: KeyStatus,
    pub expires_at: Option<i64>,
    /// The key's own limit; boxed, as most keys have none.
    pub rate_limit: Option<Box<RateLimit>>,
    /// `None`: unrestricted; boxed, as most keys have none.
    pub resources: Option<Box<Resources>>,
}

/// The account as its keys were loaded with it. Equal facts are shared by one `Arc`.
#[derive(Debug, PartialEq, Eq)]
pub struct AccountFacts {
    pub id: Text,
    pub status: AccountStatus,
    pub plan: Option<Text>,
}

/// A key's user: its id (the `user_id` identity header) and, when that user exists, its role
/// and status. Equal facts are shared by one `Arc`.
#[derive(Debug, PartialEq, Eq)]
pub struct UserFacts {
    pub id: Text,
    pub found: Option<(Role, UserStatus)>,
}

impl KeyFacts {
    pub fn of(key: &KeyRecord, scopes: Arc<ScopeSet>) -> Self {
        Self {
            id: Text::new(&key.id),
            name: Text::new(&key.name),
            scopes,
            permission: key.permission,
            status: key.status,
            expires_at: key.expires_at,
            rate_limit: key.rate_limit.map(Box::new),
            resources: key.resources.clone().map(Box::new),
        }
    }
}

impl AccountFacts {
    pub fn of(account: &Account) -> Self {
        Self {
            id: Text::new(&account.id),
            status: account.status,
            plan: account.plan.as_deref().map(Text::new),
        }
    }
}

impl UserFacts {
    /// The user of `c`'s key, if the key has one (found in the store or not).
    pub fn of(c: &Credential) -> Option<Self> {
        let id = c.key.user_id.as_deref()?;
        Some(Self {
            id: Text::new(id),
            found: c.user.as_ref().map(|u| (u.role, u.status)),
        })
    }

    pub fn role(&self) -> Option<Role> {
        self.found.map(|(role, _)| role)
    }

    pub fn status(&self) -> Option<UserStatus> {
        self.found.map(|(_, status)| status)
    }
}

impl Facts {
    /// Facts shared with nothing else, for a credential outside the cache (tests).
    pub fn of(c: &Credential) -> Self {
        Self {
            key: KeyFacts::of(&c.key, Arc::new(ScopeSet::new(&c.key.scopes))),
            account: Arc::new(AccountFacts::of(&c.account)),
            user: UserFacts::of(c).map(Arc::new),
        }
    }

    /// The identity header values, made from the ids without copying them.
    pub fn identity(&self) -> IdentityValues {
        IdentityValues {
            key_id: self.key.id.header_value(),
            key_name: self.key.name.header_value(),
            account_id: self.account.id.header_value(),
            user_id: self.user.as_ref().and_then(|u| u.id.header_value()),
            scopes: self.key.scopes.header_value(),
        }
    }
}

/// A cached credential: the facts, and the cache's bookkeeping for them.
#[derive(Debug)]
pub struct CachedCredential {
    pub credential: Facts,
    /// Debounce slot for last-used updates (see [`crate::usage`]).
    pub last_used_sent: AtomicI64,
    pub(super) loaded_at: Instant,
    /// Set while one request refreshes this entry after its TTL.
    pub(super) refreshing: AtomicBool,
    /// The invalidation generation when its store read began.
    pub(super) load_generation: u64,
    /// How the caller proved who they are.
    pub method: AuthMethod,
}

impl CachedCredential {
    pub(super) fn loaded(credential: Facts, last_used: i64, load_generation: u64) -> Self {
        Self {
            credential,
            last_used_sent: AtomicI64::new(last_used),
            loaded_at: Instant::now(),
            refreshing: AtomicBool::new(false),
            load_generation,
            method: AuthMethod::ApiKey,
        }
    }

    /// A credential taken from a verified access token rather than the store: never cached,
    /// lives for one request.
    pub fn from_token(credential: Facts) -> Self {
        Self {
            method: AuthMethod::Jwt,
            ..Self::loaded(credential, 0, 0)
        }
    }

    /// The identity header values the upstream is told (no copy of the ids is made).
    pub fn identity(&self) -> IdentityValues {
        self.credential.identity()
    }
}
