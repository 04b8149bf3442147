//! keygate: an API-key authentication sidecar and edge gateway built on pingora.
//!
//! The request path is [`gate`] (pure, no pingora) called from [`proxy`] (the pingora glue).
//! See DESIGN.md in the project's shared folder for the architecture.
#![forbid(unsafe_code)]

pub mod admin;
pub mod app;
pub mod authz;
pub mod body_check;
pub mod cache;
pub mod cli;
pub mod config;
pub mod errors;
pub mod forward_auth;
pub mod forwarded;
pub mod gate;
pub mod identity;
pub mod invalidation;
pub mod keys;
pub mod keyservice;
pub mod local;
pub mod logging;
pub mod metrics;
pub mod passwords;
pub mod proxy;
pub mod ratelimit;
pub mod redis_conn;
pub mod reload;
pub mod request_id;
pub mod router;
pub mod secret;
pub mod store;
#[doc(hidden)]
pub mod test_util;
pub mod tls;
pub mod tokens;
pub mod usage;
