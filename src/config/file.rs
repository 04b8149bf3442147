//! The TOML file, mirrored as serde types. Nothing outside `config` sees these: they are converted
//! into the validated [`super::Config`], which is what the rest of keygate reads.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

use crate::errors::Reason;

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    #[serde(default)]
    pub server: ServerSection,
    #[serde(default)]
    pub listeners: ListenersSection,
    #[serde(default)]
    pub store: StoreSection,
    #[serde(default)]
    pub secrets: SecretsSection,
    #[serde(default)]
    pub keys: KeysSection,
    #[serde(default)]
    pub credentials: CredentialsSection,
    #[serde(default)]
    pub cache: CacheSection,
    #[serde(default)]
    pub identity: IdentitySection,
    #[serde(default)]
    pub forwarding: ForwardingSection,
    #[serde(default)]
    pub usage: UsageSection,
    #[serde(default)]
    pub log: LogSection,
    #[serde(default)]
    pub tokens: TokensSection,
    #[serde(default)]
    pub upstreams: BTreeMap<String, UpstreamSection>,
    #[serde(default)]
    pub routes: Vec<RouteSection>,
    #[serde(default)]
    pub errors: BTreeMap<Reason, ErrorSection>,
    #[serde(default)]
    pub rate_limits: RateLimitsSection,
    /// Named plans an account can be put on: its keys' and its own rate limits.
    #[serde(default)]
    pub plans: BTreeMap<String, PlanSection>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitsSection {
    pub mode: RateLimitMode,
}

#[derive(Debug, Deserialize, Default, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RateLimitMode {
    /// Each replica limits on its own; no network.
    #[default]
    Local,
    /// One global limit across replicas, in the Redis of `[store]`.
    Redis,
}

/// `requests` per `per_seconds` (default 1), in bursts of up to `burst` (default `requests`).
#[derive(Debug, Deserialize, Clone, Copy)]
#[serde(deny_unknown_fields)]
pub struct LimitSection {
    pub requests: u64,
    #[serde(default = "one")]
    pub per_seconds: u64,
    pub burst: Option<u64>,
    /// `token_bucket` (default) or `sliding_window`: at most `requests` in any `per_seconds`.
    #[serde(default)]
    pub algorithm: crate::ratelimit::Algorithm,
}

