//! The request path, top to bottom: route -> extract -> verify -> authorize -> limit -> charge
//! -> outcome.
//!
//! Nothing here knows pingora: the proxy module hands in the method, path, headers and client IP
//! and maps the [`Decision`] to a forwarded request, a local answer or an error response. That
//! keeps the whole pipeline testable (and benchmarkable) without sockets.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use http::HeaderMap;

use crate::authz::{self, Rejection};
use crate::cache::{CachedCredential, KeyCache, Lookup};
use crate::config::{AuthMode, ChargeOn, Config, CredentialSource, Route};
use crate::errors::Reason;
use crate::identity::AuthMethod;
use crate::keys::KeyHasher;
use crate::local::{Caller, LocalContext};
use crate::metrics::{Metrics, Outcome, RouteCounters};
use crate::ratelimit::{Limit, RateLimiter, RateStatus};
use crate::router::Router;
use crate::store::{
    Account, AccountStatus, ChargeOutcome, Credential, KeyRecord, KeyStatus, Permission, Store,
};
use crate::tokens::{looks_like_jwt, Claims, TokenError, TokenKind, Tokens};
use crate::usage::UsageRecorder;

/// The parts of a request the gate reads.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub headers: &'a HeaderMap,
    pub client_ip: Option<IpAddr>,
}

#[derive(Debug, Clone)]
pub enum Decision {
    /// Forward to the route's upstream; `principal` is `None` on `auth = "none"` routes.
    Forward {
        route: usize,
        principal: Option<Arc<CachedCredential>>,
        /// The bucket the `RateLimit-*` headers report, on limited routes.
        rate: Option<RateStatus>,
        /// Credits taken for this request, and the balance after them.
        charge: Option<Charge>,
    },
    /// Answered by keygate itself (a local endpoint).
    Local {
        route: usize,
        caller: Caller,
        rate: Option<RateStatus>,
        /// The `{key_id}` path parameter, for the self-service key endpoints.
        key_id: Option<String>,
    },
    Reject {
        route: Option<usize>,
        rejection: Rejection,
        rate: Option<RateStatus>,
    },
}

/// Credits charged for one request. Kept until the response for `charge_on = "success"` routes,
/// which give them back unless the upstream answers 2xx.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Charge {
    pub account_id: String,
    pub key_id: String,
    pub amount: u64,
    pub balance_after: i64,
    pub refund_unless_success: bool,
}

pub struct Gate {
    pub config: Arc<Config>,
    router: Router,
    /// Request counters for this route table.
    counters: RouteCounters,
    cache: Arc<KeyCache>,
    hasher: KeyHasher,
    usage: UsageRecorder,
    metrics: Arc<Metrics>,
    limiter: Arc<RateLimiter>,
    /// For credits; `None` only in tests and benches of routes that cost nothing.
    store: Option<Arc<dyn Store>>,
    /// For JWT routes and local endpoints; `None` only in tests and benches without them.
    tokens: Option<Arc<Tokens>>,
    local: Option<Arc<LocalContext>>,
}

impl Gate {
    pub fn new(
        config: Arc<Config>,
        cache: Arc<KeyCache>,
        hasher: KeyHasher,
        usage: UsageRecorder,
        metrics: Arc<Metrics>,
    ) -> Result<Self, String> {
        let router = Router::new(&config.routes)?;
        let counters = metrics.route_counters(&config.route_names());
        Ok(Self {
            config,
            router,
            counters,
            cache,
            hasher,
            usage,
            limiter: Arc::new(RateLimiter::local(metrics.clone())),
            metrics,
            store: None,
            tokens: None,
            local: None,
        })
    }

    /// The same gate on a new configuration (a reload): routes, limits, plans, templates and
    /// credential sources from `config`; the cache, store, limiter, tokens and metrics shared.
    pub fn reconfigured(&self, config: Arc<Config>) -> Result<Gate, String> {
        let local = self.local.as_ref().map(|l| {
            Arc::new(LocalContext {
                config: config.clone(),
                ..LocalContext::clone(l)
            })
        });
        Ok(Gate {
            router: Router::new(&config.routes)?,
            counters: self.metrics.route_counters(&config.route_names()),
            config,
            cache: self.cache.clone(),
            hasher: self.hasher.clone(),
            usage: self.usage.clone(),
            metrics: self.metrics.clone(),
            limiter: self.limiter.clone(),
            store: self.store.clone(),
            tokens: self.tokens.clone(),
            local,
        })
    }

