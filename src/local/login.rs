//! `POST {login path}` `{"email","password"}` -> `{"token": <session JWT>, "user": {"id","email"}}`
//! (Encrata's step 1). Unknown email, wrong password, a disabled user or an inactive account all
//! get the same 401, after the same argon2 work, so the answer reveals nothing. Limited per client
//! IP (the route's `ip_rate_limit`, applied by the gate) and per email (its `rate_limit`, here);
//! when the password hasher is at capacity, 503 `overloaded` with `Retry-After`.

use serde::Deserialize;
use serde_json::json;

use super::{parse_body, LocalContext, LocalRequest, LocalResponse};
use crate::authz::Rejection;
use crate::config::Route;
use crate::errors::Reason;
use crate::passwords::{self, PasswordError};
use crate::secret::Secret;
use crate::store::{AccountStatus, UserStatus};
use crate::tokens::{ClaimsDraft, TokenKind};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LoginBody {
    email: String,
    password: Secret,
}

pub async fn login(
    ctx: &LocalContext,
    route: &Route,
    req: LocalRequest<'_>,
) -> Result<LocalResponse, Rejection> {
    let body: LoginBody = parse_body(req.body)?;
    let email = body.email.trim().to_ascii_lowercase();
    if email.is_empty() || email.len() > 320 {
        return Err(Rejection::with_message(
            Reason::InvalidBody,
            "Invalid request body: `email` is required",
        ));
    }
    if let Some(limit) = route.key_limit {
        let status = ctx
            .limiter
            .check(&format!("login:{email}").as_str().into(), limit)
            .await;
        if !status.allowed() {
            let mut r = Rejection::new(Reason::RateLimited);
            r.rate = Some(status);
            return Err(r);
        }
    }
    // A place at the password hasher first: past its short queue the answer is 503
    // `overloaded` before any store read, so a flood costs neither memory nor threads.
    let turn = passwords::admit().map_err(|_| Rejection::new(Reason::Overloaded))?;
    let found = ctx
        .store
        .find_user_by_email(&email)
        .await
        .map_err(|_| Rejection::new(Reason::StoreUnavailable))?;
    // argon2 is deliberately slow and memory-hungry: it runs when the turn gets a slot.
    let (user, hash) = match found {
        Some((user, hash)) => (Some(user), Some(hash)),
        None => (None, None),
    };
    let verified = match turn.verify(body.password, hash).await {
        Ok(verified) => verified,
        Err(PasswordError::Overloaded) => return Err(Rejection::new(Reason::Overloaded)),
        Err(e) => {
            tracing::error!(error = %e, "cannot verify a password");
            false
        }
    };
    let Some(user) = user.filter(|u| verified && u.status == UserStatus::Active) else {
        return Err(Rejection::new(Reason::InvalidCredentials));
    };
    let account = ctx
        .store
        .get_account(&user.account_id)
        .await
        .map_err(|_| Rejection::new(Reason::StoreUnavailable))?;
    if account.is_none_or(|a| a.status != AccountStatus::Active) {
        return Err(Rejection::new(Reason::InvalidCredentials));
    }
    let role = serde_json::to_value(user.role)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default();
    let draft = ClaimsDraft {
        sub: user.id.clone(),
        acc: user.account_id.clone(),
        usr: Some(user.id.clone()),
        kid_key: None,
        scopes: Vec::new(),
        perm: role,
        ..ClaimsDraft::default()
    };
    let (token, _) = ctx.tokens.issue(draft, TokenKind::Session).map_err(|e| {
        tracing::error!(error = %e, "cannot sign a session token");
        Rejection::new(Reason::StoreUnavailable)
    })?;
    Ok(LocalResponse::json(
        200,
        json!({ "token": token, "user": { "id": user.id, "email": user.email } }),
    ))
}
