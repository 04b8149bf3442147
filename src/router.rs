//! The route table: the config's routes and the method + path matcher over them, built together
//! once per load (and per reload), so a table that exists always matches.
//!
//! matchit is a radix tree keyed by path only, so each distinct path pattern holds the indexes of
//! the routes that share it, and the method picks among them. When the most specific pattern has
//! no route for the method, the request falls through to the next matching pattern that has one
//! (a GET-only `/v1/poll/{id}` must not hide a catch-all from a POST). matchit only answers the
//! most specific match, so the fall-through tests each pattern on its own, most specific first;
//! that costs only on a method miss, never on a hit.

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
    tree: matchit::Router<Vec<usize>>,
    /// Every distinct pattern alone, most specific first, for the fall-through.
    patterns: Vec<Pattern>,
}

/// One path pattern in a matcher of its own, with the routes that use it.
#[derive(Debug, Clone)]
struct Pattern {
    matcher: matchit::Router<()>,
    indexes: Vec<usize>,
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
        let mut tree = matchit::Router::new();
        let mut errors = Vec::new();
        let mut patterns = Vec::new();
        for path in order {
            let indexes = by_path.remove(path).unwrap_or_default();
            let mut matcher = matchit::Router::new();
            // The same pattern went into `tree` (which reports its error), so it cannot fail
            // here unless it failed there.
            if matcher.insert(path, ()).is_ok() {
                patterns.push((
                    specificity(path),
                    Pattern {
                        matcher,
                        indexes: indexes.clone(),
                    },
                ));
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
        // A stable sort: equally specific patterns keep config order.
        patterns.sort_by(|a, b| a.0.cmp(&b.0));
        let patterns = patterns.into_iter().map(|(_, p)| p).collect();
        Ok(Self {
            routes,
            tree,
            patterns,
        })
    }

    /// A table with no routes (every request is `route_not_found`).
    pub fn empty() -> Self {
        Self {
            routes: Vec::new(),
            tree: matchit::Router::new(),
            patterns: Vec::new(),
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
        let Ok(m) = self.tree.at(path) else {
            return RouteLookup::NotFound;
        };
        if let Some((index, route)) = self.allowing(m.value, method) {
            return RouteLookup::Found(RouteMatch {
                index,
                route,
                params: m.params,
            });
        }
        let first = m.value.first().copied().unwrap_or_default();
        let mut allow: Vec<&str> = Vec::new();
        for pattern in &self.patterns {
            let Ok(found) = pattern.matcher.at(path) else {
                continue;
            };
            if let Some((index, route)) = self.allowing(&pattern.indexes, method) {
                return RouteLookup::Found(RouteMatch {
                    index,
                    route,
                    params: found.params,
                });
            }
            for i in &pattern.indexes {
                for m in self
                    .routes
                    .get(*i)
                    .map_or(&[][..], |r| r.methods.as_slice())
                {
                    if !allow.contains(&m.as_str()) {
                        allow.push(m);
                    }
                }
            }
        }
        allow.sort_unstable();
        RouteLookup::MethodNotAllowed {
            route: first,
            allow: allow.join(", "),
        }
    }

    /// The methods the routes matching `path` take, for an `Allow` header (empty when none does
    /// or one takes any method).
    pub fn allowed_methods(&self, path: &str) -> String {
        match self.lookup("\0", path) {
            RouteLookup::MethodNotAllowed { allow, .. } => allow,
            RouteLookup::Found(_) | RouteLookup::NotFound => String::new(),
        }
    }

    fn allowing(&self, indexes: &[usize], method: &str) -> Option<(usize, &Route)> {
        indexes.iter().find_map(|i| {
            self.routes
                .get(*i)
                .filter(|r| r.allows_method(method))
                .map(|r| (*i, r))
        })
    }

    /// Route names in config order (metric labels).
    pub fn names(&self) -> Vec<String> {
        self.routes.iter().map(|r| r.name.clone()).collect()
    }
}

/// How specific a pattern is, per segment: a literal beats a `{param}`, which beats a
/// `{*catch_all}` (matchit's own priority), compared from the left; lower is more specific.
fn specificity(path: &str) -> Vec<u8> {
    path.split('/')
        .map(|segment| {
            if segment.contains("{*") {
                2
            } else if segment.contains('{') {
                1
            } else {
                0
            }
        })
        .collect()
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
}
