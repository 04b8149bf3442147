//! Configuration: one TOML file, parsed into serde types ([`file`]) and converted into the
//! validated [`Config`] that the rest of keygate reads. Every problem is collected into one report
//! whose lines name the field and the line it is on.

mod body_schema;
pub mod file;
mod legacy;
mod pool;
mod secrets;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use http::header::HeaderName;

use crate::errors::{Template, Templates, DEFAULT_BODY};
use crate::forwarded::TrustedProxies;
use crate::keys::{KeyFormat, MIN_SHORT_BODY_LEN};
use crate::ratelimit::Limit;
pub use file::{
    AuthMode, Balance, ChargeOn, LocalKind, LogFormat, LogSection, OriginalSource, RateLimitMode,
    RoutePermission, SecretRef, StoreBackend, UpstreamProtocol,
};
pub use pool::{HealthCheck, PoolPolicy, MAX_BACKENDS};
pub use secrets::{check_secrets, resolve_secrets, Secrets};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: String, message: String },
    #[error("{path}: invalid configuration:\n{}", .problems.join("\n"))]
    Invalid { path: String, problems: Vec<String> },
}

#[derive(Debug, Clone)]
pub struct Config {
    pub server: ServerSettings,
    pub listeners: Listeners,
    pub store: StoreSettings,
    /// Bound on every Redis call (`[store] timeout_ms`).
    pub redis_timeout: Duration,
    pub data_dir: PathBuf,
    pub secret_refs: SecretRefs,
    pub key_format: KeyFormat,
    /// Settings that are allowed but give something up, each saying what (`check-config`
    /// prints them, `serve` logs them).
    pub warnings: Vec<String>,
    /// What users may do to their own keys (`[keys]`: `max_per_user`, `self_service_scopes`).
    pub self_service: SelfServiceKeys,
    pub credential_sources: Vec<CredentialSource>,
    pub cache: CacheSettings,
    pub identity: IdentityHeaders,
    /// Client headers removed before forwarding (`[forwarding] strip_headers`), lower-case.
    pub strip_headers: Vec<HeaderName>,
    pub last_used_interval: Duration,
    /// `[log]`: format and whether each request gets an access line.
    pub log: LogSection,
    /// The routes with their matcher, built once per load.
    pub routes: crate::router::RouteTable,
    pub templates: Templates,
    pub rate_limit_mode: RateLimitMode,
    pub plans: HashMap<String, Plan>,
    pub tokens: TokenConfig,
}

/// JWT settings; the signing secret or key is resolved at startup like the pepper.
#[derive(Debug, Clone)]
pub struct TokenConfig {
    pub algorithm: crate::tokens::Algorithm,
    pub secret: Option<SecretRef>,
    pub private_key: Option<SecretRef>,
    pub key_id: String,
    pub issuer: String,
    pub audience: String,
    pub session_ttl: Duration,
    pub exchange_ttl: Duration,
}

/// Default for `[keys] max_per_user`.
pub const DEFAULT_MAX_KEYS_PER_USER: u64 = 100;
/// Highest `[keys] max_per_user` accepted.
pub const MAX_KEYS_PER_USER: u64 = 100_000;

/// Bounds on self-service keys, which a user makes with a session token (an operator, through
/// the admin API, is not bound by them). Restart-only, like the rest of `[keys]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SelfServiceKeys {
    /// Most live keys (not revoked, not expired) a user may hold; creating or rotating one more
    /// is refused.
    pub max_per_user: u64,
    /// The scopes a user may put on their own keys: `[keys] self_service_scopes`, else every
    /// scope a route requires (at start). `None` (only for configs built in code): any.
    pub scopes: Option<Vec<String>>,
}

impl Default for SelfServiceKeys {
    fn default() -> Self {
        Self {
            max_per_user: DEFAULT_MAX_KEYS_PER_USER,
            scopes: None,
        }
    }
}

/// Limits for accounts on a plan; either may be left to the route.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Plan {
    pub key: Option<Limit>,
    pub account: Option<Limit>,
}

#[derive(Debug, Clone)]
pub struct LocalEndpoint {
    pub kind: LocalKind,
    /// The answer's shape, parsed at load ([`crate::local::shape`]); `None`: the default.
    pub body: Option<crate::local::shape::BodyTemplate>,
    /// On a `verify` route: where the original request is read.
    pub original: Option<OriginalSource>,
}

#[derive(Debug, Clone)]
pub struct ServerSettings {
    pub threads: usize,
    pub work_stealing: bool,
    /// SIGTERM: serve on (readiness failing) this long, then stop accepting.
    pub drain: Duration,
    pub grace_period_seconds: u64,
    pub graceful_shutdown_timeout_seconds: u64,
    /// Total time a client has to send a request's header, from the connection's accept (or, on
    /// a kept-alive connection, from the request's first byte). Pingora's own read timeout is
    /// per read, so without this a client trickling a byte at a time holds a connection forever.
    pub request_header_timeout: Duration,
    /// Open public connections one client IP may hold; more are closed at accept. Trusted
    /// proxies are exempt (every client behind them shares their connections).
    pub max_connections_per_ip: usize,
    /// Idle upstream connections pingora keeps for reuse.
    pub upstream_keepalive_pool_size: usize,
    /// Peers whose forwarding headers are believed (see [`crate::forwarded`]).
    pub trusted_proxies: TrustedProxies,
}

