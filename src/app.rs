//! Wiring: from a validated config to the shared parts every listener uses.

use std::sync::Arc;

use anyhow::Context;

use crate::cache::KeyCache;
use crate::config::{resolve_secrets, Config, RateLimitMode, StoreSettings};
use crate::gate::{Gate, GateParts};
use crate::invalidation::redis::RedisBus;
use crate::invalidation::Invalidator;
use crate::keys::KeyHasher;
use crate::keyservice::KeyService;
use crate::metrics::Metrics;
use crate::ratelimit::redis::RedisLimiter;
use crate::ratelimit::RateLimiter;
use crate::redis_conn::RedisConn;
use crate::secret::Secret;
use crate::store::redis::RedisStore;
use crate::store::sqlite::SqliteStore;
use crate::store::{Directory, Store};
use crate::tokens::cutoffs::TokenCutoffs;
use crate::tokens::{TokenSettings, Tokens};
use crate::usage::{self, UsageWriter};

/// What the proxy, the admin API and the ops endpoints share.
pub struct Shared {
    /// Set on SIGTERM: `/readyz` fails and answers close their connections (see `proxy`).
    pub draining: Arc<std::sync::atomic::AtomicBool>,
    /// The running configuration; a reload swaps it (lock-free reads).
    pub config: arc_swap::ArcSwap<Config>,
    pub store: Arc<dyn Store>,
    /// For its size, on `/metrics`.
    pub cache: Arc<KeyCache>,
    /// `/readyz` waits until the stored cut-offs are read.
    pub cutoffs: Arc<TokenCutoffs>,
    /// Every change to keys, users and accounts (admin API and self-service alike).
    pub keys: Arc<KeyService>,
    pub metrics: Arc<Metrics>,
    pub admin_token: Secret,
}

pub struct App {
    pub shared: Arc<Shared>,
    pub gate: Arc<Gate>,
    pub usage_writer: UsageWriter,
    /// Runs the Redis connections' I/O and the invalidation listener. The redis crate drives each
    /// multiplexed connection from a task on the runtime that opened it, so that runtime must
    /// live as long as the process, independent of pingora's per-service runtimes.
    pub background: Option<tokio::runtime::Runtime>,
}

/// What [`open_store`] opens: the store and, for Redis, the shared connection, the node URLs
/// the invalidation listener may subscribe to, and the runtime that drives them.
struct OpenedStore {
    store: Arc<dyn Store>,
    redis: Option<SharedRedis>,
}

struct SharedRedis {
    conn: RedisConn,
    nodes: Vec<String>,
    runtime: tokio::runtime::Runtime,
}

/// Opens the configured store; for Redis, one multiplexed connection that the store, the
/// invalidation publisher and the global rate limiter share.
fn open_store(config: &Config, password: Option<&Secret>) -> anyhow::Result<OpenedStore> {
    let timeout = config.redis_timeout;
    let (conn, nodes, runtime) = match &config.store {
        StoreSettings::Sqlite { path } => {
            let store = SqliteStore::open(path)
                .with_context(|| format!("opening SQLite store {}", path.display()))?;
            return Ok(OpenedStore {
                store: Arc::new(store),
                redis: None,
            });
        }
        StoreSettings::Redis { url } => {
            let url = with_password(url, password)?;
            let conn = RedisConn::single(&url, timeout)
                .with_context(|| format!("Redis URL {}", redact_url(&url)))?;
            (conn, vec![url], redis_runtime()?)
        }
        StoreSettings::RedisCluster { nodes } => {
            let nodes = nodes
                .iter()
                .map(|n| with_password(n, password))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let conn = RedisConn::cluster(&nodes, timeout).context("Redis Cluster nodes")?;
            (conn, nodes, redis_runtime()?)
        }
    };
    // Not fatal: keygate serves (503 for what needs the store, not ready) and connects as soon
    // as Redis answers, rather than exiting into a restart loop while Redis is away.
    let store = RedisStore::new(conn.clone());
    if let Err(e) = runtime.block_on(store.ping()) {
        tracing::warn!(error = %e, "Redis is not answering yet; serving 503 for keys that need it until it does");
    }
    Ok(OpenedStore {
        store: Arc::new(store),
        redis: Some(SharedRedis {
            conn,
            nodes,
            runtime,
        }),
    })
}

/// Local buckets, or global ones in the store's Redis (`[rate_limits] mode = "redis"`).
fn build_limiter(
    config: &Config,
    redis: Option<&SharedRedis>,
    metrics: Arc<Metrics>,
) -> anyhow::Result<RateLimiter> {
    match (config.rate_limit_mode, redis) {
        (RateLimitMode::Local, _) => Ok(RateLimiter::local(metrics)),
        (RateLimitMode::Redis, Some(redis)) => Ok(RateLimiter::with_redis(
            metrics,
            RedisLimiter::new(redis.conn.clone()),
        )),
        (RateLimitMode::Redis, None) => Err(anyhow::anyhow!(
            "[rate_limits] mode = \"redis\" needs [store] backend = \"redis\""
        )),
    }
}

fn redis_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("keygate-redis")
        .enable_all()
        .build()
        .context("starting the Redis runtime")
}