    /// Counts a finished request under this gate's route table.
    pub fn count_request(&self, route: Option<usize>, outcome: Outcome) {
        self.counters.count(route, outcome);
    }

    /// Verifies access and session tokens with `tokens`.
    pub fn with_tokens(mut self, tokens: Arc<Tokens>) -> Self {
        self.tokens = Some(tokens);
        self
    }

    /// What local endpoints need to answer.
    pub fn with_local(mut self, local: Arc<LocalContext>) -> Self {
        self.local = Some(local);
        self
    }

    pub fn local(&self) -> Option<&Arc<LocalContext>> {
        self.local.as_ref()
    }

    /// Uses `limiter` (local or Redis-backed) instead of the default local one.
    pub fn with_limiter(mut self, limiter: Arc<RateLimiter>) -> Self {
        self.limiter = limiter;
        self
    }

    /// The store credits are charged to.
    pub fn with_store(mut self, store: Arc<dyn Store>) -> Self {
        self.store = Some(store);
        self
    }

    /// Periodic upkeep off the request path: forgets full rate-limit buckets and token cut-offs
    /// older than the longest token lifetime (no token they could stop is still valid).
    pub fn housekeeping(&self) {
        self.limiter.retain_recent();
        if let Some(tokens) = &self.tokens {
            let longest = tokens.longest_ttl_secs();
            let dropped = self
                .cache
                .prune_cutoffs(crate::store::now().saturating_sub(longest));
            if dropped > 0 {
                tracing::debug!(dropped, "forgot expired token cut-offs");
            }
        }
    }

    pub fn limiter(&self) -> &Arc<RateLimiter> {
        &self.limiter
    }

    /// Decides one request and records its decision time.
    pub async fn decide(&self, req: Request<'_>) -> Decision {
        let started = Instant::now();
        let decision = self.decide_inner(req).await;
        self.metrics.decision_time(started.elapsed().as_secs_f64());
        decision
    }