#[derive(Debug, Clone)]
pub struct Listeners {
    pub public: SocketAddr,
    pub admin: SocketAddr,
    pub ops: SocketAddr,
    /// Every public connection starts with a PROXY protocol v1/v2 header.
    pub proxy_protocol: bool,
    /// HTTP/2 with prior knowledge on `public`.
    pub h2c: bool,
    pub tls: Option<TlsListener>,
}

/// The public TLS listener.
#[derive(Debug, Clone)]
pub struct TlsListener {
    pub address: SocketAddr,
    /// ALPN `h2` offered before `http/1.1`.
    pub http2: bool,
    pub files: Vec<crate::tls::CertFiles>,
    /// The certificates, read from `files` at load; `None` only when files were not read
    /// (`keygate check-config --skip-secrets`).
    pub certs: Option<Arc<crate::tls::CertSet>>,
}

#[derive(Debug, Clone)]
pub enum StoreSettings {
    Sqlite { path: PathBuf },
    Redis { url: String },
    RedisCluster { nodes: Vec<String> },
}

#[derive(Debug, Clone, Default)]
pub struct SecretRefs {
    pub pepper: Option<SecretRef>,
    pub admin_token: Option<SecretRef>,
    /// `[store] password`: Redis's, only with `backend = "redis"`.
    pub store_password: Option<SecretRef>,
}

/// A header the credential may come in, prepared once (lower-cased name, scheme with its space).
#[derive(Debug, Clone)]
pub struct CredentialSource {
    pub header: HeaderName,
    /// `Some("bearer ")` for `Authorization: Bearer <key>`; matched case-insensitively.
    pub scheme: Option<String>,
}

#[derive(Debug, Clone)]
pub struct CacheSettings {
    pub ttl: Duration,
    pub negative_ttl: Duration,
    pub max_entries: u64,
    pub max_stale: Duration,
}

#[derive(Debug, Clone)]
pub struct IdentityHeaders {
    pub namespace: String,
    pub key_id: HeaderName,
    pub key_name: HeaderName,
    pub account_id: HeaderName,
    pub user_id: HeaderName,
    pub scopes: HeaderName,
    pub auth_method: HeaderName,
    pub credits_remaining: HeaderName,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    pub name: String,
    /// One or more backends, `host:port` each (a name is resolved when the config is loaded).
    pub addresses: Vec<String>,
    pub tls: bool,
    pub sni: String,
    pub timeouts: UpstreamTimeouts,
    /// Check the upstream's certificate and name (with `tls`).
    pub verify: bool,
    /// CA certificates (DER) the upstream's certificate must chain to, read from `ca_file` at
    /// load; `None`: the system's roots.
    pub ca: Option<Arc<[Vec<u8>]>>,
    pub protocol: UpstreamProtocol,
    /// Further tries of an idempotent request that could not connect (another backend when
    /// the pool has one).
    pub retries: u32,
    /// How several addresses are used (inert with one).
    pub pool: PoolPolicy,
}

/// How long keygate waits on an upstream before answering 504 `upstream_timeout`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpstreamTimeouts {
    pub connect: Duration,
    /// Each read, the response head included (time to first byte).
    pub read: Duration,
    pub write: Duration,
    /// A pooled idle connection is closed after this.
    pub idle: Duration,
    /// The whole exchange: connect, send and the answer's head by then; the body is cut when a
    /// chunk arrives past it (see the proxy's deadline). `None`: no deadline.
    pub total: Option<Duration>,
}

#[derive(Debug, Clone)]
pub struct Route {
    pub name: String,
    pub path: String,
    /// Upper-case method names; empty means any.
    pub methods: Vec<String>,
    /// `None` for local endpoints.
    pub upstream: Option<Arc<Upstream>>,
    pub local: Option<LocalEndpoint>,
    pub auth: AuthMode,
    pub scopes: Vec<String>,
    pub permission: Option<RoutePermission>,
    pub key_limit: Option<Limit>,
    pub account_limit: Option<Limit>,
    pub ip_limit: Option<Limit>,
    pub cost: u64,
    pub charge_on: ChargeOn,
    /// (path parameter, resource kind) pairs checked against the key's resources.
    pub resources: Vec<(String, String)>,
    /// The largest request body forwarded; `None` on local endpoints (they read their own,
    /// smaller, bound).
    pub max_body_bytes: Option<u64>,
    /// `body_schema`, compiled at load: the body is read whole and checked before the charge.
    /// `None` (most routes): the body streams through unread.
    pub body_schema: Option<Arc<crate::body_check::BodySchema>>,
}

impl Route {
    pub fn allows_method(&self, method: &str) -> bool {
        self.methods.is_empty() || self.methods.iter().any(|m| m == method)
    }
}

impl Config {
    /// Reads and validates a config file. Relative `data_dir` is resolved against the current
    /// directory, as a user typing `keygate serve` would expect.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Route names in config order (metric labels, route tables).
    pub fn route_names(&self) -> Vec<String> {
        self.routes.names()
    }

