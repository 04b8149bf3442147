//! Reading the body of a request whose route checks it (`body_schema`), before the upstream is
//! chosen: the gate then checks it and charges (see [`crate::gate::Gate::decide_body`]).
//!
//! The bytes are kept in pingora's retry buffer, which pingora sends upstream as the request's
//! body once it connects (`proxy_h1`/`proxy_h2` send `get_retry_buffer()` when the downstream
//! body is already done), so the upstream gets exactly the bytes that were checked. That buffer
//! holds at most 64 KiB, which is why a schema route's `max_body_bytes` is capped there
//! ([`crate::body_check::MAX_CHECKED_BODY`]). Routes without a schema never come here: their
//! bodies stream through unread.

use std::time::Duration;

use bytes::Bytes;
use pingora::prelude::*;
use pingora::proxy::Session;

use super::phases::{KeygateProxy, RequestCtx};
use super::routing::Routing;
use crate::authz::Rejection;
use crate::body_check::MAX_CHECKED_BODY;
use crate::errors::Reason;
use crate::gate::{Admitted, Decision};

impl KeygateProxy {
    /// Step 7 of the pipeline for a `body_schema` route: reads the body and lets the gate check
    /// it and charge. Returns the decision after the body (never `ReadBody`); a body over the
    /// route's limit is a 413 without a check or a charge.
    pub(super) async fn check_body(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        routing: &Routing,
        admitted: Admitted,
    ) -> Result<Decision> {
        let config = routing.config();
        let limit = config
            .routes
            .get(admitted.route)
            .and_then(|r| r.max_body_bytes)
            .unwrap_or(MAX_CHECKED_BODY)
            .min(MAX_CHECKED_BODY);
        let deadline = config.server.request_header_timeout;
        match read_whole(session, limit, deadline).await? {
            Buffered::TooLarge => Ok(Decision::Reject {
                route: Some(admitted.route),
                rejection: Rejection::new(Reason::PayloadTooLarge),
                rate: admitted.rate,
            }),
            Buffered::Body(body) => {
                ctx.body_checked = true;
                let content_type = session
                    .req_header()
                    .headers
                    .get(http::header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok());
                Ok(routing
                    .gate
                    .decide_body(admitted, content_type, &body)
                    .await)
            }
        }
    }
}

/// What came of reading the body.
pub(super) enum Buffered {
    /// The whole body, within the limit (empty when the request has none).
    Body(Bytes),
    /// More than the limit arrived: 413, nothing charged, nothing sent upstream.
    TooLarge,
}

/// Reads the whole request body, at most `limit` bytes, within `deadline` (a client trickling
/// its body would otherwise hold the request before anything is decided: the connection is
/// closed instead). A client that sent `Expect: 100-continue` is told to go on first.
pub(super) async fn read_whole(
    session: &mut Session,
    limit: u64,
    deadline: Duration,
) -> Result<Buffered> {
    let expects_continue = session
        .req_header()
        .headers
        .get(http::header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    if expects_continue {
        session.write_continue_response().await?;
    }
    session.enable_retry_buffering();
    let read = async {
        let mut total: u64 = 0;
        while let Some(chunk) = session.read_request_body().await? {
            total = total.saturating_add(chunk.len() as u64);
            if total > limit {
                return Ok(Buffered::TooLarge);
            }
        }
        // Within the limit, so within the retry buffer: it is whole (`None` only when empty).
        Ok(Buffered::Body(
            session.get_retry_buffer().unwrap_or_default(),
        ))
    };
    match tokio::time::timeout(deadline, read).await {
        Ok(read) => read,
        Err(_) => Err(Error::explain(
            ErrorType::ReadTimedout,
            "the request body did not arrive in time to be checked",
        )
        .into_down()),
    }
}
