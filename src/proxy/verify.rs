//! The forward-auth answer (`local = "verify"` routes, see [`crate::forward_auth`]): the original
//! request is decided by the gate, then allowed with a bodiless 200 carrying the identity headers
//! and `RateLimit-*`, or refused with the rejection keygate would have sent for it.

use std::sync::Arc;

use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::prelude::*;
use pingora::proxy::Session;

use super::forward_headers::X_REQUEST_ID;
use super::phases::{KeygateProxy, RequestCtx};
use super::respond::{add_rate_headers, rejection_response};
use super::routing::Routing;
use crate::cache::CachedCredential;
use crate::errors::{Detail, Reason};
use crate::forward_auth;
use crate::gate::{Charge, Decision, Request};
use crate::metrics::Outcome;

impl KeygateProxy {
    pub(super) async fn respond_verify(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        routing: &Routing,
        route_index: usize,
    ) -> Result<()> {
        let header = session.req_header();
        let original = routing
            .config()
            .routes
            .get(route_index)
            .ok_or(Reason::RouteNotFound)
            .and_then(|route| {
                forward_auth::original(
                    route,
                    header.method.as_str(),
                    header.uri.path(),
                    header.uri.query(),
                    &header.headers,
                )
            });
        // The response is built while the request's head is borrowed, and written after.
        let (resp, body) = match original {
            Err(reason) => {
                ctx.outcome = Some(Outcome::Rejected(reason));
                rejection_response(
                    routing,
                    reason,
                    &Detail::default(),
                    None,
                    ctx.request_id.as_ref(),
                    header.uri.path(),
                )?
            }
            Ok(original) => {
                let mut decision = routing
                    .gate
                    .decide(Request {
                        method: original.method,
                        path: original.path,
                        query: original.query,
                        headers: &header.headers,
                        client_ip: ctx.client_ip,
                    })
                    .await;
                if let Decision::ReadBody(admitted) = decision {
                    // The other proxy sends no body with its question: `body_schema` cannot be
                    // applied here, the rest of the decision is the same.
                    decision = routing.gate.decide_without_body(admitted).await;
                }
                let decided_on = |route: usize| {
                    routing
                        .config()
                        .routes
                        .get(route)
                        .is_some_and(|r| !forward_auth::is_verify(r))
                };
                let (allowed, rate) = match decision {
                    Decision::Forward {
                        route,
                        principal,
                        rate,
                        charge,
                    } if decided_on(route) => (Ok((principal, charge)), rate),
                    Decision::Local {
                        route,
                        caller,
                        rate,
                        ..
                    } if decided_on(route) => (Ok((caller.credential().cloned(), None)), rate),
                    Decision::Reject {
                        rejection, rate, ..
                    } => (Err((rejection.reason, rejection.detail)), rate),
                    // A verify route asked about itself (or another verify route): no loops.
                    _ => (Err((Reason::RouteNotFound, Detail::default())), None),
                };
                match allowed {
                    Ok((principal, charge)) => {
                        ctx.outcome = Some(Outcome::Local);
                        let resp =
                            self.allowed(principal.as_ref(), charge.as_ref(), rate.as_ref(), ctx)?;
                        ctx.principal = principal;
                        ctx.rate = rate;
                        (resp, Bytes::new())
                    }
                    Err((reason, detail)) => {
                        ctx.outcome = Some(Outcome::Rejected(reason));
                        rejection_response(
                            routing,
                            reason,
                            &detail,
                            rate.as_ref(),
                            ctx.request_id.as_ref(),
                            original.path,
                        )?
                    }
                }
            }
        };
        let empty = body.is_empty();
        session.write_response_header(Box::new(resp), empty).await?;
        if !empty {
            session.write_response_body(Some(body), true).await?;
        }
        Ok(())
    }

    /// 200, no body: the identity headers the upstream would have got, for the other proxy to
    /// copy onto the request it forwards, and the `RateLimit-*` headers.
    fn allowed(
        &self,
        principal: Option<&Arc<CachedCredential>>,
        charge: Option<&Charge>,
        rate: Option<&crate::ratelimit::RateStatus>,
        ctx: &RequestCtx,
    ) -> Result<ResponseHeader> {
        let mut resp = ResponseHeader::build(200, Some(12))?;
        resp.insert_header(http::header::CONTENT_LENGTH, "0")?;
        if let Some(id) = &ctx.request_id {
            resp.insert_header(X_REQUEST_ID, id.clone())?;
        }
        if let Some(rate) = rate {
            add_rate_headers(&mut resp, rate)?;
        }
        // Every identity header is answered, empty when it has no value: a proxy that copies a
        // header the answer lacks may leave the client's own on the request (or, Caddy 2.6, an
        // unfilled placeholder), while an empty one replaces it (nginx then sends none).
        let names = &self.identity_names;
        let empty = http::HeaderValue::from_static("");
        let values = principal.map(|p| p.identity());
        let values = values.as_ref();
        for (name, value) in [
            (names.key_id, values.and_then(|v| v.key_id.as_ref())),
            (names.key_name, values.and_then(|v| v.key_name.as_ref())),
            (names.account_id, values.and_then(|v| v.account_id.as_ref())),
            (names.user_id, values.and_then(|v| v.user_id.as_ref())),
            (names.scopes, values.and_then(|v| v.scopes.as_ref())),
        ] {
            resp.append_header(name, value.unwrap_or(&empty).clone())?;
        }
        let method = principal.map_or(empty.clone(), |p| p.method.header_value());
        resp.append_header(names.auth_method, method)?;
        match charge {
            Some(charge) => {
                resp.append_header(names.credits_remaining, charge.balance_after.to_string())?
            }
            None => resp.append_header(names.credits_remaining, empty)?,
        };
        Ok(resp)
    }
}