    /// Parses and validates a config, reading the files it names (TLS certificates and keys,
    /// upstream CA files).
    pub fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
        Self::parse_with(text, origin, true)
    }

    /// [`Config::load`] without reading the TLS files the config names, which may live only on
    /// the machines it is deployed to (`keygate check-config --skip-secrets`).
    pub fn load_without_files(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse_with(&text, &path.display().to_string(), false)
    }

    fn parse_with(text: &str, origin: &str, read_files: bool) -> Result<Config, ConfigError> {
        let raw: file::FileConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: origin.to_string(),
            message: e.to_string(),
        })?;
        let mut v = Validator {
            text,
            problems: Vec::new(),
            read_files,
            // Files a route names (`body_schema`) are read beside the config file.
            base_dir: Path::new(origin)
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_default(),
        };
        let config = v.convert(raw);
        if v.problems.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError::Invalid {
                path: origin.to_string(),
                problems: v.problems,
            })
        }
    }
}

/// Whether a Redis URL carries a password (`redis://user:pw@host`, `redis://:pw@host`).
fn url_has_password(url: &str) -> bool {
    url::Url::parse(url).is_ok_and(|u| u.password().is_some())
}

/// Collects every validation problem instead of stopping at the first.
struct Validator<'a> {
    text: &'a str,
    problems: Vec<String>,
    /// Read the TLS files the config names (certificates, keys, CA files).
    read_files: bool,
    /// The config file's directory: relative `body_schema` paths start here.
    base_dir: PathBuf,
}

