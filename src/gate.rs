//! The request path, top to bottom: route -> extract -> verify -> authorize -> limit -> body
//! check -> charge -> outcome.
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
use crate::cache::{
    AccountFacts, CachedCredential, Facts, KeyCache, KeyFacts, Lookup, ScopeSet, Text, UserFacts,
};
use crate::config::{AuthMode, ChargeOn, Config, CredentialSource, Route};
use crate::errors::Reason;
use crate::keys::KeyHasher;
use crate::keyservice::KeyService;
use crate::local::LocalContext;
use crate::metrics::{Metrics, Outcome, RouteCounters};
use crate::ratelimit::{BucketKey, Limit, RateLimiter, RateStatus};
use crate::router::RouteLookup;
use crate::store::{AccountStatus, ChargeOutcome, KeyStatus, Permission, Store};
use crate::tokens::cutoffs::TokenCutoffs;
use crate::tokens::{looks_like_jwt, Claims, TokenError, TokenKind, Tokens};
use crate::usage::UsageRecorder;

/// The parts of a request the gate reads.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub method: &'a str,
    pub path: &'a str,
    /// The query string, for the parameters a framework reads as the method (`_method`).
    pub query: Option<&'a str>,
    pub headers: &'a HeaderMap,
    pub client_ip: Option<IpAddr>,
}

/// Who the caller proved to be, as the route's auth mode asked.
#[derive(Debug, Clone)]
pub enum Principal {
    /// An `auth = "none"` route: nobody in particular.
    Anonymous,
    /// An API key, from the cache or the store.
    Key(Arc<CachedCredential>),
    /// An access token exchanged from a key; it carries that key's rights, read from its claims.
    Token(Arc<CachedCredential>),
    /// A session token from login, for the key-management endpoints.
    Session(Arc<Claims>),
}

impl Principal {
    /// The key (or the key behind a token) the request acts as.
    pub fn credential(&self) -> Option<&Arc<CachedCredential>> {
        match self {
            Principal::Key(c) | Principal::Token(c) => Some(c),
            Principal::Anonymous | Principal::Session(_) => None,
        }
    }