    async fn decide_inner(&self, req: Request<'_>) -> Decision {
        // 1. Route, on canonical paths only: `/open/../v1/x` must not match `/open/{*rest}` and
        //    then reach an upstream that resolves the dot segments into a protected route.
        if !is_canonical_path(req.path) {
            return reject(None, Reason::InvalidPath);
        }
        let Some(matched) = self.router.find(&self.config.routes, req.method, req.path) else {
            return reject(None, Reason::RouteNotFound);
        };
        let index = matched.index;
        let Some(route) = self.config.routes.get(index) else {
            return reject(None, Reason::RouteNotFound);
        };
        if route.auth == AuthMode::None {
            let rate = match (route.ip_limit, req.client_ip) {
                (Some(limit), Some(ip)) => {
                    let status = self.limiter.check(&format!("ip:{ip}"), limit).await;
                    if !status.allowed() {
                        return limited(index, status);
                    }
                    Some(status)
                }
                _ => None,
            };
            if route.local.is_some() {
                return Decision::Local {
                    route: index,
                    caller: Caller::Anonymous,
                    rate,
                    key_id: None,
                };
            }
            return Decision::Forward {
                route: index,
                principal: None,
                rate,
                charge: None,
            };
        }

        // 2. Extract.
        let Some(candidate) = extract(&self.config.credential_sources, req.headers) else {
            return reject(Some(index), Reason::MissingCredential);
        };

        // 3. Verify, as the route's auth mode asks: a key (format first, so malformed keys cost
        //    no hashing, cache or store work), an access token or a session token (signature and
        //    claims checked locally, no store read).
        // Only routes that take tokens need to tell a token from a key.
        let is_jwt = route.auth != AuthMode::ApiKey && looks_like_jwt(candidate);
        let verified = match (route.auth, is_jwt) {
            (AuthMode::Session, true) => match self.verify_session(candidate) {
                Ok(session) => {
                    return Decision::Local {
                        route: index,
                        caller: Caller::Session(session),
                        rate: None,
                        key_id: matched.params.get("key_id").map(str::to_string),
                    }
                }
                Err(reason) => Err(reason),
            },
            // A key is refused where a session is required, and a token where a key is.
            (AuthMode::Session, false) => Err(Reason::InvalidToken),
            (AuthMode::Jwt | AuthMode::Any, true) => self.verify_access(candidate),
            (AuthMode::Jwt, false) => Err(Reason::InvalidToken),
            (AuthMode::ApiKey | AuthMode::Any, _) => self.verify_key(candidate).await,
            (AuthMode::None, _) => Err(Reason::RouteNotFound),
        };
        let cached = match verified {
            Ok(c) => c,
            Err(reason) => return reject(Some(index), reason),
        };

        // 4. Authorize: status, expiry, account, permission, scopes, resources.
        let now = crate::store::now();
        let credential = &cached.credential;
        let authorized = authz::authorize(credential, route, req.method, now).and_then(|()| {
            authz::check_resources(credential, route, |name| {
                matched.params.get(name).map(str::to_string)
            })
        });
        if let Err(rejection) = authorized {
            return Decision::Reject {
                route: Some(index),
                rejection,
                rate: None,
            };
        }

        // 5. Rate limit: the key's bucket, then the account's.
        let (key_limit, account_limit) = self.limits(route, credential);
        let mut rate = None;
        if let Some((limit, per_route)) = key_limit {
            // A route's own limit is per key on that route (an exchange endpoint's 10/min does
            // not eat into the API's budget); a plan or key override is per key overall.
            let status = if per_route {
                let bucket = format!("{}|{}", route.name, credential.key.id);
                self.limiter.check(&bucket, limit).await
            } else {
                self.limiter.check(&credential.key.id, limit).await
            };
            if !status.allowed() {
                return limited(index, status);
            }
            rate = Some(status);
        }
        if let Some(limit) = account_limit {
            let status = self.limiter.check(&credential.account.id, limit).await;
            if !status.allowed() {
                return limited(index, status);
            }
            rate = rate.or(Some(status));
        }

        // 6. Record (off the request path: a queued, debounced write).
        if cached.method == AuthMethod::ApiKey {
            self.usage
                .touch(&credential.key.id, &cached.last_used_sent, now);
        }

        if route.local.is_some() {
            return Decision::Local {
                route: index,
                caller: Caller::Key(cached),
                rate,
                key_id: None,
            };
        }

        // 7. Charge credits.
        let charge = match self.charge(route, credential).await {
            Ok(charge) => charge,
            Err(reason) => {
                return Decision::Reject {
                    route: Some(index),
                    rejection: Rejection::new(reason),
                    rate,
                }
            }
        };
        Decision::Forward {
            route: index,
            principal: Some(cached),
            rate,
            charge,
        }
    }

    async fn verify_key(&self, candidate: &str) -> Result<Arc<CachedCredential>, Reason> {
        if self.config.key_format.validate(candidate).is_err() {
            return Err(Reason::MalformedCredential);
        }
        let hash = self.hasher.hash(candidate);
        match self.cache.get_or_load(&hash).await {
            Ok(Lookup::Found(c)) => Ok(c),
            Ok(Lookup::Unknown) => Err(Reason::InvalidKey),
            Err(e) => {
                tracing::warn!(error = %e, "store lookup failed");
                Err(Reason::StoreUnavailable)
            }
        }
    }

