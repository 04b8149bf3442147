//! The route table: the config's routes and the method + path matcher over them, built together
//! once per load (and per reload), so a table that exists always matches.
//!
//! matchit is a radix tree keyed by path only, so each distinct path pattern holds the indexes of
//! the routes that share it, and the method picks among them. When the most specific pattern has
//! no route for the method, the request falls through to the next matching pattern that has one
//! (a GET-only `/v1/poll/{id}` must not hide a catch-all from a POST). matchit only answers the
//! most specific match, so the table also keeps one tree per method the config names, holding
//! only the patterns with a route for it (and one for every other method, holding the patterns
//! with an any-method route): the fall-through is one lookup in the method's tree, and the
//! `Allow` list of a 405 one lookup per named method, whatever the number of routes.

use std::collections::HashMap;
use std::ops::Deref;

use crate::config::Route;

/// Two route paths the matcher cannot hold together (a conflict or a malformed pattern).
#[derive(Debug, Clone, thiserror::Error)]
#[error("path `{path}`: {message}")]
pub struct RouteError {
    pub path: String,
    pub message: String,
}

/// The routes in config order with their matcher. Derefs to the routes, so `table[i]` is the
/// route a [`RouteMatch::index`] names.
#[derive(Debug, Clone)]
pub struct RouteTable {
    routes: Vec<Route>,
    /// Every pattern, with the indexes of its routes in config order.
    tree: matchit::Router<Vec<usize>>,
    /// Per method named by some route (sorted, so `Allow` lists come out sorted): the patterns
    /// with a route for it, each holding the first such route.
    by_method: Vec<(String, matchit::Router<usize>)>,
    /// The patterns with an any-method route, for a method no route names.
    any_method: matchit::Router<usize>,
}

/// What the table says about a method and path.
#[derive(Debug)]
pub enum RouteLookup<'r, 'p> {
    Found(RouteMatch<'r, 'p>),
    /// Some route's path matches but none allows the method: `route` is the most specific such
    /// route (it decides how the caller authenticates before learning that), `allow` the
    /// methods the matching routes take, for the `Allow` header.
    MethodNotAllowed {
        route: usize,
        allow: String,
    },
    NotFound,
}

/// A matched route and the path parameters it captured.
#[derive(Debug)]
pub struct RouteMatch<'r, 'p> {
    pub index: usize,
    pub route: &'r Route,
    pub params: matchit::Params<'r, 'p>,
}

