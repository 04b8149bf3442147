//! The responses keygate writes itself: a rejection in its configured template, a local
//! endpoint's answer, and the `RateLimit-*` headers both carry.

use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::prelude::*;
use pingora::proxy::Session;

use super::forward_headers::X_REQUEST_ID;
use super::phases::{KeygateProxy, RequestCtx};
use super::rewrite::int_value;
use super::routing::Routing;
use crate::authz::Rejection;
use crate::errors::Reason;
use crate::gate::Principal;
use crate::local::LocalRequest;
use crate::metrics::Outcome;
use crate::ratelimit::RateStatus;

impl KeygateProxy {
    pub(super) async fn respond_rejection(
        &self,
        session: &mut Session,
        routing: &Routing,
        reason: Reason,
        detail: &crate::errors::Detail,
        rate: Option<&RateStatus>,
        request_id: Option<&http::HeaderValue>,
    ) -> Result<()> {
        let path = session.req_header().uri.path();
        let (resp, body) = rejection_response(routing, reason, detail, rate, request_id, path)?;
        session.write_response_header(Box::new(resp), false).await?;
        session.write_response_body(Some(body), true).await?;
        Ok(())
    }
}

/// A rejection as keygate answers it: the template's status and body, `RateLimit-*` and
/// `Retry-After`, `Allow` (from the routes matching `path`, the path the request was routed on),
/// `WWW-Authenticate`.
pub(super) fn rejection_response(
    routing: &Routing,
    reason: Reason,
    detail: &crate::errors::Detail,
    rate: Option<&RateStatus>,
    request_id: Option<&http::HeaderValue>,
    path: &str,
) -> Result<(ResponseHeader, Bytes)> {
    let template = routing.config().templates.get(reason);
    let body = Bytes::from(template.render(reason, detail));
    let mut resp = ResponseHeader::build(template.status, Some(7))?;
    resp.insert_header(http::header::CONTENT_TYPE, template.content_type.as_str())?;
    resp.insert_header(http::header::CONTENT_LENGTH, body.len().to_string())?;
    if let Some(id) = request_id {
        resp.insert_header(X_REQUEST_ID, id.clone())?;
    }
    if let Some(rate) = rate {
        add_rate_headers(&mut resp, rate)?;
        if let Some(retry) = rate.retry_after_secs {
            resp.insert_header(http::header::RETRY_AFTER, retry.to_string())?;
        }
    }
    if reason == Reason::MethodNotAllowed {
        resp.insert_header(
            http::header::ALLOW,
            routing.config().routes.allowed_methods(path),
        )?;
    }
    if reason == Reason::Overloaded {
        // The password hasher's queue drains in well under a second.
        resp.insert_header(http::header::RETRY_AFTER, "1")?;
    }
    // Every 401 names the scheme that would work (RFC 9110 11.6.1): a revoked, disabled or
    // expired key as much as a missing one. Only when `Authorization: Bearer` is a source.
    let bearer_accepted = routing
        .config()
        .credential_sources
        .iter()
        .any(|s| s.scheme.as_deref() == Some("bearer "));
    if bearer_accepted && template.status == 401 {
        resp.insert_header(http::header::WWW_AUTHENTICATE, "Bearer")?;
    }
    Ok((resp, body))
}

/// `RateLimit-Limit`, `RateLimit-Remaining`, `RateLimit-Reset` (draft-ietf-httpapi-ratelimit-headers).
pub(super) fn add_rate_headers(resp: &mut ResponseHeader, rate: &RateStatus) -> Result<()> {
    // Static names (pingora keeps them without a copy), values formatted on the stack.
    resp.insert_header("ratelimit-limit", int_value(rate.limit))?;
    resp.insert_header("ratelimit-remaining", int_value(rate.remaining))?;
    resp.insert_header("ratelimit-reset", int_value(rate.reset_secs))?;
    Ok(())
}