/// A Redis URL may carry a password; logs and errors show only the host part.
/// `url` with `[store] password` in it, percent-encoded, so the store, the rate limiter and the
/// invalidation listener all authenticate the same way (as the URL's user, else `default`).
fn with_password(url: &str, password: Option<&Secret>) -> anyhow::Result<String> {
    let Some(password) = password else {
        return Ok(url.to_string());
    };
    let mut parsed =
        url::Url::parse(url).map_err(|e| anyhow::anyhow!("Redis URL {}: {e}", redact_url(url)))?;
    // Every byte but letters and digits escaped, `%` included (`Url::set_password` leaves a `%`
    // as it is, and redis decodes the password, so `%20` in a password would become a space).
    let encoded = percent_encoding::utf8_percent_encode(
        password.expose(),
        percent_encoding::NON_ALPHANUMERIC,
    )
    .to_string();
    parsed
        .set_password(Some(&encoded))
        .map_err(|()| anyhow::anyhow!("Redis URL {} cannot carry a password", redact_url(url)))?;
    Ok(parsed.into())
}

fn redact_url(url: &str) -> String {
    match url.rsplit_once('@') {
        Some((_, host)) => format!("redis://***@{host}"),
        None => url.to_string(),
    }
}

/// Retries the start-up read of the token cut-offs until the store answers.
async fn load_cutoffs_when_possible(
    cutoffs: Arc<TokenCutoffs>,
    store: Arc<dyn Store>,
    tokens: Arc<Tokens>,
) {
    let mut delay = std::time::Duration::from_millis(100);
    loop {
        tokio::time::sleep(delay).await;
        if cutoffs.loaded() {
            return; // the invalidation listener got there first
        }
        let since = crate::store::now().saturating_sub(tokens.longest_ttl_secs());
        match cutoffs.reload(store.as_ref(), since).await {
            Ok(n) => {
                tracing::info!(cut_offs = n, "token cut-offs loaded");
                return;
            }
            Err(_) => delay = (delay * 2).min(std::time::Duration::from_secs(2)),
        }
    }
}

pub fn build(config: Config) -> anyhow::Result<App> {
    let config = Arc::new(config);
    let secrets = resolve_secrets(&config).context("resolving secrets")?;
    let OpenedStore { store, redis } = open_store(&config, secrets.store_password.as_ref())?;
    let metrics = Arc::new(Metrics::new(&config.route_names()));
    let store = crate::store::MeteredStore::wrap(store, metrics.clone());
    let cache = Arc::new(KeyCache::configured(
        store.clone(),
        metrics.clone(),
        &config.cache,
    ));
    let cutoffs = Arc::new(TokenCutoffs::new());
    let invalidator = Arc::new(Invalidator::new(
        cache.clone(),
        cutoffs.clone(),
        store.clone(),
        metrics.clone(),
    ));
    match &redis {
        Some(redis) => {
            invalidator.set_bus(Arc::new(RedisBus::new(redis.conn.clone())));
            redis.runtime.spawn(crate::invalidation::redis::listen(
                redis.nodes.clone(),
                invalidator.clone(),
                metrics.clone(),
            ));
        }
        // One replica applies its own changes in process: there is no channel to lose, so the
        // gauge (and the alert on it) says the revocations arrive.
        None => metrics.set_invalidation_connected(true),
    }
    let hasher = KeyHasher::new(&secrets.pepper);
    let keys = Arc::new(KeyService::new(
        store.clone(),
        invalidator,
        hasher.clone(),
        config.key_format.clone(),
        config.self_service.clone(),
    ));
    let (recorder, usage_writer) = usage::channel(config.last_used_interval, metrics.clone());
    let limiter = Arc::new(build_limiter(&config, redis.as_ref(), metrics.clone())?);
    let tokens = Arc::new(
        Tokens::new(TokenSettings {
            algorithm: config.tokens.algorithm,
            issuer: config.tokens.issuer.clone(),
            audience: config.tokens.audience.clone(),
            hs256_secret: secrets.jwt_secret.clone(),
            private_key_pem: secrets.jwt_private_key.clone(),
            key_id: config.tokens.key_id.clone(),
            session_ttl: config.tokens.session_ttl,
            exchange_ttl: config.tokens.exchange_ttl,
        })
        .context("[tokens]")?
        .with_cutoffs(cutoffs.clone()),
    );
    // Tokens revoked before this process started must stay revoked here too; a cut-off older
    // than the longest token lifetime can stop no valid token.
    let since = crate::store::now().saturating_sub(tokens.longest_ttl_secs());
    match redis.as_ref() {
        // Redis may be away at start: tokens are refused (503) until the cut-offs are read.
        Some(redis) => {
            if let Err(e) = redis
                .runtime
                .block_on(cutoffs.reload(store.as_ref(), since))
            {
                tracing::warn!(error = %e, "token cut-offs not loaded yet; tokens get 503 until they are");
                redis.runtime.spawn(load_cutoffs_when_possible(
                    cutoffs.clone(),
                    store.clone(),
                    tokens.clone(),
                ));
            }
        }
        None => {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("starting a runtime")?
                .block_on(cutoffs.reload(store.as_ref(), since))
                .context("loading token cut-offs")?;
        }
    }
    let gate = Arc::new(Gate::new(GateParts {
        config: config.clone(),
        store: store.clone(),
        cache: cache.clone(),
        cutoffs: cutoffs.clone(),
        tokens,
        hasher: hasher.clone(),
        limiter,
        usage: recorder,
        metrics: metrics.clone(),
        keys: keys.clone(),
    }));
    Ok(App {
        shared: Arc::new(Shared {
            draining: Arc::default(),
            config: arc_swap::ArcSwap::new(config),
            store,
            cache,
            cutoffs,
            keys,
            metrics,
            admin_token: secrets.admin_token,
        }),
        gate,
        usage_writer,
        background: redis.map(|r| r.runtime),
    })
}
