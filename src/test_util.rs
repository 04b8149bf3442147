//! One way to build a gate over a real SQLite store, and the keys in it, for unit tests and
//! criterion benches: each used to wire its own copy of these fixtures (and each copy drifted).
//!
//! Not for production use: the pepper and token secret are fixed, well-known strings. Compiled
//! into the library (benches link the library without `cfg(test)`), hidden from its docs.

use std::path::Path;
use std::sync::Arc;

use crate::cache::KeyCache;
use crate::config::Config;
use crate::gate::{Gate, GateParts};
use crate::invalidation::Invalidator;
use crate::keys::{KeyFormat, KeyHasher};
use crate::keyservice::KeyService;
use crate::metrics::Metrics;
use crate::ratelimit::RateLimiter;
use crate::secret::Secret;
use crate::store::sqlite::SqliteStore;
use crate::store::{Account, Directory, KeyRecord, NewAccount, NewKey, Permission};
use crate::tokens::cutoffs::TokenCutoffs;
use crate::tokens::{TokenSettings, Tokens};
use crate::usage::{self, UsageWriter};

/// The pepper every test gate hashes keys with.
pub const PEPPER: &str = "test-util-pepper";
/// The HS256 secret every test gate signs tokens with (32 bytes or more, as keygate requires).
pub const TOKEN_SECRET: &str = "test-util-token-secret-0123456789abcdef";

/// A gate wired as `src/app.rs` wires it, over a SQLite file, with local rate limits.
pub struct TestGate {
    pub gate: Gate,
    pub config: Arc<Config>,
    pub store: Arc<SqliteStore>,
    pub cache: Arc<KeyCache>,
    pub invalidator: Arc<Invalidator>,
    pub hasher: KeyHasher,
    pub metrics: Arc<Metrics>,
    pub tokens: Arc<Tokens>,
    pub keys: Arc<KeyService>,
    /// Held so the last-used queue has a receiver (a full queue drops and counts).
    _usage: UsageWriter,
}

impl TestGate {
    /// Builds a gate over `config_text` (a whole keygate TOML file) with its store at `db`.
    /// Panics on a bad config or store: this is test set-up, where a panic is the report.
    pub async fn new(config_text: &str, db: &Path) -> Self {
        let config = Arc::new(Config::parse(config_text, "test").expect("test config"));
        let store = Arc::new(SqliteStore::open(db).expect("test SQLite store"));
        let metrics = Arc::new(Metrics::new(&config.route_names()));
        let cache = Arc::new(KeyCache::configured(
            store.clone(),
            metrics.clone(),
            &config.cache,
        ));
        let cutoffs = Arc::new(TokenCutoffs::new());
        cutoffs
            .reload(store.as_ref(), 0)
            .await
            .expect("token cut-offs from the test store");
        let invalidator = Arc::new(Invalidator::new(
            cache.clone(),
            cutoffs.clone(),
            store.clone(),
            metrics.clone(),
        ));
        let tokens = Arc::new(
            Tokens::new(TokenSettings {
                algorithm: config.tokens.algorithm,
                issuer: config.tokens.issuer.clone(),
                audience: config.tokens.audience.clone(),
                hs256_secret: Some(Secret::new(TOKEN_SECRET)),
                private_key_pem: None,
                key_id: config.tokens.key_id.clone(),
                session_ttl: config.tokens.session_ttl,
                exchange_ttl: config.tokens.exchange_ttl,
            })
            .expect("test token settings")
            .with_cutoffs(cutoffs.clone()),
        );
        let hasher = KeyHasher::new(&Secret::new(PEPPER));
        let (recorder, writer) = usage::channel(config.last_used_interval, metrics.clone());
        let keys = Arc::new(KeyService::new(
            store.clone(),
            invalidator.clone(),
            hasher.clone(),
            config.key_format.clone(),
            config.self_service.clone(),
        ));
        let gate = Gate::new(GateParts {
            config: config.clone(),
            store: store.clone(),
            cache: cache.clone(),
            cutoffs,
            tokens: tokens.clone(),
            hasher: hasher.clone(),
            limiter: Arc::new(RateLimiter::local(metrics.clone())),
            usage: recorder,
            metrics: metrics.clone(),
            keys: keys.clone(),
        });
        Self {
            gate,
            config,
            store,
            cache,
            invalidator,
            hasher,
            metrics,
            tokens,
            keys,
            _usage: writer,
        }
    }

    /// A new active account.
    pub async fn account(&self) -> Account {
        self.store
            .create_account(NewAccount {
                name: "test account".into(),
                metadata: Default::default(),
            })
            .await
            .expect("create test account")
    }

    /// A new read-write key with `scopes` in a new account: its record and its plaintext.
    pub async fn key(&self, scopes: &[&str]) -> (KeyRecord, String) {
        let account = self.account().await;
        self.key_in(&account.id, scopes).await
    }

    /// A new read-write key with `scopes` in `account_id`: its record and its plaintext.
    pub async fn key_in(&self, account_id: &str, scopes: &[&str]) -> (KeyRecord, String) {
        let (new, plaintext) = new_key(&self.config.key_format, &self.hasher, account_id, scopes);
        let record = self.store.create_key(new).await.expect("create test key");
        (record, plaintext.expose().to_string())
    }
}

/// A fresh key of `format` for `account_id`: what to store, and the plaintext (shown once).
pub fn new_key(
    format: &KeyFormat,
    hasher: &KeyHasher,
    account_id: &str,
    scopes: &[&str],
) -> (NewKey, Secret) {
    let plaintext = format.generate();
    let new = NewKey {
        account_id: account_id.to_string(),
        user_id: None,
        name: "test key".into(),
        display_prefix: format.display_prefix(plaintext.expose()),
        hash: hasher.hash(plaintext.expose()),
        scopes: scopes.iter().map(|s| s.to_string()).collect(),
        permission: Permission::ReadWrite,
        expires_at: None,
        rate_limit: None,
        resources: None,
        rotated_from: None,
        metadata: Default::default(),
    };
    (new, plaintext)
}
