//! The pingora glue: the only module that imports pingora.
//!
//! `request_filter` hands the request to the [`Gate`](crate::gate::Gate) and either answers with
//! the configured error or lets pingora forward it; `upstream_request_filter` strips credentials
//! and spoofable identity headers and adds the real ones. Everything else is pingora's defaults.
//!
//! - `phases`: the `ProxyHttp` phases and the per-request state;
//! - `body`: reading a body the gate checks before the charge (`body_schema` routes);
//! - `respond`: the responses keygate writes itself (rejections, local endpoints);
//! - `routing`: what one configuration prepares for the request path (gate, upstreams);
//! - `pool`: an upstream with several backends (balancing, health, passive ejection);
//! - `health`: the active health checks of the current routing's pools;
//! - `strip`: which client headers are dropped before forwarding (credentials, the identity
//!   namespace in any spelling, the configured list, client-sent forwarding headers);
//! - `rewrite`: the upstream request rewrite (strip, forwarding, identity), one plain function;
//! - `forward_headers`: `X-Forwarded-For`, `X-Forwarded-Proto`, `X-Real-IP`, `X-Request-Id`;
//! - `proxy_protocol`: the PROXY protocol header an L4 load balancer puts before a connection;
//! - `settle`: whether a `charge_on = "success"` reservation goes back;
//! - `verify`: the forward-auth answer for another proxy (see [`crate::forward_auth`]);
//! - `services`: the background services (admin and ops listeners, last-used writer, reload,
//!   housekeeping);
//! - `server`: the pingora server that runs them all.

mod body;
mod connections;
mod drain;
mod forward_headers;
mod health;
mod phases;
mod pool;
mod proxy_protocol;
mod respond;
mod rewrite;
mod routing;
mod server;
mod services;
mod settle;
mod strip;
mod verify;

pub use phases::{KeygateProxy, RequestCtx};
#[doc(hidden)]
pub use rewrite::{BenchRequest, RewriteBench};
pub use server::run;