    /// An access token stands for its key until it expires or its key, user or account is cut.
    fn verify_access(&self, token: &str) -> Result<Arc<CachedCredential>, Reason> {
        let tokens = self.tokens.as_ref().ok_or(Reason::InvalidToken)?;
        if !self.cache.cutoffs_loaded() {
            // Started while the store was away: revocations made before we started are unknown.
            return Err(Reason::StoreUnavailable);
        }
        let claims = tokens
            .verify(token, TokenKind::Access)
            .map_err(token_reason)?;
        let key_id = claims.kid_key.as_deref().unwrap_or(&claims.sub);
        if self.cache.token_cut(key_id, claims.iat) {
            return Err(Reason::KeyRevoked);
        }
        if self.cache.token_cut(&claims.acc, claims.iat) {
            return Err(Reason::AccountSuspended);
        }
        if claims
            .usr
            .as_deref()
            .is_some_and(|u| self.cache.token_cut(u, claims.iat))
        {
            return Err(Reason::KeyDisabled);
        }
        Ok(Arc::new(CachedCredential::from_token(
            credential_from_claims(claims),
        )))
    }

    fn verify_session(&self, token: &str) -> Result<Arc<Claims>, Reason> {
        let tokens = self.tokens.as_ref().ok_or(Reason::InvalidToken)?;
        if !self.cache.cutoffs_loaded() {
            return Err(Reason::StoreUnavailable);
        }
        let claims = tokens
            .verify(token, TokenKind::Session)
            .map_err(token_reason)?;
        if self.cache.token_cut(&claims.sub, claims.iat)
            || self.cache.token_cut(&claims.acc, claims.iat)
        {
            return Err(Reason::InvalidToken);
        }
        Ok(Arc::new(claims))
    }

    /// The key's limit: its own override, else its account's plan, else the route's. The
    /// account's: its plan's, else the route's. A keygate endpoint (the exchange, the balance)
    /// keeps its own limits: a generous plan must not lift the exchange's 10 a minute.
    fn limits(&self, route: &Route, c: &Credential) -> (Option<(Limit, bool)>, Option<Limit>) {
        if route.local.is_some() {
            return (route.key_limit.map(|l| (l, true)), route.account_limit);
        }
        let plan = c
            .account
            .plan
            .as_deref()
            .and_then(|p| self.config.plans.get(p));
        let key = c
            .key
            .rate_limit
            .map(|l| Limit {
                requests: l.requests,
                per_seconds: l.per_seconds,
                burst: l.burst,
            })
            .or(plan.and_then(|p| p.key))
            .map(|l| (l, false))
            .or(route.key_limit.map(|l| (l, true)));
        let account = plan.and_then(|p| p.account).or(route.account_limit);
        (key, account)
    }

    async fn charge(&self, route: &Route, c: &Credential) -> Result<Option<Charge>, Reason> {
        if route.cost == 0 {
            return Ok(None);
        }
        let Some(store) = &self.store else {
            return Err(Reason::StoreUnavailable);
        };
        let amount = i64::try_from(route.cost).map_err(|_| Reason::InsufficientCredits)?;
        let outcome = store
            .charge_credits(&c.account.id, amount, Some(&c.key.id), &route.name)
            .await;
        match outcome {
            Ok(ChargeOutcome::Charged { balance }) => {
                self.metrics.credits_charged(route.cost);
                Ok(Some(Charge {
                    account_id: c.account.id.clone(),
                    key_id: c.key.id.clone(),
                    amount: route.cost,
                    balance_after: balance,
                    refund_unless_success: route.charge_on == ChargeOn::Success,
                }))
            }
            Ok(ChargeOutcome::Insufficient { .. }) => Err(Reason::InsufficientCredits),
            Err(e) => {
                self.metrics.store_error();
                tracing::warn!(error = %e, "credit charge failed");
                Err(Reason::StoreUnavailable)
            }
        }
    }

    /// Gives back a `charge_on = "success"` reservation after a response that was not 2xx.
    pub async fn refund(&self, charge: &Charge) {
        let Some(store) = &self.store else { return };
        let Ok(amount) = i64::try_from(charge.amount) else {
            return;
        };
        match store
            .adjust_credits(&charge.account_id, amount, Some(&charge.key_id), "refund")
            .await
        {
            Ok(_) => self.metrics.credits_refunded(charge.amount),
            Err(e) => {
                self.metrics.store_error();
                tracing::error!(error = %e, account = %charge.account_id, amount = charge.amount, "credit refund failed");
            }
        }
    }

    pub fn store(&self) -> Option<&Arc<dyn Store>> {
        self.store.as_ref()
    }
}

