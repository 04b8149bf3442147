//! Wiring: from a validated config to the shared parts every listener uses.

use std::sync::Arc;

use anyhow::Context;

use crate::cache::KeyCache;
use crate::config::{resolve_secrets, Config, RateLimitMode, StoreSettings};
use crate::gate::Gate;
use crate::invalidation::redis::RedisBus;
use crate::keys::KeyHasher;
use crate::local::LocalContext;
use crate::metrics::Metrics;
use crate::ratelimit::redis::RedisLimiter;
use crate::ratelimit::RateLimiter;
use crate::secret::Secret;
use crate::store::redis::RedisStore;
use crate::store::sqlite::SqliteStore;
use crate::store::Store;
use crate::tokens::{TokenSettings, Tokens};
use crate::usage::{self, UsageWriter};

/// What the proxy, the admin API and the ops endpoints share.
pub struct Shared {
    pub config: Arc<Config>,
    pub store: Arc<dyn Store>,
    pub cache: Arc<KeyCache>,
    pub hasher: KeyHasher,
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

/// The store, the invalidation bus with the URL its listener subscribes to (shared stores only),
/// and the runtime that drives the Redis connections.
type OpenedStore = (
    Arc<dyn Store>,
    Option<(Arc<dyn crate::invalidation::Bus>, String)>,
    Option<tokio::runtime::Runtime>,
);

/// Opens the configured store; for Redis, also the invalidation bus and its listener's URL.
fn open_store(config: &Config) -> anyhow::Result<OpenedStore> {
    match &config.store {
        StoreSettings::Sqlite { path } => Ok((
            Arc::new(
                SqliteStore::open(path)
                    .with_context(|| format!("opening SQLite store {}", path.display()))?,
            ),
            None,
            None,
        )),
        StoreSettings::Redis { url } => {
            let rt = redis_runtime()?;
            let (store, bus) = rt.block_on(async {
                let store = RedisStore::connect(url)
                    .await
                    .with_context(|| format!("connecting to Redis at {}", redact_url(url)))?;
                let bus = RedisBus::connect(url).await.map_err(anyhow::Error::msg)?;
                anyhow::Ok((store, bus))
            })?;
            let bus: Arc<dyn crate::invalidation::Bus> = Arc::new(bus);
            Ok((Arc::new(store), Some((bus, url.clone())), Some(rt)))
        }
        StoreSettings::RedisCluster { nodes } => {
            let rt = redis_runtime()?;
            let first = nodes.first().cloned().unwrap_or_default();
            let (store, bus) = rt.block_on(async {
                let store = RedisStore::connect_cluster(nodes)
                    .await
                    .context("connecting to Redis Cluster")?;
                let bus = RedisBus::connect(&first)
                    .await
                    .map_err(anyhow::Error::msg)?;
                anyhow::Ok((store, bus))
            })?;
            let bus: Arc<dyn crate::invalidation::Bus> = Arc::new(bus);
            Ok((Arc::new(store), Some((bus, first)), Some(rt)))
        }
    }
}

/// Local buckets, or global ones in the store's Redis (`[rate_limits] mode = "redis"`).
fn build_limiter(
    config: &Config,
    background: Option<&tokio::runtime::Runtime>,
    metrics: Arc<Metrics>,
) -> anyhow::Result<RateLimiter> {
    match (config.rate_limit_mode, &config.store, background) {
        (RateLimitMode::Local, _, _) => Ok(RateLimiter::local(metrics)),
        (RateLimitMode::Redis, StoreSettings::Redis { url }, Some(rt)) => {
            let redis = rt
                .block_on(RedisLimiter::connect(url))
                .map_err(anyhow::Error::msg)
                .with_context(|| format!("rate limits: connecting to {}", redact_url(url)))?;
            Ok(RateLimiter::with_redis(metrics, redis))
        }
        (RateLimitMode::Redis, _, _) => Err(anyhow::anyhow!(
            "[rate_limits] mode = \"redis\" needs [store] backend = \"redis\" with a `url` \
             (Redis Cluster is not supported for global limits yet)"
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
fn redact_url(url: &str) -> String {
    match url.rsplit_once('@') {
        Some((_, host)) => format!("redis://***@{host}"),
        None => url.to_string(),
    }
}

pub fn build(config: Config) -> anyhow::Result<App> {
    let config = Arc::new(config);
    let secrets = resolve_secrets(&config).context("resolving secrets")?;
    let (store, bus, background) = open_store(&config)?;
    let route_names: Vec<String> = config.routes.iter().map(|r| r.name.clone()).collect();
    let metrics = Arc::new(Metrics::new(&route_names));
    let cache = Arc::new(KeyCache::new(
        store.clone(),
        metrics.clone(),
        config.cache.ttl,
        config.cache.negative_ttl,
        config.cache.max_stale,
        config.cache.max_entries,
    ));
    if let (Some((bus, url)), Some(rt)) = (bus, background.as_ref()) {
        cache.set_bus(bus);
        rt.spawn(crate::invalidation::redis::listen(
            url,
            cache.clone(),
            metrics.clone(),
        ));
    }
    let hasher = KeyHasher::new(&secrets.pepper);
    let (recorder, usage_writer) = usage::channel(config.last_used_interval, metrics.clone());
    let limiter = Arc::new(build_limiter(
        &config,
        background.as_ref(),
        metrics.clone(),
    )?);
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
        .context("[tokens]")?,
    );
    // Tokens revoked before this process started must stay revoked here too; a cut-off older
    // than the longest token lifetime can stop no valid token.
    let since = crate::store::now().saturating_sub(tokens.longest_ttl_secs());
    let loaded = match background.as_ref() {
        Some(rt) => rt.block_on(cache.reload_cutoffs(since)),
        None => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting a runtime")?
            .block_on(cache.reload_cutoffs(since)),
    };
    loaded.context("loading token cut-offs")?;
    let gate = Arc::new(
        Gate::new(
            config.clone(),
            cache.clone(),
            hasher.clone(),
            recorder,
            metrics.clone(),
        )
        .map_err(|e| anyhow::anyhow!("routes: {e}"))?
        .with_limiter(limiter.clone())
        .with_store(store.clone())
        .with_tokens(tokens.clone())
        .with_local(Arc::new(LocalContext {
            config: config.clone(),
            store: store.clone(),
            cache: cache.clone(),
            tokens,
            hasher: hasher.clone(),
            limiter,
        })),
    );
    Ok(App {
        shared: Arc::new(Shared {
            config,
            store,
            cache,
            hasher,
            metrics,
            admin_token: secrets.admin_token,
        }),
        gate,
        usage_writer,
        background,
    })
}
