//! An upstream's backends, and how keygate uses several of them: balancing, active health
//! checks and passive ejection. Validated here; the proxy builds the pool from it.

use std::collections::HashSet;
use std::time::Duration;

use super::file::{Balance, UpstreamSection};
use super::Validator;

/// The most backends one upstream lists (a request remembers which it tried in one `u64`).
pub const MAX_BACKENDS: usize = 64;

/// How a pool of backends is used. Inert for an upstream with one address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolPolicy {
    pub balance: Balance,
    pub health_check: Option<HealthCheck>,
    /// A backend that refused a connection is skipped this long; `None`: never skipped.
    pub passive_ejection: Option<Duration>,
}

/// An active HTTP health check: a GET of `path` to each backend every `interval`; a backend is
/// out of rotation after `unhealthy_threshold` failures in a row and back after
/// `healthy_threshold` passes (a 2xx answer within `timeout`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    pub path: String,
    pub host: String,
    pub interval: Duration,
    pub timeout: Duration,
    pub healthy_threshold: usize,
    pub unhealthy_threshold: usize,
}

/// `host:port`, both parts present; the host part when valid.
pub(super) fn host_of(addr: &str) -> Option<&str> {
    let (host, port) = addr.rsplit_once(':')?;
    (!host.is_empty() && port.parse::<u16>().is_ok()).then_some(host)
}

impl Validator<'_> {
    /// The upstream's backend addresses: `address` or `addresses`, exactly one of them.
    pub(super) fn addresses(&mut self, name: &str, u: &UpstreamSection) -> Vec<String> {
        let list: Vec<(String, std::ops::Range<usize>)> = match (&u.address, &u.addresses) {
            (Some(one), None) => vec![(one.get_ref().clone(), one.span())],
            (None, Some(many)) => {
                if many.get_ref().is_empty() || many.get_ref().len() > MAX_BACKENDS {
                    self.problem(
                        &format!("upstreams.{name}.addresses"),
                        &many.span(),
                        format!("must list between 1 and {MAX_BACKENDS} addresses"),
                    );
                }
                many.get_ref()
                    .iter()
                    .map(|a| (a.get_ref().clone(), a.span()))
                    .collect()
            }
            (Some(one), Some(_)) => {
                self.problem(
                    &format!("upstreams.{name}.address"),
                    &one.span(),
                    "an upstream has either `address` or `addresses`, not both",
                );
                Vec::new()
            }
            (None, None) => {
                self.problem(
                    &format!("upstreams.{name}"),
                    &(0..0),
                    "needs `address = \"host:port\"` or `addresses = [...]`",
                );
                Vec::new()
            }
        };
        let field = if u.address.is_some() {
            "address"
        } else {
            "addresses"
        };
        let mut seen = HashSet::new();
        for (addr, span) in &list {
            if host_of(addr).is_none() {
                self.problem(
                    &format!("upstreams.{name}.{field}"),
                    span,
                    format!("`{addr}` must be host:port"),
                );
            } else if !seen.insert(addr.as_str()) {
                self.problem(
                    &format!("upstreams.{name}.{field}"),
                    span,
                    format!("`{addr}` is listed twice"),
                );
            }
        }
        list.into_iter().map(|(a, _)| a).collect()
    }

    /// Balance, health check and ejection; `default_host` is the check's `Host` header unless it
    /// names one.
    pub(super) fn pool_policy(
        &mut self,
        name: &str,
        u: &UpstreamSection,
        backends: usize,
        default_host: &str,
    ) -> PoolPolicy {
        let health_check = u.health_check.as_ref().map(|hc| {
            let span = hc.span();
            let hc = hc.get_ref();
            let field = |f: &str| format!("upstreams.{name}.health_check.{f}");
            if backends < 2 {
                // With one backend there is nothing to send to instead: the check would act on
                // nothing, and a knob that check-config accepts must act.
                self.problem(
                    &format!("upstreams.{name}.health_check"),
                    &span,
                    "needs two or more `addresses`: with one backend there is none to send to \
                     instead",
                );
            }
            let path = hc.path.get_ref();
            if !path.starts_with('/') || path.chars().any(|c| c.is_whitespace() || c.is_control()) {
                self.problem(
                    &field("path"),
                    &hc.path.span(),
                    "must be a path such as `/healthz`",
                );
            }
            let mut ms = |f: &str, v: &toml::Spanned<u64>| {
                if !(1..=3_600_000).contains(v.get_ref()) {
                    self.problem(
                        &field(f),
                        &v.span(),
                        "must be between 1 and 3600000 (milliseconds)",
                    );
                }
                Duration::from_millis(*v.get_ref())
            };
            let interval = ms("interval_ms", &hc.interval_ms);
            let timeout = ms("timeout_ms", &hc.timeout_ms);
            let mut threshold = |f: &str, v: &toml::Spanned<u32>| {
                if !(1..=100).contains(v.get_ref()) {
                    self.problem(&field(f), &v.span(), "must be between 1 and 100");
                }
                *v.get_ref() as usize
            };
            let healthy_threshold = threshold("healthy_threshold", &hc.healthy_threshold);
            let unhealthy_threshold = threshold("unhealthy_threshold", &hc.unhealthy_threshold);
            let host = match &hc.host {
                Some(h) => {
                    if h.get_ref().is_empty() || http::HeaderValue::from_str(h.get_ref()).is_err() {
                        self.problem(&field("host"), &h.span(), "must be a host name");
                    }
                    h.get_ref().clone()
                }
                None => default_host.to_string(),
            };
            HealthCheck {
                path: path.clone(),
                host,
                interval,
                timeout,
                healthy_threshold,
                unhealthy_threshold,
            }
        });
        let ejection_ms = *u.passive_ejection_ms.get_ref();
        if ejection_ms > 3_600_000 {
            self.problem(
                &format!("upstreams.{name}.passive_ejection_ms"),
                &u.passive_ejection_ms.span(),
                "must be between 0 (off) and 3600000 (milliseconds)",
            );
        }
        PoolPolicy {
            balance: u.balance,
            health_check,
            passive_ejection: (ejection_ms > 0).then(|| Duration::from_millis(ejection_ms)),
        }
    }
}

#[cfg(test)]
#[path = "pool_tests.rs"]
mod tests;
