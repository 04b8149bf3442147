//! `POST {exchange path}` with a key: a short-lived access JWT carrying the key's scopes, its
//! effective permission and resources (Enkryptify's `{accessToken, expiresIn, tokenType}`). The
//! route's per-key rate limit (10/min in the examples) is applied by the gate before this runs.

use serde_json::json;

use super::{LocalContext, LocalResponse};
use crate::authz::{self, Rejection};
use crate::cache::CachedCredential;
use crate::errors::Reason;
use crate::tokens::{token_response, ClaimsDraft, TokenKind};

pub fn exchange(
    ctx: &LocalContext,
    principal: &CachedCredential,
) -> Result<LocalResponse, Rejection> {
    let c = &principal.credential;
    let draft = ClaimsDraft {
        sub: c.key.id.to_string(),
        acc: c.account.id.to_string(),
        usr: c.user.as_ref().map(|u| u.id.to_string()),
        kid_key: Some(c.key.id.to_string()),
        scopes: c.key.scopes.to_vec(),
        perm: authz::permission_name(authz::effective_permission(c)).to_string(),
        res: c.key.resources.as_ref().map(|r| json!(r)),
        // The token is limited as its key is (a plan or a key override is one bucket per key,
        // whichever credential is presented), and dies no later than the key.
        plan: c.account.plan.as_deref().map(str::to_string),
        rl: c.key.rate_limit.as_deref().map(|l| json!(l)),
        not_after: c.key.expires_at,
    };
    let (token, expires_in) = ctx.tokens.issue(draft, TokenKind::Access).map_err(|e| {
        tracing::error!(error = %e, "cannot sign an access token");
        Rejection::new(Reason::StoreUnavailable)
    })?;
    Ok(LocalResponse::json(200, token_response(&token, expires_in)))
}