    fn into_credential(self) -> Option<Arc<CachedCredential>> {
        match self {
            Principal::Key(c) | Principal::Token(c) => Some(c),
            Principal::Anonymous | Principal::Session(_) => None,
        }
    }
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
    /// The route checks its body (`body_schema`): every step up to the limits passed and
    /// nothing is charged yet. The proxy reads the body and hands it to [`Gate::decide_body`],
    /// which checks it and then charges.
    ReadBody(Admitted),
    /// Answered by keygate itself (a local endpoint).
    Local {
        route: usize,
        caller: Principal,
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

/// A request on a forwarded route that passed authentication, authorization and the limits,
/// before its body check and its charge.
#[derive(Debug, Clone)]
pub struct Admitted {
    pub route: usize,
    pub principal: Principal,
    /// The bucket the `RateLimit-*` headers report, on limited routes.
    pub rate: Option<RateStatus>,
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

/// Everything the request path uses, built once at startup (`src/app.rs`, or
/// [`crate::test_util`] in tests and benches). None of it is optional: a wiring mistake is a
/// compile error, not an `invalid_token` at run time.
#[derive(Clone)]
pub struct GateParts {
    pub config: Arc<Config>,
    pub store: Arc<dyn Store>,
    pub cache: Arc<KeyCache>,
    /// Token revocations, checked on every token (see [`TokenCutoffs`]).
    pub cutoffs: Arc<TokenCutoffs>,
    pub tokens: Arc<Tokens>,
    pub hasher: KeyHasher,
    pub limiter: Arc<RateLimiter>,
    pub usage: UsageRecorder,
    pub metrics: Arc<Metrics>,
    /// Key, user and account changes, for the self-service endpoints.
    pub keys: Arc<KeyService>,
}

pub struct Gate {
    pub config: Arc<Config>,
    /// Request counters for this route table.
    counters: RouteCounters,
    cache: Arc<KeyCache>,
    cutoffs: Arc<TokenCutoffs>,
    hasher: KeyHasher,
    usage: UsageRecorder,
    metrics: Arc<Metrics>,
    limiter: Arc<RateLimiter>,
    store: Arc<dyn Store>,
    tokens: Arc<Tokens>,
    local: Arc<LocalContext>,
    /// Each route's name as a [`Text`], by route index, made once per load: the per-route
    /// bucket keys share it instead of formatting `{route}|{caller}` on every request.
    route_names: Vec<Text>,
}

impl Gate {
    pub fn new(parts: GateParts) -> Self {
        let GateParts {
            config,
            store,
            cache,
            cutoffs,
            tokens,
            hasher,
            limiter,
            usage,
            metrics,
            keys,
        } = parts;
        let local = Arc::new(LocalContext {
            config: config.clone(),
            store: store.clone(),
            cache: cache.clone(),
            tokens: tokens.clone(),
            hasher: hasher.clone(),
            limiter: limiter.clone(),
            keys,
        });
        Self {
            counters: metrics.route_counters(&config.route_names()),
            route_names: config.routes.iter().map(|r| Text::new(&r.name)).collect(),
            config,
            cache,
            cutoffs,
            hasher,
            usage,
            metrics,
            limiter,
            store,
            tokens,
            local,
        }
    }

    /// The same gate on a new configuration (a reload): routes, limits, plans, templates and
    /// credential sources from `config`; the cache, store, limiter, tokens and metrics shared.
    pub fn reconfigured(&self, config: Arc<Config>) -> Gate {
        Gate::new(GateParts {
            config,
            store: self.store.clone(),
            cache: self.cache.clone(),
            cutoffs: self.cutoffs.clone(),
            tokens: self.tokens.clone(),
            hasher: self.hasher.clone(),
            limiter: self.limiter.clone(),
            usage: self.usage.clone(),
            metrics: self.metrics.clone(),
            keys: self.local.keys.clone(),
        })
    }

    /// Counts a finished request under this gate's route table.
    pub fn count_request(&self, route: Option<usize>, outcome: Outcome) {
        self.counters.count(route, outcome);
    }

    /// Records how long a finished request took (`status` 0: no answer went out).
    pub fn request_duration(&self, route: Option<usize>, status: u16, seconds: f64) {
        self.counters.duration(route, status, seconds);
    }

    /// What local endpoints need to answer.
    pub fn local(&self) -> &Arc<LocalContext> {
        &self.local
    }

    /// Periodic upkeep off the request path: forgets full rate-limit buckets and token cut-offs
    /// older than the longest token lifetime (no token they could stop is still valid).
    pub fn housekeeping(&self) {
        self.limiter.retain_recent();
        let longest = self.tokens.longest_ttl_secs();
        let dropped = self
            .cutoffs
            .prune(crate::store::now().saturating_sub(longest));
        if dropped > 0 {
            tracing::debug!(dropped, "forgot expired token cut-offs");
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

    /// The pipeline. Every step runs for every principal; a step that has nothing to do for
    /// one (no scopes on a session, no bucket for an anonymous caller) does nothing, and there
    /// is no early exit past a later step.
    async fn decide_inner(&self, req: Request<'_>) -> Decision {
        // 1. Route, on canonical paths only: `/open/../v1/x` must not match `/open/{*rest}` and
        //    then reach an upstream that resolves the dot segments into a protected route.
        if !is_canonical_path(req.path) {
            return reject(None, Reason::InvalidPath);
        }
        let matched = match self.config.routes.lookup(req.method, req.path) {
            RouteLookup::Found(matched) => matched,
            RouteLookup::NotFound => return reject(None, Reason::RouteNotFound),
            // Only a caller who authenticates (as the most specific matching route asks) learns
            // that the path exists with other methods.
            RouteLookup::MethodNotAllowed { route, .. } => {
                let Some(r) = self.config.routes.get(route) else {
                    return reject(None, Reason::RouteNotFound);
                };
                return match self.authenticate(r, req.headers).await {
                    Ok(_) => reject(Some(route), Reason::MethodNotAllowed),
                    Err(reason) => reject(Some(route), reason),
                };
            }
        };
        let (index, route) = (matched.index, matched.route);

        // A body its `Content-Length` says is too large is refused before anything is spent on
        // it: no key lookup, no bucket, no credit. (A chunked body is counted as it streams, in
        // the proxy.)
        if let Some(max) = route.max_body_bytes {
            if declared_length(req.headers).is_some_and(|len| len > max) {
                return reject(Some(index), Reason::PayloadTooLarge);
            }
        }

        // 2 and 3. Extract and verify, as the route's auth mode asks.
        let principal = match self.authenticate(route, req.headers).await {
            Ok(principal) => principal,
            Err(reason) => return reject(Some(index), reason),
        };

        // 4. Authorize: status, expiry, account, permission, scopes, resources. (The clock is
        //    read only for a credential: an anonymous request needs no time.)
        let now = principal.credential().map_or(0, |_| crate::store::now());
        if let Some(cached) = principal.credential() {
            let credential = &cached.credential;
            let authorized = authz::authorize(credential, route, req.method, now)
                .and_then(|()| authz::check_method_parameter(credential, req.query))
                .and_then(|()| {
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
        }

        // 5. Rate limit: the client IP's bucket, the caller's, then its account's. (An anonymous
        //    caller on a route without `ip_rate_limit` has no bucket at all: the step is skipped
        //    rather than run empty, which keeps open routes as cheap as before the pipeline.)
        let nothing_to_limit =
            matches!(principal, Principal::Anonymous) && route.ip_limit.is_none();
        let rate = if nothing_to_limit {
            None
        } else {
            match self.limit(index, route, &principal, req.client_ip).await {
                Ok(rate) => rate,
                Err(status) => return limited(index, status),
            }
        };

        // 6. Record (off the request path: a queued, debounced write).
        if let Principal::Key(cached) = &principal {
            self.usage
                .touch(&cached.credential.key.id, &cached.last_used_sent, now);
        }

        if route.local.is_some() {
            return Decision::Local {
                route: index,
                caller: principal,
                rate,
                key_id: matched.params.get("key_id").map(str::to_string),
            };
        }

        let admitted = Admitted {
            route: index,
            principal,
            rate,
        };
        // 7. Body check, on routes with a `body_schema` only (the others stream their body
        //    unread): the proxy reads the body and comes back through `decide_body`, so a bad
        //    body is refused before anything is charged or sent upstream.
        if route.body_schema.is_some() {
            return Decision::ReadBody(admitted);
        }
        // 8. Charge credits.
        self.charge_and_forward(route, admitted).await
    }

    /// Steps 7 and 8 for a route with a `body_schema`, once the proxy has read the whole body:
    /// the check (422 `invalid_body` naming the failing field), then the charge.
    /// `content_type` is the request's `Content-Type`, when it sent one.
    pub async fn decide_body(
        &self,
        admitted: Admitted,
        content_type: Option<&str>,
        body: &[u8],
    ) -> Decision {
        let Some(route) = self.config.routes.get(admitted.route) else {
            return reject(None, Reason::RouteNotFound);
        };
        if let Some(schema) = &route.body_schema {
            if let Err(detail) = schema.check(content_type, body) {
                return Decision::Reject {
                    route: Some(admitted.route),
                    rejection: Rejection::with_message(Reason::InvalidBody, detail),
                    rate: admitted.rate,
                };
            }
        }
        self.charge_and_forward(route, admitted).await
    }

    /// Step 8 without the body check, for forward-auth: the other proxy asks about a request
    /// whose body it does not send, so a `body_schema` cannot be applied there.
    pub async fn decide_without_body(&self, admitted: Admitted) -> Decision {
        let Some(route) = self.config.routes.get(admitted.route) else {
            return reject(None, Reason::RouteNotFound);
        };
        self.charge_and_forward(route, admitted).await
    }

    /// Charges the route's cost to the caller's account (402 when short) and forwards.
    async fn charge_and_forward(&self, route: &Route, admitted: Admitted) -> Decision {
        let Admitted {
            route: index,
            principal,
            rate,
        } = admitted;
        let charge = match principal.credential() {
            Some(cached) => match self.charge(route, &cached.credential).await {
                Ok(charge) => charge,
                Err(reason) => {
                    return Decision::Reject {
                        route: Some(index),
                        rejection: Rejection::new(reason),
                        rate,
                    }
                }
            },
            None => None,
        };
        Decision::Forward {
            route: index,
            principal: principal.into_credential(),
            rate,
            charge,
        }
    }

    /// Extract and verify: a key (format first, so malformed keys cost no hashing, cache or
    /// store work), an access token or a session token (signature and claims checked locally,
    /// no store read). A key is refused where a session is required, and a token where a key is.
    async fn authenticate(&self, route: &Route, headers: &HeaderMap) -> Result<Principal, Reason> {
        if route.auth == AuthMode::None {
            return Ok(Principal::Anonymous);
        }
        let candidate =
            extract(&self.config.credential_sources, headers).ok_or(Reason::MissingCredential)?;
        // Only routes that take tokens need to tell a token from a key.
        let is_jwt = route.auth != AuthMode::ApiKey && looks_like_jwt(candidate);
        match (route.auth, is_jwt) {
            (AuthMode::Session, true) => self.verify_session(candidate).map(Principal::Session),
            (AuthMode::Session | AuthMode::Jwt, false) => Err(Reason::InvalidToken),
            (AuthMode::Jwt | AuthMode::Any, true) => {
                self.verify_access(candidate).map(Principal::Token)
            }
            (AuthMode::ApiKey | AuthMode::Any, _) => {
                self.verify_key(candidate).await.map(Principal::Key)
            }
            (AuthMode::None, _) => Ok(Principal::Anonymous),
        }
    }

    /// Every bucket that applies to this request, in one step for every principal: the client
    /// IP's (`ip_rate_limit`), the caller's (`rate_limit`: a key, the key behind a token, or a
    /// session's user) and its account's (`account_rate_limit`, or the plan's). The first one
    /// that refuses decides; otherwise the `RateLimit-*` headers report the caller's bucket,
    /// else the account's, else the IP's.
    async fn limit(
        &self,
        index: usize,
        route: &Route,
        principal: &Principal,
        client_ip: Option<IpAddr>,
    ) -> Result<Option<RateStatus>, RateStatus> {
        let mut by_ip = None;
        if let (Some(limit), Some(ip)) = (route.ip_limit, client_ip) {
            let status = self.limiter.check(&BucketKey::Ip(ip), limit).await;
            if !status.allowed() {
                return Err(status);
            }
            by_ip = Some(status);
        }
        let (caller, account) = self.buckets(index, route, principal);
        let mut by_caller = None;
        if let Some((bucket, limit)) = caller {
            let status = self.limiter.check(&bucket, limit).await;
            if !status.allowed() {
                return Err(status);
            }
            by_caller = Some(status);
        }
        let mut by_account = None;
        if let Some((bucket, limit)) = account {
            let status = self.limiter.check(&bucket, limit).await;
            if !status.allowed() {
                return Err(status);
            }
            by_account = Some(status);
        }
        Ok(by_caller.or(by_account).or(by_ip))
    }

    /// The caller's and the account's bucket names and limits.
    ///
    /// A key's limit is its own override, else its account's plan, else the route's; the
    /// account's is its plan's, else the route's. A route's own limit is per caller on that
    /// route (an exchange endpoint's 10/min does not eat into the API's budget); a plan or key
    /// override is per key overall. A keygate endpoint (the exchange, the balance) keeps its own
    /// limits: a generous plan must not lift the exchange's 10 a minute. A session is limited
    /// per user on the route, and per account.
    ///
    /// Keys and accounts name their buckets with the cached credential's ids (no allocation);
    /// a session's ids come from its token's claims and are copied.
    fn buckets(
        &self,
        index: usize,
        route: &Route,
        principal: &Principal,
    ) -> (Option<Bucket>, Option<Bucket>) {
        let per_route = |caller: Text| BucketKey::PerRoute {
            route: self
                .route_names
                .get(index)
                .cloned()
                .unwrap_or_else(|| Text::new(&route.name)),
            caller,
        };
        match principal {
            Principal::Anonymous => (None, None),
            Principal::Session(claims) => (
                route
                    .key_limit
                    .map(|l| (per_route(Text::new(&claims.sub)), l)),
                route
                    .account_limit
                    .map(|l| (BucketKey::Named(Text::new(&claims.acc)), l)),
            ),
            Principal::Key(cached) | Principal::Token(cached) => {
                let c = &cached.credential;
                if route.local.is_some() {
                    return (
                        route.key_limit.map(|l| (per_route(c.key.id.clone()), l)),
                        route
                            .account_limit
                            .map(|l| (BucketKey::Named(c.account.id.clone()), l)),
                    );
                }
                let plan = c
                    .account
                    .plan
                    .as_deref()
                    .and_then(|p| self.config.plans.get(p));
                let own = c
                    .key
                    .rate_limit
                    .as_deref()
                    .map(|l| Limit {
                        requests: l.requests,
                        per_seconds: l.per_seconds,
                        burst: l.burst,
                        algorithm: crate::ratelimit::Algorithm::TokenBucket,
                    })
                    .or(plan.and_then(|p| p.key));
                let key = match own {
                    Some(limit) => Some((BucketKey::Named(c.key.id.clone()), limit)),
                    None => route.key_limit.map(|l| (per_route(c.key.id.clone()), l)),
                };
                let account = plan
                    .and_then(|p| p.account)
                    .or(route.account_limit)
                    .map(|l| (BucketKey::Named(c.account.id.clone()), l));
                (key, account)
            }
        }
    }

    async fn verify_key(&self, candidate: &str) -> Result<Arc<CachedCredential>, Reason> {
        let Ok(hash) = self.config.key_format.lookup_hash(&self.hasher, candidate) else {
            return Err(Reason::MalformedCredential);
        };
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
        let tokens = &self.tokens;
        if !self.cutoffs.loaded() {
            // Started while the store was away: revocations made before we started are unknown.
            return Err(Reason::StoreUnavailable);
        }
        let claims = tokens
            .verify(token, TokenKind::Access)
            .map_err(token_reason)?;
        let key_id = claims.kid_key.as_deref().unwrap_or(&claims.sub);
        let issued = claims.issued_at_ms();
        if self.cutoffs.is_cut(key_id, issued) {
            return Err(Reason::KeyRevoked);
        }
        if self.cutoffs.is_cut(&claims.acc, issued) {
            return Err(Reason::AccountSuspended);
        }
        if claims
            .usr
            .as_deref()
            .is_some_and(|u| self.cutoffs.is_cut(u, issued))
        {
            return Err(Reason::KeyDisabled);
        }
        Ok(Arc::new(CachedCredential::from_token(
            credential_from_claims(claims),
        )))
    }

    fn verify_session(&self, token: &str) -> Result<Arc<Claims>, Reason> {
        let tokens = &self.tokens;
        if !self.cutoffs.loaded() {
            return Err(Reason::StoreUnavailable);
        }
        let claims = tokens
            .verify(token, TokenKind::Session)
            .map_err(token_reason)?;
        let issued = claims.issued_at_ms();
        if self.cutoffs.is_cut(&claims.sub, issued) || self.cutoffs.is_cut(&claims.acc, issued) {
            return Err(Reason::InvalidToken);
        }
        Ok(Arc::new(claims))
    }

    async fn charge(&self, route: &Route, c: &Facts) -> Result<Option<Charge>, Reason> {
        if route.cost == 0 {
            return Ok(None);
        }
        let store = &self.store;
        let amount = i64::try_from(route.cost).map_err(|_| Reason::InsufficientCredits)?;
        let outcome = store
            .charge_credits(&c.account.id, amount, Some(&c.key.id), &route.name)
            .await;
        match outcome {
            Ok(ChargeOutcome::Charged { balance }) => {
                self.metrics.credits_charged(route.cost);
                Ok(Some(Charge {
                    account_id: c.account.id.to_string(),
                    key_id: c.key.id.to_string(),
                    amount: route.cost,
                    balance_after: balance,
                    refund_unless_success: route.charge_on == ChargeOn::Success,
                }))
            }
            Ok(ChargeOutcome::Insufficient { .. }) => Err(Reason::InsufficientCredits),
            Err(e) => {
                tracing::warn!(error = %e, "credit charge failed");
                Err(Reason::StoreUnavailable)
            }
        }
    }

    /// Gives back a `charge_on = "success"` reservation after a response that was not 2xx.
    pub async fn refund(&self, charge: &Charge) {
        let store = &self.store;
        let Ok(amount) = i64::try_from(charge.amount) else {
            return;
        };
        match store
            .adjust_credits(&charge.account_id, amount, Some(&charge.key_id), "refund")
            .await
        {
            Ok(_) => self.metrics.credits_refunded(charge.amount),
            Err(e) => {
                tracing::error!(error = %e, account = %charge.account_id, amount = charge.amount, "credit refund failed");
            }
        }
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
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
fn credential_from_claims(c: Claims) -> Facts {
    let resources = c
        .res
        .and_then(|r| serde_json::from_value::<BTreeMap<String, Vec<String>>>(r).ok());
    let rate_limit =
        c.rl.and_then(|l| serde_json::from_value::<crate::store::RateLimit>(l).ok());
    Facts {
        key: KeyFacts {
            id: Text::new(c.kid_key.as_deref().unwrap_or(&c.sub)),
            name: Text::new(""),
            scopes: Arc::new(ScopeSet::new(&c.scopes)),
            permission: authz::parse_permission(&c.perm).unwrap_or(Permission::Read),
            status: KeyStatus::Active,
            expires_at: Some(c.exp),
            rate_limit: rate_limit.map(Box::new),
            resources: resources.map(Box::new),
        },
        account: Arc::new(AccountFacts {
            id: Text::new(&c.acc),
            status: AccountStatus::Active,
            plan: c.plan.as_deref().map(Text::new),
        }),
        // The permission claim is already the user's effective one.
        user: c.usr.as_deref().map(|id| {
            Arc::new(UserFacts {
                id: Text::new(id),
                found: None,
            })
        }),
    }
}

/// The body length a request's `Content-Length` declares, when it is a number.
fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(http::header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

fn reject(route: Option<usize>, reason: Reason) -> Decision {
    Decision::Reject {
        route,
        rejection: Rejection::new(reason),
        rate: None,
    }
}

/// A rate-limit bucket's name and its limit.
type Bucket = (BucketKey, Limit);

fn limited(route: usize, status: RateStatus) -> Decision {
    Decision::Reject {
        route: Some(route),
        rejection: Rejection::new(Reason::RateLimited),
        rate: Some(status),
    }
}

/// A path keygate can route safely: absolute, with no `.` or `..` segment (also percent-encoded,
/// and also before a `;` path parameter, which Tomcat and Spring strip before resolving dot
/// segments: `/public/..;/secret`, `/public/%2e%2e%3b/secret`), no encoded slash or backslash,
/// nothing encoded twice (`%252e`, and `%25%32e`, whose `2` is itself encoded: once decoded,
/// no escape of `.`, `/` or `\` may remain), no raw backslash, and percent-escapes that decode
/// to UTF-8 (an overlong form such as `%c0%ae` for `.` is not UTF-8). Such paths are refused
/// rather than normalised, so keygate and the upstream can never disagree about which route was
/// asked for.
pub fn is_canonical_path(path: &str) -> bool {
    let bytes = path.as_bytes();
    if bytes.first() != Some(&b'/') {
        return false;
    }
    // One pass over the bytes for both a raw backslash and an escape.
    let mut escaped = false;
    for &b in bytes {
        if b == b'\\' {
            return false;
        }
        escaped |= b == b'%';
    }
    if !escaped {
        // The common case: no allocation on this per-request path.
        return !has_dot_segment(path);
    }
    if contains_ignore_case(path, "%2f") || contains_ignore_case(path, "%5c") {
        return false;
    }
    let Some(decoded) = percent_decode_utf8(path.as_bytes()) else {
        return false;
    };
    // With no encoded slash, the decoded path has the same segments, so dot segments (and an
    // encoded `;`) are judged on it.
    let encoded_twice = ["%2e", "%2f", "%5c"];
    !encoded_twice
        .iter()
        .any(|n| contains_ignore_case(&decoded, n))
        && !has_dot_segment(&decoded)
}

fn contains_ignore_case(haystack: &str, needle: &str) -> bool {
    haystack
        .as_bytes()
        .windows(needle.len())
        .any(|w| w.eq_ignore_ascii_case(needle.as_bytes()))
}

/// Whether a segment of `path`, up to its first `;` parameter, is `.` or `..`.
fn has_dot_segment(path: &str) -> bool {
    path.as_bytes().split(|b| *b == b'/').any(|segment| {
        let end = segment
            .iter()
            .position(|b| *b == b';')
            .unwrap_or(segment.len());
        matches!(&segment[..end], b"." | b"..")
    })
}

/// The path with its percent-escapes decoded, if that is UTF-8. A malformed escape (`%zz`, a
/// `%` at the end) counts as not.
fn percent_decode_utf8(path: &[u8]) -> Option<String> {
    let mut decoded = Vec::with_capacity(path.len());
    let mut i = 0;
    while i < path.len() {
        if path[i] == b'%' {
            let hex = path
                .get(i + 1..i + 3)
                .filter(|h| h.iter().all(u8::is_ascii_hexdigit))
                .and_then(|h| std::str::from_utf8(h).ok());
            decoded.push(hex.and_then(|h| u8::from_str_radix(h, 16).ok())?);
            i += 3;
        } else {
            decoded.push(path[i]);
            i += 1;
        }
    }
    String::from_utf8(decoded).ok()
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