impl RouteTable {
    /// Every path the matcher refuses is reported, not only the first.
    pub fn new(routes: Vec<Route>) -> Result<Self, Vec<RouteError>> {
        let mut by_path: HashMap<&str, Vec<usize>> = HashMap::new();
        let mut order: Vec<&str> = Vec::new();
        for (i, r) in routes.iter().enumerate() {
            let slot = by_path.entry(r.path.as_str()).or_insert_with(|| {
                order.push(r.path.as_str());
                Vec::new()
            });
            slot.push(i);
        }
        let mut named: Vec<&str> = routes
            .iter()
            .flat_map(|r| r.methods.iter().map(String::as_str))
            .collect();
        named.sort_unstable();
        named.dedup();
        let mut tree = matchit::Router::new();
        let mut by_method: Vec<(String, matchit::Router<usize>)> = named
            .iter()
            .map(|m| (m.to_string(), matchit::Router::new()))
            .collect();
        let mut any_method = matchit::Router::new();
        let mut errors = Vec::new();
        for path in order {
            let indexes = by_path.remove(path).unwrap_or_default();
            let first_allowing = |method: &str| {
                indexes
                    .iter()
                    .copied()
                    .find(|i| routes.get(*i).is_some_and(|r| r.allows_method(method)))
            };
            // A subset of patterns the full tree holds together can always be held together,
            // so only the full tree's insertion can fail (and it reports the error).
            for (method, matcher) in by_method.iter_mut() {
                if let Some(i) = first_allowing(method) {
                    let _ = matcher.insert(path, i);
                }
            }
            let any = indexes
                .iter()
                .copied()
                .find(|i| routes.get(*i).is_some_and(|r| r.methods.is_empty()));
            if let Some(i) = any {
                let _ = any_method.insert(path, i);
            }
            if let Err(e) = tree.insert(path, indexes) {
                errors.push(RouteError {
                    path: path.to_string(),
                    message: e.to_string(),
                });
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(Self {
            routes,
            tree,
            by_method,
            any_method,
        })
    }

    /// A table with no routes (every request is `route_not_found`).
    pub fn empty() -> Self {
        Self {
            routes: Vec::new(),
            tree: matchit::Router::new(),
            by_method: Vec::new(),
            any_method: matchit::Router::new(),
        }
    }

    /// The route for a request, if any: see [`RouteTable::lookup`].
    pub fn find<'r, 'p>(&'r self, method: &str, path: &'p str) -> Option<RouteMatch<'r, 'p>> {
        match self.lookup(method, path) {
            RouteLookup::Found(m) => Some(m),
            RouteLookup::MethodNotAllowed { .. } | RouteLookup::NotFound => None,
        }
    }

    /// The first route (in config order) of the most specific matching path pattern that allows
    /// the method; else the same in the next matching pattern, down to the least specific.
    pub fn lookup<'r, 'p>(&'r self, method: &str, path: &'p str) -> RouteLookup<'r, 'p> {
        let matcher = self
            .by_method
            .iter()
            .find(|(m, _)| m == method)
            .map_or(&self.any_method, |(_, matcher)| matcher);
        if let Ok(m) = matcher.at(path) {
            if let Some(route) = self.routes.get(*m.value) {
                return RouteLookup::Found(RouteMatch {
                    index: *m.value,
                    route,
                    params: m.params,
                });
            }
        }
        let Ok(m) = self.tree.at(path) else {
            return RouteLookup::NotFound;
        };
        RouteLookup::MethodNotAllowed {
            route: m.value.first().copied().unwrap_or_default(),
            allow: self.allowed_methods(path),
        }
    }

    /// The methods the routes matching `path` take, for an `Allow` header (empty when none does
    /// or one takes any method).
    pub fn allowed_methods(&self, path: &str) -> String {
        if self.any_method.at(path).is_ok() {
            return String::new();
        }
        let mut allow = String::new();
        for (method, matcher) in &self.by_method {
            if matcher.at(path).is_ok() {
                if !allow.is_empty() {
                    allow.push_str(", ");
                }
                allow.push_str(method);
            }
        }
        allow
    }

    /// Route names in config order (metric labels).
    pub fn names(&self) -> Vec<String> {
        self.routes.iter().map(|r| r.name.clone()).collect()
    }
}

impl Deref for RouteTable {
    type Target = [Route];

    fn deref(&self) -> &[Route] {
        &self.routes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn table() -> Config {
        let text = r#"
[upstreams.api]
address = "127.0.0.1:8000"

[[routes]]
name = "poll"
path = "/v1/poll/{id}"
methods = ["GET"]
upstream = "api"

[[routes]]
name = "poll_delete"
path = "/v1/poll/{id}"
methods = ["DELETE"]
upstream = "api"

[[routes]]
name = "v1_writes"
path = "/v1/{*rest}"
methods = ["POST"]
upstream = "api"

[[routes]]
name = "root"
path = "/{*rest}"
methods = ["PUT"]
upstream = "api"
"#;
        Config::parse(text, "test.toml").unwrap_or_else(|e| panic!("{e}"))
    }

    fn found(config: &Config, method: &str, path: &str) -> Option<String> {
        match config.routes.lookup(method, path) {
            RouteLookup::Found(m) => Some(m.route.name.clone()),
            RouteLookup::MethodNotAllowed { .. } | RouteLookup::NotFound => None,
        }
    }

    #[test]
    fn a_refused_method_falls_through_most_specific_first() {
        let c = table();
        assert_eq!(found(&c, "GET", "/v1/poll/1").as_deref(), Some("poll"));
        assert_eq!(
            found(&c, "DELETE", "/v1/poll/1").as_deref(),
            Some("poll_delete")
        );
        assert_eq!(
            found(&c, "POST", "/v1/poll/1").as_deref(),
            Some("v1_writes")
        );
        assert_eq!(found(&c, "PUT", "/v1/poll/1").as_deref(), Some("root"));
        let params = match c.routes.lookup("POST", "/v1/poll/1") {
            RouteLookup::Found(m) => m.params.get("rest").map(str::to_string),
            _ => None,
        };
        assert_eq!(
            params.as_deref(),
            Some("poll/1"),
            "the fall-through's own parameters"
        );
    }

    #[test]
    fn no_route_for_the_method_lists_every_matching_routes_methods() {
        let c = table();
        match c.routes.lookup("PATCH", "/v1/poll/1") {
            RouteLookup::MethodNotAllowed { route, allow } => {
                assert_eq!(c.routes[route].name, "poll");
                assert_eq!(allow, "DELETE, GET, POST, PUT");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            c.routes.allowed_methods("/v1/poll/1"),
            "DELETE, GET, POST, PUT"
        );
        assert_eq!(c.routes.allowed_methods("/other"), "PUT");
        assert!(matches!(c.routes.lookup("GET", ""), RouteLookup::NotFound));
    }

    #[test]
    fn an_any_method_catch_all_takes_what_the_specific_route_refuses() {
        let text = r#"
[upstreams.api]
address = "127.0.0.1:8000"

[[routes]]
name = "poll"
path = "/v1/poll/{id}"
methods = ["GET"]
upstream = "api"

[[routes]]
name = "rest"
path = "/v1/{*rest}"
upstream = "api"
"#;
        let c = Config::parse(text, "test.toml").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(found(&c, "GET", "/v1/poll/1").as_deref(), Some("poll"));
        assert_eq!(found(&c, "POST", "/v1/poll/1").as_deref(), Some("rest"));
        assert_eq!(found(&c, "BREW", "/v1/poll/1").as_deref(), Some("rest"));
        assert_eq!(c.routes.allowed_methods("/v1/poll/1"), "");
        assert!(matches!(
            c.routes.lookup("GET", "/v2"),
            RouteLookup::NotFound
        ));
    }
}