fn one() -> u64 {
    1
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct PlanSection {
    /// Per key of an account on this plan (overrides the route's `rate_limit`).
    pub key: Option<Spanned<LimitSection>>,
    /// Per account on this plan (overrides the route's `account_rate_limit`).
    pub account: Option<Spanned<LimitSection>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSection {
    pub threads: usize,
    pub work_stealing: bool,
    /// After SIGTERM: how long to keep accepting and serving (with `/readyz` failing) so load
    /// balancers and Kubernetes endpoints stop sending before the listeners close.
    pub drain_seconds: u64,
    pub grace_period_seconds: u64,
    pub graceful_shutdown_timeout_seconds: u64,
    pub data_dir: String,
    pub request_header_timeout_seconds: u64,
    pub max_connections_per_ip: usize,
    /// Idle upstream connections kept open for reuse (across every upstream). Past it a
    /// finished request's upstream connection is closed, and the next request opens a new one.
    pub upstream_keepalive_pool_size: usize,
    /// Load balancers whose `X-Forwarded-For` / `Forwarded` / `X-Request-Id` keygate believes:
    /// CIDRs (`10.0.0.0/8`, `fd00::/8`) or single addresses.
    pub trusted_proxies: Vec<Spanned<String>>,
}

impl Default for ServerSection {
    fn default() -> Self {
        Self {
            threads: 1,
            work_stealing: false,
            drain_seconds: 5,
            grace_period_seconds: 0,
            graceful_shutdown_timeout_seconds: 5,
            data_dir: "data".into(),
            request_header_timeout_seconds: 10,
            max_connections_per_ip: 256,
            // pingora's default is 128: with more concurrent requests than that, every request
            // past it paid a new upstream connection (1,000 kept-alive clients: 0.35x the
            // throughput of 32). 1,024 idle sockets cost a few MB at most.
            upstream_keepalive_pool_size: 1024,
            trusted_proxies: Vec::new(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ListenersSection {
    /// The plain-HTTP public listener.
    pub public: Spanned<String>,
    pub admin: Spanned<String>,
    pub ops: Spanned<String>,
    /// The public listener expects a PROXY protocol (v1 or v2) header on every connection, from
    /// an L4 load balancer; a connection without one is closed.
    pub proxy_protocol: bool,
    /// HTTP/2 with prior knowledge (h2c) on the plain public listener, beside HTTP/1.1.
    pub h2c: bool,
    /// A public TLS listener, beside the plain one.
    pub tls: Option<Spanned<TlsListenerSection>>,
}

impl Default for ListenersSection {
    fn default() -> Self {
        Self {
            public: Spanned::new(0..0, "0.0.0.0:8080".into()),
            admin: Spanned::new(0..0, "127.0.0.1:8081".into()),
            ops: Spanned::new(0..0, "127.0.0.1:9090".into()),
            proxy_protocol: false,
            h2c: false,
            tls: None,
        }
    }
}

/// `[listeners.tls]`: the same proxy as `public`, over TLS 1.2 / 1.3.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsListenerSection {
    pub address: Spanned<String>,
    /// Offer HTTP/2 by ALPN (`h2`, then `http/1.1`); `false`: HTTP/1.1 only.
    #[serde(default = "yes")]
    pub http2: bool,
    /// Certificate chains and keys (PEM files). A client's SNI picks the one whose names match;
    /// the first answers clients without SNI or with a name none has.
    pub certs: Spanned<Vec<Spanned<CertSection>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertSection {
    /// The certificate chain, leaf first.
    pub cert: Spanned<String>,
    /// Its private key (PKCS#8, PKCS#1 or SEC1).
    pub key: Spanned<String>,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreSection {
    pub backend: StoreBackend,
    /// SQLite file; relative paths are under `server.data_dir`.
    pub path: String,
    /// Redis URL (`redis://host:port/db`, `redis://user@host:port/db` for an ACL user) for
    /// `backend = "redis"`.
    pub url: Option<String>,
    /// The Redis password (of the URL's ACL user, else of `default`), from the environment or a
    /// file like every other secret, so the URL in the file carries no credential.
    pub password: Option<Spanned<SecretRef>>,
    /// Redis Cluster seed nodes (`redis://host:port`), instead of `url`.
    pub cluster_nodes: Vec<String>,
    /// Longest wait for any one Redis call (store, rate limit, publish) before it counts as
    /// failed: a hung Redis costs a request at most this.
    pub timeout_ms: u64,
}

impl Default for StoreSection {
    fn default() -> Self {
        Self {
            backend: StoreBackend::Sqlite,
            path: "keygate.db".into(),
            url: None,
            password: None,
            cluster_nodes: Vec::new(),
            timeout_ms: 1000,
        }
    }
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum StoreBackend {
    Sqlite,
    Redis,
}

/// Where a secret comes from. Inline values are deliberately not accepted: a config file is
/// shared and committed far more often than an environment or a mounted secret file.
#[derive(Debug, Deserialize, Clone, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum SecretRef {
    Env(String),
    File(String),
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct SecretsSection {
    pub pepper: Option<SecretRef>,
    pub admin_token: Option<SecretRef>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KeysSection {
    pub prefix: Spanned<String>,
    pub body_length: Spanned<usize>,
    /// Most live keys a user may hold through self-service.
    pub max_per_user: Spanned<u64>,
    /// Scopes a user may put on their own keys; absent: any well-formed scope.
    pub self_service_scopes: Option<Spanned<Vec<String>>>,
    /// Formats of imported keys made elsewhere (`[[keys.legacy]]` or `legacy = [...]`).
    pub legacy: Vec<Spanned<LegacyKeySection>>,
    /// Whether keygate's keys end in a CRC32 checksum (default true).
    pub checksum: bool,
}

/// One `[keys] legacy` entry: see [`crate::keys::LegacyFormat`].
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LegacyKeySection {
    pub prefix: String,
    pub min_length: usize,
    pub max_length: usize,
    /// How the provider hashed them; `sha256` is the one form keygate reads.
    pub hash: String,
}

impl Default for KeysSection {
    fn default() -> Self {
        Self {
            prefix: Spanned::new(0..0, "kg_live_".into()),
            body_length: Spanned::new(0..0, 32),
            max_per_user: Spanned::new(0..0, super::DEFAULT_MAX_KEYS_PER_USER),
            self_service_scopes: None,
            legacy: Vec::new(),
            checksum: true,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CredentialsSection {
    pub sources: Vec<Spanned<CredentialSourceSection>>,
}

impl Default for CredentialsSection {
    fn default() -> Self {
        Self {
            sources: vec![
                Spanned::new(
                    0..0,
                    CredentialSourceSection {
                        header: "authorization".into(),
                        scheme: Some("Bearer".into()),
                    },
                ),
                Spanned::new(
                    0..0,
                    CredentialSourceSection {
                        header: "x-api-key".into(),
                        scheme: None,
                    },
                ),
            ],
        }
    }
}

#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct CredentialSourceSection {
    pub header: String,
    /// For `Authorization`-style headers: the scheme word before the credential (`Bearer`).
    pub scheme: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheSection {
    pub ttl_seconds: u64,
    pub negative_ttl_seconds: u64,
    pub max_entries: u64,
    /// When the store is unreachable, a cached key keeps working this long past its TTL
    /// (stale-if-error). Unknown keys get 503 meanwhile: never fail open.
    pub max_stale_seconds: u64,
}

impl Default for CacheSection {
    fn default() -> Self {
        Self {
            ttl_seconds: 60,
            negative_ttl_seconds: 5,
            max_entries: 100_000,
            max_stale_seconds: 300,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IdentitySection {
    /// Every client-sent header starting with this prefix is removed before forwarding.
    pub namespace: Spanned<String>,
    /// Each header left out is named `{namespace}{field with - for _}`, e.g. `x-keygate-key-id`.
    pub key_id: Option<Spanned<String>>,
    pub key_name: Option<Spanned<String>>,
    pub account_id: Option<Spanned<String>>,
    pub user_id: Option<Spanned<String>>,
    pub scopes: Option<Spanned<String>>,
    pub auth_method: Option<Spanned<String>>,
    pub credits_remaining: Option<Spanned<String>>,
}

impl Default for IdentitySection {
    fn default() -> Self {
        Self {
            namespace: Spanned::new(0..0, "x-keygate-".into()),
            key_id: None,
            key_name: None,
            account_id: None,
            user_id: None,
            scopes: None,
            auth_method: None,
            credits_remaining: None,
        }
    }
}

/// What keygate does to a request on its way to the upstream, beyond the identity headers.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ForwardingSection {
    /// Client headers dropped before forwarding, matched case-insensitively with `_` read as
    /// `-`. Setting it replaces [`DEFAULT_STRIP_HEADERS`]; `[]` strips none.
    pub strip_headers: Spanned<Vec<String>>,
    /// The largest request body a proxied route accepts, unless the route sets its own
    /// `max_body_bytes` (default 10 MiB).
    pub max_body_bytes: Spanned<u64>,
}

/// Default for `[forwarding] max_body_bytes`: 10 MiB.
pub const DEFAULT_MAX_BODY_BYTES: u64 = 10 * 1024 * 1024;

/// Headers that make an upstream framework act on another method or path than the one keygate
/// authorised: a read-only key's `GET` with `X-HTTP-Method-Override: DELETE` is a delete to
/// Rails, Express's method-override or Symfony; `X-Original-URL` and `X-Rewrite-URL` reroute
/// IIS and old Symfony behind an open route.
pub const DEFAULT_STRIP_HEADERS: [&str; 5] = [
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
    "x-original-url",
    "x-rewrite-url",
];

impl Default for ForwardingSection {
    fn default() -> Self {
        Self {
            strip_headers: Spanned::new(
                0..0,
                DEFAULT_STRIP_HEADERS
                    .iter()
                    .map(|h| h.to_string())
                    .collect(),
            ),
            max_body_bytes: Spanned::new(0..0, DEFAULT_MAX_BODY_BYTES),
        }
    }
}

/// Session and access JWTs.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TokensSection {
    pub algorithm: crate::tokens::Algorithm,
    /// HS256 secret; generated into `data_dir` when left out.
    pub secret: Option<SecretRef>,
    /// EdDSA / RS256 private key (PKCS#8 PEM).
    pub private_key: Option<SecretRef>,
    pub key_id: String,
    pub issuer: String,
    pub audience: String,
    pub session_ttl_seconds: u64,
    pub exchange_ttl_seconds: u64,
}

impl Default for TokensSection {
    fn default() -> Self {
        Self {
            algorithm: crate::tokens::Algorithm::Hs256,
            secret: None,
            private_key: None,
            key_id: "keygate-1".into(),
            issuer: "keygate".into(),
            audience: "keygate".into(),
            session_ttl_seconds: 3600,
            exchange_ttl_seconds: 900,
        }
    }
}

/// `[log]`: how keygate writes its lines (to stderr). Restart-only.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct LogSection {
    pub format: LogFormat,
    /// One `keygate::access` line per request at `info`.
    pub access: bool,
}

impl Default for LogSection {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            access: true,
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines; colour only when stderr is a terminal.
    Text,
    /// One JSON object per line, fields at the top level.
    Json,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UsageSection {
    /// At most one last-used write per key per this many seconds.
    pub last_used_interval_seconds: u64,
}

impl Default for UsageSection {
    fn default() -> Self {
        Self {
            last_used_interval_seconds: 60,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamSection {
    /// One backend, `host:port`. An upstream has either `address` or `addresses`.
    pub address: Option<Spanned<String>>,
    /// Several backends (a pool), each `host:port`; see [`super::pool`].
    pub addresses: Option<Spanned<Vec<Spanned<String>>>>,
    #[serde(default)]
    pub tls: bool,
    /// TLS server name; defaults to the host part of `address`.
    #[serde(default)]
    pub sni: Option<String>,
    /// With `tls`: a PEM file of the CA certificates the upstream's certificate must chain to;
    /// unset: the system's roots.
    #[serde(default)]
    pub ca_file: Option<Spanned<String>>,
    /// With `tls`: check the upstream's certificate and name (default). `false` accepts any
    /// certificate, and keygate warns about it when it loads.
    #[serde(default)]
    pub verify: Option<Spanned<bool>>,
    /// The HTTP version spoken to the upstream.
    #[serde(default)]
    pub protocol: Option<Spanned<UpstreamProtocol>>,
    /// Establishing a connection (default 5 s); past it: 504 `upstream_timeout`.
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: Spanned<u64>,
    /// Waiting for each read from the upstream, the response head included (default 60 s).
    #[serde(default = "default_read_timeout_ms")]
    pub read_timeout_ms: Spanned<u64>,
    /// Waiting for each write to the upstream (default 60 s).
    #[serde(default = "default_read_timeout_ms")]
    pub write_timeout_ms: Spanned<u64>,
    /// How long an idle pooled connection is kept for reuse (default 60 s).
    #[serde(default = "default_read_timeout_ms")]
    pub idle_timeout_ms: Spanned<u64>,
    /// A deadline for the whole exchange with the upstream (off by default).
    pub total_timeout_ms: Option<Spanned<u64>>,
    /// How many times a request that could not connect is tried again (idempotent methods only).
    #[serde(default = "default_retries")]
    pub retries: Spanned<u32>,
    /// How a pool picks a backend.
    #[serde(default)]
    pub balance: Balance,
    /// Active HTTP health checks of a pool's backends (off unless configured).
    pub health_check: Option<Spanned<HealthCheckSection>>,
    /// How long a backend that refused a connection is left out of a pool (0: never).
    #[serde(default = "default_passive_ejection_ms")]
    pub passive_ejection_ms: Spanned<u64>,
}

fn default_retries() -> Spanned<u32> {
    Spanned::new(0..0, 1)
}

fn default_passive_ejection_ms() -> Spanned<u64> {
    Spanned::new(0..0, 10_000)
}

/// How a pool picks a backend for a request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Balance {
    /// Each request to the next backend in turn.
    #[default]
    RoundRobin,
    /// By the caller's key id (a key's requests stick to one backend while it is up); anonymous
    /// callers by their client IP.
    ConsistentHash,
}

/// `health_check = { path = "/healthz", ... }`: a GET to each backend every `interval_ms`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheckSection {
    pub path: Spanned<String>,
    /// The `Host` header of the check (default: the upstream's `sni`, else the backend's host).
    pub host: Option<Spanned<String>>,
    #[serde(default = "default_check_interval_ms")]
    pub interval_ms: Spanned<u64>,
    #[serde(default = "default_check_timeout_ms")]
    pub timeout_ms: Spanned<u64>,
    /// Consecutive passing checks that bring a backend back.
    #[serde(default = "default_healthy_threshold")]
    pub healthy_threshold: Spanned<u32>,
    /// Consecutive failing checks that take a backend out.
    #[serde(default = "default_unhealthy_threshold")]
    pub unhealthy_threshold: Spanned<u32>,
}

fn default_check_interval_ms() -> Spanned<u64> {
    Spanned::new(0..0, 5_000)
}

fn default_check_timeout_ms() -> Spanned<u64> {
    Spanned::new(0..0, 2_000)
}

fn default_healthy_threshold() -> Spanned<u32> {
    Spanned::new(0..0, 2)
}

fn default_unhealthy_threshold() -> Spanned<u32> {
    Spanned::new(0..0, 3)
}

/// `protocol` of an upstream.
#[derive(Debug, Deserialize, Default, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum UpstreamProtocol {
    /// HTTP/1.1.
    #[default]
    H1,
    /// HTTP/2 over TLS (ALPN `h2`); needs `tls = true`. For gRPC upstreams.
    H2,
    /// HTTP/2 in cleartext with prior knowledge; needs `tls = false`. For gRPC upstreams.
    H2c,
}

fn default_connect_timeout_ms() -> Spanned<u64> {
    Spanned::new(0..0, 5_000)
}

fn default_read_timeout_ms() -> Spanned<u64> {
    Spanned::new(0..0, 60_000)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteSection {
    pub name: Option<Spanned<String>>,
    pub path: Spanned<String>,
    /// Empty means every method.
    #[serde(default)]
    pub methods: Vec<Spanned<String>>,
    /// Where requests go; a route has either an upstream or `local`.
    pub upstream: Option<Spanned<String>>,
    /// Answered by keygate itself instead of an upstream.
    pub local: Option<LocalKind>,
    /// Body template of a `balance` or `transactions` endpoint: JSON whose placeholders
    /// (`{balance}`, `{metadata.<field>}`, `{items}`, `{cursor}`, `{has_more}`) become values.
    pub body: Option<String>,
    /// Where a `local = "verify"` route reads the request it decides on (forward-auth).
    pub original: Option<OriginalSource>,
    #[serde(default = "default_auth")]
    pub auth: AuthMode,
    /// Per key, unless the account's plan or the key sets its own.
    pub rate_limit: Option<Spanned<LimitSection>>,
    /// Per account, unless the account's plan sets its own.
    pub account_rate_limit: Option<Spanned<LimitSection>>,
    /// Per client IP (for routes callers reach without a key).
    pub ip_rate_limit: Option<Spanned<LimitSection>>,
    /// Path parameters naming resources the key must be allowed: `{ project = "projects" }`
    /// checks `{project}` against the key's `projects`.
    #[serde(default)]
    pub resources: BTreeMap<String, String>,
    /// Credits charged per request; 0 is free.
    #[serde(default)]
    pub cost: u64,
    #[serde(default)]
    pub charge_on: ChargeOn,
    #[serde(default)]
    pub scopes: Vec<Spanned<String>>,
    /// What the route needs from the key. Unset: `read` for GET, HEAD and OPTIONS, else `write`.
    #[serde(default)]
    pub permission: Option<RoutePermission>,
    /// The largest request body forwarded (default `[forwarding] max_body_bytes`); larger is
    /// 413 `payload_too_large`.
    pub max_body_bytes: Option<Spanned<u64>>,
    /// A JSON Schema (draft 2020-12) file, relative to the config file's directory, that every
    /// request body on this forwarded route must satisfy (422 `invalid_body` otherwise).
    pub body_schema: Option<Spanned<String>>,
}

fn default_auth() -> AuthMode {
    AuthMode::ApiKey
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum AuthMode {
    /// An API key.
    ApiKey,
    /// An access JWT from the exchange endpoint.
    Jwt,
    /// An API key or an access JWT.
    Any,
    /// A session JWT from login (the self-service key endpoints).
    Session,
    None,
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum LocalKind {
    /// The caller's credit balance.
    Balance,
    /// The caller's credit transactions, newest last, paged with `?after=&limit=`.
    Transactions,
    /// `POST {"email","password"}` -> `{"token": <session JWT>, "user": {"id","email"}}`.
    Login,
    /// `POST` with a key as the credential -> `{"accessToken","expiresIn","tokenType"}`.
    Exchange,
    /// Self-service keys of the session's user: `GET` lists, `POST {"name",...}` creates.
    Keys,
    /// One of the session user's keys (`{key_id}` in the path): `PATCH {"name"}`, `DELETE`.
    Key,
    /// `POST {"grace_seconds"?}` on one of the session user's keys (`{key_id}`): a new key.
    KeyRotate,
    /// The public keys upstreams verify access tokens with (JWKS).
    Jwks,
    /// Forward-auth for another proxy: decides the request named by `original` as if it had
    /// come to keygate, and answers 200 with the identity headers or the rejection.
    Verify,
}

/// Where a forward-auth (`local = "verify"`) route finds the original request.
#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum OriginalSource {
    /// `X-Forwarded-Method` and `X-Forwarded-Uri` (Traefik ForwardAuth, Caddy `forward_auth`).
    XForwarded,
    /// `X-Original-Method` and `X-Original-URI` (nginx `auth_request`, set in its config).
    XOriginal,
    /// The request itself, below the route's path prefix (Envoy's HTTP ext_authz with
    /// `path_prefix`): the route's path ends in a `{*catch_all}` that is the original path.
    Path,
}

#[derive(Debug, Deserialize, Default, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ChargeOn {
    /// Charged when the request is let through, whatever the upstream answers.
    #[default]
    Request,
    /// Reserved when let through, refunded unless the upstream answers 2xx.
    Success,
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RoutePermission {
    Read,
    Write,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErrorSection {
    pub status: Option<u16>,
    /// Body template; `{reason}`, `{message}` and `{scope}` are filled in.
    pub body: Option<String>,
    pub message: Option<String>,
    pub content_type: Option<String>,
}