impl KeygateProxy {
    pub(super) async fn respond_local(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        routing: &Routing,
        route_index: usize,
        caller: Principal,
        key_id: Option<String>,
    ) -> Result<()> {
        let route = routing.config().routes.get(route_index);
        let endpoint = route.and_then(|r| r.local.as_ref());
        let local = routing.gate.local();
        let (Some(route), Some(endpoint)) = (route, endpoint) else {
            // The gate decided `Local` on a route of this table, so both exist; answer rather
            // than panic if that ever stops being true.
            ctx.outcome = Some(Outcome::Rejected(Reason::StoreUnavailable));
            return self
                .respond_rejection(
                    session,
                    routing,
                    Reason::StoreUnavailable,
                    &Default::default(),
                    None,
                    ctx.request_id.as_ref(),
                )
                .await;
        };
        let body = match read_body(session, crate::local::MAX_BODY).await? {
            Some(body) => body,
            None => {
                let rejection =
                    Rejection::with_message(Reason::InvalidBody, "The request body is too large");
                ctx.outcome = Some(Outcome::Rejected(rejection.reason));
                return self
                    .respond_rejection(
                        session,
                        routing,
                        rejection.reason,
                        &rejection.detail,
                        None,
                        ctx.request_id.as_ref(),
                    )
                    .await;
            }
        };
        let client_ip = ctx.client_ip;
        let header = session.req_header();
        let request = LocalRequest {
            method: header.method.as_str(),
            query: header.uri.query(),
            body: &body,
            key_id: key_id.as_deref(),
            client_ip,
        };
        match crate::local::answer(local, route, endpoint, &caller, request).await {
            Ok(answer) => {
                ctx.outcome = Some(Outcome::Local);
                let body = Bytes::from(answer.body);
                let mut resp = ResponseHeader::build(answer.status, Some(6))?;
                resp.insert_header(http::header::CONTENT_TYPE, "application/json")?;
                if let Some(id) = &ctx.request_id {
                    resp.insert_header(X_REQUEST_ID, id.clone())?;
                }
                resp.insert_header(http::header::CONTENT_LENGTH, body.len().to_string())?;
                resp.insert_header(http::header::CACHE_CONTROL, "no-store")?;
                if let Some(rate) = &ctx.rate {
                    add_rate_headers(&mut resp, rate)?;
                }
                session.write_response_header(Box::new(resp), false).await?;
                session.write_response_body(Some(body), true).await
            }
            Err(rejection) => {
                ctx.outcome = Some(Outcome::Rejected(rejection.reason));
                let rate = rejection.rate.as_ref().or(ctx.rate.as_ref());
                self.respond_rejection(
                    session,
                    routing,
                    rejection.reason,
                    &rejection.detail,
                    rate,
                    ctx.request_id.as_ref(),
                )
                .await
            }
        }
    }
}

/// Reads the whole request body, up to `limit` bytes; `None` when it is larger.
async fn read_body(session: &mut Session, limit: usize) -> Result<Option<Vec<u8>>> {
    let mut body = Vec::new();
    while let Some(chunk) = session.read_request_body().await? {
        if body.len() + chunk.len() > limit {
            return Ok(None);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Some(body))
}

/// After a 413 on a body that was still arriving: reads and drops what the client already sent,
/// for at most a second and 1 MiB, so the close that follows is a FIN the client reads the 413
/// before, not a reset that discards it (nginx's lingering close, bounded the same way).
/// A client that sent `Expect: 100-continue` sends no body after a final answer: nothing to
/// wait for.
pub(super) async fn discard_rest_of_body(session: &mut Session) {
    const MAX_BYTES: usize = 1 << 20;
    if session
        .req_header()
        .headers
        .contains_key(http::header::EXPECT)
    {
        return;
    }
    let drain = async {
        let mut read = 0;
        while let Ok(Some(chunk)) = session.read_request_body().await {
            read += chunk.len();
            if read > MAX_BYTES {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), drain).await;
}