impl Validator<'_> {
    fn line_of(&self, span: &Range<usize>) -> Option<usize> {
        if span.start == 0 && span.end == 0 {
            return None; // a default, not from the file
        }
        let upto = self.text.get(..span.start)?;
        Some(upto.bytes().filter(|b| *b == b'\n').count() + 1)
    }

    fn problem(&mut self, field: &str, span: &Range<usize>, message: impl std::fmt::Display) {
        match self.line_of(span) {
            Some(line) => self
                .problems
                .push(format!("  line {line}: `{field}`: {message}")),
            None => self.problems.push(format!("  `{field}`: {message}")),
        }
    }

    fn addr(&mut self, field: &str, value: &toml::Spanned<String>) -> SocketAddr {
        match value.get_ref().parse() {
            Ok(a) => a,
            Err(_) => {
                self.problem(
                    field,
                    &value.span(),
                    format!(
                        "`{}` is not an address like 127.0.0.1:8080",
                        value.get_ref()
                    ),
                );
                SocketAddr::from(([127, 0, 0, 1], 0))
            }
        }
    }

    /// Every knob a route accepts must act on it: one the gate cannot apply to this kind of
    /// route is a problem here rather than a setting that silently does nothing.
    fn knobs_apply(
        &mut self,
        r: &file::RouteSection,
        field: &dyn Fn(&str) -> String,
        span: &Range<usize>,
    ) {
        let refuse = |this: &mut Self, knob: &str, set: bool, why: &str| {
            if set {
                this.problem(&field(knob), span, why);
            }
        };
        let anonymous = r.auth == AuthMode::None;
        let session = r.auth == AuthMode::Session;
        if anonymous || session {
            let who = if anonymous {
                "a route without auth has no key"
            } else {
                "a session route is guarded by the user's role, not by a key"
            };
            refuse(self, "scopes", !r.scopes.is_empty(), who);
            refuse(self, "resources", !r.resources.is_empty(), who);
            refuse(self, "permission", r.permission.is_some(), who);
        }
        if anonymous {
            refuse(
                self,
                "account_rate_limit",
                r.account_rate_limit.is_some(),
                "a route without auth has no account to limit",
            );
            // Login limits attempts per email with it; no other anonymous route has a caller.
            refuse(
                self,
                "rate_limit",
                r.rate_limit.is_some() && r.local != Some(LocalKind::Login),
                "a route without auth has no key to limit (use `ip_rate_limit`)",
            );
        }
        refuse(
            self,
            "auth",
            session && r.local.is_none(),
            "session tokens are for keygate's key-management endpoints, not for forwarded routes",
        );
        if r.local.is_some() {
            refuse(
                self,
                "cost",
                r.cost > 0,
                "local endpoints are answered by keygate and never charged",
            );
        }
    }

    /// A route's `body`: only on local endpoints whose answer it shapes, parsed once here.
    fn body_template(
        &mut self,
        r: &file::RouteSection,
        field: &str,
        span: &Range<usize>,
    ) -> Option<crate::local::shape::BodyTemplate> {
        let text = r.body.as_deref()?;
        let Some(kind) = r.local else {
            self.problem(field, span, "only local endpoints have a `body`");
            return None;
        };
        if crate::local::shape::placeholders(kind).is_none() {
            self.problem(
                field,
                span,
                "this local endpoint answers a fixed shape; `body` shapes only \
                 `local = \"balance\"` and `local = \"transactions\"`",
            );
            return None;
        }
        match crate::local::shape::BodyTemplate::parse(text, kind) {
            Ok(t) => Some(t),
            Err(e) => {
                self.problem(field, span, e.to_string());
                None
            }
        }
    }

    fn limit(
        &mut self,
        field: &str,
        section: Option<&toml::Spanned<file::LimitSection>>,
    ) -> Option<Limit> {
        let section = section?;
        let l = section.get_ref();
        let limit = Limit {
            requests: l.requests,
            per_seconds: l.per_seconds,
            burst: l.burst.unwrap_or(l.requests),
            algorithm: l.algorithm,
        };
        if l.algorithm == crate::ratelimit::Algorithm::SlidingWindow && l.burst.is_some() {
            self.problem(
                field,
                &section.span(),
                "`burst` is a token-bucket setting; a sliding window admits `requests` in any \
                 `per_seconds` span",
            );
            return None;
        }
        let ok = (1..=1_000_000_000).contains(&limit.requests)
            && (1..=86_400 * 366).contains(&limit.per_seconds)
            && (1..=u64::from(u32::MAX)).contains(&limit.burst);
        if !ok {
            self.problem(
                field,
                &section.span(),
                "needs requests >= 1, per_seconds between 1 and a year, burst >= 1",
            );
            return None;
        }
        Some(limit)
    }

    fn header(&mut self, field: &str, span: &Range<usize>, name: &str) -> HeaderName {
        match HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes()) {
            Ok(h) => h,
            Err(_) => {
                self.problem(field, span, format!("`{name}` is not a valid header name"));
                HeaderName::from_static("x-invalid")
            }
        }
    }

    /// `[listeners.tls]`; its certificates are read when files are.
    fn tls_listener(
        &mut self,
        section: &toml::Spanned<file::TlsListenerSection>,
        public: SocketAddr,
    ) -> TlsListener {
        let t = section.get_ref();
        let address = self.addr("listeners.tls.address", &t.address);
        if address == public {
            self.problem(
                "listeners.tls.address",
                &t.address.span(),
                "is the address of `listeners.public`; give the TLS listener its own port",
            );
        }
        let certs = t.certs.get_ref();
        if certs.is_empty() {
            self.problem(
                "listeners.tls.certs",
                &t.certs.span(),
                "needs at least one { cert = \"...pem\", key = \"...pem\" }",
            );
        }
        let files: Vec<crate::tls::CertFiles> = certs
            .iter()
            .map(|c| crate::tls::CertFiles {
                cert: PathBuf::from(c.get_ref().cert.get_ref()),
                key: PathBuf::from(c.get_ref().key.get_ref()),
            })
            .collect();
        let loaded = if self.read_files && !files.is_empty() {
            match crate::tls::CertSet::load(&files) {
                Ok(set) => Some(Arc::new(set)),
                Err((i, e)) => {
                    let at = certs[i].span();
                    self.problem(&format!("listeners.tls.certs[{i}]"), &at, e);
                    None
                }
            }
        } else {
            None
        };
        TlsListener {
            address,
            http2: t.http2,
            files,
            certs: loaded,
        }
    }

    /// An upstream's TLS and protocol settings: (verify, CA certificates, protocol).
    fn upstream_tls(
        &mut self,
        name: &str,
        u: &file::UpstreamSection,
    ) -> (bool, Option<Arc<[Vec<u8>]>>, UpstreamProtocol) {
        let field = |f: &str| format!("upstreams.{name}.{f}");
        let needs_tls = |this: &mut Self, f: &str, span: Range<usize>| {
            if !u.tls {
                this.problem(&field(f), &span, "applies only with `tls = true`");
            }
        };
        let verify = match &u.verify {
            Some(v) => {
                needs_tls(self, "verify", v.span());
                if !*v.get_ref() && u.tls {
                    tracing::warn!(
                        upstream = name,
                        "verify = false: any certificate is accepted from this upstream, so \
                         anyone on the path to it can read and change its traffic"
                    );
                }
                *v.get_ref()
            }
            None => true,
        };
        let ca = u.ca_file.as_ref().and_then(|path| {
            needs_tls(self, "ca_file", path.span());
            if !self.read_files {
                return None;
            }
            match crate::tls::load_ca(Path::new(path.get_ref())) {
                Ok(certs) => Some(Arc::from(certs)),
                Err(e) => {
                    self.problem(&field("ca_file"), &path.span(), e);
                    None
                }
            }
        });
        let protocol = match &u.protocol {
            Some(p) => {
                let why = match (p.get_ref(), u.tls) {
                    (UpstreamProtocol::H2, false) => {
                        Some("\"h2\" is HTTP/2 over TLS: set `tls = true`, or use \"h2c\"")
                    }
                    (UpstreamProtocol::H2c, true) => {
                        Some("\"h2c\" is HTTP/2 in cleartext: with `tls = true` use \"h2\"")
                    }
                    _ => None,
                };
                if let Some(why) = why {
                    self.problem(&field("protocol"), &p.span(), why);
                }
                *p.get_ref()
            }
            None => UpstreamProtocol::H1,
        };
        (verify, ca, protocol)
    }

    fn convert(&mut self, raw: file::FileConfig) -> Config {
        let none = 0..0;
        let s = raw.server;
        if s.threads == 0 {
            self.problem("server.threads", &none, "must be at least 1");
        }
        if s.request_header_timeout_seconds == 0 {
            self.problem(
                "server.request_header_timeout_seconds",
                &none,
                "must be at least 1",
            );
        }
        if s.upstream_keepalive_pool_size == 0 {
            self.problem(
                "server.upstream_keepalive_pool_size",
                &none,
                "must be at least 1",
            );
        }
        if s.max_connections_per_ip == 0 {
            self.problem("server.max_connections_per_ip", &none, "must be at least 1");
        }
        let mut trusted = Vec::new();
        for entry in &s.trusted_proxies {
            match TrustedProxies::parse_entry(entry.get_ref()) {
                Some(net) => trusted.push(net),
                None => self.problem(
                    "server.trusted_proxies",
                    &entry.span(),
                    format!(
                        "`{}` is not a CIDR like 10.0.0.0/8 or fd00::/8, nor an IP address",
                        entry.get_ref().escape_debug()
                    ),
                ),
            }
        }
        let trusted_proxies = TrustedProxies::new(trusted);
        let public = self.addr("listeners.public", &raw.listeners.public);
        let tls = raw
            .listeners
            .tls
            .as_ref()
            .map(|t| self.tls_listener(t, public));
        let listeners = Listeners {
            public,
            admin: self.addr("listeners.admin", &raw.listeners.admin),
            ops: self.addr("listeners.ops", &raw.listeners.ops),
            proxy_protocol: raw.listeners.proxy_protocol,
            h2c: raw.listeners.h2c,
            tls,
        };
        let data_dir = PathBuf::from(&s.data_dir);
        let store = match raw.store.backend {
            StoreBackend::Sqlite => StoreSettings::Sqlite {
                path: data_dir.join(&raw.store.path),
            },
            StoreBackend::Redis => match (&raw.store.url, raw.store.cluster_nodes.is_empty()) {
                (Some(_), false) => {
                    self.problem(
                        "store.url",
                        &none,
                        "set either `url` or `cluster_nodes`, not both",
                    );
                    StoreSettings::Redis { url: String::new() }
                }
                (Some(url), true) => {
                    if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
                        self.problem("store.url", &none, "must start with redis://");
                    }
                    StoreSettings::Redis { url: url.clone() }
                }
                (None, false) => StoreSettings::RedisCluster {
                    nodes: raw.store.cluster_nodes.clone(),
                },
                (None, true) => {
                    self.problem(
                        "store.url",
                        &none,
                        "backend = \"redis\" needs `url` or `cluster_nodes`",
                    );
                    StoreSettings::Redis { url: String::new() }
                }
            },
        };

        if let Some(password) = &raw.store.password {
            let inline = match &store {
                StoreSettings::Sqlite { .. } => Some("the SQLite store has no password"),
                StoreSettings::Redis { url } if url_has_password(url) => {
                    Some("the url already has a password: keep it in one place, out of the url")
                }
                StoreSettings::RedisCluster { nodes } if nodes.iter().any(|n| url_has_password(n)) => {
                    Some("a cluster node url already has a password: keep it in one place, out of the urls")
                }
                _ => None,
            };
            if let Some(why) = inline {
                self.problem("store.password", &password.span(), why);
            }
        }
        if !matches!(store, StoreSettings::Sqlite { .. }) && raw.secrets.pepper.is_none() {
            self.problem(
                "secrets.pepper",
                &none,
                "must be configured ({ env = \"VAR\" } or { file = \"/path\" }) with backend = \"redis\": \
                 every replica must hash keys with the same pepper, and a generated one would \
                 differ per replica",
            );
        }
        if !(10..=60_000).contains(&raw.store.timeout_ms) {
            self.problem(
                "store.timeout_ms",
                &none,
                "must be between 10 and 60000 (milliseconds)",
            );
        }

        let prefix = raw.keys.prefix.get_ref().clone();
        let prefix_ok = !prefix.is_empty()
            && prefix.len() <= 16
            && prefix
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if !prefix_ok {
            self.problem(
                "keys.prefix",
                &raw.keys.prefix.span(),
                "must be 1-16 characters of a-z, 0-9 and _ (for example `sk_live_`)",
            );
        }
        let body_len = *raw.keys.body_length.get_ref();
        if !(MIN_SHORT_BODY_LEN..=128).contains(&body_len) {
            self.problem(
                "keys.body_length",
                &raw.keys.body_length.span(),
                format!("must be between {MIN_SHORT_BODY_LEN} and 128"),
            );
        }

        let legacy = self.legacy_formats(&raw.keys.legacy, &prefix);

        let max_per_user = *raw.keys.max_per_user.get_ref();
        if !(1..=MAX_KEYS_PER_USER).contains(&max_per_user) {
            self.problem(
                "keys.max_per_user",
                &raw.keys.max_per_user.span(),
                format!("must be between 1 and {MAX_KEYS_PER_USER}"),
            );
        }
        let self_service_scopes = raw.keys.self_service_scopes.as_ref().map(|list| {
            if let Some(bad) = list.get_ref().iter().find(|s| !valid_scope(s)) {
                self.problem(
                    "keys.self_service_scopes",
                    &list.span(),
                    format!(
                        "`{}` is not a scope (1-64 letters, digits, and : . _ -)",
                        bad.escape_debug()
                    ),
                );
            }
            list.get_ref().clone()
        });

        let mut credential_sources = Vec::new();
        if raw.credentials.sources.is_empty() {
            self.problem("credentials.sources", &none, "needs at least one source");
        }
        for src in &raw.credentials.sources {
            let span = src.span();
            let src = src.get_ref();
            let header = self.header("credentials.sources.header", &span, &src.header);
            let scheme = src
                .scheme
                .as_ref()
                .map(|s| format!("{} ", s.trim().to_ascii_lowercase()));
            credential_sources.push(CredentialSource { header, scheme });
        }

        let c = raw.cache;
        if c.max_entries == 0 {
            self.problem("cache.max_entries", &none, "must be at least 1");
        }

        let id = raw.identity;
        let ns_span = id.namespace.span();
        let namespace = id.namespace.get_ref().to_ascii_lowercase();
        if namespace.len() < 2 {
            self.problem(
                "identity.namespace",
                &ns_span,
                "must be a header prefix such as `x-keygate-`",
            );
        }
        let mut ident = |field: &str, name: &Option<toml::Spanned<String>>| {
            let (span, name) = match name {
                Some(n) => (n.span(), n.get_ref().clone()),
                None => (0..0, format!("{namespace}{}", field.replace('_', "-"))),
            };
            let name = &name;
            let h = self.header(&format!("identity.{field}"), &span, name);
            if !h.as_str().starts_with(&namespace) {
                self.problem(
                    &format!("identity.{field}"),
                    &span,
                    format!("`{name}` must start with the identity namespace `{namespace}`, or a client could spoof it"),
                );
            }
            h
        };
        let identity = IdentityHeaders {
            key_id: ident("key_id", &id.key_id),
            key_name: ident("key_name", &id.key_name),
            account_id: ident("account_id", &id.account_id),
            user_id: ident("user_id", &id.user_id),
            scopes: ident("scopes", &id.scopes),
            auth_method: ident("auth_method", &id.auth_method),
            credits_remaining: ident("credits_remaining", &id.credits_remaining),
            namespace,
        };

        let strip_span = raw.forwarding.strip_headers.span();
        let strip_headers = raw
            .forwarding
            .strip_headers
            .get_ref()
            .iter()
            .map(|name| self.header("forwarding.strip_headers", &strip_span, name))
            .collect();

        let default_max_body = *raw.forwarding.max_body_bytes.get_ref();

        let mut upstreams = HashMap::new();
        for (name, u) in raw.upstreams {
            let addresses = self.addresses(&name, &u);
            let host = addresses.first().and_then(|a| pool::host_of(a));
            let (verify, ca, protocol) = self.upstream_tls(&name, &u);
            let sni = u
                .sni
                .clone()
                .unwrap_or_else(|| host.unwrap_or_default().to_string());
            let mut timeout = |field: &str, value: &toml::Spanned<u64>| {
                let ms = *value.get_ref();
                if !(1..=3_600_000).contains(&ms) {
                    self.problem(
                        &format!("upstreams.{name}.{field}"),
                        &value.span(),
                        "must be between 1 and 3600000 (milliseconds)",
                    );
                }
                Duration::from_millis(ms)
            };
            let timeouts = UpstreamTimeouts {
                connect: timeout("connect_timeout_ms", &u.connect_timeout_ms),
                read: timeout("read_timeout_ms", &u.read_timeout_ms),
                write: timeout("write_timeout_ms", &u.write_timeout_ms),
                idle: timeout("idle_timeout_ms", &u.idle_timeout_ms),
                total: u
                    .total_timeout_ms
                    .as_ref()
                    .map(|t| timeout("total_timeout_ms", t)),
            };
            if *u.retries.get_ref() > 10 {
                self.problem(
                    &format!("upstreams.{name}.retries"),
                    &u.retries.span(),
                    "must be between 0 and 10",
                );
            }
            let pool = self.pool_policy(&name, &u, addresses.len(), &sni);
            upstreams.insert(
                name.clone(),
                Arc::new(Upstream {
                    name,
                    addresses,
                    tls: u.tls,
                    sni,
                    timeouts,
                    verify,
                    ca,
                    protocol,
                    retries: *u.retries.get_ref(),
                    pool,
                }),
            );
        }

        let mut routes = Vec::new();
        // Where each route is in the file, for problems found once all routes are read.
        let mut route_spans: Vec<(String, Range<usize>)> = Vec::new();
        let mut names: HashMap<String, usize> = HashMap::new();
        for (i, r) in raw.routes.into_iter().enumerate() {
            let field = |f: &str| format!("routes[{i}].{f}");
            let route_span = r.path.span();
            route_spans.push((r.path.get_ref().clone(), route_span.clone()));
            if let Some(name) = &r.name {
                // A name is a metric label and a log field: two routes must not share one.
                if let Some(first) = names.insert(name.get_ref().clone(), i) {
                    self.problem(
                        &field("name"),
                        &name.span(),
                        format!(
                            "`{}` is already the name of routes[{first}]",
                            name.get_ref()
                        ),
                    );
                }
            }
            let upstream = match (&r.upstream, &r.local) {
                (Some(name), None) => match upstreams.get(name.get_ref()) {
                    Some(u) => Some(u.clone()),
                    None => {
                        self.problem(
                            &field("upstream"),
                            &name.span(),
                            format!("no upstream named `{}` in [upstreams]", name.get_ref()),
                        );
                        None
                    }
                },
                (None, Some(_)) => None,
                (Some(name), Some(_)) => {
                    self.problem(
                        &field("upstream"),
                        &name.span(),
                        "a route has either `upstream` or `local`, not both",
                    );
                    None
                }
                (None, None) => {
                    self.problem(
                        &field("upstream"),
                        &route_span,
                        "needs `upstream` or `local`",
                    );
                    None
                }
            };
            if let Some(kind) = r.local {
                let allowed: &[AuthMode] = match kind {
                    LocalKind::Login | LocalKind::Jwks => &[AuthMode::None],
                    LocalKind::Exchange => &[AuthMode::ApiKey],
                    LocalKind::Keys | LocalKind::Key | LocalKind::KeyRotate => &[AuthMode::Session],
                    LocalKind::Balance | LocalKind::Transactions => {
                        &[AuthMode::ApiKey, AuthMode::Jwt, AuthMode::Any]
                    }
                    // The original request's route decides how its caller authenticates.
                    LocalKind::Verify => &[AuthMode::None],
                };
                if !allowed.contains(&r.auth) {
                    self.problem(
                        &field("auth"),
                        &route_span,
                        format!("local = \"{kind:?}\" needs auth = one of {allowed:?}")
                            .to_lowercase(),
                    );
                }
                let needs_key_id = matches!(kind, LocalKind::Key | LocalKind::KeyRotate);
                if needs_key_id && !r.path.get_ref().contains("{key_id}") {
                    self.problem(&field("path"), &route_span, "needs a `{key_id}` parameter");
                }
            }
            crate::forward_auth::check_route(
                r.local,
                r.original,
                r.path.get_ref(),
                &mut |what, message| self.problem(&field(what), &route_span, message),
            );
            for (param, kind) in &r.resources {
                if !r.path.get_ref().contains(&format!("{{{param}}}")) {
                    self.problem(
                        &field("resources"),
                        &route_span,
                        format!("`{param}` is not a parameter of the path (for `{kind}`)"),
                    );
                }
            }
            let body = self.body_template(&r, &field("body"), &route_span);
            self.knobs_apply(&r, &field, &route_span);
            let key_limit = self.limit(&field("rate_limit"), r.rate_limit.as_ref());
            let account_limit =
                self.limit(&field("account_rate_limit"), r.account_rate_limit.as_ref());
            let ip_limit = self.limit(&field("ip_rate_limit"), r.ip_rate_limit.as_ref());
            let max_body_bytes = match (&r.local, &r.max_body_bytes) {
                (Some(_), Some(set)) => {
                    self.problem(
                        &field("max_body_bytes"),
                        &set.span(),
                        format!(
                            "local endpoints read at most {} KiB of body; the limit is for \
                             forwarded routes",
                            crate::local::MAX_BODY / 1024
                        ),
                    );
                    None
                }
                (Some(_), None) => None,
                (None, set) => Some(set.as_ref().map_or(default_max_body, |v| *v.get_ref())),
            };
            let (body_schema, max_body_bytes) = self.body_schema(&r, max_body_bytes, &field);
            if r.auth == AuthMode::None && r.cost > 0 {
                self.problem(
                    &field("cost"),
                    &route_span,
                    "a route without auth has no account to charge",
                );
            }
            if !r.path.get_ref().starts_with('/') {
                self.problem(&field("path"), &r.path.span(), "must start with /");
            }
            let mut methods = Vec::new();
            for m in &r.methods {
                let up = m.get_ref().to_ascii_uppercase();
                if http::Method::from_bytes(up.as_bytes()).is_err() || up.is_empty() {
                    self.problem(
                        &field("methods"),
                        &m.span(),
                        format!("`{}` is not an HTTP method", m.get_ref()),
                    );
                }
                methods.push(up);
            }
            let mut scopes = Vec::new();
            for sc in &r.scopes {
                if !valid_scope(sc.get_ref()) {
                    self.problem(
                        &field("scopes"),
                        &sc.span(),
                        format!(
                            "`{}` is not a scope (letters, digits, and : . _ -)",
                            sc.get_ref()
                        ),
                    );
                }
                scopes.push(sc.get_ref().clone());
            }
            routes.push(Route {
                name: r
                    .name
                    .map(toml::Spanned::into_inner)
                    .unwrap_or_else(|| format!("route{i}")),
                path: r.path.into_inner(),
                methods,
                upstream,
                local: r.local.map(|kind| LocalEndpoint {
                    kind,
                    body,
                    original: r.original,
                }),
                auth: r.auth,
                scopes,
                // Local endpoints read (a balance, a token exchange); the key-management ones are
                // guarded by the session, not by the key's permission.
                permission: r.permission.or(r.local.map(|_| RoutePermission::Read)),
                key_limit,
                account_limit,
                ip_limit,
                cost: r.cost,
                charge_on: r.charge_on,
                resources: r
                    .resources
                    .iter()
                    .map(|(p, k)| (p.clone(), k.clone()))
                    .collect(),
                max_body_bytes,
                body_schema,
            });
        }
        // A table that fails to build leaves a problem, so the empty one is never returned.
        let routes = crate::router::RouteTable::new(routes).unwrap_or_else(|errors| {
            for e in errors {
                let at = route_spans.iter().position(|(path, _)| *path == e.path);
                match at {
                    Some(i) => {
                        let span = route_spans[i].1.clone();
                        self.problem(&format!("routes[{i}].path"), &span, e.message)
                    }
                    None => self.problem("routes", &none, e.to_string()),
                }
            }
            crate::router::RouteTable::empty()
        });

        let mut plans = HashMap::new();
        for (name, p) in &raw.plans {
            let plan = Plan {
                key: self.limit(&format!("plans.{name}.key"), p.key.as_ref()),
                account: self.limit(&format!("plans.{name}.account"), p.account.as_ref()),
            };
            plans.insert(name.clone(), plan);
        }
        let rate_limit_mode = raw.rate_limits.mode;
        if rate_limit_mode == RateLimitMode::Redis && matches!(store, StoreSettings::Sqlite { .. })
        {
            self.problem(
                "rate_limits.mode",
                &none,
                "`redis` needs `[store] backend = \"redis\"`",
            );
        }

        let mut overrides = HashMap::new();
        for (reason, t) in raw.errors {
            let status = t.status.unwrap_or(reason.default_status());
            if !(400..=599).contains(&status) {
                self.problem(
                    &format!("errors.{reason}.status"),
                    &none,
                    "must be between 400 and 599",
                );
            }
            let content_type = t.content_type.unwrap_or_else(|| "application/json".into());
            let body = t.body.unwrap_or_else(|| DEFAULT_BODY.into());
            let message = t.message.unwrap_or_else(|| reason.default_message().into());
            let tpl = Template::new(status, content_type, body, message);
            if tpl.content_type.contains("json") {
                let sample = tpl.render(
                    reason,
                    &crate::errors::Detail {
                        scope: Some("s".into()),
                        message: Some("m".into()),
                    },
                );
                if serde_json::from_str::<serde_json::Value>(&sample).is_err() {
                    self.problem(
                        &format!("errors.{reason}.body"),
                        &none,
                        "is not valid JSON once filled in",
                    );
                }
            }
            overrides.insert(reason, tpl);
        }

        Config {
            server: ServerSettings {
                threads: s.threads.max(1),
                work_stealing: s.work_stealing,
                drain: Duration::from_secs(s.drain_seconds),
                grace_period_seconds: s.grace_period_seconds,
                graceful_shutdown_timeout_seconds: s.graceful_shutdown_timeout_seconds,
                request_header_timeout: Duration::from_secs(s.request_header_timeout_seconds),
                max_connections_per_ip: s.max_connections_per_ip,
                upstream_keepalive_pool_size: s.upstream_keepalive_pool_size,
                trusted_proxies,
            },
            listeners,
            store,
            redis_timeout: Duration::from_millis(raw.store.timeout_ms),
            data_dir,
            secret_refs: SecretRefs {
                pepper: raw.secrets.pepper,
                admin_token: raw.secrets.admin_token,
                store_password: raw.store.password.map(toml::Spanned::into_inner),
            },
            warnings: legacy::key_warnings(body_len, raw.keys.checksum),
            key_format: KeyFormat::new(prefix, body_len)
                .with_checksum(raw.keys.checksum)
                .with_legacy(legacy),
            self_service: SelfServiceKeys {
                max_per_user,
                // Unset: what the routes check, so a user can grant what keygate enforces and
                // nothing an upstream might read as more (`admin:all`).
                scopes: Some(self_service_scopes.unwrap_or_else(|| {
                    let mut all: Vec<String> =
                        routes.iter().flat_map(|r| r.scopes.clone()).collect();
                    all.sort();
                    all.dedup();
                    all
                })),
            },
            credential_sources,
            cache: CacheSettings {
                ttl: Duration::from_secs(c.ttl_seconds.max(1)),
                negative_ttl: Duration::from_secs(c.negative_ttl_seconds),
                max_entries: c.max_entries.max(1),
                max_stale: Duration::from_secs(c.max_stale_seconds),
            },
            identity,
            strip_headers,
            last_used_interval: Duration::from_secs(raw.usage.last_used_interval_seconds),
            log: raw.log.clone(),
            routes,
            templates: Templates::new(overrides),
            rate_limit_mode,
            plans,
            tokens: TokenConfig {
                algorithm: raw.tokens.algorithm,
                secret: raw.tokens.secret.clone(),
                private_key: raw.tokens.private_key.clone(),
                key_id: raw.tokens.key_id.clone(),
                issuer: raw.tokens.issuer.clone(),
                audience: raw.tokens.audience.clone(),
                session_ttl: Duration::from_secs(raw.tokens.session_ttl_seconds),
                exchange_ttl: Duration::from_secs(raw.tokens.exchange_ttl_seconds),
            },
        }
    }
}

/// Scope names travel in headers and JSON bodies; keeping them to a plain alphabet means neither
/// needs escaping.
pub fn valid_scope(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b':' | b'.' | b'_' | b'-'))
}

#[cfg(test)]
mod tests;