fn token_reason(e: TokenError) -> Reason {
    match e {
        TokenError::Expired => Reason::TokenExpired,
        _ => Reason::InvalidToken,
    }
}

/// The request path's view of an access token: the key it was exchanged from, as the claims
/// describe it (scopes, effective permission and resources at exchange time).
fn credential_from_claims(c: Claims) -> Credential {
    let key_id = c.kid_key.clone().unwrap_or_else(|| c.sub.clone());
    let resources = c
        .res
        .and_then(|r| serde_json::from_value::<BTreeMap<String, Vec<String>>>(r).ok());
    let rate_limit =
        c.rl.and_then(|l| serde_json::from_value::<crate::store::RateLimit>(l).ok());
    Credential {
        key: KeyRecord {
            id: key_id,
            account_id: c.acc.clone(),
            user_id: c.usr,
            name: String::new(),
            display_prefix: String::new(),
            hash: [0; 32],
            scopes: c.scopes,
            permission: authz::parse_permission(&c.perm).unwrap_or(Permission::Read),
            status: KeyStatus::Active,
            created_at: c.iat,
            expires_at: Some(c.exp),
            last_used_at: None,
            rate_limit,
            resources,
            rotated_from: None,
        },
        account: Account {
            id: c.acc,
            name: String::new(),
            status: AccountStatus::Active,
            created_at: 0,
            plan: c.plan,
            credits: 0,
        },
        user: None,
    }
}

fn reject(route: Option<usize>, reason: Reason) -> Decision {
    Decision::Reject {
        route,
        rejection: Rejection::new(reason),
        rate: None,
    }
}

fn limited(route: usize, status: RateStatus) -> Decision {
    Decision::Reject {
        route: Some(route),
        rejection: Rejection::new(Reason::RateLimited),
        rate: Some(status),
    }
}

/// A path keygate can route safely: absolute, with no `.` or `..` segment (also percent-encoded),
/// no encoded slash or backslash, and no raw backslash. Such paths are refused rather than
/// normalised, so keygate and the upstream can never disagree about which route was asked for.
pub fn is_canonical_path(path: &str) -> bool {
    if !path.starts_with('/') || path.contains('\\') {
        return false;
    }
    let lower_has = |needle: &str| {
        path.as_bytes()
            .windows(needle.len())
            .any(|w| w.eq_ignore_ascii_case(needle.as_bytes()))
    };
    if lower_has("%2f") || lower_has("%5c") {
        return false;
    }
    // A segment is a dot segment when every unit is `.` or `%2e`: at most two units, so a
    // segment longer than six bytes never is. No allocation on this per-request path.
    path.split('/')
        .all(|segment| !is_dot_segment(segment.as_bytes()))
}

fn is_dot_segment(mut s: &[u8]) -> bool {
    if s.is_empty() || s.len() > 6 {
        return false;
    }
    let mut units = 0;
    while !s.is_empty() {
        units += 1;
        if units > 2 {
            return false;
        }
        if s[0] == b'.' {
            s = &s[1..];
        } else if s.len() >= 3 && s[..3].eq_ignore_ascii_case(b"%2e") {
            s = &s[3..];
        } else {
            return false;
        }
    }
    true
}

/// The first configured source that carries a credential. A present but empty header counts as
/// absent, so `Authorization: Bearer ` is "missing", not "malformed".
pub fn extract<'h>(sources: &[CredentialSource], headers: &'h HeaderMap) -> Option<&'h str> {
    for source in sources {
        for value in headers.get_all(&source.header) {
            let Ok(text) = value.to_str() else { continue };
            let text = text.trim();
            let credential = match &source.scheme {
                Some(scheme) => {
                    let Some(head) = text.get(..scheme.len()) else {
                        continue;
                    };
                    if !head.eq_ignore_ascii_case(scheme) {
                        continue;
                    }
                    text.get(scheme.len()..).map(str::trim).unwrap_or("")
                }
                None => text,
            };
            if !credential.is_empty() {
                return Some(credential);
            }
        }
    }
    None
}

#[cfg(test)]
#[path = "gate_tests.rs"]
mod tests;
