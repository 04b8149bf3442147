//! Forward-auth: keygate deciding for another proxy (nginx `auth_request`, Traefik ForwardAuth,
//! Caddy `forward_auth`, Envoy's HTTP ext_authz).
//!
//! A `local = "verify"` route is not a decision of its own: it names, through `original`, where
//! the request the other proxy received is described (its method and URI), and that request is
//! decided exactly as if it had come to keygate, with the credential headers the proxy passed
//! along: its route, scopes, limits and credits. The proxy layer answers 200 with the identity
//! headers and `RateLimit-*` (no body: the other proxy only reads the status and headers of an
//! allowed request, and an empty answer keeps the check as cheap as the decision), or the
//! rejection as keygate would have sent it.
//!
//! What cannot be known here: the upstream's answer. Credits are taken when the request is
//! allowed, even on `charge_on = "success"` routes.

use http::header::HeaderName;
use http::HeaderMap;

use crate::config::{LocalKind, OriginalSource, Route};
use crate::errors::Reason;

const X_FORWARDED_METHOD: HeaderName = HeaderName::from_static("x-forwarded-method");
const X_FORWARDED_URI: HeaderName = HeaderName::from_static("x-forwarded-uri");
const X_ORIGINAL_METHOD: HeaderName = HeaderName::from_static("x-original-method");
const X_ORIGINAL_URI: HeaderName = HeaderName::from_static("x-original-uri");

/// The request a verify route is asked about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Original<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub query: Option<&'a str>,
}

/// Whether `route` answers forward-auth checks.
pub fn is_verify(route: &Route) -> bool {
    route
        .local
        .as_ref()
        .is_some_and(|l| l.kind == LocalKind::Verify)
}

/// Config checks for `original`: required on a verify route and only there; with `"path"` the
/// route's path must end in a catch-all (the original path).
pub fn check_route(
    local: Option<LocalKind>,
    original: Option<OriginalSource>,
    path: &str,
    report: &mut dyn FnMut(&str, String),
) {
    match (local, original) {
        (Some(LocalKind::Verify), None) => report(
            "original",
            "a `local = \"verify\"` route needs `original = \"x-forwarded\"`, `\"x-original\"` \
             or `\"path\"`"
                .to_string(),
        ),
        (Some(LocalKind::Verify), Some(OriginalSource::Path)) if path_prefix(path).is_none() => {
            report(
                "path",
                "with `original = \"path\"` the path must end in `/{*name}` (the original path)"
                    .to_string(),
            )
        }
        (Some(LocalKind::Verify), Some(_)) => {}
        (_, Some(_)) => report(
            "original",
            "only `local = \"verify\"` routes have `original`".to_string(),
        ),
        (_, None) => {}
    }
}

/// `/ext_authz` for `/ext_authz/{*rest}`: what is cut off the request path to get the original.
fn path_prefix(route_path: &str) -> Option<&str> {
    let (prefix, last) = route_path.rsplit_once('/')?;
    let catch_all = last.starts_with("{*") && last.ends_with('}') && !prefix.contains('{');
    catch_all.then_some(prefix)
}

/// The original request a verify request describes: from the headers `route`'s `original`
/// names, or its own method and path below the route's prefix. 400 `missing_original` when the
/// headers are absent or not text; the gate then checks the path as it checks any other.
pub fn original<'a>(
    route: &'a Route,
    method: &'a str,
    path: &'a str,
    query: Option<&'a str>,
    headers: &'a HeaderMap,
) -> Result<Original<'a>, Reason> {
    let source = route.local.as_ref().and_then(|l| l.original);
    let (method_header, uri_header) = match source {
        Some(OriginalSource::XForwarded) => (X_FORWARDED_METHOD, X_FORWARDED_URI),
        Some(OriginalSource::XOriginal) => (X_ORIGINAL_METHOD, X_ORIGINAL_URI),
        Some(OriginalSource::Path) => {
            let prefix = path_prefix(&route.path).ok_or(Reason::MissingOriginal)?;
            let rest = path.get(prefix.len()..).ok_or(Reason::MissingOriginal)?;
            return Ok(Original {
                method,
                path: if rest.is_empty() { "/" } else { rest },
                query,
            });
        }
        None => return Err(Reason::MissingOriginal),
    };
    let text = |name: &HeaderName| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty())
            .ok_or(Reason::MissingOriginal)
    };
    let method = text(&method_header)?;
    let uri = text(&uri_header)?;
    if !uri.starts_with('/') {
        return Err(Reason::InvalidPath);
    }
    let (path, query) = match uri.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (uri, None),
    };
    Ok(Original {
        method,
        path,
        query,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_prefix_is_everything_before_a_final_catch_all() {
        assert_eq!(path_prefix("/ext_authz/{*rest}"), Some("/ext_authz"));
        assert_eq!(path_prefix("/{*rest}"), Some(""));
        assert_eq!(path_prefix("/a/{id}/{*rest}"), None);
        assert_eq!(path_prefix("/verify"), None);
        assert_eq!(path_prefix("/v/{id}"), None);
    }

    #[test]
    fn original_config_is_checked() {
        let mut problems = Vec::new();
        let mut report = |what: &str, message: String| problems.push(format!("{what}: {message}"));
        check_route(Some(LocalKind::Verify), None, "/verify", &mut report);
        check_route(
            Some(LocalKind::Verify),
            Some(OriginalSource::Path),
            "/verify",
            &mut report,
        );
        check_route(None, Some(OriginalSource::XOriginal), "/v1/x", &mut report);
        check_route(
            Some(LocalKind::Verify),
            Some(OriginalSource::XForwarded),
            "/verify",
            &mut report,
        );
        check_route(
            Some(LocalKind::Verify),
            Some(OriginalSource::Path),
            "/authz/{*rest}",
            &mut report,
        );
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(problems[0].starts_with("original: "), "{problems:?}");
        assert!(problems[1].starts_with("path: "), "{problems:?}");
        assert!(
            problems[2].contains("only `local = \"verify\"`"),
            "{problems:?}"
        );
    }
}
